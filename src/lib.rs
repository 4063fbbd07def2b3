//! runbookd turns SRE runbooks into playbooks that run themselves.
//!
//! The folder tree is the data flow:
//!
//! ```text
//! triggers/ ──► dispatch ──► engine/ (catalog, reload, runner) ──► primitives/ ──► store/
//! schedulers/   (queue,       (Rhai sandbox on a blocking        (the only way a
//!  (cron,        slots)        thread, deadline)                  script acts)
//!   escalation)
//! event, clock, config, text, redact: leaves every layer speaks, importing nothing above.
//! http/ (axum) sits beside: one shell — state, auth, sessions, errors, guard, router —
//!   with two faces on it: api/ turns HTTP into triggers and reads the store as JSON,
//!   web/ (the dashboard) renders the same reads as HTML; both do what they do through
//!   http::actions, and neither imports the other.
//! live watches the store for changes and streams them (/api/v1/events).
//! ```
//!
//! - [`config`]: the TOML file, defaults and `RUNBOOKD_*` overrides.
//! - [`event`]: the one typed [`event::Event`] every source produces, the store keeps and
//!   the script receives, and the [`event::RunRequest`] constructors for each kind of run.
//! - [`triggers`]: the `triggers()` declarations of playbooks and the Alertmanager parser.
//! - [`schedulers`]: the daemon's own triggers — the cron and escalation loops, each one
//!   `pass(now)` that a simulation calls on its virtual clock.
//! - [`dispatch`]: records accepted runs under this replica's lease, claims runs nobody
//!   owns, recovers dead replicas' runs, bounds concurrency, shuts down gracefully.
//! - [`engine`]: compiles playbooks, hot-reloads them, runs them in a sandbox.
//! - [`primitives`]: functions playbooks call; the bridge from Rhai to async code.
//! - [`store`]: runs, leases, incidents, audit and the outbox on SQLite or PostgreSQL.
//! - [`escalation`]: the escalation table (levels, conditions, what comes next).
//! - [`notify`]: the notification outbox and its channels.
//! - [`sim`]: a simulated payments app and Stripe on a virtual clock — the other
//!   implementation of the primitives' backend traits — for playbook tests
//!   (`sim::playtest`, `runbookd test`), outage simulations and the demo daemon.
//! - [`clock`]: the real clock, or a simulation's virtual one, for every time-based decision;
//!   [`text`]: cutting text to what a record holds.
//! - [`http`]: the HTTP shell — `AppState` and the parts handlers take of it, auth and
//!   sessions, errors, the browser guard, the actions both faces share, `/healthz`
//!   `/readyz` `/metrics`, the server loop and the router that merges the faces.
//! - [`api`]: the JSON API under `/api/v1`; [`web`]: the dashboard at `/`; [`live`]: the
//!   change feed behind `/api/v1/events` and the dashboard's live pages.
//! - [`app`]: wiring; [`metrics`]: Prometheus metrics, the daemon's own and the runbook's
//!   "Key Metrics to Monitor" (a registry that imports nothing above it); [`probes`]: what
//!   measures those key metrics through the primitives' backends.

pub mod api;
pub mod app;
pub mod approvals;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod engine;
pub mod escalation;
pub mod event;
pub mod http;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod primitives;
pub mod probes;
pub mod redact;
pub mod schedulers;
pub mod sim;
pub mod store;
pub mod text;
pub mod triggers;
pub mod web;

#[cfg(test)]
mod properties;

/// Counts what each thread allocates, so that a script's memory is bounded as a whole
/// (`primitives::memory`).
#[global_allocator]
static ALLOCATOR: primitives::memory::CountingAllocator = primitives::memory::CountingAllocator;
