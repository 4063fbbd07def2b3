//! Where a breaker lives in Redis and how its values are encoded, per preset (DOMAIN.md).
//!
//! `django`: Django's cache key function (`PREFIX:VERSION:key`) and django-redis's
//! serializer — an `int` is stored as decimal text, anything else as a Python pickle.
//! `half_open` is never stored; it is computed from `opened_at` exactly as the app does.
//! `plain`: the runbook's keys and plain strings (`open`, `closed`, `half_open`, any case or
//! with a dash), failures as an integer, `last_failure` as float unix seconds.

use serde::Serialize;

use crate::config::{BreakerConfig, BreakerPreset};

/// The three keys of one breaker.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Keys {
    pub state: String,
    pub failures: String,
    /// `opened_at` (django) or `last_failure` (plain).
    pub time: String,
}

impl Keys {
    /// runbookd's own key beside the breaker's, holding the highest attempt of `run` that
    /// wrote this breaker (fenced writes, see `store::BreakerStore`). Derived from the state
    /// key, whose whole name the app owns, plus a suffix the app never uses: it cannot clash
    /// with the app's keys, and lives in the same Redis as the keys it guards.
    pub fn fence(&self, run: &str) -> String {
        format!("{}:runbookd_fence:{run}", self.state)
    }

    pub fn for_breaker(name: &str, cfg: &BreakerConfig) -> Keys {
        let base = cfg
            .key_base
            .clone()
            .unwrap_or_else(|| format!("circuit_breaker:{name}"));
        match cfg.preset {
            BreakerPreset::Django => {
                let full =
                    |field: &str| format!("{}:{}:{base}:{field}", cfg.key_prefix, cfg.key_version);
                Keys {
                    state: full("state"),
                    failures: full("failures"),
                    time: full("opened_at"),
                }
            }
            BreakerPreset::Plain => Keys {
                state: format!("{base}:state"),
                failures: format!("{base}:failures"),
                time: format!("{base}:last_failure"),
            },
        }
    }
}

/// A stored state value that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("breaker key {key} holds a value runbookd cannot read: {message}")]
pub struct DecodeError {
    pub key: String,
    pub message: String,
}

/// The stored state, before half-open is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Closed,
    Open,
    HalfOpen,
}

fn is_pickle(raw: &[u8]) -> bool {
    raw.first() == Some(&0x80)
}

fn unpickle<T: for<'de> serde::Deserialize<'de>>(key: &str, raw: &[u8]) -> Result<T, DecodeError> {
    serde_pickle::from_slice(raw, serde_pickle::DeOptions::new()).map_err(|e| DecodeError {
        key: key.into(),
        message: format!("not a pickle of the expected type ({e})"),
    })
}

/// Pickles a value the way Python's `pickle.loads` (and so Django) reads it.
pub(crate) fn pickle<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising a str or float to a Vec cannot fail.
    serde_pickle::to_vec(value, serde_pickle::SerOptions::new()).unwrap_or_default()
}

/// Encodes and decodes one preset's values.
#[derive(Debug, Clone, Copy)]
pub struct Codec(pub BreakerPreset);

impl Codec {
    pub fn decode_state(&self, key: &str, raw: Option<&[u8]>) -> Result<Stored, DecodeError> {
        let Some(raw) = raw else {
            return Ok(Stored::Closed);
        };
        let text: String = if is_pickle(raw) {
            unpickle(key, raw)?
        } else {
            String::from_utf8_lossy(raw).into_owned()
        };
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "closed" | "" => Ok(Stored::Closed),
            "open" => Ok(Stored::Open),
            "half_open" => Ok(Stored::HalfOpen),
            other => Err(DecodeError {
                key: key.into(),
                message: format!("unknown state `{other}`"),
            }),
        }
    }

    pub fn decode_failures(&self, key: &str, raw: Option<&[u8]>) -> Result<i64, DecodeError> {
        let Some(raw) = raw else {
            return Ok(0);
        };
        if is_pickle(raw) {
            return unpickle(key, raw);
        }
        String::from_utf8_lossy(raw)
            .trim()
            .parse()
            .map_err(|_| DecodeError {
                key: key.into(),
                message: "failures is not an integer".into(),
            })
    }

    pub fn decode_time(&self, key: &str, raw: Option<&[u8]>) -> Result<Option<f64>, DecodeError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        if is_pickle(raw) {
            // Python may have stored an int if someone wrote `int(time.time())`.
            let v: serde_pickle::Value = unpickle(key, raw)?;
            return match v {
                serde_pickle::Value::F64(f) => Ok(Some(f)),
                serde_pickle::Value::I64(i) => Ok(Some(i as f64)),
                other => Err(DecodeError {
                    key: key.into(),
                    message: format!("expected a float, found {other:?}"),
                }),
            };
        }
        String::from_utf8_lossy(raw)
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| DecodeError {
                key: key.into(),
                message: "not a unix timestamp".into(),
            })
    }

    pub fn encode_state(&self, state: &str) -> Vec<u8> {
        match self.0 {
            BreakerPreset::Django => pickle(&state),
            _ => state.as_bytes().to_vec(),
        }
    }

    pub fn encode_time(&self, unix_seconds: f64) -> Vec<u8> {
        match self.0 {
            BreakerPreset::Django => pickle(&unix_seconds),
            _ => format!("{unix_seconds:.6}").into_bytes(),
        }
    }
}

