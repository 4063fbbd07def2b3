//! The flight recorder: every primitive *read* a run makes — its name, arguments, answer
//! (or error) and the time it was made, in order — kept beside the actions the run already
//! records, so that the run can be replayed later against another version of its playbook
//! (`runbookd replay`, docs/replay.md).
//!
//! Reads go through [`read`]: while a run records, the primitive asks its backend and the
//! answer is written down; while a run replays, the answer comes from the recording
//! ([`Player`]) and the backend is never asked. Actions are matched by [`replayed_action`]
//! in [`crate::primitives::act`].
//!
//! A recording is bounded (`[playbooks] max_recording_bytes`, cut with a marker) and
//! redacted as logs are: card numbers masked, anything that looks like a key replaced.

mod player;

use std::cell::RefCell;

use rhai::{Dynamic, EvalAltResult};
use serde::Serialize;
use serde_json::Value;

pub use crate::store::{Cut, Read, Recording};
pub use player::{rfc3339_ms, Findings, MissingRead, Player, RecordedRun, Replay};

use super::{script_error, terminated, RunContext};

/// The replay needed a read the recording does not hold: the replayed run stops there.
pub const TERMINATED_UNRECORDED: &str = "unrecorded";
/// The replay reached the point where the recording was cut (`max_recording_bytes`).
pub const TERMINATED_CUT: &str = "recording_cut";

/// What a run does with its reads.
pub enum Tape {
    /// Nothing is recorded (`max_recording_bytes = 0`).
    Off,
    /// Reads are asked of the backends and written down.
    Recording(RefCell<Recorder>),
    /// Reads are answered from a recording.
    Replaying(Box<RefCell<Player>>),
}

impl Tape {
    /// A recorder keeping at most `max_bytes` of reads (0: none).
    pub fn recording(max_bytes: usize) -> Tape {
        if max_bytes == 0 {
            Tape::Off
        } else {
            Tape::Recording(RefCell::new(Recorder {
                recording: Recording::default(),
                bytes: 0,
                max_bytes,
            }))
        }
    }

    /// What was recorded (a recorder's), once the run ended.
    pub fn take_recording(&self) -> Option<Recording> {
        match self {
            Tape::Recording(r) => Some(std::mem::take(&mut r.borrow_mut().recording)),
            _ => None,
        }
    }

    /// What a replay found (a player's), once the run ended.
    pub fn take_findings(&self) -> Option<Findings> {
        match self {
            Tape::Replaying(p) => Some(p.borrow_mut().findings()),
            _ => None,
        }
    }
}

/// Writes down a run's reads within its byte cap.
pub struct Recorder {
    recording: Recording,
    bytes: usize,
    max_bytes: usize,
}

impl Recorder {
    fn is_cut(&self) -> bool {
        self.recording.cut.is_some()
    }

    fn count_omitted(&mut self) {
        if let Some(cut) = &mut self.recording.cut {
            cut.omitted += 1;
        }
    }

    fn note(&mut self, read: Read, actions_so_far: usize) {
        if let Some(cut) = &mut self.recording.cut {
            cut.omitted += 1;
            return;
        }
        // The read as it will be stored: its JSON's length is what the cap counts (counted
        // as it is written out, nothing kept).
        let mut counter = ByteCount(0);
        let bytes = serde_json::to_writer(&mut counter, &read).map_or(0, |()| counter.0) + 1;
        if self.bytes + bytes > self.max_bytes {
            self.recording.cut = Some(Cut {
                after_reads: self.recording.reads.len(),
                actions_before: actions_so_far,
                omitted: 1,
                why: format!(
                    "the recording reached [playbooks] max_recording_bytes = {}",
                    self.max_bytes
                ),
            });
            return;
        }
        self.bytes += bytes;
        self.recording.reads.push(read);
    }
}

