//! Primitives: the only way a playbook touches the world, and the only place where Rhai
//! meets async code.
//!
//! A run executes on a blocking thread. While it does, a [`RunContext`] is installed in a
//! thread-local (and removed by an RAII guard, because the blocking pool reuses threads).
//! Primitives read it to find the run's deadline, cancellation, dry-run flag, log and
//! action lists, and the backends ([`Services`]). Async work goes through [`block_on`],
//! which bounds it by the run's deadline and shutdown so a hung backend cannot hang a run.

mod action;
mod approval;
pub mod breaker;
mod budget;
pub mod celery;
mod core;
mod health;
pub mod incident;
pub mod logs;
pub mod memory;
pub mod notify;
pub mod payments;
pub mod reconcile;
pub mod recorder;
pub mod redis_conn;
mod services;
pub mod statuspage;
pub mod stripe;
pub mod webhooks;

use std::{
    cell::RefCell,
    future::Future,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use rhai::{Dynamic, Engine, EvalAltResult, Position};
use tokio_util::sync::CancellationToken;

#[cfg(test)]
pub(crate) use self::core::CARD_MARGIN;
pub use action::{act, push_action, ActionOutcome, ActionRecord};
pub use services::{Backends, ServiceSource, Services, Settings};

use crate::store::LogLine;

/// Why a script was stopped from outside; the text becomes the Rhai termination token.
pub const TERMINATED_TIMEOUT: &str = "timeout";
/// Shutdown (SIGTERM after the grace period) stopped the run.
pub const TERMINATED_SHUTDOWN: &str = "shutdown";
/// The script held more than `[playbooks] max_run_memory`.
pub const TERMINATED_MEMORY: &str = "memory";
/// The replica's lease may have lapsed: the attempt stops before it acts again.
pub const TERMINATED_LEASE: &str = "lease";

/// How much of a run its record keeps (`[playbooks] max_log_*`, `max_actions`,
/// `max_result_bytes`): whatever a script does, its final state can be written.
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    pub max_log_lines: usize,
    pub max_log_line_bytes: usize,
    pub max_log_bytes: usize,
    pub max_actions: usize,
    pub max_result_bytes: usize,
    /// `[playbooks] max_recording_bytes`: the flight recording's cap.
    pub max_recording_bytes: usize,
    /// `[playbooks] max_run_memory`, named in the error of a run that held more.
    pub max_run_memory: usize,
}

impl RecordLimits {
    pub fn of(cfg: &crate::config::PlaybooksConfig) -> RecordLimits {
        RecordLimits {
            max_log_lines: cfg.max_log_lines,
            max_log_line_bytes: cfg.max_log_line_bytes,
            max_log_bytes: cfg.max_log_bytes,
            max_actions: cfg.max_actions,
            max_result_bytes: cfg.max_result_bytes,
            max_recording_bytes: cfg.max_recording_bytes,
            max_run_memory: cfg.max_run_memory,
        }
    }
}

