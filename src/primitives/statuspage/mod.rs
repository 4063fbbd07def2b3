//! `statuspage::*`: telling the payments app's users (runbook Scenario 1, step 4: "communicate
//! to users that payment processing is temporarily unavailable"). One status-page incident
//! per runbookd incident, behind [`StatusPageBackend`]: Atlassian Statuspage's REST API in
//! production ([`http`]), the simulated world's page in simulations.
//!
//! The status page itself is the record of what users were told: a page incident carries
//! the runbookd incident's id in its metadata, and every operation first looks for it among
//! the page's unresolved incidents. So opening twice (a retry, a second run, another
//! replica, a crash between the request and the run's record) finds the first one instead
//! of telling users twice, and an update that says what the page already says is skipped.

pub mod http;
mod script;

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

pub use self::script::register;
use crate::clock::Clock;

/// Why the status page could not be read or changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatusPageError {
    #[error("the status page is not configured: set [statuspage] page_id and api_key_env")]
    NotConfigured,
    #[error("the status page API key is not available: {0}")]
    NoKey(String),
    #[error("the status page refused the API key ({0})")]
    Unauthorized(u16),
    /// Worth another try: 429, 5xx, no connection, no answer in time.
    #[error("the status page is unavailable: {0}")]
    Unavailable(String),
    #[error("the status page answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("the status page's answer is not understood: {0}")]
    Malformed(String),
}

impl StatusPageError {
    fn retryable(&self) -> bool {
        matches!(self, StatusPageError::Unavailable(_))
    }
}

/// A component's status on the page, as Statuspage names them.
pub const COMPONENT_STATUSES: [&str; 5] = [
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
];

/// An incident's status on the page.
pub const INCIDENT_STATUSES: [&str; 4] = ["investigating", "identified", "monitoring", "resolved"];

/// One incident on the status page, as runbookd reads it back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PageIncident {
    pub id: String,
    pub name: String,
    /// investigating, identified, monitoring or resolved.
    pub status: String,
    /// The runbookd incident it tells users about (its metadata), if runbookd opened it.
    pub incident: Option<String>,
    /// The newest update's text.
    pub last_update: Option<String>,
    /// The public link users follow, when the page gives one.
    pub shortlink: Option<String>,
}

/// What to write on the page: a new incident, or an update of one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PageChange {
    /// The incident's title (new incidents only).
    pub name: Option<String>,
    pub status: String,
    /// The update users read.
    pub body: String,
    /// The component's new status, when `[statuspage] component_id` is set.
    pub component_status: Option<String>,
    /// The runbookd incident (new incidents only: it goes in the metadata).
    pub incident: Option<String>,
}

/// Where the status page lives.
#[async_trait::async_trait]
pub trait StatusPageBackend: Send + Sync {
    /// The page's unresolved incidents.
    async fn unresolved(&self) -> Result<Vec<PageIncident>, StatusPageError>;
    /// Opens an incident on the page.
    async fn create(&self, change: &PageChange) -> Result<PageIncident, StatusPageError>;
    /// Posts an update to (or resolves) an incident.
    async fn update(&self, id: &str, change: &PageChange) -> Result<PageIncident, StatusPageError>;
    /// The configured component's status (`None`: no component configured).
    async fn component(&self) -> Result<Option<String>, StatusPageError>;
}

/// What an operation did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// The page incident, as the page has it now (`None`: there is none for this incident).
    pub page: Option<PageIncident>,
    /// True when this call changed the page.
    pub changed: bool,
    /// Why it did not, when it did not.
    pub note: Option<String>,
}

/// Attempts per operation; 429, 5xx and silence are tried again after a pause.
const ATTEMPTS: u32 = 3;

/// The status page as primitives use it; `None` inside: not configured.
#[derive(Clone, Default)]
pub struct StatusPage {
    backend: Option<Arc<dyn StatusPageBackend>>,
    clock: Clock,
}

impl StatusPage {
    /// From `[statuspage]`: Statuspage's API when `page_id` is set, else not configured.
    pub fn new(cfg: &crate::config::StatusPageConfig) -> StatusPage {
        StatusPage {
            backend: http::HttpStatusPage::from_config(cfg)
                .map(|b| Arc::new(b) as Arc<dyn StatusPageBackend>),
            clock: Clock::Real,
        }
    }

    /// Any backend (a simulation's); pauses between attempts on `clock`.
    pub fn with_backend(backend: Arc<dyn StatusPageBackend>, clock: Clock) -> StatusPage {
        StatusPage {
            backend: Some(backend),
            clock,
        }
    }

    pub fn configured(&self) -> bool {
        self.backend.is_some()
    }

