//! Triggers: what a playbook declares starts it, and the Alertmanager payload parser. The
//! event every source produces is [`crate::event::Event`]; the loops that fire cron
//! schedules and escalation levels are `crate::schedulers`.
//!
//! A playbook declares its triggers in `fn triggers()`; [`TriggerSpec::parse_all`] turns that
//! declaration (already converted to JSON by the engine) into typed specs at load time, so a
//! typo in a trigger is a load error with the playbook's name on it, not a silent no-op.

pub mod alertmanager;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// A trigger's cooldown: parsed once when the playbook loads, shown as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooldown {
    /// As the playbook wrote it (`"5m"`); what listings show.
    pub text: String,
    pub duration: std::time::Duration,
}

impl Serialize for Cooldown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// One declared trigger of a playbook.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TriggerSpec {
    /// An Alertmanager alert by name, optionally with label matchers.
    Alert {
        alert: String,
        labels: BTreeMap<String, String>,
        /// Run on `resolved` notifications too.
        on_resolved: bool,
        /// Quiet time between runs for one incident, e.g. `"5m"` (parsed at load).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        cooldown: Option<Cooldown>,
    },
    /// A crontab schedule (5 fields, or 6/7 with seconds).
    Cron { cron: String },
    /// Declared runnable by hand (every playbook is, this just says so in listings).
    Manual,
}

/// A trigger declaration that cannot be understood.
#[derive(Debug, thiserror::Error)]
#[error("triggers()[{index}]: {problem}")]
pub struct TriggerError {
    pub index: usize,
    pub problem: TriggerProblem,
}

/// What is wrong with one declared trigger; the message names the key and what it must be.
#[derive(Debug, thiserror::Error)]
pub enum TriggerProblem {
    #[error("triggers() must return an array of maps")]
    NotAnArray,
    #[error("expected a map like #{{ alert: \"Name\" }}, got {0}")]
    NotAMap(Value),
    #[error("expected one of `alert`, `cron` or `manual`")]
    NoKind,
    #[error("unknown key `{key}` (allowed here: {})", allowed.join(", "))]
    UnknownKey {
        key: String,
        allowed: &'static [&'static str],
    },
    /// `what` is the value the key takes, e.g. "a non-empty string".
    #[error("`{key}` must be {what}")]
    WrongType { key: String, what: &'static str },
    #[error("`cooldown` `{text}` is not a duration: {source}")]
    Cooldown {
        text: String,
        source: humantime::DurationError,
    },
    #[error(transparent)]
    Cron(#[from] CronError),
    #[error("`manual` must be true (every playbook can be run by hand anyway)")]
    ManualNotTrue,
}

fn wrong(key: impl Into<String>, what: &'static str) -> TriggerProblem {
    TriggerProblem::WrongType {
        key: key.into(),
        what,
    }
}

impl TriggerSpec {
    /// Parses the array `triggers()` returned.
    pub fn parse_all(value: &Value) -> Result<Vec<TriggerSpec>, TriggerError> {
        let items = value.as_array().ok_or(TriggerError {
            index: 0,
            problem: TriggerProblem::NotAnArray,
        })?;
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                TriggerSpec::parse(item).map_err(|problem| TriggerError { index, problem })
            })
            .collect()
    }

    fn parse(item: &Value) -> Result<TriggerSpec, TriggerProblem> {
        let map = item
            .as_object()
            .ok_or_else(|| TriggerProblem::NotAMap(item.clone()))?;
        let allow = |allowed: &'static [&'static str]| -> Result<(), TriggerProblem> {
            match map.keys().find(|k| !allowed.contains(&k.as_str())) {
                Some(k) => Err(TriggerProblem::UnknownKey {
                    key: k.clone(),
                    allowed,
                }),
                None => Ok(()),
            }
        };
        if let Some(alert) = map.get("alert") {
            allow(&["alert", "labels", "on_resolved", "cooldown"])?;
            let alert = alert
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| wrong("alert", "a non-empty string"))?;
            let mut labels = BTreeMap::new();
            if let Some(l) = map.get("labels") {
                let l = l.as_object().ok_or_else(|| wrong("labels", "a map"))?;
                for (k, v) in l {
                    let v = v
                        .as_str()
                        .ok_or_else(|| wrong(format!("labels.{k}"), "a string"))?;
                    labels.insert(k.clone(), v.to_string());
                }
            }
            let on_resolved = match map.get("on_resolved") {
                None => false,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| wrong("on_resolved", "true or false"))?,
            };
            let cooldown = match map.get("cooldown") {
                None => None,
                Some(v) => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| wrong("cooldown", "a duration string"))?;
                    let duration = humantime::parse_duration(s).map_err(|source| {
                        TriggerProblem::Cooldown {
                            text: s.into(),
                            source,
                        }
                    })?;
                    Some(Cooldown {
                        text: s.to_string(),
                        duration,
                    })
                }
            };
            return Ok(TriggerSpec::Alert {
                alert: alert.into(),
                labels,
                on_resolved,
                cooldown,
            });
        }
        if let Some(cron) = map.get("cron") {
            allow(&["cron"])?;
            let cron = cron.as_str().ok_or_else(|| wrong("cron", "a string"))?;
            parse_cron(cron)?;
            return Ok(TriggerSpec::Cron { cron: cron.into() });
        }
        if let Some(manual) = map.get("manual") {
            allow(&["manual"])?;
            return match manual.as_bool() {
                Some(true) => Ok(TriggerSpec::Manual),
                _ => Err(TriggerProblem::ManualNotTrue),
            };
        }
        Err(TriggerProblem::NoKind)
    }
}

