//! The recorded run beside its replay: actions (what decides the verdict), decisions (log
//! lines) and the result, aligned so that the rows both share read as one.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    primitives::recorder::{Findings, RecordedRun},
    store::RunRecord,
};

/// What a replay says about the new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The same actions as recorded.
    Same,
    /// Other actions than recorded (or the same in another order).
    Differs,
    /// It needed a read the recording does not hold (`--fill default` answers those).
    Unrecorded,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Same => 0,
            Verdict::Differs => 1,
            Verdict::Unrecorded => 2,
        }
    }
}

/// One row of a side-by-side listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Only in the recorded run (`-`), only in the replay (`+`), or in both (`=`).
    pub side: Side,
    pub recorded: Option<String>,
    pub replay: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Both,
    Recorded,
    Replay,
}

/// The two runs set side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub verdict: Verdict,
    pub actions: Vec<Row>,
    pub decisions: Vec<Row>,
    pub same_result: bool,
    /// Recorded actions compared: all of them, or those before the recording's cut.
    pub compared_actions: usize,
    /// The actions, as compared (action, target, outcome, details).
    pub recorded_actions: Vec<Value>,
    pub replay_actions: Vec<Value>,
}

/// An action as replays compare it: what was done to what, how it went, with what.
/// When it happened and what the world answered are not compared (a replay answers with
/// the recorded answer anyway).
fn action_key(a: &Value) -> Value {
    let mut details = a["details"].clone();
    // Made anew by every signed probe: not something a version decides.
    if a["action"] == "webhooks.signed_probe" {
        if let Some(d) = details.as_object_mut() {
            d.remove("event");
        }
    }
    // Redacted as recordings are: what a replay derives from a redacted answer (a key in a
    // status page's text, say) reads the same as what the recorded run derived.
    crate::primitives::recorder::redacted(json!({
        "action": a["action"],
        "target": a["target"],
        "outcome": a["outcome"],
        "details": details,
    }))
}

fn action_text(a: &Value) -> String {
    let mut text = format!(
        "{} {} [{}]",
        a["action"].as_str().unwrap_or("?"),
        a["target"].as_str().unwrap_or(""),
        a["outcome"].as_str().unwrap_or("?")
    );
    match &a["details"] {
        Value::Object(m) if !m.is_empty() => {
            let details = Value::Object(m.clone()).to_string();
            text.push(' ');
            text.push_str(&crate::text::truncate(&details, 160));
        }
        _ => {}
    }
    text
}

fn compared(actions: &[Value]) -> impl Iterator<Item = &Value> {
    // The marker of actions not kept (`max_actions`) is not an action.
    actions.iter().filter(|a| a["action"] != "(not recorded)")
}

/// `recorded` beside `replay` (none: the recording has no such run, or the replay never
/// ran it).
pub fn compare(
    recorded: Option<&RecordedRun>,
    replay: Option<&RunRecord>,
    findings: &Findings,
) -> Comparison {
    let limit = recorded
        .and_then(|r| r.recording.cut.as_ref())
        .filter(|_| findings.cut_reached)
        .map(|c| c.actions_before)
        .unwrap_or(usize::MAX);
    let before: Vec<Value> = recorded
        .map(|r| {
            compared(&r.run.actions)
                .take(limit)
                .map(action_key)
                .collect()
        })
        .unwrap_or_default();
    let after: Vec<Value> = replay
        .map(|r| compared(&r.actions).map(action_key).collect())
        .unwrap_or_default();
    let actions = align(
        &before.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        &after.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        |i| action_text(&before[i]),
        |i| action_text(&after[i]),
    );
    let lines = |logs: &[crate::store::LogLine]| -> Vec<String> {
        logs.iter()
            .filter(|l| l.level != "debug")
            .map(|l| {
                let message = crate::redact::secrets_in(&l.message);
                format!("{:<5} {message}", l.level)
            })
            .collect()
    };
    let old_lines = recorded.map(|r| lines(&r.run.logs)).unwrap_or_default();
    let new_lines = replay.map(|r| lines(&r.logs)).unwrap_or_default();
    let decisions = align(
        &old_lines,
        &new_lines,
        |i| old_lines[i].clone(),
        |i| new_lines[i].clone(),
    );
    let same_result = match (recorded, replay) {
        (Some(old), Some(new)) => old.run.result == new.result,
        (None, None) => true,
        _ => false,
    };
    let verdict = if !findings.missing.is_empty() {
        Verdict::Unrecorded
    } else if before != after || recorded.is_some() != replay.is_some() {
        // A run on one side only differs, even one that acts on nothing.
        Verdict::Differs
    } else {
        Verdict::Same
    };
    Comparison {
        verdict,
        actions,
        decisions,
        same_result,
        compared_actions: before.len(),
        recorded_actions: before,
        replay_actions: after,
    }
}

