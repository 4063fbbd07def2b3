//! Configuration: one TOML file, every key defaulted, every key overridable from the
//! environment as `RUNBOOKD_<SECTION>__<KEY>`, secrets only by indirection (`*_env`, `*_file`).
//!
//! Loading goes file → `toml::Table` → environment overrides → typed structs, so an unknown
//! key or a bad value is rejected with its full dotted path whichever of the two it came from.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

mod alerts;
mod approvals;
mod backends;
mod celery;
mod channels;
mod dashboard;
mod load;
mod logs;
mod playbooks;
mod server;
mod statuspage;
#[cfg(test)]
mod tests;

pub use alerts::AlertsConfig;
pub use approvals::ApprovalsConfig;
pub use backends::*;
pub use celery::CeleryConfig;
pub use channels::{ChannelConfig, ChannelKind};
pub use dashboard::{DashboardConfig, SecureCookies};
pub use load::resolve_secret;
pub use logs::LogsConfig;
pub use playbooks::PlaybooksConfig;
pub use server::{Role, ServerConfig, TokenConfig};
pub use statuspage::StatusPageConfig;

/// Everything that can go wrong while reading configuration; each message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is in the message only (not a `source`), so a report that prints the
    /// chain does not say it twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// The whole daemon configuration. `Default` is the embedded default a new user gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP API: listen address, bearer tokens, body limit, shutdown grace.
    pub server: ServerConfig,
    /// Where runs and audit entries are kept.
    pub state: StateConfig,
    /// Playbook directory, run limits and the sandbox.
    pub playbooks: PlaybooksConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// The Redis the payments app's circuit breaker lives in.
    pub redis: RedisConfig,
    /// Circuit breakers by name; `stripe` exists by default.
    pub breakers: BTreeMap<String, BreakerConfig>,
    /// The payments app's own database.
    pub payments: PaymentsConfig,
    /// Stripe: API, status page, the app's webhook endpoint.
    pub stripe: StripeConfig,
    /// The app's Celery broker: its queues and workers (`celery::*`), handing it work
    /// (`celery_enqueue`).
    pub celery: CeleryConfig,
    /// How Alertmanager notifications become incidents and runs.
    pub alerts: AlertsConfig,
    /// Cron triggers.
    pub cron: CronConfig,
    /// Notification channels by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Delivery of notifications: retries and giving up.
    pub notify: NotifyConfig,
    /// The escalation table.
    pub escalation: EscalationConfig,
    /// The runbook's "Key Metrics to Monitor", measured by runbookd and served at /metrics.
    pub key_metrics: KeyMetricsConfig,
    pub webhooks: WebhooksConfig,
    /// The status page users read.
    pub statuspage: StatusPageConfig,
    /// The app's worker logs (Loki).
    pub logs: LogsConfig,
    /// Humans approving what a playbook asks them to.
    pub approvals: ApprovalsConfig,
    /// The browser pages at `/`.
    pub dashboard: DashboardConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            state: StateConfig::default(),
            playbooks: PlaybooksConfig::default(),
            log: LogConfig::default(),
            redis: RedisConfig::default(),
            breakers: default_breakers(),
            payments: PaymentsConfig::default(),
            stripe: StripeConfig::default(),
            celery: CeleryConfig::default(),
            alerts: AlertsConfig::default(),
            cron: CronConfig::default(),
            channels: BTreeMap::new(),
            notify: NotifyConfig::default(),
            escalation: EscalationConfig::default(),
            key_metrics: KeyMetricsConfig::default(),
            webhooks: WebhooksConfig::default(),
            statuspage: StatusPageConfig::default(),
            logs: LogsConfig::default(),
            approvals: ApprovalsConfig::default(),
            dashboard: DashboardConfig::default(),
        }
    }
}

/// `[escalation]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    /// The table (TOML). Missing: the runbook's table shipped with runbookd
    /// (`examples/escalation.toml`).
    pub file: PathBuf,
    /// How often incidents are evaluated (and the file re-read if it changed).
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        EscalationConfig {
            file: PathBuf::from("escalation.toml"),
            interval: Duration::from_secs(10),
        }
    }
}

/// `[notify]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Stop retrying a notification this long after it was queued (recorded as failed).
    #[serde(deserialize_with = "duration")]
    pub give_up_after: Duration,
    /// Longest wait between two attempts.
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// Time limit of one delivery attempt (a channel's own `timeout` wins).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// A channel whose deliveries failed this many times in a row is marked degraded
    /// (metric, `/readyz` detail, dashboard) and waits between attempts, alone.
    pub degraded_after: u32,
    /// At shutdown, how long deliveries may still go out (each channel on its own); a
    /// delivery still unanswered then is cut off and its notification stays in the outbox
    /// for another replica or the next start.
    #[serde(deserialize_with = "duration")]
    pub shutdown_drain: Duration,
    /// How often each channel looks at the outbox without being woken: for notifications
    /// other replicas queued and could not send. Enqueues here and due retries wake
    /// delivery at once.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            give_up_after: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            degraded_after: 3,
            shutdown_drain: Duration::from_secs(3),
            poll_interval: Duration::from_secs(10),
        }
    }
}

