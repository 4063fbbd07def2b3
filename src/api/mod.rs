//! The JSON API under `/api/v1`, and the live event stream `/api/v1/events`: one face of
//! the HTTP shell ([`crate::http`]), beside the dashboard. Handlers authenticate through
//! the shell's `Caller`, take only the part of the state they use, and do what the
//! dashboard also does through the shell's `Actions`.

mod alerts;
mod approvals;
mod audit;
mod breakers;
mod events;
mod incidents;
pub mod openapi;
mod playbooks;
mod replicas;
mod runs;
mod slack;

use axum::{
    routing::{get, post},
    Router,
};

use crate::http::{error::ApiError, state::AppState};

/// Most rows one list answers.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// A list's `?limit=`: `default` when absent, 400 outside 1–[`MAX_LIMIT`] (as the OpenAPI
/// document says: a client asking for 0 or a million rows is told, not served something
/// else).
fn limit(asked: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match asked.unwrap_or(default) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        ))),
    }
}

/// A list's `?status=` in the OpenAPI document: one of the statuses of schema `status`, or
/// empty for any (what a form or the CLI sends when nothing was chosen).
fn status_filter(status: &str) -> utoipa::openapi::Schema {
    use utoipa::openapi::{schema::Type, ObjectBuilder, OneOfBuilder, Ref};
    OneOfBuilder::new()
        .item(Ref::from_schema_name(status))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([""]))
                .description(Some("Any status")),
        )
        .build()
        .into()
}

fn run_status_filter() -> utoipa::openapi::Schema {
    status_filter("RunStatus")
}

fn incident_status_filter() -> utoipa::openapi::Schema {
    status_filter("IncidentStatus")
}

fn approval_status_filter() -> utoipa::openapi::Schema {
    status_filter("ApprovalStatus")
}

/// An optional JSON body: nothing (or only whitespace) and `null` are the defaults, as the
/// OpenAPI document says (`oneOf: [T, null]`, not required); anything else must parse.
fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let bad = |e: String| ApiError::bad_request(format!("invalid {what}: {e}"));
    match serde_json::from_slice::<serde_json::Value>(body).map_err(|e| bad(e.to_string()))? {
        serde_json::Value::Null => Ok(T::default()),
        // serde reads a struct from an array of its fields too (`["why"]` as a comment):
        // a body is an object, as the contract says.
        v @ serde_json::Value::Object(_) => {
            serde_json::from_value(v).map_err(|e| bad(e.to_string()))
        }
        other => Err(bad(format!(
            "expected a JSON object, not {}",
            match other {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                _ => "a boolean",
            }
        ))),
    }
}

/// The API's routes (merged by the shell under its limits and layers).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/playbooks", get(playbooks::list))
        .route("/api/v1/playbooks/{name}", get(playbooks::show))
        .route("/api/v1/playbooks/{name}/runs", post(runs::trigger))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/runs/{id}", get(runs::show))
        .route("/api/v1/runs/{id}/recording", get(runs::recording))
        .route("/api/v1/audit", get(audit::audit))
        .route("/api/v1/notifications", get(audit::notifications))
        .route("/api/v1/alerts", post(alerts::receive))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::show))
        .route("/api/v1/incidents/{id}/ack", post(incidents::ack))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route("/api/v1/breakers", get(breakers::list))
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
}
