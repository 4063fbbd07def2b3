//! A change to the simulated world, defined once: scenario steps (`simulate`,
//! `serve --world`) and playbook tests' setters (`w.stripe_key(…)`) both build a [`Change`]
//! and apply it here, so the same words mean the same world in both.

use std::time::Duration;

use super::{SimEvent, World};
use crate::primitives::breaker::BreakerError;

/// A change that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("stripe_status: `{0}` is not none, minor, major or critical")]
    Indicator(String),
    #[error(transparent)]
    Breaker(#[from] BreakerError),
    #[error("no payment `{0}` in this world")]
    NoPayment(String),
    #[error("the app runs no Celery worker that answers (set celery_workers first)")]
    NoWorker,
    #[error("runbookd has no Celery broker in this world (celery = \"none\")")]
    NoCelery,
}

/// One thing that happens to the app or to Stripe.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Stripe's status page: indicator (`none`, `minor`, `major`, `critical`), description.
    StripeStatus {
        indicator: String,
        description: String,
    },
    /// The status page cannot be read.
    StripeStatusPageDown,
    /// Stripe's API unreachable (`true`) or reachable again.
    StripeApiDown(bool),
    /// Status page operational and readable, API up, the app's calls succeed again.
    StripeRecovers,
    /// The API key runbookd holds (`None`: unset). A new key is not rejected (yet).
    StripeKey(Option<String>),
    /// Stripe starts answering 401 to the key (expired, rotated, revoked).
    StripeRejectsKey,
    StripeLatency(f64),
    /// Stripe answers 429 to every request.
    StripeRateLimited,
    /// A PaymentIntent in Stripe.
    Intent {
        id: String,
        status: String,
        payment_id: Option<String>,
    },
    /// Stripe events that failed delivery to the app, created `ago` before now.
    UndeliveredEvents {
        kinds: Vec<String>,
        ago: Duration,
    },
    /// What the app's webhook endpoint answers an unsigned `{}` (`None`: unreachable).
    WebhookEndpoint(Option<u16>),
    /// The webhook signing secret runbookd holds (`None`: unset).
    WebhookSecret(Option<String>),
    /// runbookd is given no `[stripe] webhook_url`.
    NoWebhookUrl,
    /// The signing secret the app verifies deliveries with (a rotation the app missed).
    AppWebhookSecret(String),
    /// runbookd may post signed probes (`[webhooks] signed_probe = true`).
    SignedProbe,
    /// The app's workers log `line`, `ago` before now.
    WorkerLog {
        line: String,
        ago: Duration,
    },
    /// `n` `webhook_received` rows, one a second back from now.
    WebhooksReceived(i64),
    /// The payments database stops answering.
    PaymentsDown,
    /// The app's workers open breaker `name`, `ago` before now.
    OpenBreaker {
        name: String,
        ago: Duration,
    },
    /// The app never runs its half-open trial: only a reset closes the breaker.
    BreakerStuck,
    /// The app's own Stripe calls fail (or succeed again) regardless of Stripe.
    AppFailing(bool),
    /// The users' status page: `Some(true)` its API stops answering, `Some(false)` answers
    /// again, `None` runbookd has none configured.
    StatusPage(Option<bool>),
    /// The app's Celery broker: `Some(true)` stops answering, `Some(false)` answers again,
    /// `None` runbookd has no `[celery] broker_url`.
    Celery(Option<bool>),
    /// The app runs `n` idle workers (0: none runs).
    CeleryWorkers(usize),
    /// The first worker that answers remote control stops answering (hung; still connected).
    WorkerHung,
    /// The first worker runs `active` payment tasks and holds `reserved` more, for the
    /// world's pending payments (made-up ids when there are too few).
    PaymentTasks {
        active: usize,
        reserved: usize,
    },
    /// `n` payment tasks wait on `[celery] queue`, for no worker to take.
    QueuedPayments(usize),
    /// The app settles payment `id` itself (a webhook landed, its own task ran).
    PaymentSettled {
        id: String,
        status: String,
    },
}

/// The app runs no worker that could take a task (the changes to workers need one).
fn no_worker() -> ChangeError {
    ChangeError::NoWorker
}

