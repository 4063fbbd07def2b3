//! Stripe, simulated at the wire: the world answers the HTTP requests runbookd's Stripe
//! client sends — status codes, Stripe's error bodies, JSON shaped as Stripe's, refused
//! connections, latency — so everything above the wire (retries, `ping()` and `key_info()`
//! classification, 404 ⇒ no such intent) is production's code.

use std::{collections::HashMap, sync::Arc, time::Duration};

use secrecy::SecretString;
use serde_json::{json, Value};

use crate::primitives::{
    stripe::wire::{HeldKey, StripeWire, Target, WireAnswer, WireError, WireRequest},
    webhooks::{Probe, WebhookEndpoint},
};
use crate::sim::{SimIntent, World};

/// The world's Stripe behind the [`StripeWire`] interface.
pub struct SimStripeWire {
    pub world: Arc<World>,
}

fn answer(status: u16, body: Value, latency_ms: f64) -> WireAnswer {
    WireAnswer {
        status,
        should_retry: None,
        body: serde_json::to_vec(&body).unwrap_or_default().into(),
        latency: Some(Duration::from_secs_f64(latency_ms.max(0.0) / 1000.0)),
    }
}

fn error(
    status: u16,
    kind: &str,
    code: Option<&str>,
    message: &str,
    latency_ms: f64,
) -> WireAnswer {
    answer(
        status,
        json!({"error": {"type": kind, "code": code, "message": message}}),
        latency_ms,
    )
}

/// A PaymentIntent as Stripe's API returns it.
fn intent_json(id: &str, i: &SimIntent) -> Value {
    let mut v: Value =
        serde_json::from_str(include_str!("payment_intent.json")).unwrap_or_default();
    v["id"] = id.into();
    v["status"] = i.status.as_str().into();
    v["amount"] = i.amount.into();
    v["amount_received"] = if i.status == "succeeded" { i.amount } else { 0 }.into();
    v["created"] = (i.created_ms / 1000).into();
    v["client_secret"] = format!("{id}_secret_redacted").into();
    v["latest_charge"] = Value::Null;
    v["metadata"] = match &i.payment_id {
        Some(p) => json!({ "payment_id": p }),
        None => json!({}),
    };
    v
}

fn list(object: &str, url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({"object": object, "url": url, "data": data, "has_more": has_more, "next_page": null})
}

