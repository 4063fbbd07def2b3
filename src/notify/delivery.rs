//! Delivery: one worker per channel drains that channel's part of the outbox, oldest first.
//!
//! Channels never wait on each other: a Slack webhook that accepts and never answers holds
//! up only Slack's notifications, never the PagerDuty page queued behind them. Each
//! attempt is bounded by the channel's `timeout`; a channel failing `[notify]
//! degraded_after` times in a row is marked degraded and waits between attempts (1 s, 2 s,
//! 4 s … up to `max_backoff`, or what its `Retry-After` says), alone. Workers sleep until
//! an enqueue commits (the store's outbox watch), a retry falls due, or `poll_interval`
//! passes (notifications other replicas queued): no polling while nothing happens.
//!
//! At shutdown deliveries go on for `shutdown_drain`, then whatever is still unanswered is
//! cut off and its claim given back: it stays in the durable outbox for another replica
//! or the next start, and the shutdown never waits on a channel.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{backoff, Channel, ChannelHealth, DeliveryError, Message, Notifier};
use crate::store::OutboxItem;

/// Notifications one worker reads at a time.
const BATCH: u32 = 50;

/// One channel: how to send, how long an attempt may take, how it has been going.
pub(super) struct Lane {
    pub channel: Channel,
    pub timeout: Duration,
    pub health: Health,
}

impl Lane {
    pub fn new(channel: Channel, timeout: Duration) -> Lane {
        Lane {
            channel,
            timeout,
            health: Health::default(),
        }
    }
}

/// Failures in a row of one channel.
#[derive(Default)]
pub(super) struct Health(Mutex<HealthState>);

#[derive(Default)]
struct HealthState {
    failures_in_a_row: u32,
    last_error: Option<String>,
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a failure; returns the failures in a row now.
    fn failed(&self, error: &str) -> u32 {
        let mut s = self.state();
        s.failures_in_a_row = s.failures_in_a_row.saturating_add(1);
        s.last_error = Some(error.to_string());
        s.failures_in_a_row
    }

    /// A delivery went out; returns the failures in a row before it.
    fn sent(&self) -> u32 {
        let mut s = self.state();
        s.last_error = None;
        std::mem::take(&mut s.failures_in_a_row)
    }

    pub fn report(&self, channel: &str, degraded_after: u32) -> ChannelHealth {
        let s = self.state();
        ChannelHealth {
            channel: channel.to_string(),
            degraded: s.failures_in_a_row >= degraded_after,
            failures_in_a_row: s.failures_in_a_row,
            last_error: s.last_error.clone(),
        }
    }
}

/// What became of one notification.
enum Delivered {
    /// Sent, given up for good, or not ours to send: go on with the next.
    Done,
    /// Failed and will be retried: the channel waits this long before its next attempt.
    Failed(Duration),
    /// Shutdown cut the attempt off; the claim was given back.
    CutOff,
}