/// Rows of `old` and `new` aligned on what they share (a longest common subsequence).
fn align(
    old: &[String],
    new: &[String],
    old_text: impl Fn(usize) -> String,
    new_text: impl Fn(usize) -> String,
) -> Vec<Row> {
    let ops = similar::capture_diff_slices(similar::Algorithm::Myers, old, new);
    let mut rows = Vec::new();
    for op in ops {
        match op {
            similar::DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => rows.extend((0..len).map(|k| Row {
                side: Side::Both,
                recorded: Some(old_text(old_index + k)),
                replay: Some(new_text(new_index + k)),
            })),
            similar::DiffOp::Delete {
                old_index, old_len, ..
            } => rows.extend((old_index..old_index + old_len).map(|i| Row {
                side: Side::Recorded,
                recorded: Some(old_text(i)),
                replay: None,
            })),
            similar::DiffOp::Insert {
                new_index, new_len, ..
            } => rows.extend((new_index..new_index + new_len).map(|i| Row {
                side: Side::Replay,
                recorded: None,
                replay: Some(new_text(i)),
            })),
            similar::DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                rows.extend((old_index..old_index + old_len).map(|i| Row {
                    side: Side::Recorded,
                    recorded: Some(old_text(i)),
                    replay: None,
                }));
                rows.extend((new_index..new_index + new_len).map(|i| Row {
                    side: Side::Replay,
                    recorded: None,
                    replay: Some(new_text(i)),
                }));
            }
        }
    }
    rows
}

/// An incident timeline entry (the API's `{at, kind, actor, message}`) as one line:
/// `HH:MM:SS kind: message`.
pub fn timeline_line(e: &Value) -> String {
    let at = e["at"].as_str().unwrap_or("");
    let time = at.get(11..19).unwrap_or(at);
    format!(
        "{time} {}: {}",
        e["kind"].as_str().unwrap_or("?"),
        crate::redact::secrets_in(e["message"].as_str().unwrap_or(""))
    )
}

/// `text` with the replay's incident ids (`recorded → local`) read as the recorded ones.
pub fn renamed(text: String, incidents: &HashMap<String, String>) -> String {
    incidents.iter().fold(text, |t, (recorded, local)| {
        t.replace(local.as_str(), recorded)
    })
}

/// `record` with the replay's incident ids (`local → recorded`) read as the recorded ones,
/// in its actions, log lines, result and event.
pub fn with_ids_of(mut record: RunRecord, incidents: &HashMap<String, String>) -> RunRecord {
    let rename = |text: String| renamed(text, incidents);
    let json = |v: &Value| -> Value {
        serde_json::from_str(&rename(v.to_string())).unwrap_or_else(|_| v.clone())
    };
    record.actions = record.actions.iter().map(json).collect();
    record.result = record.result.as_ref().map(json);
    for line in &mut record.logs {
        line.message = rename(std::mem::take(&mut line.message));
    }
    record.event.incident = record.event.incident.map(rename);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_both_share_are_one_row() {
        let old: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let new: Vec<String> = ["a", "c", "d"].map(String::from).to_vec();
        let rows = align(&old, &new, |i| old[i].clone(), |i| new[i].clone());
        let sides: Vec<Side> = rows.iter().map(|r| r.side).collect();
        assert_eq!(
            sides,
            [Side::Both, Side::Recorded, Side::Both, Side::Replay]
        );
    }
}