/// Everything a primitive needs to know about the run it serves.
pub struct RunContext {
    pub run_id: String,
    pub playbook: String,
    pub dry_run: bool,
    /// The incident the run belongs to (alert-triggered runs).
    pub incident: Option<String>,
    /// Who the run asks on behalf of: who triggered it (a token's name, `alertmanager`,
    /// `runbookd`), or for a follow-up run the requester of the approval that started it —
    /// the one person who may not approve what it asks for.
    pub requested_by: String,
    /// The decision a follow-up run was started by (`event.approval`).
    pub answer: Option<crate::approvals::Answer>,
    /// `approved()` asked for, or found pending, an approval: the run ends
    /// `awaiting_approval`.
    pub awaiting_approval: std::cell::Cell<bool>,
    pub deadline: Instant,
    /// When the run started and how long it may take, by the services' clock: on a
    /// virtual clock `sleep` moves time instead of waiting, and the deadline is virtual too.
    pub started_ms: i64,
    pub timeout: Duration,
    pub cancel: CancellationToken,
    /// The lease the run executes under (none in `runbookd run` and playbook tests that
    /// hold none): once it may have lapsed, primitives refuse to act.
    pub fence: Option<Arc<crate::store::Fence>>,
    /// This attempt's fencing token, for targets that can refuse a stale write themselves
    /// (the breaker's Redis scripts); present exactly when `fence` is.
    pub fence_token: Option<FenceToken>,
    pub services: Services,
    /// What the run's record may hold.
    pub limits: RecordLimits,
    pub logs: RefCell<Vec<LogLine>>,
    /// Bytes of `logs` so far.
    pub log_bytes: RefCell<usize>,
    pub dropped_logs: RefCell<usize>,
    pub actions: RefCell<Vec<serde_json::Value>>,
    pub dropped_actions: RefCell<usize>,
    /// The flight recorder (reads written down), or in a replay the recording answering
    /// them.
    pub tape: recorder::Tape,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RunContext>>> = const { RefCell::new(None) };
    /// Deadline for script code run at load time (`triggers()`, module top levels).
    static LOAD_DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Bounds script code run while a playbook loads (deadline and memory); cleared when
/// dropped.
pub struct LoadGuard {
    _memory: memory::Budget,
}

impl LoadGuard {
    /// Installs a deadline `limit` from now for this thread.
    pub fn install(limit: Duration) -> LoadGuard {
        LOAD_DEADLINE.with(|d| d.set(Some(Instant::now() + limit)));
        LoadGuard {
            _memory: memory::Budget::enter(),
        }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        LOAD_DEADLINE.with(|d| d.set(None));
    }
}

/// Keeps a [`RunContext`] installed on this thread until dropped.
pub struct RunGuard {
    ctx: Rc<RunContext>,
    _memory: memory::Budget,
}

impl RunGuard {
    /// Installs `ctx` for the current thread.
    pub fn install(ctx: RunContext) -> RunGuard {
        let ctx = Rc::new(ctx);
        CURRENT.with(|c| *c.borrow_mut() = Some(ctx.clone()));
        RunGuard {
            ctx,
            _memory: memory::Budget::enter(),
        }
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
        let Some(ctx) = ctx.as_ref() else {
            let late = LOAD_DEADLINE
                .with(|d| d.get())
                .is_some_and(|d| Instant::now() >= d);
            return late.then(|| Dynamic::from(TERMINATED_TIMEOUT));
        };
        let now = Instant::now();
        if ctx.fence.as_ref().is_some_and(|f| f.lapsed_at(now)) {
            Some(Dynamic::from(TERMINATED_LEASE))
        } else if ctx.cancel.is_cancelled() {
            Some(Dynamic::from(TERMINATED_SHUTDOWN))
        } else if now >= ctx.deadline {
            Some(Dynamic::from(TERMINATED_TIMEOUT))
        } else {
            None
        }
    })
}

/// What a write carries so its target can refuse it once a later attempt of the same run
/// wrote: the run and this attempt's number. The attempt grows with every takeover of the
/// run (each is a compare-and-set in the state store), and the store gives a run to one
/// attempt at a time, so "a later attempt wrote" means exactly "this attempt is stale".
/// A token per lease would not do: replicas' leases are all live at once, and the one
/// registered last would lock every other replica out of a breaker it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceToken {
    /// The run's id: the scope of the token (the fence key is per run).
    pub run: String,
    /// The attempt writing.
    pub attempt: i64,
}

/// The current run's fencing token (None outside a lease: nothing to fence).
pub fn current_fence_token() -> Option<FenceToken> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|ctx| ctx.fence_token.clone()))
}

/// The current run's fence, for primitives that write many times inside one async call
/// (`reconcile`): they check it before each write.
pub fn current_fence() -> Option<Arc<crate::store::Fence>> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|ctx| ctx.fence.clone()))
}

/// A catchable script error (runtime errors from primitives can be handled with try/catch).
pub fn script_error(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(message.into()),
        Position::NONE,
    ))
}

/// `e` ends the run with termination `token`.
fn is_terminated(e: &EvalAltResult, token: &str) -> bool {
    matches!(e, EvalAltResult::ErrorTerminated(t, _) if t.clone().into_string().is_ok_and(|t| t == token))
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
    approval::register(engine);
    health::register(engine);
    breaker::register(engine);
    budget::register(engine);
    payments::register(engine);
    stripe::register(engine);
    webhooks::register(engine);
    reconcile::register(engine);
    celery::register(engine);
    statuspage::register(engine);
    logs::register(engine);
    incident::register(engine);
    notify::register(engine);
}
