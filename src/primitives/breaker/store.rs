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
use crate::primitives::{redis_conn::RedisConnections, FenceToken};

/// How long Redis keeps a run's fence key after its last write. A stale attempt is refused
/// only while the key lives; a day covers any freeze worth fencing (the monotonic fence
/// stops a replica that resumes before it acts; this one catches a write sent after the
/// check), and bounds the keys runbookd leaves in the app's Redis to one per recent run.
pub const FENCE_TTL_S: u64 = 24 * 60 * 60;

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
///
/// Every write takes the run's [`FenceToken`] when it has one: in the same step as the
/// change, the store compares it with the highest attempt of that run seen on this breaker
/// (`Keys::fence`), refuses the write with [`BreakerError::Fenced`] — changing nothing —
/// when a later attempt wrote already, and otherwise remembers it. Writes without a
/// token (the app's own workers, the API's manual reset, `runbookd run`) are never refused.
#[async_trait::async_trait]
pub trait BreakerStore: Send + Sync {
    async fn values(&self, keys: &Keys, now: f64) -> Result<RawValues, BreakerError>;
    /// Counts a failure (with the window as TTL) and opens at the threshold, in one step.
    async fn record_failure(
        &self,
        keys: &Keys,
        w: &FailureWrite,
        fence: Option<&FenceToken>,
        now: f64,
    ) -> Result<(), BreakerError>;
    /// Stores `closed` (with TTL, 0: none) and forgets failures, in one step.
    async fn record_success(
        &self,
        keys: &Keys,
        closed: &[u8],
        closed_ttl_s: u64,
        fence: Option<&FenceToken>,
        now: f64,
    ) -> Result<(), BreakerError>;
    /// Deletes the three keys, in one step.
    async fn delete(
        &self,
        keys: &Keys,
        fence: Option<&FenceToken>,
        now: f64,
    ) -> Result<(), BreakerError>;
}

/// The fence check every script starts with. ARGV[1]: the attempt ('' for a write without
/// a token), ARGV[2]: the fence key's TTL s; the fence key is the script's last KEY (only
/// passed with a token). True: a later attempt of the run wrote already — refuse.
const FENCE_CHECK: &str = r"
local function fenced()
  if ARGV[1] == '' then return false end
  local key = KEYS[#KEYS]
  local token = tonumber(ARGV[1])
  local seen = tonumber(redis.call('GET', key) or '0') or 0
  if token < seen then return true end
  redis.call('SET', key, ARGV[1], 'EX', tonumber(ARGV[2]))
  return false
end
";

/// KEYS: state, failures, time[, fence]. ARGV: the fence's two, window s, threshold, open
/// TTL s (0 = none), encoded "open", encoded now, "1" if the time key records every
/// failure (plain). Returns {failures, opened}; {-1, 0}: refused by the fence.
const RECORD_FAILURE: &str = r"
if fenced() then return {-1, 0} end
local f = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
f = f + 1
redis.call('SET', KEYS[2], tostring(f), 'EX', tonumber(ARGV[3]))
local every = ARGV[8] == '1'
if every then redis.call('SET', KEYS[3], ARGV[7]) end
local opened = 0
if f >= tonumber(ARGV[4]) then
  local ttl = tonumber(ARGV[5])
  if ttl > 0 then
    redis.call('SET', KEYS[1], ARGV[6], 'EX', ttl)
    if not every then redis.call('SET', KEYS[3], ARGV[7], 'EX', ttl) end
  else
    redis.call('SET', KEYS[1], ARGV[6])
    if not every then redis.call('SET', KEYS[3], ARGV[7]) end
  end
  opened = 1
end
return {f, opened}
";

/// KEYS: state, failures[, fence]. ARGV: the fence's two, encoded "closed", closed TTL s
/// (0 = none). Returns 1; -1: refused by the fence.
const RECORD_SUCCESS: &str = r"
if fenced() then return -1 end
local ttl = tonumber(ARGV[4])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[3], 'EX', ttl) else redis.call('SET', KEYS[1], ARGV[3]) end
redis.call('DEL', KEYS[2])
return 1
";

/// KEYS: state, failures, time[, fence]. ARGV: the fence's two. Returns 1; -1: refused by
/// the fence. A script, not a DEL, so the check and the delete are one step.
const DELETE: &str = r"
if fenced() then return -1 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
";

/// A script with the fence check in front of it.
fn fenced_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{FENCE_CHECK}{body}"))
}

/// Adds the fence's key (last, after the breaker's) and its two arguments (first, before
/// the script's own) to a call; a write without a token passes no key and an empty token.
fn with_fence(call: &mut redis::ScriptInvocation<'_>, keys: &Keys, fence: Option<&FenceToken>) {
    match fence {
        Some(t) => {
            call.key(keys.fence(&t.run)).arg(t.attempt).arg(FENCE_TTL_S);
        }
        None => {
            call.arg("").arg(0);
        }
    }
}

