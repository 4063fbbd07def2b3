//! A simulated world: the payments app, its breaker, its database and Stripe, in memory and
//! on a virtual clock, behind the same primitives playbooks use in production. Playbook
//! tests (`runbookd test`), outage simulations (`runbookd simulate`) and the demo daemon
//! (`runbookd serve --world`) run the real playbook code unchanged against it.
//!
//! - [`World`]: the state (payments, webhook rows, Stripe's status page, key, PaymentIntents
//!   and events, the webhook endpoint) and the app's behaviour as time passes (while Stripe
//!   fails the app, its workers keep reopening the breaker).
//! - `payments.rs`, `stripe.rs`: what the `payments::*`, `stripe::*` and `webhooks::*`
//!   primitives answer in a simulation.
//! - [`driver::Sim`]: runs playbooks, delivers alerts, moves time and walks the escalation
//!   table — synchronously, so a simulation is deterministic.

pub mod backends;
pub mod change;
pub mod driver;
pub mod error;
pub mod playtest;
pub mod replay;
pub mod scenario;
pub mod stage;
pub mod timeline;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use futures_util::FutureExt;

use crate::{
    clock::Clock,
    primitives::{
        breaker::{BreakerError, Breakers},
        payments::Payments,
        stripe::Stripe,
        webhooks::WebhookSecret,
        Backends,
    },
};

/// One payment row of the simulated app.
#[derive(Debug, Clone)]
pub struct SimPayment {
    pub id: String,
    pub account_id: String,
    pub amount: String,
    pub status: String,
    pub processor_ref: Option<String>,
    pub metadata: serde_json::Value,
    pub created_ms: i64,
}

/// A PaymentIntent in the simulated Stripe.
#[derive(Debug, Clone)]
pub struct SimIntent {
    pub status: String,
    pub payment_id: Option<String>,
    pub amount: i64,
    pub created_ms: i64,
}

/// An event in the simulated Stripe; `delivered: false` is a failed webhook delivery.
#[derive(Debug, Clone)]
pub struct SimEvent {
    pub id: String,
    pub kind: String,
    pub created_ms: i64,
    pub delivered: bool,
}

/// Simulated Stripe.
#[derive(Debug, Clone)]
pub struct SimStripe {
    /// Status page `status.indicator`: none, minor, major, critical.
    pub indicator: String,
    pub description: String,
    /// The status page cannot be read.
    pub status_page_down: bool,
    /// The API cannot be reached (connection errors).
    pub api_down: bool,
    /// The API key runbookd holds (`None`: not set). Never shown, only classified.
    pub key: Option<String>,
    /// Stripe answers 401 to the key (expired, rotated, revoked).
    pub key_rejected: bool,
    /// Answer 429 to every request.
    pub rate_limited: bool,
    /// Answer every API request with this status and a Stripe error body (403, 500, …).
    pub answer_status: Option<u16>,
    /// Simulated API latency.
    pub latency_ms: f64,
    pub intents: BTreeMap<String, SimIntent>,
    pub events: Vec<SimEvent>,
}

impl Default for SimStripe {
    fn default() -> Self {
        SimStripe {
            indicator: "none".into(),
            description: "All Systems Operational".into(),
            status_page_down: false,
            api_down: false,
            key: Some("sk_live_simulated".into()),
            key_rejected: false,
            rate_limited: false,
            answer_status: None,
            latency_ms: 120.0,
            intents: BTreeMap::new(),
            events: Vec::new(),
        }
    }
}

/// Everything in the world that is not the breaker.
#[derive(Debug, Clone, Default)]
pub struct WorldState {
    pub payments: Vec<SimPayment>,
    /// `created_ms` of the app's `webhook_received` audit rows.
    pub webhook_rows: Vec<i64>,
    pub stripe: SimStripe,
    /// runbookd has no `[stripe] webhook_url`: the endpoint cannot be probed at all.
    pub webhook_url_unset: bool,
    /// What the app's webhook endpoint answers to an unsigned `{}`; `None`: unreachable.
    pub webhook_endpoint: Option<u16>,
    /// The webhook signing secret runbookd holds (`None`: not set).
    pub webhook_secret: Option<String>,
    /// The signing secret the app verifies deliveries with (`None`: the same as runbookd's).
    pub app_webhook_secret: Option<String>,
    /// runbookd may post signed probes (`[webhooks] signed_probe`, on in this world).
    pub signed_probe: bool,
    /// The payments database does not answer.
    pub payments_down: bool,
    /// The app's calls to Stripe fail for a reason of its own (besides Stripe being down):
    /// while time passes its workers record failures and the breaker reopens whenever it lets
    /// a request through.
    pub app_failing: bool,
    /// The app never runs its half-open trial (no traffic, or the runbook's "breaker stuck
    /// open"): only a reset closes the breaker.
    pub breaker_stuck: bool,
    /// The app's workers' log lines: (virtual ms, line).
    pub worker_logs: Vec<(i64, String)>,
    /// The app's Celery broker, workers and queues (`None`: runbookd has no broker configured).
    pub celery: Option<backends::celery::SimCelery>,
    /// The users' status page (`None`: not configured).
    pub status_page: Option<backends::statuspage::SimStatusPage>,
    /// Extra `[playbooks.settings]` for this world (tests tune playbooks this way).
    pub settings: serde_json::Map<String, serde_json::Value>,
    next_id: u64,
}

