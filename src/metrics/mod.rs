//! What runbookd measures for Prometheus (`GET /metrics`, one registry):
//! - [`daemon`]: the daemon itself — runs, alerts, queue, leases, notifications, reloads;
//! - [`key_metrics`]: the payments app, as the runbook's "Key Metrics to Monitor" asks —
//!   probed by runbookd on a schedule ([`crate::probes`]), not counted from its own work.
//!
//! A leaf of the module tree: everything above reports here, nothing here reads above.

pub mod daemon;
pub mod key_metrics;

pub use daemon::Metrics;
