//! The escalation table: levels (L1 → L2 → L3 → P1 by default, from the runbook) walked up
//! by a periodic evaluator over every unresolved incident (`crate::schedulers::escalation`).
//!
//! Each level fires once per incident — paging its channels through the outbox and
//! optionally running a playbook — when its condition holds or a playbook escalated the
//! incident to it; it repeats every `repeat` until the incident is acknowledged; levels only
//! go up. Resolution tells every channel that was paged. Fires, repeats and notices are
//! recorded with their notifications in one transaction, so a restart (kill -9 included)
//! neither repeats a page nor loses one that was due. The table file is re-read when it
//! changes; a broken edit keeps the last good table.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde::Deserialize;

mod next;

pub use next::next_level;

use crate::engine::conditions::Condition;

/// The table shipped with runbookd: the runbook's own.
pub const DEFAULT_TABLE: &str = include_str!("../../examples/escalation.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    levels: Vec<LevelFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelFile {
    name: String,
    condition: String,
    #[serde(default)]
    channels: Vec<String>,
    playbook: Option<Playbooks>,
    repeat: Option<String>,
}

/// `playbook = "x"` or `playbook = ["x", "y"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Playbooks {
    One(String),
    Many(Vec<String>),
}

/// One level of the table.
#[derive(Debug, Clone)]
pub struct Level {
    pub name: String,
    pub condition: Condition,
    pub channels: Vec<String>,
    /// Playbooks run (in this order, one turn each) when the level fires.
    pub playbooks: Vec<String>,
    pub repeat: Option<Duration>,
}

/// A loaded, validated table (order = rank).
#[derive(Debug, Clone)]
pub struct Table {
    pub levels: Vec<Level>,
}

/// An escalation table that cannot be used, naming the file and the level.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    #[error("the table has no [[levels]]")]
    Empty,
    /// `at` is `levels[i] (NAME)`.
    #[error("{at}: {message}")]
    Level { at: String, message: String },
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: String,
        source: Box<TableError>,
    },
}

impl Table {
    /// Parses and validates a table; `channels` are the names that exist.
    pub fn parse(text: &str, channels: &[String]) -> Result<Table, TableError> {
        let file: TableFile = toml::from_str(text)?;
        if file.levels.is_empty() {
            return Err(TableError::Empty);
        }
        let mut levels = Vec::new();
        for (i, l) in file.levels.into_iter().enumerate() {
            let at = format!("levels[{i}] ({})", l.name);
            let bad = |message: String| TableError::Level {
                at: at.clone(),
                message,
            };
            if levels.iter().any(|x: &Level| x.name == l.name) {
                return Err(bad("level name used twice".into()));
            }
            let condition = Condition::compile(&l.condition).map_err(|e| bad(e.to_string()))?;
            for c in &l.channels {
                if c != "log" && !channels.contains(c) {
                    return Err(bad(format!(
                        "channel `{c}` is not configured ([channels.{c}])"
                    )));
                }
            }
            let repeat = match &l.repeat {
                None => None,
                Some(r) => Some(
                    humantime::parse_duration(r).map_err(|e| bad(format!("repeat `{r}`: {e}")))?,
                ),
            };
            let playbooks = match l.playbook {
                None => Vec::new(),
                Some(Playbooks::One(p)) => vec![p],
                Some(Playbooks::Many(ps)) => ps,
            };
            let mut seen = Vec::new();
            for p in playbooks {
                if p.trim().is_empty() {
                    return Err(bad("playbook: an empty name".into()));
                }
                if seen.contains(&p) {
                    return Err(bad(format!("playbook `{p}` is listed twice")));
                }
                seen.push(p);
            }
            levels.push(Level {
                name: l.name,
                condition,
                channels: l.channels,
                playbooks: seen,
                repeat,
            });
        }
        Ok(Table { levels })
    }

    pub fn rank(&self, level: &str) -> Option<usize> {
        self.levels
            .iter()
            .position(|l| l.name.eq_ignore_ascii_case(level))
    }
}

/// Where the table comes from, and the last good one.
pub struct Escalation {
    file: PathBuf,
    channels: Vec<String>,
    table: Table,
    loaded_mtime: Option<SystemTime>,
    /// Where the table's level names are published for `escalate()`.
    names: Option<crate::primitives::incident::LevelNames>,
    /// Where the whole table is published for the dashboard.
    shared: Option<SharedTable>,
}

/// The table in force, as the dashboard reads it while the evaluator reloads it.
pub type SharedTable = std::sync::Arc<std::sync::RwLock<Table>>;

impl Escalation {
    /// Loads the file if it exists, else the shipped table. A broken file fails the start.
    pub fn load(file: PathBuf, channels: Vec<String>) -> Result<Escalation, TableError> {
        let (table, mtime) = match std::fs::metadata(&file) {
            Ok(meta) => {
                let path = file.display().to_string();
                let text = std::fs::read_to_string(&file).map_err(|source| TableError::Read {
                    path: path.clone(),
                    source,
                })?;
                (
                    Table::parse(&text, &channels).map_err(|e| TableError::File {
                        path,
                        source: Box::new(e),
                    })?,
                    meta.modified().ok(),
                )
            }
            Err(_) => (Table::parse(DEFAULT_TABLE, &channels)?, None),
        };
        Ok(Escalation {
            file,
            channels,
            table,
            loaded_mtime: mtime,
            names: None,
            shared: None,
        })
    }

