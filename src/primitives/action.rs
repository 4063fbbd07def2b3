//! Actions: what a primitive changes outside runbookd. Each one is performed — or in a
//! dry run only planned — and recorded twice, on the run and in the audit trail, and only
//! while the run's lease holds (fenced actions, docs/operations.md).

use std::time::Duration;

use rhai::EvalAltResult;

use super::{core, is_terminated, terminated, with_run, TERMINATED_LEASE};
use crate::store::NewAudit;

/// What became of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionOutcome {
    /// A dry run: what would have been done.
    Planned,
    Done,
    Failed,
}

impl ActionOutcome {
    /// Planned in a dry run, else done.
    pub fn of(dry_run: bool) -> ActionOutcome {
        if dry_run {
            ActionOutcome::Planned
        } else {
            ActionOutcome::Done
        }
    }
}

/// One action, as it is recorded on a run and in the audit trail.
pub struct ActionRecord<'a> {
    pub action: &'a str,
    pub target: &'a str,
    pub dry_run: bool,
    pub outcome: ActionOutcome,
    pub details: serde_json::Value,
    pub result: Option<&'a serde_json::Value>,
    pub error: Option<&'a str>,
}

impl ActionRecord<'_> {
    /// The record's JSON, stamped `at_ms` (the run's clock).
    /// The record as the run and the audit trail keep it, card numbers masked.
    pub fn at(self, at_ms: i64) -> serde_json::Value {
        crate::redact::mask_cards_json(&serde_json::json!({
            "at": crate::store::ms_to_rfc3339(at_ms),
            "action": self.action,
            "target": self.target,
            "dry_run": self.dry_run,
            "outcome": self.outcome,
            "details": self.details,
            "result": self.result,
            "error": self.error,
        }))
    }
}

/// Adds an action's record to the run (within `[playbooks] max_actions`; one record is
/// bounded like a log line, as its details can be large).
pub fn push_action(action: &str, record: serde_json::Value) -> Result<(), Box<EvalAltResult>> {
    let record = crate::redact::mask_cards_json(&record);
    with_run(action, |ctx| {
        let mut actions = ctx.actions.borrow_mut();
        if actions.len() < ctx.limits.max_actions {
            let text = record.to_string();
            if text.len() > ctx.limits.max_log_line_bytes {
                actions.push(serde_json::json!({
                    "action": record["action"], "target": record["target"],
                    "outcome": record["outcome"], "dry_run": record["dry_run"],
                    "truncated": crate::text::truncate(&text, ctx.limits.max_log_line_bytes),
                }));
            } else {
                actions.push(record);
            }
        } else {
            *ctx.dropped_actions.borrow_mut() += 1;
        }
        Ok(())
    })
}

/// Actions on runbookd's own state (the incident, notifications), not on the world.
fn is_own(action: &str) -> bool {
    action == "notify" || action.starts_with("incident.")
}

/// Performs — or in a dry run, only plans — an action, and records it twice: on the run
/// (`actions`, and a log line) and in the audit trail. `perform` runs only for real runs,
/// and only while the run's lease holds (see [`crate::store::Fence`]); an attempt whose
/// lease may have lapsed ends as interrupted instead.
/// Returns what `perform` returned, or `None` in a dry run.
pub fn act(
    action: &str,
    target: &str,
    details: serde_json::Value,
    perform: impl FnOnce() -> Result<serde_json::Value, Box<EvalAltResult>>,
) -> Result<Option<serde_json::Value>, Box<EvalAltResult>> {
    let (now, dry_run, run_id, playbook, store, runtime, replayed) = with_run(action, |ctx| {
        // Fenced: an attempt whose lease may have lapsed neither acts nor records an
        // action — another replica may be running it already.
        if !ctx.dry_run && ctx.fence.as_ref().is_some_and(|f| f.lapsed()) {
            return Err(terminated(TERMINATED_LEASE));
        }
        Ok((
            ctx.services.clock.now_ms(),
            ctx.dry_run,
            ctx.run_id.clone(),
            ctx.playbook.clone(),
            ctx.services.store.clone(),
            ctx.services.runtime.clone(),
            // A replay answers an action with its recorded outcome: one on the world is
            // not performed; runbookd's own (incident facts, escalations, pages) happen in
            // the replay's simulated store too, where its escalation table and channels
            // see them — the script still gets the answer production gave.
            super::recorder::replayed_action(ctx, action, target),
        ))
    })?;
    let (outcome, result, error) = if dry_run {
        (ActionOutcome::Planned, None, None)
    } else if let Some(replayed) = replayed {
        if is_own(action) {
            if let Err(e) = perform() {
                if is_terminated(&e, TERMINATED_LEASE) {
                    return Err(e);
                }
            }
        }
        match replayed {
            Ok(v) => (ActionOutcome::Done, Some(v), None),
            Err(e) => (ActionOutcome::Failed, None, Some(super::script_error(e))),
        }
    } else {
        match perform() {
            Ok(v) => (ActionOutcome::Done, Some(v), None),
            // The target refused a stale attempt's write (fenced): nothing happened, and
            // nothing is recorded, as when the lease's own fence stops it above.
            Err(e) if is_terminated(&e, TERMINATED_LEASE) => return Err(e),
            Err(e) => (ActionOutcome::Failed, None, Some(e)),
        }
    };
    let error_text = error.as_ref().map(|e| e.to_string());
    let record = ActionRecord {
        action,
        target,
        dry_run,
        outcome,
        details,
        result: result.as_ref(),
        error: error_text.as_deref(),
    }
    .at(now);
    push_action(action, record.clone())?;
    match (&error_text, dry_run) {
        (Some(e), _) => core::append_log("error", &format!("{action} {target} failed: {e}")),
        (None, true) => core::append_log("info", &format!("dry run: would {action} {target}")),
        // Facts are bookkeeping for the escalation table, not something an SRE reads
        // the run for: they stay out of the run's log unless debugging.
        (None, false) if action == "incident.set_fact" => {
            core::append_log("debug", &format!("{action} {target}: done"))
        }
        (None, false) => core::append_log("info", &format!("{action} {target}: done")),
    }
    if let Some(store) = store {
        let entry = NewAudit {
            actor: format!("playbook:{playbook}"),
            action: action.to_string(),
            target: target.to_string(),
            run_id: Some(run_id),
            dry_run,
            details: record,
        };
        // Not cancellable: an action that happened is recorded even while the run ends.
        let written = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), store.audit(&entry)).await
        });
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(action, target, error = %e, "audit entry not written"),
            Err(_) => tracing::error!(action, target, "audit entry not written: store timed out"),
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(result),
    }
}
