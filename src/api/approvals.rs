//! Approvals: list and read them (viewers), approve or deny (operators, never the one who
//! triggered the run that asked). A decision that settles an approval starts the follow-up
//! run; the answer is the approval as it now stands, with that run's id.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        Path, Query, State,
    },
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    auth::{Access, Caller},
    ApiError, AppState,
};
use crate::store::{ApprovalStatus, DecideError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/approvals?status=pending|approved|denied|expired|used|withdrawn&limit=`
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let Query(q) = query?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status `{s}` is not one of pending, approved, denied, expired, used"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(json!(
        state.store.list_approvals(status, limit).await?
    )))
}

/// `GET /api/v1/approvals/{id}`
pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let a = state
        .store
        .get_approval(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no approval with id `{id}`")))?;
    Ok(Json(json!(a)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    comment: String,
    /// Who decides, on a daemon without tokens (which cannot tell callers apart).
    by: Option<String>,
}

/// `POST /api/v1/approvals/{id}/approve`
pub async fn approve(
    caller: Caller,
    state: State<AppState>,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(caller, state, id, body, true).await
}

/// `POST /api/v1/approvals/{id}/deny`
pub async fn deny(
    caller: Caller,
    state: State<AppState>,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(caller, state, id, body, false).await
}

async fn decide(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Operate)?;
    let body = super::error::body(body)?;
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid decision body: {e}")))?
    };
    let decided = decide_as(&state, &caller, &id, approve, &body.comment, body.by).await?;
    let mut v = json!(decided.approval);
    v["follow_up_run"] = json!(decided.follow_up.map(|r| r.id));
    Ok(Json(v))
}

/// One human's decision (API, dashboard): `by` names the human on a daemon without tokens.
pub(crate) async fn decide_as(
    state: &AppState,
    caller: &Caller,
    id: &str,
    approve: bool,
    comment: &str,
    by: Option<String>,
) -> Result<crate::store::Decided, ApiError> {
    caller.require(Access::Operate)?;
    if comment.len() > 4096 {
        return Err(ApiError::bad_request("comment is longer than 4096 bytes"));
    }
    // With tokens, the approver is the token's name and nobody can speak for another.
    // Without tokens every caller is `local`: the body must say who decides, or nobody
    // could tell the requester from the approver.
    let by = match (caller.identified(), by) {
        (true, None) => caller.name.clone(),
        (true, Some(_)) => {
            return Err(ApiError::bad_request(
                "`by` is only for daemons without tokens; the approver is the token's name",
            ))
        }
        (false, Some(by)) if !by.trim().is_empty() && by.len() <= 200 => by.trim().to_string(),
        (false, _) => {
            return Err(ApiError::bad_request(
                "this daemon has no tokens, so it cannot tell who you are: say `{\"by\": \"your name\"}`",
            ))
        }
    };
    let decided = crate::approvals::decide(&state.store, id, &by, approve, comment)
        .await
        .map_err(|e| match e {
            DecideError::NotFound(_) => ApiError::not_found(e.to_string()),
            DecideError::SelfApproval { .. } => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            DecideError::NotPending { .. }
            | DecideError::Expired(_)
            | DecideError::AlreadyApproved { .. }
            | DecideError::Concurrent(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            DecideError::Store(s) => s.into(),
        })?;
    tracing::warn!(approval = %id, by = %by, decision = if approve { "approve" } else { "deny" }, status = %decided.approval.status, "approval decided");
    if decided.follow_up.is_some() {
        state.dispatcher.wake_claimer();
    }
    Ok(decided)
}
