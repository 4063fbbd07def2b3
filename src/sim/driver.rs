//! Drives a simulated world: runs playbooks against it, delivers alerts as Alertmanager
//! would, moves the virtual clock and walks the escalation table — all synchronously on the
//! calling thread, so the same inputs always give the same timeline.
//!
//! Everything a playbook touches is real runbookd code: the compiled playbook, the runner
//! and its sandbox, the primitives, the state store (an in-memory SQLite database), the
//! notification outbox and the escalation evaluator. Only the backends are the world's.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

mod alerts;

use super::World;
use crate::{
    clock::Clock,
    config::{ChannelConfig, Config},
    engine::{
        runner::{self, RunSpec},
        Catalog,
    },
    escalation::Escalation,
    notify::Notifier,
    primitives::Services,
    store::{Incident, Store},
    triggers::TriggerSpec,
};

/// One finished run in a simulation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimRun {
    pub playbook: String,
    /// The event it ran for (kind, name, status, incident, dry_run …).
    pub event: Value,
    /// Virtual time it started and finished (ms since the epoch).
    pub started_ms: i64,
    pub finished_ms: i64,
    /// `succeeded`, `failed`, `timed_out`.
    pub status: String,
    pub result: Value,
    pub error: Option<String>,
    pub logs: Vec<String>,
    pub actions: Vec<Value>,
}

/// Something that happened, for the timeline `runbookd simulate` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Happening {
    pub at_ms: i64,
    /// `world`, `alert`, `run`, `log`, `action`, `escalation`, `notify`.
    pub kind: String,
    pub text: String,
}

/// Errors setting up a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulation store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("simulation: {0}")]
    Setup(String),
}

/// A simulated world with runbookd's playbooks, store and escalation table around it.
pub struct Sim {
    pub world: Arc<World>,
    pub config: Config,
    pub store: Store,
    pub catalog: Arc<Catalog>,
    escalation: Escalation,
    notifier: Arc<Notifier>,
    runtime: tokio::runtime::Handle,
    runs: Mutex<Vec<SimRun>>,
    timeline: Mutex<Vec<Happening>>,
    /// How many notifications the timeline has shown already.
    notified: Mutex<usize>,
    next_run: Mutex<u64>,
    /// When each (incident, playbook) last ran for an alert: the cooldown's clock.
    last_alert_run: Mutex<std::collections::HashMap<(String, String), i64>>,
    /// The escalation table's level names, for `escalate()`.
    levels: crate::primitives::incident::LevelNames,
}

/// Channels exist in a simulation by name only: every one captures instead of sending, so
/// a simulation never pages anyone and needs none of their secrets.
pub fn captured_channels(config: &Config) -> std::collections::BTreeMap<String, ChannelConfig> {
    config
        .channels
        .keys()
        .filter_map(|name| {
            toml::from_str::<ChannelConfig>("type = \"log\"")
                .ok()
                .map(|c| (name.clone(), c))
        })
        .collect()
}

impl Sim {
    /// A healthy world at `start_ms` on a virtual clock. Must be called from outside the
    /// runtime `runtime` belongs to (it blocks on it).
    pub fn new(
        config: &Config,
        catalog: Arc<Catalog>,
        start_ms: i64,
        runtime: tokio::runtime::Handle,
    ) -> Result<Sim, SimError> {
        let clock = Clock::virtual_at(start_ms);
        let world = World::new(clock.clone(), config);
        let store = runtime
            .block_on(Store::connect(
                &format!(
                    "sqlite:file:runbookd-sim-{}?mode=memory&cache=shared",
                    uuid::Uuid::now_v7().simple()
                ),
                1,
            ))?
            .with_clock(clock);
        let channels = captured_channels(config);
        let notifier = Arc::new(
            Notifier::from_config(&channels, &config.notify, store.clone(), None)
                .map_err(|e| SimError::Setup(e.to_string()))?,
        );
        let names = notifier.channel_names();
        let mut escalation = Escalation::load(config.escalation.file.clone(), names)
            .map_err(|e| SimError::Setup(format!("escalation table: {e}")))?;
        let levels = crate::primitives::incident::runbook_levels();
        escalation.publish_levels(levels.clone());
        Ok(Sim {
            world,
            config: config.clone(),
            store,
            catalog,
            escalation,
            notifier,
            runtime,
            runs: Mutex::new(Vec::new()),
            timeline: Mutex::new(Vec::new()),
            notified: Mutex::new(0),
            next_run: Mutex::new(0),
            last_alert_run: Mutex::new(Default::default()),
            levels,
        })
    }

