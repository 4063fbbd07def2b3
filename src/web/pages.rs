//! What every page shares: the frame around it ([`Chrome`]) and how values read — times
//! relative and absolute, durations, JSON.

use super::Viewer;
use crate::{
    config::Role,
    http::{caller::Access, state::Simulated},
    store::{RunRecord, RunStatus},
};

/// The frame: who is looking, what they may do, whether the world is simulated.
pub struct Chrome {
    pub title: String,
    /// `alice (operator)`; empty when nobody is logged in.
    pub who: String,
    pub can_operate: bool,
    pub csrf: String,
    /// `serve --world`: the scenario's title.
    pub simulated: Option<String>,
    /// A session that can log out.
    pub logged_in: bool,
    /// The daemon has no tokens: approvals must say who decides.
    pub open: bool,
    /// Which navigation entry is this page.
    pub nav: &'static str,
}

impl Chrome {
    pub fn new(viewer: &Viewer, title: impl Into<String>, nav: &'static str) -> Chrome {
        let c = &viewer.caller;
        let who = match c.role() {
            None => "local operator (no tokens)".to_string(),
            Some(r) => format!("{} ({})", c.name, role_name(r)),
        };
        Chrome {
            title: title.into(),
            who,
            can_operate: c.may(Access::Operate),
            csrf: viewer.csrf.clone(),
            simulated: viewer.simulated.as_deref().map(String::from),
            logged_in: c.session_csrf.is_some(),
            open: viewer.open,
            nav,
        }
    }

    /// The login page's frame: nobody yet.
    pub fn anonymous(simulated: &Simulated, title: &str) -> Chrome {
        Chrome {
            simulated: simulated.0.as_deref().map(String::from),
            ..Chrome::bare(title)
        }
    }

    /// An error page's frame.
    pub fn bare(title: &str) -> Chrome {
        Chrome {
            title: title.into(),
            who: String::new(),
            can_operate: false,
            csrf: String::new(),
            simulated: None,
            logged_in: false,
            open: false,
            nav: "",
        }
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Operator => "operator",
        Role::Viewer => "viewer",
        Role::Ingest => "ingest",
    }
}

/// A moment, shown both ways: "4 min ago" and "2026-12-02 03:12:09 UTC".
pub struct When {
    pub iso: String,
    pub ago: String,
    pub abs: String,
}

pub fn when(ms: i64, now: i64) -> When {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    When {
        iso: t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ago: relative(ms, now),
        abs: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    }
}

pub fn when_opt(ms: Option<i64>, now: i64) -> Option<When> {
    ms.map(|m| when(m, now))
}

/// `RFC 3339` (as records keep some times) to a [`When`].
pub fn when_str(rfc3339: &str, now: i64) -> When {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => when(t.timestamp_millis(), now),
        Err(_) => When {
            iso: rfc3339.into(),
            ago: rfc3339.into(),
            abs: rfc3339.into(),
        },
    }
}

/// "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago"; "in 4 min" for the future.
pub fn relative(ms: i64, now: i64) -> String {
    let d = (now - ms) / 1000;
    let (n, future) = if d < 0 { (-d, true) } else { (d, false) };
    let text = if n < 5 {
        return "just now".into();
    } else if n < 60 {
        format!("{n} s")
    } else if n < 3600 {
        format!("{} min", n / 60)
    } else if n < 86_400 {
        format!("{} h {} min", n / 3600, (n % 3600) / 60)
    } else {
        format!("{} d {} h", n / 86_400, (n % 86_400) / 3600)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A span of seconds as people say it: "2.4 s", "42 s", "3 min 10 s", "30 min", "2 h 5 min".
pub fn span(seconds: f64) -> String {
    let s = seconds as i64;
    let two = |n: i64, big: &str, m: i64, small: &str| {
        if m == 0 {
            format!("{n} {big}")
        } else {
            format!("{n} {big} {m} {small}")
        }
    };
    if seconds < 10.0 {
        format!("{seconds:.1} s")
    } else if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        two(s / 60, "min", s % 60, "s")
    } else {
        two(s / 3600, "h", (s % 3600) / 60, "min")
    }
}

/// Indented JSON for reading.
pub fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A scalar as text, anything else as compact JSON.
pub fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A run as lists show it.
pub struct RunRow {
    pub id: String,
    pub short: String,
    pub playbook: String,
    pub status: &'static str,
    pub dry_run: bool,
    /// `alert PaymentProcessorDown`, `cron */5 * * * *`, `manual by alice`.
    pub trigger: String,
    pub queued: When,
    /// "2.4 s", or "running" / "queued".
    pub duration: String,
}

pub fn run_row(r: &RunRecord, now: i64) -> RunRow {
    let duration = match (r.started_at, r.finished_at) {
        (Some(s), Some(f)) => span((f - s) as f64 / 1000.0),
        (Some(s), None) if r.status == RunStatus::Running => {
            format!("running {}", span((now - s) as f64 / 1000.0))
        }
        _ => "—".into(),
    };
    RunRow {
        id: r.id.clone(),
        short: short_id(&r.id),
        playbook: r.playbook.clone(),
        status: r.status.as_str(),
        dry_run: r.dry_run,
        trigger: trigger_text(&r.trigger),
        queued: when(r.queued_at, now),
        duration,
    }
}

pub fn trigger_text(t: &crate::event::Trigger) -> String {
    match t.kind {
        crate::event::EventKind::Manual => format!("manual by {}", t.actor),
        k => format!("{} {}", k.as_str(), t.name),
    }
}

/// The last 12 characters of a UUIDv7 (its random part): enough to tell runs apart.
pub fn short_id(id: &str) -> String {
    id.get(id.len().saturating_sub(12)..)
        .unwrap_or(id)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_relative_and_spans_round() {
        let now = 1_700_000_000_000;
        assert_eq!(relative(now - 2_000, now), "just now");
        assert_eq!(relative(now - 42_000, now), "42 s ago");
        assert_eq!(relative(now - 5 * 60_000, now), "5 min ago");
        assert_eq!(relative(now - 3 * 3_600_000 - 60_000, now), "3 h 1 min ago");
        assert_eq!(relative(now + 4 * 60_000, now), "in 4 min");
        assert_eq!(span(2.44), "2.4 s");
        assert_eq!(span(1800.0), "30 min");
        assert_eq!(span(190.0), "3 min 10 s");
        assert_eq!(span(7500.0), "2 h 5 min");
        let w = when(now, now);
        assert_eq!(w.abs, "2023-11-14 22:13:20 UTC");
        assert_eq!(w.iso, "2023-11-14T22:13:20.000Z");
    }
}
