//! Configuration: one TOML file, every key defaulted, every key overridable from the
//! environment as `RUNBOOKD_<SECTION>__<KEY>`, secrets only by indirection (`*_env`, `*_file`).
//!
//! Loading goes file → `toml::Table` → environment overrides → typed structs, so an unknown
//! key or a bad value is rejected with its full dotted path whichever of the two it came from.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

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
    /// The app's Celery broker, for handing it work (`celery_enqueue`).
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
}

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// URLs `webhooks::probe(url)` may POST to besides `[stripe] webhook_url`: a playbook
    /// must not be able to send requests anywhere it likes.
    pub probe_allow: Vec<String>,
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
        }
    }
}

/// `[key_metrics]`: what runbookd measures for Prometheus (`examples/prometheus/rules.yml`
/// alerts on it). Each metric is measured only when its backend is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyMetricsConfig {
    /// How often to measure; `0s` turns the exporter off.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Window of the payment failure rate (the runbook: "> 10 % in 5 min").
    #[serde(deserialize_with = "duration")]
    pub failure_window: Duration,
    /// Window over which Stripe's events are compared with the app's `webhook_received` rows.
    #[serde(deserialize_with = "duration")]
    pub webhook_window: Duration,
    /// Events younger than this are not expected to have arrived yet.
    #[serde(deserialize_with = "duration")]
    pub webhook_grace: Duration,
    /// The event types the app's webhook endpoint handles (what Stripe sends it).
    pub webhook_event_types: Vec<String>,
    /// Probe Stripe (`GET /v1/account`) every interval for the API latency metric.
    pub stripe_probe: bool,
}

impl Default for KeyMetricsConfig {
    fn default() -> Self {
        KeyMetricsConfig {
            interval: Duration::from_secs(15),
            failure_window: Duration::from_secs(300),
            webhook_window: Duration::from_secs(900),
            webhook_grace: Duration::from_secs(60),
            webhook_event_types: [
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                "charge.refunded",
                "charge.dispute.created",
            ]
            .map(String::from)
            .to_vec(),
            stripe_probe: true,
        }
    }
}

fn default_breakers() -> BTreeMap<String, BreakerConfig> {
    BTreeMap::from([("stripe".to_string(), BreakerConfig::default())])
}

/// `[stripe]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// Base URL of the Stripe API (tests point it at a fake).
    pub api_base: String,
    /// Environment variable holding the secret key (the app's setting is `STRIPE_API_KEY`).
    pub api_key_env: Option<String>,
    /// File holding the secret key; takes precedence over `api_key_env`.
    pub api_key_file: Option<PathBuf>,
    /// Stripe's status page JSON.
    pub status_url: String,
    /// The app's webhook endpoint, probed by `webhooks::probe()`.
    pub webhook_url: Option<String>,
    /// Environment variable holding the webhook signing secret (`whsec_...`).
    pub webhook_secret_env: Option<String>,
    /// File holding the webhook signing secret; takes precedence.
    pub webhook_secret_file: Option<PathBuf>,
    /// `live` or `test`: what the key should be.
    pub expected_mode: String,
    /// Requests per second runbookd sends to Stripe (live accounts allow ~100, test 25).
    pub max_requests_per_second: u32,
    /// Time limit of one attempt.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Attempts per request when Stripe says retrying is safe (network errors, 429, 5xx).
    pub max_attempts: u32,
}

impl Default for StripeConfig {
    fn default() -> Self {
        StripeConfig {
            api_base: "https://api.stripe.com".into(),
            api_key_env: Some("STRIPE_API_KEY".into()),
            api_key_file: None,
            status_url: "https://status.stripe.com/api/v2/status.json".into(),
            webhook_url: None,
            webhook_secret_env: Some("STRIPE_WEBHOOK_SECRET".into()),
            webhook_secret_file: None,
            expected_mode: "live".into(),
            max_requests_per_second: 25,
            timeout: Duration::from_secs(10),
            max_attempts: 3,
        }
    }
}

/// `[alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Labels that identify "the same incident" besides `alertname`. Empty (default): the
    /// alert's fingerprint (all its labels).
    pub incident_key_labels: Vec<String>,
    /// Quiet time between two runs of one playbook for one incident, unless the trigger
    /// sets its own `cooldown`.
    #[serde(deserialize_with = "duration")]
    pub cooldown: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            incident_key_labels: Vec::new(),
            cooldown: Duration::from_secs(300),
        }
    }
}

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
    pub fn zone(&self) -> Option<crate::triggers::cron::Zone> {
        crate::triggers::cron::Zone::parse(&self.timezone)
    }
}

