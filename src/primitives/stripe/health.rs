//! The runbook's first look at Stripe: its public status page (Step 1), an authenticated
//! `GET /v1/account` (Step 6) and which key runbookd holds — answers that never fail, each
//! saying what it found or why it could not look.

use std::time::Instant;

use secrecy::ExposeSecret;
use serde::Serialize;
use stripe_client_core::{RequestStrategy, StripeMethod, StripeRequest};

use super::{
    wire::{Target, WireRequest},
    Stripe, StripeCallError,
};

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

impl Stripe {
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
