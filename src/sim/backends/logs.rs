//! The app's worker logs, simulated: the world keeps its workers' log lines and answers the
//! [`LogsBackend`] calls of production's `logs::*` primitives. It does not run LogQL: it reads
//! the query's line filter (`|~ "(?i)a|b|c"`, the runbook's `grep -iE`) as a case-insensitive
//! list of alternatives, which is what the shipped query is; any other query is refused, so a
//! test cannot pass on a filter the simulation would not apply.

use std::{sync::Arc, time::Duration};

use crate::primitives::logs::{LogEntry, LogsBackend, LogsError};
use crate::sim::World;

/// The alternatives of the query's `|~ "…"` filter, lower-cased.
fn alternatives(query: &str) -> Result<Vec<String>, LogsError> {
    let refuse = || LogsError::Refused {
        status: 400,
        message: format!("the simulation reads only `{{…}} |~ \"(?i)a|b\"` queries, not `{query}`"),
    };
    let (_, filter) = query.split_once("|~").ok_or_else(refuse)?;
    let pattern = filter
        .trim()
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .ok_or_else(refuse)?;
    let pattern = pattern.strip_prefix("(?i)").unwrap_or(pattern);
    if pattern.chars().any(|c| "()[]{}.*+?^$\\".contains(c)) {
        return Err(refuse());
    }
    Ok(pattern
        .split('|')
        .map(|a| a.to_lowercase())
        .filter(|a| !a.is_empty())
        .collect())
}

pub struct SimLogs {
    pub world: Arc<World>,
}

impl SimLogs {
    fn matching(&self, query: &str, window: Duration) -> Result<Vec<LogEntry>, LogsError> {
        let alts = alternatives(query)?;
        let now = self.world.clock().now_ms();
        let from = now - window.as_millis() as i64;
        let s = self.world.state();
        let mut lines: Vec<LogEntry> = s
            .worker_logs
            .iter()
            .filter(|(at, line)| {
                *at > from && *at <= now && {
                    let l = line.to_lowercase();
                    alts.iter().any(|a| l.contains(a.as_str()))
                }
            })
            .map(|(at, line)| LogEntry {
                at_ms: *at,
                line: line.clone(),
            })
            .collect();
        lines.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        Ok(lines)
    }
}

#[async_trait::async_trait]
impl LogsBackend for SimLogs {
    async fn count(&self, query: &str, window: Duration) -> Result<i64, LogsError> {
        Ok(self.matching(query, window)?.len() as i64)
    }

    async fn recent(
        &self,
        query: &str,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LogsError> {
        let mut lines = self.matching(query, window)?;
        lines.truncate(limit);
        Ok(lines)
    }
}
