//! `payments::*`: the payments app's own PostgreSQL tables, read the way the runbook's
//! investigation steps read them, and one guarded write (`set_status`).
//!
//! Table and column names come from configuration (validated as identifiers at start); every
//! value is a bind parameter. Types the app uses (uuid, numeric, timestamptz, jsonb) are cast
//! to text in SQL so runbookd needs no knowledge of them beyond the id's type.

use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, FLOAT, INT};
use serde::Serialize;
use sqlx::{postgres::PgPoolOptions, PgPool, Row};

use super::{act, block_on, script_error, with_run};
use crate::config::PaymentsConfig;

/// Errors from the app's database.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("payments database is not configured: set [payments] database_url")]
    NotConfigured,
    #[error("payments database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Unavailable(String),
}

/// One payment row as scripts and reconciliation see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Payment {
    pub id: String,
    pub account_id: Option<String>,
    /// Decimal text, exactly as stored (`"42.50"`).
    pub amount: Option<String>,
    pub status: String,
    pub processor_ref: Option<String>,
    pub idempotency_key: Option<String>,
    pub metadata: serde_json::Value,
    pub created_at: String,
    pub age_seconds: f64,
}

/// Counts of payments by status in a window, and the failure rate over them.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Counts {
    pub total: i64,
    pub failed: i64,
    /// failed / total, 0 when there were none.
    pub failure_rate: f64,
    pub by_status: std::collections::BTreeMap<String, i64>,
}

/// The app's database.
#[derive(Clone)]
pub struct Payments {
    pool: Option<PgPool>,
    cfg: PaymentsConfig,
    /// In a simulation the world's tables answer instead of PostgreSQL.
    sim: Option<std::sync::Arc<crate::world::World>>,
}

const ISO: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"#;

impl Payments {
    /// A lazy pool: an unreachable database fails the primitives that need it, not the start.
    pub fn new(cfg: &PaymentsConfig) -> Result<Payments, PaymentsError> {
        let pool = match &cfg.database_url {
            None => None,
            Some(url) => Some(
                PgPoolOptions::new()
                    .max_connections(cfg.max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(3))
                    .connect_lazy(url)?,
            ),
        };
        Ok(Payments {
            pool,
            cfg: cfg.clone(),
            sim: None,
        })
    }

    /// The simulated world's tables.
    pub fn simulated(world: std::sync::Arc<crate::world::World>) -> Payments {
        Payments {
            pool: None,
            cfg: PaymentsConfig::default(),
            sim: Some(world),
        }
    }

    /// True when a database is configured (or simulated).
    pub fn configured(&self) -> bool {
        self.pool.is_some() || self.sim.is_some()
    }

    fn pool(&self) -> Result<&PgPool, PaymentsError> {
        self.pool.as_ref().ok_or(PaymentsError::NotConfigured)
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> Result<(), PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_payments_ping();
        }
        sqlx::query("SELECT 1").execute(self.pool()?).await?;
        Ok(())
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

