//! The runbook's "Key Metrics to Monitor", measured by runbookd on an interval and served at
//! `GET /metrics`, so Prometheus can alert on exactly the runbook's thresholds
//! (`examples/prometheus/rules.yml`):
//!
//! | runbook metric | series |
//! |---|---|
//! | circuit breaker state | `runbookd_breaker_state{breaker,state}` (1 for the current state) |
//! | payment failure rate > 10 % in 5 min | `runbookd_payments_failure_ratio`, `runbookd_payments_recent{status}` |
//! | pending payments age > 30 min | `runbookd_payments_oldest_pending_age_seconds` (and the threshold, `[payments] stale_after`, as `runbookd_payments_stale_after_seconds`) |
//! | webhook delivery success < 95 % | `runbookd_webhook_delivery_ratio` (+ expected / received) |
//! | p95 latency > 5 s | `runbookd_stripe_api_duration_seconds` (histogram of runbookd's probes) |
//! | Step 4: payment queue depth, workers alive | `runbookd_celery_queue_length{queue}`, `runbookd_celery_workers` (+ `_unanswered`) |
//!
//! Each measurement uses the same backends as the primitives and runs only when its backend
//! is configured. A failed measurement is counted (`runbookd_key_metric_errors{metric}`) and
//! leaves `runbookd_key_metric_last_success_timestamp_seconds{metric}` behind, so a stale
//! value can be told from a healthy one.

