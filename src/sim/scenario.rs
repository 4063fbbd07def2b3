//! Outage scenarios: a TOML file that says what happens to the world and when
//! (`examples/scenarios/*.toml`), played by `runbookd simulate` on a virtual clock and by
//! `runbookd serve --world` on the real one.
//!
//! ```toml
//! title = "Stripe down for 40 minutes, then recovers"
//! duration = "75m"
//!
//! [[step]]
//! at = "0s"
//! stripe_status = ["major", "Elevated error rates on the Payments API"]
//!
//! [[step]]
//! at = "40m"
//! stripe_recovers = true
//! ```
//!
//! Alerts come from the same thresholds as `examples/prometheus/rules.yml`, evaluated on
//! the simulated world ([`Monitor`]): `PaymentProcessorDown` while the breaker is not closed
//! for 30 s, `PaymentsPendingTooLong` while a payment is pending for more than 30 minutes
//! (for 1 minute), `WebhookDeliveryLow` while under 95 % of the last 15 minutes' Stripe events
//! reached the app (for 5 minutes). Cron triggers fire on the virtual clock too. A step can
//! also deliver an alert by hand (`alert = "Name"`).

use std::time::Duration;

use serde::Deserialize;

use super::{change::Change, World};
use crate::triggers::alertmanager::AlertStatus;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// How long to simulate, from the start.
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// Evaluate the alert rules on the world (default true).
    #[serde(default = "yes")]
    pub alerts: bool,
    /// Playbooks whose cron triggers fire during the simulation (default none: a timeline
    /// shows the outage, not every five-minute health probe).
    #[serde(default)]
    pub cron: Vec<String>,
    /// `[playbooks.settings]` for this scenario (on top of the configuration's).
    #[serde(default)]
    pub settings: toml::Table,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Payments to add: `count` of them, each `age` old, with a PaymentIntent in `stripe`
/// status when given (with a `processor_ref`, or found by `metadata.payment_id` when
/// `with_ref = false`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payments {
    pub status: String,
    #[serde(deserialize_with = "duration")]
    pub age: Duration,
    #[serde(default = "one")]
    pub count: u32,
    /// Stripe statuses to cycle through for their PaymentIntents.
    #[serde(default)]
    pub stripe: Vec<String>,
    #[serde(default = "yes")]
    pub with_ref: bool,
}

fn one() -> u32 {
    1
}

/// What happens at one moment. Every field is optional; several may be set at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When, from the start of the scenario.
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    /// Stripe's status page: `[indicator, description]`.
    pub stripe_status: Option<(String, String)>,
    /// `"down"` or `"up"`: whether Stripe's API answers at all.
    pub stripe_api: Option<String>,
    /// Status page operational, API up, the app's calls succeed again.
    #[serde(default)]
    pub stripe_recovers: bool,
    /// Replace the API key runbookd holds (`""`: unset).
    pub stripe_key: Option<String>,
    /// Stripe starts answering 401 to the key.
    #[serde(default)]
    pub stripe_rejects_key: bool,
    /// The app's webhook endpoint answers this status to an unsigned `{}` (0: unreachable).
    pub webhook_endpoint: Option<u16>,
    /// The webhook signing secret runbookd holds (`""`: unset).
    pub webhook_secret: Option<String>,
    /// Stripe events that failed delivery to the app.
    #[serde(default)]
    pub undelivered_events: Vec<String>,
    /// The signing secret the app verifies deliveries with.
    pub app_webhook_secret: Option<String>,
    /// runbookd may post signed probes (`[webhooks] signed_probe = true`).
    #[serde(default)]
    pub signed_probe: bool,
    /// The users' status page: `"down"`, `"up"`, or `"none"` (not configured).
    pub status_page: Option<String>,
    /// The app's Celery broker: `"down"`, `"up"`, or `"none"` (not configured).
    pub celery: Option<String>,
    /// The app runs this many idle Celery workers (0: none).
    pub celery_workers: Option<usize>,
    /// Payment tasks waiting on `[celery] queue` that no worker takes.
    pub queued_payments: Option<usize>,
    /// The app's workers open the breaker, this long ago.
    #[serde(default, deserialize_with = "opt_duration")]
    pub open_breaker: Option<Duration>,
    /// The app stops trying the half-open breaker (the runbook's "stuck open").
    #[serde(default)]
    pub breaker_stuck: bool,
    /// The app's Stripe calls fail (true) or succeed (false) regardless of Stripe.
    pub app_failing: Option<bool>,
    /// Payments the app has.
    #[serde(default)]
    pub payments: Vec<Payments>,
    /// Deliver an alert (firing) / its resolution by hand.
    pub alert: Option<String>,
    pub resolve: Option<String>,
    /// Run a playbook by hand, as an operator would.
    pub run: Option<String>,
    /// A line for the timeline.
    pub say: Option<String>,
}

