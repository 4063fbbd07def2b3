//! Liveness, readiness and metrics: `/healthz`, `/readyz`, `/metrics`. They belong to the
//! shell, not to either face: unauthenticated, as probes and scrapers expect, and outside
//! `/api/v1`.

use axum::{
    extract::State,
    http::{header::CONTENT_TYPE, StatusCode},
    response::IntoResponse,
    Json,
};
use std::{sync::Arc, time::Duration};

use serde_json::json;

use crate::{metrics::Metrics, primitives::Services, store::Store};

/// The process is up and serving HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when the state store and every configured backend answer: the payments database,
/// each breaker's Redis, the Celery broker. 503 names each one that does not (a load
/// balancer should route elsewhere; an SRE reads what is down). Stripe is a third party:
/// it is never asked here, and never makes runbookd unready.
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
    let mut checks = serde_json::Map::new();
    let store = match (check(store.ping()).await, store.write_error()) {
        // Reads answer, writes do not (a full disk, a server refusing writes): alerts get
        // 503 and Alertmanager resends them until writes go through again.
        (ok, Some(e)) if ok == "ok" => format!("error: cannot write: {e}"),
        (outcome, _) => outcome,
    };
    checks.insert("state".into(), store.into());
    let s = &services;
    if s.payments.configured() {
        checks.insert(
            "payments".into(),
            check(async { s.payments.backend()?.ping().await })
                .await
                .into(),
        );
    }
    for name in s.breakers.names() {
        let breakers = s.breakers.clone();
        let n = name.clone();
        let outcome = check(async move { breakers.read(&n).await.map(|_| ()) }).await;
        if !outcome.contains("is not configured") {
            checks.insert(format!("breaker:{name}"), outcome.into());
        }
    }
    if let Some(ping) = s.celery.ping().await {
        let outcome = match ping {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        };
        checks.insert("celery_broker".into(), outcome.into());
    }
    // A degraded channel is reported, not counted: routing traffic to another replica
    // would not make Slack answer.
    let channels: serde_json::Map<String, serde_json::Value> = s
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
            (h.channel, v.into())
        })
        .collect();
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, v)| v.as_str() != Some("ok"))
        .map(|(k, _)| k.clone())
        .collect();
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks, "channels": channels })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "not ready", "failing": failing, "checks": checks, "channels": channels }),
            ),
        )
    }
}

/// Prometheus/OpenMetrics text exposition.
pub async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}
