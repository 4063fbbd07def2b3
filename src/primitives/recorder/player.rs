//! Answering a run's reads and actions from a recording, and what the replay found on the
//! way: reads the recording did not hold, reads asked more often than recorded, actions
//! the recorded run never took.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{is_own, Cut, Read, Recording};
use crate::{
    event::{Event, Trigger},
    store::LogLine,
};

/// A recorded run, as `GET /api/v1/runs/{id}/recording` answers and `--file` reads: the
/// run (its event, logs, actions and result) and its reads.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordedRun {
    pub run: RunSummary,
    pub recording: Recording,
}

/// What a replay needs of a recorded run (the fields of the API's run record).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunSummary {
    pub id: String,
    pub playbook: String,
    #[serde(default)]
    pub version: String,
    pub trigger: Trigger,
    pub status: String,
    #[serde(default)]
    pub dry_run: bool,
    pub event: Event,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub logs: Vec<LogLine>,
    #[serde(default)]
    pub actions: Vec<Value>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
}

impl RunSummary {
    /// When the run started, ms since the epoch (its queueing time's stand-in: none).
    pub fn started_ms(&self) -> Option<i64> {
        self.started_at.as_deref().and_then(rfc3339_ms)
    }
}

/// An RFC 3339 time as ms since the epoch.
pub fn rfc3339_ms(t: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A read the replay needed and the recording does not hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MissingRead {
    /// `celery::workers()`, `breaker("stripe")`.
    pub read: String,
    pub name: String,
    pub args: Vec<Value>,
}

/// What one replayed run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    /// The run in the replay's world.
    pub run: String,
    /// The recorded run it replayed (none: the replay started a run the recording has not).
    pub recorded: Option<String>,
    /// Reads answered from the recording.
    pub answered: usize,
    /// Reads the recording did not hold; the run stopped at the first one.
    pub missing: Vec<MissingRead>,
    /// Reads asked more often than recorded, answered again with their last answer.
    pub repeated: BTreeMap<String, usize>,
    /// Reads not recorded, answered by the replay's own world (runbookd's clock, settings
    /// and incidents; with `--fill default`, every read).
    pub asked: Vec<String>,
    /// The replay reached the recording's cut.
    pub cut_reached: bool,
    /// The recording's cut, when it was cut.
    pub cut: Option<Cut>,
}

/// What a read gets from the recording.
pub(super) enum Answer {
    Recorded {
        at_ms: i64,
        answer: Result<Value, String>,
    },
    /// Ask the replay's own world.
    Ask,
    /// Stop: the recording does not hold it.
    Unrecorded,
    /// Stop: the recording was cut before it.
    Cut,
}

/// Answers one run's reads and actions from its recording, in order.
pub struct Player {
    reads: Vec<Read>,
    /// Per `name(args)`, the indexes of reads not answered yet, in order.
    unused: HashMap<String, VecDeque<usize>>,
    /// Per `name(args)`, the read answered last.
    last: HashMap<String, usize>,
    /// Recorded actions (action, target, outcome) and whether one was matched already.
    actions: Vec<(Value, bool)>,
    fill: bool,
    /// The replay's incidents: recorded id → the replay's own.
    incidents: HashMap<String, String>,
    findings: Findings,
}

impl Player {
    /// Plays `recorded` (none: a run the recording has not, every world read unrecorded).
    pub fn new(
        run: &str,
        recorded: Option<&RecordedRun>,
        fill: bool,
        incidents: HashMap<String, String>,
    ) -> Player {
        let (reads, actions, cut, id) = match recorded {
            Some(r) => (
                r.recording.reads.clone(),
                r.run.actions.clone(),
                r.recording.cut.clone(),
                Some(r.run.id.clone()),
            ),
            None => (Vec::new(), Vec::new(), None, None),
        };
        let mut unused: HashMap<String, VecDeque<usize>> = HashMap::new();
        for (i, r) in reads.iter().enumerate() {
            unused
                .entry(key(&r.name, &r.args))
                .or_default()
                .push_back(i);
        }
        Player {
            reads,
            unused,
            last: HashMap::new(),
            actions: actions.into_iter().map(|a| (a, false)).collect(),
            fill,
            incidents,
            findings: Findings {
                run: run.to_string(),
                recorded: id,
                cut,
                ..Findings::default()
            },
        }
    }

