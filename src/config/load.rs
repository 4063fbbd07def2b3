//! Loading: file → `toml::Table` → `RUNBOOKD_*` environment overrides → typed structs →
//! secrets resolved by indirection → validation, every error naming its dotted key.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::{Config, ConfigError, StateConfig};

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
                let text = std::fs::read_to_string(p).map_err(|error| ConfigError::Read {
                    path: p.to_path_buf(),
                    error,
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

    /// Every section checks itself (next to its struct); names of maps' entries here.
    fn validate(&self) -> Result<(), ConfigError> {
        self.playbooks.validate()?;
        self.server.validate()?;
        self.state.validate()?;
        self.cron.validate()?;
        self.notify.validate()?;
        for (name, b) in &self.breakers {
            b.validate(name)?;
        }
        self.stripe.validate()?;
        self.statuspage.validate()?;
        self.logs.validate()?;
        self.celery.validate()?;
        for (name, ch) in &self.channels {
            ch.validate(name)?;
        }
        self.approvals.validate(&self.channels)?;
        self.dashboard.validate()?;
        self.payments.validate()
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
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Key {
            key: what.into(),
            message: format!("cannot read {}: {e}", path.display()),
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
