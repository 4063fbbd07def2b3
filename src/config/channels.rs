//! `[channels.NAME]`: where notifications go, and what each kind of channel needs.

use std::path::PathBuf;

use serde::Deserialize;

use super::{bad, valid_name, ConfigError};

/// Kinds of notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// The daemon's own log (always works; useful as a fallback).
    Log,
    /// A Slack incoming webhook.
    Slack,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Any HTTP endpoint: JSON, signed `t=…,v1=…` like Stripe's webhooks.
    Webhook,
    /// Email over SMTP.
    Email,
}

/// `[channels.NAME]`. URLs that carry a secret (Slack) may be given by indirection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    /// Endpoint (webhook, slack; pagerduty defaults to the Events API v2).
    pub url: Option<String>,
    /// Environment variable / file holding the URL instead (Slack webhook URLs are secrets).
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    /// Webhook signing secret, by indirection.
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// PagerDuty integration (routing) key, by indirection.
    pub routing_key_env: Option<String>,
    pub routing_key_file: Option<PathBuf>,
    /// PagerDuty severity: critical, error, warning or info.
    pub severity: Option<String>,
    /// Email: SMTP server, port (default 587) and `starttls` (default), `tls` or `none`.
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    pub smtp_tls: Option<String>,
    /// Email: sender and recipients.
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Email: SMTP login, by indirection.
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Time limit of one delivery attempt on this channel (default `[notify] timeout`).
    #[serde(default, deserialize_with = "super::opt_duration")]
    pub timeout: Option<std::time::Duration>,
}

impl ChannelConfig {
    /// `[channels.NAME]`.
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = format!("channels.{name}");
        if !valid_name(name) {
            return Err(bad(&key, "channel names use a-z, 0-9, _ and -"));
        }
        let has_url = self.url.is_some() || self.url_env.is_some() || self.url_file.is_some();
        match self.kind {
            ChannelKind::Slack | ChannelKind::Webhook if !has_url => {
                return Err(bad(&key, "needs url, url_env or url_file"));
            }
            ChannelKind::Pagerduty
                if self.routing_key_env.is_none() && self.routing_key_file.is_none() =>
            {
                return Err(bad(&key, "needs routing_key_env or routing_key_file"));
            }
            ChannelKind::Email
                if self.smtp_host.is_none() || self.from.is_none() || self.to.is_empty() =>
            {
                return Err(bad(&key, "needs smtp_host, from and to"));
            }
            ChannelKind::Email
                if !matches!(
                    self.smtp_tls.as_deref(),
                    None | Some("starttls" | "tls" | "none")
                ) =>
            {
                return Err(bad(
                    format!("{key}.smtp_tls"),
                    "must be starttls, tls or none",
                ));
            }
            _ => {}
        }
        if let Some(sev) = &self.severity {
            if !matches!(sev.as_str(), "critical" | "error" | "warning" | "info") {
                return Err(bad(
                    format!("{key}.severity"),
                    "must be critical, error, warning or info",
                ));
            }
        }
        Ok(())
    }
}
