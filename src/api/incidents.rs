//! Incidents: list, read (with timeline), acknowledge, resolve.

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
    store::{IncidentStatus, Store},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    caller: Caller,
    State(store): State<Store>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let Query(q) = query?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(IncidentStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status `{s}` is not one of open, acknowledged, resolved"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(json!(store.list_incidents(status, limit).await?)))
}

pub async fn show(
    caller: Caller,
    State(store): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let incident = store
        .get_incident(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no incident with id `{id}`")))?;
    let timeline = store.timeline(&id).await?;
    let mut v = json!(incident);
    v["timeline"] = json!(timeline);
    Ok(Json(v))
}

/// `POST /api/v1/incidents/{id}/ack`: the dashboard's button does the same.
pub async fn ack(
    caller: Caller,
    State(actions): State<Actions>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(actions.acknowledge(&caller, &id).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    #[serde(default)]
    comment: String,
}

/// `POST /api/v1/incidents/{id}/resolve`, body `{"comment": "…"}` optional.
pub async fn resolve(
    caller: Caller,
    State(actions): State<Actions>,
    Path(id): Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let raw = body(request)?;
    let b: ResolveBody = if raw.iter().all(u8::is_ascii_whitespace) {
        ResolveBody::default()
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request(format!("invalid resolve body: {e}")))?
    };
    Ok(Json(json!(
        actions.resolve(&caller, &id, &b.comment).await?
    )))
}
