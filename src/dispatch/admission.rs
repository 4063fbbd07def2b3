//! Admission: under which incident an alert goes, which playbooks it triggers, and whether
//! each of them runs now or is held back (a run already active, a cooldown). One set of
//! rules, called by the daemon's ingester ([`super::alerts`]) and by the simulation
//! (`sim::driver`), so `runbookd test` admits alerts exactly as production does.

use std::time::Duration;

use crate::{
    config::AlertsConfig,
    engine::catalog::Catalog,
    store::RunStatus,
    triggers::{alertmanager::Alert, TriggerSpec},
};

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

/// Alertmanager's fingerprint of a label set (`model.LabelSet.Fingerprint`: FNV-1a 64 over
/// the sorted names and values, each followed by 0xff), as 16 hex digits — for alerts
/// that did not come from Alertmanager (simulations).
pub fn fingerprint(labels: &std::collections::BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    format!("{h:016x}")
}

/// A playbook whose trigger matches an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub playbook: String,
    /// The trigger also runs when the alert resolves.
    pub on_resolved: bool,
    /// The trigger's cooldown, or `[alerts] cooldown`.
    pub cooldown: Duration,
}

/// Every playbook with a trigger matching this alert (its first matching trigger).
pub fn matching(catalog: &Catalog, alert: &Alert, default_cooldown: Duration) -> Vec<Match> {
    let mut out = Vec::new();
    for pb in catalog.playbooks() {
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
                    let cooldown = cooldown.as_ref().map_or(default_cooldown, |c| c.duration);
                    out.push(Match {
                        playbook: pb.name.clone(),
                        on_resolved: *on_resolved,
                        cooldown,
                    });
                    break;
                }
            }
        }
    }
    out
}

/// What to do with one matching playbook.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Start,
    /// A resolution, and the trigger does not run on resolution.
    NotOnResolved,
    /// A run of it for this incident is queued or running (runs of one playbook for one
    /// incident never overlap; a resolution waits for it instead).
    Active(RunStatus),
    /// Its last run for this incident was queued `since_ms` ago, within the cooldown.
    Cooldown {
        since_ms: i64,
        cooldown: Duration,
    },
}

impl Verdict {
    /// The outcome note of a held-back playbook (`None` for [`Verdict::Start`] and
    /// [`Verdict::NotOnResolved`], which say nothing).
    pub fn note(&self, playbook: &str) -> Option<String> {
        match self {
            Verdict::Start | Verdict::NotOnResolved => None,
            Verdict::Active(status) => Some(format!(
                "{playbook}: a run for this incident is already {}",
                status.as_str()
            )),
            Verdict::Cooldown { since_ms, cooldown } => Some(format!(
                "{playbook}: in cooldown ({} s of {} s since the last run)",
                since_ms / 1000,
                cooldown.as_secs()
            )),
        }
    }
}

/// Whether `m` runs for a `firing` (or resolved) alert, given its last run for the
/// incident (status, queued at ms), at `now_ms`.
pub fn decide(m: &Match, firing: bool, last: Option<(RunStatus, i64)>, now_ms: i64) -> Verdict {
    if !firing && !m.on_resolved {
        return Verdict::NotOnResolved;
    }
    let Some((status, queued_at)) = last else {
        return Verdict::Start;
    };
    if firing && matches!(status, RunStatus::Queued | RunStatus::Running) {
        return Verdict::Active(status);
    }
    let since_ms = now_ms - queued_at;
    if firing && since_ms < m.cooldown.as_millis() as i64 {
        return Verdict::Cooldown {
            since_ms,
            cooldown: m.cooldown,
        };
    }
    Verdict::Start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_walks_labels_like_alertmanager() {
        // The empty set hashes to FNV-1a's offset basis (prometheus/common's
        // `emptyLabelSignature`).
        assert_eq!(fingerprint(&Default::default()), "cbf29ce484222325");
        let labels = std::collections::BTreeMap::from([("alertname".to_string(), "a".to_string())]);
        let a = fingerprint(&labels);
        assert_eq!(a.len(), 16);
        let mut more = labels.clone();
        more.insert("region".into(), "eu".into());
        assert_ne!(
            a,
            fingerprint(&more),
            "different labels, different incidents"
        );
        assert_eq!(a, fingerprint(&labels), "stable");
    }

    #[test]
    fn decisions() {
        let m = Match {
            playbook: "p".into(),
            on_resolved: false,
            cooldown: Duration::from_secs(300),
        };
        assert_eq!(decide(&m, true, None, 0), Verdict::Start);
        assert_eq!(decide(&m, false, None, 0), Verdict::NotOnResolved);
        assert_eq!(
            decide(&m, true, Some((RunStatus::Running, 0)), 1),
            Verdict::Active(RunStatus::Running)
        );
        assert!(matches!(
            decide(&m, true, Some((RunStatus::Succeeded, 0)), 299_999),
            Verdict::Cooldown { .. }
        ));
        assert_eq!(
            decide(&m, true, Some((RunStatus::Succeeded, 0)), 300_000),
            Verdict::Start
        );
        let r = Match {
            on_resolved: true,
            ..m
        };
        assert_eq!(
            decide(&r, false, Some((RunStatus::Running, 0)), 1),
            Verdict::Start,
            "a resolution is new information"
        );
    }
}
