//! What a run's primitives reach. Two parts, so the daemon and a simulation share one
//! assembly: the [`Backends`] — the world a run acts on, every client or trait object that
//! talks to Redis, Stripe, the payments database, Celery, the logs and the status page,
//! built from configuration by the daemon ([`Backends::from_config`]) or by a simulated
//! world (`World::backends`) — and everything else, built from configuration the same way
//! for both ([`Services::assemble`]).

use std::sync::Arc;

use super::{breaker, celery, incident, logs, payments, redis_conn, statuspage, stripe, webhooks};
use crate::{clock::Clock, config::Config, notify::Notifier, store::Store};

/// `[playbooks.settings]` as JSON, read by `setting(name, default)`.
pub type Settings = serde_json::Map<String, serde_json::Value>;

/// The world a run acts on. In the daemon these are real clients that connect when first
/// used; in a simulation, the world's in-memory doubles behind the same traits.
#[derive(Clone)]
pub struct Backends {
    pub breakers: Arc<breaker::Breakers>,
    pub payments: payments::Payments,
    pub stripe: stripe::Stripe,
    pub webhook_secret: webhooks::WebhookSecret,
    /// The app's webhook endpoint, for `webhooks::probe`.
    pub webhook_endpoint: Arc<dyn webhooks::WebhookEndpoint>,
    pub celery: celery::Celery,
    /// The app's worker logs (`logs::*`).
    pub logs: logs::Logs,
    /// The status page users read (`statuspage::*`).
    pub statuspage: statuspage::StatusPage,
    /// What `now()`, `sleep`, budgets and breaker timing read; virtual in simulations.
    pub clock: Clock,
    /// Settings on top of `[playbooks.settings]`: a simulated world's (tests tune playbooks
    /// this way); none in the daemon.
    pub settings: Settings,
    /// The world allows `webhooks::signed_probe()` whatever `[webhooks] signed_probe` says
    /// (a simulated world that plays the app's endpoint).
    pub signed_probe: bool,
}

impl Backends {
    /// The real backends, from configuration; nothing connects until first used.
    pub fn from_config(config: &Config) -> Result<Backends, payments::PaymentsError> {
        let redis = Arc::new(redis_conn::RedisConnections::default());
        let stripe = stripe::Stripe::new(&config.stripe);
        Ok(Backends {
            payments: payments::Payments::new(&config.payments)?,
            webhook_endpoint: Arc::new(webhooks::HttpEndpoint {
                http: stripe.http().clone(),
                url: config.stripe.webhook_url.clone(),
            }),
            stripe,
            webhook_secret: webhooks::WebhookSecret::from_config(&config.stripe),
            celery: celery::Celery::new(&config.celery, redis.clone(), Clock::Real),
            statuspage: statuspage::StatusPage::new(&config.statuspage),
            logs: logs::Logs::new(&config.logs, Clock::Real),
            breakers: Arc::new(breaker::Breakers::new(
                config.breakers.clone(),
                config.redis.url.clone(),
                redis,
                Clock::Real,
            )),
            clock: Clock::Real,
            settings: Settings::new(),
            signed_probe: false,
        })
    }
}

/// Backends primitives may use. `None` means "not configured", which a primitive reports as
/// a script error naming the missing section rather than crashing.
#[derive(Clone)]
pub struct Services {
    pub store: Option<Store>,
    pub runtime: tokio::runtime::Handle,
    pub breakers: Arc<breaker::Breakers>,
    pub payments: payments::Payments,
    pub stripe: stripe::Stripe,
    pub webhook_secret: webhooks::WebhookSecret,
    pub celery: celery::Celery,
    /// The app's worker logs (`logs::*`).
    pub logs: logs::Logs,
    /// The status page users read (`statuspage::*`).
    pub statuspage: statuspage::StatusPage,
    /// `[webhooks] probe_allow`: where `webhooks::probe(url)` may POST besides the
    /// configured webhook URL.
    pub webhook_probe_allow: Arc<Vec<String>>,
    /// `[webhooks] signed_probe`: `webhooks::signed_probe()` is allowed.
    pub webhook_signed_probe: bool,
    /// The notification outbox (needs the state store).
    pub notifier: Option<Arc<Notifier>>,
    /// `[playbooks.settings]`, read by `setting(name, default)`.
    pub settings: Arc<Settings>,
    /// What `now()`, `sleep`, budgets and breaker timing read; virtual in simulations.
    pub clock: Clock,
    /// The escalation table's level names, for `escalate()`.
    pub levels: incident::LevelNames,
    /// The app's webhook endpoint, for `webhooks::probe`.
    pub webhook_endpoint: Arc<dyn webhooks::WebhookEndpoint>,
    /// `[approvals]`: where `approved()` asks, how many must approve, how long it waits.
    pub approvals: Arc<crate::config::ApprovalsConfig>,
    /// In a replay (`runbookd replay`), the recorded runs that answer runs' reads; none
    /// elsewhere: runs record their reads.
    pub replay: Option<Arc<super::recorder::Replay>>,
}

impl Services {
    /// What runs see: `backends`, with what configuration says about them around it. The
    /// daemon and every simulation build their services here, so a setting or limit read
    /// one way in production is read the same way in a test.
    pub fn assemble(
        config: &Config,
        backends: Backends,
        store: Option<Store>,
        notifier: Option<Arc<Notifier>>,
        runtime: tokio::runtime::Handle,
    ) -> Services {
        let mut settings: Settings = config
            .playbooks
            .settings
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), serde_json::to_value(v).ok()?)))
            .collect();
        for (k, v) in backends.settings {
            merge_setting(&mut settings, &k, v);
        }
        Services {
            store,
            runtime,
            breakers: backends.breakers,
            payments: backends.payments,
            stripe: backends.stripe,
            webhook_secret: backends.webhook_secret,
            celery: backends.celery,
            logs: backends.logs,
            statuspage: backends.statuspage,
            webhook_probe_allow: Arc::new(config.webhooks.probe_allow.clone()),
            webhook_signed_probe: config.webhooks.signed_probe || backends.signed_probe,
            notifier,
            settings: Arc::new(settings),
            clock: backends.clock,
            levels: incident::runbook_levels(),
            webhook_endpoint: backends.webhook_endpoint,
            approvals: Arc::new(config.approvals.clone()),
            replay: None,
        }
    }

    /// The daemon's services without notifications (benchmarks, one-off tools): the real
    /// backends on the current runtime.
    pub fn from_config(
        config: &Config,
        store: Option<Store>,
    ) -> Result<Services, payments::PaymentsError> {
        Ok(Services::assemble(
            config,
            Backends::from_config(config)?,
            store,
            None,
            tokio::runtime::Handle::current(),
        ))
    }
}

/// Sets `a.b.c` in a settings map, creating tables on the way: a world's `outage.watch_seconds`
/// lands in `[playbooks.settings.outage]` beside the keys configuration put there.
fn merge_setting(settings: &mut Settings, key: &str, value: serde_json::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut table = settings;
    for p in parts {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| serde_json::json!({}));
        if !entry.is_object() {
            *entry = serde_json::json!({});
        }
        let Some(next) = entry.as_object_mut() else {
            return;
        };
        table = next;
    }
    table.insert(last.to_string(), value);
}

/// Where a run gets its services when it starts. The daemon's are built once, so
/// [`Services`] is its own source; a simulation's world is asked anew for every run, so a
/// setting or secret a test or scenario step changed is what the next run sees.
pub trait ServiceSource: Send + Sync {
    fn services(&self) -> Services;
}

impl ServiceSource for Services {
    fn services(&self) -> Services {
        self.clone()
    }
}