use std::{
    sync::atomic::AtomicU64,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

use crate::{clock::Clock, config::KeyMetricsConfig, primitives::Services};

type FloatGauge = Gauge<f64, AtomicU64>;

/// A series without labels that appears only once it has been measured: a payment failure
/// ratio of 0 must mean "none failed", never "runbookd has no payments database".
type Measured<G> = Family<Vec<(String, String)>, G>;

fn unlabelled() -> Vec<(String, String)> {
    Vec::new()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerStateLabels {
    breaker: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabel {
    breaker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabel {
    metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// States a breaker can be reported in; `unknown` while Redis cannot be read.
const BREAKER_STATES: [&str; 4] = ["closed", "open", "half_open", "unknown"];

/// The series, registered on the daemon's registry.
pub struct KeyMetrics {
    breaker_state: Family<BreakerStateLabels, Gauge>,
    breaker_failures: Family<BreakerLabel, Gauge>,
    breaker_open_seconds: Family<BreakerLabel, FloatGauge>,
    failure_ratio: Measured<FloatGauge>,
    recent: Family<StatusLabel, Gauge>,
    oldest_pending: Measured<FloatGauge>,
    stale_after: Measured<FloatGauge>,
    app_reconciled: Measured<FloatGauge>,
    webhook_ratio: Measured<FloatGauge>,
    webhook_expected: Measured<Gauge>,
    webhook_received: Measured<Gauge>,
    stripe_seconds: Histogram,
    celery_queue: Family<QueueLabel, Gauge>,
    celery_workers: Measured<Gauge>,
    celery_unanswered: Measured<Gauge>,
    stripe_probes: Family<ResultLabel, Counter>,
    errors: Family<MetricLabel, Counter>,
    last_success: Family<MetricLabel, FloatGauge>,
}

impl KeyMetrics {
    /// Registers every series under the registry's `runbookd` prefix.
    pub fn register(registry: &mut Registry) -> KeyMetrics {
        let m = KeyMetrics {
            breaker_state: Family::default(),
            breaker_failures: Family::default(),
            breaker_open_seconds: Family::default(),
            failure_ratio: Measured::default(),
            recent: Family::default(),
            oldest_pending: Measured::default(),
            stale_after: Measured::default(),
            app_reconciled: Measured::default(),
            webhook_ratio: Measured::default(),
            webhook_expected: Measured::default(),
            webhook_received: Measured::default(),
            stripe_seconds: Histogram::new(exponential_buckets(0.025, 2.0, 12)),
            stripe_probes: Family::default(),
            celery_queue: Family::default(),
            celery_workers: Measured::default(),
            celery_unanswered: Measured::default(),
            errors: Family::default(),
            last_success: Family::default(),
        };
        registry.register(
            "breaker_state",
            "Circuit breaker state as the app sees it: 1 for the current state (closed, open, half_open, unknown)",
            m.breaker_state.clone(),
        );
        registry.register(
            "breaker_failures",
            "Failures the breaker has counted in its window",
            m.breaker_failures.clone(),
        );
        registry.register(
            "breaker_open_seconds",
            "Seconds since the breaker opened (0 while closed)",
            m.breaker_open_seconds.clone(),
        );
        registry.register(
            "payments_failure_ratio",
            "Failed / all payments created in [key_metrics] failure_window (0 when there were none)",
            m.failure_ratio.clone(),
        );
        registry.register(
            "payments_recent",
            "Payments created in [key_metrics] failure_window, by status",
            m.recent.clone(),
        );
        registry.register(
            "payments_oldest_pending_age_seconds",
            "Age of the oldest pending payment (0 when none is pending)",
            m.oldest_pending.clone(),
        );
        registry.register(
            "payments_stale_after_seconds",
            "[payments] stale_after: a payment pending longer needs reconciliation (PaymentsPendingTooLong compares with it)",
            m.stale_after.clone(),
        );
        registry.register(
            "payments_app_reconciled_newest_age_seconds",
            "Age of the newest payment the app's own reconciliation settled (absent when it settled none): its task ran at least [payments] stale_after after that",
            m.app_reconciled.clone(),
        );
        registry.register(
            "webhook_delivery_ratio",
            "webhook_received rows / Stripe events of the handled types in [key_metrics] webhook_window (1 when Stripe sent none)",
            m.webhook_ratio.clone(),
        );
        registry.register(
            "webhook_events_expected",
            "Stripe events of the handled types in the webhook window",
            m.webhook_expected.clone(),
        );
        registry.register(
            "webhook_events_received",
            "The app's webhook_received audit rows in the webhook window",
            m.webhook_received.clone(),
        );
        registry.register(
            "stripe_api_duration_seconds",
            "Latency of runbookd's Stripe API probes (GET /v1/account)",
            m.stripe_seconds.clone(),
        );
        registry.register(
            "stripe_api_probes",
            "Stripe API probes by result (connected, auth_error, connection_error, rate_limited, error)",
            m.stripe_probes.clone(),
        );
        registry.register(
            "celery_queue_length",
            "Messages waiting in each [celery] queues list of the app's broker (every priority)",
            m.celery_queue.clone(),
        );
        registry.register(
            "celery_workers",
            "Celery workers that answered runbookd's remote-control ping",
            m.celery_workers.clone(),
        );
        registry.register(
            "celery_workers_unanswered",
            "Subscribers that heard the ping and did not answer within [celery] inspect_timeout (hung workers)",
            m.celery_unanswered.clone(),
        );
        registry.register(
            "key_metric_errors",
            "Key-metric measurements that failed, by metric",
            m.errors.clone(),
        );
        registry.register(
            "key_metric_last_success_timestamp_seconds",
            "When each key metric was last measured successfully (unix seconds)",
            m.last_success.clone(),
        );
        m
    }

    /// Counts a failed measurement, or stamps a good one by `clock` (the services' own).
    fn measured(&self, clock: &Clock, metric: &str, outcome: Result<(), String>) {
        let label = MetricLabel {
            metric: metric.into(),
        };
        match outcome {
            Ok(()) => {
                self.last_success
                    .get_or_create(&label)
                    .set(clock.now_seconds());
            }
            Err(e) => {
                self.errors.get_or_create(&label).inc();
                tracing::warn!(metric, error = %e, "key metric not measured");
            }
        }
    }

    async fn breakers(&self, services: &Services) {
        for name in services.breakers.names() {
            let outcome = services.breakers.read(&name).await;
            let state = match &outcome {
                Ok(s) => s.state.as_str(),
                Err(crate::primitives::breaker::BreakerError::NotConfigured(_)) => continue,
                Err(_) => "unknown",
            };
            for s in BREAKER_STATES {
                let labels = BreakerStateLabels {
                    breaker: name.clone(),
                    state: s.into(),
                };
                self.breaker_state
                    .get_or_create(&labels)
                    .set(i64::from(s == state));
            }
            let label = BreakerLabel {
                breaker: name.clone(),
            };
            if let Ok(s) = &outcome {
                self.breaker_failures.get_or_create(&label).set(s.failures);
                let open = if s.state == "closed" {
                    0.0
                } else {
                    s.seconds_since_open.unwrap_or(0.0)
                };
                self.breaker_open_seconds.get_or_create(&label).set(open);
            }
            self.measured(
                &services.clock,
                &format!("breaker:{name}"),
                outcome.map(|_| ()).map_err(|e| e.to_string()),
            );
        }
    }

    async fn payments(&self, services: &Services, cfg: &KeyMetricsConfig) {
        if !services.payments.configured() {
            return;
        }
        let counts = async {
            services
                .payments
                .backend()?
                .counts(cfg.failure_window)
                .await
        }
        .await;
        if let Ok(c) = &counts {
            self.failure_ratio
                .get_or_create(&unlabelled())
                .set(c.failure_rate);
            for status in ["pending", "completed", "failed", "refunded"] {
                let n = c.by_status.get(status).copied().unwrap_or(0);
                self.recent
                    .get_or_create(&StatusLabel {
                        status: status.into(),
                    })
                    .set(n);
            }
        }
        self.measured(
            &services.clock,
            "payments_failure_ratio",
            counts.map(|_| ()).map_err(|e| e.to_string()),
        );
        self.stale_after
            .get_or_create(&unlabelled())
            .set(services.payments.stale_after().as_secs_f64());
        let oldest = async { services.payments.backend()?.oldest_pending_age().await }.await;
        if let Ok(age) = &oldest {
            self.oldest_pending
                .get_or_create(&unlabelled())
                .set(age.unwrap_or(0.0));
        }
        self.measured(
            &services.clock,
            "payments_oldest_pending_age",
            oldest.map(|_| ()).map_err(|e| e.to_string()),
        );
        let reconciled = async {
            services
                .payments
                .backend()?
                .newest_app_reconciled_age()
                .await
        }
        .await;
        match &reconciled {
            Ok(Some(age)) => {
                self.app_reconciled.get_or_create(&unlabelled()).set(*age);
            }
            Ok(None) => {
                self.app_reconciled.remove(&unlabelled());
            }
            Err(_) => {}
        }
        self.measured(
            &services.clock,
            "payments_app_reconciled",
            reconciled.map(|_| ()).map_err(|e| e.to_string()),
        );
    }

    async fn webhooks(&self, services: &Services, cfg: &KeyMetricsConfig) {
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
                .await
                .map_err(|e| format!("Stripe events: {e}"))?;
            let received = async {
                services
                    .payments
                    .backend()?
                    .webhook_count(cfg.webhook_window)
                    .await
            }
            .await
            .map_err(|e| e.to_string())?;
            if !complete {
                tracing::warn!(
                    expected,
                    "more Stripe events in the webhook window than runbookd counts (2,000); the ratio uses the first 2,000"
                );
            }
            Ok::<_, String>((expected as i64, received))
        }
        .await;
        if let Ok((expected, received)) = outcome {
            self.webhook_expected
                .get_or_create(&unlabelled())
                .set(expected);
            self.webhook_received
                .get_or_create(&unlabelled())
                .set(received);
            let ratio = if expected == 0 {
                1.0
            } else {
                (received as f64 / expected as f64).min(1.0)
            };
            self.webhook_ratio.get_or_create(&unlabelled()).set(ratio);
        }
        self.measured(
            &services.clock,
            "webhook_delivery_ratio",
            outcome.map(|_| ()),
        );
    }

    async fn stripe(&self, services: &Services, cfg: &KeyMetricsConfig) {
        if !cfg.stripe_probe || !services.stripe.key_info().set {
            return;
        }
        let ping = services.stripe.ping().await;
        self.stripe_seconds.observe(ping.latency_ms / 1000.0);
        self.stripe_probes
            .get_or_create(&ResultLabel {
                result: ping.result.clone(),
            })
            .inc();
        let outcome = if ping.result == "connected" {
            Ok(())
        } else {
            Err(format!("{}: {}", ping.result, ping.message))
        };
        self.measured(&services.clock, "stripe_api", outcome);
    }

    async fn celery(&self, services: &Services) {
        if !services.celery.configured() {
            return;
        }
        let queues = services.celery.queues().await;
        if let Ok(depths) = &queues {
            for d in depths {
                self.celery_queue
                    .get_or_create(&QueueLabel {
                        queue: d.queue.clone(),
                    })
                    .set(d.length);
            }
        }
        self.measured(
            &services.clock,
            "celery_queue_length",
            queues.map(|_| ()).map_err(|e| e.to_string()),
        );
        let alive = services.celery.alive().await;
        if let Ok((alive, unanswered)) = &alive {
            self.celery_workers.get_or_create(&unlabelled()).set(*alive);
            self.celery_unanswered
                .get_or_create(&unlabelled())
                .set(*unanswered);
        }
        self.measured(
            &services.clock,
            "celery_workers",
            alive.map(|_| ()).map_err(|e| e.to_string()),
        );
    }

    /// One round of every measurement; they run concurrently so one slow backend does not
    /// delay the others.
    pub async fn measure(&self, services: &Services, cfg: &KeyMetricsConfig) {
        tokio::join!(
            self.breakers(services),
            self.payments(services, cfg),
            self.webhooks(services, cfg),
            self.stripe(services, cfg),
            self.celery(services),
        );
    }
}

/// Measures every `interval` until `stop`; each round is bounded by the interval (at least
/// 5 s) so a hung backend cannot pile rounds up.
pub async fn run(
    metrics: std::sync::Arc<crate::metrics::Metrics>,
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
            r = tokio::time::timeout(bound, metrics.key().measure(&services, &cfg)) => {
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