/// An [`std::io::Write`] that only counts what is written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads that are runbookd's own state (its clock, its configuration, its incidents): a
/// replay answers them from its own world when the recording does not hold them.
pub(crate) fn is_own(name: &str) -> bool {
    matches!(name, "now" | "setting" | "incident")
}

/// A primitive read: asked of the backend (`body`) and recorded while the run records;
/// answered from the recording while it replays. `args` are its arguments as JSON.
pub fn read<T: Clone + Send + Sync + 'static>(
    name: &str,
    args: Vec<Value>,
    body: impl FnOnce() -> Result<T, Box<EvalAltResult>>,
) -> Result<T, Box<EvalAltResult>> {
    tape(name, args, body, answer_json, |json| cast(name, json))
}

/// [`read`] of an answer that is Rust data, not a script value (what `approved()` and
/// `reconcile()` got from the store and the backends), kept as its JSON.
pub fn read_json<T: Serialize + serde::de::DeserializeOwned>(
    name: &str,
    args: Vec<Value>,
    body: impl FnOnce() -> Result<T, Box<EvalAltResult>>,
) -> Result<T, Box<EvalAltResult>> {
    tape(
        name,
        args,
        body,
        |v| serde_json::to_value(v).unwrap_or(Value::Null),
        |json| {
            serde_json::from_value(json).map_err(|e| {
                script_error(format!(
                    "replay: the recorded answer of {name} does not read as this version's: {e}"
                ))
            })
        },
    )
}

fn tape<T>(
    name: &str,
    args: Vec<Value>,
    body: impl FnOnce() -> Result<T, Box<EvalAltResult>>,
    to_json: impl FnOnce(&T) -> Value,
    from_json: impl FnOnce(Value) -> Result<T, Box<EvalAltResult>>,
) -> Result<T, Box<EvalAltResult>> {
    // Outside a run (load time) there is nothing to record; the primitive says so itself.
    let Some(ctx) = super::CURRENT.with(|c| c.borrow().clone()) else {
        return body();
    };
    match &ctx.tape {
        Tape::Off => body(),
        Tape::Recording(recorder) => {
            if recorder.borrow().is_cut() {
                // Past the cap only counted: nothing to convert, redact or size.
                let out = body();
                recorder.borrow_mut().count_omitted();
                return out;
            }
            let at = ctx.services.clock.now_ms();
            let out = body();
            let (answer, error) = match &out {
                Ok(v) => (to_json(v), None),
                // Stopping the run (deadline, shutdown, lease) is not the backend's answer.
                Err(e) if matches!(**e, EvalAltResult::ErrorTerminated(..)) => return out,
                Err(e) => (Value::Null, Some(error_text(e))),
            };
            let read = Read {
                at: crate::store::ms_to_rfc3339(at),
                name: name.to_string(),
                args: redacted_all(args),
                answer: redacted(answer),
                error: error.map(|e| crate::redact::secrets_in(&e)),
            };
            let actions = ctx.actions.borrow().len() + *ctx.dropped_actions.borrow();
            recorder.borrow_mut().note(read, actions);
            out
        }
        Tape::Replaying(player) => {
            let args = redacted_all(args);
            let found = player.borrow_mut().answer(name, &args);
            match found {
                player::Answer::Recorded { at_ms, answer } => {
                    let now = ctx.services.clock.now_ms();
                    if ctx.services.clock.is_virtual() && at_ms > now {
                        ctx.services.clock.advance(at_ms - now);
                    }
                    match answer {
                        Ok(json) => from_json(json),
                        Err(message) => Err(script_error(message)),
                    }
                }
                player::Answer::Ask => body(),
                player::Answer::Unrecorded => Err(terminated(TERMINATED_UNRECORDED)),
                player::Answer::Cut => Err(terminated(TERMINATED_CUT)),
            }
        }
    }
}

/// A script value (a map or an array argument) as a recording keeps it.
pub fn arg(v: Dynamic) -> Value {
    rhai::serde::from_dynamic::<Value>(&v).unwrap_or(Value::Null)
}

