//! `/incidents/{id}`: one incident — its timeline (alerts, runs, facts, escalations,
//! notifications, approvals, acknowledgement), facts, the escalation table with what fired
//! and what would fire next, and the Acknowledge / Resolve buttons.

use axum::{
    extract::{Form, Path, State},
    http::HeaderMap,
    response::Response,
};

use super::{
    approvals::{approval_row, ApprovalRow},
    back_to,
    overview::{incident_row, IncidentRow},
    pages::{pretty, run_row, scalar, span, when, when_opt, when_str, Chrome, RunRow, When},
    CsrfForm, Viewer, WebError,
};
use crate::{
    http::{actions::Actions, caller::Access, error::ApiError, state::EscalationView},
    store::{IncidentStatus, RunFilter, Store},
};

pub struct TimelineRow {
    pub at: When,
    pub ms: i64,
    pub kind: String,
    pub actor: String,
    pub message: String,
    /// A link within the dashboard (a run, the approvals).
    pub link: Option<String>,
    pub details: Option<String>,
}

pub struct LevelRow {
    pub name: String,
    pub condition: String,
    pub channels: String,
    pub playbook: Option<String>,
    pub repeat: Option<String>,
    pub fired: Option<When>,
    pub sends: i64,
    pub next_repeat: Option<When>,
    /// The level the incident is at.
    pub current: bool,
    /// The level it would reach next, and (when only time stands in the way) when.
    pub next: bool,
    pub next_at: Option<When>,
    /// Its condition holds now: it fires at the next evaluation.
    pub due: bool,
}

#[derive(askama::Template)]
#[template(path = "incident.html")]
struct IncidentPage {
    chrome: Chrome,
    i: IncidentRow,
    acked: Option<(String, When)>,
    resolved: Option<(String, When)>,
    labels: Vec<(String, String)>,
    facts: Vec<(String, String)>,
    timeline: Vec<TimelineRow>,
    levels: Vec<LevelRow>,
    /// How often the table is evaluated.
    interval: String,
    runs: Vec<RunRow>,
    approvals: Vec<ApprovalRow>,
    /// Open: it can be acknowledged.
    ackable: bool,
    /// Not resolved yet.
    resolvable: bool,
}

