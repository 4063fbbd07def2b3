//! Primitives: the only way a playbook touches the world, and the only place where Rhai
//! meets async code.
//!
//! A run executes on a blocking thread. While it does, a [`RunContext`] is installed in a
//! thread-local (and removed by an RAII guard, because the blocking pool reuses threads).
//! Primitives read it to find the run's deadline, cancellation, dry-run flag, log and
//! action lists, and the backends ([`Services`]). Async work goes through [`block_on`],
//! which bounds it by the run's deadline and shutdown so a hung backend cannot hang a run.

mod core;
mod health;

use std::{
    cell::RefCell,
    future::Future,
    rc::Rc,
    time::{Duration, Instant},
};

use rhai::{Dynamic, Engine, EvalAltResult, Position};
use tokio_util::sync::CancellationToken;

use crate::store::{LogLine, Store};

/// Backends primitives may use. `None` means "not configured", which a primitive reports as
/// a script error naming the missing section rather than crashing.
#[derive(Clone)]
pub struct Services {
    pub store: Option<Store>,
    pub runtime: tokio::runtime::Handle,
}

/// Why a script was stopped from outside; the text becomes the Rhai termination token.
pub const TERMINATED_TIMEOUT: &str = "timeout";
/// Shutdown (SIGTERM after the grace period) stopped the run.
pub const TERMINATED_SHUTDOWN: &str = "shutdown";

/// Everything a primitive needs to know about the run it serves.
pub struct RunContext {
    pub run_id: String,
    pub playbook: String,
    pub dry_run: bool,
    pub deadline: Instant,
    pub cancel: CancellationToken,
    pub services: Services,
    pub max_log_lines: usize,
    pub logs: RefCell<Vec<LogLine>>,
    pub dropped_logs: RefCell<usize>,
    pub actions: RefCell<Vec<serde_json::Value>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RunContext>>> = const { RefCell::new(None) };
}

/// Keeps a [`RunContext`] installed on this thread until dropped.
pub struct RunGuard {
    ctx: Rc<RunContext>,
}

impl RunGuard {
    /// Installs `ctx` for the current thread.
    pub fn install(ctx: RunContext) -> RunGuard {
        let ctx = Rc::new(ctx);
        CURRENT.with(|c| *c.borrow_mut() = Some(ctx.clone()));
        RunGuard { ctx }
    }

    /// The installed context (to collect logs and actions after the script returns).
    pub fn context(&self) -> &RunContext {
        &self.ctx
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// Runs `f` with the current run's context, or fails the way a script can see.
pub fn with_run<R>(
    what: &str,
    f: impl FnOnce(&RunContext) -> Result<R, Box<EvalAltResult>>,
) -> Result<R, Box<EvalAltResult>> {
    let ctx = CURRENT.with(|c| c.borrow().clone());
    match ctx {
        Some(ctx) => f(&ctx),
        None => Err(script_error(format!(
            "{what} is only available while a playbook runs (not in triggers() or at load time)"
        ))),
    }
}

/// Called by the engine between operations: ends the run on deadline or shutdown.
pub fn check_interrupt() -> Option<Dynamic> {
    CURRENT.with(|c| {
        let ctx = c.borrow();
        let ctx = ctx.as_ref()?;
        if ctx.cancel.is_cancelled() {
            Some(Dynamic::from(TERMINATED_SHUTDOWN))
        } else if Instant::now() >= ctx.deadline {
            Some(Dynamic::from(TERMINATED_TIMEOUT))
        } else {
            None
        }
    })
}

/// A catchable script error (runtime errors from primitives can be handled with try/catch).
pub fn script_error(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(message.into()),
        Position::NONE,
    ))
}

pub(crate) fn terminated(token: &str) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from(token.to_string()),
        Position::NONE,
    ))
}

/// The one bridge from a script to async code: runs `fut` on the daemon's runtime, bounded
/// by `limit`, the run's deadline and shutdown. Deadline and shutdown end the run (they
/// cannot be caught); `limit` expiring is an ordinary, catchable error.
pub fn block_on<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, Box<EvalAltResult>> {
    with_run(what, |ctx| {
        let remaining = ctx.deadline.saturating_duration_since(Instant::now());
        let bound = limit.min(remaining);
        let cancel = ctx.cancel.clone();
        let outcome = ctx.services.runtime.block_on(async {
            tokio::select! {
                r = tokio::time::timeout(bound, fut) => Some(r),
                _ = cancel.cancelled() => None,
            }
        });
        match outcome {
            None => Err(terminated(TERMINATED_SHUTDOWN)),
            Some(Ok(Ok(v))) => Ok(v),
            Some(Ok(Err(e))) => Err(script_error(format!("{what}: {e}"))),
            Some(Err(_)) if bound < limit => Err(terminated(TERMINATED_TIMEOUT)),
            Some(Err(_)) => Err(script_error(format!(
                "{what}: no answer within {}",
                humantime::format_duration(limit)
            ))),
        }
    })
}

/// Registers every primitive family on the engine.
pub fn register(engine: &mut Engine) {
    core::register(engine);
    health::register(engine);
}
