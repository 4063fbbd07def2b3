//! Human approval of one concrete action. A playbook asks with `approved(#{ action, target,
//! params, reason, expires })` (`primitives/approval.rs`); humans decide through the API,
//! the CLI or a simulation's test ([`decide`]); nobody deciding in time is a decision too
//! ([`expire_due`], on every escalation pass). Each decision starts a new run of the same
//! playbook for the same incident (`event.kind = "approval"`), which investigates again and
//! asks for what it now wants: the same request is granted once, anything else is a new
//! request. Nothing waits suspended; everything is in the state store.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::{
    dispatch::{Dispatcher, RunRequest},
    store::{Approval, DecideError, Decided, RunRecord, Store, StoreError, Trigger},
    triggers::{Event, EventKind},
};

/// What identifies "this exact request": the playbook, the incident, the action, its target
/// and its parameters (object keys in sorted order, so `#{a, b}` and `#{b, a}` agree).
pub fn request_hash(
    playbook: &str,
    incident: Option<&str>,
    action: &str,
    target: &str,
    params: &Value,
) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: std::collections::BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, canonical(v))).collect();
                json!(sorted)
            }
            Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let request = json!([playbook, incident, action, target, canonical(params)]);
    hex::encode(Sha256::digest(request.to_string().as_bytes()))
}

/// The run a decision starts: the same playbook, for the same incident, told what was
/// decided and by whom. Recorded for nobody; whichever replica has a free slot runs it.
/// The trigger's actor is the approver (who started it), but the run asks on behalf of the
/// original requester (`event.approval.requested_by`, see [`requester_of`]): whatever the
/// chain of follow-ups, the one who asked first never approves.
fn follow_up(a: &Approval, decision: &str, approver: &str, comment: &str, now: i64) -> RunRecord {
    let approvers: Vec<&str> = a
        .decisions
        .iter()
        .filter(|d| d.decision == "approve")
        .map(|d| d.by.as_str())
        .collect();
    let event = Event {
        kind: EventKind::Approval,
        name: a.action.clone(),
        status: decision.to_string(),
        labels: Map::new(),
        annotations: Map::new(),
        params: Map::new(),
        incident: a.incident.clone(),
        dry_run: false,
        approval: Some(json!({
            "id": a.id, "action": a.action, "target": a.target, "params": a.params,
            "reason": a.reason, "decision": decision, "approver": approver,
            "approvers": approvers, "comment": comment, "requested_by": a.requested_by,
        })),
    };
    Dispatcher::internal_record(
        RunRequest {
            playbook: a.playbook.clone(),
            event,
            trigger: Trigger {
                kind: EventKind::Approval,
                name: a.id.clone(),
                actor: approver.to_string(),
            },
        },
        now,
    )
}

/// Who a run asks on behalf of: for a follow-up run, the requester of the approval that
/// started it (carried from the first run of the chain); for any other run, its trigger's
/// actor (a token's name, `alertmanager`'s token, `runbookd` for cron and escalation).
pub fn requester_of(event: &Value, actor: &str) -> String {
    match (
        event["kind"].as_str(),
        event["approval"]["requested_by"].as_str(),
    ) {
        (Some("approval"), Some(by)) if !by.is_empty() => by.to_string(),
        _ => actor.to_string(),
    }
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
    pub fn of(event: &Value, playbook: &str) -> Option<Answer> {
        if event["kind"].as_str() != Some("approval") {
            return None;
        }
        let a = &event["approval"];
        Some(Answer {
            id: a["id"].as_str()?.to_string(),
            decision: a["decision"].as_str()?.to_string(),
            request_hash: request_hash(
                playbook,
                event["incident"].as_str(),
                a["action"].as_str()?,
                a["target"].as_str()?,
                a.get("params").unwrap_or(&Value::Null),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_hashes_alike_whatever_the_key_order() {
        let a = request_hash(
            "p",
            Some("i"),
            "breaker.reset",
            "stripe",
            &json!({"a": 1, "b": {"y": 2, "x": 1}}),
        );
        let b = request_hash(
            "p",
            Some("i"),
            "breaker.reset",
            "stripe",
            &json!({"b": {"x": 1, "y": 2}, "a": 1}),
        );
        assert_eq!(a, b);
        for other in [
            request_hash(
                "q",
                Some("i"),
                "breaker.reset",
                "stripe",
                &json!({"a": 1, "b": {"y": 2, "x": 1}}),
            ),
            request_hash(
                "p",
                None,
                "breaker.reset",
                "stripe",
                &json!({"a": 1, "b": {"y": 2, "x": 1}}),
            ),
            request_hash(
                "p",
                Some("i"),
                "breaker.reset",
                "paypal",
                &json!({"a": 1, "b": {"y": 2, "x": 1}}),
            ),
            request_hash(
                "p",
                Some("i"),
                "breaker.reset",
                "stripe",
                &json!({"a": 2, "b": {"y": 2, "x": 1}}),
            ),
        ] {
            assert_ne!(a, other);
        }
    }
}
