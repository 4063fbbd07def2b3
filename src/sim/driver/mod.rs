//! Drives a simulated world: delivers alerts as Alertmanager would, starts runs as an
//! operator would, moves the virtual clock, fires cron ticks and walks the escalation table
//! — one thing at a time on the calling thread, so the same inputs always give the same
//! timeline.
//!
//! Everything between those inputs and the backends is the daemon's own code: admission
//! and the dispatcher (records, lease, status writes, incident turns, resolution — stepped
//! by the simulation instead of its loop, [`Dispatcher::step`]), the runner
//! and its sandbox, the primitives, the state store (an in-memory SQLite database on the
//! virtual clock), the notification outbox, the cron trigger and the escalation evaluator.
//! Only the backends are the world's.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

mod alerts;
mod approvals;
mod timeline;

use super::{
    stage::{self, Pacing, Stage},
    World,
};
use crate::{
    clock::Clock,
    config::Config,
    dispatch::{Dispatcher, ReplicaSettings, RunRequest, Until},
    engine::Catalog,
    escalation::Escalation,
    metrics::Metrics,
    notify::Notifier,
    primitives::{ServiceSource, Services},
    store::{Incident, Store},
    triggers::alertmanager::Alert,
};

/// One finished run in a simulation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimRun {
    /// The run's id in the simulation's store.
    pub id: String,
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

pub use super::error::SimError;

/// A simulated world with runbookd's playbooks, store, dispatcher and escalation table
/// around it.
pub struct Sim {
    pub world: Arc<World>,
    pub config: Config,
    pub store: Store,
    pub catalog: Arc<Catalog>,
    escalation: Escalation,
    dispatcher: Dispatcher,
    runtime: tokio::runtime::Handle,
    runs: Mutex<Vec<SimRun>>,
    timeline: Mutex<Vec<Happening>>,
    /// Ids of the notifications already on the timeline.
    notified: Mutex<std::collections::HashSet<String>>,
    /// What runs see: the world's backends as they are when each run starts.
    services: Arc<WorldServices>,
}

/// A simulation's runs get the world's backends as the world is when each starts — a test
/// or scenario step may have changed its settings or secrets since the last run —
/// assembled like the daemon's ([`Services::assemble`]).
struct WorldServices {
    world: Arc<World>,
    config: Config,
    store: Store,
    notifier: Arc<Notifier>,
    runtime: tokio::runtime::Handle,
    /// The escalation table's level names, for `escalate()`.
    levels: crate::primitives::incident::LevelNames,
    /// A replay's recorded runs: runs answer their reads from them.
    replay: Option<Arc<crate::primitives::recorder::Replay>>,
}