/// The simulated world. Cheap to share; all state behind one lock.
pub struct World {
    clock: Clock,
    /// `[payments] stale_after`: when the simulated monitor calls a pending payment stale.
    stale_after_ms: i64,
    /// `[celery] queue` and `payment_task`: where the world's payment tasks wait, what they
    /// are called.
    celery_names: (String, String),
    breakers: Arc<Breakers>,
    state: Mutex<WorldState>,
}

impl World {
    /// A healthy world at `start_ms` on a virtual clock (or the real clock for
    /// `serve --world`), with the configured breakers kept in memory.
    pub fn new(clock: Clock, config: &crate::config::Config) -> Arc<World> {
        let mut breakers = config.breakers.clone();
        for cfg in breakers.values_mut() {
            cfg.store = crate::config::BreakerStoreKind::Memory;
        }
        let world = Arc::new(World {
            breakers: Arc::new(Breakers::new(
                breakers,
                None,
                Default::default(),
                clock.clone(),
            )),
            clock: clock.clone(),
            stale_after_ms: config.payments.stale_after.as_millis() as i64,
            celery_names: (
                config.celery.queue.clone(),
                config.celery.payment_task.clone(),
            ),
            state: Mutex::new(WorldState {
                webhook_endpoint: Some(400),
                webhook_secret: Some("whsec_simulated".into()),
                status_page: Some(Default::default()),
                celery: Some(backends::celery::SimCelery::healthy()),
                ..Default::default()
            }),
        });
        let watched = Arc::downgrade(&world);
        clock.on_advance(move || {
            if let Some(w) = watched.upgrade() {
                w.app_reacts();
            }
        });
        world
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// `[celery] queue` and `[celery] payment_task`.
    pub fn celery_names(&self) -> (&str, &str) {
        (&self.celery_names.0, &self.celery_names.1)
    }

    /// `[payments] stale_after`, in ms.
    pub fn stale_after_ms(&self) -> i64 {
        self.stale_after_ms
    }

    pub fn breakers(&self) -> &Arc<Breakers> {
        &self.breakers
    }

    /// The world's state, for reading or changing it.
    pub fn state(&self) -> MutexGuard<'_, WorldState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh id with a prefix (`pay_3`, `pi_4`, `evt_5`).
    pub fn next_id(&self, prefix: &str) -> String {
        let mut s = self.state();
        s.next_id += 1;
        format!("{prefix}_{}", s.next_id)
    }

    /// Adds a payment created `age_s` ago; returns its id.
    pub fn add_payment(&self, status: &str, age_s: f64, processor_ref: Option<String>) -> String {
        let id = self.next_id("pay");
        let now = self.clock.now_ms();
        self.state().payments.push(SimPayment {
            id: id.clone(),
            account_id: "acct_simulated".into(),
            amount: "42.50".into(),
            status: status.into(),
            processor_ref,
            metadata: serde_json::json!({}),
            created_ms: now - (age_s * 1000.0) as i64,
        });
        id
    }

    /// Adds a PaymentIntent to the simulated Stripe.
    pub fn add_intent(&self, id: &str, status: &str, payment_id: Option<String>) {
        let now = self.clock.now_ms();
        self.state().stripe.intents.insert(
            id.into(),
            SimIntent {
                status: status.into(),
                payment_id,
                amount: 4250,
                created_ms: now,
            },
        );
    }

    /// Opens a breaker the way the app's workers do: threshold failures, `secs_ago`
    /// seconds ago (so half-open can already be due).
    pub fn open_breaker(&self, name: &str, secs_ago: f64) -> Result<(), BreakerError> {
        let back = (secs_ago.max(0.0) * 1000.0) as i64;
        let past = self
            .breakers
            .at(Clock::virtual_at(self.clock.now_ms() - back));
        let threshold = self
            .breakers
            .configs()
            .get(name)
            .map(|c| c.failure_threshold)
            .ok_or_else(|| BreakerError::Unknown(name.into(), self.breakers.names().join(", ")))?;
        for _ in 0..threshold {
            in_memory(past.record_failure(name, None))?;
        }
        Ok(())
    }

    /// The breaker's state now (`closed`, `open`, `half_open`).
    pub fn breaker_state(&self, name: &str) -> Result<&'static str, BreakerError> {
        in_memory(self.breakers.read(name)).map(|s| s.state.as_str())
    }