impl World {
    /// Applies `change`; returns the timeline's line for it (`None`: nothing worth saying).
    pub fn apply(&self, change: &Change) -> Result<Option<String>, ChangeError> {
        let said = match change {
            Change::StripeStatus {
                indicator,
                description,
            } => {
                if !matches!(indicator.as_str(), "none" | "minor" | "major" | "critical") {
                    return Err(ChangeError::Indicator(indicator.clone()));
                }
                let mut s = self.state();
                s.stripe.indicator = indicator.clone();
                s.stripe.description = description.clone();
                Some(format!("Stripe status page: {indicator} — {description}"))
            }
            Change::StripeStatusPageDown => {
                self.state().stripe.status_page_down = true;
                Some("Stripe status page unreadable".into())
            }
            Change::StripeApiDown(down) => {
                self.state().stripe.api_down = *down;
                Some(if *down {
                    "Stripe API unreachable".into()
                } else {
                    "Stripe API reachable again".into()
                })
            }
            Change::StripeRecovers => {
                let mut s = self.state();
                s.stripe.api_down = false;
                s.stripe.status_page_down = false;
                s.stripe.indicator = "none".into();
                s.stripe.description = "All Systems Operational".into();
                s.app_failing = false;
                Some("Stripe recovers: status page operational, API answering".into())
            }
            Change::StripeKey(key) => {
                let mut s = self.state();
                s.stripe.key = key.clone();
                s.stripe.key_rejected = false;
                Some(match key {
                    None => "the Stripe API key is removed".into(),
                    Some(k) => format!(
                        "the Stripe API key is replaced ({}...)",
                        k.chars().take(7).collect::<String>()
                    ),
                })
            }
            Change::StripeRejectsKey => {
                self.state().stripe.key_rejected = true;
                Some("Stripe starts rejecting the API key (expired or rotated)".into())
            }
            Change::StripeLatency(ms) => {
                self.state().stripe.latency_ms = ms.max(0.0);
                None
            }
            Change::StripeRateLimited => {
                self.state().stripe.rate_limited = true;
                Some("Stripe answers 429 to every request".into())
            }
            Change::Intent {
                id,
                status,
                payment_id,
            } => {
                self.add_intent(id, status, payment_id.clone());
                None
            }
            Change::UndeliveredEvents { kinds, ago } => {
                let created_ms = self.clock().now_ms() - ago.as_millis() as i64;
                for kind in kinds {
                    let id = self.next_id("evt");
                    self.state().stripe.events.push(SimEvent {
                        id,
                        kind: kind.clone(),
                        created_ms,
                        delivered: false,
                    });
                }
                (!kinds.is_empty())
                    .then(|| format!("{} Stripe event(s) fail delivery to the app", kinds.len()))
            }
            Change::WebhookEndpoint(status) => {
                self.state().webhook_endpoint = *status;
                Some(format!(
                    "the app's webhook endpoint answers {}",
                    status.map_or("nothing (unreachable)".to_string(), |s| s.to_string())
                ))
            }
            Change::WebhookSecret(secret) => {
                self.state().webhook_secret = secret.clone();
                Some("the webhook signing secret runbookd holds changes".into())
            }
            Change::AppWebhookSecret(secret) => {
                self.state().app_webhook_secret = Some(secret.clone());
                Some("the app verifies webhooks with a different signing secret".into())
            }
            Change::WorkerLog { line, ago } => {
                let at = self.clock().now_ms() - ago.as_millis() as i64;
                self.state().worker_logs.push((at, line.clone()));
                None
            }
            Change::SignedProbe => {
                self.state().signed_probe = true;
                None
            }
            Change::NoWebhookUrl => {
                self.state().webhook_url_unset = true;
                Some("runbookd has no [stripe] webhook_url".into())
            }
            Change::WebhooksReceived(n) => {
                let now = self.clock().now_ms();
                let mut s = self.state();
                for i in 0..(*n).max(0) {
                    s.webhook_rows.push(now - i * 1000);
                }
                None
            }
            Change::PaymentsDown => {
                self.state().payments_down = true;
                Some("payments database unreachable".into())
            }
            Change::OpenBreaker { name, ago } => {
                self.open_breaker(name, ago.as_secs_f64())?;
                Some(format!(
                    "the app's workers open breaker {name} ({} ago)",
                    humantime::format_duration(Duration::from_secs(ago.as_secs()))
                ))
            }
            Change::BreakerStuck => {
                self.state().breaker_stuck = true;
                Some("the app stops trying its half-open breaker".into())
            }
            Change::AppFailing(failing) => {
                self.state().app_failing = *failing;
                Some(format!(
                    "the app's Stripe calls {}",
                    if *failing { "fail" } else { "succeed" }
                ))
            }
            Change::StatusPage(state) => {
                let mut s = self.state();
                match state {
                    None => {
                        s.status_page = None;
                        Some("no status page configured in runbookd".into())
                    }
                    Some(down) => {
                        s.status_page.get_or_insert_with(Default::default).down = *down;
                        Some(if *down {
                            "the status page API stops answering".into()
                        } else {
                            "the status page API answers again".into()
                        })
                    }
                }
            }
            Change::Celery(_)
            | Change::CeleryWorkers(_)
            | Change::WorkerHung
            | Change::PaymentTasks { .. }
            | Change::QueuedPayments(_) => self.change_celery(change)?,
            Change::PaymentSettled { id, status } => {
                let mut state = self.state();
                let p = state
                    .payments
                    .iter_mut()
                    .find(|p| p.id == *id)
                    .ok_or_else(|| ChangeError::NoPayment(id.clone()))?;
                p.status = status.clone();
                Some(format!("the app settles payment {id} as {status}"))
            }
        };
        Ok(said)
    }
}