    /// Payments created in the last `window`, by status.
    pub async fn counts(&self, window: Duration) -> Result<Counts, PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_counts(window);
        }
        let c = &self.cfg.columns;
        let rows = sqlx::query(&format!(
            "SELECT {status}, COUNT(*)::bigint FROM {table} \
             WHERE {created} >= now() - make_interval(secs => $1) GROUP BY 1",
            status = c.status,
            created = c.created_at,
            table = self.cfg.table
        ))
        .bind(window.as_secs_f64())
        .fetch_all(self.pool()?)
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
    pub async fn hourly(&self, hours: i64) -> Result<Vec<(String, String, i64)>, PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_hourly(hours);
        }
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
        .fetch_all(self.pool()?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Pending payments older than `older_than`, oldest first. `with_ref`: only those with
    /// (true) or without (false) a `processor_ref`; `None`: both.
    pub async fn stale_pending(
        &self,
        older_than: Duration,
        with_ref: Option<bool>,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_stale_pending(older_than, with_ref, limit);
        }
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
        .fetch_all(self.pool()?)
        .await?;
        rows.iter()
            .map(Self::payment_from_row)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// Failed payments of the last `window`, newest first (the runbook's "recent failures").
    pub async fn recent_failures(
        &self,
        window: Duration,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_recent_failures(window, limit);
        }
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
        .fetch_all(self.pool()?)
        .await?;
        rows.iter()
            .map(Self::payment_from_row)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// One payment by id.
    pub async fn get(&self, id: &str) -> Result<Option<Payment>, PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_get(id);
        }
        let row = sqlx::query(&format!(
            "{select} WHERE {id} = $1::{ty}",
            select = self.select_payment(),
            id = self.cfg.columns.id,
            ty = self.cfg.columns.id_type,
        ))
        .bind(id)
        .fetch_optional(self.pool()?)
        .await?;
        row.as_ref()
            .map(Self::payment_from_row)
            .transpose()
            .map_err(Into::into)
    }

    /// Age in seconds of the oldest pending payment, if any.
    pub async fn oldest_pending_age(&self) -> Result<Option<f64>, PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_oldest_pending_age();
        }
        let c = &self.cfg.columns;
        let row = sqlx::query(&format!(
            "SELECT EXTRACT(EPOCH FROM now() - MIN({created}))::float8 FROM {table} WHERE {status} = 'pending'",
            created = c.created_at,
            status = c.status,
            table = self.cfg.table
        ))
        .fetch_one(self.pool()?)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Compare-and-set of a payment's status: changes it only if it is still `from`, and
    /// records why in `metadata` (as the app's reconciliation does). False: someone (a
    /// webhook) changed it first, and that change wins.
    pub async fn set_status(
        &self,
        id: &str,
        from: &str,
        to: &str,
        reason: &str,
    ) -> Result<bool, PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_set_status(id, from, to, reason);
        }
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
        .execute(self.pool()?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The app's most recent `webhook_received` audit rows, newest first.
    pub async fn recent_webhooks(
        &self,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_recent_webhooks(limit);
        }
        let rows = sqlx::query(&format!(
            "SELECT to_char(created_at AT TIME ZONE 'UTC', {ISO}), object_id::text, \
             COALESCE(changes::text, 'null') FROM {audit} WHERE action = 'webhook_received' \
             ORDER BY created_at DESC LIMIT $1",
            audit = self.cfg.audit_table
        ))
        .bind(limit)
        .fetch_all(self.pool()?)
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
    pub async fn webhook_count(&self, window: Duration) -> Result<i64, PaymentsError> {
        if let Some(w) = &self.sim {
            return w.sim_webhook_count(window);
        }
        let row = sqlx::query(&format!(
            "SELECT COUNT(*)::bigint FROM {audit} WHERE action = 'webhook_received' \
             AND created_at >= now() - make_interval(secs => $1)",
            audit = self.cfg.audit_table
        ))
        .bind(window.as_secs_f64())
        .fetch_one(self.pool()?)
        .await?;
        Ok(row.try_get(0)?)
    }
}

const LIMIT: Duration = Duration::from_secs(15);

fn payments() -> Result<Payments, Box<EvalAltResult>> {
    with_run("payments", |ctx| Ok(ctx.services.payments.clone()))
}

