//! Where a breaker's three values are kept: the app's Redis ([`RedisStore`]) or this
//! process's memory ([`MemoryStore`], `[breakers.NAME] store = "memory"` and simulations).
//!
//! Both hold the same bytes under the same keys (the layout's encoding is applied above,
//! in [`super::Breakers`]), and both apply a change in one step: Redis by a Lua script, memory
//! under a lock. The parity suite runs one table of cases against both.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use redis::AsyncCommands;

use super::{layout::Keys, BreakerError};
use crate::primitives::redis_conn::RedisConnections;

/// The three stored values (state, failures, time) as Redis would return them.
pub type RawValues = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

/// What a failure writes, already encoded for the layout.
#[derive(Debug, Clone)]
pub struct FailureWrite {
    /// TTL of the failures counter, seconds (≥ 1).
    pub window_s: u64,
    pub threshold: u32,
    /// TTL of the open state (and django's `opened_at`), seconds; 0: none.
    pub open_ttl_s: u64,
    pub open: Vec<u8>,
    pub now: Vec<u8>,
    /// The time key records every failure (plain's `last_failure`), not only the opening
    /// (django's `opened_at`).
    pub every: bool,
}

/// A store of breaker values. `now` (unix seconds, the breakers' clock) is when the change
/// happens: Redis keeps time itself, memory expires by it.
#[async_trait::async_trait]
pub trait BreakerStore: Send + Sync {
    async fn values(&self, keys: &Keys, now: f64) -> Result<RawValues, BreakerError>;
    /// Counts a failure (with the window as TTL) and opens at the threshold, in one step.
    async fn record_failure(
        &self,
        keys: &Keys,
        w: &FailureWrite,
        now: f64,
    ) -> Result<(), BreakerError>;
    /// Stores `closed` (with TTL, 0: none) and forgets failures, in one step.
    async fn record_success(
        &self,
        keys: &Keys,
        closed: &[u8],
        closed_ttl_s: u64,
        now: f64,
    ) -> Result<(), BreakerError>;
    /// Deletes the three keys.
    async fn delete(&self, keys: &Keys) -> Result<(), BreakerError>;
}

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

/// KEYS: state, failures. ARGV: encoded "closed", closed TTL s (0 = none).
const RECORD_SUCCESS: &str = r"
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl) else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('DEL', KEYS[2])
return 1
";

/// The app's Redis.
pub struct RedisStore {
    breaker: String,
    url: Option<String>,
    redis: Arc<RedisConnections>,
    failure: redis::Script,
    success: redis::Script,
}

impl RedisStore {
    /// `url`: the breaker's Redis, `None` when neither `[redis] url` nor its own is set.
    pub fn new(breaker: &str, url: Option<String>, redis: Arc<RedisConnections>) -> RedisStore {
        RedisStore {
            breaker: breaker.into(),
            url,
            redis,
            failure: redis::Script::new(RECORD_FAILURE),
            success: redis::Script::new(RECORD_SUCCESS),
        }
    }

    fn connection(&self) -> Result<redis::aio::ConnectionManager, BreakerError> {
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| BreakerError::NotConfigured(self.breaker.clone()))?;
        self.redis
            .get(url)
            .map_err(|e| BreakerError::Redis(e.to_string()))
    }
}

#[async_trait::async_trait]
impl BreakerStore for RedisStore {
    async fn values(&self, keys: &Keys, _now: f64) -> Result<RawValues, BreakerError> {
        let mut con = self.connection()?;
        let raw: Vec<Option<Vec<u8>>> =
            con.mget(&[&keys.state, &keys.failures, &keys.time]).await?;
        let get = |i: usize| raw.get(i).cloned().flatten();
        Ok((get(0), get(1), get(2)))
    }

