//! The notification outbox.

use serde::Serialize;
use sqlx::{any::AnyRow, Row};

use super::{ms_to_rfc3339, Store, StoreError};

/// One notification to one channel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutboxItem {
    pub id: String,
    pub channel: String,
    pub incident_id: Option<String>,
    /// `trigger`, `repeat`, `resolve`, `message`.
    pub kind: String,
    pub payload: serde_json::Value,
    /// `pending`, `sent`, `failed`.
    pub status: String,
    pub attempts: i64,
    #[serde(skip)]
    pub created_at_ms: i64,
    /// When the next attempt is due (ms); [`Store::claim_notification`] compares it.
    #[serde(skip)]
    pub next_attempt_at: i64,
    pub created_at: String,
    pub last_error: Option<String>,
}

fn item(row: &AnyRow) -> Result<OutboxItem, StoreError> {
    let payload: String = row.try_get("payload")?;
    let created: i64 = row.try_get("created_at")?;
    Ok(OutboxItem {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        incident_id: row.try_get("incident_id")?,
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
            column: "outbox.payload",
            message: e.to_string(),
        })?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        created_at_ms: created,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: ms_to_rfc3339(created),
        last_error: row.try_get("last_error")?,
    })
}

const COLUMNS: &str = "id, channel, incident_id, kind, payload, status, attempts, created_at, \
     last_error, next_attempt_at";

impl Store {
    /// Queues a notification; returns its id.
    pub async fn enqueue_notification(
        &self,
        channel: &str,
        incident_id: Option<&str>,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<String, StoreError> {
        let id = enqueue_on(
            &self.writer,
            self.now(),
            channel,
            incident_id,
            kind,
            payload,
        )
        .await?;
        self.outbox_touched();
        Ok(id)
    }

    /// Tells delivery that a commit queued notifications (see [`Store::outbox_watch`]).
    pub(super) fn outbox_touched(&self) {
        self.outbox_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes each time this process commits a queued notification: delivery waits on it
    /// instead of polling the outbox.
    pub fn outbox_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbox_changed.subscribe()
    }

    /// `channel`'s pending notifications whose next attempt is due, oldest first, leaving
    /// out any that has an older pending one for the same incident on the same channel
    /// (waiting for its retry, or held by another replica): order within one channel and
    /// incident is kept whatever fails or who delivers.
    pub async fn due_notifications(
        &self,
        channel: &str,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox o WHERE o.status = 'pending' AND o.channel = $1 \
             AND o.next_attempt_at <= $2 AND NOT EXISTS (SELECT 1 FROM outbox p \
               WHERE p.incident_id = o.incident_id AND p.status = 'pending' \
               AND p.channel = o.channel AND (p.created_at < o.created_at \
                 OR (p.created_at = o.created_at AND p.id < o.id))) \
             ORDER BY o.next_attempt_at, o.id LIMIT $3"
        ))
        .bind(channel)
        .bind(self.now())
        .bind(i64::from(limit))
        // On the readers, so it never waits behind run writes.
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(item).collect()
    }

    /// When `channel`'s next pending notification falls due (a retry, or a claim of a
    /// replica that may have died), if one is waiting for a later time: delivery sleeps
    /// until then.
    pub async fn next_notification_due(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending' AND channel = $1 \
             AND next_attempt_at > $2",
        )
        .bind(channel)
        .bind(self.now())
        .fetch_one(&self.reader)
        .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?)
    }

    /// Gives back a claim taken with [`Store::claim_notification`] without an attempt (the
    /// delivery was cut off by shutdown): due again now, for another replica or the next
    /// start. A compare-and-set on the claim, so a claim taken over meanwhile is left alone.
    pub async fn release_notification(&self, id: &str, lease_until: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1, claimed_by = NULL WHERE id = $2 \
             AND status = 'pending' AND next_attempt_at = $3",
        )
        .bind(self.now())
        .bind(id)
        .bind(lease_until)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Takes a due notification for delivery until `lease_until` (ms) for the replica lease
    /// `claimant`: a compare-and-set on its due time, so when several replicas share the
    /// store exactly one sends it. False: another one took it first. A replica that dies
    /// while sending leaves its claim behind; recovery gives it back once the replica's
    /// lease is found dead ([`Store::recover_runs`]), or it runs out at `lease_until`.
    pub async fn claim_notification(
        &self,
        item: &OutboxItem,
        lease_until: i64,
        claimant: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1, claimed_by = $4 WHERE id = $2 \
             AND status = 'pending' AND next_attempt_at = $3",
        )
        .bind(lease_until)
        .bind(&item.id)
        .bind(item.next_attempt_at)
        .bind(claimant)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn mark_notification_sent(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = $1, last_error = NULL, claimed_by = NULL WHERE id = $2")
            .bind(self.now())
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Records a failed attempt: retry at `next_attempt_at`, or give up (`None`).
    pub async fn mark_notification_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: Option<i64>,
    ) -> Result<(), StoreError> {
        match next_attempt_at {
            Some(at) => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, claimed_by = NULL WHERE id = $3",
            )
            .bind(error)
            .bind(at)
            .bind(id),
            None => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $1, status = 'failed', claimed_by = NULL WHERE id = $2",
            )
            .bind(error)
            .bind(id),
        }
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn list_notifications(&self, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(item).collect()
    }

    /// One incident's notifications, oldest first (the dashboard's timeline).
    pub async fn notifications_of(&self, incident_id: &str) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE incident_id = $1 ORDER BY created_at, id LIMIT 1000"
        ))
        .bind(incident_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(item).collect()
    }

    /// Channels that were paged (a trigger or repeat delivered) for an incident.
    pub async fn paged_channels(&self, incident_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT channel FROM outbox WHERE incident_id = $1 AND kind IN ('trigger', 'repeat') ORDER BY channel",
        )
        .bind(incident_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

impl Store {
    /// Gives back the delivery claims of replicas whose lease is dead (not `me`): due at
    /// once, for whichever replica delivers next. Returns how many.
    pub(super) async fn release_dead_claims(
        &self,
        me: &str,
        lease_now: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1, claimed_by = NULL WHERE status = 'pending' \
             AND claimed_by IS NOT NULL AND claimed_by <> $2 \
             AND claimed_by NOT IN (SELECT id FROM replicas WHERE expires_at >= $3)",
        )
        .bind(self.now())
        .bind(me)
        .bind(lease_now)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() > 0 {
            self.outbox_touched();
        }
        Ok(done.rows_affected())
    }
}

/// Queues a notification on `e` (inside the caller's transaction); returns its id.
pub(super) async fn enqueue_on<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    e: E,
    now: i64,
    channel: &str,
    incident_id: Option<&str>,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO outbox (id, channel, incident_id, kind, payload, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
    )
    .bind(&id)
    .bind(channel)
    .bind(incident_id.map(str::to_string))
    .bind(kind)
    .bind(payload.to_string())
    .bind(now)
    .execute(e)
    .await?;
    Ok(id)
}