/// A scenario file that cannot be played, naming the file (and the step).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("settings.{key}: {source}")]
    Setting {
        key: String,
        source: serde_json::Error,
    },
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let s: Scenario = toml::from_str(&text).map_err(|source| ScenarioError::Parse {
            path: shown.clone(),
            source,
        })?;
        let invalid = |message: String| ScenarioError::Invalid {
            path: shown.clone(),
            message,
        };
        for (i, step) in s.steps.iter().enumerate() {
            if step.at > s.duration {
                return Err(invalid(format!(
                    "step[{i}] at {} is after the scenario's duration {}",
                    humantime::format_duration(step.at),
                    humantime::format_duration(s.duration)
                )));
            }
            if let Some((indicator, _)) = &step.stripe_status {
                if !matches!(indicator.as_str(), "none" | "minor" | "major" | "critical") {
                    return Err(invalid(format!(
                        "step[{i}] stripe_status `{indicator}` is not none, minor, major or critical"
                    )));
                }
            }
            if let Some(api) = &step.stripe_api {
                if api != "down" && api != "up" {
                    return Err(invalid(format!(
                        "step[{i}] stripe_api must be \"down\" or \"up\""
                    )));
                }
            }
            if let Some(c) = &step.celery {
                if !matches!(c.as_str(), "down" | "up" | "none") {
                    return Err(invalid(format!(
                        "step[{i}] celery must be \"down\", \"up\" or \"none\""
                    )));
                }
            }
            if let Some(page) = &step.status_page {
                if !matches!(page.as_str(), "down" | "up" | "none") {
                    return Err(invalid(format!(
                        "step[{i}] status_page must be \"down\", \"up\" or \"none\""
                    )));
                }
            }
        }
        Ok(s)
    }

    /// Puts the scenario's `[settings]` into `world` (before its services are built: the
    /// daemon builds them once).
    pub fn install_settings(&self, world: &World) -> Result<(), ScenarioError> {
        for (k, v) in &self.settings {
            let v = serde_json::to_value(v).map_err(|source| ScenarioError::Setting {
                key: k.clone(),
                source,
            })?;
            world.state().settings.insert(k.clone(), v);
        }
        Ok(())
    }

    /// Steps in time order (stable for equal times).
    pub fn ordered_steps(&self) -> Vec<Step> {
        let mut steps = self.steps.clone();
        steps.sort_by_key(|s| s.at);
        steps
    }
}

impl Step {
    /// The world changes this step makes (alerts, runs and payments are the driver's).
    pub fn changes(&self) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some((indicator, description)) = &self.stripe_status {
            out.push(Change::StripeStatus {
                indicator: indicator.clone(),
                description: description.clone(),
            });
        }
        if let Some(api) = &self.stripe_api {
            out.push(Change::StripeApiDown(api == "down"));
        }
        if self.stripe_recovers {
            out.push(Change::StripeRecovers);
        }
        if let Some(key) = &self.stripe_key {
            out.push(Change::StripeKey((!key.is_empty()).then(|| key.clone())));
        }
        if self.stripe_rejects_key {
            out.push(Change::StripeRejectsKey);
        }
        if let Some(status) = self.webhook_endpoint {
            out.push(Change::WebhookEndpoint((status > 0).then_some(status)));
        }
        if let Some(secret) = &self.webhook_secret {
            out.push(Change::WebhookSecret(
                (!secret.is_empty()).then(|| secret.clone()),
            ));
        }
        if self.breaker_stuck {
            out.push(Change::BreakerStuck);
        }
        if let Some(secret) = &self.app_webhook_secret {
            out.push(Change::AppWebhookSecret(secret.clone()));
        }
        if self.signed_probe {
            out.push(Change::SignedProbe);
        }
        match self.status_page.as_deref() {
            None => {}
            Some("none") => out.push(Change::StatusPage(None)),
            Some(s) => out.push(Change::StatusPage(Some(s == "down"))),
        }
        match self.celery.as_deref() {
            None => {}
            Some("none") => out.push(Change::Celery(None)),
            Some(s) => out.push(Change::Celery(Some(s == "down"))),
        }
        if let Some(n) = self.celery_workers {
            out.push(Change::CeleryWorkers(n));
        }
        if let Some(n) = self.queued_payments {
            out.push(Change::QueuedPayments(n));
        }
        if let Some(f) = self.app_failing {
            out.push(Change::AppFailing(f));
        }
        if !self.undelivered_events.is_empty() {
            out.push(Change::UndeliveredEvents {
                kinds: self.undelivered_events.clone(),
                ago: Duration::ZERO,
            });
        }
        if let Some(ago) = self.open_breaker {
            out.push(Change::OpenBreaker {
                name: "stripe".into(),
                ago,
            });
        }
        out
    }
}

