//! Alerts delivered to a simulation, admitted by the daemon's own rules.

use serde_json::{json, Value};

use super::{Sim, SimError, SimRun};
use crate::{
    dispatch::admission::{self, Verdict},
    store::RunStatus,
    triggers::alertmanager::{Alert, AlertStatus},
};

impl Sim {
    /// Alertmanager delivers alert `name` as `firing` or `resolved` with `labels` (and
    /// `annotations`): admitted by the daemon's own rules ([`admission`]) — the incident
    /// key from the fingerprint or `[alerts] incident_key_labels`, every playbook whose
    /// trigger matches, not again within its cooldown on the virtual clock; a resolved
    /// alert runs the playbooks that opted in, then resolves the incident.
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
        let alert_status = AlertStatus::parse(status).ok_or_else(|| {
            SimError::Setup(format!("alert status `{status}` is not firing or resolved"))
        })?;
        let resolved = alert_status == AlertStatus::Resolved;
        let text = |v: &Value| -> std::collections::BTreeMap<String, String> {
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
        };
        let mut label_set = text(&labels);
        label_set.insert("alertname".into(), name.into());
        let alert = Alert {
            status: alert_status,
            fingerprint: admission::fingerprint(&label_set),
            labels: label_set,
            annotations: text(&annotations),
            starts_at: crate::store::ms_to_rfc3339(self.now_ms()),
            ends_at: String::new(),
            generator_url: String::new(),
        };
        let labels: serde_json::Map<String, Value> = alert
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.note("alert", format!("{name} {status}"));
        let key = admission::incident_key(&alert, &self.config.alerts);
        let incident = match self.block(self.store.open_incident_by_key(&key))? {
            Some(i) => Some(i),
            None if !resolved => {
                let now = self.now_ms();
                let title = alert
                    .annotations
                    .get("summary")
                    .cloned()
                    .unwrap_or_else(|| name.to_string());
                let i = self.block(self.store.create_incident(
                    &key,
                    &format!("alert:{name}"),
                    &title,
                    &Value::Object(labels.clone()),
                    now,
                ))?;
                self.note("incident", format!("incident opened for {name}"));
                Some(i)
            }
            None => None,
        };
        let mut runs = Vec::new();
        let Some(incident) = incident else {
            self.note("alert", "resolved, but no open incident has this key");
            return Ok(runs);
        };
        for m in admission::matching(&self.catalog, &alert, self.config.alerts.cooldown) {
            let turn = (incident.id.clone(), m.playbook.clone());
            let now = self.now_ms();
            // Runs in a simulation finish before the next alert: the last one is done.
            let last = self
                .last_alert_run
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&turn)
                .map(|at| (RunStatus::Succeeded, *at));
            match admission::decide(&m, !resolved, last, now) {
                Verdict::Start => {}
                held => {
                    if let Some(note) = held.note(&m.playbook) {
                        self.note("alert", format!("{note}; nothing started"));
                    }
                    continue;
                }
            }
            self.last_alert_run
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(turn, now);
            runs.push(self.run_event(
                &m.playbook,
                json!({
                    "kind": "alert", "name": name, "status": status, "labels": labels,
                    "annotations": alert.annotations, "params": {},
                    "incident": incident.id,
                }),
            )?);
        }
        if resolved {
            self.block(self.store.resolve_incident(
                &incident.id,
                "alertmanager",
                &format!("alert {name} resolved"),
            ))?;
            self.note("incident", format!("incident for {name} resolved"));
            // The resolution notice to every paged channel goes out on the next pass.
            self.escalate()?;
        }
        Ok(runs)
    }
}
