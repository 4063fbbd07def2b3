//! `[approvals]`: who is asked when a playbook wants a human to approve an action, how many
//! must approve, and how long a request waits.

use std::time::Duration;

use serde::Deserialize;

use super::{bad, duration, ChannelConfig, ConfigError};

/// `[approvals]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// The channel a request is announced on (with the commands to decide it). None: the
    /// request is only listed (`GET /api/v1/approvals`) and logged.
    pub channel: Option<String>,
    /// Distinct approvers needed; 2 is the two-person rule.
    pub required: u32,
    /// How long a request waits when the playbook does not say (`expires: "15m"`).
    #[serde(deserialize_with = "duration")]
    pub expires: Duration,
    /// The longest `expires` a playbook may ask for.
    #[serde(deserialize_with = "duration")]
    pub max_expires: Duration,
    /// The environment variable holding Slack's signing secret: set, the Approve / Deny
    /// buttons of Slack approval messages work (`POST /api/v1/slack/interactions`).
    pub signing_secret_env: Option<String>,
    /// Slack user id → approver name (`U024BE7LH = "alice"`). Unmapped users are refused.
    pub slack_users: std::collections::BTreeMap<String, String>,
    /// Where Slack's `response_url`s must point (a signed payload cannot make runbookd
    /// post anywhere else).
    pub slack_response_prefix: String,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            channel: None,
            required: 1,
            expires: Duration::from_secs(15 * 60),
            max_expires: Duration::from_secs(24 * 3600),
            signing_secret_env: None,
            slack_users: Default::default(),
            slack_response_prefix: "https://hooks.slack.com/".into(),
        }
    }
}

impl ApprovalsConfig {
    pub(super) fn validate(
        &self,
        channels: &std::collections::BTreeMap<String, ChannelConfig>,
    ) -> Result<(), ConfigError> {
        if self.required == 0 {
            return Err(bad("approvals.required", "must be at least 1"));
        }
        if self.expires.is_zero() || self.expires > self.max_expires {
            return Err(bad(
                "approvals.expires",
                "must be longer than zero and at most approvals.max_expires",
            ));
        }
        if self.signing_secret_env.is_none() && !self.slack_users.is_empty() {
            return Err(bad(
                "approvals.slack_users",
                "needs approvals.signing_secret_env (Slack's signing secret) to mean anything",
            ));
        }
        if let Some(c) = &self.channel {
            // `log` always exists, as in the escalation table.
            if c != "log" && !channels.contains_key(c) {
                let known: Vec<&str> = std::iter::once("log")
                    .chain(channels.keys().map(String::as_str).filter(|k| *k != "log"))
                    .collect();
                return Err(bad(
                    "approvals.channel",
                    format!(
                        "no channel named `{c}` (configured: {}); add [channels.{c}]",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
