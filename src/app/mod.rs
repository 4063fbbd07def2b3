//! Wiring: builds the daemon from configuration and serves until told to stop.
//!
//! - [`core`]: what a run needs outside the API — store, playbooks, backends, dispatcher
//!   (also what `runbookd run` and the benches start);
//! - [`daemon`]: the listener, the API and every background loop on one [`TaskTracker`],
//!   and the order they stop in.
//!
//! [`Daemon::build`] binds the listener first, so callers (and tests) know the real port.
//!
//! [`TaskTracker`]: tokio_util::task::TaskTracker

mod core;
mod daemon;

pub use self::core::Core;
pub use self::daemon::Daemon;
