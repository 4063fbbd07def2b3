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

pub mod http;
mod script;
pub mod wire;

use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use serde::Serialize;
use stripe_client_core::{RequestStrategy, StripeMethod, StripeRequest};
use stripe_core::{
    event::ListEvent,
    payment_intent::{RetrievePaymentIntent, SearchPaymentIntent},
    PaymentIntent,
};

use self::http::HttpWire;
pub use self::script::register;
use self::wire::{Api, HeldKey, StripeWire, Target, WireRequest};
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

/// The status page's answer (or why there is none).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusPage {
    /// `none`, `minor`, `major`, `critical`, or `unknown` when the page could not be read.
    pub indicator: String,
    pub description: String,
    /// True when Stripe reports no incident.
    pub operational: bool,
    pub error: Option<String>,
    pub latency_ms: f64,
}

/// Result of `ping()`: `GET /v1/account`, classified as the runbook's Step 6 does.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ping {
    /// `connected`, `auth_error`, `connection_error`, `rate_limited` or `error`.
    pub result: String,
    pub message: String,
    pub latency_ms: f64,
}

/// What the runbook's Scenario 3 checks about the key — never the key itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyInfo {
    pub set: bool,
    /// First 7 characters (`sk_live`, `sk_test`, `rk_live`...).
    pub prefix: Option<String>,
    /// `live`, `test`, `restricted_live`, `restricted_test` or `unknown`.
    pub mode: String,
    pub expected_mode: String,
    pub matches_expected: bool,
    /// Where runbookd looked for it.
    pub source: String,
}

/// The kind of key from its prefix: `live`, `test`, `restricted_live`, `restricted_test`
/// or `unknown`.
pub fn key_mode(key: &str) -> &'static str {
    if key.starts_with("sk_live_") {
        "live"
    } else if key.starts_with("sk_test_") {
        "test"
    } else if key.starts_with("rk_live_") {
        "restricted_live"
    } else if key.starts_with("rk_test_") {
        "restricted_test"
    } else {
        "unknown"
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

    /// Step 1: Stripe's status page. Never fails: an unreadable page is `unknown`.
    pub async fn status_page(&self) -> StatusPage {
        let started = Instant::now();
        let request = WireRequest {
            target: Target::StatusPage,
            method: StripeMethod::Get,
            path: String::new(),
            query: None,
            body: None,
            idempotency_key: None,
            timeout: self.cfg.timeout,
        };
        let sent = self.api.wire.send(request).await;
        let latency_ms = match &sent {
            Ok(a) if a.latency.is_some() => a.latency.unwrap_or_default().as_secs_f64() * 1000.0,
            _ => started.elapsed().as_secs_f64() * 1000.0,
        };
        let answer = (|| {
            let a = sent.map_err(|e| format!("cannot fetch {}: {e}", self.cfg.status_url))?;
            if !(200..300).contains(&a.status) {
                return Err(format!("status page answered {}", a.status));
            }
            let v: serde_json::Value = serde_json::from_slice(&a.body)
                .map_err(|_| "status page did not answer JSON".to_string())?;
            let indicator = v["status"]["indicator"]
                .as_str()
                .ok_or("status page JSON has no status.indicator")?
                .to_string();
            if !matches!(indicator.as_str(), "none" | "minor" | "major" | "critical") {
                return Err(format!("unknown status indicator `{indicator}`"));
            }
            let description = v["status"]["description"]
                .as_str()
                .unwrap_or("")
                .to_string();
            Ok((indicator, description))
        })();
        match answer {
            Ok((indicator, description)) => StatusPage {
                operational: indicator == "none",
                indicator,
                description,
                error: None,
                latency_ms,
            },
            Err(e) => StatusPage {
                indicator: "unknown".into(),
                description: String::new(),
                operational: false,
                error: Some(e),
                latency_ms,
            },
        }
    }

    /// Step 6: `GET /v1/account` with our key, classified.
    pub async fn ping(&self) -> Ping {
        let started = Instant::now();
        let outcome = match self.client() {
            Err(e) => Err(e),
            Ok(api) => {
                self.throttle().await;
                let req = stripe_connect::account::RetrieveForMyAccountAccount::new().build();
                let wire = WireRequest {
                    target: Target::Api,
                    method: req.method,
                    path: req.path,
                    query: req.query,
                    body: None,
                    idempotency_key: None,
                    timeout: self.cfg.timeout,
                };
                api.exchange(wire, &RequestStrategy::Once).await
            }
        };
        let measured = started.elapsed().as_secs_f64() * 1000.0;
        let (result, message, latency_ms) = match outcome {
            Ok(answer) => {
                let latency = answer
                    .latency
                    .map(|l| l.as_secs_f64() * 1000.0)
                    .unwrap_or(measured);
                match serde_json::from_slice::<serde_json::Value>(&answer.body) {
                    Ok(v) => match v["id"].as_str() {
                        Some(id) => ("connected", format!("account {id}"), latency),
                        None => (
                            "error",
                            "Stripe answered an account without an id".into(),
                            latency,
                        ),
                    },
                    Err(_) => (
                        "error",
                        "Stripe sent an answer runbookd cannot read".into(),
                        latency,
                    ),
                }
            }
            Err(e) => {
                let (result, message) = classify_ping(&e);
                (result, message, measured)
            }
        };
        Ping {
            result: result.into(),
            message,
            latency_ms,
        }
    }

    /// Scenario 3: is the key set, and is it the kind we expect?
    pub fn key_info(&self) -> KeyInfo {
        let held = self.api.wire.key();
        let Some(key) = &held.key else {
            return KeyInfo {
                set: false,
                prefix: None,
                mode: "unknown".into(),
                expected_mode: self.cfg.expected_mode.clone(),
                matches_expected: false,
                source: held.source,
            };
        };
        let k = key.expose_secret();
        let mode = key_mode(k);
        KeyInfo {
            set: true,
            prefix: Some(k.chars().take(7).collect()),
            matches_expected: mode.ends_with(self.cfg.expected_mode.as_str()),
            mode: mode.into(),
            expected_mode: self.cfg.expected_mode.clone(),
            source: held.source,
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

/// What a failed `GET /v1/account` means, as the runbook's Step 6 reads it.
pub fn classify_ping(e: &StripeCallError) -> (&'static str, String) {
    let result = match e {
        StripeCallError::NoKey(_) => "auth_error",
        StripeCallError::Connection(_) => "connection_error",
        StripeCallError::Decode(_) => "error",
        StripeCallError::Api { status, .. } => match status {
            401 | 403 => "auth_error",
            429 => "rate_limited",
            _ => "error",
        },
    };
    (result, e.to_string())
}
