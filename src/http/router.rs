//! The whole app: the faces' routes (the API's and the dashboard's, handed in by the
//! wiring, so the shell imports neither), the probes, and the layers every request passes
//! (body and time limits, the NUL refusal, tracing, panics as 500, the browser guard
//! without tokens, the simulated-world mark). Tests and the daemon serve exactly what
//! [`router`] builds.

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::StatusCode,
    routing::get,
    Router,
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use super::{error::ApiError, guard, health, state::AppState};

/// Per-request limits of the router.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    /// The body must have arrived within this.
    pub body_timeout: std::time::Duration,
    /// The answer must be ready within this, unless the request waits for a run.
    pub request_timeout: std::time::Duration,
}

/// Answers 503 when a request (other than one waiting for its run) takes longer than
/// `[server] request_timeout`.
async fn request_deadline(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let waits = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "wait=true" || kv == "wait=1"));
    if waits {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the answer took longer than [server] request_timeout",
        )),
    }
}

/// The complete HTTP application: the probes and each face's routes (`api::routes()`,
/// `web::routes()`), merged under one set of limits and layers.
pub fn router(
    state: AppState,
    limits: RequestLimits,
    faces: impl IntoIterator<Item = Router<AppState>>,
) -> Router {
    let max_body_bytes = limits.max_body_bytes;
    let simulated = state.simulated.clone();
    let probes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));
    let router = faces
        .into_iter()
        .fold(probes, |app, face| app.merge(face))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limits.request_timeout,
            request_deadline,
        ))
        .layer(axum::middleware::from_fn(refuse_nul))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "unmatched".into());
            tracing::debug_span!("http", method = %req.method(), route)
        }))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the runbookd log",
            ))
        }))
        .with_state(state.clone());
    // Without tokens, web pages in the operator's browser must not drive the API.
    let router = if state.auth.is_open() {
        router.layer(axum::middleware::from_fn_with_state(
            guard::BrowserGuard {
                listen: state.listen,
            },
            guard::guard,
        ))
    } else {
        router
    };
    match simulated {
        Some(title) => router.layer(axum::middleware::map_response_with_state(
            title,
            mark_simulated,
        )),
        None => router,
    }
}

/// A NUL (`%00`) in a path or query is no id, name or cursor of runbookd's: refused with
/// 400 before any handler (PostgreSQL's text cannot hold one and would answer with an
/// error of its own, which is no state store trouble to retry or to log as one).
async fn refuse_nul(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let uri = req.uri();
    let nul = |s: &str| s.contains("%00");
    if nul(uri.path()) || uri.query().is_some_and(nul) {
        return axum::response::IntoResponse::into_response(ApiError::bad_request(
            "the path or query holds a NUL character (%00)",
        ));
    }
    next.run(req).await
}

/// `serve --world`: a `Runbookd-Simulated` header on every answer, and a `simulated` field
/// in every JSON object answer, so nobody mistakes a simulated outage for a real one.
async fn mark_simulated(
    axum::extract::State(title): axum::extract::State<Arc<str>>,
    res: axum::response::Response,
) -> axum::response::Response {
    let (mut parts, body) = res.into_parts();
    let header = axum::http::HeaderValue::from_str(&title)
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static("true"));
    parts.headers.insert("runbookd-simulated", header);
    let json = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json {
        return axum::response::Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return axum::response::Response::from_parts(parts, axum::body::Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert(
                "simulated".into(),
                serde_json::Value::String(title.to_string()),
            );
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            axum::body::Body::from(serde_json::Value::Object(map).to_string())
        }
        _ => axum::body::Body::from(bytes),
    };
    axum::response::Response::from_parts(parts, body)
}
