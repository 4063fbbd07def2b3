//! `replay(path)`: a recording saved under `tests/` (`runbookd replay --save-test`)
//! replayed against the playbooks under test, for a test's own assertions.

use rhai::{Dynamic, Engine, EvalAltResult};
use serde_json::json;

use super::{context, fail};

/// `replay("recorded/NAME.json")` → `#{ verdict, exit, report, runs: [#{ recorded, replay,
/// missing, verdict }] }`; each side's `actions` as replays compare them (action, target,
/// outcome, details), its `logs` as `level message` lines.
fn replay(path: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let ctx = context()?;
    let tests = ctx.catalog.dir().join("tests");
    let file = tests.join(path);
    // A test reads recordings of its own directory only.
    let inside = file
        .canonicalize()
        .ok()
        .zip(tests.canonicalize().ok())
        .is_some_and(|(f, t)| f.starts_with(t));
    if !inside {
        return Err(fail(format!(
            "replay: {} is not a file under {}",
            file.display(),
            tests.display()
        )));
    }
    let text = std::fs::read_to_string(&file)
        .map_err(|e| fail(format!("replay: cannot read {}: {e}", file.display())))?;
    let runs = crate::sim::replay::save::runs_from_json(&text)
        .map_err(|e| fail(format!("replay: {}: {e}", file.display())))?;
    let incident = runs.len() > 1;
    let report = crate::sim::replay::replay(
        &ctx.config,
        ctx.catalog.clone(),
        ctx.runtime.clone(),
        runs,
        // An incident's runs (a saved `--incident`) walk the escalation table between
        // them, as `runbookd replay --incident` did.
        &crate::sim::replay::Options {
            fill: false,
            incident_timeline: incident.then(Vec::new),
        },
    )
    .map_err(|e| fail(format!("replay: {e}")))?;
    let lines = |logs: &[crate::store::LogLine]| -> Vec<String> {
        logs.iter()
            .filter(|l| l.level != "debug")
            .map(|l| format!("{} {}", l.level, l.message))
            .collect()
    };
    let runs: Vec<serde_json::Value> = report
        .runs
        .iter()
        .map(|r| {
            json!({
                "recorded": {
                    "id": r.recorded.as_ref().map(|x| x.run.id.clone()),
                    "playbook": r.recorded.as_ref().map(|x| x.run.playbook.clone()),
                    "status": r.recorded.as_ref().map(|x| x.run.status.clone()),
                    "actions": r.comparison.recorded_actions,
                    "logs": r.recorded.as_ref().map(|x| lines(&x.run.logs)).unwrap_or_default(),
                    "result": r.recorded.as_ref().and_then(|x| x.run.result.clone()),
                },
                "replay": {
                    "id": r.replay.as_ref().map(|x| x.id.clone()),
                    "status": r.replay.as_ref().map(|x| x.status.as_str()),
                    "actions": r.comparison.replay_actions,
                    "logs": r.replay.as_ref().map(|x| lines(&x.logs)).unwrap_or_default(),
                    "result": r.replay.as_ref().and_then(|x| x.result.clone()),
                    "error": r.replay.as_ref().and_then(|x| x.error.as_ref().map(|e| e.message.clone())),
                },
                "missing": r.findings.missing.iter().map(|m| m.read.clone()).collect::<Vec<_>>(),
                "verdict": r.comparison.verdict,
            })
        })
        .collect();
    rhai::serde::to_dynamic(json!({
        "verdict": report.verdict,
        "exit": report.exit_code(),
        "report": crate::sim::replay::render::text(&report),
        "runs": runs,
    }))
}

pub fn register(e: &mut Engine) {
    e.register_fn("replay", replay);
}
