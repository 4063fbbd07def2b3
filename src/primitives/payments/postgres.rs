//! The payments app's PostgreSQL tables, read the way the runbook's investigation steps
//! read them, and one guarded write (`set_status`).
//!
//! Table and column names come from configuration (validated as identifiers at start); every
//! value is a bind parameter. Types the app uses (uuid, numeric, timestamptz, jsonb) are cast
//! to text in SQL so runbookd needs no knowledge of them beyond the id's type.

use std::time::Duration;

use sqlx::{postgres::PgPoolOptions, PgPool, Row};

use super::{Counts, Payment, PaymentsBackend, PaymentsError};
use crate::config::PaymentsConfig;

const ISO: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"#;

/// The app's database.
pub struct PostgresPayments {
    pool: PgPool,
    cfg: PaymentsConfig,
}

impl PostgresPayments {
    /// A lazy pool: an unreachable database fails the primitives that need it, not the start.
    pub fn connect_lazy(
        cfg: &PaymentsConfig,
        url: &str,
    ) -> Result<PostgresPayments, PaymentsError> {
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)?;
        Ok(PostgresPayments {
            pool,
            cfg: cfg.clone(),
        })
    }

    fn select_payment(&self) -> String {
        let c = &self.cfg.columns;
        format!(
            "SELECT {id}::text, {account}::text, {amount}::text, {status}, {pref}, {idem}::text, \
             COALESCE({meta}::text, '{{}}'), to_char({created} AT TIME ZONE 'UTC', {ISO}), \
             EXTRACT(EPOCH FROM now() - {created})::float8 FROM {table}",
            id = c.id,
            account = c.account_id,
            amount = c.amount,
            status = c.status,
            pref = c.processor_ref,
            idem = c.idempotency_key,
            meta = c.metadata,
            created = c.created_at,
            table = self.cfg.table,
        )
    }

    fn payment_from_row(row: &sqlx::postgres::PgRow) -> Result<Payment, sqlx::Error> {
        let metadata: String = row.try_get(6)?;
        Ok(Payment {
            id: row.try_get(0)?,
            account_id: row.try_get(1)?,
            amount: row.try_get(2)?,
            status: row.try_get(3)?,
            processor_ref: row.try_get(4)?,
            idempotency_key: row.try_get(5)?,
            metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
            created_at: row.try_get(7)?,
            age_seconds: row.try_get(8)?,
        })
    }
}

