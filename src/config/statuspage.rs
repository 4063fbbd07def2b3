//! `[statuspage]`: the status page the payments app's users read (Atlassian Statuspage,
//! REST API v1). The runbook's "communicate to users that payment processing is
//! temporarily unavailable" is a status-page incident on this page.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{bad, duration, ConfigError};

/// `[statuspage]`. Unset `page_id`: not configured, and the outage playbook tells the
/// humans it pages to update the status page themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusPageConfig {
    /// Base URL of the API (tests point it at a fake).
    pub api_base: String,
    /// The page's id (Statuspage: Your page → API info).
    pub page_id: Option<String>,
    /// Environment variable holding the API key (sent as `Authorization: OAuth <key>`).
    pub api_key_env: Option<String>,
    /// File holding the API key; takes precedence over `api_key_env`.
    pub api_key_file: Option<PathBuf>,
    /// The component that stands for payment processing; its status follows the incident
    /// (`partial_outage` / `major_outage`, `operational` when resolved). Unset: incidents
    /// only, no component.
    pub component_id: Option<String>,
    /// Time limit of one request.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for StatusPageConfig {
    fn default() -> Self {
        StatusPageConfig {
            api_base: "https://api.statuspage.io/v1".into(),
            page_id: None,
            api_key_env: Some("STATUSPAGE_API_KEY".into()),
            api_key_file: None,
            component_id: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl StatusPageConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(page) = &self.page_id else {
            return Ok(());
        };
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !plain(page) {
            return Err(bad(
                "statuspage.page_id",
                "must be the page's id (letters and digits)",
            ));
        }
        if let Some(c) = &self.component_id {
            if !plain(c) {
                return Err(bad(
                    "statuspage.component_id",
                    "must be the component's id (letters and digits)",
                ));
            }
        }
        if self.api_key_env.is_none() && self.api_key_file.is_none() {
            return Err(bad(
                "statuspage.api_key_env",
                "page_id is set: name the API key's environment variable (or api_key_file)",
            ));
        }
        match url::Url::parse(&self.api_base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err(bad("statuspage.api_base", "must be an http(s) URL")),
        }
        if self.timeout.is_zero() {
            return Err(bad("statuspage.timeout", "must be at least 1ms"));
        }
        Ok(())
    }
}
