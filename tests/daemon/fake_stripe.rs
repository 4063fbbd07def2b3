//! A fake Stripe: a real HTTP server on loopback that answers the parts of the Stripe API
//! runbookd uses, with knobs for latency, errors, rate limiting and dropped connections.
//! It also serves a status page and plays the payments app's webhook endpoint.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};

pub const GOOD_KEY: &str = "sk_test_runbookd_fake_key_0123456789";

/// What the next requests should meet.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    pub latency: Duration,
    /// Answer this many API requests with 500 (Stripe-Should-Retry: true) first.
    pub fail_500: usize,
    /// Answer this many API requests with 429 first.
    pub rate_limit_429: usize,
    /// Answer every API request with this status and a Stripe error body.
    pub answer_status: Option<u16>,
    /// Close this many connections without answering first.
    pub drop_connections: usize,
    /// Status page answer: (HTTP status, body).
    pub status_page: Option<(u16, String)>,
    /// What the app's webhook endpoint answers to an unsigned `{}`.
    pub webhook_status: Option<u16>,
    /// The signing secret the app verifies signed deliveries with (signed requests are
    /// answered 200 or 400 by it, unless `webhook_status` is a 5xx).
    pub app_secret: Option<String>,
}

#[derive(Default)]
pub struct World {
    pub intents: HashMap<String, Value>,
    pub events: Vec<Value>,
    pub behaviour: Behaviour,
    /// (path, time) of every API request.
    pub requests: Vec<(String, Instant)>,
    /// How long each answer was actually held for `latency` (what the client met).
    pub holds: Vec<Duration>,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub addr: SocketAddr,
    pub world: Arc<Mutex<World>>,
    /// TCP connections accepted so far (a pooled client keeps this low).
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"type": kind, "code": code, "message": message}})),
    )
        .into_response()
}

type Shared = Arc<Mutex<World>>;

/// Waits until `deadline` on a dedicated timer thread. tokio's timer wheel rounds each sleep
/// up to its next millisecond tick, and later still when 32 timers are due at once: a 20 ms
/// `tokio::time::sleep` held answers 21.2 ms on average, so the fake answered slower than the
/// latency it was asked for and capped any client at 94 % of the ideal rate. A thread
/// waiting with a nanosecond timeout (a futex) is not rounded: measured 20.4–21.2 ms for
/// 20 ms on a VM losing 9–38 % of its CPU to steal, against 21.5–21.7 ms for the sleep.
async fn hold_until(deadline: Instant) {
    type Due = std::sync::mpsc::Sender<(Instant, tokio::sync::oneshot::Sender<()>)>;
    static TIMER: std::sync::OnceLock<Due> = std::sync::OnceLock::new();
    let timer = TIMER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, tokio::sync::oneshot::Sender<()>)>();
        std::thread::spawn(move || {
            let mut due: std::collections::BTreeMap<
                (Instant, u64),
                tokio::sync::oneshot::Sender<()>,
            > = Default::default();
            let mut seq = 0u64;
            loop {
                let now = Instant::now();
                while let Some(entry) = due.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let _ = entry.remove().send(());
                }
                let next = match due.first_key_value() {
                    Some(((at, _), _)) => rx.recv_timeout(at.saturating_duration_since(now)),
                    None => rx
                        .recv()
                        .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
                };
                match next {
                    Ok((at, wake)) => {
                        seq += 1;
                        due.insert((at, seq), wake);
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        tx
    });
    let (wake, woken) = tokio::sync::oneshot::channel();
    if timer.send((deadline, wake)).is_err() {
        tokio::time::sleep_until(deadline.into()).await;
        return;
    }
    let _ = woken.await;
}

/// Applies latency and injected failures; `Some` is the answer to send instead.
async fn gate(world: &Shared, headers: &HeaderMap, path: &str) -> Option<Response> {
    let arrived = Instant::now();
    let behaviour = {
        let mut w = world.lock().expect("world");
        w.requests.push((path.to_string(), arrived));
        w.behaviour.clone()
    };
    if !behaviour.latency.is_zero() {
        hold_until(arrived + behaviour.latency).await;
    }
    let mut w = world.lock().expect("world");
    if !behaviour.latency.is_zero() {
        w.holds.push(arrived.elapsed());
    }
    if w.behaviour.drop_connections > 0 {
        w.behaviour.drop_connections -= 1;
        // A response the client cannot parse as HTTP ends the connection abruptly.
        return Some(panic_response());
    }
    if w.behaviour.fail_500 > 0 {
        w.behaviour.fail_500 -= 1;
        let mut r = stripe_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            "An unknown error occurred",
        );
        r.headers_mut()
            .insert("Stripe-Should-Retry", "true".parse().expect("header"));
        return Some(r);
    }
    if let Some(status) = w.behaviour.answer_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = if status.is_server_error() {
            "api_error"
        } else {
            "invalid_request_error"
        };
        return Some(stripe_error(status, kind, None, "injected failure"));
    }
    if w.behaviour.rate_limit_429 > 0 {
        w.behaviour.rate_limit_429 -= 1;
        let mut r = stripe_error(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            Some("rate_limit"),
            "Too many requests",
        );
        r.headers_mut()
            .insert("Retry-After", "1".parse().expect("header"));
        return Some(r);
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {GOOD_KEY}") {
        return Some(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "Invalid API Key provided: sk_live_****",
        ));
    }
    None
}

/// Makes hyper drop the connection: the handler panics and the connection is closed.
fn panic_response() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-length", "1000")
        .body(axum::body::Body::from("{"))
        .expect("response")
}

async fn account(State(w): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&w, &headers, "/v1/account").await {
        return r;
    }
    Json(json!({"id": "acct_fake", "object": "account", "charges_enabled": true, "country": "US"}))
        .into_response()
}

