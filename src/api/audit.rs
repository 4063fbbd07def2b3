//! What runbookd did and told: the audit trail (`GET /api/v1/audit`) and the notification
//! outbox (`GET /api/v1/notifications`).

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;

use crate::{
    http::{
        caller::{Access, Caller},
        error::ApiError,
    },
    store::{AuditEntry, OutboxItem, Store},
};

/// `?limit=` (default 100, at most 1,000).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The audit trail, newest first: every action runbookd or an operator took.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Newest first", body = [AuditEntry])),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn audit(
    caller: Caller,
    State(store): State<Store>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Access::Read)?;
    let Query(q) = query?;
    let limit = super::limit(q.limit, 100)?;
    Ok(Json(store.list_audit(limit).await?).into_response())
}

/// The notification outbox, newest first: what was sent, is waiting, or was given up.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Newest first", body = [OutboxItem])),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn notifications(
    caller: Caller,
    State(store): State<Store>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Access::Read)?;
    let Query(q) = query?;
    let limit = super::limit(q.limit, 100)?;
    Ok(Json(store.list_notifications(limit).await?).into_response())
}
