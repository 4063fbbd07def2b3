//! Run history: one row per run, from `queued` to a final status.

use serde::{Deserialize, Serialize, Serializer};
use sqlx::{any::AnyRow, Row};

use super::{ms_to_rfc3339, Store, StoreError};

/// Where a run is in its life. Final: `succeeded`, `failed`, `timed_out`, `skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
}

impl RunStatus {
    /// The name used in the API, the store and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Skipped => "skipped",
        }
    }

    /// Parses an API or store name.
    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "timed_out" => RunStatus::TimedOut,
            "skipped" => RunStatus::Skipped,
            _ => return None,
        })
    }

    /// True once the run can no longer change.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// What started a run, and on whose behalf.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trigger {
    /// `manual`, `alert`, `cron` or `cli`.
    pub kind: String,
    /// Alert name, cron expression, or the playbook name for manual runs.
    pub name: String,
    /// Token name (API), `cli`, or `runbookd` for the daemon's own triggers.
    pub actor: String,
}

/// One `log()` line of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    /// RFC 3339, millisecond precision.
    pub at: String,
    pub level: String,
    pub message: String,
}

/// Why a run did not succeed, with the script position when there is one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunError {
    pub message: String,
    /// `script`, `timeout`, `operation_limit`, `data_too_large`, `shutdown`, `interrupted`, `load`.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// A run as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRecord {
    pub id: String,
    pub playbook: String,
    /// Content hash of the playbook version this run executes.
    pub version: String,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub dry_run: bool,
    /// The event map the script received.
    pub event: serde_json::Value,
    #[serde(serialize_with = "ser_ms")]
    pub queued_at: i64,
    #[serde(serialize_with = "ser_ms_opt")]
    pub started_at: Option<i64>,
    #[serde(serialize_with = "ser_ms_opt")]
    pub finished_at: Option<i64>,
    pub logs: Vec<LogLine>,
    /// Actions the run took (or, in a dry run, planned).
    pub actions: Vec<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<RunError>,
}

fn ser_ms<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ms_to_rfc3339(*ms))
}

fn ser_ms_opt<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&ms_to_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// Filters for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub playbook: Option<String>,
    pub status: Option<RunStatus>,
    pub limit: u32,
}

const RUN_COLUMNS: &str = "id, playbook, version, trigger, event, dry_run, status, queued_at, \
                           started_at, finished_at, logs, actions, result, error";

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn from_json<T: for<'de> Deserialize<'de>>(
    column: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        column,
        message: e.to_string(),
    })
}

fn run_from_row(row: &AnyRow) -> Result<RunRecord, StoreError> {
    let status: String = row.try_get("status")?;
    let result: Option<String> = row.try_get("result")?;
    let error: Option<String> = row.try_get("error")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        playbook: row.try_get("playbook")?,
        version: row.try_get("version")?,
        trigger: from_json("trigger", &row.try_get::<String, _>("trigger")?)?,
        status: RunStatus::parse(&status).ok_or(StoreError::Corrupt {
            column: "status",
            message: status.clone(),
        })?,
        dry_run: row.try_get::<i64, _>("dry_run")? != 0,
        event: from_json("event", &row.try_get::<String, _>("event")?)?,
        queued_at: row.try_get("queued_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        logs: from_json("logs", &row.try_get::<String, _>("logs")?)?,
        actions: from_json("actions", &row.try_get::<String, _>("actions")?)?,
        result: result.map(|r| from_json("result", &r)).transpose()?,
        error: error.map(|e| from_json("error", &e)).transpose()?,
    })
}

/// A change to a run's row.
#[derive(Debug, Clone)]
pub enum RunUpdate {
    Running {
        id: String,
        started_at: i64,
        version: String,
    },
    /// Boxed: a finished run carries its logs and actions.
    Finished(Box<RunRecord>),
}

async fn mark_running_on<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    e: E,
    id: &str,
    started_at: i64,
    version: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET status = $1, started_at = $2, version = $3 WHERE id = $4")
        .bind(RunStatus::Running.as_str())
        .bind(started_at)
        .bind(version)
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