#[async_trait::async_trait]
impl PaymentsBackend for PostgresPayments {
    /// Readiness: the database answers.
    async fn ping(&self) -> Result<(), PaymentsError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Payments created in the last `window`, by status.
    async fn counts(&self, window: Duration) -> Result<Counts, PaymentsError> {
        let c = &self.cfg.columns;
        let rows = sqlx::query(&format!(
            "SELECT {status}, COUNT(*)::bigint FROM {table} \
             WHERE {created} >= now() - make_interval(secs => $1) GROUP BY 1",
            status = c.status,
            created = c.created_at,
            table = self.cfg.table
        ))
        .bind(window.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let mut counts = Counts::default();
        for row in rows {
            let status: String = row.try_get(0)?;
            let n: i64 = row.try_get(1)?;
            counts.total += n;
            if status == "failed" {
                counts.failed += n;
            }
            counts.by_status.insert(status, n);
        }
        if counts.total > 0 {
            counts.failure_rate = counts.failed as f64 / counts.total as f64;
        }
        Ok(counts)
    }

    /// The runbook's hourly breakdown: (hour, status, count), newest hour first.
    async fn hourly(&self, hours: i64) -> Result<Vec<(String, String, i64)>, PaymentsError> {
        let c = &self.cfg.columns;
        let rows = sqlx::query(&format!(
            "SELECT to_char(date_trunc('hour', {created} AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"'), \
             {status}, COUNT(*)::bigint FROM {table} \
             WHERE {created} > now() - make_interval(hours => $1::int) GROUP BY 1, 2 ORDER BY 1 DESC, 2",
            status = c.status,
            created = c.created_at,
            table = self.cfg.table
        ))
        .bind(hours)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Pending payments older than `older_than`, oldest first. `with_ref`: only those with
    /// (true) or without (false) a `processor_ref`; `None`: both.
    async fn stale_pending(
        &self,
        older_than: Duration,
        with_ref: Option<bool>,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentsError> {
        let c = &self.cfg.columns;
        let ref_clause = match with_ref {
            Some(true) => format!(" AND {} IS NOT NULL", c.processor_ref),
            Some(false) => format!(" AND {} IS NULL", c.processor_ref),
            None => String::new(),
        };
        let rows = sqlx::query(&format!(
            "{select} WHERE {status} = 'pending' AND {created} < now() - make_interval(secs => $1){ref_clause} \
             ORDER BY {created} LIMIT $2",
            select = self.select_payment(),
            status = c.status,
            created = c.created_at,
        ))
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(Self::payment_from_row)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// Failed payments of the last `window`, newest first (the runbook's "recent failures").
    async fn recent_failures(
        &self,
        window: Duration,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentsError> {
        let c = &self.cfg.columns;
        let rows = sqlx::query(&format!(
            "{select} WHERE {status} = 'failed' AND {created} >= now() - make_interval(secs => $1) \
             ORDER BY {created} DESC LIMIT $2",
            select = self.select_payment(),
            status = c.status,
            created = c.created_at,
        ))
        .bind(window.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(Self::payment_from_row)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// One payment by id.
    async fn get(&self, id: &str) -> Result<Option<Payment>, PaymentsError> {
        let row = sqlx::query(&format!(
            "{select} WHERE {id} = $1::{ty}",
            select = self.select_payment(),
            id = self.cfg.columns.id,
            ty = self.cfg.columns.id_type,
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(Self::payment_from_row)
            .transpose()
            .map_err(Into::into)
    }

    async fn newest_app_reconciled_age(&self) -> Result<Option<f64>, PaymentsError> {
        let c = &self.cfg.columns;
        let row = sqlx::query(&format!(
            "SELECT EXTRACT(EPOCH FROM now() - MAX({created}))::float8 FROM {table} \
             WHERE ({meta}::jsonb ->> 'reconciled') = 'true' \
             AND COALESCE({meta}::jsonb ->> 'status_changed_by', '') <> 'runbookd'",
            created = c.created_at,
            meta = c.metadata,
            table = self.cfg.table
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Age in seconds of the oldest pending payment, if any.
    async fn oldest_pending_age(&self) -> Result<Option<f64>, PaymentsError> {
        let c = &self.cfg.columns;
        let row = sqlx::query(&format!(
            "SELECT EXTRACT(EPOCH FROM now() - MIN({created}))::float8 FROM {table} WHERE {status} = 'pending'",
            created = c.created_at,
            status = c.status,
            table = self.cfg.table
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    async fn count_stale_pending(&self, older_than: Duration) -> Result<(i64, i64), PaymentsError> {
        let c = &self.cfg.columns;
        let row = sqlx::query(&format!(
            "SELECT COUNT(*)::bigint, (COUNT(*) FILTER (WHERE {r} IS NULL))::bigint FROM {table} \
             WHERE {status} = 'pending' AND {created} < now() - make_interval(secs => $1)",
            r = c.processor_ref,
            status = c.status,
            created = c.created_at,
            table = self.cfg.table
        ))
        .bind(older_than.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Compare-and-set of a payment's status: changes it only if it is still `from`, and
    /// records why in `metadata` (as the app's reconciliation does). False: someone (a
    /// webhook) changed it first, and that change wins.
    async fn set_status(
        &self,
        id: &str,
        from: &str,
        to: &str,
        reason: &str,
    ) -> Result<bool, PaymentsError> {
        let c = &self.cfg.columns;
        let done = sqlx::query(&format!(
            "UPDATE {table} SET {status} = $1, {meta} = COALESCE({meta}, '{{}}'::jsonb) || \
             jsonb_build_object('reconciled', true, 'status_reason', $2::text, \
             'status_changed_by', 'runbookd', 'previous_status', $4::text) \
             WHERE {id} = $3::{ty} AND {status} = $4",
            table = self.cfg.table,
            status = c.status,
            meta = c.metadata,
            id = c.id,
            ty = c.id_type,
        ))
        .bind(to)
        .bind(reason)
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The app's most recent `webhook_received` audit rows, newest first.
    async fn recent_webhooks(&self, limit: i64) -> Result<Vec<serde_json::Value>, PaymentsError> {
        let rows = sqlx::query(&format!(
            "SELECT to_char(created_at AT TIME ZONE 'UTC', {ISO}), object_id::text, \
             COALESCE(changes::text, 'null') FROM {audit} WHERE action = 'webhook_received' \
             AND {not_probe} ORDER BY created_at DESC LIMIT $1",
            not_probe = not_probe(),
            audit = self.cfg.audit_table
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let changes: String = r.try_get(2)?;
                Ok(serde_json::json!({
                    "created_at": r.try_get::<String, _>(0)?,
                    "object_id": r.try_get::<Option<String>, _>(1)?,
                    "changes": serde_json::from_str::<serde_json::Value>(&changes).unwrap_or_default(),
                }))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// `webhook_received` rows in the last `window`.
    async fn webhook_count(&self, window: Duration) -> Result<i64, PaymentsError> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*)::bigint FROM {audit} WHERE action = 'webhook_received' \
             AND created_at >= now() - make_interval(secs => $1) AND {not_probe}",
            not_probe = not_probe(),
            audit = self.cfg.audit_table
        ))
        .bind(window.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }
}

/// Leaves out the rows runbookd's own signed probes leave in the app (`webhooks::signed_probe`):
/// they are not Stripe's deliveries.
fn not_probe() -> String {
    format!(
        "COALESCE(changes::jsonb ->> 'type', '') <> '{}'",
        crate::primitives::webhooks::signed::PROBE_EVENT_TYPE
    )
}
