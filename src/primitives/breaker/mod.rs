//! `breaker(name)`: the payments app's circuit breaker, read and changed where the app keeps
//! it: the app's Redis in the app's own layout ([`layout`]: django or plain), or this
//! process's memory ([`store`]) for simulations and `store = "memory"`.
//!
//! Every multi-key change is one step of the store (a Lua script in Redis), so any number
//! of runbookd runs and app workers can share a breaker without lost updates.

pub mod layout;
pub mod store;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rhai::{Dynamic, Engine, EvalAltResult, Map};

use self::{
    layout::{snapshot, Codec, Keys, Snapshot},
    store::{BreakerStore, FailureWrite, MemoryStore, RedisStore},
};
use super::{
    act, block_on, redis_conn::RedisConnections, script_error, terminated, with_run, FenceToken,
    TERMINATED_LEASE,
};
use crate::config::{BreakerConfig, BreakerPreset, BreakerStoreKind};

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
    /// A later attempt of the run wrote this breaker already: this attempt is stale (its
    /// replica lost the run), and the write was refused with nothing changed.
    #[error(
        "refused: a later attempt than {attempt} of this run wrote the breaker already ({key})"
    )]
    Fenced { key: String, attempt: i64 },
}

impl From<redis::RedisError> for BreakerError {
    fn from(e: redis::RedisError) -> Self {
        BreakerError::Redis(e.to_string())
    }
}

/// All configured breakers, each with its store.
#[derive(Clone)]
pub struct Breakers {
    configs: BTreeMap<String, BreakerConfig>,
    stores: BTreeMap<String, Arc<dyn BreakerStore>>,
    /// Half-open is computed from the open time and this clock, as the app computes it.
    clock: crate::clock::Clock,
}

fn ttl_secs(d: Option<Duration>) -> u64 {
    d.map(|d| d.as_secs().max(1)).unwrap_or(0)
}

impl Breakers {
    /// Each breaker in Redis (its own `redis_url` or `default_url`) or, with
    /// `store = "memory"`, in one memory store shared by all of them.
    pub fn new(
        configs: BTreeMap<String, BreakerConfig>,
        default_url: Option<String>,
        redis: Arc<RedisConnections>,
        clock: crate::clock::Clock,
    ) -> Breakers {
        let memory: Arc<dyn BreakerStore> = Arc::new(MemoryStore::default());
        let stores = configs
            .iter()
            .map(|(name, cfg)| {
                let store: Arc<dyn BreakerStore> = match cfg.store {
                    BreakerStoreKind::Memory => memory.clone(),
                    BreakerStoreKind::Redis => Arc::new(RedisStore::new(
                        name,
                        cfg.redis_url.clone().or_else(|| default_url.clone()),
                        redis.clone(),
                    )),
                };
                (name.clone(), store)
            })
            .collect();
        Breakers {
            configs,
            stores,
            clock,
        }
    }

    /// The same breakers and stores seen from another clock (a simulation records what
    /// the app's workers did some seconds ago).
    pub fn at(&self, clock: crate::clock::Clock) -> Breakers {
        Breakers {
            clock,
            ..self.clone()
        }
    }

    /// Configuration of every breaker, by name.
    pub fn configs(&self) -> &BTreeMap<String, BreakerConfig> {
        &self.configs
    }

    /// Names of configured breakers.
    pub fn names(&self) -> Vec<String> {
        self.configs.keys().cloned().collect()
    }

    fn config(
        &self,
        name: &str,
    ) -> Result<(&BreakerConfig, Keys, &dyn BreakerStore), BreakerError> {
        let unknown = || BreakerError::Unknown(name.into(), self.names().join(", "));
        let cfg = self.configs.get(name).ok_or_else(unknown)?;
        let store = self.stores.get(name).ok_or_else(unknown)?;
        Ok((cfg, Keys::for_breaker(name, cfg), store.as_ref()))
    }

