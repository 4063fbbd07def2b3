//! Approvals: list and read them (viewers), approve or deny (operators, never the one who
//! triggered the run that asked). A decision that settles an approval starts the follow-up
//! run; the answer is the approval as it now stands, with that run's id.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        Path, Query, State,
    },
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    http::{
        actions::Actions,
        caller::{Access, Caller},
        error::{body, ApiError},
    },
    store::{ApprovalStatus, Store},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/approvals?status=pending|approved|denied|expired|used|withdrawn&limit=`
pub async fn list(
    caller: Caller,
    State(store): State<Store>,
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
    Ok(Json(json!(store.list_approvals(status, limit).await?)))
}

/// `GET /api/v1/approvals/{id}`
pub async fn show(
    caller: Caller,
    State(store): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let a = store
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
    actions: State<Actions>,
    id: Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(caller, actions, id, request, true).await
}

/// `POST /api/v1/approvals/{id}/deny`
pub async fn deny(
    caller: Caller,
    actions: State<Actions>,
    id: Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(caller, actions, id, request, false).await
}

async fn decide(
    caller: Caller,
    State(actions): State<Actions>,
    Path(id): Path<String>,
    request: Result<Bytes, BytesRejection>,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Operate)?;
    let body = body(request)?;
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid decision body: {e}")))?
    };
    let decided = actions
        .decide(&caller, &id, approve, &body.comment, body.by)
        .await?;
    let mut v = json!(decided.approval);
    v["follow_up_run"] = json!(decided.follow_up.map(|r| r.id));
    Ok(Json(v))
}
