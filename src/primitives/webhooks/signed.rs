//! `webhooks::signed_probe()`: "verify the webhook secret is correct" (runbook Scenario 3
//! step 3, Scenario 5) without asking anyone for the app's copy of it. runbookd posts a
//! harmless event, of a type the app does not handle, signed with runbookd's copy of the
//! signing secret as Stripe signs (`Stripe-Signature: t=TS,v1=HMAC-SHA256(secret, "TS.body")`),
//! to the app's webhook endpoint: 400 means the app verifies with a different secret, 2xx that
//! they match.
//!
//! Opt-in (`[webhooks] signed_probe = true`): the app records every event it accepts, so a
//! probe leaves one `webhook_received` row of type [`PROBE_EVENT_TYPE`] — which runbookd's own
//! delivery counts leave out.

use std::time::Instant;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use super::Probe;

/// The event type of a signed probe: no Stripe event has it, so the app ignores it after
/// checking the signature, and runbookd's delivery counts can leave its row out.
pub const PROBE_EVENT_TYPE: &str = "runbookd.webhook_probe";

/// The probe's body: a Stripe event envelope with nothing in it.
pub fn probe_event(id: &str, created: i64) -> String {
    serde_json::json!({
        "id": id,
        "object": "event",
        "type": PROBE_EVENT_TYPE,
        "created": created,
        "livemode": false,
        "pending_webhooks": 0,
        "data": { "object": {} },
        "request": { "id": null, "idempotency_key": null },
    })
    .to_string()
}

/// The `Stripe-Signature` header Stripe would send for `payload` at `t`.
pub fn sign(payload: &[u8], secret: &[u8], t: i64) -> String {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return format!("t={t}"),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The runbook's reading of the endpoint's answer to a signed event.
pub fn judge_signed(
    url: &str,
    answer: Result<u16, impl std::fmt::Display>,
    latency_ms: f64,
) -> Probe {
    let (status, ok, verdict) = match answer {
        Ok(s @ 200..=299) => (
            Some(s),
            true,
            format!("match: the app accepted an event signed with runbookd's secret ({s})"),
        ),
        Ok(400) => (
            Some(400),
            false,
            "mismatch: the app refused an event signed with runbookd's secret (400) — the STRIPE_WEBHOOK_SECRET it verifies with is not the endpoint's signing secret; copy it from Stripe Dashboard > Webhooks into the app's settings".to_string(),
        ),
        Ok(s) if s >= 500 => (
            Some(s),
            false,
            format!("broken: the webhook handler fails with {s} on a signed event"),
        ),
        Ok(s) => (Some(s), false, format!("unexpected: {s} to a signed event (expected 2xx or 400)")),
        Err(e) => (None, false, format!("unreachable: {e}")),
    };
    Probe {
        url: url.into(),
        status,
        latency_ms,
        ok,
        verdict,
    }
}

/// Posts a signed probe over HTTP.
pub async fn deliver(
    http: &reqwest::Client,
    url: &str,
    payload: String,
    signature: String,
) -> Probe {
    let started = Instant::now();
    let answer = http
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", signature)
        .body(payload)
        .send()
        .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    judge_signed(
        url,
        answer
            .map(|r| r.status().as_u16())
            .map_err(|e| e.without_url().to_string()),
        latency_ms,
    )
}

/// Signs `payload` with the secret runbookd holds; `None` when it holds none.
pub fn signature(secret: &super::WebhookSecret, payload: &str, t: i64) -> Option<String> {
    secret
        .0
        .as_ref()
        .map(|s| sign(payload.as_bytes(), s.expose_secret().as_bytes(), t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_probe_verifies_with_the_same_secret_only() {
        let body = probe_event("evt_probe_1", 1_700_000_000);
        let header = sign(body.as_bytes(), b"whsec_a", 1_700_000_000);
        let tol = std::time::Duration::from_secs(300);
        assert_eq!(
            super::super::verify_signature(
                body.as_bytes(),
                &header,
                b"whsec_a",
                tol,
                1_700_000_010
            ),
            Ok(1_700_000_000)
        );
        assert!(super::super::verify_signature(
            body.as_bytes(),
            &header,
            b"whsec_b",
            tol,
            1_700_000_010
        )
        .is_err());
        assert!(body.contains(PROBE_EVENT_TYPE));
    }

    #[test]
    fn answers_are_read_as_the_runbook_would() {
        assert!(judge_signed("u", Ok::<u16, String>(200), 1.0).ok);
        let m = judge_signed("u", Ok::<u16, String>(400), 1.0);
        assert!(!m.ok && m.verdict.starts_with("mismatch"));
        assert!(judge_signed("u", Ok::<u16, String>(500), 1.0)
            .verdict
            .starts_with("broken"));
        assert!(judge_signed("u", Err::<u16, _>("refused"), 1.0)
            .verdict
            .starts_with("unreachable"));
    }
}
