//! `[logs]`: where the app's worker logs can be read (runbook Step 4's
//! `journalctl -u celery-worker | grep -iE "stripe|payment|circuit"`): Grafana Loki.

use std::time::Duration;

use serde::Deserialize;

use super::{bad, duration, ConfigError};

/// `[logs]`. Unset `loki_url`: not configured, and the diagnosis lists the worker logs among
/// what it could not check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Loki's base URL (`http://loki:3100`).
    pub loki_url: Option<String>,
    /// `X-Scope-OrgID` for a multi-tenant Loki.
    pub tenant: Option<String>,
    /// Time limit of one query.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            loki_url: None,
            tenant: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl LogsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.loki_url {
            match url::Url::parse(u) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err(bad("logs.loki_url", "must be an http(s) URL")),
            }
        }
        Ok(())
    }
}
