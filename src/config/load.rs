//! Loading: file → `toml::Table` → `RUNBOOKD_*` environment overrides → typed structs →
//! secrets resolved by indirection → validation, every error naming its dotted key.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::SecretString;

use super::{valid_sql_identifier, ChannelKind, Config, ConfigError, StateConfig};

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
                let key = e.path().to_string();
                // `preset = "memory"` of earlier versions: say what replaced it.
                let hint = if key.starts_with("breakers.")
                    && key.ends_with(".preset")
                    && e.inner().to_string().contains("`memory`")
                {
                    "; a breaker kept in this process is now `store = \"memory\"` (with preset django or plain)"
                } else {
                    ""
                };
                ConfigError::Key {
                    key,
                    message: format!(
                        "{}{hint} (from {origin} or its environment overrides)",
                        e.inner()
                    ),
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
