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
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    http::{
        caller::{Access, Caller},
        error::{body, ApiError},
    },
    primitives::breaker::{BreakerError, Breakers},
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

/// Every configured breaker by name: its snapshot, or `{name, state: "unknown", error}` for
/// one that cannot be read now (its Redis is down), so one broken breaker does not hide
/// the others.
pub async fn list(
    caller: Caller,
    State(breakers): State<Arc<Breakers>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let mut out = Vec::new();
    for name in breakers.names() {
        out.push(match breakers.read(&name).await {
            Ok(snap) => json!(snap),
            Err(e) => json!({ "name": name, "state": "unknown", "error": e.to_string() }),
        });
    }
    Ok(Json(Value::Array(out)))
}

pub async fn show(
    caller: Caller,
    State(breakers): State<Arc<Breakers>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Read)?;
    let snap = breakers.read(&name).await.map_err(breaker_error)?;
    Ok(Json(json!(snap)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    #[serde(default)]
    dry_run: bool,
}

pub async fn reset(
    caller: Caller,
    State(breakers): State<Arc<Breakers>>,
    State(store): State<Store>,
    Path(name): Path<String>,
    request: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Operate)?;
    let body = body(request)?;
    let body: ResetBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResetBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid reset body: {e}")))?
    };
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
    Ok(Json(json!({
        "dry_run": body.dry_run,
        "before": before,
        "after": after,
    })))
}
