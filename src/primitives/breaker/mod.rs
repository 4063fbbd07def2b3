//! `breaker(name)`: the payments app's circuit breaker, read and changed where the app keeps
//! it (Redis, in the app's own layout — see [`layout`]) or in memory for simulations.
//!
//! Every multi-key change is one Lua script, so any number of runbookd runs and app workers
//! can share a breaker without lost updates.

pub mod layout;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use redis::AsyncCommands;
use rhai::{Dynamic, Engine, EvalAltResult, Map};

use self::layout::{snapshot, Codec, Keys, Snapshot};
use super::{act, block_on, redis_conn::RedisConnections, script_error, with_run};
use crate::config::{BreakerConfig, BreakerPreset};

/// Why a breaker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError {
    #[error("no breaker named `{0}` (configured: {1})")]
    Unknown(String, String),
    #[error("breaker `{0}` is not configured: set [redis] url or breakers.{0}.redis_url")]
    NotConfigured(String),
    #[error("Redis: {0}")]
    Redis(String),
    #[error(transparent)]
    Decode(#[from] layout::DecodeError),
}

impl From<redis::RedisError> for BreakerError {
    fn from(e: redis::RedisError) -> Self {
        BreakerError::Redis(e.to_string())
    }
}

/// Increments failures (with the window as TTL), opens at the threshold, in one step.
/// KEYS: state, failures, time. ARGV: window s, threshold, open TTL s (0 = none),
/// encoded "open", encoded now, "1" if the time key records every failure (plain).
const RECORD_FAILURE: &str = r"
local f = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
f = f + 1
redis.call('SET', KEYS[2], tostring(f), 'EX', tonumber(ARGV[1]))
local every = ARGV[6] == '1'
if every then redis.call('SET', KEYS[3], ARGV[5]) end
local opened = 0
if f >= tonumber(ARGV[2]) then
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then
    redis.call('SET', KEYS[1], ARGV[4], 'EX', ttl)
    if not every then redis.call('SET', KEYS[3], ARGV[5], 'EX', ttl) end
  else
    redis.call('SET', KEYS[1], ARGV[4])
    if not every then redis.call('SET', KEYS[3], ARGV[5]) end
  end
  opened = 1
end
return {f, opened}
";

/// Stores `closed` (with TTL) and forgets failures, in one step.
/// KEYS: state, failures. ARGV: encoded "closed", closed TTL s (0 = none).
const RECORD_SUCCESS: &str = r"
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl) else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('DEL', KEYS[2])
return 1
";

/// The three stored values (state, failures, time) as Redis would return them.
type RawValues = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

#[derive(Default, Clone)]
struct MemoryBreaker {
    state: Option<(String, Option<f64>)>,
    failures: Option<(i64, f64)>,
    time: Option<(f64, Option<f64>)>,
}

/// All configured breakers.
pub struct Breakers {
    configs: BTreeMap<String, BreakerConfig>,
    default_url: Option<String>,
    redis: Arc<RedisConnections>,
    memory: Mutex<HashMap<String, MemoryBreaker>>,
    scripts: (redis::Script, redis::Script),
    /// Half-open is computed from the open time and this clock, as the app computes it.
    clock: crate::clock::Clock,
}

fn ttl_secs(d: Option<Duration>) -> u64 {
    d.map(|d| d.as_secs().max(1)).unwrap_or(0)
}

impl Breakers {
    pub fn new(
        configs: BTreeMap<String, BreakerConfig>,
        default_url: Option<String>,
        redis: Arc<RedisConnections>,
        clock: crate::clock::Clock,
    ) -> Breakers {
        Breakers {
            configs,
            default_url,
            redis,
            memory: Mutex::new(HashMap::new()),
            scripts: (
                redis::Script::new(RECORD_FAILURE),
                redis::Script::new(RECORD_SUCCESS),
            ),
            clock,
        }
    }

    /// Names of configured breakers.
    /// Configuration of every breaker, by name.
    pub fn configs(&self) -> &BTreeMap<String, BreakerConfig> {
        &self.configs
    }

    /// Simulations: takes over what `other` holds in memory for breaker `name`.
    pub fn adopt_memory(&self, name: &str, other: &Breakers) {
        let theirs = other
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        let mut ours = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        match theirs {
            Some(b) => ours.insert(name.to_string(), b),
            None => ours.remove(name),
        };
    }

    pub fn names(&self) -> Vec<String> {
        self.configs.keys().cloned().collect()
    }