/// A `cron` trigger whose schedule cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("cron `{expr}` has {fields} fields; expected 5, 6 or 7")]
    Fields { expr: String, fields: usize },
    #[error("cron `{expr}`: {source}")]
    Invalid {
        expr: String,
        source: ::cron::error::Error,
    },
}

/// Parses a crontab line: 5 fields (minute precision, the classic form) or 6/7 with seconds.
pub fn parse_cron(expr: &str) -> Result<::cron::Schedule, CronError> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_string(),
        fields => {
            return Err(CronError::Fields {
                expr: expr.into(),
                fields,
            })
        }
    };
    full.parse::<::cron::Schedule>()
        .map_err(|source| CronError::Invalid {
            expr: expr.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_three_kinds() {
        let specs = TriggerSpec::parse_all(&json!([
            {"alert": "PaymentProcessorDown", "labels": {"service": "payments"}, "on_resolved": true},
            {"cron": "0 * * * *"},
            {"manual": true}
        ]))
        .expect("valid");
        assert_eq!(specs.len(), 3);
        assert!(
            matches!(&specs[0], TriggerSpec::Alert { on_resolved: true, labels, .. } if labels["service"] == "payments")
        );
        assert_eq!(
            specs[1],
            TriggerSpec::Cron {
                cron: "0 * * * *".into()
            }
        );
        assert_eq!(specs[2], TriggerSpec::Manual);
    }

    #[test]
    fn rejects_typos_with_position() {
        let err = TriggerSpec::parse_all(&json!([{"manual": true}, {"alert": "X", "lables": {}}]))
            .expect_err("typo");
        assert_eq!(err.index, 1);
        assert!(
            matches!(&err.problem, TriggerProblem::UnknownKey { key, .. } if key == "lables"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("triggers()[1]: unknown key `lables`"),
            "{err}"
        );
        let err = TriggerSpec::parse_all(&json!([{"cron": "61 * * * *"}])).expect_err("bad cron");
        assert!(err.to_string().contains("61 * * * *"), "{err}");
        let err = TriggerSpec::parse_all(&json!([{"cron": "* * *"}])).expect_err("bad cron");
        assert!(
            matches!(
                err.problem,
                TriggerProblem::Cron(CronError::Fields { fields: 3, .. })
            ),
            "{err}"
        );
        let err = TriggerSpec::parse_all(&json!([{"alert": "X", "labels": {"team": 1}}]))
            .expect_err("label");
        assert_eq!(
            err.to_string(),
            "triggers()[0]: `labels.team` must be a string"
        );
    }

    #[test]
    fn cron_accepts_five_six_and_seven_fields() {
        for expr in ["*/5 * * * *", "30 */5 * * * *", "0 0 12 * * * 2030"] {
            parse_cron(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
    }
}
