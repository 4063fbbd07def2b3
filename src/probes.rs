//! The prober behind the runbook's "Key Metrics to Monitor": on `[key_metrics] interval`
//! it reads the app through the same backends the primitives use — each measurement only
//! when its backend is configured — and sets what it found in the registry's series
//! ([`crate::metrics::key_metrics`]). Timestamps come from the services' clock, so a
//! simulated world is measured on its own time.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::{
    config::KeyMetricsConfig,
    metrics::{key_metrics::KeyMetrics, Metrics},
    primitives::{
        breaker::BreakerError, celery::CeleryError, payments::PaymentsError,
        stripe::StripeCallError, Services,
    },
};

/// Why a key metric could not be measured this round: the backend that failed to answer.
/// Only logged and counted (`runbookd_key_metric_failures_total`), never shown to scripts.
#[derive(Debug, thiserror::Error)]
enum Unmeasured {
    #[error(transparent)]
    Breaker(#[from] BreakerError),
    #[error(transparent)]
    Payments(#[from] PaymentsError),
    #[error("Stripe events: {0}")]
    StripeEvents(#[from] StripeCallError),
    /// The ping's outcome (`auth_error`, `connection_error`, …) and Stripe's message.
    #[error("{result}: {message}")]
    StripePing { result: String, message: String },
    #[error(transparent)]
    Celery(#[from] CeleryError),
}

/// Measures every `interval` until `stop`; each round is bounded by the interval (at least
/// 5 s) so a hung backend cannot pile rounds up.
pub async fn run(
    metrics: Arc<Metrics>,
    services: Services,
    cfg: KeyMetricsConfig,
    stop: CancellationToken,
) {
    if cfg.interval.is_zero() {
        return;
    }
    let bound = cfg.interval.max(Duration::from_secs(5));
    loop {
        let started = Instant::now();
        tokio::select! {
            r = tokio::time::timeout(bound, measure(metrics.key(), &services, &cfg)) => {
                if r.is_err() {
                    tracing::warn!(took = ?bound, "key metrics round did not finish in time");
                }
            }
            _ = stop.cancelled() => return,
        }
        let wait = cfg.interval.saturating_sub(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One round of every measurement; they run concurrently so one slow backend does not
/// delay the others.
pub async fn measure(key: &KeyMetrics, services: &Services, cfg: &KeyMetricsConfig) {
    let probe = Probe { key, services };
    tokio::join!(
        probe.breakers(),
        probe.payments(cfg),
        probe.webhooks(cfg),
        probe.stripe(cfg),
        probe.celery(),
    );
}

/// One round: where it reads and where it writes.
struct Probe<'a> {
    key: &'a KeyMetrics,
    services: &'a Services,
}

impl Probe<'_> {
    /// Counts a failed measurement, or stamps a good one by the services' clock.
    fn measured<E: Into<Unmeasured>>(&self, metric: &str, outcome: Result<(), E>) {
        match outcome {
            Ok(()) => self
                .key
                .succeeded(metric, self.services.clock.now_seconds()),
            Err(e) => {
                let e: Unmeasured = e.into();
                self.key.failed(metric);
                tracing::warn!(metric, error = %e, "key metric not measured");
            }
        }
    }

    async fn breakers(&self) {
        let services = self.services;
        for name in services.breakers.names() {
            let outcome = services.breakers.read(&name).await;
            let state = match &outcome {
                Ok(s) => s.state.as_str(),
                Err(BreakerError::NotConfigured(_)) => continue,
                Err(_) => "unknown",
            };
            self.key.breaker_state(&name, state);
            if let Ok(s) = &outcome {
                let open = if s.state == "closed" {
                    0.0
                } else {
                    s.seconds_since_open.unwrap_or(0.0)
                };
                self.key.breaker_reading(&name, s.failures, open);
            }
            self.measured(&format!("breaker:{name}"), outcome.map(|_| ()));
        }
    }

    async fn payments(&self, cfg: &KeyMetricsConfig) {
        let payments = &self.services.payments;
        if !payments.configured() {
            return;
        }
        let counts = async { payments.backend()?.counts(cfg.failure_window).await }.await;
        if let Ok(c) = &counts {
            self.key.payment_counts(c.failure_rate, &c.by_status);
        }
        self.measured("payments_failure_ratio", counts.map(|_| ()));
        self.key.stale_after(payments.stale_after().as_secs_f64());
        let oldest = async { payments.backend()?.oldest_pending_age().await }.await;
        if let Ok(age) = &oldest {
            self.key.oldest_pending(*age);
        }
        self.measured("payments_oldest_pending_age", oldest.map(|_| ()));
        let reconciled = async { payments.backend()?.newest_app_reconciled_age().await }.await;
        if let Ok(age) = &reconciled {
            self.key.app_reconciled(*age);
        }
        self.measured("payments_app_reconciled", reconciled.map(|_| ()));
    }

    async fn webhooks(&self, cfg: &KeyMetricsConfig) {
        let services = self.services;
        if !services.payments.configured() || !services.stripe.key_info().set {
            return;
        }
        let now = services.clock.now_ms() / 1000;
        let window = cfg.webhook_window.as_secs() as i64;
        let grace = cfg.webhook_grace.as_secs() as i64;
        let outcome = async {
            let (expected, complete) = services
                .stripe
                .count_events(now - window, now - grace, &cfg.webhook_event_types, 20)
                .await?;
            let received = async {
                services
                    .payments
                    .backend()?
                    .webhook_count(cfg.webhook_window)
                    .await
            }
            .await?;
            if !complete {
                tracing::warn!(
                    expected,
                    "more Stripe events in the webhook window than runbookd counts (2,000); the ratio uses the first 2,000"
                );
            }
            Ok::<_, Unmeasured>((expected as i64, received))
        }
        .await;
        if let Ok((expected, received)) = outcome {
            self.key.webhook_delivery(expected, received);
        }
        self.measured("webhook_delivery_ratio", outcome.map(|_| ()));
    }

    async fn stripe(&self, cfg: &KeyMetricsConfig) {
        let stripe = &self.services.stripe;
        if !cfg.stripe_probe || !stripe.key_info().set {
            return;
        }
        let ping = stripe.ping().await;
        self.key
            .stripe_probe(&ping.result, ping.latency_ms / 1000.0);
        let outcome = if ping.result == "connected" {
            Ok(())
        } else {
            Err(Unmeasured::StripePing {
                result: ping.result.clone(),
                message: ping.message.clone(),
            })
        };
        self.measured("stripe_api", outcome);
    }

    async fn celery(&self) {
        let celery = &self.services.celery;
        if !celery.configured() {
            return;
        }
        let queues = celery.queues().await;
        if let Ok(depths) = &queues {
            for d in depths {
                self.key.celery_queue(&d.queue, d.length);
            }
        }
        self.measured("celery_queue_length", queues.map(|_| ()));
        let alive = celery.alive().await;
        if let Ok((alive, unanswered)) = &alive {
            self.key.celery_workers(*alive, *unanswered);
        }
        self.measured("celery_workers", alive.map(|_| ()));
    }
}
