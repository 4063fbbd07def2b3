//! Executes one run: the compiled playbook's `run(event)` on the calling (blocking) thread,
//! inside a [`RunContext`] that carries the deadline, cancellation and collected output.

use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Scope};
use tokio_util::sync::CancellationToken;

use super::catalog::{innermost, strip_position, Playbook};
use crate::{
    event::Event,
    primitives::{
        recorder::{Recording, Tape, TERMINATED_CUT, TERMINATED_UNRECORDED},
        RecordLimits, RunContext, RunGuard, Services, TERMINATED_LEASE, TERMINATED_MEMORY,
        TERMINATED_SHUTDOWN, TERMINATED_TIMEOUT,
    },
    store::{LogLine, RunError, RunStatus},
};

/// What a run asks of the runner.
pub struct RunSpec<'a> {
    pub run_id: &'a str,
    /// Who triggered the run (the trigger's actor).
    pub requested_by: &'a str,
    /// What the script receives; its `attempt` is the fencing token under a lease.
    pub event: &'a Event,
    pub dry_run: bool,
    pub timeout: Duration,
    pub limits: RecordLimits,
    /// The lease the run executes under: past it, nothing acts ([`crate::store::Fence`]).
    pub fence: Option<std::sync::Arc<crate::store::Fence>>,
}

/// What came out of a run.
#[derive(Debug)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub result: Option<serde_json::Value>,
    pub error: Option<RunError>,
    pub logs: Vec<LogLine>,
    pub actions: Vec<serde_json::Value>,
    /// The reads it made (none in a replay, or with `max_recording_bytes = 0`).
    pub recording: Option<Recording>,
}

/// Runs `playbook` to completion, deadline or cancellation. Never panics on script input.
pub fn execute(
    engine: &Engine,
    playbook: &Playbook,
    spec: RunSpec<'_>,
    services: Services,
    cancel: CancellationToken,
) -> RunOutcome {
    let tape = match &services.replay {
        Some(replay) => Tape::Replaying(Box::new(std::cell::RefCell::new(replay.player(
            &playbook.name,
            spec.event.kind,
            spec.run_id,
        )))),
        None => Tape::recording(spec.limits.max_recording_bytes),
    };
    let replay = services.replay.clone();
    let guard = RunGuard::install(RunContext {
        run_id: spec.run_id.to_string(),
        playbook: playbook.name.clone(),
        dry_run: spec.dry_run,
        incident: spec.event.incident.clone(),
        requested_by: spec.event.requester(spec.requested_by),
        answer: crate::approvals::Answer::of(spec.event, &playbook.name),
        awaiting_approval: Default::default(),
        deadline: Instant::now() + spec.timeout,
        started_ms: services.clock.now_ms(),
        timeout: spec.timeout,
        cancel,
        fence: spec.fence.clone(),
        fence_token: spec.fence.as_ref().map(|_| crate::primitives::FenceToken {
            run: spec.run_id.to_string(),
            attempt: spec.event.attempt,
        }),
        services,
        limits: spec.limits,
        logs: Default::default(),
        log_bytes: Default::default(),
        dropped_logs: Default::default(),
        actions: Default::default(),
        dropped_actions: Default::default(),
        tape,
    });
    let outcome = call_run(engine, playbook, spec.event);
    let ctx = guard.context();
    let now = ctx.services.clock.now_ms();
    let mut logs = ctx.logs.take();
    let dropped = ctx.dropped_logs.take();
    if dropped > 0 {
        logs.push(LogLine {
            at: crate::store::ms_to_rfc3339(now),
            level: "warn".into(),
            message: format!(
                "{dropped} more log lines were not kept ([playbooks] max_log_lines = {}, max_log_bytes = {})",
                spec.limits.max_log_lines, spec.limits.max_log_bytes
            ),
        });
    }
    let recording = ctx.tape.take_recording();
    if let (Some(replay), Some(findings)) = (replay, ctx.tape.take_findings()) {
        replay.finish(findings);
    }
    let mut actions = ctx.actions.take();
    let dropped_actions = ctx.dropped_actions.take();
    if dropped_actions > 0 {
        actions.push(serde_json::json!({
            "action": "(not recorded)",
            "omitted": dropped_actions,
            "why": format!("more than [playbooks] max_actions = {}; every action is in the audit trail", spec.limits.max_actions),
        }));
    }
    let (status, result, error) = match outcome {
        Ok(value) => match rhai::serde::from_dynamic::<serde_json::Value>(&value) {
            Ok(json) => (
                RunStatus::Succeeded,
                Some(bounded_result(
                    crate::redact::mask_cards_json(&json),
                    spec.limits.max_result_bytes,
                )),
                None,
            ),
            Err(e) => (
                RunStatus::Failed,
                None,
                Some(RunError {
                    message: format!("run() returned a value that is not JSON: {e}"),
                    reason: crate::store::RunErrorReason::Script,
                    line: None,
                    column: None,
                }),
            ),
        },
        Err(err) => {
            let (status, mut error) = classify(&err, spec.timeout, spec.limits.max_run_memory);
            // A script's thrown text or a primitive's error may quote what it read.
            error.message = crate::redact::mask_cards(&error.message).into_owned();
            (status, None, Some(error))
        }
    };
    // A run that asked for approval (and did not fail) waits for the humans' decision.
    let status = if status == RunStatus::Succeeded && ctx.awaiting_approval.get() {
        RunStatus::AwaitingApproval
    } else {
        status
    };
    drop(guard);
    RunOutcome {
        status,
        result,
        error,
        logs,
        actions,
        recording,
    }
}