impl ServiceSource for WorldServices {
    fn services(&self) -> Services {
        let mut services = Services::assemble(
            &self.config,
            self.world.backends(&self.config),
            Some(self.store.clone()),
            Some(self.notifier.clone()),
            self.runtime.clone(),
        );
        services.levels = self.levels.clone();
        services.replay = self.replay.clone();
        services
    }
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
        Sim::replaying(config, catalog, start_ms, runtime, None)
    }

    /// A world whose runs answer their reads from `replay`'s recorded runs (`runbookd
    /// replay`); the world's own backends answer only what the recordings do not hold.
    pub fn replaying(
        config: &Config,
        catalog: Arc<Catalog>,
        start_ms: i64,
        runtime: tokio::runtime::Handle,
        replay: Option<Arc<crate::primitives::recorder::Replay>>,
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
        let channels = crate::notify::captured_channels(config);
        let notifier = Arc::new(
            Notifier::from_config(&channels, &config.notify, store.clone(), None)
                .map_err(|e| SimError::Setup(e.to_string()))?,
        );
        let names = notifier.channel_names();
        let mut escalation = Escalation::load(config.escalation.file.clone(), names)
            .map_err(|e| SimError::Setup(format!("escalation table: {e}")))?;
        let levels = crate::primitives::incident::runbook_levels();
        escalation.publish_levels(levels.clone());
        let services = Arc::new(WorldServices {
            world: world.clone(),
            config: config.clone(),
            store: store.clone(),
            notifier,
            runtime: runtime.clone(),
            levels,
            replay,
        });
        let dispatcher = runtime.block_on(Dispatcher::start_stepped(
            catalog.clone(),
            store.clone(),
            Arc::new(Metrics::new()),
            services.clone(),
            config.playbooks.clone(),
            ReplicaSettings {
                name: "simulation".into(),
                lease_ttl: config.server.lease_ttl,
            },
        ))?;
        Ok(Sim {
            world,
            config: config.clone(),
            store,
            catalog,
            escalation,
            dispatcher,
            runtime,
            runs: Mutex::new(Vec::new()),
            timeline: Mutex::new(Vec::new()),
            notified: Mutex::new(Default::default()),
            services,
        })
    }

    /// Virtual now, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.world.clock().now_ms()
    }

    /// The backends playbooks see: the world's (see [`World::backends`]), with the
    /// settings and secrets it has now.
    pub fn services(&self) -> Services {
        self.services.services()
    }

    /// Notes something on the timeline at virtual now.
    pub fn note(&self, kind: &str, text: impl Into<String>) {
        self.note_at(self.now_ms(), kind, text);
    }

    fn note_at(&self, at_ms: i64, kind: &str, text: impl Into<String>) {
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
        let _ = self.runtime.block_on(self.collect_notifications());
        self.lock_timeline().clone()
    }

    /// Every run so far, oldest first.
    pub fn runs(&self) -> Vec<SimRun> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs every run waiting — submitted, or recorded for nobody by escalation and cron —
    /// to its end through the dispatcher, and puts them on the timeline.
    async fn settle(&self) -> Result<Vec<SimRun>, SimError> {
        let mut runs = Vec::new();
        while let Some(started) = self.dispatcher.step(Until::Idle).await {
            if let Some(record) = started.run().await {
                runs.push(self.show(record));
            }
        }
        self.collect_notifications().await?;
        Ok(runs)
    }

    /// An operator's run, as `POST /api/v1/playbooks/NAME/runs` starts it.
    pub fn run_manual(
        &self,
        playbook: &str,
        params: Value,
        dry_run: bool,
    ) -> Result<SimRun, SimError> {
        self.runtime
            .block_on(self.run_manual_now(playbook, params, dry_run))
    }

    async fn run_manual_now(
        &self,
        playbook: &str,
        params: Value,
        dry_run: bool,
    ) -> Result<SimRun, SimError> {
        if self.catalog.get(playbook).is_none() {
            if let Some(e) = self.catalog.errors().get(playbook) {
                return Err(SimError::Setup(format!(
                    "playbook `{playbook}` does not load: {e}"
                )));
            }
        }
        let params = match params {
            Value::Object(m) => m,
            Value::Null => Default::default(),
            other => {
                return Err(SimError::Setup(format!(
                    "a run's params are a map, not {other}"
                )))
            }
        };
        let submitted = self
            .dispatcher
            .submit(
                RunRequest::manual(playbook, params, dry_run, playbook, "simulation"),
                false,
            )
            .await?;
        self.settle()
            .await?
            .into_iter()
            .find(|r| r.id == submitted.run.id)
            .ok_or_else(|| SimError::Setup(format!("run {} did not finish", submitted.run.id)))
    }

    /// A run as the daemon would start it from `request` (a replay's recorded event), and
    /// every run it led to, to their ends.
    pub fn run_request(&self, request: RunRequest) -> Result<Vec<SimRun>, SimError> {
        self.runtime.block_on(async {
            self.dispatcher.submit(request, false).await?;
            self.settle().await
        })
    }

    /// Every incident, oldest first.
    pub fn incidents(&self) -> Result<Vec<Incident>, SimError> {
        let mut all = self
            .runtime
            .block_on(self.store.list_incidents(None, 1000))?;
        all.reverse();
        Ok(all)
    }

    /// The most recently opened incident, open or not.
    pub fn latest_incident(&self) -> Result<Option<Incident>, SimError> {
        Ok(self
            .runtime
            .block_on(self.store.list_incidents(None, 1))?
            .into_iter()
            .next())
    }

    /// One pass of the escalation table; runs the playbooks of levels that fire.
    pub fn escalate(&self) -> Result<Vec<SimRun>, SimError> {
        self.runtime.block_on(self.escalation_pass())
    }

    /// What the daemon's evaluator does on each interval: levels that fire record their
    /// playbook's run for nobody; the simulation claims and runs them as it steps.
    async fn escalation_pass(&self) -> Result<Vec<SimRun>, SimError> {
        crate::schedulers::escalation::evaluate(&self.escalation, &self.store).await?;
        self.collect_notifications().await?;
        self.settle().await
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

    /// Plays `scenario` from virtual now to its end ([`stage::play`]: its steps at their
    /// times, the alert rules on the world), firing cron ticks and walking the escalation
    /// table after every tick. Read the result with [`Sim::timeline`].
    pub fn play(&self, scenario: &super::scenario::Scenario) -> Result<(), SimError> {
        scenario
            .install_settings(&self.world)
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let step = self
            .config
            .escalation
            .interval
            .clamp(Duration::from_secs(1), Duration::from_secs(15));
        let scenario_cron = scenario.cron.clone();
        let stage = Scenery {
            sim: self,
            cron: scenario_cron,
        };
        self.runtime
            .block_on(stage::play(&stage, scenario, Pacing { step, stay: false }))
    }

    /// The daemon's cron pass, at virtual `now`, for the cron triggers of `playbooks` (a
    /// scenario names the ones that fire).
    async fn fire_cron(&self, playbooks: &[String], now: i64) -> Result<(), SimError> {
        if self.config.cron.zone().is_none() {
            return Err(SimError::Setup("cron.timezone is not a zone".into()));
        }
        let pass = crate::schedulers::cron::pass(
            &self.catalog,
            Some(playbooks),
            &self.dispatcher,
            &self.store,
            &self.config.cron,
            now,
        )
        .await;
        match pass.failed.into_iter().next() {
            Some((_, _, e)) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for Sim {
    /// Ends the dispatcher's loops (status writer, ingester, lease) with the simulation.
    fn drop(&mut self) {
        let dispatcher = self.dispatcher.clone();
        let stop = async move { dispatcher.shutdown(Duration::ZERO).await };
        if tokio::runtime::Handle::try_current().is_ok() {
            self.runtime.spawn(stop);
        } else {
            self.runtime.block_on(stop);
        }
    }
}

/// A simulation as the stage of a scenario.
struct Scenery<'a> {
    sim: &'a Sim,
    /// Playbooks whose cron triggers fire.
    cron: Vec<String>,
}

#[async_trait::async_trait]
impl Stage for Scenery<'_> {
    fn world(&self) -> &World {
        &self.sim.world
    }

    fn note(&self, kind: &str, text: String) {
        self.sim.note(kind, text);
    }

    async fn alert(&self, alert: Alert) -> Result<(), SimError> {
        self.sim.deliver(alert).await.map(drop)
    }

    async fn run_by_hand(&self, playbook: &str) -> Result<(), SimError> {
        self.sim
            .run_manual_now(playbook, Value::Null, false)
            .await
            .map(drop)
    }

    async fn tick(&self, _from_ms: i64, to_ms: i64) -> Result<(), SimError> {
        self.sim.fire_cron(&self.cron, to_ms).await?;
        self.sim.escalation_pass().await.map(drop)
    }

    async fn pass(&self, by: Duration) -> bool {
        self.sim.world.pass_time(by.as_millis() as i64);
        true
    }
}
