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
    store::Store,
};

/// `?limit=` (default 100, at most 1,000).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<u32>,
}

/// The audit trail, newest first.
pub async fn audit(
    caller: Caller,
    State(store): State<Store>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Access::Read)?;
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100).clamp(1, super::runs::MAX_LIMIT);
    Ok(Json(store.list_audit(limit).await?).into_response())
}

/// The notification outbox, newest first: what was sent, is waiting, or was given up.
pub async fn notifications(
    caller: Caller,
    State(store): State<Store>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Access::Read)?;
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100).clamp(1, super::runs::MAX_LIMIT);
    Ok(Json(store.list_notifications(limit).await?).into_response())
}
