//! What runbookd measures for Prometheus (`GET /metrics`, one registry):
//! - [`daemon`]: the daemon itself — runs, alerts, queue, leases, notifications, reloads;
//! - [`key_metrics`]: the payments app, as the runbook's "Key Metrics to Monitor" asks —
//!   probed by runbookd on a schedule, not counted from its own work.

pub mod daemon;
pub mod key_metrics;

pub use daemon::Metrics;
