//! The payments app's backends runbookd reaches through its primitives — Redis and the
//! breakers in it, the app's database, Stripe, the webhook endpoint (the Celery broker is in
//! `celery.rs`) —
//! and the key metrics measured on them. Each section is optional: unset means "not
//! configured", and the primitive says which key to set.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{bad, duration, opt_duration, valid_name, ConfigError};

/// `[webhooks]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// URLs `webhooks::probe(url)` may POST to besides `[stripe] webhook_url`: a playbook
    /// must not be able to send requests anywhere it likes.
    pub probe_allow: Vec<String>,
    /// Allow `webhooks::signed_probe()`: a harmless event signed with runbookd's copy of the
    /// signing secret, posted to `[stripe] webhook_url`, tells whether the app holds the same
    /// secret. Off by default: the app records one `webhook_received` row per probe (its type
    /// is `runbookd.webhook_probe`; runbookd's own delivery counts leave it out).
    pub signed_probe: bool,
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

pub(super) fn default_breakers() -> BTreeMap<String, BreakerConfig> {
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
    /// Sockets runbookd keeps to Stripe at most (each a TLS handshake when opened); a
    /// request past them waits for one to come free, within its `timeout`.
    pub max_connections: u32,
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
            max_connections: 32,
        }
    }
}

/// `[payments]`: the app's PostgreSQL tables (docs/runbook.md). Names are configurable for
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
    /// A payment pending longer than this needs reconciliation (the runbook's 30 minutes).
    /// The one place the threshold is set: the playbooks read it (`payments::stale_after()`),
    /// the key metric `runbookd_payments_stale_after_seconds` exports it for the alert rule,
    /// and the simulated monitor fires `PaymentsPendingTooLong` on it.
    #[serde(deserialize_with = "duration")]
    pub stale_after: Duration,
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
            stale_after: Duration::from_secs(1800),
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

/// How a breaker's state is laid out in Redis (see docs/runbook.md, "The app, as it really is").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BreakerPreset {
    /// What the Django app writes: `:1:circuit_breaker:NAME:*`, pickled values,
    /// half-open computed from `opened_at`.
    Django,
    /// What the runbook describes: `circuit_breaker:NAME:*`, plain strings.
    Plain,
}

/// Where a breaker's values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakerStoreKind {
    /// The app's Redis (`redis_url` or `[redis] url`).
    #[default]
    Redis,
    /// This process only, in the layout's encoding (simulations use it for every breaker).
    Memory,
}

/// `[breakers.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Key layout and value encoding.
    pub preset: BreakerPreset,
    /// Where the values live: `redis` (default) or `memory`.
    pub store: BreakerStoreKind,
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
            store: BreakerStoreKind::Redis,
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

impl BreakerConfig {
    /// `[breakers.NAME]`.
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("breakers.{name}.{k}");
        if !valid_name(name) {
            return Err(bad(
                format!("breakers.{name}"),
                "breaker names use a-z, 0-9, _ and -",
            ));
        }
        if self.failure_threshold == 0 {
            return Err(bad(key("failure_threshold"), "must be at least 1"));
        }
        if self.window.as_secs() == 0 || self.recovery_timeout.is_zero() {
            return Err(bad(
                key("window"),
                "window and recovery_timeout must be at least 1s",
            ));
        }
        Ok(())
    }
}

impl StripeConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.expected_mode.as_str(), "live" | "test") {
            return Err(bad("stripe.expected_mode", "must be \"live\" or \"test\""));
        }
        if self.max_attempts == 0 {
            return Err(bad("stripe.max_attempts", "must be at least 1"));
        }
        if self.max_connections == 0 {
            return Err(bad("stripe.max_connections", "must be at least 1"));
        }
        Ok(())
    }
}

impl PaymentsConfig {
    /// Table and column names go into SQL text: plain identifiers only.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.columns;
        for (key, value) in [
            ("payments.table", &self.table),
            ("payments.audit_table", &self.audit_table),
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
                return Err(bad(key, format!("`{value}` is not a plain SQL identifier")));
            }
        }
        Ok(())
    }
}
