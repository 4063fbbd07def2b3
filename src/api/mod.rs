//! The HTTP API (axum): `/healthz`, `/readyz`, `/metrics`, JSON under `/api/v1` and the
//! live event stream `/api/v1/events`; the dashboard's pages (`crate::web`) are merged in.
//! [`router`] builds the whole app so tests and the daemon serve exactly the same thing.

mod alerts;
pub(crate) mod approvals;
mod audit;
pub(crate) mod auth;
mod breakers;
mod error;
mod events;
mod guard;
mod health;
pub(crate) mod incidents;
pub(crate) mod playbooks;
mod replicas;
pub(crate) mod runs;
pub mod serve;
pub mod slack;
mod stalled;
pub(crate) mod throttle;

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::StatusCode,
    routing::{get, post},
    Router,
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

pub use auth::Auth;
pub use error::ApiError;

use crate::{
    dispatch::Dispatcher, engine::Catalog, metrics::Metrics, primitives::Services, store::Store,
};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub dispatcher: Dispatcher,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Auth>,
    pub services: Services,
    /// How alerts become incidents.
    pub alerts: crate::config::AlertsConfig,
    /// `serve --world`: the scenario's title; every answer says it is simulated.
    pub simulated: Option<String>,
    /// The address the API is bound to (the browser guard accepts it as a host).
    pub listen: std::net::SocketAddr,
    /// Slack's Approve / Deny buttons (`[approvals] signing_secret_env`).
    pub slack: Option<Arc<slack::SlackApprovals>>,
    /// What changed, for `/api/v1/events` and the dashboard's live pages.
    pub feed: Arc<crate::live::Feed>,
    /// `[dashboard]`: sessions and cookies.
    pub dashboard: crate::config::DashboardConfig,
    /// The escalation table in force (the incident page shows it).
    pub escalation: crate::escalation::SharedTable,
    /// `[escalation] interval`.
    pub escalation_interval: std::time::Duration,
}

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

/// The complete HTTP application.
pub fn router(state: AppState, limits: RequestLimits) -> Router {
    let max_body_bytes = limits.max_body_bytes;
    let simulated = state.simulated.clone();
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/playbooks", get(playbooks::list))
        .route("/api/v1/playbooks/{name}", get(playbooks::show))
        .route("/api/v1/playbooks/{name}/runs", post(runs::trigger))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/runs/{id}", get(runs::show))
        .route("/api/v1/audit", get(audit::audit))
        .route("/api/v1/notifications", get(audit::notifications))
        .route("/api/v1/alerts", post(alerts::receive))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::show))
        .route("/api/v1/incidents/{id}/ack", post(incidents::ack))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route("/api/v1/breakers/{name}", get(breakers::show))
        .route("/api/v1/breakers/{name}/reset", post(breakers::reset))
        .route("/api/v1/replicas", get(replicas::list))
        .route("/api/v1/approvals", get(approvals::list))
        .route("/api/v1/approvals/{id}", get(approvals::show))
        .route("/api/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/api/v1/approvals/{id}/deny", post(approvals::deny))
        // Authenticated by Slack's request signature, not a token (see slack.rs).
        .route("/api/v1/slack/interactions", post(slack::interactions))
        .route("/api/v1/events", get(events::events))
        .merge(crate::web::routes())
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
            Arc::<str>::from(title),
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