/// `[celery]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CeleryConfig {
    /// The app's `CELERY_BROKER_URL` (Redis). Unset: `celery_enqueue` is "not configured".
    pub broker_url: Option<String>,
    /// The URL from an environment variable instead (it may hold a password).
    pub broker_url_env: Option<String>,
    /// The URL from a file instead.
    pub broker_url_file: Option<PathBuf>,
    /// Queue (Redis list) the app's workers consume.
    pub queue: String,
    /// The only task names `celery_enqueue` may send: a playbook must not be able to start
    /// any task the app's workers would run.
    pub tasks: Vec<String>,
}

impl Default for CeleryConfig {
    fn default() -> Self {
        CeleryConfig {
            broker_url: None,
            broker_url_env: None,
            broker_url_file: None,
            queue: "celery".into(),
            tasks: vec!["tasks.payment_tasks.reconcile_payments".into()],
        }
    }
}

/// `[payments]`: the app's PostgreSQL tables (DOMAIN.md). Names are configurable for
/// deployments that renamed them; they are validated as SQL identifiers at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// `postgres://...` of the app's database. Unset: payments primitives are "not configured".
    pub database_url: Option<String>,
    /// The URL from an environment variable instead (it holds a password).
    pub database_url_env: Option<String>,
    /// The URL from a file instead.
    pub database_url_file: Option<PathBuf>,
    /// The payments table (`schema.table` allowed).
    pub table: String,
    /// The app's audit log table, where webhooks leave `webhook_received` rows.
    pub audit_table: String,
    /// Connections runbookd may hold on the app's database.
    pub max_connections: u32,
    /// Column names of the payments table.
    pub columns: PaymentColumns,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            database_url: None,
            database_url_env: None,
            database_url_file: None,
            table: "payments_payment".into(),
            audit_table: "audit_auditlog".into(),
            max_connections: 4,
            columns: PaymentColumns::default(),
        }
    }
}

/// `[payments.columns]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentColumns {
    pub id: String,
    /// SQL type of the id column, so lookups by id can use its index.
    pub id_type: String,
    pub account_id: String,
    pub amount: String,
    pub status: String,
    pub processor_ref: String,
    pub idempotency_key: String,
    pub metadata: String,
    pub created_at: String,
}

impl Default for PaymentColumns {
    fn default() -> Self {
        PaymentColumns {
            id: "id".into(),
            id_type: "uuid".into(),
            account_id: "account_id".into(),
            amount: "amount".into(),
            status: "status".into(),
            processor_ref: "processor_ref".into(),
            idempotency_key: "idempotency_key".into(),
            metadata: "metadata".into(),
            created_at: "created_at".into(),
        }
    }
}

/// A plain SQL identifier, optionally schema-qualified: safe to splice into a query.
pub fn valid_sql_identifier(name: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && p.len() <= 63
    };
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| part(p))
}

/// `[redis]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:6379/0`. Unset: breakers (except in-memory ones) are "not configured".
    pub url: Option<String>,
    /// The URL from an environment variable instead (it may hold a password).
    pub url_env: Option<String>,
    /// The URL from a file instead.
    pub url_file: Option<PathBuf>,
}

/// How a breaker's state is laid out in Redis (see DOMAIN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakerPreset {
    /// What the Django app writes: `:1:circuit_breaker:NAME:*`, pickled values,
    /// half-open computed from `opened_at`.
    Django,
    /// What the runbook describes: `circuit_breaker:NAME:*`, plain strings.
    Plain,
    /// In this process only (simulations, playbook tests).
    Memory,
}

