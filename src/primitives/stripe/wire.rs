//! The wire to Stripe: one request out, one answer (status, headers that matter, body) or a
//! transport error back. Everything above it — Stripe's retry rules, error bodies, the
//! classification of `ping()` and `key_info()` — is written once in [`super::Stripe`], so the
//! production wire ([`super::http::HttpWire`], a pooled HTTPS client) and the simulated one (the world's
//! Stripe, in `world/stripe.rs`) cannot classify the same answer differently.
//!
//! async-stripe's request types build the requests; [`Api`] is the `StripeClient` they are
//! sent through. We bring our own client because async-stripe's hyper client keeps no idle
//! connections (`pool_max_idle_per_host(0)`): a TLS handshake per request. Ours keeps them,
//! and caps them (`super::http`).

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use secrecy::SecretString;
use stripe_client_core::{
    CustomizedStripeRequest, Outcome, RequestStrategy, StripeClient, StripeClientErr, StripeMethod,
};

use super::StripeCallError;
use crate::clock::Clock;

/// Where a request goes: Stripe's API (path under `/v1`) or its public status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `path` is relative to `{api_base}/v1`, e.g. `/account`.
    Api,
    /// The status page JSON (`[stripe] status_url`); unauthenticated.
    StatusPage,
}

/// One HTTP request to Stripe.
#[derive(Debug, Clone)]
pub struct WireRequest {
    pub target: Target,
    pub method: StripeMethod,
    pub path: String,
    pub query: Option<String>,
    /// Form-encoded body (POST).
    pub body: Option<String>,
    pub idempotency_key: Option<String>,
    /// Time limit of this attempt.
    pub timeout: Duration,
}

/// What Stripe answered.
#[derive(Debug, Clone)]
pub struct WireAnswer {
    pub status: u16,
    /// `Stripe-Should-Retry`, when present.
    pub should_retry: Option<bool>,
    pub body: Bytes,
    /// How long the answer took when the wire knows better than a stopwatch (a simulated
    /// Stripe reports its simulated latency); `None`: measure it.
    pub latency: Option<Duration>,
}

/// No answer at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Connection(String),
}

/// The key a wire authenticates with, and where it came from. The secret stays in this
/// module and `super`; only its prefix and mode are ever shown.
#[derive(Clone)]
pub struct HeldKey {
    pub key: Option<SecretString>,
    /// Where runbookd looked for it ("environment variable STRIPE_API_KEY").
    pub source: String,
    /// Why there is none, when reading it failed.
    pub error: Option<String>,
}

impl fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldKey")
            .field("set", &self.key.is_some())
            .field("source", &self.source)
            .finish()
    }
}

/// A transport to Stripe.
#[async_trait::async_trait]
pub trait StripeWire: Send + Sync {
    /// Sends one attempt; no retries here.
    async fn send(&self, req: WireRequest) -> Result<WireAnswer, WireError>;
    /// The key requests are sent with (read fresh: a simulation can rotate it).
    fn key(&self) -> HeldKey;
}

impl StripeClientErr for StripeCallError {
    fn deserialize_err(msg: impl fmt::Display) -> Self {
        StripeCallError::Decode(msg.to_string())
    }
}

impl From<WireError> for StripeCallError {
    fn from(e: WireError) -> Self {
        StripeCallError::Connection(e.to_string())
    }
}

/// Stripe's error body: `{"error": {"type", "code", "message"}}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

/// The error for a non-2xx answer, read from Stripe's error body when it has one.
pub fn api_error(status: u16, body: &[u8]) -> StripeCallError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => StripeCallError::Api {
            status,
            code: b.error.code,
            message: b.error.message.unwrap_or_else(|| "no message".into()),
        },
        Err(_) => StripeCallError::Api {
            status,
            code: None,
            message: "answer without a Stripe error body".into(),
        },
    }
}

/// The `StripeClient` async-stripe's requests are sent through: Stripe's retry rules
/// (`RequestStrategy::test`, `Stripe-Should-Retry`), backoff on the run's clock (virtual in
/// a simulation), one wire underneath.
pub struct Api {
    pub wire: Arc<dyn StripeWire>,
    pub strategy: RequestStrategy,
    pub timeout: Duration,
    pub clock: Clock,
}

impl Api {
    /// One request with retries; the final answer (2xx) or the last error.
    pub async fn exchange(
        &self,
        mut req: WireRequest,
        strategy: &RequestStrategy,
    ) -> Result<WireAnswer, StripeCallError> {
        req.idempotency_key = strategy.get_key().map(|k| k.as_str().to_string());
        let mut tries = 0;
        let mut last_status = None;
        let mut last_retry = None;
        let mut last_error = StripeCallError::Connection("no attempt was made".into());
        loop {
            match strategy.test(last_status, last_retry, tries) {
                Outcome::Stop => return Err(last_error),
                Outcome::Continue(wait) => {
                    if let Some(wait) = wait {
                        self.clock.sleep(wait).await;
                    }
                }
            }
            tries += 1;
            match self.wire.send(req.clone()).await {
                Err(e) => {
                    last_error = e.into();
                    last_status = None;
                    last_retry = None;
                }
                Ok(answer) if (200..300).contains(&answer.status) => return Ok(answer),
                Ok(answer) => {
                    last_error = api_error(answer.status, &answer.body);
                    last_status = Some(answer.status);
                    last_retry = answer.should_retry;
                }
            }
        }
    }
}

impl StripeClient for Api {
    type Err = StripeCallError;

    async fn execute(&self, req: CustomizedStripeRequest) -> Result<Bytes, StripeCallError> {
        let (req, config) = req.into_pieces();
        let strategy = config
            .request_strategy
            .unwrap_or_else(|| self.strategy.clone());
        let wire = WireRequest {
            target: Target::Api,
            method: req.method,
            path: req.path,
            query: req.query,
            body: req.body,
            idempotency_key: None,
            timeout: config.timeout.unwrap_or(self.timeout),
        };
        Ok(self.exchange(wire, &strategy).await?.body)
    }
}