/// The app's Redis.
pub struct RedisStore {
    breaker: String,
    url: Option<String>,
    redis: Arc<RedisConnections>,
    failure: redis::Script,
    success: redis::Script,
    delete: redis::Script,
}

impl RedisStore {
    /// `url`: the breaker's Redis, `None` when neither `[redis] url` nor its own is set.
    pub fn new(breaker: &str, url: Option<String>, redis: Arc<RedisConnections>) -> RedisStore {
        RedisStore {
            breaker: breaker.into(),
            url,
            redis,
            failure: fenced_script(RECORD_FAILURE),
            success: fenced_script(RECORD_SUCCESS),
            delete: fenced_script(DELETE),
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
        fence: Option<&FenceToken>,
        _now: f64,
    ) -> Result<(), BreakerError> {
        let mut con = self.connection()?;
        let mut call = self.failure.prepare_invoke();
        call.key(&keys.state).key(&keys.failures).key(&keys.time);
        with_fence(&mut call, keys, fence);
        call.arg(w.window_s.max(1))
            .arg(w.threshold)
            .arg(w.open_ttl_s)
            .arg(&w.open)
            .arg(&w.now)
            .arg(if w.every { "1" } else { "0" });
        let (failures, _): (i64, i64) = call.invoke_async(&mut con).await?;
        refused_if(failures < 0, keys, fence)
    }

    async fn record_success(
        &self,
        keys: &Keys,
        closed: &[u8],
        closed_ttl_s: u64,
        fence: Option<&FenceToken>,
        _now: f64,
    ) -> Result<(), BreakerError> {
        let mut con = self.connection()?;
        let mut call = self.success.prepare_invoke();
        call.key(&keys.state).key(&keys.failures);
        with_fence(&mut call, keys, fence);
        call.arg(closed).arg(closed_ttl_s);
        let done: i64 = call.invoke_async(&mut con).await?;
        refused_if(done < 0, keys, fence)
    }

    async fn delete(
        &self,
        keys: &Keys,
        fence: Option<&FenceToken>,
        _now: f64,
    ) -> Result<(), BreakerError> {
        let mut con = self.connection()?;
        let mut call = self.delete.prepare_invoke();
        call.key(&keys.state).key(&keys.failures).key(&keys.time);
        with_fence(&mut call, keys, fence);
        let done: i64 = call.invoke_async(&mut con).await?;
        refused_if(done < 0, keys, fence)
    }
}

/// The store's answer to a write it `refused` (or not).
fn refused_if(refused: bool, keys: &Keys, fence: Option<&FenceToken>) -> Result<(), BreakerError> {
    match fence {
        Some(t) if refused => Err(BreakerError::Fenced {
            key: keys.fence(&t.run),
            attempt: t.attempt,
        }),
        _ => Ok(()),
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

/// FENCE_CHECK, step for step, under the caller's lock: Err when a later attempt of the
/// run wrote already (nothing changed), else the attempt is remembered.
fn check_fence(
    kv: &mut Kv,
    keys: &Keys,
    fence: Option<&FenceToken>,
    now: f64,
) -> Result<(), BreakerError> {
    let Some(t) = fence else {
        return Ok(());
    };
    let key = keys.fence(&t.run);
    let seen = get(kv, &key, now)
        .and_then(|v| String::from_utf8_lossy(&v).trim().parse::<i64>().ok())
        .unwrap_or(0);
    refused_if(t.attempt < seen, keys, fence)?;
    set(
        kv,
        &key,
        t.attempt.to_string().into_bytes(),
        FENCE_TTL_S,
        now,
    );
    Ok(())
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
        fence: Option<&FenceToken>,
        now: f64,
    ) -> Result<(), BreakerError> {
        let mut kv = self.kv();
        check_fence(&mut kv, keys, fence, now)?;
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
        fence: Option<&FenceToken>,
        now: f64,
    ) -> Result<(), BreakerError> {
        let mut kv = self.kv();
        check_fence(&mut kv, keys, fence, now)?;
        set(&mut kv, &keys.state, closed.to_vec(), closed_ttl_s, now);
        kv.remove(&keys.failures);
        Ok(())
    }

    async fn delete(
        &self,
        keys: &Keys,
        fence: Option<&FenceToken>,
        now: f64,
    ) -> Result<(), BreakerError> {
        let mut kv = self.kv();
        check_fence(&mut kv, keys, fence, now)?;
        for k in [&keys.state, &keys.failures, &keys.time] {
            kv.remove(k);
        }
        Ok(())
    }
}
