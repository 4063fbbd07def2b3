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
//! This is the registry of those series and what a measurement sets in them; the prober
//! that measures the app on a schedule is [`crate::probes`]. A failed measurement is counted
//! (`runbookd_key_metric_errors{metric}`) and leaves
//! `runbookd_key_metric_last_success_timestamp_seconds{metric}` behind, so a stale value can
//! be told from a healthy one.

use std::{collections::BTreeMap, sync::atomic::AtomicU64};

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
    /// A measurement of `metric` succeeded at `at_seconds` (unix seconds).
    pub fn succeeded(&self, metric: &str, at_seconds: f64) {
        self.last_success
            .get_or_create(&MetricLabel {
                metric: metric.into(),
            })
            .set(at_seconds);
    }

    /// A measurement of `metric` failed.
    pub fn failed(&self, metric: &str) {
        self.errors
            .get_or_create(&MetricLabel {
                metric: metric.into(),
            })
            .inc();
    }

    /// `breaker` is in `state` (one of closed, open, half_open, unknown): 1 for it, 0 for
    /// the others.
    pub fn breaker_state(&self, breaker: &str, state: &str) {
        for s in BREAKER_STATES {
            let labels = BreakerStateLabels {
                breaker: breaker.into(),
                state: s.into(),
            };
            self.breaker_state
                .get_or_create(&labels)
                .set(i64::from(s == state));
        }
    }

    /// What `breaker` counted, and how long it has been open (0 while closed).
    pub fn breaker_reading(&self, breaker: &str, failures: i64, open_seconds: f64) {
        let label = BreakerLabel {
            breaker: breaker.into(),
        };
        self.breaker_failures.get_or_create(&label).set(failures);
        self.breaker_open_seconds
            .get_or_create(&label)
            .set(open_seconds);
    }

    /// Payments created in the failure window: the failure ratio and the count of each
    /// status (0 for a status absent from `by_status`).
    pub fn payment_counts(&self, failure_ratio: f64, by_status: &BTreeMap<String, i64>) {
        self.failure_ratio
            .get_or_create(&unlabelled())
            .set(failure_ratio);
        for status in ["pending", "completed", "failed", "refunded"] {
            let n = by_status.get(status).copied().unwrap_or(0);
            self.recent
                .get_or_create(&StatusLabel {
                    status: status.into(),
                })
                .set(n);
        }
    }

    /// `[payments] stale_after`, in seconds.
    pub fn stale_after(&self, seconds: f64) {
        self.stale_after.get_or_create(&unlabelled()).set(seconds);
    }

    /// Age of the oldest pending payment (None: none is pending, shown as 0).
    pub fn oldest_pending(&self, age_seconds: Option<f64>) {
        self.oldest_pending
            .get_or_create(&unlabelled())
            .set(age_seconds.unwrap_or(0.0));
    }

    /// Age of the newest payment the app's reconciliation settled; None removes the
    /// series (it settled none).
    pub fn app_reconciled(&self, age_seconds: Option<f64>) {
        match age_seconds {
            Some(age) => {
                self.app_reconciled.get_or_create(&unlabelled()).set(age);
            }
            None => {
                self.app_reconciled.remove(&unlabelled());
            }
        }
    }

    /// Stripe events of the handled types in the webhook window and the app's
    /// `webhook_received` rows for them; the ratio is 1 when Stripe sent none.
    pub fn webhook_delivery(&self, expected: i64, received: i64) {
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

    /// One Stripe API probe: its result and how long it took.
    pub fn stripe_probe(&self, result: &str, latency_seconds: f64) {
        self.stripe_seconds.observe(latency_seconds);
        self.stripe_probes
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// Messages waiting in `queue`.
    pub fn celery_queue(&self, queue: &str, length: i64) {
        self.celery_queue
            .get_or_create(&QueueLabel {
                queue: queue.into(),
            })
            .set(length);
    }

    /// Workers that answered the ping, and subscribers that heard it and did not.
    pub fn celery_workers(&self, alive: i64, unanswered: i64) {
        self.celery_workers.get_or_create(&unlabelled()).set(alive);
        self.celery_unanswered
            .get_or_create(&unlabelled())
            .set(unanswered);
    }
}
