//! `/runs/{id}`: one run — status, version, trigger, the log with levels, the actions it
//! took or planned (done / planned / failed, with details), the result, and the error with
//! its script position; and its flight recording (every read, in order, with its answer)
//! with the command that replays it.

use axum::{
    extract::{Path, State},
    response::Response,
};

use super::{
    pages::{pretty, run_row, scalar, when_opt, when_str, Chrome, RunRow, When},
    Viewer, WebError,
};
use crate::{
    http::{caller::Access, error::ApiError},
    store::{RunRecord, Store},
};

pub struct LogRow {
    pub at: When,
    pub level: String,
    pub message: String,
}

pub struct ActionRow {
    pub action: String,
    pub target: String,
    /// `done`, `planned`, `failed`.
    pub outcome: String,
    pub at: Option<When>,
    pub details: String,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// One recorded read.
pub struct ReadRow {
    pub at: When,
    /// `stripe::status()`, `breaker("stripe")`: as the playbook wrote it.
    pub call: String,
    pub answer: String,
    pub error: Option<String>,
}

/// The run's recording, as the page shows it.
pub struct RecordingView {
    pub reads: Vec<ReadRow>,
    /// Where it was cut, said in words.
    pub cut: Option<String>,
}

#[derive(askama::Template)]
#[template(path = "run.html")]
struct RunPage {
    chrome: Chrome,
    r: RunRow,
    version: String,
    incident: Option<String>,
    attempt: i64,
    replica: Option<String>,
    started: Option<When>,
    finished: Option<When>,
    event: String,
    logs: Vec<LogRow>,
    actions: Vec<ActionRow>,
    result: Option<String>,
    /// `message`, and `line L, column C` when the script said where.
    error: Option<(String, String, Option<String>)>,
    /// None: the run has not ended, or ended without one.
    recording: Option<RecordingView>,
}

fn recording_view(rec: &crate::primitives::recorder::Recording, now: i64) -> RecordingView {
    RecordingView {
        reads: rec
            .reads
            .iter()
            .map(|r| ReadRow {
                at: when_str(&r.at, now),
                call: format!(
                    "{}({})",
                    r.name,
                    r.args
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                answer: pretty(&r.answer),
                error: r.error.clone(),
            })
            .collect(),
        cut: rec.cut.as_ref().map(|c| {
            format!(
                "cut after {} reads: {}; {} more were not kept",
                c.after_reads, c.why, c.omitted
            )
        }),
    }
}

fn action_row(a: &serde_json::Value, now: i64) -> ActionRow {
    let text = |k: &str| a.get(k).map(scalar).unwrap_or_default();
    let some = |k: &str| a.get(k).filter(|v| !v.is_null());
    ActionRow {
        action: text("action"),
        target: text("target"),
        outcome: text("outcome"),
        at: a
            .get("at")
            .and_then(|v| v.as_str())
            .map(|t| when_str(t, now)),
        details: some("details").map(pretty).unwrap_or_default(),
        result: some("result").map(pretty),
        error: some("error").map(scalar),
    }
}

fn error_of(r: &RunRecord) -> Option<(String, String, Option<String>)> {
    r.error.as_ref().map(|e| {
        let reason = serde_json::to_value(e.reason)
            .ok()
            .map(|v| scalar(&v))
            .unwrap_or_default();
        let at = match (e.line, e.column) {
            (Some(l), Some(c)) => Some(format!("line {l}, column {c}")),
            (Some(l), None) => Some(format!("line {l}")),
            _ => None,
        };
        (e.message.clone(), reason, at)
    })
}

pub async fn page(
    viewer: Viewer,
    State(store): State<Store>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    viewer.caller.require(Access::Read)?;
    let now = store.now();
    let (r, recording) = store
        .get_run_recording(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run with id `{id}`")))?;
    let incident = r.event.incident.clone();
    viewer.render(&RunPage {
        chrome: Chrome::new(&viewer, format!("Run {}", r.playbook), "runs"),
        r: run_row(&r, now),
        version: r.version.clone(),
        incident,
        attempt: r.attempt,
        replica: r.replica.clone(),
        started: when_opt(r.started_at, now),
        finished: when_opt(r.finished_at, now),
        event: pretty(&r.event),
        logs: r
            .logs
            .iter()
            .map(|l| LogRow {
                at: when_str(&l.at, now),
                level: l.level.clone(),
                message: l.message.clone(),
            })
            .collect(),
        actions: r.actions.iter().map(|a| action_row(a, now)).collect(),
        result: r.result.as_ref().map(pretty),
        error: error_of(&r),
        recording: recording.as_ref().map(|rec| recording_view(rec, now)),
    })
}
