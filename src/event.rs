//! What starts a run, as one typed value from the trigger to the script: the [`Event`] a
//! playbook's `run(event)` receives and the state store keeps with the run, the
//! [`Trigger`] the API shows, and the [`RunRequest`] every source hands the dispatcher.
//!
//! A leaf: it imports nothing of runbookd's, so the store, the triggers, the schedulers and
//! the dispatcher all speak it without importing each other. Each kind of run has one
//! constructor ([`RunRequest::manual`], [`RunRequest::alert`], [`RunRequest::cron`],
//! [`RunRequest::escalation`], [`RunRequest::approval`]), which is the one place where the
//! event's kind and the trigger's kind are set, so they cannot disagree.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What started a run: `event.kind` for the script, `trigger.kind` in the API.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// An Alertmanager notification (or a simulation's alert).
    Alert,
    /// A cron schedule's tick.
    Cron,
    /// An operator: the HTTP API or the CLI.
    #[default]
    Manual,
    /// An escalation level fired and runs its playbook.
    Escalation,
    /// Humans decided on an approval the playbook asked for (or nobody did in time).
    Approval,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Alert => "alert",
            EventKind::Cron => "cron",
            EventKind::Manual => "manual",
            EventKind::Escalation => "escalation",
            EventKind::Approval => "approval",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The map a playbook's `run(event)` receives, and what the store keeps of it. Every field
/// has a default so that records written by older versions (without `attempt`, say) still
/// read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(default)]
pub struct Event {
    pub kind: EventKind,
    /// Alert name, cron expression, or the playbook's name for manual runs.
    pub name: String,
    /// `firing` / `resolved` for alerts; empty otherwise.
    pub status: String,
    #[schema(value_type = Object)]
    pub labels: Map<String, Value>,
    #[schema(value_type = Object)]
    pub annotations: Map<String, Value>,
    /// Operator-supplied parameters (`--param k=v`, `{"params":{...}}`).
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// Incident id, when the run belongs to one.
    pub incident: Option<String>,
    /// Actions are planned and recorded, not performed.
    pub dry_run: bool,
    /// For `approval` runs: what was decided, by whom, on which request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalOutcome>,
    /// Which attempt at the run this is (1, or more after a replica died mid-run); the
    /// run record's attempt is the authority, copied here whenever an attempt starts.
    pub attempt: i64,
}

/// What an `approval` run is told: the request it answers and the decision on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(default)]
pub struct ApprovalOutcome {
    /// The approval's id.
    pub id: String,
    pub action: String,
    pub target: String,
    pub params: Value,
    pub reason: String,
    /// `approved`, `denied` or `expired`.
    pub decision: String,
    /// Who settled it (`runbookd` for an expiry).
    pub approver: String,
    /// Everyone who approved, in order.
    pub approvers: Vec<String>,
    pub comment: String,
    /// Who asked first: carried along the chain of follow-up runs, never an approver.
    pub requested_by: String,
}

/// How a run was started, as the API and the dashboard show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Trigger {
    /// Always the event's kind (set by the [`RunRequest`] constructors).
    pub kind: EventKind,
    /// Alert name, cron expression, escalation level, approval id, or where an operator
    /// started it (`api`, `cli`).
    pub name: String,
    /// Token name (API), `cli`, or `runbookd` for the daemon's own triggers.
    pub actor: String,
}

/// A request to run a playbook.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub playbook: String,
    pub event: Event,
    pub trigger: Trigger,
}

/// runbookd's own triggers (cron, escalation) act as this actor.
pub const DAEMON_ACTOR: &str = "runbookd";

impl RunRequest {
    fn new(playbook: &str, event: Event, name: &str, actor: &str) -> RunRequest {
        RunRequest {
            playbook: playbook.to_string(),
            trigger: Trigger {
                kind: event.kind,
                name: name.to_string(),
                actor: actor.to_string(),
            },
            event,
        }
    }

    /// An operator's run of `playbook`, started through `via` (`api`, `cli`, …) by `actor`.
    pub fn manual(
        playbook: &str,
        params: Map<String, Value>,
        dry_run: bool,
        via: &str,
        actor: &str,
    ) -> RunRequest {
        let event = Event {
            kind: EventKind::Manual,
            name: playbook.into(),
            params,
            dry_run,
            attempt: 1,
            ..Event::default()
        };
        RunRequest::new(playbook, event, via, actor)
    }

    /// A run of `playbook` for one alert of `incident`, sent by `actor` (a token's name).
    pub fn alert(playbook: &str, alert: AlertFacts, incident: &str, actor: &str) -> RunRequest {
        let name = alert.name.clone();
        let event = Event {
            kind: EventKind::Alert,
            name: alert.name,
            status: alert.status,
            labels: alert.labels,
            annotations: alert.annotations,
            incident: Some(incident.to_string()),
            attempt: 1,
            ..Event::default()
        };
        RunRequest::new(playbook, event, &name, actor)
    }

