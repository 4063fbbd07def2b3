//! Incidents: list, read (with timeline), acknowledge, resolve.

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    auth::{Access, Caller},
    ApiError, AppState,
};
use crate::store::{Incident, IncidentStatus};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
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
    Ok(Json(json!(
        state.store.list_incidents(status, limit).await?
    )))
}

pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let incident = state
        .store
        .get_incident(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no incident with id `{id}`")))?;
    let timeline = state.store.timeline(&id).await?;
    let mut v = json!(incident);
    v["timeline"] = json!(timeline);
    Ok(Json(v))
}

pub async fn ack(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(acknowledge(&state, &caller, &id).await?)))
}

/// Acknowledges an incident for `caller` and tells every channel that was paged (the API
/// and the dashboard's button both come here).
pub(crate) async fn acknowledge(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Option<Incident>, ApiError> {
    caller.require(Access::Operate)?;
    let incident = state
        .store
        .get_incident(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no incident with id `{id}`")))?;
    if !state.store.ack_incident(id, &caller.name).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("incident is {}, not open", incident.status.as_str()),
        ));
    }
    // Tell every channel that was paged (PagerDuty gets an `acknowledge` event).
    if let Some(notifier) = &state.services.notifier {
        let message = crate::notify::Message {
            kind: "acknowledge".into(),
            title: incident.title.clone(),
            text: format!("acknowledged by {}", caller.name),
            incident: Some(id.to_string()),
            level: incident.level.clone(),
            approval: None,
        };
        for channel in state.store.paged_channels(id).await? {
            if let Err(e) = notifier.enqueue(&channel, &message).await {
                tracing::warn!(incident = %id, channel, error = %e, "acknowledgement not queued");
            }
        }
    }
    Ok(state.store.get_incident(id).await?)
}

pub async fn resolve(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(resolve_by(&state, &caller, &id).await?)))
}

/// Resolves an incident for `caller` (API and dashboard).
pub(crate) async fn resolve_by(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Option<Incident>, ApiError> {
    caller.require(Access::Operate)?;
    state
        .store
        .get_incident(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no incident with id `{id}`")))?;
    let why = format!("resolved by {}", caller.name);
    if !state.store.resolve_incident(id, &caller.name, &why).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "incident is already resolved",
        ));
    }
    Ok(state.store.get_incident(id).await?)
}