async fn payment_intent(
    State(w): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = gate(&w, &headers, "/v1/payment_intents/{id}").await {
        return r;
    }
    match w.lock().expect("world").intents.get(&id) {
        Some(pi) => Json(pi.clone()).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such payment_intent: '{id}'"),
        ),
    }
}

async fn search(
    State(w): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = gate(&w, &headers, "/v1/payment_intents/search").await {
        return r;
    }
    let query = q.get("query").cloned().unwrap_or_default();
    let wanted = query
        .strip_prefix("metadata['payment_id']:'")
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or("")
        .to_string();
    let data: Vec<Value> = w
        .lock()
        .expect("world")
        .intents
        .values()
        .filter(|pi| pi["metadata"]["payment_id"] == wanted.as_str())
        .cloned()
        .collect();
    Json(json!({"object": "search_result", "data": data, "has_more": false, "next_page": null, "url": "/v1/payment_intents/search"})).into_response()
}

async fn events(
    State(w): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = gate(&w, &headers, "/v1/events").await {
        return r;
    }
    let undelivered_only = q.get("delivery_success").map(String::as_str) == Some("false");
    let since: i64 = q
        .get("created[gte]")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let until: i64 = q
        .get("created[lte]")
        .and_then(|s| s.parse().ok())
        .unwrap_or(i64::MAX);
    // `types[]` arrives as types[0]=…&types[1]=…
    let types: Vec<&String> = q
        .iter()
        .filter(|(k, _)| k.starts_with("types"))
        .map(|(_, v)| v)
        .collect();
    let data: Vec<Value> = w
        .lock()
        .expect("world")
        .events
        .iter()
        .filter(|e| !undelivered_only || e["pending_webhooks"].as_i64().unwrap_or(0) > 0)
        .filter(|e| (since..=until).contains(&e["created"].as_i64().unwrap_or(0)))
        .filter(|e| types.is_empty() || types.iter().any(|t| e["type"] == t.as_str()))
        .cloned()
        .collect();
    Json(json!({"object": "list", "data": data, "has_more": false, "url": "/v1/events"}))
        .into_response()
}

async fn webhook_endpoints(State(w): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&w, &headers, "/v1/webhook_endpoints").await {
        return r;
    }
    Json(json!({"object": "list", "has_more": false, "url": "/v1/webhook_endpoints", "data": [{
        "id": "we_fake", "object": "webhook_endpoint", "api_version": null, "application": null,
        "created": 1764000000, "description": null, "enabled_events": ["payment_intent.succeeded", "payment_intent.payment_failed"],
        "livemode": false, "metadata": {}, "secret": null, "status": "enabled",
        "url": "https://debtflow.example.com/api/v1/payments/webhook/stripe/"
    }]})).into_response()
}

async fn status_page(State(w): State<Shared>) -> Response {
    let page = w.lock().expect("world").behaviour.status_page.clone();
    match page {
        Some((status, body)) => (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response(),
        None => Json(json!({"page": {"id": "x"}, "status": {"indicator": "none", "description": "All Systems Operational"}})).into_response(),
    }
}

async fn app_webhook(State(w): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let (configured, secret) = {
        let b = &w.lock().expect("world").behaviour;
        (b.webhook_status, b.app_secret.clone())
    };
    let mut status = configured.unwrap_or(400);
    if let (Some(sig), Some(secret)) = (headers.get("stripe-signature"), secret) {
        if status < 500 {
            let now = chrono::Utc::now().timestamp();
            let valid = runbookd::primitives::webhooks::verify_signature(
                body.as_bytes(),
                sig.to_str().unwrap_or(""),
                secret.as_bytes(),
                Duration::from_secs(300),
                now,
            )
            .is_ok();
            status = if valid { 200 } else { 400 };
        }
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        "{}",
    )
        .into_response()
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let world: Shared = Arc::new(Mutex::new(World::default()));
        let app = Router::new()
            .route("/v1/account", get(account))
            .route("/v1/payment_intents/search", get(search))
            .route("/v1/payment_intents/{id}", get(payment_intent))
            .route("/v1/events", get(events))
            .route("/v1/webhook_endpoints", get(webhook_endpoints))
            .route("/status.json", get(status_page))
            .route("/app/webhook", post(app_webhook))
            .with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Like Stripe's edge: no Nagle delay on small answers.
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe {
            addr,
            world,
            connections,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Adds a PaymentIntent (a full object, as Stripe sends it).
    pub fn intent(&self, id: &str, status: &str, payment_id: &str) {
        let mut pi: Value =
            serde_json::from_str(include_str!("../fixtures/stripe/payment_intent.json"))
                .expect("fixture");
        pi["id"] = json!(id);
        pi["status"] = json!(status);
        pi["metadata"]["payment_id"] = json!(payment_id);
        self.world
            .lock()
            .expect("world")
            .intents
            .insert(id.to_string(), pi);
    }

    pub fn behave(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.world.lock().expect("world").behaviour);
    }

    pub fn requests(&self) -> Vec<(String, Instant)> {
        self.world.lock().expect("world").requests.clone()
    }

    /// How long each answer was held for the configured latency, in order.
    #[allow(dead_code)] // read by benches/primitives.rs
    pub fn holds(&self) -> Vec<Duration> {
        self.world.lock().expect("world").holds.clone()
    }

    /// `[stripe]` config pointing at this fake; the key comes from `STRIPE_API_KEY`.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[stripe]\napi_base = \"http://{a}\"\nstatus_url = \"http://{a}/status.json\"\n\
             webhook_url = \"http://{a}/app/webhook\"\nexpected_mode = \"test\"\ntimeout = \"2s\"\n{extra}\n",
            a = self.addr
        )
    }
}
