//! Notifications: a persistent outbox and its delivery to channels (`log`, `slack`,
//! `pagerduty`, `webhook`, `email`). Queued notifications survive restarts; each channel is
//! delivered by its own worker (`delivery.rs`), so one that hangs delays only itself;
//! delivery retries with exponential backoff and jitter, honours `Retry-After`, and gives up
//! after `[notify] give_up_after`, recording why. Channel secrets are resolved at start and
//! never logged. This module knows nothing of Rhai.

mod channels;
mod delivery;
mod email;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use channels::{captured_channels, slack_escape, Channel};

use crate::{
    config::{ChannelConfig, ConfigError, NotifyConfig},
    metrics::Metrics,
    store::{Store, StoreError},
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
    /// Each channel with its attempt time limit and delivery health.
    lanes: BTreeMap<String, delivery::Lane>,
    store: Store,
    cfg: NotifyConfig,
    http: reqwest::Client,
    metrics: Option<Arc<Metrics>>,
    /// The lease a delivery claim is taken for (the replica's current one): recovery gives
    /// back the claims of dead leases.
    claimant: std::sync::RwLock<Option<Claimant>>,
}

type Claimant = Box<dyn Fn() -> String + Send + Sync>;

/// One channel's delivery health, as `/readyz` and the dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelHealth {
    pub channel: String,
    /// Its last `[notify] degraded_after` deliveries or more failed.
    pub degraded: bool,
    /// Failed deliveries since the last one that went out.
    pub failures_in_a_row: u32,
    pub last_error: Option<String>,
}

impl Notifier {
    /// Resolves every channel's secrets now: a missing one fails the start, naming it.
    pub fn from_config(
        channels: &BTreeMap<String, ChannelConfig>,
        cfg: &NotifyConfig,
        store: Store,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Notifier, ConfigError> {
        let mut lanes: BTreeMap<String, delivery::Lane> = channels
            .iter()
            .map(|(name, c)| {
                let channel = Channel::from_config(name, c)?;
                let timeout = c.timeout.unwrap_or(cfg.timeout);
                Ok((name.clone(), delivery::Lane::new(channel, timeout)))
            })
            .collect::<Result<_, ConfigError>>()?;
        // `log` always exists: a page never has nowhere to go.
        lanes
            .entry("log".into())
            .or_insert_with(|| delivery::Lane::new(Channel::Log, cfg.timeout));
        // No client-wide timeout: each channel bounds its own attempts.
        let http = reqwest::Client::builder()
            .user_agent(concat!("runbookd/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Ok(Notifier {
            lanes,
            store,
            cfg: cfg.clone(),
            http,
            metrics,
            claimant: Default::default(),
        })
    }

    /// Names the lease this process's delivery claims are taken for (the dispatcher's
    /// current one); without it claims carry a placeholder and run out by themselves.
    pub fn set_claimant(&self, claimant: impl Fn() -> String + Send + Sync + 'static) {
        *self.claimant.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(claimant));
    }

    /// The lease a claim taken now is for.
    fn claimant(&self) -> String {
        self.claimant
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|f| f())
            .unwrap_or_else(|| "runbookd".into())
    }

    /// Names of the configured channels.
    pub fn channel_names(&self) -> Vec<String> {
        self.lanes.keys().cloned().collect()
    }

    /// Every channel's delivery health.
    pub fn channel_health(&self) -> Vec<ChannelHealth> {
        self.lanes
            .iter()
            .map(|(name, lane)| lane.health.report(name, self.cfg.degraded_after))
            .collect()
    }

    /// Puts a message in the outbox for `channel`; delivery happens in the background (the
    /// commit wakes it).
    pub async fn enqueue(&self, channel: &str, message: &Message) -> Result<String, NotifyError> {
        if !self.lanes.contains_key(channel) {
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
        Ok(id)
    }

    /// Delivers due notifications until `stop`, each channel on its own task: a channel
    /// that hangs or fails delays only itself. After `stop`, deliveries may go on for
    /// `[notify] shutdown_drain`; what is still unanswered then stays in the outbox.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let workers = tokio_util::task::TaskTracker::new();
        for name in self.lanes.keys() {
            workers.spawn(delivery::deliver_channel(
                self.clone(),
                name.clone(),
                stop.clone(),
            ));
        }
        workers.close();
        workers.wait().await;
    }

    fn count(&self, channel: &str, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.notification(channel, outcome);
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
