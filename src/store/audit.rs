//! The audit trail: every action a run or an operator takes (or plans, in a dry run).

use serde::Serialize;
use sqlx::Row;

use super::{ms_to_rfc3339, Store, StoreError};

/// An action to record.
#[derive(Debug, Clone)]
pub struct NewAudit {
    /// Token name, `cli`, or `playbook:NAME` for a script's own actions.
    pub actor: String,
    /// What was done, e.g. `breaker.reset`, `run.trigger`.
    pub action: String,
    /// What it was done to, e.g. `stripe`.
    pub target: String,
    pub run_id: Option<String>,
    /// A dry run records what would have been done.
    pub dry_run: bool,
    /// Action-specific facts; never secrets.
    pub details: serde_json::Value,
}

/// A recorded audit entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub run_id: Option<String>,
    pub dry_run: bool,
    pub details: serde_json::Value,
}

impl Store {
    /// Appends one entry.
    pub async fn audit(&self, entry: &NewAudit) -> Result<(), StoreError> {
        audit_on(&self.writer, self.now(), entry).await
    }

    /// Newest entries first.
    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, run_id, dry_run, details FROM audit \
             ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let details: String = row.try_get("details")?;
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    at: ms_to_rfc3339(row.try_get("at")?),
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    run_id: row.try_get("run_id")?,
                    dry_run: row.try_get::<i64, _>("dry_run")? != 0,
                    details: serde_json::from_str(&details).map_err(|e| StoreError::Corrupt {
                        column: "audit.details",
                        message: e.to_string(),
                    })?,
                })
            })
            .collect()
    }
}

/// Appends one entry on `e` (inside the caller's transaction), stamped `now`.
pub(super) async fn audit_on<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    e: E,
    now: i64,
    entry: &NewAudit,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (id, at, actor, action, target, run_id, dry_run, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(now)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(entry.run_id.clone())
    .bind(i64::from(entry.dry_run))
    .bind(entry.details.to_string())
    .execute(e)
    .await?;
    Ok(())
}
