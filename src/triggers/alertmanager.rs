//! The Alertmanager webhook (payload version 4): parsed strictly where runbookd depends on a
//! field, tolerant of everything else (newer Alertmanagers add fields).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One webhook notification: a group of alerts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = AlertmanagerNotification)]
pub struct Notification {
    /// Always `4` (the payload version runbookd reads).
    #[schema(pattern = "^4$", example = "4")]
    pub version: String,
    #[serde(rename = "groupKey", default)]
    pub group_key: String,
    #[serde(rename = "truncatedAlerts", default, deserialize_with = "count")]
    pub truncated_alerts: u64,
    #[serde(default)]
    pub receiver: String,
    pub status: String,
    pub alerts: Vec<Alert>,
}

/// A count as JSON (and the OpenAPI document's `integer`) has it: `5660.0` is 5660 too.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a count")))
}

/// One alert of a notification; each becomes its own event.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(as = AlertmanagerAlert)]
pub struct Alert {
    pub status: AlertStatus,
    #[schema(schema_with = labels_schema)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[serde(rename = "endsAt", default)]
    pub ends_at: String,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    #[schema(min_length = 1)]
    pub fingerprint: String,
}

/// An alert's labels as the OpenAPI document shows them: strings, `alertname` among them.
fn labels_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{schema::Type, ObjectBuilder};
    ObjectBuilder::new()
        .description(Some("The alert's labels; `alertname` names it"))
        .property(
            "alertname",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1)),
        )
        .required("alertname")
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// An alert's state in a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// `firing` or `resolved`.
    pub fn parse(text: &str) -> Option<AlertStatus> {
        match text {
            "firing" => Some(AlertStatus::Firing),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

impl std::fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Replaces every NUL character of the alert's text with U+FFFD; how many it replaced.
    ///
    /// PostgreSQL's `text` cannot hold NUL: an alert carrying one (JSON allows `\u0000`)
    /// failed its batch with "invalid byte sequence for encoding UTF8: 0x00", was answered
    /// 503, and Alertmanager resent it for ever — never recorded. Refusing it with 400 would
    /// lose it too (Alertmanager does not resend 4xx). Replaced the same way on both stores,
    /// a resend still meets its incident at the door.
    fn replace_nul(&mut self) -> usize {
        fn fix(text: &mut String) -> usize {
            let n = text.matches('\0').count();
            if n > 0 {
                *text = text.replace('\0', "\u{FFFD}");
            }
            n
        }
        let mut n = fix(&mut self.starts_at)
            + fix(&mut self.ends_at)
            + fix(&mut self.generator_url)
            + fix(&mut self.fingerprint);
        for map in [&mut self.labels, &mut self.annotations] {
            if map
                .iter()
                .any(|(k, v)| k.contains('\0') || v.contains('\0'))
            {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(mut k, mut v)| {
                        n += fix(&mut k) + fix(&mut v);
                        (k, v)
                    })
                    .collect();
            }
        }
        n
    }

    /// `startsAt` as unix milliseconds.
    pub fn starts_at_ms(&self) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(&self.starts_at)
            .ok()
            .map(|t| t.timestamp_millis())
    }
}

/// A payload that cannot be accepted, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// Parses and validates a webhook body.
pub fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut n: Notification = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            PayloadError(format!("invalid Alertmanager payload: {inner}"))
        } else {
            PayloadError(format!("invalid Alertmanager payload at `{path}`: {inner}"))
        }
    })?;
    // The document says int64 (what JSON tools can hold); Alertmanager counts far below.
    if i64::try_from(n.truncated_alerts).is_err() {
        return Err(PayloadError(format!(
            "truncatedAlerts {} is out of range",
            n.truncated_alerts
        )));
    }
    if n.version != "4" {
        return Err(PayloadError(format!(
            "unsupported Alertmanager payload version `{}` (runbookd reads version 4)",
            n.version
        )));
    }
    let replaced: usize = n.alerts.iter_mut().map(Alert::replace_nul).sum();
    if replaced > 0 {
        tracing::warn!(
            replaced,
            group = %n.group_key.replace('\0', "\u{FFFD}"),
            "alert text held NUL characters (PostgreSQL text cannot store them): replaced with U+FFFD"
        );
    }
    for (i, a) in n.alerts.iter().enumerate() {
        if a.name().is_empty() {
            return Err(PayloadError(format!(
                "alerts[{i}].labels.alertname is missing"
            )));
        }
        if a.starts_at_ms().is_none() {
            return Err(PayloadError(format!(
                "alerts[{i}].startsAt `{}` is not an RFC 3339 time",
                a.starts_at
            )));
        }
        if a.fingerprint.is_empty() {
            return Err(PayloadError(format!("alerts[{i}].fingerprint is empty")));
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"version":"4","groupKey":"{}:{alertname=\"PaymentProcessorDown\"}","truncatedAlerts":0,
      "status":"firing","receiver":"runbookd","groupLabels":{},"commonLabels":{},"commonAnnotations":{},
      "externalURL":"http://am","notification_reason":"new","routeLabels":{},
      "alerts":[{"status":"firing","labels":{"alertname":"PaymentProcessorDown","severity":"critical"},
      "annotations":{"summary":"breaker open"},"startsAt":"2026-11-27T10:00:00.123Z",
      "endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom","fingerprint":"abc123"}]}"#;

    #[test]
    fn reads_version_4_and_ignores_new_fields() {
        let n = parse(OK.as_bytes()).expect("valid");
        assert_eq!(n.alerts[0].name(), "PaymentProcessorDown");
        assert_eq!(n.alerts[0].starts_at_ms(), Some(1_795_773_600_123));
    }

    #[test]
    fn nul_characters_become_replacement_characters() {
        let odd = OK
            .replace("breaker open", r"breaker\u0000open")
            .replace("abc123", r"abc\u0000123")
            .replace(r#""severity":"critical""#, r#""sev\u0000":"crit\u0000""#);
        let n = parse(odd.as_bytes()).expect("valid");
        let a = &n.alerts[0];
        assert_eq!(a.annotations["summary"], "breaker\u{FFFD}open");
        assert_eq!(a.fingerprint, "abc\u{FFFD}123");
        assert_eq!(a.labels["sev\u{FFFD}"], "crit\u{FFFD}");
        assert!(!a.labels.contains_key("sev\0"));
    }

    #[test]
    fn names_the_bad_field() {
        let bad = OK.replace(r#""fingerprint":"abc123""#, r#""fingerprint":42"#);
        let e = parse(bad.as_bytes()).expect_err("bad").to_string();
        assert!(e.contains("alerts[0].fingerprint"), "{e}");
        let bad = OK.replace("2026-11-27T10:00:00.123Z", "yesterday");
        assert!(parse(bad.as_bytes())
            .expect_err("bad")
            .to_string()
            .contains("alerts[0].startsAt"));
        let bad = OK.replace(r#""version":"4""#, r#""version":"3""#);
        assert!(parse(bad.as_bytes())
            .expect_err("bad")
            .to_string()
            .contains("version `3`"));
        let bad = OK.replace(
            r#""status":"firing","labels""#,
            r#""status":"burning","labels""#,
        );
        assert!(parse(bad.as_bytes())
            .expect_err("bad")
            .to_string()
            .contains("alerts[0].status"));
    }
}
