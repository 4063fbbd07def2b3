//! `runbookd serve --world`: a scenario played on the real clock against the real daemon.
//! Steps happen at their times after the start; the alert rules are evaluated every second
//! and their alerts enter through the same path as Alertmanager's (dedup, incidents,
//! cooldowns); the escalation evaluator, the dispatcher and the API are the daemon's own.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    scenario::{apply, Monitor, Scenario},
    World,
};
use crate::{
    config::AlertsConfig,
    dispatch::{Dispatcher, RunRequest},
    store::Trigger,
    triggers::{
        alertmanager::{Alert, AlertStatus},
        Event,
    },
};

fn alert(name: &str, status: AlertStatus, world: &World) -> Alert {
    let now = chrono::DateTime::from_timestamp_millis(world.clock().now_ms())
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let labels: std::collections::BTreeMap<String, String> = [
        ("alertname".to_string(), name.to_string()),
        ("service".to_string(), "payments".to_string()),
        ("simulated".to_string(), "true".to_string()),
    ]
    .into_iter()
    .collect();
    Alert {
        status,
        // What Alertmanager would send for these labels.
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

async fn deliver(dispatcher: &Dispatcher, cfg: &AlertsConfig, a: Alert) {
    tracing::info!(alert = %a.name(), status = %a.status, "simulated world: alert");
    if let Err(e) = dispatcher.ingest_alert(&a, cfg, "simulated-world").await {
        tracing::warn!(alert = %a.name(), error = %e, "simulated world: alert not taken");
    }
}

/// Plays `scenario` on the real clock until its end, then keeps the app simulating (the
/// breaker still follows Stripe) until `stop`.
pub async fn run(
    world: Arc<World>,
    scenario: Scenario,
    dispatcher: Dispatcher,
    alerts: AlertsConfig,
    stop: CancellationToken,
) {
    let start = tokio::time::Instant::now();
    let mut steps = scenario.ordered_steps().into_iter().peekable();
    let mut monitor = Monitor::default();
    let mut finished = false;
    loop {
        let elapsed = start.elapsed();
        while let Some(step) = steps.next_if(|s| s.at <= elapsed) {
            for said in apply(&world, &step) {
                tracing::info!("simulated world: {said}");
            }
            if let Some(name) = &step.alert {
                deliver(
                    &dispatcher,
                    &alerts,
                    alert(name, AlertStatus::Firing, &world),
                )
                .await;
            }
            if let Some(name) = &step.resolve {
                deliver(
                    &dispatcher,
                    &alerts,
                    alert(name, AlertStatus::Resolved, &world),
                )
                .await;
            }
            if let Some(playbook) = &step.run {
                let req = RunRequest {
                    playbook: playbook.clone(),
                    event: Event::manual(playbook, Default::default(), false),
                    trigger: Trigger {
                        kind: crate::triggers::EventKind::Manual,
                        name: "scenario".into(),
                        actor: "simulated-world".into(),
                    },
                };
                if let Err(e) = dispatcher.submit(req, false).await {
                    tracing::warn!(playbook, error = %e, "simulated world: run not started");
                }
            }
        }
        world.pass_time(0);
        if scenario.alerts {
            let now = world.clock().now_ms();
            for (name, status) in monitor.evaluate(&world, now) {
                deliver(&dispatcher, &alerts, alert(&name, status, &world)).await;
            }
        }
        if !finished && elapsed >= scenario.duration {
            finished = true;
            tracing::info!(title = %scenario.title, "simulated world: scenario finished; the world stays as it is");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
