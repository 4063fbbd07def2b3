//! Prometheus metrics of the daemon itself, served at `GET /metrics`.

use std::time::Duration;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    playbook: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaybookLabel {
    playbook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabel {
    level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn run_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 20))
}

/// Every metric runbookd exports about itself.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_seconds: HistogramFamily<PlaybookLabel>,
    rejected: Family<ReasonLabel, Counter>,
    retried: Family<PlaybookLabel, Counter>,
    interrupted: Family<PlaybookLabel, Counter>,
    lost: Family<ReasonLabel, Counter>,
    queued: Gauge,
    running: Gauge,
    playbooks_loaded: Gauge,
    playbook_load_error: Family<PlaybookLabel, Gauge>,
    reload_seconds: Histogram,
    alerts: Family<ReasonLabel, Counter>,
    notifications: Family<ChannelLabels, Counter>,
    channel_degraded: Family<ChannelLabel, Gauge>,
    clock_skew: Gauge<f64, std::sync::atomic::AtomicU64>,
    pruned: Family<TableLabel, Counter>,
    escalations: Family<LevelLabel, Counter>,
    approvals_pending: Gauge,
    key: crate::metrics::key_metrics::KeyMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("runbookd");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Finished runs by playbook and final status",
            runs.clone(),
        );
        let run_seconds: HistogramFamily<PlaybookLabel> =
            Family::new_with_constructor(run_seconds as fn() -> Histogram);
        registry.register(
            "run_duration_seconds",
            "Run execution time, from start to final status",
            run_seconds.clone(),
        );
        let retried = Family::<PlaybookLabel, Counter>::default();
        registry.register(
            "runs_retried",
            "Runs started again as a new attempt after their replica died or stopped mid-run",
            retried.clone(),
        );
        let interrupted = Family::<PlaybookLabel, Counter>::default();
        registry.register(
            "runs_interrupted",
            "Runs that ended failed, reason interrupted: their replica died or stopped mid-run and no attempt was left",
            interrupted.clone(),
        );
        let lost = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "runs_taken_over",
            "Runs this replica did not start or finish because another replica owns them now (lease lost, released)",
            lost.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "runs_rejected",
            "Triggers refused before a run was recorded (queue_full, shutting_down)",
            rejected.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "runs_queued",
            "Runs waiting for a free slot",
            queued.clone(),
        );
        let running = Gauge::default();
        registry.register("runs_running", "Runs executing now", running.clone());
        let escalations = Family::<LevelLabel, Counter>::default();
        registry.register(
            "escalations",
            "Escalation levels fired, by level (counted by the replica whose pass fired it)",
            escalations.clone(),
        );
        let approvals_pending = Gauge::default();
        registry.register(
            "approvals_pending",
            "Approval requests waiting for a human, in the state store (every replica reports the same count)",
            approvals_pending.clone(),
        );
        let playbooks_loaded = Gauge::default();
        registry.register(
            "playbooks_loaded",
            "Playbooks serving (a failing edit keeps its last good version)",
            playbooks_loaded.clone(),
        );
        let playbook_load_error = Family::<PlaybookLabel, Gauge>::default();
        registry.register(
            "playbook_load_error",
            "1 while the playbook file on disk does not compile",
            playbook_load_error.clone(),
        );
        let reload_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "playbook_reload_duration_seconds",
            "Time to rescan and recompile the playbook directory",
            reload_seconds.clone(),
        );
        let alerts = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "alerts",
            "Alerts received, by what became of them (received, unmatched, deduplicated, truncated, key_locked)",
            alerts.clone(),
        );
        let notifications = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification delivery attempts by channel and outcome (sent, retry, failed)",
            notifications.clone(),
        );
        let channel_degraded = Family::<ChannelLabel, Gauge>::default();
        registry.register(
            "notification_channel_degraded",
            "1 while a channel's deliveries keep failing ([notify] degraded_after in a row); its retries back off, the other channels are not held up",
            channel_degraded.clone(),
        );
        let clock_skew = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "clock_skew_seconds",
            "This replica's wall clock minus the state store's, at the last lease renewal (leases use the store's clock)",
            clock_skew.clone(),
        );
        let pruned = Family::<TableLabel, Counter>::default();
        registry.register(
            "pruned_rows",
            "Rows removed from the state store by retention ([state] retain_*), by table",
            pruned.clone(),
        );
        let key = crate::metrics::key_metrics::KeyMetrics::register(&mut registry);
        Metrics {
            key,
            pruned,
            escalations,
            approvals_pending,
            notifications,
            channel_degraded,
            clock_skew,
            alerts,
            registry,
            runs,
            run_seconds,
            rejected,
            retried,
            interrupted,
            lost,
            queued,
            running,
            playbooks_loaded,
            playbook_load_error,
            reload_seconds,
        }
    }

    /// Retention removed `n` rows of `table`.
    pub fn pruned(&self, table: &str, n: u64) {
        self.pruned
            .get_or_create(&TableLabel {
                table: table.into(),
            })
            .inc_by(n);
    }

    /// The runbook's key metrics (measured by [`crate::probes::run`]).
    pub fn key(&self) -> &crate::metrics::key_metrics::KeyMetrics {
        &self.key
    }

    /// A run reached a final status.
    pub fn run_finished(&self, playbook: &str, status: &str, took: Duration) {
        self.runs
            .get_or_create(&RunLabels {
                playbook: playbook.into(),
                status: status.into(),
            })
            .inc();
        self.run_seconds
            .get_or_create(&PlaybookLabel {
                playbook: playbook.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// A trigger was refused.
    pub fn run_retried(&self, playbook: &str) {
        self.retried
            .get_or_create(&PlaybookLabel {
                playbook: playbook.into(),
            })
            .inc();
    }

    pub fn run_interrupted(&self, playbook: &str) {
        self.interrupted
            .get_or_create(&PlaybookLabel {
                playbook: playbook.into(),
            })
            .inc();
    }

    /// A run this replica gave up because it is not its own any more.
    pub fn run_lost(&self, reason: &str) {
        self.lost
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn run_rejected(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// An escalation level fired for an incident.
    pub fn escalated(&self, level: &str) {
        self.escalations
            .get_or_create(&LevelLabel {
                level: level.to_string(),
            })
            .inc();
    }

    /// The approval requests pending in the store, as the last escalation pass counted.
    pub fn approvals_pending(&self, n: i64) {
        self.approvals_pending.set(n);
    }

    pub fn queued(&self) -> &Gauge {
        &self.queued
    }

    pub fn running(&self) -> &Gauge {
        &self.running
    }

    /// After each catalog reload: a series per failing playbook, none for healthy ones.
    pub fn observe_catalog(&self, loaded: usize, failing: &[String], took: Duration) {
        self.playbooks_loaded.set(loaded as i64);
        self.playbook_load_error.clear();
        for name in failing {
            self.playbook_load_error
                .get_or_create(&PlaybookLabel {
                    playbook: name.clone(),
                })
                .set(1);
        }
        self.reload_seconds.observe(took.as_secs_f64());
    }

    fn alert(&self, reason: &str, n: u64) {
        self.alerts
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc_by(n);
    }

    /// An alert arrived.
    pub fn alert_received(&self) {
        self.alert("received", 1);
    }

    /// An alert matched no playbook.
    pub fn alert_unmatched(&self) {
        self.alert("unmatched", 1);
    }

    /// An alert started nothing: a run was active or in cooldown.
    pub fn alert_deduplicated(&self) {
        self.alert("deduplicated", 1);
    }

    /// Alerts refused (503) because an incident key of theirs stayed locked by another
    /// transaction (another replica's, stuck) past the ingester's lock wait.
    pub fn alerts_key_locked(&self, n: u64) {
        self.alert("key_locked", n);
    }

    /// Alertmanager said it left alerts out of a notification.
    pub fn alerts_truncated(&self, n: u64) {
        self.alert("truncated", n);
    }

    /// A channel became degraded (its deliveries keep failing) or healthy again.
    pub fn channel_degraded(&self, channel: &str, degraded: bool) {
        self.channel_degraded
            .get_or_create(&ChannelLabel {
                channel: channel.into(),
            })
            .set(i64::from(degraded));
    }

    /// This replica's wall clock minus the state store's.
    pub fn clock_skew(&self, seconds: f64) {
        self.clock_skew.set(seconds);
    }

    /// A notification delivery attempt ended.
    pub fn notification(&self, channel: &str, outcome: &str) {
        self.notifications
            .get_or_create(&ChannelLabels {
                channel: channel.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
