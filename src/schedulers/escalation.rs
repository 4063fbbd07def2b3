//! The escalation evaluator: a periodic pass over every unresolved incident that walks it
//! up the escalation table (`crate::escalation`).
//!
//! Each level fires once per incident — paging its channels through the outbox and
//! optionally running a playbook — when its condition holds or a playbook escalated the
//! incident to it; it repeats every `repeat` until the incident is acknowledged; levels only
//! go up. Resolution tells every channel that was paged. Fires, repeats and notices are
//! recorded with their notifications in one transaction, so a restart (kill -9 included)
//! neither repeats a page nor loses one that was due.

use std::{sync::Arc, time::Duration};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    dispatch::Dispatcher,
    escalation::{Escalation, Level, Table},
    event::RunRequest,
    metrics::Metrics,
    store::{Incident, IncidentStatus, RunRecord, Store, StoreError},
};

fn payload(incident: &Incident, level: &Level, kind: &str) -> serde_json::Value {
    let text = match kind {
        "resolve" => format!("resolved: {}", incident.title),
        // A playbook's `summary` fact is what a human should read first.
        _ => match incident.facts.get("summary").and_then(|s| s.as_str()) {
            Some(summary) => format!(
                "{} — escalated to {}: {summary}\nfacts: {}",
                incident.title, level.name, incident.facts
            ),
            None => format!(
                "{} — escalated to {} ({}); facts: {}",
                incident.title,
                level.name,
                level.condition.source(),
                incident.facts
            ),
        },
    };
    json!({
        "kind": kind,
        "title": format!("[{}] {}", level.name, incident.title),
        "text": text,
        "incident": incident.id,
        "level": level.name,
    })
}

/// Incidents read per page of an evaluator pass.
const PAGE: u32 = 500;

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    /// The runs the levels that fired recorded (their `playbook`), and follow-ups of
    /// approvals that expired: queued and owned by nobody, in the same transaction as the
    /// fire — the daemon's replicas claim them as slots free, a simulation runs them.
    pub runs: Vec<RunRecord>,
    /// The levels this pass fired, one entry per incident and level.
    pub fired: Vec<String>,
}

/// One pass over every unresolved incident (paged by id, however many are open), then
/// resolution notices; first, approvals that expired.
pub async fn evaluate(esc: &Escalation, store: &Store) -> Result<Pass, StoreError> {
    let table = esc.table();
    let now = store.now();
    // Requests nobody decided in time are decisions too: their follow-up runs (and the
    // `approval_expired` fact the table may read) come first.
    let mut pass = Pass {
        runs: crate::approvals::expire_due(store).await?,
        fired: Vec::new(),
    };
    let mut all_fires = store.fires_of_unresolved().await?;
    for status in [IncidentStatus::Open, IncidentStatus::Acknowledged] {
        let mut after = String::new();
        loop {
            let page = store.incidents_page(status, &after, PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id.clone();
            let full = page.len() == PAGE as usize;
            for incident in page {
                let fires = all_fires.remove(&incident.id).unwrap_or_default();
                evaluate_incident(table, store, &incident, &fires, now, &mut pass).await?;
            }
            if !full {
                break;
            }
        }
    }
    for id in store.unannounced_resolutions().await? {
        if let Some(incident) = store.get_incident(&id).await? {
            let level = incident
                .level
                .as_deref()
                .and_then(|l| table.rank(l))
                .and_then(|r| table.levels.get(r))
                .or(table.levels.first());
            if let Some(level) = level {
                store
                    .announce_resolution(&id, &payload(&incident, level, "resolve"))
                    .await?;
            }
        }
    }
    Ok(pass)
}

/// The levels of one incident: repeats of fired ones, fires of those whose condition holds.
async fn evaluate_incident(
    table: &Table,
    store: &Store,
    incident: &Incident,
    fires: &[crate::store::Fire],
    now: i64,
    pass: &mut Pass,
) -> Result<(), StoreError> {
    let current = incident.level.as_deref().and_then(|l| table.rank(l));
    let age = (now - incident.opened_at) as f64 / 1000.0;
    for (rank, level) in table.levels.iter().enumerate() {
        let fired = fires.iter().find(|f| f.level == level.name);
        if let Some(f) = fired {
            // Repeats until acknowledged.
            if let Some(every) = level.repeat {
                if incident.status == IncidentStatus::Open
                    && now - f.last_sent >= every.as_millis() as i64
                {
                    store
                        .repeat_level(
                            &incident.id,
                            &level.name,
                            f.last_sent,
                            &level.channels,
                            &payload(incident, level, "repeat"),
                        )
                        .await?;
                }
            }
            continue;
        }
        if current.is_some_and(|c| rank < c) {
            continue; // levels only go up
        }
        let escalated_here = current == Some(rank);
        let holds = match level.condition.holds(
            age,
            &incident.facts,
            incident.level.as_deref().unwrap_or(""),
            incident.status.as_str(),
            &incident.labels,
        ) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(incident = %incident.id, level = %level.name, error = %e, "escalation condition failed");
                false
            }
        };
        if !(holds || escalated_here) {
            continue;
        }
        let why = if escalated_here {
            "a playbook escalated it".to_string()
        } else {
            format!("condition `{}` holds", level.condition.source())
        };
        let level_runs: Vec<RunRecord> = level
            .playbooks
            .iter()
            .map(|playbook| {
                RunRecord::unowned(
                    RunRequest::escalation(
                        playbook,
                        &level.name,
                        &incident.id,
                        incident.status.as_str(),
                        incident.labels.as_object().cloned().unwrap_or_default(),
                    ),
                    now,
                )
            })
            .collect();
        let at_or_above: Vec<String> = table.levels[rank..]
            .iter()
            .map(|l| l.name.clone())
            .collect();
        let fired = store
            .fire_level(
                &incident.id,
                &level.name,
                &at_or_above,
                &level.channels,
                &payload(incident, level, "trigger"),
                &format!("{} fired: {why}", level.name),
                &level_runs,
            )
            .await?;
        if fired {
            tracing::warn!(incident = %incident.id, level = %level.name, channels = ?level.channels, "escalated");
            pass.runs.extend(level_runs);
            pass.fired.push(level.name.clone());
        }
    }
    Ok(())
}

/// Evaluates every `interval` until `stop`.
pub async fn run(
    mut esc: Escalation,
    store: Store,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: CancellationToken,
) {
    let esc_ref = &mut esc;
    loop {
        esc_ref.refresh();
        let started = std::time::Instant::now();
        let outcome = evaluate(esc_ref, &store).await;
        let took = started.elapsed();
        if took > interval {
            // Passes run back to back then (never overlapping); a human should know that
            // levels fire later than the interval promises.
            tracing::warn!(took_ms = took.as_millis() as u64, interval = %humantime::format_duration(interval), "escalation pass took longer than [escalation] interval");
        }
        match outcome {
            Ok(Pass { runs, fired }) => {
                for level in &fired {
                    metrics.escalated(level);
                }
                match store.count_pending_approvals().await {
                    Ok(n) => metrics.approvals_pending(n),
                    Err(e) => tracing::warn!(error = %e, "cannot count pending approvals"),
                }
                for run in &runs {
                    tracing::info!(run = %run.id, playbook = %run.playbook, incident = run.event.incident.as_deref().unwrap_or(""), level = %run.trigger.name, "escalation playbook queued");
                }
                if !runs.is_empty() {
                    dispatcher.wake_claimer();
                }
            }
            Err(e) => tracing::warn!(error = %e, "escalation pass failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}
