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
use serde::Serialize;

use crate::{
    config::AlertsConfig,
    dispatch::{alerts::AlertOutcome, Dispatcher},
    http::{
        caller::{Access, Caller},
        error::{body, ApiError, ErrorBody},
    },
    metrics::Metrics,
    triggers::alertmanager,
};

/// What became of a notification's alerts.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Received {
    /// Alerts in the notification.
    received: usize,
    /// Alerts Alertmanager left out (`truncatedAlerts`).
    truncated: u64,
    alerts: Vec<AlertOutcome>,
}

/// Alertmanager's webhook (payload version 4): answers 200 once every alert is recorded.
#[utoipa::path(post, path = "/api/v1/alerts", tag = "alerts",
    request_body = alertmanager::Notification,
    responses((status = 200, description = "Every alert recorded (incident, alert row, runs)", body = Received),
        (status = 400, description = "A bad field, named (Alertmanager does not retry 4xx)", body = ErrorBody),
        (status = 413, description = "Body over `server.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "Run queue full or state store unavailable: Alertmanager retries", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("ingest"))))]
pub async fn receive(
    caller: Caller,
    State(dispatcher): State<Dispatcher>,
    State(metrics): State<Arc<Metrics>>,
    State(rules): State<Arc<AlertsConfig>>,
    request: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Received>, ApiError> {
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
    Ok(Json(Received {
        received,
        truncated: notification.truncated_alerts,
        alerts: outcomes,
    }))
}
