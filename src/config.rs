//! Configuration: one TOML file, every key defaulted, every key overridable from the
//! environment as `RUNBOOKD_<SECTION>__<KEY>`, secrets only by indirection (`*_env`, `*_file`).
//!
//! Loading goes file → `toml::Table` → environment overrides → typed structs, so an unknown
//! key or a bad value is rejected with its full dotted path whichever of the two it came from.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

mod alerts;
mod approvals;
mod backends;
mod celery;
mod channels;
mod dashboard;
mod load;
mod logs;
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
pub use statuspage::StatusPageConfig;

/// Everything that can go wrong while reading configuration; each message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
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
    /// Time limit of one delivery attempt.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            give_up_after: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
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

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on. Without tokens only loopback addresses are allowed.
    pub listen: SocketAddr,
    /// Bearer tokens, each with a role. Empty means: no auth, loopback only.
    pub tokens: Vec<TokenConfig>,
    /// Largest request body accepted; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long running runs may take to finish after SIGTERM before they are cancelled.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// This replica's name, shown on the runs it executes; empty: `HOSTNAME-PID`. Replicas
    /// sharing a store are told apart by a lease of their own, whatever their names.
    pub replica_id: String,
    /// How long a replica's lease on its runs lasts without renewal (renewed every third
    /// of it). A replica that stops renewing — crashed, frozen, cut off — loses its runs to
    /// the others this long after its last renewal.
    #[serde(deserialize_with = "duration")]
    pub lease_ttl: Duration,
    /// A client must have sent its request headers this long after it connected (or after
    /// its previous request): a slow or silent client cannot hold a connection.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A request body must have arrived within this.
    #[serde(deserialize_with = "duration")]
    pub request_body_timeout: Duration,
    /// Longest time to answer a request (`?wait=true` runs wait for their run instead,
    /// bounded by the playbook timeout).
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8765)),
            tokens: Vec::new(),
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            replica_id: String::new(),
            lease_ttl: Duration::from_secs(15),
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

impl ServerConfig {
    /// `replica_id`, or `HOSTNAME-PID` when it is not set.
    pub fn replica_name(&self) -> String {
        if !self.replica_id.is_empty() {
            return self.replica_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "runbookd".into());
        format!("{host}-{}", std::process::id())
    }
}

/// One `[[server.tokens]]` entry. The token itself never appears in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token; recorded as the actor of what they do.
    pub name: String,
    /// Environment variable holding the token.
    pub token_env: Option<String>,
    /// File holding the token (trailing newline ignored).
    pub token_file: Option<PathBuf>,
    /// What the token may do.
    pub role: Role,
}

/// API roles. `operator` can also read; `ingest` can only post alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Alertmanager: `POST /api/v1/alerts` only.
    Ingest,
    /// Humans on call: trigger runs, ack, resolve, reset — and read.
    Operator,
    /// Dashboards and auditors: reads only.
    Viewer,
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