    /// The tick of cron schedule `expr` that was due at `scheduled_for` (RFC 3339).
    pub fn cron(playbook: &str, expr: &str, scheduled_for: &str) -> RunRequest {
        let mut params = Map::new();
        params.insert("scheduled_for".into(), Value::from(scheduled_for));
        let event = Event {
            kind: EventKind::Cron,
            name: expr.into(),
            params,
            attempt: 1,
            ..Event::default()
        };
        RunRequest::new(playbook, event, expr, DAEMON_ACTOR)
    }

    /// Escalation level `level` fired for `incident` (its status and labels as they are).
    pub fn escalation(
        playbook: &str,
        level: &str,
        incident: &str,
        status: &str,
        labels: Map<String, Value>,
    ) -> RunRequest {
        let event = Event {
            kind: EventKind::Escalation,
            name: level.into(),
            status: status.into(),
            labels,
            incident: Some(incident.to_string()),
            attempt: 1,
            ..Event::default()
        };
        RunRequest::new(playbook, event, level, DAEMON_ACTOR)
    }

    /// The follow-up run of `playbook` a decision on an approval starts; the trigger's actor
    /// is whoever settled it.
    pub fn approval(
        playbook: &str,
        incident: Option<&str>,
        outcome: ApprovalOutcome,
    ) -> RunRequest {
        let (id, approver) = (outcome.id.clone(), outcome.approver.clone());
        let event = Event {
            kind: EventKind::Approval,
            name: outcome.action.clone(),
            status: outcome.decision.clone(),
            incident: incident.map(str::to_string),
            approval: Some(outcome),
            attempt: 1,
            ..Event::default()
        };
        RunRequest::new(playbook, event, &id, &approver)
    }
}

/// What an alert-triggered run is told about its alert.
#[derive(Debug, Clone, Default)]
pub struct AlertFacts {
    pub name: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub labels: Map<String, Value>,
    pub annotations: Map<String, Value>,
}

impl Event {
    /// Who a run asks on behalf of: for a follow-up run, the requester of the approval that
    /// started it (carried from the first run of the chain); for any other run, its
    /// trigger's actor (a token's name, `alertmanager`'s token, `runbookd` for cron and
    /// escalation).
    pub fn requester(&self, actor: &str) -> String {
        match (&self.kind, &self.approval) {
            (EventKind::Approval, Some(a)) if !a.requested_by.is_empty() => a.requested_by.clone(),
            _ => actor.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_written_before_attempt_existed_still_reads() {
        let old = serde_json::json!({
            "kind": "alert", "name": "PaymentFailureRateHigh", "status": "firing",
            "labels": {"service": "payments"}, "annotations": {}, "params": {},
            "incident": "inc-1", "dry_run": false
        });
        let event: Event = serde_json::from_value(old).expect("reads");
        assert_eq!(event.kind, EventKind::Alert);
        assert_eq!(event.incident.as_deref(), Some("inc-1"));
        assert_eq!(
            event.attempt, 0,
            "the run record's attempt is copied in later"
        );
    }

    #[test]
    fn the_trigger_kind_is_the_event_kind_for_every_constructor() {
        let outcome = ApprovalOutcome {
            id: "a1".into(),
            approver: "alice".into(),
            requested_by: "bob".into(),
            ..Default::default()
        };
        let requests = [
            RunRequest::manual("p", Map::new(), false, "api", "tok"),
            RunRequest::alert("p", AlertFacts::default(), "inc", "am"),
            RunRequest::cron("p", "* * * * *", "2026-01-01T00:00:00Z"),
            RunRequest::escalation("p", "L2", "inc", "open", Map::new()),
            RunRequest::approval("p", Some("inc"), outcome),
        ];
        let kinds: Vec<_> = requests.iter().map(|r| r.trigger.kind).collect();
        for r in &requests {
            assert_eq!(r.trigger.kind, r.event.kind);
        }
        assert_eq!(
            kinds,
            [
                EventKind::Manual,
                EventKind::Alert,
                EventKind::Cron,
                EventKind::Escalation,
                EventKind::Approval
            ]
        );
        assert_eq!(requests[4].trigger.actor, "alice");
        assert_eq!(requests[4].event.requester("alice"), "bob");
        assert_eq!(requests[0].event.requester("tok"), "tok");
    }

    #[test]
    fn the_script_sees_the_same_keys_as_before() {
        let r = RunRequest::manual("p", Map::new(), true, "cli", "me");
        let v = serde_json::to_value(&r.event).expect("serializes");
        let keys: std::collections::BTreeSet<&str> = v
            .as_object()
            .expect("map")
            .keys()
            .map(|k| k.as_str())
            .collect();
        let expected: std::collections::BTreeSet<&str> = [
            "kind",
            "name",
            "status",
            "labels",
            "annotations",
            "params",
            "incident",
            "dry_run",
            "attempt",
        ]
        .into_iter()
        .collect();
        assert_eq!(keys, expected, "`approval` only on approval runs");
    }
}
