//! `stripe::*`: what the runbook asks of Stripe — its status page, whether our key works,
//! PaymentIntents, events that failed delivery, webhook endpoints — through `async-stripe`
//! with a configurable API base, a per-attempt timeout, Stripe's own retry rules and a
//! request-rate limit shared by every run.
//!
//! The secret key is read once at start by indirection and never leaves this module:
//! `key_info()` reports whether it is set, its first 7 characters and its mode, as the
//! runbook's own check does.
//!
//! Requests go through a [`wire::StripeWire`]: HTTPS in production, the simulated world's
//! Stripe in simulations. Classification (what a 401 or a refused connection means) lives
//! here, once, above the wire.

mod health;
pub mod http;
mod script;
pub mod wire;

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use stripe_client_core::RequestStrategy;
use stripe_core::{
    event::ListEvent,
    payment_intent::{RetrievePaymentIntent, SearchPaymentIntent},
    PaymentIntent,
};

pub use self::health::{classify_ping, key_mode, KeyInfo, Ping, StatusPage};
use self::http::HttpWire;
pub use self::script::register;
use self::wire::{Api, HeldKey, StripeWire};
use crate::{
    clock::Clock,
    config::{resolve_secret, StripeConfig},
};

/// A Stripe call that did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum StripeCallError {
    #[error("Stripe API key is not set ({0})")]
    NoKey(String),
    #[error("Stripe answered {status}: {message}")]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("cannot reach Stripe: {0}")]
    Connection(String),
    #[error("Stripe sent an answer runbookd cannot read: {0}")]
    Decode(String),
}

impl StripeCallError {
    /// HTTP status, when Stripe answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            StripeCallError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What scripts see of a PaymentIntent.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IntentSummary {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub created: i64,
    pub livemode: bool,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub last_payment_error: Option<String>,
}

impl From<PaymentIntent> for IntentSummary {
    fn from(pi: PaymentIntent) -> Self {
        IntentSummary {
            id: pi.id.as_str().to_string(),
            status: pi.status.as_str().to_string(),
            amount: pi.amount,
            currency: pi.currency.to_string(),
            created: pi.created,
            livemode: pi.livemode,
            metadata: pi.metadata.into_iter().collect(),
            last_payment_error: pi.last_payment_error.and_then(|e| e.message),
        }
    }
}