impl SimStripeWire {
    fn api(&self, req: &WireRequest) -> Result<WireAnswer, WireError> {
        let s = self.world.state();
        let st = &s.stripe;
        let lat = st.latency_ms;
        if st.api_down {
            return Err(WireError::Connection(
                "error sending request: connection refused (simulated outage)".into(),
            ));
        }
        if st.key_rejected {
            return Ok(error(
                401,
                "invalid_request_error",
                None,
                "Invalid API Key provided (simulated)",
                lat,
            ));
        }
        if let Some(status) = st.answer_status {
            let kind = if status >= 500 {
                "api_error"
            } else {
                "invalid_request_error"
            };
            return Ok(error(status, kind, None, "simulated failure", lat));
        }
        if st.rate_limited {
            return Ok(error(
                429,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests (simulated)",
                lat,
            ));
        }
        let q: HashMap<String, String> =
            url::form_urlencoded::parse(req.query.as_deref().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let path = req.path.as_str();
        Ok(match path {
            "/account" => answer(
                200,
                json!({"id": "acct_simulated", "object": "account"}),
                lat,
            ),
            "/payment_intents/search" => {
                let wanted = q
                    .get("query")
                    .and_then(|q| q.strip_prefix("metadata['payment_id']:'"))
                    .and_then(|q| q.strip_suffix('\''))
                    .unwrap_or("");
                let data = st
                    .intents
                    .iter()
                    .filter(|(_, i)| i.payment_id.as_deref() == Some(wanted))
                    .map(|(id, i)| intent_json(id, i))
                    .collect();
                answer(200, list("search_result", path, data, false), lat)
            }
            "/events" => {
                let since: i64 = q
                    .get("created[gte]")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let until: i64 = q
                    .get("created[lte]")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(i64::MAX);
                let undelivered = q.get("delivery_success").map(String::as_str) == Some("false");
                let types: Vec<&String> = q
                    .iter()
                    .filter(|(k, _)| k.starts_with("types"))
                    .map(|(_, v)| v)
                    .collect();
                let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(10);
                let after = q.get("starting_after");
                let mut matching = st
                    .events
                    .iter()
                    .filter(|e| !undelivered || !e.delivered)
                    .filter(|e| (since..=until).contains(&(e.created_ms / 1000)))
                    .filter(|e| types.is_empty() || types.iter().any(|t| **t == e.kind))
                    .skip_while(|e| after.is_some_and(|a| *a != e.id))
                    .skip(usize::from(after.is_some()));
                let data: Vec<Value> = matching
                    .by_ref()
                    .take(limit)
                    .map(|e| {
                        json!({
                            "id": e.id, "object": "event", "type": e.kind,
                            "created": e.created_ms / 1000,
                            "pending_webhooks": i64::from(!e.delivered),
                            "livemode": false, "api_version": "2024-06-20", "account": null,
                            "context": null, "request": {"id": null, "idempotency_key": null},
                            "data": {"object": {"id": "pi_simulated", "object": "payment_intent"}}
                        })
                    })
                    .collect();
                let more = matching.next().is_some();
                answer(200, list("list", path, data, more), lat)
            }
            "/webhook_endpoints" => answer(
                200,
                list(
                    "list",
                    path,
                    vec![json!({
                        "id": "we_simulated", "object": "webhook_endpoint", "api_version": null,
                        "application": null, "created": 1764000000, "description": null,
                        "enabled_events": ["payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded", "charge.dispute.created"],
                        "livemode": false, "metadata": {}, "secret": null, "status": "enabled",
                        "url": "https://debtflow.example.com/api/v1/payments/webhook/stripe/"
                    })],
                    false,
                ),
                lat,
            ),
            p => match p.strip_prefix("/payment_intents/") {
                Some(id) => match st.intents.get(id) {
                    Some(i) => answer(200, intent_json(id, i), lat),
                    None => error(
                        404,
                        "invalid_request_error",
                        Some("resource_missing"),
                        &format!("No such payment_intent: '{id}'"),
                        lat,
                    ),
                },
                None => error(
                    404,
                    "invalid_request_error",
                    None,
                    &format!("Unrecognized request URL (GET: /v1{p}) (simulated)"),
                    lat,
                ),
            },
        })
    }

    fn status_page(&self) -> Result<WireAnswer, WireError> {
        let s = self.world.state();
        let st = &s.stripe;
        if st.status_page_down {
            return Err(WireError::Connection(
                "connection refused (simulated)".into(),
            ));
        }
        Ok(answer(
            200,
            json!({"page": {"id": "simulated"}, "status": {"indicator": st.indicator, "description": st.description}}),
            st.latency_ms,
        ))
    }
}

#[async_trait::async_trait]
impl StripeWire for SimStripeWire {
    async fn send(&self, req: WireRequest) -> Result<WireAnswer, WireError> {
        match req.target {
            Target::Api => self.api(&req),
            Target::StatusPage => self.status_page(),
        }
    }

    fn key(&self) -> HeldKey {
        HeldKey {
            key: self
                .world
                .state()
                .stripe
                .key
                .clone()
                .map(SecretString::from),
            source: "the simulated world".into(),
            error: None,
        }
    }
}

/// Where the simulated app's webhook endpoint lives (unless `[stripe] webhook_url` says).
pub const SIMULATED_ENDPOINT: &str = "https://debtflow.example.com/api/v1/payments/webhook/stripe/";

/// The simulated app's webhook endpoint: answers an unsigned `{}` with the world's status.
pub struct SimEndpoint {
    pub world: Arc<World>,
    pub url: String,
}

#[async_trait::async_trait]
impl WebhookEndpoint for SimEndpoint {
    fn url(&self) -> Option<String> {
        (!self.world.state().webhook_url_unset).then(|| self.url.clone())
    }

    async fn signed_probe(&self, url: &str, payload: String, signature: String) -> Probe {
        // The simulated app checks the signature as the app does, with its own copy.
        let (status, secret) = {
            let s = self.world.state();
            (
                s.webhook_endpoint,
                s.app_webhook_secret.clone().or(s.webhook_secret.clone()),
            )
        };
        let now = self.world.clock().now_ms() / 1000;
        let answer = status.ok_or("connection refused (simulated)").map(|s| {
            if s >= 500 {
                return s;
            }
            let valid = secret.is_some_and(|k| {
                crate::primitives::webhooks::verify_signature(
                    payload.as_bytes(),
                    &signature,
                    k.as_bytes(),
                    Duration::from_secs(300),
                    now,
                )
                .is_ok()
            });
            if valid {
                200
            } else {
                400
            }
        });
        crate::primitives::webhooks::signed::judge_signed(url, answer, 3.0)
    }

    async fn probe(&self, url: &str) -> Probe {
        let status = self.world.state().webhook_endpoint;
        crate::primitives::webhooks::judge_probe(
            url,
            status.ok_or("connection refused (simulated)"),
            3.0,
        )
    }
}