/// `[breakers.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Key layout and value encoding.
    pub preset: BreakerPreset,
    /// Redis for this breaker when not `[redis] url` (Django's cache is often db 0 while
    /// Celery uses db 1).
    pub redis_url: Option<String>,
    /// Django `KEY_PREFIX` (default empty) — keys are `PREFIX:VERSION:circuit_breaker:NAME:*`.
    pub key_prefix: String,
    /// Django cache `VERSION`.
    pub key_version: i64,
    /// Key stem without the field, default `circuit_breaker:NAME`.
    pub key_base: Option<String>,
    /// Failures within `window` that open the breaker.
    pub failure_threshold: u32,
    /// How long a failure counts (the failures key's TTL).
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Open this long ⇒ half-open.
    #[serde(deserialize_with = "duration")]
    pub recovery_timeout: Duration,
    /// TTL of `state`/`opened_at` when opening (django: 10 × recovery timeout); unset: none.
    #[serde(deserialize_with = "opt_duration")]
    pub open_ttl: Option<Duration>,
    /// TTL of `state` after a success (django: 600 s); unset: none.
    #[serde(deserialize_with = "opt_duration")]
    pub closed_ttl: Option<Duration>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            preset: BreakerPreset::Django,
            redis_url: None,
            key_prefix: String::new(),
            key_version: 1,
            key_base: None,
            failure_threshold: 5,
            window: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(30),
            open_ttl: Some(Duration::from_secs(300)),
            closed_ttl: Some(Duration::from_secs(600)),
        }
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
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            database_url: "sqlite://runbookd.db".into(),
            database_url_env: None,
            database_url_file: None,
            max_connections: 8,
            sqlite_synchronous: SqliteSynchronous::Full,
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
    /// Longest string a script may build, in bytes.
    pub max_string_size: usize,
    /// Largest array a script may build.
    pub max_array_size: usize,
    /// Largest object map a script may build.
    pub max_map_size: usize,
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
            max_string_size: 1024 * 1024,
            max_array_size: 100_000,
            max_map_size: 100_000,
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
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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

const ENV_PREFIX: &str = "RUNBOOKD_";