    fn config(&self, name: &str) -> Result<(&BreakerConfig, Keys), BreakerError> {
        let cfg = self
            .configs
            .get(name)
            .ok_or_else(|| BreakerError::Unknown(name.into(), self.names().join(", ")))?;
        Ok((cfg, Keys::for_breaker(name, cfg)))
    }

    fn connection(
        &self,
        name: &str,
        cfg: &BreakerConfig,
    ) -> Result<redis::aio::ConnectionManager, BreakerError> {
        let url = cfg
            .redis_url
            .as_deref()
            .or(self.default_url.as_deref())
            .ok_or_else(|| BreakerError::NotConfigured(name.into()))?;
        self.redis.get(url).map_err(BreakerError::Redis)
    }

    /// The breaker's current state.
    pub async fn read(&self, name: &str) -> Result<Snapshot, BreakerError> {
        let (cfg, keys) = self.config(name)?;
        let codec = Codec(cfg.preset);
        let now = self.clock.now_seconds();
        let (state, failures, time): RawValues = if cfg.preset == BreakerPreset::Memory {
            self.memory_raw(name, now)
        } else {
            let mut con = self.connection(name, cfg)?;
            let raw: Vec<Option<Vec<u8>>> =
                con.mget(&[&keys.state, &keys.failures, &keys.time]).await?;
            let get = |i: usize| raw.get(i).cloned().flatten();
            (get(0), get(1), get(2))
        };
        let stored = codec.decode_state(&keys.state, state.as_deref())?;
        let failures = codec.decode_failures(&keys.failures, failures.as_deref())?;
        let time = codec.decode_time(&keys.time, time.as_deref())?;
        Ok(snapshot(name, cfg, &keys, stored, failures, time, now))
    }

    /// Counts a failure; opens the breaker at the threshold. Returns the new state.
    pub async fn record_failure(&self, name: &str) -> Result<Snapshot, BreakerError> {
        let (cfg, keys) = self.config(name)?;
        let codec = Codec(cfg.preset);
        let now = self.clock.now_seconds();
        let every = cfg.preset != BreakerPreset::Django;
        if cfg.preset == BreakerPreset::Memory {
            let mut mem = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            let b = mem.entry(name.into()).or_default();
            let current = match b.failures {
                Some((n, expires)) if expires > now => n,
                _ => 0,
            };
            let f = current + 1;
            b.failures = Some((f, now + cfg.window.as_secs_f64()));
            let ttl = cfg.open_ttl.map(|t| now + t.as_secs_f64());
            if every {
                b.time = Some((now, None));
            }
            if f >= i64::from(cfg.failure_threshold) {
                b.state = Some(("open".into(), ttl));
                if !every {
                    b.time = Some((now, ttl));
                }
            }
        } else {
            let mut con = self.connection(name, cfg)?;
            let _: (i64, i64) = self
                .scripts
                .0
                .key(&keys.state)
                .key(&keys.failures)
                .key(&keys.time)
                .arg(cfg.window.as_secs().max(1))
                .arg(cfg.failure_threshold)
                .arg(ttl_secs(cfg.open_ttl))
                .arg(codec.encode_state("open"))
                .arg(codec.encode_time(now))
                .arg(if every { "1" } else { "0" })
                .invoke_async(&mut con)
                .await?;
        }
        self.read(name).await
    }

    /// Records a success: stores `closed`, forgets failures.
    pub async fn record_success(&self, name: &str) -> Result<Snapshot, BreakerError> {
        let (cfg, keys) = self.config(name)?;
        let codec = Codec(cfg.preset);
        if cfg.preset == BreakerPreset::Memory {
            let now = self.clock.now_seconds();
            let mut mem = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            let b = mem.entry(name.into()).or_default();
            b.state = Some((
                "closed".into(),
                cfg.closed_ttl.map(|t| now + t.as_secs_f64()),
            ));
            b.failures = None;
        } else {
            let mut con = self.connection(name, cfg)?;
            let _: i64 = self
                .scripts
                .1
                .key(&keys.state)
                .key(&keys.failures)
                .arg(codec.encode_state("closed"))
                .arg(ttl_secs(cfg.closed_ttl))
                .invoke_async(&mut con)
                .await?;
        }
        self.read(name).await
    }

    /// Deletes the preset's three keys: closed, no failures — the runbook's manual reset.
    pub async fn reset(&self, name: &str) -> Result<Snapshot, BreakerError> {
        let (cfg, keys) = self.config(name)?;
        if cfg.preset == BreakerPreset::Memory {
            self.memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        } else {
            let mut con = self.connection(name, cfg)?;
            let _: i64 = con.del(&[&keys.state, &keys.failures, &keys.time]).await?;
        }
        self.read(name).await
    }