    /// The backends playbooks see in this world: its payments, Stripe, webhook endpoint,
    /// breakers, Celery, logs and status page, with the settings and secrets it has now
    /// (runs assemble their services from these with
    /// [`Services::assemble`](crate::primitives::Services::assemble), as the
    /// daemon's do from real ones).
    pub fn backends(self: &Arc<Self>, config: &crate::config::Config) -> Backends {
        // What the world holds now; the lock is not held while the backends are built.
        let (has_status_page, has_celery, webhook_secret, settings, signed_probe) = {
            let s = self.state();
            (
                s.status_page.is_some(),
                s.celery.is_some(),
                s.webhook_secret.clone(),
                s.settings.clone(),
                s.signed_probe,
            )
        };
        let statuspage = if has_status_page {
            crate::primitives::statuspage::StatusPage::with_backend(
                Arc::new(backends::statuspage::SimStatusPageBackend {
                    world: self.clone(),
                }),
                self.clock.clone(),
            )
        } else {
            Default::default()
        };
        let celery = if has_celery {
            crate::primitives::celery::Celery::with_broker(
                &config.celery,
                Arc::new(backends::celery::SimBroker {
                    world: self.clone(),
                }),
            )
        } else {
            Default::default()
        };
        Backends {
            breakers: self.breakers.clone(),
            payments: Payments::with_backend(self.clone(), &config.payments),
            stripe: Stripe::with_wire(
                &config.stripe,
                Arc::new(backends::stripe::SimStripeWire {
                    world: self.clone(),
                }),
                reqwest::Client::new(),
                self.clock.clone(),
            ),
            webhook_secret: WebhookSecret::simulated(webhook_secret.as_deref()),
            webhook_endpoint: Arc::new(backends::stripe::SimEndpoint {
                world: self.clone(),
                url: config
                    .stripe
                    .webhook_url
                    .clone()
                    .unwrap_or_else(|| backends::stripe::SIMULATED_ENDPOINT.to_string()),
            }),
            celery,
            statuspage,
            logs: crate::primitives::logs::Logs::with_backend(Arc::new(backends::logs::SimLogs {
                world: self.clone(),
            })),
            clock: self.clock.clone(),
            settings,
            signed_probe,
        }
    }

    /// Whether the app's own calls to Stripe fail now: Stripe down or degraded badly
    /// (status page major/critical, API unreachable), or failing for the app alone.
    pub fn app_calls_fail(&self) -> bool {
        let s = self.state();
        s.app_failing
            || s.stripe.api_down
            || matches!(s.stripe.indicator.as_str(), "major" | "critical")
    }

    /// Time passes by `ms`: the clock moves, and the app reacts ([`World::app_reacts`],
    /// called by the virtual clock itself, so a playbook's `sleep` and Stripe's retry
    /// backoff move the app too). On the real clock (`serve --world`) time moves alone and
    /// this only lets the app react.
    pub fn pass_time(&self, ms: i64) {
        if self.clock.is_virtual() {
            self.clock.advance(ms);
        } else {
            self.app_reacts();
        }
    }

    /// The app keeps doing what it does. Its workers send payments through the breaker:
    /// while their Stripe calls fail, a breaker that lets a request through (closed or
    /// half-open) opens again at once; once they succeed, the half-open trial closes it —
    /// unless the breaker is stuck.
    fn app_reacts(&self) {
        let failing = self.app_calls_fail();
        let stuck = self.state().breaker_stuck;
        for name in self.breakers.names() {
            match self.breaker_state(&name) {
                Ok("open") | Err(_) => {}
                Ok(_) if failing => {
                    let _ = self.open_breaker(&name, 0.0);
                }
                Ok("half_open") if !stuck => {
                    let _ = self.breakers.record_success(&name, None).now_or_never();
                }
                Ok(_) => {}
            }
        }
    }
}

/// A simulation's breakers live in the memory store, which answers without waiting.
fn in_memory<T>(
    op: impl std::future::Future<Output = Result<T, BreakerError>>,
) -> Result<T, BreakerError> {
    op.now_or_never()
        .unwrap_or_else(|| Err(BreakerError::Redis("a memory breaker waited".into())))
}