/// Applies the world changes of `step` (not alerts or runs: the driver does those) and
/// says what changed, for the timeline.
pub fn apply(world: &World, step: &Step) -> Vec<String> {
    let mut said = Vec::new();
    if let Some(text) = &step.say {
        said.push(text.clone());
    }
    for change in step.changes() {
        match world.apply(&change) {
            Ok(Some(line)) => said.push(line),
            Ok(None) => {}
            Err(e) => said.push(format!("cannot apply {change:?}: {e}")),
        }
    }
    for p in &step.payments {
        for i in 0..p.count {
            let stripe =
                (!p.stripe.is_empty()).then(|| p.stripe[i as usize % p.stripe.len()].clone());
            let pi = world.next_id("pi");
            let id = world.add_payment(
                &p.status,
                p.age.as_secs_f64(),
                (p.with_ref && stripe.is_some()).then(|| pi.clone()),
            );
            if let Some(status) = stripe {
                world.add_intent(&pi, &status, Some(id));
            }
        }
        said.push(format!(
            "{} {} payment(s), {} old{}",
            p.count,
            p.status,
            humantime::format_duration(p.age),
            if p.stripe.is_empty() {
                String::new()
            } else {
                format!(", Stripe says {}", p.stripe.join("/"))
            }
        ));
    }
    said
}

/// The alert rules of `examples/prometheus/rules.yml`, evaluated on the world.
#[derive(Debug, Default)]
pub struct Monitor {
    breaker_open_since: Option<i64>,
    pending_since: Option<i64>,
    webhooks_low_since: Option<i64>,
    firing: std::collections::BTreeSet<String>,
}

impl Monitor {
    /// Looks at the world at `now`; returns `(alert, firing | resolved)` transitions.
    pub fn evaluate(&mut self, world: &World, now: i64) -> Vec<(String, AlertStatus)> {
        let open = world.breaker_state("stripe").is_ok_and(|s| s != "closed");
        let oldest_pending = {
            let s = world.state();
            s.payments
                .iter()
                .filter(|p| p.status == "pending")
                .map(|p| now - p.created_ms)
                .max()
        };
        let mut out = Vec::new();
        // PaymentProcessorDown: breaker not closed, for 30 s.
        self.breaker_open_since = if open {
            self.breaker_open_since.or(Some(now))
        } else {
            None
        };
        let down = self.breaker_open_since.is_some_and(|t| now - t >= 30_000);
        self.transition("PaymentProcessorDown", down, &mut out);
        // PaymentsPendingTooLong: oldest pending > [payments] stale_after (30 min), for 1 min.
        let stale = oldest_pending.is_some_and(|age| age > world.stale_after_ms());
        self.pending_since = if stale {
            self.pending_since.or(Some(now))
        } else {
            None
        };
        let too_long = self.pending_since.is_some_and(|t| now - t >= 60_000);
        self.transition("PaymentsPendingTooLong", too_long, &mut out);
        // WebhookDeliveryLow: under 95 % of the last 15 minutes' events delivered, for 5 min.
        let (total, delivered) = {
            let s = world.state();
            let recent: Vec<_> = s
                .stripe
                .events
                .iter()
                .filter(|e| now - e.created_ms <= 900_000)
                .collect();
            (recent.len(), recent.iter().filter(|e| e.delivered).count())
        };
        let low = total > 0 && (delivered as f64) < 0.95 * total as f64;
        self.webhooks_low_since = if low {
            self.webhooks_low_since.or(Some(now))
        } else {
            None
        };
        let webhooks = self.webhooks_low_since.is_some_and(|t| now - t >= 300_000);
        self.transition("WebhookDeliveryLow", webhooks, &mut out);
        out
    }

    fn transition(&mut self, name: &str, on: bool, out: &mut Vec<(String, AlertStatus)>) {
        let was = self.firing.contains(name);
        if on && !was {
            self.firing.insert(name.into());
            out.push((name.into(), AlertStatus::Firing));
        } else if !on && was {
            self.firing.remove(name);
            out.push((name.into(), AlertStatus::Resolved));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/scenarios") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 5, "the five runbook scenarios ship");
    }

    #[test]
    fn a_step_after_the_end_is_refused_with_its_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "title = \"t\"\nduration = \"10m\"\n[[step]]\nat = \"11m\"\nstripe_recovers = true\n",
        )
        .expect("write");
        let e = Scenario::load(&path).expect_err("after the end");
        assert!(e.to_string().contains("step[0]"), "{e}");
        std::fs::write(
            &path,
            "title = \"t\"\nduration = \"10m\"\n[[step]]\nat = \"1m\"\nstripe_mood = 1\n",
        )
        .expect("write");
        let e = Scenario::load(&path).expect_err("unknown key");
        assert!(e.to_string().contains("stripe_mood"), "{e}");
    }
}
