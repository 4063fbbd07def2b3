//! `POST /api/v1/alerts`: the Alertmanager webhook receiver (payload version 4).
//!
//! Answers 200 only once every alert of the notification is recorded (incident, alert row,
//! runs) — all of a notification or none of it, in one transaction with whatever other
//! notifications arrived at the same moment: a crash after 200 loses nothing, and a retry
//! after a 5xx starts nothing twice.
//! 400 names the bad field (Alertmanager does not retry 4xx); 503 when the run queue is full
//! (it does retry 5xx).

use std::sync::Arc;

use axum::{body::Bytes, extract::State, http::StatusCode, Json};
use serde_json::{json, Value};

use crate::{
    config::AlertsConfig,
    dispatch::Dispatcher,
    http::{
        caller::{Access, Caller},
        error::{body, ApiError},
    },
    metrics::Metrics,
    triggers::alertmanager,
};

pub async fn receive(
    caller: Caller,
    State(dispatcher): State<Dispatcher>,
    State(metrics): State<Arc<Metrics>>,
    State(rules): State<Arc<AlertsConfig>>,
    request: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Access::Ingest)?;
    let body = body(request)?;
    let notification =
        alertmanager::parse(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if notification.truncated_alerts > 0 {
        tracing::warn!(
            truncated = notification.truncated_alerts,
            group = %notification.group_key,
            "Alertmanager truncated this notification; raise max_alerts in its webhook_config"
        );
        metrics.alerts_truncated(notification.truncated_alerts);
    }
    for _ in &notification.alerts {
        metrics.alert_received();
    }
    let received = notification.alerts.len();
    let outcomes = dispatcher
        .ingest_alerts(notification.alerts, &rules, &caller.name)
        .await
        .map_err(|e| {
            let e: ApiError = e.into();
            if e.status == StatusCode::NOT_FOUND {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.message)
            } else {
                e
            }
        })?;
    for outcome in &outcomes {
        tracing::info!(
            alert = %outcome.alertname,
            status = %outcome.status,
            incident = outcome.incident.as_deref().unwrap_or("-"),
            notes = %outcome.notes.join("; "),
            "alert received"
        );
    }
    Ok(Json(json!({
        "received": received,
        "truncated": notification.truncated_alerts,
        "alerts": outcomes,
    })))
}
