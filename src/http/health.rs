//! Liveness, readiness and metrics: `/healthz`, `/readyz`, `/metrics`. They belong to the
//! shell, not to either face: unauthenticated, as probes and scrapers expect, and outside
//! `/api/v1`.

use axum::{
    extract::State,
    http::{header::CONTENT_TYPE, StatusCode},
    response::IntoResponse,
    Json,
};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::Serialize;

use crate::{metrics::Metrics, primitives::Services, store::Store};

/// `/healthz`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// `/readyz`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: &'static str,
    /// The checks that are not `ok` (only when not ready).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub failing: Vec<String>,
    /// Each backend (`state`, `payments`, `breaker:NAME`, `celery_broker`): `ok` or the error.
    pub checks: BTreeMap<String, String>,
    /// Each notification channel: `ok` or `degraded: …` (reported, never counted).
    pub channels: BTreeMap<String, String>,
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> impl IntoResponse {
    Json(Health { status: "ok" })
}

/// Ready when the state store and every configured backend answer: the payments database,
/// each breaker's Redis, the Celery broker. 503 names each one that does not (a load
/// balancer should route elsewhere; an SRE reads what is down). Stripe is a third party:
/// it is never asked here, and never makes runbookd unready.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "The state store and every configured backend answer", body = Readiness),
    (status = 503, description = "Something does not answer: `failing` names it", body = Readiness)))]
pub async fn readyz(
    State(store): State<Store>,
    State(services): State<Services>,
) -> impl IntoResponse {
    const LIMIT: Duration = Duration::from_secs(2);
    async fn check<E: std::fmt::Display>(
        fut: impl std::future::Future<Output = Result<(), E>>,
    ) -> String {
        match tokio::time::timeout(LIMIT, fut).await {
            Ok(Ok(())) => "ok".into(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => format!("error: no answer within {} s", LIMIT.as_secs()),
        }
    }
    let mut checks = BTreeMap::new();
    let store = match (check(store.ping()).await, store.write_error()) {
        // Reads answer, writes do not (a full disk, a server refusing writes): alerts get
        // 503 and Alertmanager resends them until writes go through again.
        (ok, Some(e)) if ok == "ok" => format!("error: cannot write: {e}"),
        (outcome, _) => outcome,
    };
    checks.insert("state".to_string(), store);
    let s = &services;
    if s.payments.configured() {
        checks.insert(
            "payments".into(),
            check(async { s.payments.backend()?.ping().await }).await,
        );
    }
    for name in s.breakers.names() {
        let breakers = s.breakers.clone();
        let n = name.clone();
        let outcome = check(async move { breakers.read(&n).await.map(|_| ()) }).await;
        if !outcome.contains("is not configured") {
            checks.insert(format!("breaker:{name}"), outcome);
        }
    }
    if let Some(ping) = s.celery.ping().await {
        let outcome = match ping {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        };
        checks.insert("celery_broker".into(), outcome);
    }
    // A degraded channel is reported, not counted: routing traffic to another replica
    // would not make Slack answer.
    let channels: BTreeMap<String, String> = s
        .notifier
        .iter()
        .flat_map(|n| n.channel_health())
        .map(|h| {
            let v = if h.degraded {
                format!(
                    "degraded: {} deliveries failed in a row (last: {})",
                    h.failures_in_a_row,
                    h.last_error.as_deref().unwrap_or("-")
                )
            } else {
                "ok".into()
            };
            (h.channel, v)
        })
        .collect();
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, v)| v.as_str() != "ok")
        .map(|(k, _)| k.clone())
        .collect();
    let (code, status) = if failing.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    (
        code,
        Json(Readiness {
            status,
            failing,
            checks,
            channels,
        }),
    )
}

/// Prometheus/OpenMetrics text exposition.
#[utoipa::path(get, path = "/metrics", tag = "probes", responses(
    (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}
