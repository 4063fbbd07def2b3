//! Slack's signed requests: the signing secret that authenticates the Approve / Deny
//! buttons of Slack approval messages (in place of a token), and the `response_url` that
//! answers them. The route itself is the API's (`api::slack`).
//!
//! Slack signs every request: `X-Slack-Signature: v0=` HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` with the app's signing secret. A request is
//! taken only with a valid signature (compared in constant time) and a timestamp within five
//! minutes (no replays).

use std::{collections::BTreeMap, sync::Arc};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

use super::error::ApiError;

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
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_secs: i64) -> Result<(), ApiError> {
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
    pub async fn reply(&self, response_url: &str, message: Value) {
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
