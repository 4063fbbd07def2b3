//! `[dashboard]`: the browser pages at `/` — how long a login lasts, when its cookie is
//! `Secure`, and how quickly open pages follow changes.

use std::time::Duration;

use serde::Deserialize;

use super::{bad, duration, ConfigError};

/// When the session cookie carries `Secure`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecureCookies {
    /// When the request came through TLS: a proxy in front says `X-Forwarded-Proto: https`.
    #[default]
    Auto,
    /// Always (runbookd is only ever reached over https).
    Always,
    /// Never (plain http on a trusted network).
    Never,
}

/// `[dashboard]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// A login lasts this long; then the browser asks for the token again.
    #[serde(deserialize_with = "duration")]
    pub session_ttl: Duration,
    pub secure_cookies: SecureCookies,
    /// How often open pages' live stream (`GET /api/v1/events`) looks for changes, across
    /// every replica sharing the state store.
    #[serde(deserialize_with = "duration")]
    pub live_interval: Duration,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: SecureCookies::Auto,
            live_interval: Duration::from_secs(1),
        }
    }
}

impl DashboardConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.session_ttl < Duration::from_secs(60) {
            return Err(bad("dashboard.session_ttl", "must be at least 1m"));
        }
        if self.live_interval < Duration::from_millis(100)
            || self.live_interval > Duration::from_secs(60)
        {
            return Err(bad(
                "dashboard.live_interval",
                "must be between 100ms and 60s",
            ));
        }
        Ok(())
    }
}
