//! Run history: one row per run, from `queued` to a final status.

use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, Row};

use super::{ms_to_rfc3339, ser_ms, ser_ms_opt, Store, StoreError};
use crate::event::{Event, RunRequest, Trigger};

/// Where a run is in its life. Final: `succeeded`, `failed`, `timed_out`, `skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    /// Ended having asked humans to approve an action; a decision starts a new run.
    AwaitingApproval,
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
            RunStatus::AwaitingApproval => "awaiting_approval",
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
            "awaiting_approval" => RunStatus::AwaitingApproval,
            _ => return None,
        })
    }

    /// True once the run can no longer change.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// One `log()` line of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LogLine {
    /// RFC 3339, millisecond precision.
    pub at: String,
    pub level: String,
    pub message: String,
}

/// The kind of failure, for dashboards and escalation (the message says the rest).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunErrorReason {
    /// The script raised an error (or returned something that is not JSON).
    Script,
    /// The run's deadline passed.
    Timeout,
    /// `playbooks.max_operations` ran out.
    OperationLimit,
    /// A string, array or map grew past the sandbox's size limits.
    DataTooLarge,
    /// Too many nested calls.
    CallDepth,
    /// runbookd shut down before the run finished.
    Shutdown,
    /// The attempt stopped before acting because its replica's lease may have lapsed
    /// (never a run's final reason: the run goes the retry path).
    LeaseLapsed,
    /// Its replica went away mid-run and no attempt was left.
    Interrupted,
    /// The playbook did not load (or no longer exists).
    Load,
    /// runbookd itself failed to run it.
    Internal,
    /// A replay needed a read its recording does not hold (`runbookd replay`).
    Unrecorded,
}

/// Why a run did not succeed, with the script position when there is one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RunError {
    pub message: String,
    pub reason: RunErrorReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// A run as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: String,
    pub playbook: String,
    /// Content hash of the playbook version this run executes.
    pub version: String,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub dry_run: bool,
    /// The event the script received (its `attempt` is the record's).
    pub event: Event,
    #[serde(serialize_with = "ser_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub queued_at: i64,
    #[serde(serialize_with = "ser_ms_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<i64>,
    #[serde(serialize_with = "ser_ms_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<i64>,
    /// Absent from list summaries (`GET /api/v1/runs` without `logs=true`).
    #[schema(required = false)]
    pub logs: Vec<LogLine>,
    /// Actions the run took (or, in a dry run, planned); absent from list summaries.
    #[schema(required = false)]
    pub actions: Vec<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<RunError>,
    /// Which attempt this is: 1, or more after the replica running it died (or was stopped
    /// past its grace period) and the run was started again.
    pub attempt: i64,
    /// The replica executing (or that executed) the current attempt.
    pub replica: Option<String>,
    /// Earlier attempts that did not finish, and the final one once the run ends.
    pub attempts: Vec<Attempt>,
    /// The daemon process (lease id) that owns the run; `None` while nobody has claimed it.
    /// Internal: every status change is conditional on it.
    #[serde(skip)]
    pub owner: Option<String>,
    /// The reads the run made (its flight recording): written when it ends, served by
    /// `GET /api/v1/runs/{id}/recording`, never read with the run.
    #[serde(skip)]
    pub recording: Option<super::Recording>,
}

/// One attempt at a run, as the run record shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: i64,
    /// Replica name (`[server] replica_id`) that executed it.
    pub replica: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// The run's final status, or `interrupted` when its replica died or stopped mid-run.
    pub outcome: String,
}

impl RunRecord {
    /// Closes the current attempt with the run's final status (before it is written).
    pub fn close_attempt(&mut self) {
        self.attempts.push(Attempt {
            attempt: self.attempt,
            replica: self.replica.clone(),
            started_at: self.started_at.map(ms_to_rfc3339),
            ended_at: self.finished_at.map(ms_to_rfc3339),
            outcome: self.status.as_str().into(),
        });
    }

    /// A run of runbookd's own (an escalation level's playbook, a cron tick, an approval's
    /// follow-up), recorded by the caller in the same transaction as what caused it, owned
    /// by nobody: whichever replica has a free slot claims it. The run queue's bound does
    /// not apply — such runs wait in the store — and the playbook version is the one
    /// serving when it starts.
    pub fn unowned(req: RunRequest, queued_at: i64) -> RunRecord {
        RunRecord::queued(req, "", queued_at)
    }

    /// A run accepted now, not claimed by anyone yet (`owner` is set by whoever queues it).
    pub fn queued(req: RunRequest, version: &str, queued_at: i64) -> RunRecord {
        let RunRequest {
            playbook,
            mut event,
            trigger,
        } = req;
        event.attempt = 1;
        RunRecord {
            id: uuid::Uuid::now_v7().to_string(),
            playbook,
            version: version.to_string(),
            dry_run: event.dry_run,
            trigger,
            status: RunStatus::Queued,
            event,
            queued_at,
            started_at: None,
            finished_at: None,
            logs: Vec::new(),
            actions: Vec::new(),
            result: None,
            error: None,
            attempt: 1,
            replica: None,
            attempts: Vec::new(),
            owner: None,
            recording: None,
        }
    }
}

/// Filters for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub playbook: Option<String>,
    pub status: Option<RunStatus>,
    /// Runs of this incident only.
    pub incident: Option<String>,
    pub limit: u32,
    /// Runs older than this one (a page cursor: the last id of the previous page).
    pub before: Option<String>,
    /// Read logs and actions too (a list without them reads and sends a fraction).
    pub with_logs: bool,
}

