//! One scenario loop for both stages a scenario plays on: the simulation on its virtual
//! clock (`runbookd simulate`; [`super::driver::Sim`]) and the daemon on the real one
//! (`runbookd serve --world`; [`Live`]). Steps happen at their times after the start, the
//! alert rules are evaluated on the world after every step of time, and the alerts they
//! raise enter through the daemon's own admission in both.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    error::SimError,
    scenario::{apply, Monitor, Scenario},
    World,
};
use crate::{
    config::AlertsConfig,
    dispatch::{Dispatcher, RunRequest},
    triggers::alertmanager::{Alert, AlertStatus},
};

/// Where a scenario plays.
#[async_trait::async_trait]
pub trait Stage: Send + Sync {
    fn world(&self) -> &World;
    /// Says what happened: on the timeline, or in the daemon's log.
    fn note(&self, kind: &str, text: String);
    /// Alertmanager delivers `alert`.
    async fn alert(&self, alert: Alert) -> Result<(), SimError>;
    /// An operator runs `playbook` by hand.
    async fn run_by_hand(&self, playbook: &str) -> Result<(), SimError>;
    /// After every step of time, what the daemon's own loops would do by now on their
    /// schedule (a simulation fires cron ticks and walks the escalation table; the daemon's
    /// loops run by themselves).
    async fn tick(&self, from_ms: i64, to_ms: i64) -> Result<(), SimError>;
    /// Lets `by` pass; false when the stage is told to stop.
    async fn pass(&self, by: Duration) -> bool;
}

/// How a scenario plays on a stage.
pub struct Pacing {
    /// One step of time.
    pub step: Duration,
    /// After the scenario's end the world stays (the daemon keeps serving it, the breaker
    /// still follows Stripe) until the stage stops; otherwise playing ends there.
    pub stay: bool,
}

/// The alert Alertmanager would send for a scenario's rule `name` at `now_ms`.
pub fn scenario_alert(name: &str, status: AlertStatus, now_ms: i64) -> Alert {
    let now = crate::store::ms_to_rfc3339(now_ms);
    let labels: std::collections::BTreeMap<String, String> = [
        ("alertname".to_string(), name.to_string()),
        ("service".to_string(), "payments".to_string()),
        ("simulated".to_string(), "true".to_string()),
    ]
    .into_iter()
    .collect();
    Alert {
        status,
        fingerprint: crate::dispatch::admission::fingerprint(&labels),
        labels,
        annotations: [("summary".to_string(), format!("{name} (simulated world)"))]
            .into_iter()
            .collect(),
        starts_at: now.clone(),
        ends_at: if status == AlertStatus::Resolved {
            now
        } else {
            "0001-01-01T00:00:00Z".into()
        },
        generator_url: String::new(),
    }
}

/// Plays `scenario` on `stage` from the world's now: its steps at their times, its alert
/// rules after every step of time, then the stage's own tick.
pub async fn play(stage: &impl Stage, scenario: &Scenario, pacing: Pacing) -> Result<(), SimError> {
    let world = stage.world();
    let start = world.clock().now_ms();
    let end = start + scenario.duration.as_millis() as i64;
    let step_ms = pacing.step.as_millis().max(1) as i64;
    let mut steps = scenario.ordered_steps().into_iter().peekable();
    let mut monitor = Monitor::default();
    let mut last_tick = start;
    let mut finished = false;
    loop {
        let now = world.clock().now_ms();
        while let Some(step) = steps.next_if(|s| start + s.at.as_millis() as i64 <= now) {
            for said in apply(world, &step) {
                stage.note("world", said);
            }
            if let Some(name) = &step.alert {
                stage
                    .alert(scenario_alert(name, AlertStatus::Firing, now))
                    .await?;
            }
            if let Some(name) = &step.resolve {
                stage
                    .alert(scenario_alert(name, AlertStatus::Resolved, now))
                    .await?;
            }
            if let Some(playbook) = &step.run {
                stage.note("world", format!("an operator runs {playbook} by hand"));
                stage.run_by_hand(playbook).await?;
            }
        }
        if scenario.alerts {
            for (name, status) in monitor.evaluate(world, now) {
                stage.alert(scenario_alert(&name, status, now)).await?;
            }
        }
        stage.tick(last_tick, now).await?;
        last_tick = now;
        if now >= end && !finished {
            finished = true;
            if !pacing.stay {
                return Ok(());
            }
            stage.note(
                "world",
                format!(
                    "scenario \"{}\" finished; the world stays as it is",
                    scenario.title
                ),
            );
        }
        let by = if finished {
            step_ms
        } else {
            step_ms.min(end - now)
        };
        if !stage.pass(Duration::from_millis(by as u64)).await {
            return Ok(());
        }
    }
}

/// `runbookd serve --world`: the daemon's dispatcher and its own loops, the real clock.
pub struct Live {
    pub world: Arc<World>,
    pub dispatcher: Dispatcher,
    pub alerts: AlertsConfig,
    pub stop: CancellationToken,
}

#[async_trait::async_trait]
impl Stage for Live {
    fn world(&self) -> &World {
        &self.world
    }

    fn note(&self, _kind: &str, text: String) {
        tracing::info!("simulated world: {text}");
    }

    async fn alert(&self, alert: Alert) -> Result<(), SimError> {
        tracing::info!(alert = %alert.name(), status = %alert.status, "simulated world: alert");
        if let Err(e) = self
            .dispatcher
            .ingest_alert(&alert, &self.alerts, "simulated-world")
            .await
        {
            tracing::warn!(alert = %alert.name(), error = %e, "simulated world: alert not taken");
        }
        Ok(())
    }

    async fn run_by_hand(&self, playbook: &str) -> Result<(), SimError> {
        let req = RunRequest::manual(
            playbook,
            Default::default(),
            false,
            "scenario",
            "simulated-world",
        );
        if let Err(e) = self.dispatcher.submit(req, false).await {
            tracing::warn!(playbook, error = %e, "simulated world: run not started");
        }
        Ok(())
    }

    async fn tick(&self, _from_ms: i64, _to_ms: i64) -> Result<(), SimError> {
        Ok(())
    }

    async fn pass(&self, by: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(by) => {
                // On the real clock time moves alone; the app reacts to it now.
                self.world.pass_time(0);
                true
            }
            _ = self.stop.cancelled() => false,
        }
    }
}

/// Plays `scenario` on the real daemon until its end, then keeps the world simulating until
/// `stop`.
pub async fn live(stage: Live, scenario: Scenario) {
    let pacing = Pacing {
        step: Duration::from_secs(1),
        stay: true,
    };
    if let Err(e) = play(&stage, &scenario, pacing).await {
        tracing::error!(error = %e, "simulated world stopped");
    }
}
