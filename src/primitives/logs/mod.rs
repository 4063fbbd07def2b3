//! `logs::*`: the app's worker logs (runbook Step 4: `journalctl -u celery-worker | grep -iE
//! "stripe|payment|circuit"`), behind [`LogsBackend`]: Grafana Loki in production ([`loki`]),
//! the simulated world's log lines in simulations. What scripts get is a count and the most
//! recent lines, each redacted of anything that looks like a key.

pub mod loki;

use std::{sync::Arc, time::Duration};

use rhai::{Dynamic, EvalAltResult, Module, INT};
use serde::Serialize;

use super::{block_on, script_error, with_run};

/// Why the logs could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogsError {
    #[error("worker logs are not configured: set [logs] loki_url")]
    NotConfigured,
    #[error("Loki is unavailable: {0}")]
    Unavailable(String),
    #[error("Loki refused the query ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("Loki's answer is not understood: {0}")]
    Malformed(String),
}

/// One log line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogEntry {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub line: String,
}

/// Where the worker logs live.
#[async_trait::async_trait]
pub trait LogsBackend: Send + Sync {
    /// How many lines `query` (LogQL) matched in the last `window`.
    async fn count(&self, query: &str, window: Duration) -> Result<i64, LogsError>;
    /// The `limit` most recent lines `query` matched in the last `window`, newest first.
    async fn recent(
        &self,
        query: &str,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogsError>;
}

/// The logs as primitives use them; `None` inside: not configured.
#[derive(Clone, Default)]
pub struct Logs {
    backend: Option<Arc<dyn LogsBackend>>,
}

impl Logs {
    /// Loki when `[logs] loki_url` is set, its windows ending at `clock`'s now.
    pub fn new(cfg: &crate::config::LogsConfig, clock: crate::clock::Clock) -> Logs {
        Logs {
            backend: loki::Loki::from_config(cfg, clock)
                .map(|l| Arc::new(l) as Arc<dyn LogsBackend>),
        }
    }

    pub fn with_backend(backend: Arc<dyn LogsBackend>) -> Logs {
        Logs {
            backend: Some(backend),
        }
    }

    pub fn configured(&self) -> bool {
        self.backend.is_some()
    }

    pub fn backend(&self) -> Result<&dyn LogsBackend, LogsError> {
        self.backend.as_deref().ok_or(LogsError::NotConfigured)
    }
}

pub use crate::redact::secrets_in as redact;

const LIMIT: Duration = Duration::from_secs(20);

/// `logs::errors(query, window_s)` → `#{ count, recent, query }`.
fn errors(query: &str, window: INT) -> Result<Dynamic, Box<EvalAltResult>> {
    if query.trim().is_empty() {
        return Err(script_error("logs::errors: the query is empty"));
    }
    let logs = with_run("logs::errors", |ctx| Ok(ctx.services.logs.clone()))?;
    let window = Duration::from_secs(window.max(1) as u64);
    let q = query.to_string();
    let (count, recent) = block_on("logs::errors", LIMIT, async move {
        let b = logs.backend()?;
        Ok::<_, LogsError>((b.count(&q, window).await?, b.recent(&q, window, 3).await?))
    })?;
    let recent: Vec<serde_json::Value> = recent
        .iter()
        .map(|e| serde_json::json!({ "at": crate::store::ms_to_rfc3339(e.at_ms), "line": redact(&e.line) }))
        .collect();
    rhai::serde::to_dynamic(serde_json::json!({ "count": count, "recent": recent, "query": query }))
}

pub fn register(engine: &mut rhai::Engine) {
    let mut m = Module::new();
    m.set_native_fn("configured", || {
        crate::primitives::recorder::read("logs::configured", vec![], || {
            with_run("logs::configured", |ctx| Ok(ctx.services.logs.configured()))
        })
    });
    m.set_native_fn("errors", |query: &str, window: INT| {
        crate::primitives::recorder::read(
            "logs::errors",
            vec![serde_json::json!(query), serde_json::json!(window)],
            || errors(query, window),
        )
    });
    engine.register_static_module("logs", m.into());
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn keys_and_secrets_are_redacted_words_are_not() {
        assert_eq!(
            redact("stripe.error.AuthenticationError: Invalid API Key provided: sk_live_abc123"),
            "stripe.error.AuthenticationError: Invalid API Key provided: [redacted]"
        );
        assert_eq!(redact("key=(sk_test_xyz)"), "key=([redacted]");
        assert_eq!(
            redact("Authorization: Bearer abc.def"),
            "Authorization: Bearer [redacted]"
        );
        assert_eq!(
            redact("password=hunter2 user=bob"),
            "password=[redacted] user=bob"
        );
        assert_eq!(
            redact("circuit breaker open for payment 42"),
            "circuit breaker open for payment 42"
        );
        // Names are found whatever their case; card numbers are masked with or without
        // anything else to redact in the line.
        assert_eq!(redact("DB_PASSWORD=hunter2"), "DB_PASSWORD=[redacted]");
        assert_eq!(redact("BEARER abc"), "BEARER [redacted]");
        assert_eq!(
            redact("declined 4242 4242 4242 4242"),
            "declined 4242 42** **** 4242"
        );
        assert_eq!(
            redact("token=t1 card 4242424242424242"),
            "token=[redacted] card 424242******4242"
        );
    }
}