impl Config {
    /// Loads `path` (or nothing: all defaults), applies `RUNBOOKD_*` overrides from `env`,
    /// and validates. `env` is passed in so tests need not touch the process environment.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Syntax {
                            path: p.display().to_string(),
                            message: e.to_string(),
                        })?;
                (table, p.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        apply_env_overrides(&mut table, env)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                ConfigError::Key {
                    key: e.path().to_string(),
                    message: format!("{} (from {origin} or its environment overrides)", e.inner()),
                }
            })?;
        let mut config = config;
        config.resolve_url_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// URLs that hold passwords may be given by indirection (`*_env`, `*_file`), like every
    /// other secret; each is resolved into its URL key here.
    fn resolve_url_secrets(&mut self) -> Result<(), ConfigError> {
        fn resolve(
            key: &str,
            plain_set: bool,
            env: &Option<String>,
            file: &Option<PathBuf>,
        ) -> Result<Option<String>, ConfigError> {
            if env.is_none() && file.is_none() {
                return Ok(None);
            }
            if env.is_some() && file.is_some() || plain_set {
                return Err(ConfigError::Key {
                    key: key.into(),
                    message: format!("give one of {key}, {key}_env or {key}_file"),
                });
            }
            use secrecy::ExposeSecret;
            Ok(Some(
                resolve_secret(key, env.as_deref(), file.as_deref())?
                    .expose_secret()
                    .to_string(),
            ))
        }
        let s = &mut self.state;
        let default_state = s.database_url == StateConfig::default().database_url;
        if let Some(u) = resolve(
            "state.database_url",
            !default_state,
            &s.database_url_env,
            &s.database_url_file,
        )? {
            s.database_url = u;
        }
        let p = &mut self.payments;
        if let Some(u) = resolve(
            "payments.database_url",
            p.database_url.is_some(),
            &p.database_url_env,
            &p.database_url_file,
        )? {
            p.database_url = Some(u);
        }
        let r = &mut self.redis;
        if let Some(u) = resolve("redis.url", r.url.is_some(), &r.url_env, &r.url_file)? {
            r.url = Some(u);
        }
        let c = &mut self.celery;
        if let Some(u) = resolve(
            "celery.broker_url",
            c.broker_url.is_some(),
            &c.broker_url_env,
            &c.broker_url_file,
        )? {
            c.broker_url = Some(u);
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Key {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.playbooks.max_concurrent_runs == 0 {
            return bad("playbooks.max_concurrent_runs", "must be at least 1");
        }
        if self.playbooks.queue_capacity == 0 {
            return bad("playbooks.queue_capacity", "must be at least 1");
        }
        if self.playbooks.timeout.is_zero() {
            return bad("playbooks.timeout", "must be longer than zero");
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections", "must be at least 1");
        }
        for (key, d) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            (
                "server.request_body_timeout",
                self.server.request_body_timeout,
            ),
            ("server.request_timeout", self.server.request_timeout),
        ] {
            if d.is_zero() {
                return bad(key, "must be longer than zero");
            }
        }
        if self.server.lease_ttl < Duration::from_millis(300) {
            return bad(
                "server.lease_ttl",
                "must be at least 300ms (it is renewed every third of it)",
            );
        }
        let url = &self.state.database_url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return bad(
                "state.database_url",
                "must start with sqlite:// or postgres://",
            );
        }
        for (name, b) in &self.breakers {
            let key = |k: &str| format!("breakers.{name}.{k}");
            if !crate::engine::catalog::valid_name(name) {
                return bad(
                    &format!("breakers.{name}"),
                    "breaker names use a-z, 0-9, _ and -",
                );
            }
            if b.failure_threshold == 0 {
                return bad(&key("failure_threshold"), "must be at least 1");
            }
            if b.window.as_secs() == 0 || b.recovery_timeout.is_zero() {
                return bad(
                    &key("window"),
                    "window and recovery_timeout must be at least 1s",
                );
            }
        }
        if !matches!(self.stripe.expected_mode.as_str(), "live" | "test") {
            return bad("stripe.expected_mode", "must be \"live\" or \"test\"");
        }
        if self.stripe.max_attempts == 0 {
            return bad("stripe.max_attempts", "must be at least 1");
        }
        if self.cron.zone().is_none() {
            return bad(
                "cron.timezone",
                "must be \"UTC\", a fixed offset like \"+02:00\" or an IANA zone like \"Europe/Berlin\"",
            );
        }
        for (name, ch) in &self.channels {
            let key = format!("channels.{name}");
            if !crate::engine::catalog::valid_name(name) {
                return bad(&key, "channel names use a-z, 0-9, _ and -");
            }
            let has_url = ch.url.is_some() || ch.url_env.is_some() || ch.url_file.is_some();
            match ch.kind {
                ChannelKind::Slack | ChannelKind::Webhook if !has_url => {
                    return bad(&key, "needs url, url_env or url_file");
                }
                ChannelKind::Pagerduty
                    if ch.routing_key_env.is_none() && ch.routing_key_file.is_none() =>
                {
                    return bad(&key, "needs routing_key_env or routing_key_file");
                }
                ChannelKind::Email
                    if ch.smtp_host.is_none() || ch.from.is_none() || ch.to.is_empty() =>
                {
                    return bad(&key, "needs smtp_host, from and to");
                }
                ChannelKind::Email
                    if !matches!(
                        ch.smtp_tls.as_deref(),
                        None | Some("starttls" | "tls" | "none")
                    ) =>
                {
                    return bad(&format!("{key}.smtp_tls"), "must be starttls, tls or none");
                }
                _ => {}
            }
            if let Some(sev) = &ch.severity {
                if !matches!(sev.as_str(), "critical" | "error" | "warning" | "info") {
                    return bad(
                        &format!("{key}.severity"),
                        "must be critical, error, warning or info",
                    );
                }
            }
        }
        let p = &self.payments;
        let c = &p.columns;
        for (key, value) in [
            ("payments.table", &p.table),
            ("payments.audit_table", &p.audit_table),
            ("payments.columns.id", &c.id),
            ("payments.columns.id_type", &c.id_type),
            ("payments.columns.account_id", &c.account_id),
            ("payments.columns.amount", &c.amount),
            ("payments.columns.status", &c.status),
            ("payments.columns.processor_ref", &c.processor_ref),
            ("payments.columns.idempotency_key", &c.idempotency_key),
            ("payments.columns.metadata", &c.metadata),
            ("payments.columns.created_at", &c.created_at),
        ] {
            let column = key.starts_with("payments.columns");
            if !valid_sql_identifier(value) || (column && value.contains('.')) {
                return bad(key, &format!("`{value}` is not a plain SQL identifier"));
            }
        }
        for (i, t) in self.server.tokens.iter().enumerate() {
            if t.token_env.is_some() == t.token_file.is_some() {
                return bad(
                    &format!("server.tokens[{i}]"),
                    &format!(
                        "token `{}` needs exactly one of token_env or token_file",
                        t.name
                    ),
                );
            }
        }
        Ok(())
    }
}