fn answer_json<T: Clone + Send + Sync + 'static>(v: &T) -> Value {
    let d = Dynamic::from(v.clone());
    rhai::serde::from_dynamic::<Value>(&d).unwrap_or(Value::Null)
}

/// A recorded answer as the type the primitive answers now.
fn cast<T: Clone + Send + Sync + 'static>(
    name: &str,
    json: Value,
) -> Result<T, Box<EvalAltResult>> {
    let d: Dynamic = rhai::serde::to_dynamic(&json)?;
    let recorded = d.type_name().to_string();
    // A unit answer stays unit for a primitive answering `Dynamic`.
    d.try_cast::<T>().ok_or_else(|| {
        script_error(format!(
            "replay: the recorded answer of {name} is {recorded}, which this version of the \
             primitive does not answer"
        ))
    })
}

fn error_text(e: &EvalAltResult) -> String {
    match e {
        EvalAltResult::ErrorRuntime(d, _) => d.to_string(),
        other => other.to_string(),
    }
}

fn redacted_all(values: Vec<Value>) -> Vec<Value> {
    values.into_iter().map(redacted).collect()
}

/// `v` as a recording keeps it: every string redacted as log lines are (keys, `Bearer`,
/// `password=`…, card numbers), the value of any key named like a secret replaced
/// whatever it is, and card numbers masked in keys and in numbers too.
pub fn redacted(v: Value) -> Value {
    crate::redact::mask_cards_json(&redact_secrets(v))
}

fn redact_secrets(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(crate::redact::secrets_in(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(redact_secrets).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = crate::redact::SECRET_NAMES
                        .iter()
                        .any(|s| lower.ends_with(s));
                    let v = match v {
                        Value::Null => Value::Null,
                        _ if secret => Value::String("[redacted]".into()),
                        v => redact_secrets(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

/// In a replay, the recorded outcome of this action (matched by action and target, in
/// order): `Some(Ok(result))`, `Some(Err(error))`, or `None` when it is not in the
/// recording or the run is not a replay (then it is performed — in a replay, on the
/// simulated world).
pub fn replayed_action(
    ctx: &RunContext,
    action: &str,
    target: &str,
) -> Option<Result<Value, String>> {
    match &ctx.tape {
        Tape::Replaying(p) => p.borrow_mut().action(action, target),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_cards_never_reach_a_recording() {
        let v = serde_json::json!({
            "metadata": {"note": "key sk_live_abcdef123 used", "api_key": "plain"},
            "card": "4242 4242 4242 4242",
            "lines": ["Authorization: Bearer abc.def"],
        });
        let text = redacted(v).to_string();
        assert!(!text.contains("sk_live_abcdef123"), "{text}");
        assert!(!text.contains("plain"), "{text}");
        assert!(!text.contains("4242 4242 4242 4242"), "{text}");
        assert!(!text.contains("abc.def"), "{text}");
    }

    #[test]
    fn a_recording_past_its_cap_is_cut_with_a_marker() {
        let mut r = Recorder {
            recording: Recording::default(),
            bytes: 0,
            max_bytes: 300,
        };
        for i in 0..10 {
            r.note(
                Read {
                    at: "2026-12-07T00:00:00.000Z".into(),
                    name: "breaker".into(),
                    args: vec![serde_json::json!("stripe")],
                    answer: serde_json::json!({ "i": i }),
                    error: None,
                },
                i,
            );
        }
        let cut = r.recording.cut.clone().expect("cut");
        assert!(r.recording.reads.len() < 10 && !r.recording.reads.is_empty());
        assert_eq!(cut.after_reads, r.recording.reads.len());
        assert_eq!(cut.actions_before, r.recording.reads.len());
        assert_eq!(cut.omitted + cut.after_reads, 10);
    }
}
