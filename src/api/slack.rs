//! `POST /api/v1/slack/interactions`: the Approve / Deny buttons of Slack approval messages.
//!
//! Slack signs every request: `X-Slack-Signature: v0=` HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` with the app's signing secret. A request is
//! taken only with a valid signature (compared in constant time) and a timestamp within five
//! minutes (no replays); that signature is its authentication, so this route needs no token.
//! The Slack user is mapped to an approver by `[approvals] slack_users` (unmapped users are
//! refused, and told so), the decision is the API's own, and Slack is answered at once; the
//! message is replaced with who decided through its `response_url`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{ApiError, AppState};

/// Oldest request timestamp accepted (Slack's own advice).
const MAX_AGE_SECS: i64 = 5 * 60;
/// How long replacing the message may take: Slack wants its answer within 3 s.
const REPLY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// What the interactions endpoint needs (present when `[approvals] signing_secret_env` is).
pub struct SlackApprovals {
    pub signing_secret: SecretString,
    pub users: BTreeMap<String, String>,
    pub response_prefix: String,
    pub http: reqwest::Client,
}

impl SlackApprovals {
    /// Reads the signing secret; None when Slack approvals are not configured.
    pub fn from_config(
        cfg: &crate::config::ApprovalsConfig,
    ) -> Result<Option<Arc<SlackApprovals>>, crate::config::ConfigError> {
        let Some(var) = &cfg.signing_secret_env else {
            return Ok(None);
        };
        let signing_secret =
            crate::config::resolve_secret("approvals.signing_secret_env", Some(var), None)?;
        Ok(Some(Arc::new(SlackApprovals {
            signing_secret,
            users: cfg.slack_users.clone(),
            response_prefix: cfg.slack_response_prefix.clone(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        })))
    }

    /// Slack's signature over `body`, checked in constant time, and the timestamp fresh.
    fn verify(&self, headers: &HeaderMap, body: &[u8], now_secs: i64) -> Result<(), ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m.to_string());
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let ts = header("x-slack-request-timestamp")
            .ok_or_else(|| unauthorized("missing X-Slack-Request-Timestamp"))?;
        let ts_secs: i64 = ts
            .parse()
            .map_err(|_| unauthorized("X-Slack-Request-Timestamp is not a number"))?;
        if (now_secs - ts_secs).abs() > MAX_AGE_SECS {
            return Err(unauthorized(
                "X-Slack-Request-Timestamp is more than five minutes away",
            ));
        }
        let sig = header("x-slack-signature")
            .and_then(|s| s.strip_prefix("v0="))
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| unauthorized("missing or malformed X-Slack-Signature"))?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.signing_secret.expose_secret().as_bytes())
                .map_err(|_| unauthorized("signing secret unusable"))?;
        mac.update(format!("v0:{ts}:").as_bytes());
        mac.update(body);
        mac.verify_slice(&sig)
            .map_err(|_| unauthorized("X-Slack-Signature does not match"))
    }

    /// Tells Slack (through the interaction's `response_url`, if it points at Slack), within
    /// the request — bounded, so Slack's own answer still comes within its 3 s — rather than
    /// in a task nobody waits for at shutdown.
    async fn reply(&self, response_url: &str, message: Value) {
        if !response_url.starts_with(&self.response_prefix) {
            tracing::warn!(
                prefix = %self.response_prefix,
                "Slack response_url outside [approvals] slack_response_prefix; not answering there"
            );
            return;
        }
        let post = self.http.post(response_url).json(&message).send();
        match tokio::time::timeout(REPLY_WITHIN, post).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot answer Slack's response_url"),
            Err(_) => tracing::warn!("Slack's response_url did not answer in time"),
        }
    }
}

pub use crate::notify::slack_escape;

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

pub async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let slack = state.slack.clone().ok_or_else(|| {
        ApiError::not_found(
            "Slack interactions are not configured ([approvals] signing_secret_env)",
        )
    })?;
    let body = super::error::body(body)?;
    slack.verify(&headers, &body, chrono::Utc::now().timestamp())?;
    let p = press(&body)?;
    let Some(by) = slack.users.get(&p.user).cloned() else {
        tracing::warn!(slack_user = %p.user, approval = %p.approval, "Slack user not mapped to an approver; refused");
        let text = format!(
            "You (Slack user {}) are not an approver: ask for your user id to be added to [approvals.slack_users].",
            slack_escape(&p.user)
        );
        slack
            .reply(
                &p.response_url,
                json!({ "response_type": "ephemeral", "replace_original": false, "text": text }),
            )
            .await;
        return Ok((StatusCode::OK, Json(json!({ "text": text }))).into_response());
    };
    let decided =
        crate::approvals::decide(&state.store, &p.approval, &by, p.approve, "via Slack").await;
    let message = match decided {
        Ok(d) => {
            tracing::warn!(approval = %p.approval, by = %by, status = %d.approval.status, "approval decided from Slack");
            if d.follow_up.is_some() {
                state.dispatcher.wake_claimer();
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
            json!({ "replace_original": true, "text": text })
        }
        Err(e) => {
            tracing::warn!(approval = %p.approval, by = %by, error = %e, "approval from Slack refused");
            json!({ "response_type": "ephemeral", "replace_original": false, "text": slack_escape(&e.to_string()) })
        }
    };
    slack.reply(&p.response_url, message.clone()).await;
    Ok((StatusCode::OK, Json(message)).into_response())
}
