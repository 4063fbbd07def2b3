//! The status page, simulated: the world keeps the page's incidents (with every update) and
//! the payment component's status, and answers the [`StatusPageBackend`] calls production's
//! `statuspage::*` primitives make — the same lookups, the same idempotence, the same
//! errors when the page is down or the key refused.

use std::sync::Arc;

use crate::primitives::statuspage::{PageChange, PageIncident, StatusPageBackend, StatusPageError};
use crate::sim::World;

/// One incident on the simulated page.
#[derive(Debug, Clone)]
pub struct SimPageIncident {
    pub id: String,
    pub name: String,
    pub status: String,
    pub incident: Option<String>,
    /// (virtual ms, status, body), oldest first.
    pub updates: Vec<(i64, String, String)>,
}

/// The simulated status page.
#[derive(Debug, Clone)]
pub struct SimStatusPage {
    pub incidents: Vec<SimPageIncident>,
    /// The payment component's status.
    pub component: String,
    /// The API does not answer.
    pub down: bool,
    /// The API refuses runbookd's key.
    pub key_rejected: bool,
}

impl Default for SimStatusPage {
    fn default() -> Self {
        SimStatusPage {
            incidents: Vec::new(),
            component: "operational".into(),
            down: false,
            key_rejected: false,
        }
    }
}

impl SimPageIncident {
    fn view(&self) -> PageIncident {
        PageIncident {
            id: self.id.clone(),
            name: self.name.clone(),
            status: self.status.clone(),
            incident: self.incident.clone(),
            last_update: self.updates.last().map(|u| u.2.clone()),
            shortlink: Some(format!("https://stspg.io/{}", self.id)),
        }
    }
}

/// The world's status page behind [`StatusPageBackend`].
pub struct SimStatusPageBackend {
    pub world: Arc<World>,
}

impl SimStatusPageBackend {
    fn with_page<T>(
        &self,
        f: impl FnOnce(&mut SimStatusPage, i64) -> Result<T, StatusPageError>,
    ) -> Result<T, StatusPageError> {
        let now = self.world.clock().now_ms();
        let mut s = self.world.state();
        let page = s
            .status_page
            .as_mut()
            .ok_or(StatusPageError::NotConfigured)?;
        if page.down {
            return Err(StatusPageError::Unavailable(
                "/incidents/unresolved answered 503 (simulated outage)".into(),
            ));
        }
        if page.key_rejected {
            return Err(StatusPageError::Unauthorized(401));
        }
        f(page, now)
    }
}

#[async_trait::async_trait]
impl StatusPageBackend for SimStatusPageBackend {
    async fn unresolved(&self) -> Result<Vec<PageIncident>, StatusPageError> {
        self.with_page(|p, _| {
            // Newest first, as Statuspage lists them.
            Ok(p.incidents
                .iter()
                .rev()
                .filter(|i| i.status != "resolved")
                .map(SimPageIncident::view)
                .collect())
        })
    }

    async fn create(&self, change: &PageChange) -> Result<PageIncident, StatusPageError> {
        let id = self.world.next_id("spi");
        self.with_page(|p, now| {
            let incident = SimPageIncident {
                id,
                name: change.name.clone().unwrap_or_default(),
                status: change.status.clone(),
                incident: change.incident.clone(),
                updates: vec![(now, change.status.clone(), change.body.clone())],
            };
            if let Some(c) = &change.component_status {
                p.component = c.clone();
            }
            let view = incident.view();
            p.incidents.push(incident);
            Ok(view)
        })
    }

    async fn update(&self, id: &str, change: &PageChange) -> Result<PageIncident, StatusPageError> {
        self.with_page(|p, now| {
            let incident = p.incidents.iter_mut().find(|i| i.id == id).ok_or_else(|| {
                StatusPageError::Refused {
                    status: 404,
                    message: "Record not found".into(),
                }
            })?;
            incident.status = change.status.clone();
            incident
                .updates
                .push((now, change.status.clone(), change.body.clone()));
            let view = incident.view();
            if let Some(c) = &change.component_status {
                p.component = c.clone();
            }
            Ok(view)
        })
    }

    async fn component(&self) -> Result<Option<String>, StatusPageError> {
        self.with_page(|p, _| Ok(Some(p.component.clone())))
    }
}

impl World {
    /// The simulated page as tests and reports read it: `()`-like `null` when not
    /// configured, else `{ component, incidents: [{ id, name, status, incident, updates:
    /// [{ at, status, body }] }] }`.
    pub fn status_page_view(&self) -> serde_json::Value {
        let s = self.state();
        let Some(page) = &s.status_page else {
            return serde_json::Value::Null;
        };
        serde_json::json!({
            "component": page.component,
            "incidents": page.incidents.iter().map(|i| serde_json::json!({
                "id": i.id,
                "name": i.name,
                "status": i.status,
                "incident": i.incident,
                "updates": i.updates.iter().map(|(at, status, body)| serde_json::json!({
                    "at": crate::store::ms_to_rfc3339(*at), "at_ms": at, "status": status, "body": body,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}