impl World {
    /// The Celery changes: its broker, workers and queue.
    fn change_celery(&self, change: &Change) -> Result<Option<String>, ChangeError> {
        use super::backends::celery::{worker, SimCelery};
        let (queue, payment_task) = {
            let (q, t) = self.celery_names();
            (q.to_string(), t.to_string())
        };
        let pending: Vec<String> = self
            .state()
            .payments
            .iter()
            .filter(|p| p.status == "pending")
            .map(|p| p.id.clone())
            .collect();
        let now = self.clock().now_ms();
        let mut s = self.state();
        if let Change::Celery(state) = change {
            return Ok(Some(match state {
                None => {
                    s.celery = None;
                    "no Celery broker configured in runbookd".into()
                }
                Some(down) => {
                    s.celery.get_or_insert_with(SimCelery::healthy).down = *down;
                    if *down {
                        "the Celery broker stops answering".into()
                    } else {
                        "the Celery broker answers again".into()
                    }
                }
            }));
        }
        let c = s.celery.as_mut().ok_or(ChangeError::NoCelery)?;
        let said = match change {
            Change::CeleryWorkers(n) => {
                c.workers = (1..=*n).map(worker).collect();
                if *n == 0 {
                    "no Celery worker runs".to_string()
                } else {
                    format!("the app runs {n} idle Celery worker(s)")
                }
            }
            Change::WorkerHung => {
                let w = c
                    .workers
                    .iter_mut()
                    .find(|w| w.answers)
                    .ok_or_else(no_worker)?;
                w.answers = false;
                format!("Celery worker {} hangs (connected, not answering)", w.name)
            }
            Change::PaymentTasks { active, reserved } => {
                let w = c
                    .workers
                    .iter_mut()
                    .find(|w| w.answers)
                    .ok_or_else(no_worker)?;
                let mut ids = pending
                    .into_iter()
                    .chain((1..).map(|i| format!("pay_sim_{i}")));
                w.active = ids.by_ref().take(*active).map(|p| (p, now)).collect();
                w.reserved = ids.take(*reserved).collect();
                format!(
                    "Celery worker {} runs {active} payment task(s) and holds {reserved}",
                    w.name
                )
            }
            Change::QueuedPayments(n) => {
                let q = c.queued.entry(queue.clone()).or_default();
                for i in 0..*n {
                    let id = format!("sim-queued-{}-{i}", q.len());
                    let msg = crate::primitives::celery::kombu::message(
                        &payment_task,
                        &id,
                        &serde_json::json!([format!("pay_queued_{i}")]),
                        &serde_json::json!({}),
                        &queue,
                    );
                    q.push(msg.to_string());
                }
                format!("{n} payment task(s) wait on Celery queue {queue}")
            }
            _ => return Ok(None),
        };
        Ok(Some(said))
    }
}
