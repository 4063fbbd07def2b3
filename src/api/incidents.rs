//! Incidents: list, read (with timeline), acknowledge, resolve.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        Path, Query, State,
    },
    Json,
};
use serde::{Deserialize, Serialize};

use crate::{
    http::{
        actions::Actions,
        caller::{Access, Caller},
        error::{body, ApiError, ErrorBody},
    },
    store::{Incident, IncidentStatus, Store, TimelineEntry},
};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Incidents in this status only.
    #[param(schema_with = super::incident_status_filter)]
    status: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// An incident with its timeline.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct IncidentView {
    #[serde(flatten)]
    incident: Incident,
    timeline: Vec<TimelineEntry>,
}

/// Incidents, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", params(ListQuery),
    responses((status = 200, description = "Newest first", body = [Incident], links(
        ("show" = (operation_id = "incidents_show", parameters(("id" = "$response.body#/0/id")), description = "The newest one")),
        ("ack" = (operation_id = "incidents_ack", parameters(("id" = "$response.body#/0/id")), description = "The newest one")),
        ("resolve" = (operation_id = "incidents_resolve", parameters(("id" = "$response.body#/0/id")), description = "The newest one"))))),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn list(
    caller: Caller,
    State(store): State<Store>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<Incident>>, ApiError> {
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
    let limit = super::limit(q.limit, 50)?;
    Ok(Json(store.list_incidents(status, limit).await?))
}

/// One incident, with its timeline.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents", operation_id = "incidents_show",
    params(("id" = String, Path, description = "The incident's id")),
    responses((status = 200, description = "The incident and its timeline", body = IncidentView),
        (status = 404, description = "No such incident", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn show(
    caller: Caller,
    State(store): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<IncidentView>, ApiError> {
    caller.require(Access::Read)?;
    let incident = store
        .get_incident(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no incident with id `{id}`")))?;
    let timeline = store.timeline(&id).await?;
    Ok(Json(IncidentView { incident, timeline }))
}

/// The incident as it stands after a change, or 404 when it went (retention) meanwhile.
fn changed(id: &str, incident: Option<Incident>) -> Result<Json<Incident>, ApiError> {
    incident
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no incident with id `{id}`")))
}

/// Acknowledges an open incident (the dashboard's button does the same) and tells every
/// channel that was paged.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/ack", tag = "incidents",
    params(("id" = String, Path, description = "The incident's id")),
    responses((status = 200, description = "The incident, acknowledged", body = Incident),
        (status = 404, description = "No such incident", body = ErrorBody),
        (status = 409, description = "The incident is not open", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("operator"))))]
pub async fn ack(
    caller: Caller,
    State(actions): State<Actions>,
    Path(id): Path<String>,
) -> Result<Json<Incident>, ApiError> {
    changed(&id, actions.acknowledge(&caller, &id).await?)
}

/// The optional body of a resolve.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResolveBody {
    /// Why, or what was done: it joins the timeline's `resolved` line (at most 4096 bytes).
    #[serde(default)]
    comment: String,
}

/// Resolves an incident.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/resolve", tag = "incidents",
    params(("id" = String, Path, description = "The incident's id")),
    request_body(content = Option<ResolveBody>, description = "Optional"),
    responses((status = 200, description = "The incident, resolved", body = Incident),
        (status = 400, description = "The body is not a resolve body, or the comment is too long", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
        (status = 409, description = "The incident is already resolved", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("operator"))))]
pub async fn resolve(
    caller: Caller,
    State(actions): State<Actions>,
    Path(id): Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<Incident>, ApiError> {
    let raw = body(request)?;
    let b: ResolveBody = super::optional_body(&raw, "resolve body")?;
    changed(&id, actions.resolve(&caller, &id, &b.comment).await?)
}
