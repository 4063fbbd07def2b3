//! Stripe, simulated: status page, API reachability, the key and how Stripe takes it,
//! PaymentIntents, events and webhook delivery — what the `stripe::*` and `webhooks::*`
//! primitives answer in a simulation.

use super::World;
use crate::primitives::{
    stripe::{IntentSummary, KeyInfo, Ping, StatusPage, StripeCallError},
    webhooks::Probe,
};

impl World {
    /// Fails a request the way the real Stripe would in this world's state.
    fn stripe_gate(&self) -> Result<(), StripeCallError> {
        let s = self.state();
        let st = &s.stripe;
        if st.api_down {
            return Err(StripeCallError::Connection(
                "error sending request: connection refused (simulated outage)".into(),
            ));
        }
        if st.key.is_none() {
            return Err(StripeCallError::NoKey(
                "set [stripe] api_key_env or api_key_file".into(),
            ));
        }
        if st.key_rejected {
            return Err(StripeCallError::Api {
                status: 401,
                code: None,
                message: "Invalid API Key provided (simulated)".into(),
            });
        }
        if st.rate_limited {
            return Err(StripeCallError::Api {
                status: 429,
                code: Some("rate_limit".into()),
                message: "Too many requests (simulated)".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn sim_status_page(&self) -> StatusPage {
        let s = self.state();
        let st = &s.stripe;
        if st.status_page_down {
            return StatusPage {
                indicator: "unknown".into(),
                description: String::new(),
                operational: false,
                error: Some("cannot fetch the status page (simulated)".into()),
                latency_ms: st.latency_ms,
            };
        }
        StatusPage {
            operational: st.indicator == "none",
            indicator: st.indicator.clone(),
            description: st.description.clone(),
            error: None,
            latency_ms: st.latency_ms,
        }
    }

    pub(crate) fn sim_ping(&self) -> Ping {
        let latency_ms = self.state().stripe.latency_ms;
        let (result, message) = match self.stripe_gate() {
            Ok(()) => ("connected", "account acct_simulated".to_string()),
            Err(e @ StripeCallError::NoKey(_)) => ("auth_error", e.to_string()),
            Err(e @ StripeCallError::Connection(_)) => ("connection_error", e.to_string()),
            Err(e) => match e.status() {
                Some(401) => ("auth_error", e.to_string()),
                Some(429) => ("rate_limited", e.to_string()),
                _ => ("error", e.to_string()),
            },
        };
        Ping {
            result: result.into(),
            message,
            latency_ms,
        }
    }

    pub(crate) fn sim_key_info(&self, expected_mode: &str) -> KeyInfo {
        let key = self.state().stripe.key.clone();
        let source = "the simulated world".to_string();
        let Some(k) = key else {
            return KeyInfo {
                set: false,
                prefix: None,
                mode: "unknown".into(),
                expected_mode: expected_mode.into(),
                matches_expected: false,
                source,
            };
        };
        let mode = crate::primitives::stripe::key_mode(&k);
        KeyInfo {
            set: true,
            prefix: Some(k.chars().take(7).collect()),
            matches_expected: mode.ends_with(expected_mode),
            mode: mode.into(),
            expected_mode: expected_mode.into(),
            source,
        }
    }

    fn intent_view(id: &str, i: &super::SimIntent) -> IntentSummary {
        IntentSummary {
            id: id.into(),
            status: i.status.clone(),
            amount: i.amount,
            currency: "usd".into(),
            created: i.created_ms / 1000,
            livemode: false,
            metadata: i
                .payment_id
                .iter()
                .map(|p| ("payment_id".to_string(), p.clone()))
                .collect(),
            last_payment_error: None,
        }
    }

    pub(crate) fn sim_payment_intent(
        &self,
        id: &str,
    ) -> Result<Option<IntentSummary>, StripeCallError> {
        self.stripe_gate()?;
        Ok(self
            .state()
            .stripe
            .intents
            .get(id)
            .map(|i| Self::intent_view(id, i)))
    }

    pub(crate) fn sim_intents_for_payment(
        &self,
        payment_id: &str,
    ) -> Result<Vec<IntentSummary>, StripeCallError> {
        self.stripe_gate()?;
        Ok(self
            .state()
            .stripe
            .intents
            .iter()
            .filter(|(_, i)| i.payment_id.as_deref() == Some(payment_id))
            .map(|(id, i)| Self::intent_view(id, i))
            .collect())
    }

    pub(crate) fn sim_failed_events(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StripeCallError> {
        self.stripe_gate()?;
        Ok(self
            .state()
            .stripe
            .events
            .iter()
            .filter(|e| !e.delivered && e.created_ms / 1000 >= since)
            .take(limit.clamp(1, 100) as usize)
            .map(|e| {
                serde_json::json!({
                    "id": e.id, "type": e.kind, "created": e.created_ms / 1000, "pending_webhooks": 1,
                })
            })
            .collect())
    }

    pub(crate) fn sim_count_events(
        &self,
        since: i64,
        until: i64,
        types: &[String],
    ) -> Result<(usize, bool), StripeCallError> {
        self.stripe_gate()?;
        let n = self
            .state()
            .stripe
            .events
            .iter()
            .filter(|e| (since..=until).contains(&(e.created_ms / 1000)))
            .filter(|e| types.is_empty() || types.contains(&e.kind))
            .count();
        Ok((n, true))
    }

    pub(crate) fn sim_webhook_endpoints(&self) -> Result<Vec<serde_json::Value>, StripeCallError> {
        self.stripe_gate()?;
        Ok(vec![serde_json::json!({
            "id": "we_simulated",
            "url": "https://debtflow.example.com/api/v1/payments/webhook/stripe/",
            "status": "enabled",
            "enabled_events": ["payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded", "charge.dispute.created"],
        })])
    }

    /// The app's webhook endpoint answering an unsigned `{}`.
    pub(crate) fn sim_probe(&self, url: &str) -> Probe {
        let status = self.state().webhook_endpoint;
        crate::primitives::webhooks::judge_probe(
            url,
            status.ok_or("connection refused (simulated)"),
            3.0,
        )
    }
}
