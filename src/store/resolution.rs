//! Resolving an incident, with what goes with it in the same transaction: its status, its
//! timeline line, its pending approvals withdrawn. Above both incidents and approvals, so
//! neither imports the other for it.

use sqlx::AnyConnection;

use super::{approvals::withdraw_approvals_on, incidents::add_timeline_on, Store, StoreError};

impl Store {
    /// Resolves an incident that is not resolved yet, withdrawing its pending approvals in
    /// the same transaction. Returns false if it already was.
    pub async fn resolve_incident(
        &self,
        id: &str,
        by: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let resolved = resolve_incident_on(&mut tx, self.now(), id, by, why).await?;
        tx.commit().await?;
        if resolved {
            // Its withdrawn approvals may have queued a message.
            self.outbox_touched();
        }
        Ok(resolved)
    }
}

/// [`Store::resolve_incident`] inside a transaction (an ingest batch's too). True if it
/// resolved it.
pub(super) async fn resolve_incident_on(
    conn: &mut AnyConnection,
    now: i64,
    id: &str,
    by: &str,
    why: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE incidents SET status = 'resolved', resolved_at = $1, resolved_by = $2, updated_at = $1 \
         WHERE id = $3 AND status <> 'resolved'",
    )
    .bind(now)
    .bind(by)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        add_timeline_on(
            &mut *conn,
            now,
            id,
            "resolved",
            by,
            why,
            &serde_json::json!({}),
        )
        .await?;
        withdraw_approvals_on(&mut *conn, now, id, by).await?;
    }
    Ok(done.rows_affected() == 1)
}