async fn finish_run_on<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    e: E,
    run: &RunRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runs SET status = $1, started_at = $2, finished_at = $3, logs = $4, \
         actions = $5, result = $6, error = $7 WHERE id = $8",
    )
    .bind(run.status.as_str())
    .bind(run.started_at)
    .bind(run.finished_at)
    .bind(to_json(&run.logs))
    .bind(to_json(&run.actions))
    .bind(run.result.as_ref().map(to_json))
    .bind(run.error.as_ref().map(to_json))
    .bind(&run.id)
    .execute(e)
    .await?;
    Ok(())
}

/// Inserts queued runs, many rows per statement (one round trip instead of one per run).
pub(super) async fn insert_runs_on(
    conn: &mut sqlx::AnyConnection,
    runs: &[RunRecord],
) -> Result<(), StoreError> {
    for chunk in runs.chunks(super::ROWS_PER_INSERT) {
        let sql = super::insert_values(
            "INSERT INTO runs (id, playbook, version, trigger, event, dry_run, status, queued_at, incident_id)",
            9,
            chunk.len(),
        );
        let mut q = sqlx::query(&sql);
        for run in chunk {
            q = q
                .bind(&run.id)
                .bind(&run.playbook)
                .bind(&run.version)
                .bind(to_json(&run.trigger))
                .bind(to_json(&run.event))
                .bind(i64::from(run.dry_run))
                .bind(run.status.as_str())
                .bind(run.queued_at)
                .bind(run.event["incident"].as_str().map(str::to_string));
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

impl Store {
    /// Records a run that was accepted and waits for a slot. Once this returns the run
    /// survives a crash: it is re-queued at the next start.
    pub async fn insert_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        insert_runs_on(&mut conn, std::slice::from_ref(run)).await
    }

    /// Marks a queued run as running.
    /// The version is written again because a run resumed after a restart runs the version
    /// serving now.
    pub async fn mark_running(
        &self,
        id: &str,
        started_at: i64,
        version: &str,
    ) -> Result<(), StoreError> {
        mark_running_on(&self.writer, id, started_at, version).await
    }

    /// Writes a run's final state.
    pub async fn finish_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        finish_run_on(&self.writer, run).await
    }

    /// Writes several runs' status changes in one transaction (the dispatcher commits the
    /// changes of every run that starts or ends at the same moment together).
    pub async fn write_run_updates(&self, updates: &[RunUpdate]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for u in updates {
            match u {
                RunUpdate::Running {
                    id,
                    started_at,
                    version,
                } => mark_running_on(&mut *tx, id, *started_at, version).await?,
                RunUpdate::Finished(run) => finish_run_on(&mut *tx, run).await?,
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// One run by id.
    pub async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// Newest runs first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs");
        let mut clauses = Vec::new();
        let mut n = 0;
        if filter.playbook.is_some() {
            n += 1;
            clauses.push(format!("playbook = ${n}"));
        }
        if filter.status.is_some() {
            n += 1;
            clauses.push(format!("status = ${n}"));
        }
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY queued_at DESC, id DESC LIMIT ${}",
            n + 1
        ));
        let mut query = sqlx::query(&sql);
        if let Some(p) = &filter.playbook {
            query = query.bind(p.clone());
        }
        if let Some(s) = filter.status {
            query = query.bind(s.as_str());
        }
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// After an unclean stop: runs that were executing are recorded as failed (their
    /// effects are unknown, so they are not repeated); runs still queued are returned so the
    /// dispatcher can run them — work accepted before the crash is not lost.
    pub async fn recover_unfinished(&self, now: i64) -> Result<Vec<RunRecord>, StoreError> {
        let error = RunError {
            message: "runbookd stopped while this run was executing; its effects are unknown"
                .into(),
            reason: "interrupted".into(),
            line: None,
            column: None,
        };
        sqlx::query("UPDATE runs SET status = $1, finished_at = $2, error = $3 WHERE status = $4")
            .bind(RunStatus::Failed.as_str())
            .bind(now)
            .bind(to_json(&error))
            .bind(RunStatus::Running.as_str())
            .execute(&self.writer)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status = $1 ORDER BY queued_at, id"
        ))
        .bind(RunStatus::Queued.as_str())
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(run_from_row).collect()
    }
}