/// `RUNBOOKD_SERVER__LISTEN=...` sets `server.listen`. Values are read as TOML when they
/// parse (numbers, booleans, arrays), otherwise taken as plain strings.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var,
                message: "empty key segment".into(),
            });
        }
        let value = parse_env_value(&raw);
        let mut cursor = &mut *table;
        for segment in &path[..path.len() - 1] {
            let entry = cursor
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("`{segment}` is not a section"),
                    })
                }
            };
        }
        if let Some(last) = path.last() {
            cursor.insert(last.clone(), value);
        }
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Reads a secret named by indirection: an environment variable or a file.
pub fn resolve_secret(
    what: &str,
    env_var: Option<&str>,
    file: Option<&Path>,
) -> Result<SecretString, ConfigError> {
    if let Some(var) = env_var {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
            _ => Err(ConfigError::Env {
                var: var.into(),
                message: format!("{what}: variable is not set or empty"),
            }),
        };
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Err(ConfigError::Key {
                key: what.into(),
                message: format!("{} is empty", path.display()),
            });
        }
        return Ok(SecretString::from(text.to_string()));
    }
    Err(ConfigError::Key {
        key: what.into(),
        message: "no token_env or token_file given".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, env(&[])).expect("defaults load");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8765");
        assert_eq!(c.state.database_url, "sqlite://runbookd.db");
        assert_eq!(c.playbooks.timeout, Duration::from_secs(300));
        assert_eq!(c.playbooks.max_concurrent_runs, 16);
    }

    #[test]
    fn env_overrides_file_and_parses_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.toml");
        std::fs::write(
            &path,
            "[playbooks]\ntimeout = \"10s\"\nmax_concurrent_runs = 2\n",
        )
        .expect("write");
        let c = Config::load(
            Some(&path),
            env(&[
                ("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS", "7"),
                ("RUNBOOKD_SERVER__LISTEN", "127.0.0.1:9999"),
                ("RUNBOOKD_UNRELATED", "x"),
            ]),
        )
        .expect("load");
        assert_eq!(c.playbooks.timeout, Duration::from_secs(10));
        assert_eq!(c.playbooks.max_concurrent_runs, 7);
        assert_eq!(c.server.listen.port(), 9999);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::load(None, env(&[("RUNBOOKD_PLAYBOOKS__TIMEOUTT", "5s")]))
            .expect_err("unknown key must fail");
        let msg = err.to_string();
        assert!(msg.contains("timeoutt"), "{msg}");
    }

    #[test]
    fn bad_value_is_named_with_path() {
        let err = Config::load(None, env(&[("RUNBOOKD_PLAYBOOKS__TIMEOUT", "soon")]))
            .expect_err("bad duration must fail");
        let msg = err.to_string();
        assert!(msg.contains("playbooks.timeout"), "{msg}");
        assert!(msg.contains("soon"), "{msg}");
    }

    #[test]
    fn the_example_config_documents_valid_keys() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/runbookd.toml");
        let c = Config::load(Some(&path), env(&[])).expect("examples/runbookd.toml loads");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8765");
        assert_eq!(c.breakers["stripe"].failure_threshold, 5);
        assert_eq!(c.stripe.max_requests_per_second, 25);
        assert_eq!(c.key_metrics.failure_window, Duration::from_secs(300));
        assert_eq!(
            c.playbooks.settings["outage"]["reset_budget"].as_integer(),
            Some(2)
        );
    }

    #[test]
    fn the_debtflow_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/debtflow/runbookd.toml");
        let c = Config::load(Some(&path), env(&[])).expect("examples/debtflow/runbookd.toml loads");
        assert_eq!(c.breakers["stripe"].preset, BreakerPreset::Django);
        assert_eq!(c.server.tokens.len(), 3);
        assert!(c.channels.contains_key("oncall"));
    }

    #[test]
    fn urls_with_passwords_can_come_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("state-url");
        std::fs::write(&secret, "postgres://runbookd:s3cret@db/state\n").expect("write");
        let cfg = dir.path().join("runbookd.toml");
        std::fs::write(
            &cfg,
            format!("[state]\ndatabase_url_file = \"{}\"\n", secret.display()),
        )
        .expect("write");
        let c = Config::load(Some(&cfg), env(&[])).expect("loads");
        assert_eq!(c.state.database_url, "postgres://runbookd:s3cret@db/state");
        std::fs::write(
            &cfg,
            format!(
                "[redis]\nurl = \"redis://a\"\nurl_file = \"{}\"\n",
                secret.display()
            ),
        )
        .expect("write");
        let e = Config::load(Some(&cfg), env(&[])).expect_err("both");
        assert!(e.to_string().contains("redis.url"), "{e}");
    }

    #[test]
    fn sql_identifiers_are_validated() {
        assert!(valid_sql_identifier("payments_payment"));
        assert!(valid_sql_identifier("app.payments_payment"));
        for bad in ["", "1x", "a;drop table x", "a b", "a.b.c", "\"x\""] {
            assert!(!valid_sql_identifier(bad), "{bad}");
        }
        let err = Config::load(None, env(&[("RUNBOOKD_PAYMENTS__TABLE", "x; drop")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("payments.table"), "{err}");
    }

    #[test]
    fn token_needs_one_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.toml");
        std::fs::write(
            &path,
            "[[server.tokens]]\nname = \"am\"\nrole = \"ingest\"\n",
        )
        .expect("write");
        let err = Config::load(Some(&path), env(&[])).expect_err("must fail");
        assert!(err.to_string().contains("server.tokens[0]"), "{err}");
    }
}
