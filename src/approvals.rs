//! Human approval of one concrete action. A playbook asks with `approved(#{ action, target,
//! params, reason, expires })` (`primitives/approval.rs`); humans decide through the API,
//! the CLI or a simulation's test ([`decide`]); nobody deciding in time is a decision too
//! ([`expire_due`], on every escalation pass). Each decision starts a new run of the same
//! playbook for the same incident (`event.kind = "approval"`), which investigates again and
//! asks for what it now wants: the same request is granted once, anything else is a new
//! request. Nothing waits suspended; everything is in the state store.

use crate::{
    event::{ApprovalOutcome, Event, EventKind, RunRequest},
    store::{request_hash, Approval, DecideError, Decided, RunRecord, Store, StoreError},
};

/// The run a decision starts: the same playbook, for the same incident, told what was
/// decided and by whom. Recorded for nobody; whichever replica has a free slot runs it.
/// The trigger's actor is the approver (who started it), but the run asks on behalf of the
/// original requester (`event.approval.requested_by`, see [`Event::requester`]): whatever the
/// chain of follow-ups, the one who asked first never approves.
fn follow_up(a: &Approval, decision: &str, approver: &str, comment: &str, now: i64) -> RunRecord {
    let approvers: Vec<String> = a
        .decisions
        .iter()
        .filter(|d| d.decision == "approve")
        .map(|d| d.by.clone())
        .collect();
    let outcome = ApprovalOutcome {
        id: a.id.clone(),
        action: a.action.clone(),
        target: a.target.clone(),
        params: a.params.clone(),
        reason: a.reason.clone(),
        decision: decision.to_string(),
        approver: approver.to_string(),
        approvers,
        comment: comment.to_string(),
        requested_by: a.requested_by.clone(),
    };
    RunRecord::unowned(
        RunRequest::approval(&a.playbook, a.incident.as_deref(), outcome),
        now,
    )
}

/// The decision a follow-up run was started by, and the request it answered: `approved()`
/// asking for that same request again after a denial or an expiry asks nothing (a denial
/// is an answer, not an invitation to ask until someone says yes).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: String,
    /// `approved`, `denied` or `expired`.
    pub decision: String,
    pub request_hash: String,
}

impl Answer {
    /// The answer `event` carries, for a follow-up run of `playbook`.
    pub fn of(event: &Event, playbook: &str) -> Option<Answer> {
        if event.kind != EventKind::Approval {
            return None;
        }
        let a = event.approval.as_ref()?;
        Some(Answer {
            id: a.id.clone(),
            decision: a.decision.clone(),
            request_hash: request_hash(
                playbook,
                event.incident.as_deref(),
                &a.action,
                &a.target,
                &a.params,
            ),
        })
    }
}

/// `by` approves or denies approval `id`. The decision that settles it (a denial, or the
/// last approver `[approvals] required` asks for) records the follow-up run in the same
/// transaction; the caller wakes the dispatcher's claimer (or, in a simulation, runs it).
pub async fn decide(
    store: &Store,
    id: &str,
    by: &str,
    approve: bool,
    comment: &str,
) -> Result<Decided, DecideError> {
    let now = store.now();
    let decision = if approve { "approved" } else { "denied" };
    store
        .decide_approval(id, by, approve, comment, |a| {
            follow_up(a, decision, by, comment, now)
        })
        .await
}

/// Expires the requests nobody decided in time; returns the follow-up runs recorded (each
/// sees the decision `expired`).
pub async fn expire_due(store: &Store) -> Result<Vec<RunRecord>, StoreError> {
    let now = store.now();
    store
        .expire_approvals(|a| follow_up(a, "expired", "runbookd", "", now))
        .await
}