    pub(super) fn answer(&mut self, name: &str, args: &[Value]) -> Answer {
        let key = key(name, args);
        if let Some(i) = self.unused.get_mut(&key).and_then(|q| q.pop_front()) {
            self.last.insert(key, i);
            self.findings.answered += 1;
            return self.recorded(i);
        }
        // Past a cut nothing is known, not even which of runbookd's own reads came next.
        // Before it (reads left to answer), a read the recording lacks is a new one.
        if let Some(cut) = &self.findings.cut {
            if self.findings.answered >= cut.after_reads {
                self.findings.cut_reached = true;
                return Answer::Cut;
            }
        }
        if is_own(name) {
            self.findings.asked.push(display(name, args));
            return Answer::Ask;
        }
        if let Some(&i) = self.last.get(&key) {
            *self
                .findings
                .repeated
                .entry(display(name, args))
                .or_default() += 1;
            return self.recorded(i);
        }
        if self.fill {
            self.findings.asked.push(display(name, args));
            return Answer::Ask;
        }
        self.findings.missing.push(MissingRead {
            read: display(name, args),
            name: name.to_string(),
            args: args.to_vec(),
        });
        Answer::Unrecorded
    }

    fn recorded(&self, i: usize) -> Answer {
        let r = &self.reads[i];
        Answer::Recorded {
            at_ms: rfc3339_ms(&r.at).unwrap_or_default(),
            answer: match &r.error {
                Some(e) => Err(e.clone()),
                None => Ok(r.answer.clone()),
            },
        }
    }

    /// The recorded outcome of the next unmatched `action` on `target` (the replay's own
    /// incident ids read as the recorded ones). A record cut for its size holds no outcome:
    /// not matched.
    pub(super) fn action(&mut self, action: &str, target: &str) -> Option<Result<Value, String>> {
        let target = self
            .incidents
            .iter()
            .fold(target.to_string(), |t, (recorded, local)| {
                t.replace(local.as_str(), recorded)
            });
        let record = self.take_action(|a| a == action, &target)?;
        if record.get("truncated").is_some() {
            return None;
        }
        Some(match record["error"].as_str() {
            // As the script saw it, without the prefix the record's text carries.
            Some(e) => Err(e.strip_prefix("Runtime error: ").unwrap_or(e).to_string()),
            None => Ok(record["result"].clone()),
        })
    }

    /// The next unmatched recorded action whose name `matches`, on `target`, as recorded.
    pub fn take_action(&mut self, matches: impl Fn(&str) -> bool, target: &str) -> Option<Value> {
        let (record, used) = self.actions.iter_mut().find(|(a, used)| {
            !*used && a["action"].as_str().is_some_and(&matches) && a["target"] == target
        })?;
        *used = true;
        Some(record.clone())
    }

    pub(super) fn findings(&mut self) -> Findings {
        std::mem::take(&mut self.findings)
    }
}

/// The key reads are matched by: name and arguments.
fn key(name: &str, args: &[Value]) -> String {
    format!("{name}{}", Value::Array(args.to_vec()))
}

/// `stripe::payment_intent("pi_1")`, as a playbook writes it.
fn display(name: &str, args: &[Value]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    format!("{name}({})", args.join(", "))
}

/// The recorded runs a replay plays and what it found: shared by every run the replay's
/// world starts (each claims the next recorded run of its playbook).
pub struct Replay {
    runs: Mutex<VecDeque<RecordedRun>>,
    /// Recorded incident id → the replay's own, as the replay opens them.
    incidents: Mutex<HashMap<String, String>>,
    fill: bool,
    findings: Mutex<Vec<Findings>>,
}

impl Replay {
    /// Replays `runs` (in order); `fill`: answer reads they did not record from the
    /// replay's own world instead of stopping.
    pub fn new(runs: Vec<RecordedRun>, fill: bool) -> Arc<Replay> {
        Arc::new(Replay {
            runs: Mutex::new(runs.into()),
            incidents: Mutex::new(HashMap::new()),
            fill,
            findings: Mutex::new(Vec::new()),
        })
    }

    /// The player for run `run` of `playbook`, started as `kind`: the next recorded run of
    /// that playbook started the same way.
    pub fn player(&self, playbook: &str, kind: crate::event::EventKind, run: &str) -> Player {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let recorded = runs
            .iter()
            .position(|r| r.run.playbook == playbook && r.run.event.kind == kind)
            .and_then(|i| runs.remove(i));
        let incidents = self
            .incidents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Player::new(run, recorded.as_ref(), self.fill, incidents)
    }

    /// The replay opened `local` for the recorded incident `recorded`.
    pub fn alias_incident(&self, recorded: &str, local: &str) {
        self.incidents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(recorded.to_string(), local.to_string());
    }

    /// A replayed run ended with these findings.
    pub fn finish(&self, findings: Findings) {
        self.findings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(findings);
    }

    /// What every replayed run found, in the order they ended.
    pub fn findings(&self) -> Vec<Findings> {
        self.findings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
