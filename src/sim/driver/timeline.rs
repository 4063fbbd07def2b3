//! What a simulation shows of what happened: each finished run on the timeline (its start,
//! log lines, actions and end) and each notification the outbox captured.

use serde_json::{json, Value};

use super::{Sim, SimError, SimRun};
use crate::store::{RunRecord, StoreError};

impl Sim {
    /// A finished run on the timeline (its start, logs and end) and in [`Sim::runs`].
    pub(super) fn show(&self, record: RunRecord) -> SimRun {
        let playbook = record.playbook.clone();
        let event = serde_json::to_value(&record.event).unwrap_or_default();
        let started_ms = record.started_at.unwrap_or_else(|| self.now_ms());
        let finished_ms = record.finished_at.unwrap_or(started_ms);
        self.note_at(
            started_ms,
            "run",
            format!(
                "{playbook} started ({} {}{})",
                record.event.kind,
                record.event.name,
                if record.dry_run { ", dry run" } else { "" }
            ),
        );
        for line in record.logs.iter().filter(|l| l.level != "debug") {
            let at_ms = chrono::DateTime::parse_from_rfc3339(&line.at)
                .map(|t| t.timestamp_millis())
                .unwrap_or(finished_ms);
            let kind =
                if line.message.starts_with("dry run: would") || line.message.ends_with(": done") {
                    "action"
                } else {
                    "log"
                };
            self.note_at(at_ms, kind, format!("{playbook}: {}", line.message));
        }
        let error = record.error.as_ref().map(|e| match (e.line, e.column) {
            (Some(l), Some(c)) => format!("{} (line {l}, column {c})", e.message),
            _ => e.message.clone(),
        });
        let status = record.status.as_str().to_string();
        self.note_at(
            finished_ms,
            "run",
            format!(
                "{playbook} {status}{}",
                error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            ),
        );
        let run = SimRun {
            id: record.id,
            playbook,
            event,
            started_ms,
            finished_ms,
            status,
            result: record.result.unwrap_or(Value::Null),
            error,
            logs: record
                .logs
                .iter()
                .map(|l| {
                    if l.level == "info" {
                        l.message.clone()
                    } else {
                        format!("{}: {}", l.level, l.message)
                    }
                })
                .collect(),
            actions: record.actions,
        };
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(run.clone());
        run
    }

    /// Every notification queued so far (channel, kind, title, text, level).
    pub fn notifications(&self) -> Result<Vec<Value>, SimError> {
        Ok(self.runtime.block_on(self.notifications_now())?)
    }

    async fn notifications_now(&self) -> Result<Vec<Value>, StoreError> {
        let mut items = self.store.list_notifications(10_000).await?;
        items.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(items
            .into_iter()
            .map(|i| {
                json!({
                    "channel": i.channel,
                    "kind": i.kind,
                    "title": i.payload["title"],
                    "text": i.payload["text"],
                    "level": i.payload["level"],
                    "incident": i.incident_id,
                    "at": i.created_at,
                    "id": i.id,
                })
            })
            .collect())
    }

    /// Puts notifications queued since the last look on the timeline.
    pub(super) async fn collect_notifications(&self) -> Result<(), StoreError> {
        let items = self.notifications_now().await?;
        let mut seen = self.notified.lock().unwrap_or_else(|p| p.into_inner());
        // By id, not by position: notifications of one virtual millisecond have no order
        // of their own, and counting positions once showed one twice and lost another.
        for n in items.iter() {
            if !seen.insert(n["id"].as_str().unwrap_or_default().to_string()) {
                continue;
            }
            let at_ms = n["at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
                .unwrap_or_else(|| self.now_ms());
            let kind = if n["kind"] == "message" {
                "notify"
            } else {
                "escalation"
            };
            // The first line: a page's facts dump follows on the next ones.
            let text = format!(
                "→ {} [{}] {}",
                n["channel"].as_str().unwrap_or(""),
                n["kind"].as_str().unwrap_or(""),
                n["text"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            );
            self.note_at(at_ms, kind, text);
        }
        Ok(())
    }
}
