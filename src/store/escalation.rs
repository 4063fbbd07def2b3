//! Escalation bookkeeping: fired levels, repeats, resolution notices — each written in the
//! same transaction as the notifications it queues.

use sqlx::Row;

use super::{Store, StoreError};

/// A fired level of an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    pub level: String,
    pub fired_at: i64,
    pub last_sent: i64,
    pub sends: i64,
}

async fn enqueue_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    incident_id: &str,
    kind: &str,
    channels: &[String],
    payload: &serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    for channel in channels {
        sqlx::query(
            "INSERT INTO outbox (id, channel, incident_id, kind, payload, status, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(channel)
        .bind(incident_id)
        .bind(kind)
        .bind(payload.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Levels fired for every unresolved incident, by incident id: one query per
    /// evaluator pass, however many incidents are open. The unresolved statuses are named
    /// (not `<> 'resolved'`) so that the incidents come off `incidents_by_status_id`
    /// instead of a scan of every incident ever opened.
    pub async fn fires_of_unresolved(
        &self,
    ) -> Result<std::collections::HashMap<String, Vec<Fire>>, StoreError> {
        let rows = sqlx::query(
            "SELECT f.incident_id, f.level, f.fired_at, f.last_sent, f.sends \
             FROM escalation_fires f JOIN incidents i ON i.id = f.incident_id \
             WHERE i.status IN ('open', 'acknowledged') ORDER BY f.fired_at",
        )
        .fetch_all(&self.writer)
        .await?;
        let mut out: std::collections::HashMap<String, Vec<Fire>> = Default::default();
        for r in &rows {
            out.entry(r.try_get(0)?).or_default().push(Fire {
                level: r.try_get(1)?,
                fired_at: r.try_get(2)?,
                last_sent: r.try_get(3)?,
                sends: r.try_get(4)?,
            });
        }
        Ok(out)
    }

    /// The levels one incident fired, in order (resolved incidents too: the dashboard shows
    /// what happened).
    pub async fn fires_of(&self, incident_id: &str) -> Result<Vec<Fire>, StoreError> {
        let rows = sqlx::query(
            "SELECT level, fired_at, last_sent, sends FROM escalation_fires \
             WHERE incident_id = $1 ORDER BY fired_at",
        )
        .bind(incident_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Fire {
                    level: r.try_get(0)?,
                    fired_at: r.try_get(1)?,
                    last_sent: r.try_get(2)?,
                    sends: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Fires a level once: records it, raises the incident's level (unless it is already
    /// at `at_or_above`), adds a timeline line, queues the notifications and records the
    /// level's playbook run — all or nothing. False if it had already fired.
    #[allow(clippy::too_many_arguments)]
    pub async fn fire_level(
        &self,
        incident_id: &str,
        level: &str,
        at_or_above: &[String],
        channels: &[String],
        payload: &serde_json::Value,
        message: &str,
        runs: &[super::RunRecord],
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let mut tx = self.writer.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO escalation_fires (incident_id, level, fired_at, last_sent, sends) VALUES ($1, $2, $3, $3, 1) \
             ON CONFLICT (incident_id, level) DO NOTHING",
        )
        .bind(incident_id)
        .bind(level)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        super::incidents::raise_level_on(&mut *tx, now, incident_id, level, at_or_above).await?;
        if !runs.is_empty() {
            super::runs::insert_runs_on(&mut tx, runs).await?;
        }
        sqlx::query(
            "INSERT INTO incident_timeline (id, incident_id, at, kind, actor, message, details) VALUES ($1, $2, $3, 'paged', 'escalation', $4, $5)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(incident_id)
        .bind(now)
        .bind(message)
        .bind(serde_json::json!({ "level": level, "channels": channels }).to_string())
        .execute(&mut *tx)
        .await?;
        enqueue_in(&mut tx, incident_id, "trigger", channels, payload, now).await?;
        tx.commit().await?;
        self.outbox_touched();
        Ok(true)
    }

    /// Sends a repeat of a fired level if it is still due (compare-and-set on `last_sent`).
    pub async fn repeat_level(
        &self,
        incident_id: &str,
        level: &str,
        seen_last_sent: i64,
        channels: &[String],
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let mut tx = self.writer.begin().await?;
        let moved = sqlx::query(
            "UPDATE escalation_fires SET last_sent = $1, sends = sends + 1 WHERE incident_id = $2 AND level = $3 AND last_sent = $4",
        )
        .bind(now)
        .bind(incident_id)
        .bind(level)
        .bind(seen_last_sent)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        enqueue_in(&mut tx, incident_id, "repeat", channels, payload, now).await?;
        tx.commit().await?;
        self.outbox_touched();
        Ok(true)
    }

    /// Resolved incidents whose paged channels have not been told yet.
    pub async fn unannounced_resolutions(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM incidents WHERE status = 'resolved' AND resolution_sent = 0 ORDER BY resolved_at LIMIT 100",
        )
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Tells every paged channel that the incident is resolved — once.
    pub async fn announce_resolution(
        &self,
        incident_id: &str,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let channels = self.paged_channels(incident_id).await?;
        let now = self.now();
        let mut tx = self.writer.begin().await?;
        let moved = sqlx::query(
            "UPDATE incidents SET resolution_sent = 1 WHERE id = $1 AND resolution_sent = 0",
        )
        .bind(incident_id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        enqueue_in(&mut tx, incident_id, "resolve", &channels, payload, now).await?;
        tx.commit().await?;
        self.outbox_touched();
        Ok(true)
    }
}