/// Stripe as runbookd uses it.
#[derive(Clone)]
pub struct Stripe {
    api: Arc<Api>,
    http: reqwest::Client,
    cfg: StripeConfig,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl Stripe {
    /// Production: reads the key (a missing key is reported by the primitives, not at
    /// start) and talks HTTPS through one pooled client.
    pub fn new(cfg: &StripeConfig) -> Stripe {
        let source = match (&cfg.api_key_file, &cfg.api_key_env) {
            (Some(f), _) => format!("file {}", f.display()),
            (None, Some(v)) => format!("environment variable {v}"),
            (None, None) => "nowhere (no api_key_env or api_key_file)".into(),
        };
        let key = match resolve_secret(
            "stripe.api_key",
            cfg.api_key_env.as_deref(),
            cfg.api_key_file.as_deref(),
        ) {
            Ok(k) => HeldKey {
                key: Some(k),
                source,
                error: None,
            },
            Err(e) => HeldKey {
                key: None,
                source,
                error: Some(e.to_string()),
            },
        };
        // The app's webhook endpoint (`webhooks::probe`) is another host: its own client.
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("runbookd/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let wire = HttpWire::new(&cfg.api_base, &cfg.status_url, key, cfg.max_connections);
        Stripe::with_wire(cfg, Arc::new(wire), http, Clock::Real)
    }

    /// Stripe behind any wire (a simulation's): retries back off on `clock`.
    pub fn with_wire(
        cfg: &StripeConfig,
        wire: Arc<dyn StripeWire>,
        http: reqwest::Client,
        clock: Clock,
    ) -> Stripe {
        let strategy = if cfg.max_attempts > 1 {
            RequestStrategy::ExponentialBackoff(cfg.max_attempts)
        } else {
            RequestStrategy::Once
        };
        // The limit protects Stripe's quota, on real time. A simulated Stripe on a virtual
        // clock has no quota, and throttling it in real time would make a simulation of a
        // 500-payment reconcile take 20 s instead of milliseconds.
        let limiter = NonZeroU32::new(cfg.max_requests_per_second)
            .filter(|_| !clock.is_virtual())
            .map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n))));
        Stripe {
            api: Arc::new(Api {
                wire,
                strategy,
                timeout: cfg.timeout,
                clock,
            }),
            http,
            cfg: cfg.clone(),
            limiter,
        }
    }

    /// The shared HTTP client (webhook probes).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &StripeConfig {
        &self.cfg
    }

    /// The client to send requests through, once a key is held.
    fn client(&self) -> Result<&Api, StripeCallError> {
        let held = self.api.wire.key();
        if held.key.is_none() {
            return Err(StripeCallError::NoKey(held.error.unwrap_or_else(|| {
                "set [stripe] api_key_env or api_key_file".into()
            })));
        }
        Ok(&self.api)
    }

    /// Waits for a slot under `max_requests_per_second`.
    pub async fn throttle(&self) {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
    }

    /// One PaymentIntent; `None` when Stripe does not know it (404).
    pub async fn payment_intent(&self, id: &str) -> Result<Option<IntentSummary>, StripeCallError> {
        let client = self.client()?;
        self.throttle().await;
        match RetrievePaymentIntent::new(id).send(client).await {
            Ok(pi) => Ok(Some(pi.into())),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PaymentIntents whose `metadata.payment_id` is `payment_id` (the app sets it on
    /// creation), found with Stripe's search API.
    pub async fn intents_for_payment(
        &self,
        payment_id: &str,
    ) -> Result<Vec<IntentSummary>, StripeCallError> {
        let client = self.client()?;
        self.throttle().await;
        let query = format!("metadata['payment_id']:'{}'", payment_id.replace('\'', ""));
        let list = SearchPaymentIntent::new(query)
            .limit(10)
            .send(client)
            .await?;
        Ok(list.data.into_iter().map(Into::into).collect())
    }

    /// Events since `since` (unix seconds) that Stripe failed to deliver to a webhook.
    pub async fn failed_events(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StripeCallError> {
        let client = self.client()?;
        self.throttle().await;
        let list = ListEvent::new()
            .delivery_success(false)
            .created(stripe_types::RangeQueryTs::Bounds(
                stripe_types::RangeBoundsTs {
                    gte: Some(since),
                    ..Default::default()
                },
            ))
            .limit(limit.clamp(1, 100))
            .send(client)
            .await?;
        Ok(list
            .data
            .into_iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id.as_str(),
                    "type": e.type_.as_str(),
                    "created": e.created,
                    "pending_webhooks": e.pending_webhooks,
                })
            })
            .collect())
    }

    /// How many events of `types` Stripe created in `[since, until]` (unix seconds), reading
    /// at most `max_pages` pages of 100; the flag says whether the count is complete.
    pub async fn count_events(
        &self,
        since: i64,
        until: i64,
        types: &[String],
        max_pages: usize,
    ) -> Result<(usize, bool), StripeCallError> {
        let client = self.client()?;
        let mut count = 0;
        let mut after: Option<String> = None;
        for _ in 0..max_pages {
            self.throttle().await;
            let mut req = ListEvent::new()
                .created(stripe_types::RangeQueryTs::Bounds(
                    stripe_types::RangeBoundsTs {
                        gte: Some(since),
                        lte: Some(until),
                        ..Default::default()
                    },
                ))
                .limit(100);
            if !types.is_empty() {
                req = req.types(types.to_vec());
            }
            if let Some(a) = &after {
                req = req.starting_after(a.clone());
            }
            let page = req.send(client).await?;
            count += page.data.len();
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.as_str().to_string()),
                _ => return Ok((count, true)),
            }
        }
        Ok((count, false))
    }

    /// Webhook endpoints configured in Stripe, and whether they are enabled.
    pub async fn webhook_endpoints(&self) -> Result<Vec<serde_json::Value>, StripeCallError> {
        let client = self.client()?;
        self.throttle().await;
        let list = stripe_misc::webhook_endpoint::ListWebhookEndpoint::new()
            .limit(100)
            .send(client)
            .await?;
        Ok(list
            .data
            .into_iter()
            .map(|w| {
                serde_json::json!({
                    "id": w.id.as_str(),
                    "url": w.url,
                    "status": w.status,
                    "enabled_events": w.enabled_events,
                })
            })
            .collect())
    }
}