    /// The breaker's current state.
    pub async fn read(&self, name: &str) -> Result<Snapshot, BreakerError> {
        let (cfg, keys, store) = self.config(name)?;
        let codec = Codec(cfg.preset);
        let now = self.clock.now_seconds();
        let (state, failures, time) = store.values(&keys, now).await?;
        let stored = codec.decode_state(&keys.state, state.as_deref())?;
        let failures = codec.decode_failures(&keys.failures, failures.as_deref())?;
        let time = codec.decode_time(&keys.time, time.as_deref())?;
        Ok(snapshot(name, cfg, &keys, stored, failures, time, now))
    }

    /// The three values as stored, encoded (diagnostics and the parity suite).
    pub async fn raw_values(&self, name: &str) -> Result<store::RawValues, BreakerError> {
        let (_, keys, store) = self.config(name)?;
        store.values(&keys, self.clock.now_seconds()).await
    }

    /// Counts a failure; opens the breaker at the threshold. Returns the new state.
    /// `fence`: the run's attempt, when it runs under a lease (see [`BreakerStore`]).
    pub async fn record_failure(
        &self,
        name: &str,
        fence: Option<&FenceToken>,
    ) -> Result<Snapshot, BreakerError> {
        let (cfg, keys, store) = self.config(name)?;
        let codec = Codec(cfg.preset);
        let now = self.clock.now_seconds();
        let write = FailureWrite {
            window_s: cfg.window.as_secs().max(1),
            threshold: cfg.failure_threshold,
            open_ttl_s: ttl_secs(cfg.open_ttl),
            open: codec.encode_state("open"),
            now: codec.encode_time(now),
            every: cfg.preset != BreakerPreset::Django,
        };
        store.record_failure(&keys, &write, fence, now).await?;
        self.read(name).await
    }

    /// Records a success: stores `closed`, forgets failures.
    pub async fn record_success(
        &self,
        name: &str,
        fence: Option<&FenceToken>,
    ) -> Result<Snapshot, BreakerError> {
        let (cfg, keys, store) = self.config(name)?;
        let closed = Codec(cfg.preset).encode_state("closed");
        let now = self.clock.now_seconds();
        store
            .record_success(&keys, &closed, ttl_secs(cfg.closed_ttl), fence, now)
            .await?;
        self.read(name).await
    }

    /// Deletes the layout's three keys: closed, no failures — the runbook's manual reset.
    pub async fn reset(
        &self,
        name: &str,
        fence: Option<&FenceToken>,
    ) -> Result<Snapshot, BreakerError> {
        let (_, keys, store) = self.config(name)?;
        store.delete(&keys, fence, self.clock.now_seconds()).await?;
        self.read(name).await
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
    super::recorder::read("breaker", vec![serde_json::json!(name)], || {
        let b = breakers()?;
        let name = name.to_string();
        let snap = block_on(&format!("breaker(\"{name}\")"), LIMIT, async move {
            b.read(&name).await
        })?;
        to_map(&snap)
    })
}

/// A mutating breaker method: dry run plans it, otherwise performs it; audited either way.
fn change(map: &mut Map, action: &'static str) -> Result<Dynamic, Box<EvalAltResult>> {
    let name = name_of(map)?;
    let before = map.get("state").map(|s| s.to_string()).unwrap_or_default();
    let b = breakers()?;
    let target = format!("breaker:{name}");
    let details = serde_json::json!({ "state_before": before });
    let n = name.clone();
    let fence = super::current_fence_token();
    let outcome = act(&format!("breaker.{action}"), &target, details, move || {
        let what = format!("breaker(\"{n}\").{action}()");
        let written = block_on(&what, LIMIT, async move {
            let fence = fence.as_ref();
            Ok::<_, std::convert::Infallible>(match action {
                "reset" => b.reset(&n, fence).await,
                "record_failure" => b.record_failure(&n, fence).await,
                _ => b.record_success(&n, fence).await,
            })
        })?;
        let snap = match written {
            Ok(snap) => snap,
            // A later attempt of this run acted on the breaker: this one is stale and ends
            // the way a lapsed lease ends it (interrupted, the retry path).
            Err(BreakerError::Fenced { key, attempt }) => {
                tracing::warn!(%key, attempt, "breaker write refused: a later attempt of this run wrote already");
                return Err(terminated(TERMINATED_LEASE));
            }
            Err(e) => return Err(script_error(format!("{what}: {e}"))),
        };
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
