//! `stripe::*`: what the runbook asks of Stripe — its status page, whether our key works,
//! PaymentIntents, events that failed delivery, webhook endpoints — through `async-stripe`
//! with a configurable API base, a per-attempt timeout, Stripe's own retry rules and a
//! request-rate limit shared by every run.
//!
//! The secret key is read once at start by indirection and never leaves this module:
//! `key_info()` reports whether it is set, its first 7 characters and its mode, as the
//! runbook's own check does.

use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rhai::{Array, Dynamic, Engine, EvalAltResult, Module, INT};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use stripe::{Client, ClientBuilder, RequestStrategy, StripeError, StripeRequest};
use stripe_core::{
    event::ListEvent,
    payment_intent::{RetrievePaymentIntent, SearchPaymentIntent},
    PaymentIntent,
};

use super::{block_on, with_run};
use crate::config::{resolve_secret, StripeConfig};

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

impl From<StripeError> for StripeCallError {
    fn from(e: StripeError) -> Self {
        match e {
            StripeError::Stripe(err, status) => StripeCallError::Api {
                status,
                code: err.code.as_ref().map(|c| c.as_str().to_string()),
                message: err.message.clone().unwrap_or_else(|| "no message".into()),
            },
            StripeError::JSONDeserialize(m) => StripeCallError::Decode(m),
            StripeError::Timeout => StripeCallError::Connection("timed out".into()),
            StripeError::ClientError(m) | StripeError::ConfigError(m) => {
                StripeCallError::Connection(m)
            }
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
    client: Option<Client>,
    http: reqwest::Client,
    cfg: StripeConfig,
    key: Option<SecretString>,
    key_error: Option<String>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// In a simulation the world's Stripe answers instead.
    sim: Option<Arc<crate::world::World>>,
}

impl Stripe {
    /// Reads the key (a missing key is reported by the primitives, not at start).
    pub fn new(cfg: &StripeConfig) -> Stripe {
        let (key, key_error) = match resolve_secret(
            "stripe.api_key",
            cfg.api_key_env.as_deref(),
            cfg.api_key_file.as_deref(),
        ) {
            Ok(k) => (Some(k), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let strategy = if cfg.max_attempts > 1 {
            RequestStrategy::ExponentialBackoff(cfg.max_attempts)
        } else {
            RequestStrategy::Once
        };
        let base = format!("{}/", cfg.api_base.trim_end_matches('/'));
        let client = key.as_ref().and_then(|k| {
            ClientBuilder::new(k.expose_secret())
                .url(base.clone())
                .timeout(cfg.timeout)
                .request_strategy(strategy.clone())
                .app_info("runbookd", Some(env!("CARGO_PKG_VERSION").into()), None)
                .build()
                .ok()
        });
        let limiter = NonZeroU32::new(cfg.max_requests_per_second)
            .map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n))));
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("runbookd/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Stripe {
            client,
            http,
            cfg: cfg.clone(),
            key,
            key_error,
            limiter,
            sim: None,
        }
    }

    /// The simulated world's Stripe; no request leaves the process.
    pub fn simulated(cfg: &StripeConfig, world: Arc<crate::world::World>) -> Stripe {
        Stripe {
            client: None,
            http: reqwest::Client::new(),
            cfg: cfg.clone(),
            key: None,
            key_error: None,
            limiter: None,
            sim: Some(world),
        }
    }

    /// The simulated world behind this client, if any.
    pub fn world(&self) -> Option<&Arc<crate::world::World>> {
        self.sim.as_ref()
    }

    /// The shared HTTP client (status page, webhook probes).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The configuration this client was built from.
    pub fn config(&self) -> &StripeConfig {
        &self.cfg
    }

    fn client(&self) -> Result<&Client, StripeCallError> {
        self.client.as_ref().ok_or_else(|| {
            StripeCallError::NoKey(
                self.key_error
                    .clone()
                    .unwrap_or_else(|| "set [stripe] api_key_env or api_key_file".into()),
            )
        })
    }

    /// Waits for a slot under `max_requests_per_second`.
    pub async fn throttle(&self) {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
    }