/// `[playbooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaybooksConfig {
    /// Directory of `NAME.rhai` playbooks; subdirectories hold modules they import.
    pub dir: PathBuf,
    /// Wall-clock deadline of one run; past it the run ends `timed_out`.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Runs executing at once; the rest wait in the queue.
    pub max_concurrent_runs: usize,
    /// Runs that may wait for a free slot; beyond that new triggers get 503.
    pub queue_capacity: usize,
    /// How often a run whose replica died mid-run (or that outlived the shutdown grace
    /// period) is started again; after that it ends `failed`, reason `interrupted`.
    pub retry_interrupted: u32,
    /// Quiet time after a file change before the directory is reloaded.
    #[serde(deserialize_with = "duration")]
    pub reload_debounce: Duration,
    /// Script operations one run may perform (0 = unlimited).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_depth: usize,
    /// Memory one script may hold, in bytes (0 = no limit): strings, arrays, maps, BLOBs and
    /// everything else it allocates, counted by the allocator (see `engine::memory`). A run
    /// past it ends `failed`, reason `data_too_large`.
    pub max_run_memory: usize,
    /// No longer read (Rhai's per-value limits made growing an array quadratic): kept so that
    /// a configuration setting them still loads; startup warns and names `max_run_memory`.
    pub max_string_size: Option<usize>,
    /// No longer read; see `max_string_size`.
    pub max_array_size: Option<usize>,
    /// No longer read; see `max_string_size`.
    pub max_map_size: Option<usize>,
    /// Log lines kept per run; later lines are counted, not stored.
    pub max_log_lines: usize,
    /// Longest log line kept (bytes); longer ones are cut with a marker saying how much.
    pub max_log_line_bytes: usize,
    /// Log bytes kept per run; later lines are counted, not stored.
    pub max_log_bytes: usize,
    /// Actions recorded per run (each action is still audited); later ones are counted.
    pub max_actions: usize,
    /// Largest result stored (bytes of JSON); a larger one is stored as a marker with a
    /// preview.
    pub max_result_bytes: usize,
    /// Refuse a hot reload whose playbook tests (`DIR/tests/*.rhai`) fail: the last good
    /// versions keep serving and the refused files show why.
    pub require_tests: bool,
    /// Values playbooks read with `setting(name, default)`: tunables such as the remediation
    /// budget or how long to watch a reset breaker, set per deployment without editing
    /// the playbook.
    pub settings: BTreeMap<String, toml::Value>,
}

impl PlaybooksConfig {
    /// What this section sets that is no longer read, said the way startup logs it.
    pub fn ignored_keys(&self) -> Vec<String> {
        [
            ("max_string_size", self.max_string_size),
            ("max_array_size", self.max_array_size),
            ("max_map_size", self.max_map_size),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| {
            format!(
                "[playbooks] {k} is no longer read: a script's memory is bounded as a whole by \
                 max_run_memory ({} bytes)",
                self.max_run_memory
            )
        })
        .collect()
    }
}

impl Default for PlaybooksConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("playbooks"),
            timeout: Duration::from_secs(300),
            max_concurrent_runs: 16,
            queue_capacity: 1024,
            retry_interrupted: 1,
            reload_debounce: Duration::from_millis(100),
            max_operations: 1_000_000_000,
            max_call_depth: 64,
            max_run_memory: 64 * 1024 * 1024,
            max_string_size: None,
            max_array_size: None,
            max_map_size: None,
            max_log_lines: 1000,
            max_log_line_bytes: 8 * 1024,
            max_log_bytes: 1024 * 1024,
            max_actions: 1000,
            max_result_bytes: 1024 * 1024,
            require_tests: false,
            settings: BTreeMap::new(),
        }
    }
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

impl PlaybooksConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_run_memory != 0 && self.max_run_memory < 1024 * 1024 {
            return Err(bad(
                "playbooks.max_run_memory",
                "must be at least 1048576 (1 MiB), or 0 for no limit: the engine itself needs some",
            ));
        }
        if self.max_concurrent_runs == 0 {
            return Err(bad("playbooks.max_concurrent_runs", "must be at least 1"));
        }
        if self.queue_capacity == 0 {
            return Err(bad("playbooks.queue_capacity", "must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(bad("playbooks.timeout", "must be longer than zero"));
        }
        Ok(())
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(bad("server.max_connections", "must be at least 1"));
        }
        for (key, d) in [
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.request_body_timeout", self.request_body_timeout),
            ("server.request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(bad(key, "must be longer than zero"));
            }
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err(bad(
                "server.lease_ttl",
                "must be at least 300ms (it is renewed every third of it)",
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token_env.is_some() == t.token_file.is_some() {
                return Err(bad(
                    format!("server.tokens[{i}]"),
                    format!(
                        "token `{}` needs exactly one of token_env or token_file",
                        t.name
                    ),
                ));
            }
        }
        Ok(())
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
