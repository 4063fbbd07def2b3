//! `[alerts]`: how Alertmanager notifications become incidents and runs.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// `[alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Labels that identify "the same incident" besides `alertname`. Empty (default): the
    /// alert's fingerprint (all its labels).
    pub incident_key_labels: Vec<String>,
    /// Quiet time between two runs of one playbook for one incident, unless the trigger
    /// sets its own `cooldown`.
    #[serde(deserialize_with = "duration")]
    pub cooldown: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            incident_key_labels: Vec::new(),
            cooldown: Duration::from_secs(300),
        }
    }
}
