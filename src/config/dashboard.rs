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
    /// Event streams (`GET /api/v1/events`) open at once, in all: each holds a connection
    /// for as long as a page is open, so keep this well below `[server] max_connections`.
    pub max_streams: usize,
    /// Event streams one caller (a token, or on a daemon without tokens everyone) may hold.
    pub max_streams_per_caller: usize,
    /// A stream ends after this long, and the browser opens a new one (`EventSource`
    /// reconnects by itself): no stream outlives a changed configuration or a
    /// forgotten tab forever.
    #[serde(deserialize_with = "duration")]
    pub max_stream_lifetime: Duration,
    /// The form origin behind a proxy that rewrites `Host` (`https://runbookd.example.com`):
    /// a form whose `Origin` is this is this site's. Unset: `Origin` must match `Host`.
    pub public_origin: Option<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: SecureCookies::Auto,
            live_interval: Duration::from_secs(1),
            max_streams: 64,
            max_streams_per_caller: 8,
            max_stream_lifetime: Duration::from_secs(30 * 60),
            public_origin: None,
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
        if self.max_streams == 0 {
            return Err(bad("dashboard.max_streams", "must be at least 1"));
        }
        if self.max_streams_per_caller == 0 || self.max_streams_per_caller > self.max_streams {
            return Err(bad(
                "dashboard.max_streams_per_caller",
                "must be between 1 and dashboard.max_streams",
            ));
        }
        if self.max_stream_lifetime < Duration::from_secs(1) {
            return Err(bad("dashboard.max_stream_lifetime", "must be at least 1s"));
        }
        if let Some(origin) = &self.public_origin {
            let ok = url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && !origin.ends_with('/')
            });
            if !ok {
                return Err(bad(
                    "dashboard.public_origin",
                    "must be an origin: scheme and host (and port), no path, e.g. `https://runbookd.example.com`",
                ));
            }
        }
        Ok(())
    }
}
