//! Alerts delivered to a simulation: through the daemon's own ingestion (admission, incident
//! keys, deduplication, cooldowns, resolution), then run as the simulation steps the dispatcher.

use serde_json::Value;

use super::{Sim, SimError, SimRun};
use crate::{
    store::IncidentStatus,
    triggers::alertmanager::{Alert, AlertStatus},
};

/// Label and annotation maps as Alertmanager sends them: every value text.
fn text_map(v: &Value) -> std::collections::BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = v
                        .as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Sim {
    /// Alertmanager delivers alert `name` as `firing` or `resolved` with `labels`.
    pub fn alert(&self, name: &str, status: &str, labels: Value) -> Result<Vec<SimRun>, SimError> {
        self.alert_with(name, status, labels, Value::Null)
    }

    /// [`Sim::alert`] with annotations.
    pub fn alert_with(
        &self,
        name: &str,
        status: &str,
        labels: Value,
        annotations: Value,
    ) -> Result<Vec<SimRun>, SimError> {
        let status = AlertStatus::parse(status).ok_or_else(|| {
            SimError::Setup(format!("alert status `{status}` is not firing or resolved"))
        })?;
        let mut labels = text_map(&labels);
        labels.insert("alertname".into(), name.into());
        let alert = Alert {
            status,
            fingerprint: crate::dispatch::admission::fingerprint(&labels),
            labels,
            annotations: text_map(&annotations),
            starts_at: crate::store::ms_to_rfc3339(self.now_ms()),
            ends_at: String::new(),
            generator_url: String::new(),
        };
        self.runtime.block_on(self.deliver(alert))
    }

    /// Records `alert` as the daemon's ingester does (the incident key from the fingerprint
    /// or `[alerts] incident_key_labels`, every playbook whose trigger matches, not again
    /// while one runs or within its cooldown on the virtual clock; a resolved alert runs the
    /// playbooks that opted in, and its incident is resolved when they end), then runs what
    /// it started. A resolution is announced on the next escalation pass, done at once.
    pub(super) async fn deliver(&self, alert: Alert) -> Result<Vec<SimRun>, SimError> {
        let name = alert.name().to_string();
        let resolved = alert.status == AlertStatus::Resolved;
        self.note("alert", format!("{name} {}", alert.status));
        let outcome = self
            .dispatcher
            .ingest_alert(&alert, &self.config.alerts, "simulation")
            .await?;
        if outcome.opened {
            self.note("incident", format!("incident opened for {name}"));
        }
        for note in &outcome.notes {
            // A started run shows itself; what was held back, and why, is said here.
            let started = outcome
                .runs
                .iter()
                .any(|id| note.ends_with(&format!("run {id}")));
            if !started && note != "incident resolved" {
                self.note("alert", note.clone());
            }
        }
        let runs = self.settle().await?;
        if resolved {
            if let Some(id) = &outcome.incident {
                if let Some(i) = self.store.get_incident(id).await? {
                    if i.status == IncidentStatus::Resolved {
                        self.note("incident", format!("incident for {name} resolved"));
                    }
                }
            }
            self.escalation_pass().await?;
        }
        Ok(runs)
    }
}