const RUN_COLUMNS: &str = "id, playbook, version, trigger, event, dry_run, status, queued_at, \
                           started_at, finished_at, logs, actions, result, error, owner, replica, \
                           attempt, attempts";

pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

pub(super) fn from_json<T: for<'de> Deserialize<'de>>(
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
    let mut run = RunRecord {
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
        owner: row.try_get("owner")?,
        replica: row.try_get("replica")?,
        attempt: row.try_get("attempt")?,
        attempts: from_json("attempts", &row.try_get::<String, _>("attempts")?)?,
        recording: None,
    };
    // The event is stored as it was queued; the attempt column is the authority.
    run.event.attempt = run.attempt;
    Ok(run)
}

/// `INSERT INTO runs` of accepted runs, many rows per statement (one round trip instead of
/// one per run): queued, or already `running` when admitted into a free slot (then with
/// their start and replica, so that this one commit is all a run needs before it acts).
const RUN_INSERT: (&str, usize) = (
    "INSERT INTO runs (id, playbook, version, trigger, event, dry_run, status, queued_at, incident_id, owner, started_at, replica)",
    12,
);

/// Binds [`RUN_INSERT`]'s values for `runs`.
fn bind_runs<'q>(mut q: super::AnyQuery<'q>, runs: &'q [RunRecord]) -> super::AnyQuery<'q> {
    for run in runs {
        q = q
            .bind(&run.id)
            .bind(&run.playbook)
            .bind(&run.version)
            .bind(to_json(&run.trigger))
            .bind(to_json(&run.event))
            .bind(i64::from(run.dry_run))
            .bind(run.status.as_str())
            .bind(run.queued_at)
            .bind(run.event.incident.clone())
            .bind(run.owner.clone())
            .bind(run.started_at)
            .bind(run.replica.clone());
    }
    q
}

pub(super) async fn insert_runs_on(
    conn: &mut sqlx::AnyConnection,
    runs: &[RunRecord],
) -> Result<(), StoreError> {
    let (head, cols) = RUN_INSERT;
    for chunk in runs.chunks(super::ROWS_PER_INSERT) {
        let sql = super::insert_values(head, cols, chunk.len());
        bind_runs(sqlx::query(&sql), chunk)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Records a run that was accepted. Once this returns the run survives a crash: its
    /// owner runs it, or, if the owner dies, another replica does.
    pub async fn insert_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        insert_runs_on(&mut conn, std::slice::from_ref(run)).await
    }

    /// Claims up to `limit` queued runs nobody owns, oldest first, for `owner`. Replicas
    /// claiming at the same moment get disjoint sets (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL; SQLite has a single writer).
    pub async fn claim_queued(
        &self,
        owner: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lock = match self.backend {
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let rows = sqlx::query(&format!(
            "UPDATE runs SET owner = $1 WHERE id IN (SELECT id FROM runs WHERE status = 'queued' \
             AND owner IS NULL ORDER BY queued_at, id LIMIT $2{lock}) RETURNING {RUN_COLUMNS}"
        ))
        .bind(owner)
        .bind(limit as i64)
        .fetch_all(&self.writer)
        .await?;
        let mut runs = rows
            .iter()
            .map(run_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        runs.sort_by(|a, b| (a.queued_at, &a.id).cmp(&(b.queued_at, &b.id)));
        Ok(runs)
    }

    /// Gives back the queued runs `owner` holds (graceful shutdown): another replica, or the
    /// next start, claims them.
    pub async fn release_queued(&self, owner: &str) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE runs SET owner = NULL WHERE owner = $1 AND status = 'queued'")
                .bind(owner)
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected())
    }

    /// Gives back a run recorded `running` at admission that its owner did not start
    /// (it began shutting down first): `queued` and owned by nobody, as if it had waited in
    /// the queue. False when it is not that owner's unstarted attempt any more.
    pub async fn release_unstarted(
        &self,
        id: &str,
        owner: &str,
        attempt: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', owner = NULL, started_at = NULL, replica = NULL \
             WHERE id = $1 AND owner = $2 AND attempt = $3 AND status = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(attempt)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One run by id.
    pub async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// A run with its flight recording (`None`: no such run; the recording is `None` for a
    /// run that has not ended, or ended before recordings existed).
    pub async fn get_run_recording(
        &self,
        id: &str,
    ) -> Result<Option<(RunRecord, Option<super::Recording>)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS}, recording FROM runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let run = run_from_row(&row)?;
        let recording: Option<String> = row.try_get("recording")?;
        let recording = recording.map(|r| from_json("recording", &r)).transpose()?;
        Ok(Some((run, recording)))
    }

    /// Newest runs first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let columns = if filter.with_logs {
            RUN_COLUMNS.to_string()
        } else {
            RUN_COLUMNS.replace("logs, actions", "'[]' AS logs, '[]' AS actions")
        };
        let mut sql = format!("SELECT {columns} FROM runs");
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
        if filter.incident.is_some() {
            n += 1;
            clauses.push(format!("incident_id = ${n}"));
        }
        if filter.before.is_some() {
            n += 1;
            clauses.push(format!(
                "(queued_at < (SELECT queued_at FROM runs WHERE id = ${n}) OR \
                 (queued_at = (SELECT queued_at FROM runs WHERE id = ${n}) AND id < ${n}))"
            ));
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
        if let Some(i) = &filter.incident {
            query = query.bind(i.clone());
        }
        if let Some(b) = &filter.before {
            query = query.bind(b.clone());
        }
        let rows = query
            .bind(i64::from(filter.limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(run_from_row).collect()
    }
}
