//! Guessing tokens is slow: per client address, wrong tokens (a bearer header or a
//! dashboard login) beyond the first few make the address wait — one second, then twice as
//! long after each further failure, up to [`MAX_WAIT`] — and while it waits every attempt
//! from it is refused with 429 and `Retry-After`, right tokens included (else the waiting
//! would cost a guesser nothing). A right token resets the address. Tokens are 256-bit
//! secrets; this is about the log flood and the cost of a guessing script, and about
//! telling operators the address that does it.
//!
//! The address is the connection's peer (`ConnectInfo<SocketAddr>`, inserted by the server
//! loop); where a request carries none, all such requests share one entry.
//!
//! Waits run on the process's monotonic clock, not the world's `Clock`: they are told to
//! real clients (`Retry-After`), in a simulated world too.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{extract::ConnectInfo, http::request::Parts};

/// Wrong tokens an address may present before it waits.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// An address not heard of for this long is forgotten.
const FORGET: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at most (the oldest are forgotten first).
const MAX_ADDRESSES: usize = 10_000;

/// Who a request came from, for the throttle and the log.
pub fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
}

/// The client address as an extractor (never fails: unknown is `None`).
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer(parts)))
    }
}

/// The text of an address for the log (`-` when unknown).
pub fn peer_text(peer: Option<IpAddr>) -> String {
    peer.map_or_else(|| "-".to_string(), |ip| ip.to_string())
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// Refused until then.
    until: Option<Instant>,
    last: Instant,
}

/// The failures of each address.
#[derive(Default)]
pub struct Throttle {
    addresses: Mutex<HashMap<Option<IpAddr>, Entry>>,
}

impl Throttle {
    /// How long `peer` must still wait, if it must.
    pub fn waiting(&self, peer: Option<IpAddr>) -> Option<Duration> {
        self.waiting_at(peer, Instant::now())
    }

    fn waiting_at(&self, peer: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let until = map.get(&peer)?.until?;
        (until > now).then(|| until - now)
    }

    /// Records a wrong token from `peer`: the wait it now has, if any.
    pub fn failed(&self, peer: Option<IpAddr>) -> Option<Duration> {
        self.failed_at(peer, Instant::now())
    }

    fn failed_at(&self, peer: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&peer) {
            map.retain(|_, e| now.duration_since(e.last) < FORGET);
            if map.len() >= MAX_ADDRESSES {
                if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let e = map.entry(peer).or_insert(Entry {
            failures: 0,
            until: None,
            last: now,
        });
        if now.duration_since(e.last) >= FORGET {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        let over = e.failures.checked_sub(FREE_FAILURES)?;
        if over == 0 {
            return None;
        }
        let wait = Duration::from_secs(1u64 << (over - 1).min(6)).min(MAX_WAIT);
        e.until = Some(now + wait);
        Some(wait)
    }

    /// A right token from `peer`: its failures are forgotten.
    pub fn succeeded(&self, peer: Option<IpAddr>) {
        let mut map = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&peer);
    }
}

/// `Retry-After` in whole seconds, rounded up (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_failures_are_free_then_the_wait_doubles_up_to_the_maximum() {
        let t = Throttle::default();
        let ip = Some("192.0.2.7".parse().unwrap());
        let other = Some("192.0.2.8".parse().unwrap());
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.failed_at(ip, now), None);
        }
        assert_eq!(t.waiting_at(ip, now), None);
        assert_eq!(t.failed_at(ip, now), Some(Duration::from_secs(1)));
        assert_eq!(t.failed_at(ip, now), Some(Duration::from_secs(2)));
        assert_eq!(t.failed_at(ip, now), Some(Duration::from_secs(4)));
        assert!(t.waiting_at(ip, now).is_some());
        assert_eq!(t.waiting_at(other, now), None, "per address");
        for _ in 0..20 {
            t.failed_at(ip, now);
        }
        assert_eq!(t.failed_at(ip, now), Some(MAX_WAIT));
        assert_eq!(t.waiting_at(ip, now + MAX_WAIT), None, "the wait ends");
        t.succeeded(ip);
        assert_eq!(t.failed_at(ip, now), None, "a right token resets");
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