/// A breaker's visible state: `closed`, `open`, or `half_open` (computed from the open time
/// as the app computes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for BreakerState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What a script sees of a breaker.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Snapshot {
    pub name: String,
    pub preset: BreakerPreset,
    pub state: BreakerState,
    pub failures: i64,
    /// Unix seconds when it opened (django) or of the last failure (plain); null if unknown.
    pub opened_at: Option<f64>,
    pub seconds_since_open: Option<f64>,
    pub failure_threshold: u32,
    pub recovery_timeout: f64,
    pub keys: Keys,
}

/// Computes the visible state from stored values at `now`.
pub fn snapshot(
    name: &str,
    cfg: &BreakerConfig,
    keys: &Keys,
    stored: Stored,
    failures: i64,
    time: Option<f64>,
    now: f64,
) -> Snapshot {
    let since = time.map(|t| (now - t).max(0.0));
    let recovery = cfg.recovery_timeout.as_secs_f64();
    let state = match stored {
        Stored::Closed => BreakerState::Closed,
        Stored::HalfOpen => BreakerState::HalfOpen,
        // An open breaker with no open time is treated as just opened (the app would too:
        // `now - None` never passes its half-open check).
        Stored::Open => match since {
            Some(s) if s >= recovery => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        },
    };
    Snapshot {
        name: name.into(),
        preset: cfg.preset,
        state,
        failures,
        opened_at: if stored == Stored::Closed && cfg.preset == BreakerPreset::Django {
            None
        } else {
            time
        },
        seconds_since_open: if stored == Stored::Closed {
            None
        } else {
            since
        },
        failure_threshold: cfg.failure_threshold,
        recovery_timeout: recovery,
        keys: keys.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn django_keys_follow_the_cache_key_function() {
        let keys = Keys::for_breaker("stripe", &BreakerConfig::default());
        assert_eq!(keys.state, ":1:circuit_breaker:stripe:state");
        assert_eq!(keys.failures, ":1:circuit_breaker:stripe:failures");
        assert_eq!(keys.time, ":1:circuit_breaker:stripe:opened_at");
        let plain = BreakerConfig {
            preset: BreakerPreset::Plain,
            ..Default::default()
        };
        let keys = Keys::for_breaker("stripe", &plain);
        assert_eq!(keys.state, "circuit_breaker:stripe:state");
        assert_eq!(keys.time, "circuit_breaker:stripe:last_failure");
    }

    #[test]
    fn plain_states_in_any_spelling() {
        let c = Codec(BreakerPreset::Plain);
        for (raw, want) in [
            ("open", Stored::Open),
            ("OPEN", Stored::Open),
            ("half-open", Stored::HalfOpen),
            ("Half_Open", Stored::HalfOpen),
            ("closed", Stored::Closed),
        ] {
            assert_eq!(c.decode_state("k", Some(raw.as_bytes())).expect(raw), want);
        }
        assert!(c.decode_state("k", Some(b"ajar")).is_err());
        assert_eq!(c.decode_state("k", None).expect("missing"), Stored::Closed);
    }

    #[test]
    fn half_open_is_computed_from_the_open_time() {
        let cfg = BreakerConfig::default();
        let keys = Keys::for_breaker("stripe", &cfg);
        let s = snapshot("stripe", &cfg, &keys, Stored::Open, 5, Some(100.0), 129.9);
        assert_eq!(s.state, "open");
        let s = snapshot("stripe", &cfg, &keys, Stored::Open, 5, Some(100.0), 130.0);
        assert_eq!(s.state, "half_open");
        assert_eq!(s.seconds_since_open, Some(30.0));
    }
}
