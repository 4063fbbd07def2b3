//! `--save-test NAME`: a recorded outage kept as a playbook test — the recording in
//! `DIR/tests/recorded/NAME.json`, and `DIR/tests/NAME.rhai` replaying it and asserting
//! the recorded actions — so that `runbookd test` (and `require_tests`) hold every later
//! version of the playbook to what it did in a real outage.

use std::path::{Path, PathBuf};

use super::ReplayError;
use crate::primitives::recorder::RecordedRun;

/// Recorded runs as a saved file holds them: one run, or an incident's runs in order.
pub fn runs_from_json(text: &str) -> Result<Vec<RecordedRun>, ReplayError> {
    if text.trim_start().starts_with('[') {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| ReplayError::Unreadable(format!("{} (at `{}`)", e.inner(), e.path())))
    } else {
        Ok(vec![RecordedRun::from_json(text)?])
    }
}

/// Why a test could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(
        "`{0}` is not a test name: lower-case letters, digits and `_`, starting with a letter"
    )]
    BadName(String),
    #[error("{0} exists already: choose another name, or remove it first")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where `--save-test NAME` writes, once the name is a test name and neither file exists
/// (checked before a replay, so that a bad name costs nothing).
pub fn test_paths(dir: &Path, name: &str) -> Result<[PathBuf; 2], SaveError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(SaveError::BadName(name.to_string()));
    }
    let tests = dir.join("tests");
    let recording = tests.join("recorded").join(format!("{name}.json"));
    let test = tests.join(format!("{name}.rhai"));
    for path in [&recording, &test] {
        if path.exists() {
            return Err(SaveError::Exists(path.clone()));
        }
    }
    Ok([recording, test])
}

/// Writes the recording and the test that replays it under `dir/tests`; the two paths.
pub fn save_test(dir: &Path, name: &str, runs: &[RecordedRun]) -> Result<[PathBuf; 2], SaveError> {
    let [recording, test] = test_paths(dir, name)?;
    let write = |path: &Path, text: &str| -> Result<(), SaveError> {
        let fail = |source| SaveError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        std::fs::write(path, text).map_err(fail)
    };
    // The reads are redacted already; the run's own record (its logs, actions and result,
    // as the API shows them) is redacted the same way here: a saved test is committed.
    let value = match runs {
        [one] => serde_json::to_value(one),
        many => serde_json::to_value(many),
    }
    .unwrap_or_default();
    let json = serde_json::to_string_pretty(&crate::primitives::recorder::redacted(value))
        .unwrap_or_default();
    write(&recording, &json)?;
    write(&test, &test_source(name, runs))?;
    Ok([recording, test])
}

fn test_source(name: &str, runs: &[RecordedRun]) -> String {
    let what: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "//   run {} ({}, {} {}, started {})",
                r.run.id,
                r.run.playbook,
                r.run.event.kind,
                r.run.event.name,
                r.run.started_at.as_deref().unwrap_or("?")
            )
        })
        .collect();
    format!(
        "// Written by `runbookd replay --save-test {name}` from\n{}\n\
         // whose reads and answers are in recorded/{name}.json. This version of the playbook,\n\
         // replayed on them, must take the recorded actions (docs/replay.md).\n\
         fn test_{name}_takes_the_recorded_actions() {{\n    \
             let r = replay(\"recorded/{name}.json\");\n    \
             assert_eq(r.verdict, \"same\", r.report);\n    \
             for run in r.runs {{\n        \
                 assert_eq(run.replay.actions, run.recorded.actions, \"the recorded actions, in order\");\n    \
             }}\n\
         }}\n",
        what.join("\n")
    )
}
