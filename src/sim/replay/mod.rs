//! `runbookd replay`: a recorded run — or an incident's runs, in order — played again
//! against a version of its playbook, in a simulated world whose reads answer from the
//! recording and whose actions are captured, never performed (docs/replay.md).
//!
//! The replay is the simulation's own machinery ([`Sim`]): the recorded event goes through
//! the dispatcher, the runner and the primitives as in production; only the tape differs
//! (`primitives::recorder`). What it did is then set beside what the recorded run did
//! ([`compare`]) and shown ([`render`]).

pub mod compare;
pub mod render;
pub mod save;

use std::{collections::HashMap, sync::Arc};

use serde::Serialize;

use super::driver::{Sim, SimError};
use crate::{
    config::Config,
    dispatch::RunRequest,
    engine::Catalog,
    primitives::recorder::{Findings, RecordedRun, Replay},
    store::RunRecord,
};

pub use compare::{Comparison, Verdict};

/// Why a replay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the recording does not read: {0}")]
    Unreadable(String),
    #[error("playbook `{playbook}` is not in {dir}{why}")]
    NoPlaybook {
        playbook: String,
        dir: String,
        why: String,
    },
    #[error("the recording holds no run")]
    Empty,
    #[error(transparent)]
    Sim(#[from] SimError),
}

impl RecordedRun {
    /// A recorded run from the JSON `GET /api/v1/runs/{id}/recording` answers (what
    /// `--file` and saved tests hold).
    pub fn from_json(text: &str) -> Result<RecordedRun, ReplayError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| ReplayError::Unreadable(format!("{} (at `{}`)", e.inner(), e.path())))
    }
}

/// What one recorded run came to in the replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayedRun {
    pub recorded: RecordedRun,
    /// The run in the replay's world (none: it never started).
    pub replay: Option<RunRecord>,
    pub findings: Findings,
    pub comparison: Comparison,
}

/// A whole replay: every recorded run, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where the replayed playbooks came from.
    pub playbooks: String,
    pub runs: Vec<ReplayedRun>,
    pub verdict: Verdict,
}

impl Report {
    /// 0 the same actions, 1 different actions, 2 a read the recording does not hold.
    pub fn exit_code(&self) -> u8 {
        self.verdict.exit_code()
    }
}

/// Replays `runs` (oldest first) on one simulated world against the playbooks of
/// `catalog`. `fill`: answer reads the recordings do not hold from the default simulated
/// world instead of stopping. Call from outside `runtime` (the world blocks on it).
pub fn replay(
    config: &Config,
    catalog: Arc<Catalog>,
    runtime: tokio::runtime::Handle,
    runs: Vec<RecordedRun>,
    fill: bool,
) -> Result<Report, ReplayError> {
    let first = runs.first().ok_or(ReplayError::Empty)?;
    for r in &runs {
        if catalog.get(&r.run.playbook).is_none() {
            return Err(ReplayError::NoPlaybook {
                playbook: r.run.playbook.clone(),
                dir: catalog.dir().display().to_string(),
                why: catalog
                    .errors()
                    .get(&r.run.playbook)
                    .map(|e| format!(" (it does not load: {e})"))
                    .unwrap_or_default(),
            });
        }
    }
    let start = first.run.started_ms().unwrap_or_default();
    let tape = Replay::new(runs.clone(), fill);
    let sim = Sim::replaying(
        config,
        catalog.clone(),
        start,
        runtime.clone(),
        Some(tape.clone()),
    )?;
    // The recorded incidents, opened anew in the replay's store (their ids are its own).
    let mut incidents: HashMap<String, String> = HashMap::new();
    let mut replayed = Vec::new();
    for recorded in runs {
        if let Some(at) = recorded.run.started_ms() {
            let now = sim.now_ms();
            if at > now {
                sim.world.clock().advance(at - now);
            }
        }
        let mut event = recorded.run.event.clone();
        if let Some(id) = &event.incident {
            let local = match incidents.get(id) {
                Some(local) => local.clone(),
                None => {
                    let local = open_incident(&sim, &runtime, &recorded)?;
                    incidents.insert(id.clone(), local.clone());
                    local
                }
            };
            event.incident = Some(local);
        }
        let request = RunRequest {
            playbook: recorded.run.playbook.clone(),
            event,
            trigger: recorded.run.trigger.clone(),
        };
        let ran = sim.run_request(request)?;
        let run = ran.first().map(|r| r.id.clone());
        let record = match &run {
            Some(id) => runtime
                .block_on(sim.store.get_run(id))
                .map_err(SimError::from)?,
            None => None,
        };
        let findings = tape
            .findings()
            .into_iter()
            .find(|f| Some(&f.run) == run.as_ref())
            .unwrap_or_default();
        // The replay's own ids read as the recorded ones, so that only differences differ.
        let record = record.map(|r| compare::with_ids_of(r, &incidents));
        let comparison = compare::compare(&recorded, record.as_ref(), &findings);
        replayed.push(ReplayedRun {
            recorded,
            replay: record,
            findings,
            comparison,
        });
    }
    let verdict = replayed
        .iter()
        .map(|r| r.comparison.verdict)
        .max()
        .unwrap_or(Verdict::Same);
    Ok(Report {
        playbooks: catalog.dir().display().to_string(),
        runs: replayed,
        verdict,
    })
}

/// The recorded run's incident, opened in the replay's store as it was at the run's
/// start: its id there.
fn open_incident(
    sim: &Sim,
    runtime: &tokio::runtime::Handle,
    recorded: &RecordedRun,
) -> Result<String, ReplayError> {
    let event = &recorded.run.event;
    let key = event
        .incident
        .clone()
        .unwrap_or_else(|| format!("replay:{}", recorded.run.id));
    let labels = serde_json::to_value(&event.labels).unwrap_or_default();
    let opened = recorded.run.started_ms().unwrap_or_else(|| sim.now_ms());
    let incident = runtime
        .block_on(sim.store.create_incident(
            &key,
            &format!("replay:{}", event.name),
            &event.name,
            &labels,
            opened,
        ))
        .map_err(SimError::from)?;
    Ok(incident.id)
}
