//! What the HTTP shell holds, and the parts a handler takes of it.
//!
//! [`AppState`] is what the wiring hands over, once. No handler takes all of it: each asks
//! for the part it uses (`State<Store>`, `State<Dispatcher>`, `State<Actions>`, …) and axum
//! cuts that part out through the [`FromRef`] impls below. The small groups ([`Sessions`],
//! [`Actions`], [`EscalationView`], [`Simulated`]) are parts that are always used together.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::extract::FromRef;

use super::{actions::Actions, auth::Auth, slack::SlackApprovals};
use crate::{
    config::{AlertsConfig, DashboardConfig},
    dispatch::Dispatcher,
    engine::Catalog,
    escalation::SharedTable,
    live::Feed,
    metrics::Metrics,
    primitives::{breaker::Breakers, Services},
    store::Store,
};

/// Everything the HTTP shell and its two faces (API, dashboard) can reach.
#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub dispatcher: Dispatcher,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Auth>,
    pub services: Services,
    /// How alerts become incidents.
    pub alerts: Arc<AlertsConfig>,
    /// `serve --world`: the scenario's title; every answer says it is simulated.
    pub simulated: Option<Arc<str>>,
    /// The address the API is bound to (the browser guard accepts it as a host).
    pub listen: SocketAddr,
    /// Slack's Approve / Deny buttons (`[approvals] signing_secret_env`).
    pub slack: Option<Arc<SlackApprovals>>,
    /// What changed, for `/api/v1/events` and the dashboard's live pages.
    pub feed: Arc<Feed>,
    /// `[dashboard]`: sessions and cookies.
    pub dashboard: Arc<DashboardConfig>,
    /// The escalation table in force (the incident page shows it).
    pub escalation: SharedTable,
    /// `[escalation] interval`.
    pub escalation_interval: Duration,
}

/// Who a browser or a token is: the tokens, the store that keeps sessions, and the
/// `[dashboard]` rules for cookies and origins.
#[derive(Clone)]
pub struct Sessions {
    pub auth: Arc<Auth>,
    pub store: Store,
    pub dashboard: Arc<DashboardConfig>,
}

/// The escalation table as the incident page shows it: the levels in force and how often
/// they are evaluated.
#[derive(Clone)]
pub struct EscalationView {
    pub table: SharedTable,
    pub interval: Duration,
}

/// `serve --world`: the scenario's title, shown on every page; none for the real world.
#[derive(Clone)]
pub struct Simulated(pub Option<Arc<str>>);

impl FromRef<AppState> for Store {
    fn from_ref(s: &AppState) -> Store {
        s.store.clone()
    }
}

impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(s: &AppState) -> Arc<Auth> {
        s.auth.clone()
    }
}

impl FromRef<AppState> for Dispatcher {
    fn from_ref(s: &AppState) -> Dispatcher {
        s.dispatcher.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(s: &AppState) -> Arc<Metrics> {
        s.metrics.clone()
    }
}

impl FromRef<AppState> for Services {
    fn from_ref(s: &AppState) -> Services {
        s.services.clone()
    }
}

impl FromRef<AppState> for Arc<Breakers> {
    fn from_ref(s: &AppState) -> Arc<Breakers> {
        s.services.breakers.clone()
    }
}

impl FromRef<AppState> for Arc<AlertsConfig> {
    fn from_ref(s: &AppState) -> Arc<AlertsConfig> {
        s.alerts.clone()
    }
}

impl FromRef<AppState> for Option<Arc<SlackApprovals>> {
    fn from_ref(s: &AppState) -> Option<Arc<SlackApprovals>> {
        s.slack.clone()
    }
}

impl FromRef<AppState> for Arc<Feed> {
    fn from_ref(s: &AppState) -> Arc<Feed> {
        s.feed.clone()
    }
}

impl FromRef<AppState> for Sessions {
    fn from_ref(s: &AppState) -> Sessions {
        Sessions {
            auth: s.auth.clone(),
            store: s.store.clone(),
            dashboard: s.dashboard.clone(),
        }
    }
}

impl FromRef<AppState> for Actions {
    fn from_ref(s: &AppState) -> Actions {
        Actions {
            store: s.store.clone(),
            dispatcher: s.dispatcher.clone(),
            catalog: s.catalog.clone(),
            notifier: s.services.notifier.clone(),
        }
    }
}

impl FromRef<AppState> for EscalationView {
    fn from_ref(s: &AppState) -> EscalationView {
        EscalationView {
            table: s.escalation.clone(),
            interval: s.escalation_interval,
        }
    }
}

impl FromRef<AppState> for Simulated {
    fn from_ref(s: &AppState) -> Simulated {
        Simulated(s.simulated.clone())
    }
}