    async fn record_failure(
        &self,
        keys: &Keys,
        w: &FailureWrite,
        _now: f64,
    ) -> Result<(), BreakerError> {
        let mut con = self.connection()?;
        let _: (i64, i64) = self
            .failure
            .key(&keys.state)
            .key(&keys.failures)
            .key(&keys.time)
            .arg(w.window_s.max(1))
            .arg(w.threshold)
            .arg(w.open_ttl_s)
            .arg(&w.open)
            .arg(&w.now)
            .arg(if w.every { "1" } else { "0" })
            .invoke_async(&mut con)
            .await?;
        Ok(())
    }

    async fn record_success(
        &self,
        keys: &Keys,
        closed: &[u8],
        closed_ttl_s: u64,
        _now: f64,
    ) -> Result<(), BreakerError> {
        let mut con = self.connection()?;
        let _: i64 = self
            .success
            .key(&keys.state)
            .key(&keys.failures)
            .arg(closed)
            .arg(closed_ttl_s)
            .invoke_async(&mut con)
            .await?;
        Ok(())
    }

    async fn delete(&self, keys: &Keys) -> Result<(), BreakerError> {
        let mut con = self.connection()?;
        let _: i64 = con.del(&[&keys.state, &keys.failures, &keys.time]).await?;
        Ok(())
    }
}

/// Keys with values and expiry times (unix seconds), like Redis's `SET … EX` — in this
/// process only.
#[derive(Default)]
pub struct MemoryStore {
    values: Mutex<Kv>,
}

/// Key ⇒ (value, expires at unix seconds).
type Kv = HashMap<String, (Vec<u8>, Option<f64>)>;

fn get(kv: &mut Kv, key: &str, now: f64) -> Option<Vec<u8>> {
    match kv.get(key) {
        Some((_, Some(expires))) if *expires <= now => {
            kv.remove(key);
            None
        }
        Some((v, _)) => Some(v.clone()),
        None => None,
    }
}

fn set(kv: &mut Kv, key: &str, value: Vec<u8>, ttl_s: u64, now: f64) {
    let expires = (ttl_s > 0).then_some(now + ttl_s as f64);
    kv.insert(key.to_string(), (value, expires));
}

impl MemoryStore {
    fn kv(&self) -> std::sync::MutexGuard<'_, Kv> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl BreakerStore for MemoryStore {
    async fn values(&self, keys: &Keys, now: f64) -> Result<RawValues, BreakerError> {
        let mut kv = self.kv();
        Ok((
            get(&mut kv, &keys.state, now),
            get(&mut kv, &keys.failures, now),
            get(&mut kv, &keys.time, now),
        ))
    }

    /// RECORD_FAILURE, step for step.
    async fn record_failure(
        &self,
        keys: &Keys,
        w: &FailureWrite,
        now: f64,
    ) -> Result<(), BreakerError> {
        let mut kv = self.kv();
        let f = get(&mut kv, &keys.failures, now)
            .and_then(|v| String::from_utf8_lossy(&v).trim().parse::<i64>().ok())
            .unwrap_or(0)
            + 1;
        set(
            &mut kv,
            &keys.failures,
            f.to_string().into_bytes(),
            w.window_s.max(1),
            now,
        );
        if w.every {
            set(&mut kv, &keys.time, w.now.clone(), 0, now);
        }
        if f >= i64::from(w.threshold) {
            set(&mut kv, &keys.state, w.open.clone(), w.open_ttl_s, now);
            if !w.every {
                set(&mut kv, &keys.time, w.now.clone(), w.open_ttl_s, now);
            }
        }
        Ok(())
    }

    async fn record_success(
        &self,
        keys: &Keys,
        closed: &[u8],
        closed_ttl_s: u64,
        now: f64,
    ) -> Result<(), BreakerError> {
        let mut kv = self.kv();
        set(&mut kv, &keys.state, closed.to_vec(), closed_ttl_s, now);
        kv.remove(&keys.failures);
        Ok(())
    }

    async fn delete(&self, keys: &Keys) -> Result<(), BreakerError> {
        let mut kv = self.kv();
        for k in [&keys.state, &keys.failures, &keys.time] {
            kv.remove(k);
        }
        Ok(())
    }
}
