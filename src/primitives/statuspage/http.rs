//! Atlassian Statuspage's REST API v1: the page's unresolved incidents, creating and
//! updating one (with the component's status in the same request), reading the component.
//! `Authorization: OAuth <key>`; the key is read when the daemon starts and never shown.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::{PageChange, PageIncident, StatusPageBackend, StatusPageError};
use crate::config::{resolve_secret, ConfigError, StatusPageConfig};

/// One page on Statuspage.
pub struct HttpStatusPage {
    http: reqwest::Client,
    /// `{api_base}/pages/{page_id}`.
    page_url: String,
    component_id: Option<String>,
    /// The key, or why there is none (said on first use, not at start: a missing key must
    /// not keep the daemon from serving).
    key: Result<SecretString, ConfigError>,
}

impl HttpStatusPage {
    /// `None` when `[statuspage] page_id` is unset.
    pub fn from_config(cfg: &StatusPageConfig) -> Option<HttpStatusPage> {
        let page = cfg.page_id.as_deref()?;
        let key = resolve_secret(
            "statuspage.api_key",
            if cfg.api_key_file.is_some() {
                None
            } else {
                cfg.api_key_env.as_deref()
            },
            cfg.api_key_file.as_deref(),
        );
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("runbookd/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Some(HttpStatusPage {
            http,
            page_url: format!("{}/pages/{page}", cfg.api_base.trim_end_matches('/')),
            component_id: cfg.component_id.clone(),
            key,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, StatusPageError> {
        let key = self
            .key
            .as_ref()
            .map_err(|e| StatusPageError::NoKey(e.to_string()))?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.page_url))
            .header("authorization", format!("OAuth {}", key.expose_secret()))
            .header("accept", "application/json");
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer = req.send().await.map_err(|e| {
            // reqwest's text names the URL (no secret in it) and the cause.
            StatusPageError::Unavailable(e.without_url().to_string())
        })?;
        let status = answer.status().as_u16();
        let text = answer
            .text()
            .await
            .map_err(|e| StatusPageError::Unavailable(e.without_url().to_string()))?;
        match status {
            200..=299 => serde_json::from_str(&text)
                .map_err(|e| StatusPageError::Malformed(format!("{path}: {e}"))),
            401 | 403 => Err(StatusPageError::Unauthorized(status)),
            429 | 500..=599 => Err(StatusPageError::Unavailable(format!(
                "{path} answered {status}"
            ))),
            _ => Err(StatusPageError::Refused {
                status,
                message: error_text(&text),
            }),
        }
    }

    /// The request body of a create or an update.
    fn incident_body(&self, change: &PageChange) -> Value {
        let mut incident = json!({ "status": change.status, "body": change.body });
        if let Some(name) = &change.name {
            incident["name"] = json!(name);
        }
        if let Some(id) = &change.incident {
            // Statuspage wants objects as metadata's top-level values.
            incident["metadata"] = json!({ "runbookd": { "incident": id } });
        }
        if let (Some(component), Some(status)) = (&self.component_id, &change.component_status) {
            incident["component_ids"] = json!([component]);
            incident["components"] = json!({ component: status });
        }
        json!({ "incident": incident })
    }
}

/// The `error` field of an error answer, else its start.
fn error_text(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let text = parsed
        .as_ref()
        .and_then(|v| v["error"].as_str().or(v["message"].as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    crate::text::truncate(&text, 200).into_owned()
}

/// A page incident from Statuspage's JSON.
pub fn parse_incident(v: &Value) -> Result<PageIncident, StatusPageError> {
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| StatusPageError::Malformed(format!("incident without `{k}`")))
    };
    // incident_updates come newest first.
    let last_update = v["incident_updates"]
        .as_array()
        .and_then(|u| u.first())
        .and_then(|u| u["body"].as_str())
        .map(str::to_string);
    Ok(PageIncident {
        id: field("id")?,
        name: field("name")?,
        status: field("status")?,
        incident: v["metadata"]["runbookd"]["incident"]
            .as_str()
            .map(str::to_string),
        last_update,
        shortlink: v["shortlink"].as_str().map(str::to_string),
    })
}

#[async_trait::async_trait]
impl StatusPageBackend for HttpStatusPage {
    async fn unresolved(&self) -> Result<Vec<PageIncident>, StatusPageError> {
        let v = self
            .call(reqwest::Method::GET, "/incidents/unresolved", None)
            .await?;
        let list = v
            .as_array()
            .ok_or_else(|| StatusPageError::Malformed("unresolved incidents: not a list".into()))?;
        list.iter().map(parse_incident).collect()
    }

    async fn create(&self, change: &PageChange) -> Result<PageIncident, StatusPageError> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/incidents",
                Some(self.incident_body(change)),
            )
            .await?;
        parse_incident(&v)
    }

    async fn update(&self, id: &str, change: &PageChange) -> Result<PageIncident, StatusPageError> {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(StatusPageError::Malformed(format!(
                "`{id}` is not an incident id"
            )));
        }
        let v = self
            .call(
                reqwest::Method::PATCH,
                &format!("/incidents/{id}"),
                Some(self.incident_body(change)),
            )
            .await?;
        parse_incident(&v)
    }

    async fn component(&self) -> Result<Option<String>, StatusPageError> {
        let Some(c) = &self.component_id else {
            return Ok(None);
        };
        let v = self
            .call(reqwest::Method::GET, &format!("/components/{c}"), None)
            .await?;
        Ok(v["status"].as_str().map(str::to_string))
    }
}