/// The result as stored: itself, or past `max` bytes of JSON a marker with a preview.
fn bounded_result(result: serde_json::Value, max: usize) -> serde_json::Value {
    let text = result.to_string();
    if text.len() <= max {
        return result;
    }
    serde_json::json!({
        "truncated": true,
        "bytes": text.len(),
        "why": format!("larger than [playbooks] max_result_bytes = {max}"),
        "preview": crate::text::truncate(&text, 8 * 1024),
    })
}

fn call_run(
    engine: &Engine,
    playbook: &Playbook,
    event: &Event,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let event: Dynamic = rhai::serde::to_dynamic(event)?;
    // Top-level statements run first: that is where `import`s live, and functions can only
    // see modules imported by statements that ran. Playbooks keep work inside functions.
    engine.call_fn_with_options(
        CallFnOptions::new().eval_ast(true).rewind_scope(true),
        &mut Scope::new(),
        &playbook.ast,
        "run",
        (event,),
    )
}

/// Maps a Rhai error to a run status and a user-facing error with the script position.
fn classify(err: &EvalAltResult, timeout: Duration, max_memory: usize) -> (RunStatus, RunError) {
    let inner = innermost(err);
    let pos = inner.position();
    let (line, column) = (pos.line(), pos.position());
    let make = |reason: crate::store::RunErrorReason, message: String| RunError {
        message,
        reason,
        line,
        column,
    };
    match inner {
        EvalAltResult::ErrorTerminated(token, _) => {
            let token = token.clone().into_string().unwrap_or_default();
            if token == TERMINATED_MEMORY {
                (
                    RunStatus::Failed,
                    make(
                        crate::store::RunErrorReason::DataTooLarge,
                        format!(
                            "the script held more memory than [playbooks] max_run_memory ({})",
                            crate::primitives::memory::human(max_memory)
                        ),
                    ),
                )
            } else if token == TERMINATED_LEASE {
                (
                    RunStatus::Failed,
                    make(
                        crate::store::RunErrorReason::LeaseLapsed,
                        "this replica's lease may have lapsed (it was frozen or cut off from the state store); the attempt stopped before acting".into(),
                    ),
                )
            } else if token == TERMINATED_UNRECORDED || token == TERMINATED_CUT {
                (
                    RunStatus::Failed,
                    make(
                        crate::store::RunErrorReason::Unrecorded,
                        if token == TERMINATED_CUT {
                            "replay: the recording was cut here ([playbooks] max_recording_bytes); the replay stops at the cut".into()
                        } else {
                            "replay: the playbook needed a read the recording does not hold (see the replay's report)".into()
                        },
                    ),
                )
            } else if token == TERMINATED_SHUTDOWN {
                (
                    RunStatus::Failed,
                    make(
                        crate::store::RunErrorReason::Shutdown,
                        "runbookd shut down before this run finished".into(),
                    ),
                )
            } else {
                debug_assert_eq!(token, TERMINATED_TIMEOUT);
                (
                    RunStatus::TimedOut,
                    make(
                        crate::store::RunErrorReason::Timeout,
                        format!(
                            "run exceeded its deadline of {}",
                            humantime::format_duration(timeout)
                        ),
                    ),
                )
            }
        }
        EvalAltResult::ErrorTooManyOperations(_) => (
            RunStatus::Failed,
            make(
                crate::store::RunErrorReason::OperationLimit,
                "run exceeded its operation budget (playbooks.max_operations)".into(),
            ),
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => (
            RunStatus::Failed,
            make(
                crate::store::RunErrorReason::DataTooLarge,
                format!("{what} exceeds the sandbox limit"),
            ),
        ),
        EvalAltResult::ErrorStackOverflow(_) => (
            RunStatus::Failed,
            make(
                crate::store::RunErrorReason::CallDepth,
                "too many nested calls (playbooks.max_call_depth)".into(),
            ),
        ),
        other => (
            RunStatus::Failed,
            make(
                crate::store::RunErrorReason::Script,
                strip_position(&other.to_string(), pos),
            ),
        ),
    }
}
