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
    event::EventKind,
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

/// What one run came to in the replay: a recorded run and its replay, a recorded run the
/// replay did not start (the current escalation table did not fire it), or a run the
/// replay started that the recording has not.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayedRun {
    pub recorded: Option<RecordedRun>,
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
    /// `--incident`: the incident's timeline as it happened and as the replay's world
    /// wrote it (levels, facts, notes, resolution), `HH:MM:SS kind message` lines.
    pub timelines: Option<Timelines>,
    pub verdict: Verdict,
}

/// Two timelines of one incident.
#[derive(Debug, Clone, Serialize)]
pub struct Timelines {
    pub recorded: Vec<String>,
    pub replay: Vec<String>,
}

impl Report {
    /// 0 the same actions, 1 different actions, 2 a read the recording does not hold.
    pub fn exit_code(&self) -> u8 {
        self.verdict.exit_code()
    }
}

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Answer reads the recordings do not hold from the default simulated world instead of
    /// stopping (`--fill default`).
    pub fill: bool,
    /// `--incident`: the incident's timeline as it happened (its API entries); then the
    /// replay walks the current escalation table between the runs, and the runs of
    /// escalation levels are the table's to start.
    pub incident_timeline: Option<Vec<serde_json::Value>>,
}

/// Replays `runs` (oldest first) on one simulated world against the playbooks of
/// `catalog`. Call from outside `runtime` (the world blocks on it).
pub fn replay(
    config: &Config,
    catalog: Arc<Catalog>,
    runtime: tokio::runtime::Handle,
    runs: Vec<RecordedRun>,
    options: &Options,
) -> Result<Report, ReplayError> {
    // The recorded runs as recordings keep reads: redacted, so that nothing a replay shows
    // or saves carries a key the run's own record quoted (a status page's text, say).
    let runs: Vec<RecordedRun> = runs.into_iter().map(redacted_run).collect();
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
    let walk = options.incident_timeline.is_some();
    let start = first.run.started_ms().unwrap_or_default();
    let tape = Replay::new(runs.clone(), options.fill);
    let sim = Sim::replaying(
        config,
        catalog.clone(),
        start,
        runtime.clone(),
        Some(tape.clone()),
    )?;
    // The recorded incidents, opened anew in the replay's store (their ids are its own).
    let mut incidents: HashMap<String, String> = HashMap::new();
    let mut ran = Vec::new();
    let last_end = runs
        .iter()
        .filter_map(|r| {
            r.run
                .finished_at
                .as_deref()
                .and_then(crate::primitives::recorder::rfc3339_ms)
        })
        .max();
    for recorded in &runs {
        if let Some(at) = recorded.run.started_ms() {
            ran.extend(pass_until(&sim, at, walk)?);
        }
        if let Some(id) = &recorded.run.event.incident {
            if !incidents.contains_key(id) {
                let local = open_incident(&sim, &runtime, recorded)?;
                tape.alias_incident(id, &local);
                incidents.insert(id.clone(), local);
            }
        }
        // Walking the table, a level's run is the table's to start (or not).
        if walk && recorded.run.trigger.kind == EventKind::Escalation {
            continue;
        }
        let mut event = recorded.run.event.clone();
        event.incident = event
            .incident
            .map(|id| incidents.get(&id).cloned().unwrap_or(id));
        let request = RunRequest {
            playbook: recorded.run.playbook.clone(),
            event,
            trigger: recorded.run.trigger.clone(),
        };
        ran.extend(sim.run_request(request)?);
    }
    if walk {
        // One more pass of the table after the last run ended.
        let interval = config
            .escalation
            .interval
            .max(std::time::Duration::from_secs(1));
        let end = last_end.unwrap_or_else(|| sim.now_ms()) + interval.as_millis() as i64;
        ran.extend(pass_until(&sim, end, true)?);
    }
    let findings = tape.findings();
    let mut replayed = Vec::new();
    let mut claimed = Vec::new();
    for run in ran {
        let record = runtime
            .block_on(sim.store.get_run(&run.id))
            .map_err(SimError::from)?
            // The replay's own ids read as the recorded ones, so that only differences differ.
            .map(|r| compare::with_ids_of(r, &incidents));
        let found = findings
            .iter()
            .find(|f| f.run == run.id)
            .cloned()
            .unwrap_or_default();
        let recorded = found
            .recorded
            .as_ref()
            .and_then(|id| runs.iter().find(|r| &r.run.id == id))
            .cloned();
        claimed.extend(found.recorded.clone());
        let comparison = compare::compare(recorded.as_ref(), record.as_ref(), &found);
        replayed.push(ReplayedRun {
            recorded,
            replay: record,
            findings: found,
            comparison,
        });
    }
    // Recorded runs the replay never started: the table did not fire their level.
    for r in runs.iter().filter(|r| !claimed.contains(&r.run.id)) {
        let found = Findings::default();
        replayed.push(ReplayedRun {
            comparison: compare::compare(Some(r), None, &found),
            recorded: Some(r.clone()),
            replay: None,
            findings: found,
        });
    }
    let timelines =
        match &options.incident_timeline {
            Some(recorded) => {
                let mut replay = Vec::new();
                for local in incidents.values() {
                    let entries = runtime
                        .block_on(sim.store.timeline(local))
                        .map_err(SimError::from)?;
                    replay.extend(entries.iter().map(|e| {
                        compare::timeline_line(&serde_json::to_value(e).unwrap_or_default())
                    }));
                }
                let recorded = recorded.iter().map(compare::timeline_line).collect();
                Some(Timelines {
                    recorded,
                    replay: replay
                        .into_iter()
                        .map(|l| compare::renamed(l, &incidents))
                        .collect(),
                })
            }
            None => None,
        };
    let verdict = replayed
        .iter()
        .map(|r| r.comparison.verdict)
        .max()
        .unwrap_or(Verdict::Same);
    Ok(Report {
        playbooks: catalog.dir().display().to_string(),
        runs: replayed,
        timelines,
        verdict,
    })
}

fn redacted_run(run: RecordedRun) -> RecordedRun {
    serde_json::to_value(&run)
        .ok()
        .map(crate::primitives::recorder::redacted)
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or(run)
}

/// Moves the replay's clock to `at_ms`: walking the escalation table as the daemon's
/// evaluator would (the runs of levels that fire, to their ends), or straight there.
fn pass_until(
    sim: &Sim,
    at_ms: i64,
    walk: bool,
) -> Result<Vec<super::driver::SimRun>, ReplayError> {
    let now = sim.now_ms();
    if at_ms <= now {
        return Ok(Vec::new());
    }
    if walk {
        Ok(sim.advance(std::time::Duration::from_millis((at_ms - now) as u64))?)
    } else {
        sim.world.clock().advance(at_ms - now);
        Ok(Vec::new())
    }
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