    /// Raw values of an in-memory breaker, expiring what has expired.
    fn memory_raw(&self, name: &str, now: f64) -> RawValues {
        let mut mem = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = mem.get_mut(name) else {
            return (None, None, None);
        };
        let live = |exp: Option<f64>| exp.is_none_or(|e| e > now);
        if b.state.as_ref().is_some_and(|(_, e)| !live(*e)) {
            b.state = None;
        }
        if b.failures.is_some_and(|(_, e)| e <= now) {
            b.failures = None;
        }
        if b.time.is_some_and(|(_, e)| !live(e)) {
            b.time = None;
        }
        (
            b.state.as_ref().map(|(s, _)| s.clone().into_bytes()),
            b.failures.map(|(n, _)| n.to_string().into_bytes()),
            b.time.map(|(t, _)| t.to_string().into_bytes()),
        )
    }
}

/// Bound on one breaker operation: Redis answers in milliseconds or not at all.
const LIMIT: Duration = Duration::from_secs(5);

fn to_map(s: &Snapshot) -> Result<Map, Box<EvalAltResult>> {
    let mut map: Map = rhai::serde::to_dynamic(s)?
        .try_cast()
        .ok_or_else(|| script_error("breaker snapshot is not a map"))?;
    map.insert("kind".into(), "breaker".into());
    Ok(map)
}

fn breakers() -> Result<Arc<Breakers>, Box<EvalAltResult>> {
    with_run("breaker", |ctx| Ok(ctx.services.breakers.clone()))
}

fn name_of(map: &Map) -> Result<String, Box<EvalAltResult>> {
    match (map.get("kind"), map.get("name")) {
        (Some(k), Some(n)) if k.clone().into_string().ok().as_deref() == Some("breaker") => {
            Ok(n.to_string())
        }
        _ => Err(script_error(
            "expected a breaker map from breaker(name), e.g. `let b = breaker(\"stripe\"); b.reset();`",
        )),
    }
}

fn read(name: &str) -> Result<Map, Box<EvalAltResult>> {
    let b = breakers()?;
    let name = name.to_string();
    let snap = block_on(&format!("breaker(\"{name}\")"), LIMIT, async move {
        b.read(&name).await
    })?;
    to_map(&snap)
}

/// A mutating breaker method: dry run plans it, otherwise performs it; audited either way.
fn change(map: &mut Map, action: &'static str) -> Result<Dynamic, Box<EvalAltResult>> {
    let name = name_of(map)?;
    let before = map.get("state").map(|s| s.to_string()).unwrap_or_default();
    let b = breakers()?;
    let target = format!("breaker:{name}");
    let details = serde_json::json!({ "state_before": before });
    let n = name.clone();
    let outcome = act(&format!("breaker.{action}"), &target, details, move || {
        let snap = block_on(&format!("breaker(\"{n}\").{action}()"), LIMIT, async move {
            match action {
                "reset" => b.reset(&n).await,
                "record_failure" => b.record_failure(&n).await,
                _ => b.record_success(&n).await,
            }
        })?;
        serde_json::to_value(&snap).map_err(|e| script_error(e.to_string()))
    })?;
    match outcome {
        Some(after) => {
            let fresh: Map = rhai::serde::to_dynamic(&after)?
                .try_cast()
                .ok_or_else(|| script_error("breaker snapshot is not a map"))?;
            for (k, v) in fresh {
                map.insert(k, v);
            }
            Ok(Dynamic::from(true))
        }
        None => Ok(Dynamic::from(false)),
    }
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("breaker", read);
    engine.register_fn("breaker", || read("stripe"));
    engine.register_fn("reset", |m: &mut Map| change(m, "reset"));
    engine.register_fn("record_failure", |m: &mut Map| change(m, "record_failure"));
    engine.register_fn("record_success", |m: &mut Map| change(m, "record_success"));
    engine.register_fn("refresh", |m: &mut Map| -> Result<(), Box<EvalAltResult>> {
        let fresh = read(&name_of(m)?)?;
        *m = fresh;
        Ok(())
    });
    // allow(): would a request go through now? closed and half-open allow, open refuses —
    // the app's rule, read fresh from Redis.
    engine.register_fn("allow", |m: &mut Map| -> Result<bool, Box<EvalAltResult>> {
        let fresh = read(&name_of(m)?)?;
        let allowed = fresh
            .get("state")
            .map(|s| s.to_string() != "open")
            .unwrap_or(true);
        *m = fresh;
        Ok(allowed)
    });
}
