//! `webhooks::*`: Stripe webhook signatures, the app's webhook endpoint, and the app's record
//! of webhooks it received (runbook Step 5 and Scenario 5), and the signed probe of the
//! app's copy of the signing secret ([`signed`]).

pub mod signed;

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rhai::{Dynamic, Engine, EvalAltResult, Module, INT};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;

use super::{act, block_on, script_error, with_run};
use crate::config::{resolve_secret, StripeConfig};

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    #[error("header has no t= timestamp")]
    NoTimestamp,
    #[error("header has no v1= signature")]
    NoSignature,
    #[error("timestamp {0} is outside the tolerance")]
    OutsideTolerance(i64),
    #[error("no v1 signature matches the payload")]
    Mismatch,
}

/// Checks a `Stripe-Signature` header (`t=TS,v1=HEX[,v1=HEX...][,v0=...]`): HMAC-SHA256 with
/// the secret over `TS.payload`, accepted if any `v1` matches (Stripe sends several while a
/// secret is being rotated), compared in constant time, `TS` within `tolerance` of `now`.
/// Returns the signed timestamp.
pub fn verify_signature(
    payload: &[u8],
    header: &str,
    secret: &[u8],
    tolerance: Duration,
    now: i64,
) -> Result<i64, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => {
                if let Ok(bytes) = hex::decode(v) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    if (now - t).unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::OutsideTolerance(t));
    }
    for sig in signatures {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return Err(SignatureError::Mismatch);
        };
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(t);
        }
    }
    Err(SignatureError::Mismatch)
}

/// Result of probing the app's webhook endpoint with an unsigned `{}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Probe {
    pub url: String,
    /// HTTP status, or null when nothing answered.
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// True when the endpoint refused the unsigned body with 400, as it should.
    pub ok: bool,
    /// The runbook's reading of the answer.
    pub verdict: String,
}

/// Posts `{}` without a signature: a healthy handler answers 400, a broken one 500.
pub async fn probe(http: &reqwest::Client, url: &str) -> Probe {
    let started = Instant::now();
    let answer = http
        .post(url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    judge_probe(
        url,
        answer
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string()),
        latency_ms,
    )
}

/// The runbook's reading of the endpoint's answer (or of its silence).
pub fn judge_probe(
    url: &str,
    answer: Result<u16, impl std::fmt::Display>,
    latency_ms: f64,
) -> Probe {
    match answer {
        Ok(status) => {
            let verdict = match status {
                400 => "ok: unsigned request refused with 400".to_string(),
                s if s >= 500 => {
                    format!("broken: the webhook handler fails with {s} (expected 400)")
                }
                200..=299 => format!("unsafe: an unsigned webhook was accepted with {status}"),
                s => format!("unexpected: {s} (expected 400)"),
            };
            Probe {
                url: url.into(),
                status: Some(status),
                latency_ms,
                ok: status == 400,
                verdict,
            }
        }
        Err(e) => Probe {
            url: url.into(),
            status: None,
            latency_ms,
            ok: false,
            verdict: format!("unreachable: {e}"),
        },
    }
}

/// The app's webhook endpoint as `webhooks::probe` reaches it: over HTTP in production
/// ([`HttpEndpoint`]), the simulated app's in simulations.
#[async_trait::async_trait]
pub trait WebhookEndpoint: Send + Sync {
    /// The endpoint's URL when known (`[stripe] webhook_url`, or the simulated app's).
    fn url(&self) -> Option<String>;
    /// POSTs an unsigned `{}` to `url` and judges the answer.
    async fn probe(&self, url: &str) -> Probe;
    /// POSTs a signed event (`payload`, its `Stripe-Signature` header) and judges the answer.
    async fn signed_probe(&self, url: &str, payload: String, signature: String) -> Probe;
}

/// The real endpoint, through the shared HTTP client.
pub struct HttpEndpoint {
    pub http: reqwest::Client,
    pub url: Option<String>,
}

#[async_trait::async_trait]
impl WebhookEndpoint for HttpEndpoint {
    fn url(&self) -> Option<String> {
        self.url.clone()
    }

    async fn probe(&self, url: &str) -> Probe {
        probe(&self.http, url).await
    }

    async fn signed_probe(&self, url: &str, payload: String, signature: String) -> Probe {
        signed::deliver(&self.http, url, payload, signature).await
    }
}

/// The webhook signing secret, read once at start.
#[derive(Clone)]
pub struct WebhookSecret(pub(super) Option<SecretString>, String);