    fn backend(&self) -> Result<&dyn StatusPageBackend, StatusPageError> {
        self.backend
            .as_deref()
            .ok_or(StatusPageError::NotConfigured)
    }

    /// `op`, tried again after 1 s and 2 s while the page is unavailable.
    async fn attempt<T, F, Fut>(&self, mut op: F) -> Result<T, StatusPageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StatusPageError>>,
    {
        let mut tried = 1;
        loop {
            match op().await {
                Err(e) if e.retryable() && tried < ATTEMPTS => {
                    self.clock.sleep(Duration::from_secs(tried as u64)).await;
                    tried += 1;
                }
                other => return other,
            }
        }
    }

    /// The page incident that tells users about runbookd's `incident`, if one is open.
    pub async fn find(&self, incident: &str) -> Result<Option<PageIncident>, StatusPageError> {
        let backend = self.backend()?;
        let open = self.attempt(|| backend.unresolved()).await?;
        Ok(open
            .into_iter()
            .find(|p| p.incident.as_deref() == Some(incident)))
    }

    /// The configured component's status.
    pub async fn component(&self) -> Result<Option<String>, StatusPageError> {
        let backend = self.backend()?;
        self.attempt(|| backend.component()).await
    }

    /// Opens the page incident for `incident` unless one is open already. A create that
    /// failed without an answer may still have happened: the next attempt looks first.
    pub async fn open(
        &self,
        incident: &str,
        change: PageChange,
    ) -> Result<Outcome, StatusPageError> {
        let backend = self.backend()?;
        let change = PageChange {
            incident: Some(incident.to_string()),
            ..change
        };
        let mut tried = 1;
        loop {
            if let Some(page) = self.find(incident).await? {
                return Ok(Outcome {
                    page: Some(page),
                    changed: false,
                    note: Some("already open for this incident".into()),
                });
            }
            match backend.create(&change).await {
                Ok(page) => {
                    return Ok(Outcome {
                        page: Some(page),
                        changed: true,
                        note: None,
                    })
                }
                Err(e) if e.retryable() && tried < ATTEMPTS => {
                    self.clock.sleep(Duration::from_secs(tried as u64)).await;
                    tried += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Posts `change` to the page incident of `incident` — unless there is none, or the
    /// page already says exactly this with this status (a retry, a second replica).
    pub async fn update(
        &self,
        incident: &str,
        change: PageChange,
    ) -> Result<Outcome, StatusPageError> {
        let backend = self.backend()?;
        let Some(page) = self.find(incident).await? else {
            return Ok(Outcome {
                page: None,
                changed: false,
                note: Some("no open status-page incident for this incident".into()),
            });
        };
        if page.status == change.status && page.last_update.as_deref() == Some(&change.body) {
            return Ok(Outcome {
                page: Some(page),
                changed: false,
                note: Some("the page already says this".into()),
            });
        }
        let change = PageChange {
            name: None,
            incident: None,
            ..change
        };
        let page = self.attempt(|| backend.update(&page.id, &change)).await?;
        Ok(Outcome {
            page: Some(page),
            changed: true,
            note: None,
        })
    }

    /// The plan of an operation, for a dry run: what the page has now, and whether the
    /// operation would change it.
    pub async fn plan(
        &self,
        incident: &str,
        opening: bool,
        change: &PageChange,
    ) -> Result<Outcome, StatusPageError> {
        let page = self.find(incident).await?;
        let changed = match &page {
            None => opening,
            Some(p) => {
                let says_it =
                    p.status == change.status && p.last_update.as_deref() == Some(&change.body);
                !opening && !says_it
            }
        };
        Ok(Outcome {
            page,
            changed,
            note: None,
        })
    }
}

/// The component status for Stripe's status-page indicator (and for Stripe unreachable):
/// users can still pay when Stripe is merely degraded (`major`: partial outage); they cannot
/// when Stripe is down (`critical`, or no answer at all: major outage).
pub fn component_status_for(indicator: &str, reachable: bool) -> &'static str {
    match (indicator, reachable) {
        (_, false) | ("critical", _) => "major_outage",
        ("major", _) => "partial_outage",
        ("minor", _) => "degraded_performance",
        _ => "operational",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_indicators_map_to_component_statuses() {
        assert_eq!(component_status_for("critical", true), "major_outage");
        assert_eq!(component_status_for("major", true), "partial_outage");
        assert_eq!(component_status_for("none", false), "major_outage");
        assert_eq!(component_status_for("minor", true), "degraded_performance");
        assert_eq!(component_status_for("none", true), "operational");
        for s in [
            "major_outage",
            "partial_outage",
            "degraded_performance",
            "operational",
        ] {
            assert!(COMPONENT_STATUSES.contains(&s));
        }
    }
}
