//! Runs: trigger one (`POST /api/v1/playbooks/{name}/runs`), list and read them back.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        Path, Query, State,
    },
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{
    http::{
        actions::Actions,
        caller::{Access, Caller},
        error::{body, ApiError},
    },
    store::{RunFilter, RunStatus, Store},
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
pub struct TriggerQuery {
    #[serde(default)]
    wait: bool,
}

/// Starts a run. `?wait=true` answers 200 with the finished run; otherwise 202 with its id.
pub async fn trigger(
    caller: Caller,
    State(actions): State<Actions>,
    Path(name): Path<String>,
    query: Result<Query<TriggerQuery>, QueryRejection>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Access::Operate)?;
    let Query(query) = query?;
    let body = body(request)?;
    let body: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid run request body: {e}")))?
    };
    let submission = actions
        .start(&caller, name, body.params, body.dry_run, query.wait)
        .await?;
    match submission.done {
        Some(done) => {
            let run = done.await.map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "runbookd stopped before the run finished",
                )
            })?;
            Ok((StatusCode::OK, Json(run)).into_response())
        }
        None => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "id": submission.run.id,
                "status": submission.run.status,
                "url": format!("/api/v1/runs/{}", submission.run.id),
            })),
        )
            .into_response()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    playbook: Option<String>,
    status: Option<String>,
    /// Runs of this incident only.
    incident: Option<String>,
    limit: Option<u32>,
    /// The page after this run id (the `next` link gives it).
    before: Option<String>,
    /// Include every run's logs and actions (default: summaries without them).
    #[serde(default)]
    logs: bool,
}

/// Most rows one list answers.
pub(super) const MAX_LIMIT: u32 = 1000;

/// Every run status, in the order the API documents them (`?status=` names them all when it
/// refuses one).
const STATUSES: [RunStatus; 7] = [
    RunStatus::Queued,
    RunStatus::Running,
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::TimedOut,
    RunStatus::Skipped,
    RunStatus::AwaitingApproval,
];

/// A status' place in `STATUSES`: a new status does not compile until it is listed.
#[cfg(test)]
fn status_index(s: RunStatus) -> usize {
    match s {
        RunStatus::Queued => 0,
        RunStatus::Running => 1,
        RunStatus::Succeeded => 2,
        RunStatus::Failed => 3,
        RunStatus::TimedOut => 4,
        RunStatus::Skipped => 5,
        RunStatus::AwaitingApproval => 6,
    }
}

fn status_names() -> String {
    STATUSES.map(RunStatus::as_str).join(", ")
}

pub async fn list(
    caller: Caller,
    State(store): State<Store>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Access::Read)?;
    let Query(q) = query?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!("status `{s}` is not one of {}", status_names()))
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let playbook = q.playbook.filter(|p| !p.is_empty());
    let incident = q.incident.filter(|i| !i.is_empty());
    let runs = store
        .list_runs(&RunFilter {
            playbook: playbook.clone(),
            status,
            incident: incident.clone(),
            limit,
            before: q.before.filter(|b| !b.is_empty()),
            with_logs: q.logs,
        })
        .await?;
    let next = (runs.len() == limit as usize)
        .then(|| runs.last().map(|r| r.id.clone()))
        .flatten();
    let mut body = serde_json::to_value(&runs).unwrap_or_default();
    if !q.logs {
        for run in body.as_array_mut().into_iter().flatten() {
            if let Some(o) = run.as_object_mut() {
                o.remove("logs");
                o.remove("actions");
            }
        }
    }
    let mut response = Json(body).into_response();
    if let Some(last) = next {
        // RFC 8288 pagination: the same query, one page further.
        let mut url = format!("/api/v1/runs?limit={limit}&before={last}");
        if let Some(p) = &playbook {
            url.push_str(&format!("&playbook={p}"));
        }
        if let Some(s) = status {
            url.push_str(&format!("&status={}", s.as_str()));
        }
        if let Some(i) = &incident {
            url.push_str(&format!("&incident={i}"));
        }
        if q.logs {
            url.push_str("&logs=true");
        }
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            response.headers_mut().insert(axum::http::header::LINK, v);
        }
    }
    Ok(response)
}

pub async fn show(
    caller: Caller,
    State(store): State<Store>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Access::Read)?;
    match store.get_run(&id).await? {
        Some(run) => Ok(Json(run).into_response()),
        None => Err(ApiError::not_found(format!("no run with id `{id}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_status_lists_every_status() {
        for (i, s) in STATUSES.iter().enumerate() {
            assert_eq!(status_index(*s), i, "{} listed once, in place", s.as_str());
            assert_eq!(RunStatus::parse(s.as_str()), Some(*s));
        }
        assert!(status_names().ends_with("skipped, awaiting_approval"));
    }
}
