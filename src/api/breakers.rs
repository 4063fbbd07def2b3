//! `GET /api/v1/breakers` (every configured breaker), `GET /api/v1/breakers/{name}` and the
//! audited manual reset, `POST /api/v1/breakers/{name}/reset` (body `{"dry_run": true}`
//! plans it only).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    http::{
        caller::{Access, Caller},
        error::{body, ApiError, ErrorBody},
    },
    primitives::breaker::{layout::Snapshot, BreakerError, Breakers},
    store::{NewAudit, Store},
};

fn breaker_error(e: BreakerError) -> ApiError {
    match e {
        BreakerError::Unknown(..) => ApiError::not_found(e.to_string()),
        BreakerError::NotConfigured(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        BreakerError::Redis(_) | BreakerError::Decode(_) => {
            ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())
        }
        // The API's reset carries no token and is never refused; kept for completeness.
        BreakerError::Fenced { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
    }
}

/// One breaker of the list: its snapshot, or why it cannot be read now (its Redis is down),
/// so one broken breaker does not hide the others.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum ListedBreaker {
    Read(Snapshot),
    Unreadable {
        name: String,
        /// Always `unknown`.
        state: String,
        error: String,
    },
}

/// Every configured breaker by name.
#[utoipa::path(get, path = "/api/v1/breakers", tag = "breakers",
    responses((status = 200, description = "Every configured breaker, by name", body = [ListedBreaker])),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn list(
    caller: Caller,
    State(breakers): State<Arc<Breakers>>,
) -> Result<Json<Vec<ListedBreaker>>, ApiError> {
    caller.require(Access::Read)?;
    let mut out = Vec::new();
    for name in breakers.names() {
        out.push(match breakers.read(&name).await {
            Ok(snap) => ListedBreaker::Read(snap),
            Err(e) => ListedBreaker::Unreadable {
                error: e.to_string(),
                name,
                state: "unknown".into(),
            },
        });
    }
    Ok(Json(out))
}

/// A configured breaker as the app sees it.
#[utoipa::path(get, path = "/api/v1/breakers/{name}", tag = "breakers",
    params(("name" = String, Path, description = "The breaker's name (`[breakers.NAME]`)", example = "stripe")),
    responses((status = 200, description = "The breaker", body = Snapshot),
        (status = 404, description = "No breaker by that name", body = ErrorBody),
        (status = 502, description = "Its Redis answered with an error or a value that does not decode", body = ErrorBody),
        (status = 503, description = "Its Redis is not configured", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn show(
    caller: Caller,
    State(breakers): State<Arc<Breakers>>,
    Path(name): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    caller.require(Access::Read)?;
    let snap = breakers.read(&name).await.map_err(breaker_error)?;
    Ok(Json(snap))
}

/// A reset (the whole body is optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetBody {
    /// Plan the reset only: the audit says what it would have done.
    #[serde(default)]
    dry_run: bool,
}

/// A reset's outcome: the breaker before and after.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ResetOutcome {
    dry_run: bool,
    before: Snapshot,
    /// The same as `before` in a dry run.
    after: Snapshot,
}

/// Closes the breaker by hand, audited.
#[utoipa::path(post, path = "/api/v1/breakers/{name}/reset", tag = "breakers",
    params(("name" = String, Path, description = "The breaker's name (`[breakers.NAME]`)", example = "stripe")),
    request_body(content = Option<ResetBody>, description = "Optional"),
    responses((status = 200, description = "Reset (or planned)", body = ResetOutcome),
        (status = 404, description = "No breaker by that name", body = ErrorBody),
        (status = 409, description = "A newer attempt of a run wrote the breaker (fenced)", body = ErrorBody),
        (status = 502, description = "Its Redis answered with an error", body = ErrorBody),
        (status = 503, description = "Its Redis is not configured", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("operator"))))]
pub async fn reset(
    caller: Caller,
    State(breakers): State<Arc<Breakers>>,
    State(store): State<Store>,
    Path(name): Path<String>,
    request: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ResetOutcome>, ApiError> {
    caller.require(Access::Operate)?;
    let body = body(request)?;
    let body: ResetBody = super::optional_body(&body, "reset body")?;
    let before = breakers.read(&name).await.map_err(breaker_error)?;
    let after = if body.dry_run {
        before.clone()
    } else {
        breakers.reset(&name, None).await.map_err(breaker_error)?
    };
    store
        .audit(&NewAudit {
            actor: caller.name.clone(),
            action: "breaker.reset".into(),
            target: format!("breaker:{name}"),
            run_id: None,
            dry_run: body.dry_run,
            details: json!({ "before": before, "after": after }),
        })
        .await?;
    Ok(Json(ResetOutcome {
        dry_run: body.dry_run,
        before,
        after,
    }))
}
