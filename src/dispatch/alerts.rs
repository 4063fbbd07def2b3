//! Alerts into incidents and runs: match triggers, attach to an incident, deduplicate at the
//! door, honour cooldowns, and resolve incidents when their alert resolves.
//!
//! Everything is recorded in the store before the webhook is answered, so Alertmanager's
//! retries (after a 5xx or a crash) meet the same records and start nothing twice.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{DispatchError, Dispatcher, RunRequest};
use crate::{
    config::AlertsConfig,
    store::{AlertRecord, Incident, RunStatus, Trigger},
    triggers::{alertmanager::Alert, Event, TriggerSpec},
};

/// What happened to one alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertOutcome {
    pub alertname: String,
    pub fingerprint: String,
    pub status: String,
    pub incident: Option<String>,
    /// Runs started for it.
    pub runs: Vec<String>,
    /// One line per matching playbook (or why nothing ran).
    pub notes: Vec<String>,
}

/// The incident key: the fingerprint, or alertname plus chosen labels.
pub fn incident_key(alert: &Alert, cfg: &AlertsConfig) -> String {
    if cfg.incident_key_labels.is_empty() {
        return format!("fingerprint:{}", alert.fingerprint);
    }
    let mut key = format!("alertname={}", alert.name());
    for l in &cfg.incident_key_labels {
        key.push_str(&format!(
            ",{l}={}",
            alert.labels.get(l).map(String::as_str).unwrap_or("")
        ));
    }
    key
}

fn to_map(m: &std::collections::BTreeMap<String, String>) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// (playbook, on_resolved, cooldown) of every trigger that matches this alert.
fn matching(
    d: &Dispatcher,
    alert: &Alert,
    default_cooldown: Duration,
) -> Vec<(String, bool, Duration)> {
    let mut out = Vec::new();
    for pb in d.inner.catalog.playbooks() {
        for t in &pb.triggers {
            if let TriggerSpec::Alert {
                alert: name,
                labels,
                on_resolved,
                cooldown,
            } = t
            {
                let labels_match = labels
                    .iter()
                    .all(|(k, v)| alert.labels.get(k).map(String::as_str) == Some(v.as_str()));
                if name == alert.name() && labels_match {
                    let cooldown = cooldown
                        .as_deref()
                        .and_then(|c| humantime::parse_duration(c).ok())
                        .unwrap_or(default_cooldown);
                    out.push((pb.name.clone(), *on_resolved, cooldown));
                    break;
                }
            }
        }
    }
    out
}

impl Dispatcher {
    /// Handles one alert of a notification. Serialised with other alerts so that the two
    /// copies an HA Alertmanager pair delivers at the same moment cannot both start a run.
    pub async fn ingest_alert(
        &self,
        alert: &Alert,
        cfg: &AlertsConfig,
        actor: &str,
    ) -> Result<AlertOutcome, DispatchError> {
        let _serial = self.inner.alerts_lock.lock().await;
        let store = &self.inner.store;
        let key = incident_key(alert, cfg);
        let mut outcome = AlertOutcome {
            alertname: alert.name().to_string(),
            fingerprint: alert.fingerprint.clone(),
            status: alert.status.clone(),
            incident: None,
            runs: Vec::new(),
            notes: Vec::new(),
        };
        let labels = Value::Object(to_map(&alert.labels));
        let firing = alert.status == "firing";
        let incident: Option<Incident> = match store.open_incident_by_key(&key).await? {
            Some(i) => Some(i),
            None if firing => {
                let title = alert
                    .annotations
                    .get("summary")
                    .cloned()
                    .unwrap_or_else(|| alert.name().to_string());
                let opened = alert.starts_at_ms().unwrap_or_else(crate::store::now_ms);
                Some(
                    store
                        .create_incident(
                            &key,
                            &format!("alert:{}", alert.name()),
                            &title,
                            &labels,
                            opened,
                        )
                        .await?,
                )
            }
            None => None,
        };
        outcome.incident = incident.as_ref().map(|i| i.id.clone());
        let matches = matching(self, alert, cfg.cooldown);
        let mut resolve_now = !firing;
        match &incident {
            None => outcome
                .notes
                .push("resolved, but no open incident has this key".into()),
            Some(incident) => {
                if matches.is_empty() {
                    self.inner.metrics.alert_unmatched();
                    outcome
                        .notes
                        .push("no playbook is triggered by this alert".into());
                }
                for (playbook, on_resolved, cooldown) in matches {
                    if !firing && !on_resolved {
                        continue;
                    }
                    if let Some((status, queued_at)) =
                        store.last_incident_run(&incident.id, &playbook).await?
                    {
                        let active = matches!(
                            RunStatus::parse(&status),
                            Some(RunStatus::Queued | RunStatus::Running)
                        );
                        // A resolution is new information: its run waits for the active one
                        // (runs of one playbook for one incident never overlap).
                        if active && firing {
                            self.inner.metrics.alert_deduplicated();
                            outcome.notes.push(format!(
                                "{playbook}: a run for this incident is already {status}"
                            ));
                            continue;
                        }
                        let since = crate::store::now_ms() - queued_at;
                        if firing && since < cooldown.as_millis() as i64 {
                            self.inner.metrics.alert_deduplicated();
                            outcome.notes.push(format!(
                                "{playbook}: in cooldown ({} s of {} s since the last run)",
                                since / 1000,
                                cooldown.as_secs()
                            ));
                            continue;
                        }
                    }
                    let event = Event {
                        kind: "alert".into(),
                        name: alert.name().to_string(),
                        status: alert.status.clone(),
                        labels: to_map(&alert.labels),
                        annotations: to_map(&alert.annotations),
                        params: Map::new(),
                        incident: Some(incident.id.clone()),
                        dry_run: false,
                    };
                    let submission = self
                        .submit(
                            RunRequest {
                                playbook: playbook.clone(),
                                event,
                                trigger: Trigger {
                                    kind: "alert".into(),
                                    name: alert.name().to_string(),
                                    actor: actor.to_string(),
                                },
                            },
                            false,
                        )
                        .await?;
                    if !firing {
                        // The run resolves the incident when it finishes.
                        resolve_now = false;
                    }
                    outcome
                        .notes
                        .push(format!("{playbook}: run {}", submission.run.id));
                    outcome.runs.push(submission.run.id);
                }
                if resolve_now {
                    store
                        .resolve_incident(
                            &incident.id,
                            "alertmanager",
                            &format!("alert {} resolved", alert.name()),
                        )
                        .await?;
                    outcome.notes.push("incident resolved".into());
                }
            }
        }
        store
            .record_alert(&AlertRecord {
                alertname: alert.name().to_string(),
                fingerprint: alert.fingerprint.clone(),
                status: alert.status.clone(),
                starts_at: alert.starts_at.clone(),
                labels,
                annotations: Value::Object(to_map(&alert.annotations)),
                incident_id: outcome.incident.clone(),
                outcome: outcome.notes.join("; "),
            })
            .await?;
        Ok(outcome)
    }
}