    /// Keeps `names` equal to the table's level names, now and after every reload.
    pub fn publish_levels(&mut self, names: crate::primitives::incident::LevelNames) {
        self.names = Some(names);
        self.publish();
    }

    /// The table in force, kept current as the file is reloaded.
    pub fn share(&mut self) -> SharedTable {
        self.shared
            .get_or_insert_with(|| std::sync::Arc::new(std::sync::RwLock::new(self.table.clone())))
            .clone()
    }

    fn publish(&self) {
        if let Some(shared) = &self.shared {
            *shared.write().unwrap_or_else(|p| p.into_inner()) = self.table.clone();
        }
        if let Some(names) = &self.names {
            *names.write().unwrap_or_else(|p| p.into_inner()) =
                self.table.levels.iter().map(|l| l.name.clone()).collect();
        }
    }

    /// The table in force.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Re-reads the file if it changed; keeps the last good table on error.
    pub fn refresh(&mut self) {
        let Ok(meta) = std::fs::metadata(&self.file) else {
            return;
        };
        let mtime = meta.modified().ok();
        if mtime == self.loaded_mtime {
            return;
        }
        self.loaded_mtime = mtime;
        let path = self.file.display().to_string();
        match std::fs::read_to_string(&self.file)
            .map_err(|source| TableError::Read { path, source })
            .and_then(|t| Table::parse(&t, &self.channels))
        {
            Ok(t) => {
                tracing::info!(file = %self.file.display(), levels = t.levels.len(), "escalation table reloaded");
                self.table = t;
                self.publish();
            }
            Err(e) => {
                tracing::error!(file = %self.file.display(), error = %e, "escalation table not reloaded; keeping the last good one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_runs_one_playbook_or_a_list_each_once() {
        let one = "[[levels]]\nname = \"A\"\ncondition = \"true\"\nplaybook = \"x\"\n";
        assert_eq!(
            Table::parse(one, &[]).expect("one").levels[0].playbooks,
            ["x"]
        );
        let many = one.replace("\"x\"", "[\"x\", \"y\"]");
        assert_eq!(
            Table::parse(&many, &[]).expect("many").levels[0].playbooks,
            ["x", "y"]
        );
        let twice = one.replace("\"x\"", "[\"x\", \"x\"]");
        let e = Table::parse(&twice, &[]).expect_err("twice").to_string();
        assert!(
            e.contains("levels[0] (A): playbook `x` is listed twice"),
            "{e}"
        );
        let empty = one.replace("\"x\"", "[\"\"]");
        assert!(Table::parse(&empty, &[]).is_err());
    }

    #[test]
    fn the_shipped_table_is_the_runbooks() {
        let t = Table::parse(DEFAULT_TABLE, &[]).expect("default table");
        let names: Vec<&str> = t.levels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, vec!["L1", "L2", "L3", "P1"]);
        assert_eq!(
            t.levels[1].playbooks,
            ["reconcile_payments", "payment_processor_outage"],
            "L2 reconciles, then the outage playbook updates the status page"
        );
        assert_eq!(t.levels[3].playbooks, ["payment_processor_outage"]);
        assert!(t.levels[0].playbooks.is_empty());
        let l2 = &t.levels[1].condition;
        assert!(!l2
            .holds(
                1799.0,
                &serde_json::json!({}),
                "",
                "open",
                &serde_json::json!({})
            )
            .expect("eval"));
        assert!(l2
            .holds(
                1801.0,
                &serde_json::json!({}),
                "",
                "open",
                &serde_json::json!({})
            )
            .expect("eval"));
    }

    #[test]
    fn the_debtflow_table_names_its_channels() {
        let text = include_str!("../../examples/debtflow/escalation.toml");
        let channels: Vec<String> = ["payments", "oncall", "senior", "commander"]
            .map(String::from)
            .to_vec();
        let t = Table::parse(text, &channels).expect("debtflow table");
        let names: Vec<&str> = t.levels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, vec!["L1", "L2", "L3", "P1"]);
        assert!(
            Table::parse(text, &[]).is_err(),
            "unknown channels are refused"
        );
    }

    #[test]
    fn bad_tables_say_where() {
        let e = Table::parse("[[levels]]\nname = \"L1\"\ncondition = \"age >\"\n", &[])
            .expect_err("bad");
        assert!(e.to_string().contains("levels[0] (L1)"), "{e}");
        let e = Table::parse(
            "[[levels]]\nname = \"L1\"\ncondition = \"true\"\nchannels = [\"slack\"]\n",
            &[],
        )
        .expect_err("bad");
        assert!(e.to_string().contains("channel `slack`"), "{e}");
        let e = Table::parse(
            "[[levels]]\nname = \"L1\"\ncondition = \"true\"\nrepeat = \"often\"\n",
            &[],
        )
        .expect_err("bad");
        assert!(e.to_string().contains("repeat"), "{e}");
    }
}