fn seconds(what: &str, v: FLOAT) -> Result<Duration, Box<EvalAltResult>> {
    if !v.is_finite() || v < 0.0 {
        return Err(script_error(format!(
            "{what}: seconds must be ≥ 0, got {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

fn dynamic<T: Serialize>(v: &T) -> Result<Dynamic, Box<EvalAltResult>> {
    rhai::serde::to_dynamic(v)
}

fn stale(older: FLOAT, opts: Map) -> Result<Array, Box<EvalAltResult>> {
    let older = seconds("payments::stale_pending", older)?;
    let with_ref = match opts.get("with_ref") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => Some(
            v.as_bool()
                .map_err(|_| script_error("with_ref must be true, false or ()"))?,
        ),
    };
    let limit = match opts.get("limit") {
        None => 100,
        Some(v) => v
            .as_int()
            .map_err(|_| script_error("limit must be an integer"))?,
    };
    let p = payments()?;
    let rows = block_on("payments::stale_pending", LIMIT, async move {
        p.stale_pending(older, with_ref, limit).await
    })?;
    rows.iter().map(dynamic).collect()
}

fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("counts", |window: FLOAT| {
        let w = seconds("payments::counts", window)?;
        let p = payments()?;
        let c = block_on("payments::counts", LIMIT, async move { p.counts(w).await })?;
        dynamic(&c)
    });
    m.set_native_fn("counts", |window: INT| {
        let w = seconds("payments::counts", window as FLOAT)?;
        let p = payments()?;
        let c = block_on("payments::counts", LIMIT, async move { p.counts(w).await })?;
        dynamic(&c)
    });
    m.set_native_fn("hourly", |hours: INT| {
        let p = payments()?;
        let rows = block_on(
            "payments::hourly",
            LIMIT,
            async move { p.hourly(hours).await },
        )?;
        Ok(rows
            .into_iter()
            .map(|(hour, status, count)| {
                let mut m = Map::new();
                m.insert("hour".into(), hour.into());
                m.insert("status".into(), status.into());
                m.insert("count".into(), count.into());
                Dynamic::from_map(m)
            })
            .collect::<Array>())
    });
    m.set_native_fn("stale_pending", |older: INT| {
        stale(older as FLOAT, Map::new())
    });
    m.set_native_fn("stale_pending", |older: INT, opts: Map| {
        stale(older as FLOAT, opts)
    });
    m.set_native_fn("stale_pending", |older: FLOAT, opts: Map| {
        stale(older, opts)
    });
    m.set_native_fn("recent_failures", |window: INT, limit: INT| {
        let w = seconds("payments::recent_failures", window as FLOAT)?;
        let p = payments()?;
        let rows = block_on("payments::recent_failures", LIMIT, async move {
            p.recent_failures(w, limit).await
        })?;
        rows.iter().map(dynamic).collect::<Result<Array, _>>()
    });
    m.set_native_fn("get", |id: &str| {
        let p = payments()?;
        let id = id.to_string();
        let row = block_on("payments::get", LIMIT, async move { p.get(&id).await })?;
        match row {
            Some(r) => dynamic(&r),
            None => Ok(Dynamic::UNIT),
        }
    });
    m.set_native_fn("oldest_pending_age", || {
        let p = payments()?;
        let age = block_on("payments::oldest_pending_age", LIMIT, async move {
            p.oldest_pending_age().await
        })?;
        Ok(age.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT))
    });
    m.set_native_fn("webhooks", |limit: INT| {
        let p = payments()?;
        let rows = block_on("payments::webhooks", LIMIT, async move {
            p.recent_webhooks(limit).await
        })?;
        rows.iter().map(dynamic).collect::<Result<Array, _>>()
    });
    m.set_native_fn("webhook_count", |window: INT| {
        let w = seconds("payments::webhook_count", window as FLOAT)?;
        let p = payments()?;
        block_on("payments::webhook_count", LIMIT, async move {
            p.webhook_count(w).await
        })
    });
    m.set_native_fn(
        "set_status",
        |id: &str, from: &str, to: &str, reason: &str| -> Result<bool, Box<EvalAltResult>> {
            let p = payments()?;
            let (id, from, to, reason) = (
                id.to_string(),
                from.to_string(),
                to.to_string(),
                reason.to_string(),
            );
            let details = serde_json::json!({ "from": from, "to": to, "reason": reason });
            let target = format!("payment:{id}");
            let outcome = act("payments.set_status", &target, details, || {
                let changed = block_on("payments::set_status", LIMIT, async move {
                    p.set_status(&id, &from, &to, &reason).await
                })?;
                Ok(serde_json::json!({ "changed": changed }))
            })?;
            Ok(outcome
                .and_then(|o| o["changed"].as_bool())
                .unwrap_or(false))
        },
    );
    m
}

pub fn register(engine: &mut Engine) {
    engine.register_static_module("payments", module().into());
}
