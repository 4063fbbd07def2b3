//! Run status changes — a run starts, a run ends — written together: the status writer
//! (`status_writer.rs`) hands every change waiting to [`Store::write_run_updates`].
//!
//! Each change is conditional on the run's owner, so a replica that lost a run cannot
//! overwrite the replica that took it over; the writer tells each caller whether its change
//! applied.

use sqlx::Row;

use super::{runs::to_json, RunRecord, Store, StoreError};

/// A change to a run's row, made only by the run's owner.
#[derive(Debug, Clone)]
pub enum RunUpdate {
    /// A queued run starts on `replica`.
    Running {
        id: String,
        owner: String,
        attempt: i64,
        replica: String,
        started_at: i64,
        version: String,
    },
    /// Boxed: a finished run carries its logs and actions.
    Finished(Box<RunRecord>),
}

impl RunUpdate {
    fn run_id(&self) -> &str {
        match self {
            RunUpdate::Running { id, .. } => id,
            RunUpdate::Finished(run) => &run.id,
        }
    }
}

/// Runs' changes per statement: 100 finished runs bind 1,200 values.
const UPDATES_PER_STATEMENT: usize = 100;

const RUNNING_CASTS: [&str; 6] = ["", "", "BIGINT", "", "BIGINT", ""];
const FINISHED_CASTS: [&str; 12] = [
    "", "", "BIGINT", "", "BIGINT", "BIGINT", "", "", "TEXT", "TEXT", "", "TEXT",
];

impl Store {
    /// Writes several runs' status changes at once (the dispatcher commits the changes of
    /// every run that starts or ends at the same moment together). For each change: whether
    /// it applied (false: the run is no longer this owner's).
    ///
    /// On PostgreSQL, up to 100 changes of each kind are one autocommitted statement (both
    /// kinds' `UPDATE`s in one `WITH`): one round trip where a transaction took three
    /// (`BEGIN`, the statement, `COMMIT`). A statement is atomic as a transaction is, and
    /// durable when it returns. More changes than that take a transaction.
    ///
    /// On SQLite these commits skip their own fsync (`synchronous=NORMAL` for this
    /// transaction only): the WAL is appended in order, so the next commit that is synced —
    /// every alert's answer is — or the next checkpoint makes them durable too. What power
    /// loss can cost is a status change of the last moment, and both are safe to lose: a
    /// lost "running" leaves the run queued, a lost outcome makes a run that finished run
    /// again as a new attempt (primitives are idempotent).
    pub async fn write_run_updates(&self, updates: &[RunUpdate]) -> Result<Vec<bool>, StoreError> {
        let result = self.write_run_updates_once(updates).await;
        self.observe_write(&result);
        result
    }

    async fn write_run_updates_once(&self, updates: &[RunUpdate]) -> Result<Vec<bool>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let relaxed = self.backend == super::Backend::Sqlite && self.sqlite_full_sync;
        if relaxed {
            if let Err(e) = sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await
            {
                // Left inside a transaction: never reused (see `writer_is_clean`).
                conn.close_on_drop();
                return Err(e.into());
            }
        }
        let one_statement = self.backend == super::Backend::Postgres;
        let result = write_updates_on(&mut conn, updates, one_statement).await;
        if result.is_err() && self.backend == super::Backend::Sqlite {
            // A failed write may leave SQLite's transaction open on the connection.
            conn.close_on_drop();
            return result;
        }
        if relaxed {
            // Back to FULL whatever happened: the next commit on this connection may be an
            // alert's, whose 200 promises it is on disk. A connection that cannot be set
            // back is closed, never reused.
            if let Err(e) = sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await
            {
                conn.close_on_drop();
                return Err(e.into());
            }
        }
        result
    }
}