/// `[cron]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CronConfig {
    /// Zone schedules are read in: `UTC`, a fixed offset like `+02:00`, or an IANA zone
    /// like `Europe/Berlin` (daylight saving time followed).
    pub timezone: String,
    /// Missed ticks to fire after downtime (the most recent ones); 0 skips them all.
    pub max_catch_up: u32,
}

impl Default for CronConfig {
    fn default() -> Self {
        CronConfig {
            timezone: "UTC".into(),
            max_catch_up: 1,
        }
    }
}

impl CronConfig {
    /// The configured zone.
    pub fn zone(&self) -> Option<crate::clock::zone::Zone> {
        crate::clock::zone::Zone::parse(&self.timezone)
    }
}

/// `[state]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `sqlite://FILE` (created if missing) or `postgres://...`.
    pub database_url: String,
    /// The URL from an environment variable instead (it holds a password).
    pub database_url_env: Option<String>,
    /// The URL from a file instead.
    pub database_url_file: Option<PathBuf>,
    /// Connections to keep open (PostgreSQL; SQLite uses one writer and a few readers).
    pub max_connections: u32,
    /// SQLite only: `full` (default) syncs every commit to disk, so what runbookd answered
    /// 200 for survives power loss; `normal` survives a crash of runbookd but may lose the
    /// last commits when the machine loses power.
    pub sqlite_synchronous: SqliteSynchronous,
    /// Finished runs (and decided approvals) are kept this long; `0s`: forever.
    #[serde(deserialize_with = "duration")]
    pub retain_runs: Duration,
    /// Resolved incidents with their timelines and escalation fires; `0s`: forever.
    #[serde(deserialize_with = "duration")]
    pub retain_incidents: Duration,
    /// Received alerts (the alert log; incidents keep their own timeline); `0s`: forever.
    #[serde(deserialize_with = "duration")]
    pub retain_alerts: Duration,
    /// Notifications sent or given up; `0s`: forever.
    #[serde(deserialize_with = "duration")]
    pub retain_notifications: Duration,
    /// The audit trail (may be kept longer than the runs it names); `0s`: forever.
    #[serde(deserialize_with = "duration")]
    pub retain_audit: Duration,
    /// How often retention looks for rows past their time.
    #[serde(deserialize_with = "duration")]
    pub prune_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            database_url: "sqlite://runbookd.db".into(),
            database_url_env: None,
            database_url_file: None,
            max_connections: 8,
            sqlite_synchronous: SqliteSynchronous::Full,
            retain_runs: Duration::from_secs(30 * 86_400),
            retain_incidents: Duration::from_secs(90 * 86_400),
            retain_alerts: Duration::from_secs(30 * 86_400),
            retain_notifications: Duration::from_secs(30 * 86_400),
            retain_audit: Duration::from_secs(365 * 86_400),
            prune_interval: Duration::from_secs(60),
        }
    }
}

/// How hard SQLite pushes each commit to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// Every commit fsynced: durable across power loss.
    #[default]
    Full,
    /// WAL synced at checkpoints only: durable across process crashes.
    Normal,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A tracing filter: `info`, `runbookd=debug,warn`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Accepts `"5m"`, `"1h 30m"`, `"250ms"` (humantime) or a bare number of seconds.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Seconds(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{t}` is not a duration ({e}); try \"30s\" or \"5m\""
            ))
        }),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Seconds(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(0) => Ok(None),
        Raw::Seconds(s) => Ok(Some(Duration::from_secs(s))),
        Raw::Text(t) if t == "none" || t.is_empty() => Ok(None),
        Raw::Text(t) => humantime::parse_duration(&t).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{t}` is not a duration ({e}); try \"30s\" or \"none\""
            ))
        }),
    }
}

/// A name of a playbook (its file stem), breaker or channel: lowercase letters, digits, `_`
/// and `-`, at most 64 characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A configuration key with a bad value.
pub(crate) fn bad(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        message: message.into(),
    }
}

impl StateConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.prune_interval < Duration::from_millis(100) {
            return Err(bad("state.prune_interval", "must be at least 100ms"));
        }
        let url = &self.database_url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(bad(
                "state.database_url",
                "must start with sqlite:// or postgres://",
            ));
        }
        Ok(())
    }
}

impl NotifyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(bad("notify.timeout", "must be longer than zero"));
        }
        if self.degraded_after == 0 {
            return Err(bad("notify.degraded_after", "must be at least 1"));
        }
        if self.poll_interval < Duration::from_millis(100) {
            return Err(bad("notify.poll_interval", "must be at least 100ms"));
        }
        Ok(())
    }
}

impl CronConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.zone().is_none() {
            return Err(bad(
                "cron.timezone",
                "must be \"UTC\", a fixed offset like \"+02:00\" or an IANA zone like \"Europe/Berlin\"",
            ));
        }
        Ok(())
    }
}
