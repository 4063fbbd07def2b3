//! Grafana Loki's HTTP API: a LogQL metric query for the count
//! (`sum(count_over_time((QUERY)[Ns]))` at `/loki/api/v1/query`) and the newest lines
//! (`/loki/api/v1/query_range`, `direction=backward`).

use std::time::Duration;

use serde_json::Value;

use super::{LogEntry, LogsBackend, LogsError};
use crate::{clock::Clock, config::LogsConfig};

pub struct Loki {
    http: reqwest::Client,
    base: String,
    tenant: Option<String>,
    /// Where "the last `window`" of a query ends.
    clock: Clock,
}

impl Loki {
    /// `None` when `[logs] loki_url` is unset.
    pub fn from_config(cfg: &LogsConfig, clock: Clock) -> Option<Loki> {
        let base = cfg.loki_url.as_deref()?.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("runbookd/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Some(Loki {
            http,
            base,
            tenant: cfg.tenant.clone(),
            clock,
        })
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, LogsError> {
        let mut req = self.http.get(format!("{}{path}", self.base)).query(params);
        if let Some(t) = &self.tenant {
            req = req.header("x-scope-orgid", t);
        }
        let answer = req
            .send()
            .await
            .map_err(|e| LogsError::Unavailable(e.without_url().to_string()))?;
        let status = answer.status().as_u16();
        let text = answer
            .text()
            .await
            .map_err(|e| LogsError::Unavailable(e.without_url().to_string()))?;
        if !(200..300).contains(&status) {
            let message = crate::text::truncate(text.trim(), 200).into_owned();
            return Err(if status >= 500 || status == 429 {
                LogsError::Unavailable(format!("{path} answered {status}: {message}"))
            } else {
                LogsError::Refused { status, message }
            });
        }
        let v: Value =
            serde_json::from_str(&text).map_err(|e| LogsError::Malformed(e.to_string()))?;
        if v["status"] != "success" {
            return Err(LogsError::Malformed(format!("status {}", v["status"])));
        }
        Ok(v["data"].clone())
    }
}

fn nanos(ms: i64) -> String {
    format!("{}000000", ms)
}

#[async_trait::async_trait]
impl LogsBackend for Loki {
    async fn count(&self, query: &str, window: Duration) -> Result<i64, LogsError> {
        let metric = format!(
            "sum(count_over_time(({query})[{}s]))",
            window.as_secs().max(1)
        );
        let data = self.get("/loki/api/v1/query", &[("query", metric)]).await?;
        // A vector with one sample, or empty when nothing matched.
        let Some(sample) = data["result"].as_array().and_then(|r| r.first()) else {
            return Ok(0);
        };
        sample["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as i64)
            .ok_or_else(|| LogsError::Malformed("count: no value".into()))
    }

    async fn recent(
        &self,
        query: &str,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogsError> {
        let end = self.clock.now_ms();
        let start = end - window.as_millis() as i64;
        let data = self
            .get(
                "/loki/api/v1/query_range",
                &[
                    ("query", query.to_string()),
                    ("start", nanos(start)),
                    ("end", nanos(end)),
                    ("limit", limit.to_string()),
                    ("direction", "backward".into()),
                ],
            )
            .await?;
        let mut lines = Vec::new();
        for stream in data["result"].as_array().into_iter().flatten() {
            for v in stream["values"].as_array().into_iter().flatten() {
                let ns: i128 = v[0]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| LogsError::Malformed("a line without its timestamp".into()))?;
                lines.push(LogEntry {
                    at_ms: (ns / 1_000_000) as i64,
                    line: v[1].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        // Streams come one after another: newest first across all of them.
        lines.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        lines.truncate(limit);
        Ok(lines)
    }
}
