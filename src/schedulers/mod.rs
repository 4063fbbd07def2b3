//! The daemon's own triggers: loops that start runs on time rather than on a request.
//!
//! - [`cron`]: fires playbooks' `#{ cron: "…" }` schedules, each tick once across replicas;
//! - [`escalation`]: walks unresolved incidents up the escalation table, paging and running
//!   level playbooks.
//!
//! Each loop is one `pass(now)` repeated; a simulation calls the same pass on its virtual
//! clock instead of the loop.

pub mod cron;
pub mod escalation;