impl WebhookSecret {
    /// A simulated world's secret.
    pub fn simulated(secret: Option<&str>) -> WebhookSecret {
        WebhookSecret(
            secret.map(|s| SecretString::from(s.to_string())),
            "not set in the simulated world".into(),
        )
    }

    pub fn from_config(cfg: &StripeConfig) -> WebhookSecret {
        match resolve_secret(
            "stripe.webhook_secret",
            cfg.webhook_secret_env.as_deref(),
            cfg.webhook_secret_file.as_deref(),
        ) {
            Ok(s) => WebhookSecret(Some(s), String::new()),
            Err(e) => WebhookSecret(None, e.to_string()),
        }
    }

    /// Whether it is set and looks like a Stripe signing secret — never the secret.
    pub fn info(&self) -> (bool, bool) {
        match &self.0 {
            Some(s) => (true, s.expose_secret().starts_with("whsec_")),
            None => (false, false),
        }
    }
}

fn verify(payload: &str, header: &str, tolerance: INT) -> Result<Dynamic, Box<EvalAltResult>> {
    let (secret, now) = with_run("webhooks::verify", |ctx| {
        Ok((
            ctx.services.webhook_secret.clone(),
            ctx.services.clock.now_ms() / 1000,
        ))
    })?;
    let Some(key) = &secret.0 else {
        return Err(script_error(format!(
            "webhooks::verify: the webhook secret is not set ({})",
            secret.1
        )));
    };
    let result = verify_signature(
        payload.as_bytes(),
        header,
        key.expose_secret().as_bytes(),
        Duration::from_secs(tolerance.max(0) as u64),
        now,
    );
    let mut m = rhai::Map::new();
    m.insert("valid".into(), result.is_ok().into());
    match result {
        Ok(t) => {
            m.insert("timestamp".into(), t.into());
            m.insert("reason".into(), "signature matches".into());
        }
        Err(e) => {
            m.insert("reason".into(), e.to_string().into());
        }
    }
    Ok(m.into())
}

fn probe_url(url: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let (endpoint, allowed) = with_run("webhooks::probe", |ctx| {
        let s = &ctx.services;
        let allowed = s.webhook_endpoint.url().as_deref() == Some(url)
            || s.webhook_probe_allow.iter().any(|a| a == url);
        Ok((s.webhook_endpoint.clone(), allowed))
    })?;
    if !allowed {
        return Err(script_error(format!(
            "webhooks::probe: `{url}` is neither [stripe] webhook_url nor listed in [webhooks] probe_allow"
        )));
    }
    let url = url.to_string();
    let p = block_on("webhooks::probe", Duration::from_secs(60), async move {
        Ok::<_, std::convert::Infallible>(endpoint.probe(&url).await)
    })?;
    rhai::serde::to_dynamic(&p)
}

/// `webhooks::signed_probe()` — an action: it adds a row in the app.
fn signed_probe() -> Result<Dynamic, Box<EvalAltResult>> {
    let what = "webhooks::signed_probe";
    let (enabled, endpoint, secret, now_s) = with_run(what, |ctx| {
        let s = &ctx.services;
        Ok((
            s.webhook_signed_probe,
            s.webhook_endpoint.clone(),
            s.webhook_secret.clone(),
            s.clock.now_ms() / 1000,
        ))
    })?;
    if !enabled {
        return Err(script_error(format!(
            "{what}: opt-in — set [webhooks] signed_probe = true (each probe adds one webhook_received row of type {} in the app)",
            signed::PROBE_EVENT_TYPE
        )));
    }
    let url = endpoint
        .url()
        .ok_or_else(|| script_error(format!("{what}: set [stripe] webhook_url")))?;
    let event_id = format!("evt_runbookd_probe_{}", uuid::Uuid::now_v7().simple());
    let payload = signed::probe_event(&event_id, now_s);
    let signature = signed::signature(&secret, &payload, now_s).ok_or_else(|| {
        script_error(format!(
            "{what}: runbookd holds no webhook signing secret ({})",
            secret.1
        ))
    })?;
    let details =
        serde_json::json!({ "url": url, "event": event_id, "type": signed::PROBE_EVENT_TYPE });
    let target = format!("webhook:{url}");
    let done = act("webhooks.signed_probe", &target, details, || {
        let p = block_on(what, Duration::from_secs(60), async move {
            Ok::<_, std::convert::Infallible>(endpoint.signed_probe(&url, payload, signature).await)
        })?;
        serde_json::to_value(&p).map_err(|e| script_error(e.to_string()))
    })?;
    match done {
        Some(v) => rhai::serde::to_dynamic(v),
        None => rhai::serde::to_dynamic(serde_json::json!({
            "planned": true, "ok": null, "verdict": "dry run: would post a signed probe",
        })),
    }
}

fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("signed_probe", signed_probe);
    m.set_native_fn("signed_probe_enabled", || {
        crate::primitives::recorder::read("webhooks::signed_probe_enabled", vec![], || {
            with_run("webhooks::signed_probe_enabled", |ctx| {
                Ok(ctx.services.webhook_signed_probe)
            })
        })
    });
    m.set_native_fn("verify", |payload: &str, header: &str| {
        crate::primitives::recorder::read(
            "webhooks::verify",
            vec![serde_json::json!(payload), serde_json::json!(header)],
            || verify(payload, header, 300),
        )
    });
    m.set_native_fn("verify", |payload: &str, header: &str, tolerance: INT| {
        crate::primitives::recorder::read(
            "webhooks::verify",
            vec![
                serde_json::json!(payload),
                serde_json::json!(header),
                serde_json::json!(tolerance),
            ],
            || verify(payload, header, tolerance),
        )
    });
    m.set_native_fn("probe", || {
        crate::primitives::recorder::read("webhooks::probe", vec![], || {
            let url = with_run("webhooks::probe", |ctx| {
                Ok(ctx.services.webhook_endpoint.url())
            })?;
            let url = url.ok_or_else(|| {
                script_error("webhooks::probe: set [stripe] webhook_url, or pass the URL")
            })?;
            probe_url(&url)
        })
    });
    m.set_native_fn("probe", |url: &str| {
        crate::primitives::recorder::read("webhooks::probe", vec![serde_json::json!(url)], || {
            probe_url(url)
        })
    });
    m.set_native_fn("secret_info", || {
        crate::primitives::recorder::read("webhooks::secret_info", vec![], || {
            let secret = with_run("webhooks::secret_info", |ctx| {
                Ok(ctx.services.webhook_secret.clone())
            })?;
            let (set, looks_right) = secret.info();
            let mut m = rhai::Map::new();
            m.insert("set".into(), set.into());
            m.insert("looks_like_whsec".into(), looks_right.into());
            Ok(m)
        })
    });
    m.set_native_fn("received", |window: INT| {
        crate::primitives::recorder::read(
            "webhooks::received",
            vec![serde_json::json!(window)],
            || {
                let p = with_run("webhooks::received", |ctx| {
                    Ok(ctx.services.payments.clone())
                })?;
                let w = Duration::from_secs(window.max(0) as u64);
                block_on("webhooks::received", Duration::from_secs(15), async move {
                    p.backend()?.webhook_count(w).await
                })
            },
        )
    });
    m
}

pub fn register(engine: &mut Engine) {
    engine.register_static_module("webhooks", module().into());
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vector made with Python's hmac:
    //   hmac.new(b'whsec_test_secret', b'1700000000.' + PAYLOAD, hashlib.sha256).hexdigest()
    const PAYLOAD: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    const SIG: &str = "22d8dc182f5c588077683bd378368e29765bfe5df2560112b4f28fef120f0e31";
    const SECRET: &[u8] = b"whsec_test_secret";
    const T: i64 = 1_700_000_000;
    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn accepts_the_python_vector() {
        let header = format!("t={T},v1={SIG}");
        assert_eq!(
            verify_signature(PAYLOAD, &header, SECRET, TOL, T + 10),
            Ok(T)
        );
    }

    #[test]
    fn accepts_any_v1_during_secret_rotation() {
        let header = format!("t={T},v1={},v1={SIG},v0=abc", "00".repeat(32));
        assert_eq!(verify_signature(PAYLOAD, &header, SECRET, TOL, T), Ok(T));
    }

    #[test]
    fn refuses_tampering_staleness_and_garbage() {
        let header = format!("t={T},v1={SIG}");
        assert_eq!(
            verify_signature(b"{}", &header, SECRET, TOL, T),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(PAYLOAD, &header, b"whsec_other", TOL, T),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(PAYLOAD, &header, SECRET, TOL, T + 301),
            Err(SignatureError::OutsideTolerance(T))
        );
        assert_eq!(
            verify_signature(PAYLOAD, &format!("v1={SIG}"), SECRET, TOL, T),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            verify_signature(PAYLOAD, &format!("t={T},v0={SIG}"), SECRET, TOL, T),
            Err(SignatureError::NoSignature)
        );
    }
}
