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
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    http::{
        actions::Actions,
        caller::{Access, Caller},
        error::{body, ApiError, ErrorBody},
    },
    store::{RunFilter, RunRecord, RunStatus, Store},
};

/// What a manual run is started with (the whole body is optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerBody {
    /// The playbook's `event.params`.
    #[serde(default)]
    #[schema(value_type = Object)]
    params: Map<String, Value>,
    /// Plan and record actions without performing them.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TriggerQuery {
    /// Answer once the run has finished (200 with the run) instead of at once (202).
    #[serde(default)]
    wait: bool,
}

/// The 202 answer to a trigger: the run is recorded and queued.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RunAccepted {
    id: String,
    status: RunStatus,
    /// Where to read the run: `/api/v1/runs/{id}`.
    url: String,
}

/// Starts a run of the playbook: `?wait=true` answers 200 with the finished run, otherwise
/// 202 with its id once it is recorded.
#[utoipa::path(post, path = "/api/v1/playbooks/{name}/runs", tag = "runs",
    params(("name" = String, Path, description = "The playbook's name", example = "health_probe"), TriggerQuery),
    request_body(content = Option<TriggerBody>, description = "Optional: `{}` when absent"),
    responses(
        (status = 200, description = "`?wait=true`: the finished run", body = RunRecord),
        (status = 202, description = "Recorded and queued", body = RunAccepted,
            links(("run" = (operation_id = "runs_show", parameters(("id" = "$response.body#/id")),
                description = "The run this created")))),
        (status = 404, description = "No playbook by that name", body = ErrorBody),
        (status = 413, description = "Body over `server.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "Run queue full or shutting down (nothing was recorded)", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("operator"))))]
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
    let body: TriggerBody = super::optional_body(&body, "run request body")?;
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
            Json(RunAccepted {
                url: format!("/api/v1/runs/{}", submission.run.id),
                id: submission.run.id,
                status: submission.run.status,
            }),
        )
            .into_response()),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Runs of this playbook only.
    playbook: Option<String>,
    /// Runs in this status only.
    #[param(schema_with = super::run_status_filter)]
    status: Option<String>,
    /// Runs of this incident only.
    incident: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The page after this run id (the `next` link gives it).
    before: Option<String>,
    /// Include every run's logs and actions (default: summaries without them).
    #[serde(default)]
    logs: bool,
}

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

/// Runs, newest first; summaries (without `logs` and `actions`) unless `logs=true`.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(ListQuery),
    responses((status = 200, description = "Newest first", body = [RunRecord],
        headers(("link" = String, description = "`<…&before=ID>; rel=\"next\"` when the page is full")))),
    extensions(("x-runbookd-role" = json!("viewer"))))]
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
    let limit = super::limit(q.limit, 50)?;
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

/// One run, with its logs, actions, result, error and attempts.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", operation_id = "runs_show",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, description = "The run", body = RunRecord),
        (status = 404, description = "No such run", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("viewer"))))]
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

/// A run and its flight recording: what `runbookd replay` replays (and `--file` reads).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RecordedRunView {
    run: RunRecord,
    recording: crate::primitives::recorder::Recording,
}

/// The run's flight recording: every primitive read it made (name, arguments, answer or
/// error, time), in order, with the run itself — replay it with `runbookd replay RUN`.
#[utoipa::path(get, path = "/api/v1/runs/{id}/recording", tag = "runs", operation_id = "runs_recording",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, description = "The run and its reads", body = RecordedRunView),
        (status = 404, description = "No such run, or it ended without a recording", body = ErrorBody),
        (status = 409, description = "The run has not ended: its recording is written when it ends", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn recording(
    caller: Caller,
    State(store): State<Store>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Access::Read)?;
    match store.get_run_recording(&id).await? {
        Some((run, Some(recording))) => Ok(Json(RecordedRunView { run, recording }).into_response()),
        Some((run, None)) if !run.status.is_final() => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run `{id}` is {}: its recording is written when it ends", run.status.as_str()),
        )),
        Some(_) => Err(ApiError::not_found(format!(
            "run `{id}` has no recording (it ended before runbookd recorded runs, or with [playbooks] max_recording_bytes = 0)"
        ))),
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