    /// Virtual now, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.world.clock().now_ms()
    }

    /// The backends playbooks see: the world's (see [`World::services`]).
    pub fn services(&self) -> Services {
        let mut services = self.world.services(
            &self.config,
            self.store.clone(),
            self.notifier.clone(),
            self.runtime.clone(),
        );
        services.levels = self.levels.clone();
        services
    }

    /// Notes something on the timeline at virtual now.
    pub fn note(&self, kind: &str, text: impl Into<String>) {
        let at_ms = self.now_ms();
        self.lock_timeline().push(Happening {
            at_ms,
            kind: kind.into(),
            text: text.into(),
        });
    }

    fn lock_timeline(&self) -> std::sync::MutexGuard<'_, Vec<Happening>> {
        self.timeline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything that happened so far, in order.
    pub fn timeline(&self) -> Vec<Happening> {
        self.collect_notifications();
        self.lock_timeline().clone()
    }

    /// Every run so far, oldest first.
    pub fn runs(&self) -> Vec<SimRun> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `playbook` for `event` (a map like the daemon builds) to completion.
    pub fn run_event(&self, playbook: &str, mut event: Value) -> Result<SimRun, SimError> {
        let pb = self.catalog.get(playbook).ok_or_else(|| {
            match self.catalog.errors().get(playbook) {
                Some(e) => SimError::Setup(format!("playbook `{playbook}` does not load: {e}")),
                None => SimError::Setup(format!("no playbook named `{playbook}`")),
            }
        })?;
        let run_id = {
            let mut n = self.next_run.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            format!("sim-run-{n}")
        };
        for key in ["labels", "annotations", "params"] {
            if !event[key].is_object() {
                event[key] = json!({});
            }
        }
        let dry_run = event["dry_run"].as_bool().unwrap_or(false);
        event["dry_run"] = dry_run.into();
        let started_ms = self.now_ms();
        self.note(
            "run",
            format!(
                "{playbook} started ({} {}{})",
                event["kind"].as_str().unwrap_or("manual"),
                event["name"].as_str().unwrap_or(playbook),
                if dry_run { ", dry run" } else { "" }
            ),
        );
        let outcome = runner::execute(
            self.catalog.engine(),
            &pb,
            RunSpec {
                run_id: &run_id,
                event: &event,
                dry_run,
                timeout: self.config.playbooks.timeout,
                limits: crate::engine::runner::RecordLimits::of(&self.config.playbooks),
            },
            self.services(),
            CancellationToken::new(),
        );
        let finished_ms = self.now_ms();
        for line in outcome.logs.iter().filter(|l| l.level != "debug") {
            let at_ms = chrono::DateTime::parse_from_rfc3339(&line.at)
                .map(|t| t.timestamp_millis())
                .unwrap_or(finished_ms);
            self.lock_timeline().push(Happening {
                at_ms,
                kind: if line.message.starts_with("dry run: would")
                    || line.message.ends_with(": done")
                {
                    "action".into()
                } else {
                    "log".into()
                },
                text: format!("{playbook}: {}", line.message),
            });
        }
        let error = outcome.error.as_ref().map(|e| match (e.line, e.column) {
            (Some(l), Some(c)) => format!("{} (line {l}, column {c})", e.message),
            _ => e.message.clone(),
        });
        let run = SimRun {
            playbook: playbook.into(),
            event,
            started_ms,
            finished_ms,
            status: outcome.status.as_str().into(),
            result: outcome.result.unwrap_or(Value::Null),
            error: error.clone(),
            logs: outcome
                .logs
                .iter()
                .map(|l| {
                    if l.level == "info" {
                        l.message.clone()
                    } else {
                        format!("{}: {}", l.level, l.message)
                    }
                })
                .collect(),
            actions: outcome.actions,
        };
        self.note(
            "run",
            format!(
                "{playbook} {}{}",
                run.status,
                error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        );
        self.collect_notifications();
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(run.clone());
        Ok(run)
    }

    /// An operator's run, as `POST /api/v1/playbooks/NAME/runs` starts it.
    pub fn run_manual(
        &self,
        playbook: &str,
        params: Value,
        dry_run: bool,
    ) -> Result<SimRun, SimError> {
        self.run_event(
            playbook,
            json!({"kind": "manual", "name": playbook, "status": "", "params": params, "dry_run": dry_run}),
        )
    }

    fn block<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
    ) -> Result<T, SimError> {
        self.runtime.block_on(f).map_err(SimError::from)
    }

    /// Every incident, oldest first.
    pub fn incidents(&self) -> Result<Vec<Incident>, SimError> {
        let mut all = self.block(self.store.list_incidents(None, 1000))?;
        all.reverse();
        Ok(all)
    }

    /// The most recently opened incident, open or not.
    pub fn latest_incident(&self) -> Result<Option<Incident>, SimError> {
        Ok(self
            .block(self.store.list_incidents(None, 1))?
            .into_iter()
            .next())
    }

    /// One pass of the escalation table; runs the playbooks of levels that fire.
    pub fn escalate(&self) -> Result<Vec<SimRun>, SimError> {
        let requests = self
            .runtime
            .block_on(crate::escalation::evaluate(&self.escalation, &self.store))
            .map_err(SimError::Setup)?;
        let mut runs = Vec::new();
        self.collect_notifications();
        for run in requests {
            runs.push(self.run_event(&run.playbook, run.event)?);
        }
        Ok(runs)
    }

    /// Time passes: the world moves in steps of the escalation interval, the table is
    /// evaluated after each step (as the daemon's evaluator would), level playbooks run.
    pub fn advance(&self, by: Duration) -> Result<Vec<SimRun>, SimError> {
        let step = self
            .config
            .escalation
            .interval
            .max(Duration::from_secs(1))
            .as_millis() as i64;
        let mut left = by.as_millis() as i64;
        let mut runs = Vec::new();
        while left > 0 {
            let d = left.min(step);
            self.world.pass_time(d);
            left -= d;
            runs.extend(self.escalate()?);
        }
        Ok(runs)
    }

    /// Every notification queued so far (channel, kind, title, text, level).
    pub fn notifications(&self) -> Result<Vec<Value>, SimError> {
        let mut items = self.block(self.store.list_notifications(10_000))?;
        items.sort_by_key(|i| i.created_at_ms);
        Ok(items
            .into_iter()
            .map(|i| {
                json!({
                    "channel": i.channel,
                    "kind": i.kind,
                    "title": i.payload["title"],
                    "text": i.payload["text"],
                    "level": i.payload["level"],
                    "incident": i.incident_id,
                    "at": i.created_at,
                })
            })
            .collect())
    }

    /// Puts notifications queued since the last look on the timeline.
    fn collect_notifications(&self) {
        let Ok(items) = self.notifications() else {
            return;
        };
        let mut seen = self.notified.lock().unwrap_or_else(|p| p.into_inner());
        for n in items.iter().skip(*seen) {
            let at_ms = n["at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
                .unwrap_or_else(|| self.now_ms());
            let kind = if n["kind"] == "message" {
                "notify"
            } else {
                "escalation"
            };
            self.lock_timeline().push(Happening {
                at_ms,
                kind: kind.into(),
                // The first line: a page's facts dump follows on the next ones.
                text: format!(
                    "→ {} [{}] {}",
                    n["channel"].as_str().unwrap_or(""),
                    n["kind"].as_str().unwrap_or(""),
                    n["text"]
                        .as_str()
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("")
                ),
            });
        }
        *seen = items.len();
    }

    /// Plays `scenario` from virtual now to its end: its steps at their times, the alert
    /// rules and cron triggers on the virtual clock, the escalation table after every tick.
    /// Read the result with [`Sim::timeline`].
    pub fn play(&self, scenario: &super::scenario::Scenario) -> Result<(), SimError> {
        scenario
            .install_settings(&self.world)
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let start = self.now_ms();
        let end = start + scenario.duration.as_millis() as i64;
        let tick = self
            .config
            .escalation
            .interval
            .clamp(Duration::from_secs(1), Duration::from_secs(15))
            .as_millis() as i64;
        let mut steps = scenario.ordered_steps().into_iter().peekable();
        let mut monitor = super::scenario::Monitor::default();
        let mut last_cron = start;
        loop {
            let now = self.now_ms();
            while let Some(step) = steps.next_if(|s| start + s.at.as_millis() as i64 <= now) {
                for said in super::scenario::apply(&self.world, &step) {
                    self.note("world", said);
                }
                if let Some(name) = &step.alert {
                    self.alert(name, "firing", json!({}))?;
                }
                if let Some(name) = &step.resolve {
                    self.alert(name, "resolved", json!({}))?;
                }
                if let Some(playbook) = &step.run {
                    self.note("world", format!("an operator runs {playbook} by hand"));
                    self.run_manual(playbook, json!({}), false)?;
                }
            }
            if scenario.alerts {
                for (name, status) in monitor.evaluate(&self.world, now) {
                    self.alert(&name, status.as_str(), json!({}))?;
                }
            }
            self.fire_cron(&scenario.cron, last_cron, now)?;
            last_cron = now;
            self.escalate()?;
            if now >= end {
                return Ok(());
            }
            self.world.pass_time(tick.min(end - now));
        }
    }

    /// Runs `playbooks` whose cron triggers have a tick in `(from, to]` (once each).
    fn fire_cron(&self, playbooks: &[String], from: i64, to: i64) -> Result<(), SimError> {
        let zone = self
            .config
            .cron
            .zone()
            .ok_or_else(|| SimError::Setup("cron.timezone is not a zone".into()))?;
        for pb in self.catalog.playbooks() {
            if !playbooks.contains(&pb.name) {
                continue;
            }
            for t in &pb.triggers {
                let TriggerSpec::Cron { cron } = t else {
                    continue;
                };
                let Ok(schedule) = crate::triggers::parse_cron(cron) else {
                    continue;
                };
                if !zone.ticks(&schedule, from, to, 1).is_empty() {
                    self.run_event(
                        &pb.name,
                        json!({"kind": "cron", "name": cron, "status": "", "params": {}}),
                    )?;
                }
            }
        }
        Ok(())
    }
}
