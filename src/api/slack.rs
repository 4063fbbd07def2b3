//! `POST /api/v1/slack/interactions`: the Approve / Deny buttons of Slack approval messages.
//!
//! Slack signs every request: `X-Slack-Signature: v0=` HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` with the app's signing secret. A request is
//! taken only with a valid signature (compared in constant time) and a timestamp within five
//! minutes (no replays; checked by `http::slack`); that signature is its authentication, so
//! this route needs no token.
//! The Slack user is mapped to an approver by `[approvals] slack_users` (unmapped users are
//! refused, and told so), the decision is the API's own, and Slack is answered at once; the
//! message is replaced with who decided through its `response_url`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use crate::{
    dispatch::Dispatcher,
    http::{
        error::{body, ApiError, ErrorBody},
        slack::SlackApprovals,
    },
    store::Store,
};

use crate::notify::slack_escape;

/// What Slack is answered (and what replaces or follows the message, by `response_url`).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct SlackMessage {
    /// `ephemeral`: shown to the presser only.
    #[serde(skip_serializing_if = "Option::is_none")]
    response_type: Option<&'static str>,
    /// True when the approval message is replaced with who decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    replace_original: Option<bool>,
    text: String,
}

impl SlackMessage {
    /// A note to the presser alone; the approval message stays.
    fn ephemeral(text: String) -> SlackMessage {
        SlackMessage {
            response_type: Some("ephemeral"),
            replace_original: Some(false),
            text,
        }
    }
}

/// Slack's form: one field, `payload`, the `block_actions` JSON.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct SlackForm {
    /// Slack's `block_actions` payload, as JSON text.
    payload: String,
}

/// One button press, from Slack's `block_actions` payload.
struct Press {
    user: String,
    approve: bool,
    approval: String,
    response_url: String,
}

fn press(body: &[u8]) -> Result<Press, ApiError> {
    let payload = url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::bad_request("no `payload` form field"))?;
    let v: Value = serde_json::from_str(&payload)
        .map_err(|e| ApiError::bad_request(format!("payload is not JSON: {e}")))?;
    let action = &v["actions"][0];
    let approve = match action["action_id"].as_str() {
        Some("approve") => true,
        Some("deny") => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown action {other:?}: expected approve or deny"
            )))
        }
    };
    Ok(Press {
        user: v["user"]["id"].as_str().unwrap_or("").to_string(),
        approve,
        approval: action["value"].as_str().unwrap_or("").to_string(),
        response_url: v["response_url"].as_str().unwrap_or("").to_string(),
    })
}

/// The Approve / Deny buttons of Slack approval messages, authenticated by Slack's
/// signature instead of a token.
#[utoipa::path(post, path = "/api/v1/slack/interactions", tag = "approvals",
    params(("X-Slack-Signature" = String, Header, description = "`v0=` HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret"),
        ("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds; within five minutes of now")),
    request_body(content = SlackForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Slack's answer: the decision, or why it was refused", body = SlackMessage),
        (status = 400, description = "No `payload`, or not a button press runbookd knows", body = ErrorBody),
        (status = 401, description = "No valid signature within five minutes", body = ErrorBody),
        (status = 404, description = "Slack interactions are not configured (`[approvals] signing_secret_env`)", body = ErrorBody),
        (status = 413, description = "Body over `server.max_body_bytes`", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("slack-signature"))))]
pub async fn interactions(
    State(slack): State<Option<Arc<SlackApprovals>>>,
    State(store): State<Store>,
    State(dispatcher): State<Dispatcher>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let slack = slack.ok_or_else(|| {
        ApiError::not_found(
            "Slack interactions are not configured ([approvals] signing_secret_env)",
        )
    })?;
    let body = body(request)?;
    // Slack's clock, not the world's: the timestamp guards against replays of what Slack
    // signed, so it is held against wall-clock time even in a simulated world.
    slack.verify(&headers, &body, chrono::Utc::now().timestamp())?;
    let p = press(&body)?;
    let Some(by) = slack.users.get(&p.user).cloned() else {
        tracing::warn!(slack_user = %p.user, approval = %p.approval, "Slack user not mapped to an approver; refused");
        let text = format!(
            "You (Slack user {}) are not an approver: ask for your user id to be added to [approvals.slack_users].",
            slack_escape(&p.user)
        );
        let message = SlackMessage::ephemeral(text);
        slack.reply(&p.response_url, json!(message)).await;
        return Ok((StatusCode::OK, Json(message)).into_response());
    };
    let decided = crate::approvals::decide(&store, &p.approval, &by, p.approve, "via Slack").await;
    let message = match decided {
        Ok(d) => {
            tracing::warn!(approval = %p.approval, by = %by, status = %d.approval.status, "approval decided from Slack");
            if d.follow_up.is_some() {
                dispatcher.wake_claimer();
            }
            let a = &d.approval;
            let what = if p.approve { "approved" } else { "denied" };
            let (action, target, by) = (
                slack_escape(&a.action),
                slack_escape(&a.target),
                slack_escape(&by),
            );
            let text = match (&d.follow_up, a.status) {
                (Some(run), _) => format!(
                    "{} {what} by {by}: {action} {target} (run {})",
                    if p.approve {
                        ":white_check_mark:"
                    } else {
                        ":no_entry:"
                    },
                    run.id
                ),
                (None, _) => format!(
                    ":hourglass: {by} approved {action} {target}; {} approver(s) needed",
                    a.required
                ),
            };
            SlackMessage {
                response_type: None,
                replace_original: Some(true),
                text,
            }
        }
        Err(e) => {
            tracing::warn!(approval = %p.approval, by = %by, error = %e, "approval from Slack refused");
            SlackMessage::ephemeral(slack_escape(&e.to_string()))
        }
    };
    slack.reply(&p.response_url, json!(message)).await;
    Ok((StatusCode::OK, Json(message)).into_response())
}