    /// Step 1: Stripe's status page. Never fails: an unreadable page is `unknown`.
    pub async fn status_page(&self) -> StatusPage {
        if let Some(w) = &self.sim {
            return w.sim_status_page();
        }
        let started = Instant::now();
        let answer = async {
            let resp = self
                .http
                .get(&self.cfg.status_url)
                .send()
                .await
                .map_err(|e| format!("cannot fetch {}: {e}", self.cfg.status_url))?;
            let status = resp.status();
            let body = resp.text().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("status page answered {status}"));
            }
            let v: serde_json::Value = serde_json::from_str(&body)
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
        }
        .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
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
        if let Some(w) = &self.sim {
            return w.sim_ping();
        }
        let started = Instant::now();
        let outcome = match self.client() {
            Err(e) => Err(e),
            Ok(client) => {
                self.throttle().await;
                stripe_connect::account::RetrieveForMyAccountAccount::new()
                    .customize()
                    .request_strategy(RequestStrategy::Once)
                    .send(client)
                    .await
                    .map_err(StripeCallError::from)
            }
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (result, message) = match outcome {
            Ok(account) => ("connected", format!("account {}", account.id.as_str())),
            Err(e @ StripeCallError::NoKey(_)) => ("auth_error", e.to_string()),
            Err(e) => match e.status() {
                Some(401) | Some(403) => ("auth_error", e.to_string()),
                Some(429) => ("rate_limited", e.to_string()),
                Some(_) => ("error", e.to_string()),
                None if matches!(e, StripeCallError::Connection(_)) => {
                    ("connection_error", e.to_string())
                }
                None => ("error", e.to_string()),
            },
        };
        Ping {
            result: result.into(),
            message,
            latency_ms,
        }
    }

    /// Scenario 3: is the key set, and is it the kind we expect?
    pub fn key_info(&self) -> KeyInfo {
        if let Some(w) = &self.sim {
            return w.sim_key_info(&self.cfg.expected_mode);
        }
        let source = match (&self.cfg.api_key_file, &self.cfg.api_key_env) {
            (Some(f), _) => format!("file {}", f.display()),
            (None, Some(v)) => format!("environment variable {v}"),
            (None, None) => "nowhere (no api_key_env or api_key_file)".into(),
        };
        let Some(key) = &self.key else {
            return KeyInfo {
                set: false,
                prefix: None,
                mode: "unknown".into(),
                expected_mode: self.cfg.expected_mode.clone(),
                matches_expected: false,
                source,
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
            source,
        }
    }

    /// One PaymentIntent; `None` when Stripe does not know it (404).
    pub async fn payment_intent(&self, id: &str) -> Result<Option<IntentSummary>, StripeCallError> {
        if let Some(w) = &self.sim {
            return w.sim_payment_intent(id);
        }
        let client = self.client()?;
        self.throttle().await;
        match RetrievePaymentIntent::new(id).send(client).await {
            Ok(pi) => Ok(Some(pi.into())),
            Err(e) => {
                let e = StripeCallError::from(e);
                if e.status() == Some(404) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// PaymentIntents whose `metadata.payment_id` is `payment_id` (the app sets it on
    /// creation), found with Stripe's search API.
    pub async fn intents_for_payment(
        &self,
        payment_id: &str,
    ) -> Result<Vec<IntentSummary>, StripeCallError> {
        if let Some(w) = &self.sim {
            return w.sim_intents_for_payment(payment_id);
        }
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
        if let Some(w) = &self.sim {
            return w.sim_failed_events(since, limit);
        }
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
        if let Some(w) = &self.sim {
            return w.sim_count_events(since, until, types);
        }
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
        if let Some(w) = &self.sim {
            return w.sim_webhook_endpoints();
        }
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

const LIMIT: Duration = Duration::from_secs(60);

fn stripe() -> Result<Stripe, Box<EvalAltResult>> {
    with_run("stripe", |ctx| Ok(ctx.services.stripe.clone()))
}

fn dynamic<T: Serialize>(v: &T) -> Result<Dynamic, Box<EvalAltResult>> {
    rhai::serde::to_dynamic(v)
}

fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("status", || {
        let s = stripe()?;
        let page = block_on("stripe::status", LIMIT, async move {
            Ok::<_, std::convert::Infallible>(s.status_page().await)
        })?;
        dynamic(&page)
    });
    m.set_native_fn("ping", || {
        let s = stripe()?;
        let ping = block_on("stripe::ping", LIMIT, async move {
            Ok::<_, std::convert::Infallible>(s.ping().await)
        })?;
        dynamic(&ping)
    });
    m.set_native_fn("key_info", || dynamic(&stripe()?.key_info()));
    m.set_native_fn("payment_intent", |id: &str| {
        let s = stripe()?;
        let id = id.to_string();
        let pi = block_on("stripe::payment_intent", LIMIT, async move {
            s.payment_intent(&id).await
        })?;
        match pi {
            Some(pi) => dynamic(&pi),
            None => Ok(Dynamic::UNIT),
        }
    });
    m.set_native_fn("intents_for_payment", |payment_id: &str| {
        let s = stripe()?;
        let id = payment_id.to_string();
        let list = block_on("stripe::intents_for_payment", LIMIT, async move {
            s.intents_for_payment(&id).await
        })?;
        list.iter().map(dynamic).collect::<Result<Array, _>>()
    });
    m.set_native_fn("failed_events", |since_seconds_ago: INT| {
        let s = stripe()?;
        let now = with_run("stripe::failed_events", |ctx| {
            Ok(ctx.services.clock.now_ms())
        })?;
        let since = now / 1000 - since_seconds_ago.max(0);
        let list = block_on("stripe::failed_events", LIMIT, async move {
            s.failed_events(since, 100).await
        })?;
        list.iter().map(dynamic).collect::<Result<Array, _>>()
    });
    m.set_native_fn("webhook_endpoints", || {
        let s = stripe()?;
        let list = block_on("stripe::webhook_endpoints", LIMIT, async move {
            s.webhook_endpoints().await
        })?;
        list.iter().map(dynamic).collect::<Result<Array, _>>()
    });
    m
}

pub fn register(engine: &mut Engine) {
    engine.register_static_module("stripe", module().into());
}