/// The status changes of [`Store::write_run_updates`] on `conn`: one
/// `UPDATE … FROM (VALUES …) RETURNING id` per kind and 100 runs, not one statement per
/// run (on PostgreSQL each statement is a round trip; runs finishing together used to wait
/// for one another's). A change applies only while its owner still owns the run at that
/// attempt and the run is still where the change expects it (`queued` to start, `queued` or
/// `running` to end): false for it otherwise — another replica took the run over.
///
/// `one_statement` (PostgreSQL): when every change fits one statement per kind, both kinds
/// go in one statement, outside a transaction. A run never has both of its changes in one
/// batch (its start is durable before its script runs), so the two `UPDATE`s, which see the
/// same snapshot, never touch the same row.
async fn write_updates_on(
    conn: &mut sqlx::AnyConnection,
    updates: &[RunUpdate],
    one_statement: bool,
) -> Result<Vec<bool>, StoreError> {
    use sqlx::Connection;
    let running: Vec<&RunUpdate> = updates
        .iter()
        .filter(|u| matches!(u, RunUpdate::Running { .. }))
        .collect();
    let finished: Vec<&RunRecord> = updates
        .iter()
        .filter_map(|u| match u {
            RunUpdate::Finished(run) => Some(&**run),
            RunUpdate::Running { .. } => None,
        })
        .collect();
    let mut applied_ids = std::collections::HashSet::new();
    if one_statement
        && running.len() <= UPDATES_PER_STATEMENT
        && finished.len() <= UPDATES_PER_STATEMENT
    {
        let sql = match (running.is_empty(), finished.is_empty()) {
            (true, true) => return Ok(Vec::new()),
            (false, true) => running_sql(running.len(), 1),
            (true, false) => finished_sql(finished.len(), 1),
            (false, false) => format!(
                "WITH started AS ({}), ended AS ({}) \
                 SELECT id FROM started UNION ALL SELECT id FROM ended",
                running_sql(running.len(), 1),
                finished_sql(finished.len(), 1 + running.len() * RUNNING_CASTS.len())
            ),
        };
        let q = bind_finished(bind_running(sqlx::query(&sql), &running), &finished);
        for row in q.fetch_all(&mut *conn).await? {
            applied_ids.insert(row.try_get::<String, _>(0)?);
        }
    } else {
        let mut tx = conn.begin().await?;
        for chunk in running.chunks(UPDATES_PER_STATEMENT) {
            let sql = running_sql(chunk.len(), 1);
            for row in bind_running(sqlx::query(&sql), chunk)
                .fetch_all(&mut *tx)
                .await?
            {
                applied_ids.insert(row.try_get::<String, _>(0)?);
            }
        }
        for chunk in finished.chunks(UPDATES_PER_STATEMENT) {
            let sql = finished_sql(chunk.len(), 1);
            for row in bind_finished(sqlx::query(&sql), chunk)
                .fetch_all(&mut *tx)
                .await?
            {
                applied_ids.insert(row.try_get::<String, _>(0)?);
            }
        }
        tx.commit().await?;
    }
    Ok(updates
        .iter()
        .map(|u| applied_ids.contains(u.run_id()))
        .collect())
}

/// Starts `n` queued runs; placeholders from `$first`.
fn running_sql(n: usize, first: usize) -> String {
    format!(
        "WITH v (id, owner, attempt, replica, started_at, version) AS ({}) \
         UPDATE runs SET status = 'running', started_at = v.started_at, version = v.version, \
         replica = v.replica FROM v \
         WHERE runs.id = v.id AND runs.owner = v.owner AND runs.attempt = v.attempt \
         AND runs.status = 'queued' RETURNING runs.id",
        typed_values(n, &RUNNING_CASTS, first)
    )
}

fn bind_running<'q>(mut q: super::AnyQuery<'q>, updates: &[&'q RunUpdate]) -> super::AnyQuery<'q> {
    for u in updates {
        if let RunUpdate::Running {
            id,
            owner,
            attempt,
            replica,
            started_at,
            version,
        } = u
        {
            q = q
                .bind(id.as_str())
                .bind(owner.as_str())
                .bind(*attempt)
                .bind(replica.as_str())
                .bind(*started_at)
                .bind(version.as_str());
        }
    }
    q
}

/// Ends `n` runs with their outcome; placeholders from `$first`.
fn finished_sql(n: usize, first: usize) -> String {
    format!(
        "WITH v (id, owner, attempt, status, started_at, finished_at, logs, actions, result, error, attempts, recording) \
         AS ({}) \
         UPDATE runs SET status = v.status, started_at = v.started_at, finished_at = v.finished_at, \
         logs = v.logs, actions = v.actions, result = v.result, error = v.error, attempts = v.attempts, \
         recording = v.recording \
         FROM v WHERE runs.id = v.id AND runs.owner = v.owner AND runs.attempt = v.attempt \
         AND runs.status IN ('queued', 'running') RETURNING runs.id",
        typed_values(n, &FINISHED_CASTS, first)
    )
}

fn bind_finished<'q>(mut q: super::AnyQuery<'q>, runs: &[&'q RunRecord]) -> super::AnyQuery<'q> {
    for run in runs {
        q = q
            .bind(run.id.as_str())
            .bind(run.owner.as_deref().unwrap_or(""))
            .bind(run.attempt)
            .bind(run.status.as_str())
            .bind(run.started_at)
            .bind(run.finished_at)
            .bind(to_json(&run.logs))
            .bind(to_json(&run.actions))
            .bind(run.result.as_ref().map(to_json))
            .bind(run.error.as_ref().map(to_json))
            .bind(to_json(&run.attempts))
            .bind(run.recording.as_ref().map(to_json));
    }
    q
}

/// `VALUES ($first, …), (…)` for `rows` rows of `casts.len()` columns; a non-empty cast
/// types that column in every row (`CAST($n AS BIGINT)`), so that both stores compare and
/// assign it as the column's type, NULLs included.
fn typed_values(rows: usize, casts: &[&str], first: usize) -> String {
    let cols = casts.len();
    let mut sql = String::from("VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for (c, cast) in casts.iter().enumerate() {
            if c > 0 {
                sql.push(',');
            }
            let n = first + r * cols + c;
            if cast.is_empty() {
                sql.push_str(&format!("${n}"));
            } else {
                sql.push_str(&format!("CAST(${n} AS {cast})"));
            }
        }
        sql.push(')');
    }
    sql
}