/// Delivers `name`'s notifications until `stop` (plus the shutdown drain).
pub(super) async fn deliver_channel(n: Arc<Notifier>, name: String, stop: CancellationToken) {
    let Some(lane) = n.lanes.get(&name) else {
        return;
    };
    let mut changed = n.store.outbox_watch();
    // Attempts in flight when `stop` comes get until this to finish.
    let cutoff = {
        let stop = stop.clone();
        let drain = n.cfg.shutdown_drain;
        async move {
            stop.cancelled().await;
            tokio::time::sleep(drain).await;
        }
    };
    tokio::pin!(cutoff);
    let mut drain_until: Option<Instant> = None;
    loop {
        if stop.is_cancelled() && drain_until.is_none() {
            drain_until = Some(Instant::now() + n.cfg.shutdown_drain);
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        let items = match n.store.due_notifications(&name, BATCH).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "cannot read the notification outbox; retrying");
                if stop.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
        };
        // Another pass follows one that handled something: notifications held back behind
        // one of the same incident (the channel's order) may be due now that it went.
        let more = !items.is_empty();
        let mut pause = None;
        for item in items {
            match deliver(&n, lane, &name, item, cutoff.as_mut()).await {
                Delivered::Done => {}
                Delivered::Failed(wait) => {
                    pause = Some(wait);
                    break;
                }
                Delivered::CutOff => return,
            }
            if stop.is_cancelled() && drain_until.is_none() {
                drain_until = Some(Instant::now() + n.cfg.shutdown_drain);
            }
            if drain_until.is_some_and(|d| Instant::now() >= d) {
                return;
            }
        }
        if stop.is_cancelled() {
            // Draining: what is due goes out while the drain lasts; a failing channel, or
            // one with nothing left, lets the shutdown go on.
            if more && pause.is_none() {
                continue;
            }
            return;
        }
        if let Some(wait) = pause {
            // This channel backs off on its own; the others go on.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {}
            }
            continue;
        }
        if more {
            continue;
        }
        let poll = n.cfg.poll_interval;
        let wait = match n.store.next_notification_due(&name).await {
            Ok(Some(at)) => Duration::from_millis((at - n.store.now()).max(0) as u64).min(poll),
            Ok(None) => poll,
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "cannot read the notification outbox; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            woke = changed.changed() => {
                if woke.is_err() {
                    tokio::time::sleep(wait).await;
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// Claims one notification and makes one attempt at it, bounded by the channel's timeout
/// and by `cutoff` (shutdown).
async fn deliver(
    n: &Notifier,
    lane: &Lane,
    name: &str,
    item: OutboxItem,
    cutoff: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Delivered {
    // Replicas sharing the store read the same outbox: only the one that claims the
    // notification sends it (the claim outlasts one attempt).
    let lease = n.store.now() + (lane.timeout + Duration::from_secs(30)).as_millis() as i64;
    let claimant = n.claimant();
    match n.store.claim_notification(&item, lease, &claimant).await {
        Ok(true) => {}
        Ok(false) => return Delivered::Done,
        Err(e) => {
            // The store is failing: wait a moment rather than ask again at once.
            tracing::warn!(notification = %item.id, error = %e, "cannot claim notification; will retry");
            return Delivered::Failed(Duration::from_secs(1));
        }
    }
    let message: Message = match serde_json::from_value(item.payload.clone()) {
        Ok(m) => m,
        Err(e) => {
            let _ = n
                .store
                .mark_notification_failed(&item.id, &format!("unreadable payload: {e}"), None)
                .await;
            return Delivered::Done;
        }
    };
    let attempt = tokio::time::timeout(
        lane.timeout,
        lane.channel
            .send(&n.http, &message, &item.id, n.store.now()),
    );
    let result = tokio::select! {
        r = attempt => match r {
            Ok(r) => r,
            Err(_) => Err(DeliveryError {
                message: format!(
                    "no answer within {} (the channel's timeout)",
                    humantime::format_duration(lane.timeout)
                ),
                retryable: true,
                retry_after: None,
            }),
        },
        _ = cutoff => {
            tracing::warn!(channel = %name, notification = %item.id, "shutdown: delivery cut off; the notification stays in the outbox for another replica or the next start");
            if let Err(e) = n.store.release_notification(&item.id, lease).await {
                tracing::warn!(notification = %item.id, error = %e, "cannot give back the notification's claim; it is retried when the claim expires");
            }
            return Delivered::CutOff;
        }
    };
    let (outcome, delivered) = match result {
        Ok(()) => {
            n.count(name, "sent");
            if lane.health.sent() >= n.cfg.degraded_after {
                tracing::info!(channel = %name, "notification channel delivers again; no longer degraded");
                if let Some(m) = &n.metrics {
                    m.channel_degraded(name, false);
                }
            }
            (
                n.store.mark_notification_sent(&item.id).await,
                Delivered::Done,
            )
        }
        Err(e) => {
            let failures = lane.health.failed(&e.message);
            if failures == n.cfg.degraded_after {
                tracing::error!(channel = %name, failures, error = %e.message, "notification channel degraded: its deliveries keep failing; it backs off alone, the other channels are not held up");
                if let Some(m) = &n.metrics {
                    m.channel_degraded(name, true);
                }
            }
            let now = n.store.now();
            let age = Duration::from_millis((now - item.created_at_ms).max(0) as u64);
            let next = (e.retryable && age < n.cfg.give_up_after).then(|| {
                now + backoff(item.attempts, e.retry_after, n.cfg.max_backoff).as_millis() as i64
            });
            if next.is_some() {
                n.count(name, "retry");
                tracing::warn!(channel = %name, attempt = item.attempts + 1, error = %e.message, "notification not delivered; will retry");
            } else {
                n.count(name, "failed");
                tracing::error!(channel = %name, attempts = item.attempts + 1, error = %e.message, "notification given up");
            }
            let pause = if e.retryable {
                Delivered::Failed(backoff(
                    i64::from(failures - 1),
                    e.retry_after,
                    n.cfg.max_backoff,
                ))
            } else {
                Delivered::Done
            };
            (
                n.store
                    .mark_notification_failed(&item.id, &e.message, next)
                    .await,
                pause,
            )
        }
    };
    if let Err(e) = outcome {
        tracing::error!(notification = %item.id, error = %e, "cannot record delivery outcome");
    }
    delivered
}