pub async fn page(
    viewer: Viewer,
    State(store): State<Store>,
    State(escalation): State<EscalationView>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    viewer.caller.require(Access::Read)?;
    let now = store.now();
    let incident = store
        .get_incident(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no incident with id `{id}`")))?;
    let runs = store
        .list_runs(&RunFilter {
            incident: Some(id.clone()),
            limit: 50,
            ..RunFilter::default()
        })
        .await?;
    let fires = store.fires_of(&id).await?;
    let approvals = store.approvals_of(&id).await?;

    let timeline = timeline_rows(&store, &id, &runs, &approvals, now).await?;

    let table = escalation
        .table
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let open = incident.status == IncidentStatus::Open;
    let levels = level_rows(&table, &incident, &fires, now);

    let labels = incident
        .labels
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
        .unwrap_or_default();
    let facts = fact_rows(&incident.facts);
    let run_rows: Vec<RunRow> = runs.iter().map(|r| run_row(r, now)).collect();
    viewer.render(&IncidentPage {
        chrome: Chrome::new(&viewer, incident.title.clone(), "incidents"),
        acked: incident
            .acked_by
            .clone()
            .zip(incident.acked_at.map(|t| when(t, now))),
        resolved: incident
            .resolved_by
            .clone()
            .zip(incident.resolved_at.map(|t| when(t, now))),
        i: incident_row(&incident, runs.first().map(|r| run_row(r, now)), now),
        labels,
        facts,
        timeline,
        levels,
        interval: span(escalation.interval.as_secs_f64()),
        runs: run_rows,
        approvals: approvals.iter().map(|a| approval_row(a, now)).collect(),
        ackable: open,
        resolvable: incident.status != IncidentStatus::Resolved,
    })
}

/// Everything that happened to the incident, oldest first: its own timeline (alerts, facts,
/// escalations, acknowledgement), its runs, notifications, approvals and their decisions.
async fn timeline_rows(
    store: &Store,
    id: &str,
    runs: &[crate::store::RunRecord],
    approvals: &[crate::store::Approval],
    now: i64,
) -> Result<Vec<TimelineRow>, WebError> {
    let mut timeline: Vec<TimelineRow> = store
        .timeline(id)
        .await?
        .into_iter()
        .map(|t| {
            let w = when_str(&t.at, now);
            TimelineRow {
                ms: parse_ms(&t.at),
                at: w,
                kind: t.kind,
                actor: t.actor,
                message: t.message,
                link: None,
                details: (!t.details.as_object().is_some_and(|o| o.is_empty()))
                    .then(|| pretty(&t.details)),
            }
        })
        .collect();
    for r in runs {
        timeline.push(TimelineRow {
            at: when(r.queued_at, now),
            ms: r.queued_at,
            kind: "run".into(),
            actor: super::pages::trigger_text(&r.trigger),
            message: format!(
                "{}{} — {}",
                r.playbook,
                if r.dry_run { " (dry run)" } else { "" },
                r.status.as_str()
            ),
            link: Some(format!("/runs/{}", r.id)),
            details: None,
        });
    }
    for n in store.notifications_of(id).await? {
        timeline.push(TimelineRow {
            at: when(n.created_at_ms, now),
            ms: n.created_at_ms,
            kind: "notification".into(),
            actor: n.channel.clone(),
            message: format!(
                "{} to {}: {}{}",
                n.kind,
                n.channel,
                n.status,
                n.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            link: None,
            details: None,
        });
    }
    for a in approvals {
        timeline.push(TimelineRow {
            at: when(a.requested_at, now),
            ms: a.requested_at,
            kind: "approval".into(),
            actor: format!("playbook:{}", a.playbook),
            message: format!("asked to approve {} {}: {}", a.action, a.target, a.reason),
            link: Some("/approvals".into()),
            details: None,
        });
        for d in &a.decisions {
            timeline.push(TimelineRow {
                ms: parse_ms(&d.at),
                at: when_str(&d.at, now),
                kind: "decision".into(),
                actor: d.by.clone(),
                message: format!(
                    "{} {} {}{}",
                    if d.decision == "approve" {
                        "approved"
                    } else {
                        "denied"
                    },
                    a.action,
                    a.target,
                    if d.comment.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", d.comment)
                    }
                ),
                link: Some("/approvals".into()),
                details: None,
            });
        }
    }
    timeline.sort_by_key(|t| t.ms);
    Ok(timeline)
}

/// The escalation table's levels as this incident sees them: fired, current, next and when.
fn level_rows(
    table: &crate::escalation::Table,
    incident: &crate::store::Incident,
    fires: &[crate::store::Fire],
    now: i64,
) -> Vec<LevelRow> {
    let next = crate::escalation::next_level(table, incident, fires, now);
    let open = incident.status == IncidentStatus::Open;
    table
        .levels
        .iter()
        .map(|l| {
            let fire = fires.iter().find(|f| f.level == l.name);
            let is_next = next.as_ref().is_some_and(|(n, _)| *n == l.name);
            LevelRow {
                name: l.name.clone(),
                condition: l.condition.source().to_string(),
                channels: l.channels.join(", "),
                playbook: (!l.playbooks.is_empty()).then(|| l.playbooks.join(", ")),
                repeat: l.repeat.map(|r| span(r.as_secs_f64())),
                fired: fire.map(|f| when(f.fired_at, now)),
                sends: fire.map_or(0, |f| f.sends),
                next_repeat: match (fire, l.repeat) {
                    (Some(f), Some(r)) if open => {
                        Some(when(f.last_sent + r.as_millis() as i64, now))
                    }
                    _ => None,
                },
                current: incident
                    .level
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(&l.name)),
                next: is_next,
                due: is_next && next.as_ref().is_some_and(|(_, at)| *at == Some(now)),
                next_at: if is_next {
                    next.as_ref().and_then(|(_, at)| when_opt(*at, now))
                } else {
                    None
                },
            }
        })
        .collect()
}

/// The incident's facts, nested values pretty-printed.
fn fact_rows(facts: &serde_json::Value) -> Vec<(String, String)> {
    facts
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = if v.is_object() || v.is_array() {
                        pretty(v)
                    } else {
                        scalar(v)
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn parse_ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_millis())
        .unwrap_or_default()
}

pub async fn ack(
    viewer: Viewer,
    State(actions): State<Actions>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    viewer.check(&headers, &form.csrf)?;
    actions.acknowledge(&viewer.caller, &id).await?;
    Ok(back_to(&format!("/incidents/{id}")))
}

pub async fn resolve(
    viewer: Viewer,
    State(actions): State<Actions>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    viewer.check(&headers, &form.csrf)?;
    actions.resolve(&viewer.caller, &id, "").await?;
    Ok(back_to(&format!("/incidents/{id}")))
}
