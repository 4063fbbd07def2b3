//! Notifications: a persistent outbox and its delivery to channels (`log`, `slack`,
//! `pagerduty`, `webhook`, `email`). Queued notifications survive restarts; delivery retries with
//! exponential backoff and jitter, honours `Retry-After`, and gives up after
//! `[notify] give_up_after`, recording why. Channel secrets are resolved at start and never
//! logged. This module knows nothing of Rhai.

mod channels;
mod email;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use channels::Channel;

use crate::{
    config::{ChannelConfig, ConfigError, NotifyConfig},
    metrics::Metrics,
    store::{now_ms, OutboxItem, Store, StoreError},
};

/// What a notification says.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Message {
    /// `trigger`, `repeat`, `resolve`, `message` or `approval` (a request to approve).
    pub kind: String,
    pub title: String,
    pub text: String,
    pub incident: Option<String>,
    pub level: Option<String>,
    /// For `approval` messages: the approval's id (Slack shows Approve / Deny buttons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// Errors queuing a notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("no notification channel named `{0}` (configured: {1})")]
    UnknownChannel(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A failed delivery attempt.
#[derive(Debug)]
pub struct DeliveryError {
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

/// The configured channels and the outbox they drain.
pub struct Notifier {
    channels: BTreeMap<String, Channel>,
    store: Store,
    cfg: NotifyConfig,
    http: reqwest::Client,
    wake: tokio::sync::Notify,
    metrics: Option<Arc<Metrics>>,
}

impl Notifier {
    /// Resolves every channel's secrets now: a missing one fails the start, naming it.
    pub fn from_config(
        channels: &BTreeMap<String, ChannelConfig>,
        cfg: &NotifyConfig,
        store: Store,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Notifier, ConfigError> {
        let mut channels: BTreeMap<String, Channel> = channels
            .iter()
            .map(|(name, c)| Ok((name.clone(), Channel::from_config(name, c)?)))
            .collect::<Result<_, ConfigError>>()?;
        // `log` always exists: a page never has nowhere to go.
        channels.entry("log".into()).or_insert(Channel::Log);
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("runbookd/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Ok(Notifier {
            channels,
            store,
            cfg: cfg.clone(),
            http,
            wake: tokio::sync::Notify::new(),
            metrics,
        })
    }

    /// Names of the configured channels.
    pub fn channel_names(&self) -> Vec<String> {
        self.channels.keys().cloned().collect()
    }

    /// Puts a message in the outbox for `channel`; delivery happens in the background.
    pub async fn enqueue(&self, channel: &str, message: &Message) -> Result<String, NotifyError> {
        if !self.channels.contains_key(channel) {
            return Err(NotifyError::UnknownChannel(
                channel.into(),
                self.channel_names().join(", "),
            ));
        }
        let payload = serde_json::to_value(message).unwrap_or_default();
        let id = self
            .store
            .enqueue_notification(
                channel,
                message.incident.as_deref(),
                &message.kind,
                &payload,
            )
            .await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// Delivers due notifications until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            match self.store.due_notifications(50).await {
                Ok(items) => {
                    for item in items {
                        self.deliver(item).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the notification outbox"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    fn count(&self, channel: &str, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.notification(channel, outcome);
        }
    }

    async fn deliver(&self, item: OutboxItem) {
        // Replicas sharing the store poll the same outbox: only the one that claims the
        // notification sends it (the lease outlasts one attempt).
        let lease = now_ms() + (self.cfg.timeout + Duration::from_secs(30)).as_millis() as i64;
        match self.store.claim_notification(&item, lease).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(notification = %item.id, error = %e, "cannot claim notification; will retry");
                return;
            }
        }
        let Some(channel) = self.channels.get(&item.channel) else {
            let _ = self
                .store
                .mark_notification_failed(&item.id, "channel no longer configured", None)
                .await;
            return;
        };
        let message: Message = match serde_json::from_value(item.payload.clone()) {
            Ok(m) => m,
            Err(e) => {
                let _ = self
                    .store
                    .mark_notification_failed(&item.id, &format!("unreadable payload: {e}"), None)
                    .await;
                return;
            }
        };
        let result = channel.send(&self.http, &message, &item.id).await;
        let outcome = match result {
            Ok(()) => {
                self.count(&item.channel, "sent");
                self.store.mark_notification_sent(&item.id).await
            }
            Err(e) => {
                let age = Duration::from_millis((now_ms() - item.created_at_ms).max(0) as u64);
                let next = if e.retryable && age < self.cfg.give_up_after {
                    Some(
                        now_ms()
                            + backoff(item.attempts, e.retry_after, self.cfg.max_backoff)
                                .as_millis() as i64,
                    )
                } else {
                    None
                };
                if next.is_some() {
                    self.count(&item.channel, "retry");
                    tracing::warn!(channel = %item.channel, attempt = item.attempts + 1, error = %e.message, "notification not delivered; will retry");
                } else {
                    self.count(&item.channel, "failed");
                    tracing::error!(channel = %item.channel, attempts = item.attempts + 1, error = %e.message, "notification given up");
                }
                self.store
                    .mark_notification_failed(&item.id, &e.message, next)
                    .await
            }
        };
        if let Err(e) = outcome {
            tracing::error!(notification = %item.id, error = %e, "cannot record delivery outcome");
        }
    }
}

/// 1 s, 2 s, 4 s … capped, with ±20 % jitter; `Retry-After` wins when the server sends it.
fn backoff(attempts: i64, retry_after: Option<Duration>, cap: Duration) -> Duration {
    if let Some(r) = retry_after {
        return r.min(cap.max(Duration::from_secs(1)));
    }
    let base = Duration::from_secs(1u64 << attempts.clamp(0, 16)).min(cap);
    let jitter = (uuid::Uuid::now_v7().as_u128() % 400) as f64 / 1000.0 - 0.2;
    base.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let cap = Duration::from_secs(60);
        let first = backoff(0, None, cap);
        assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200));
        let later = backoff(10, None, cap);
        assert!(later <= Duration::from_secs(72), "{later:?}");
        assert_eq!(
            backoff(3, Some(Duration::from_secs(7)), cap),
            Duration::from_secs(7)
        );
    }
}
