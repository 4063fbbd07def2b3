//! The state store: runs and audit entries, on SQLite (embedded default) or PostgreSQL.
//!
//! Both engines go through sqlx's `Any` driver with one portable schema (text ids, integer
//! milliseconds, JSON text), so every query is written once and the same tests run on both.
//! SQLite gets one writer connection (WAL, `synchronous=FULL`: a commit is on disk, so an
//! answered alert survives power loss) and a few readers, which is what SQLite wants;
//! PostgreSQL shares one pool for both.

mod alerts;
mod approvals;
mod audit;
mod batch;
mod budgets;
mod cron;
mod escalation;
pub mod group_commit;
mod incidents;
mod json_rows;
mod leases;
mod migrate;
mod outbox;
mod recording;
mod resolution;
pub mod retention;
mod run_updates;
mod runs;
mod sessions;
mod sqlite;
pub mod status_writer;

use migrate::migrator;
use sqlite::{spawn_checkpointer, sqlite_file, sqlite_pool, writer_is_clean};

use std::time::Duration;

use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    AnyPool, Executor,
};

pub use alerts::AlertRecord;
pub use approvals::{
    request_hash, Approval, ApprovalStatus, Asked, DecideError, Decided, Decision, NewApproval,
};
pub use audit::{AuditEntry, NewAudit};
pub use batch::Batch;
pub use budgets::BudgetCheck;
pub use escalation::Fire;
pub use incidents::{Incident, IncidentStatus, TimelineEntry};
pub use leases::{Fence, Interruption, Lease, Recovered};
pub use outbox::OutboxItem;
pub use recording::{Cut, Read, Recording};
pub use run_updates::RunUpdate;
pub use runs::{Attempt, LogLine, RunError, RunErrorReason, RunFilter, RunRecord, RunStatus};
pub use sessions::Session;

/// Errors from the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("state store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state store lease lock: {0}")]
    Lease(String),
    #[error("state store holds a malformed value in {column}: {message}")]
    Corrupt {
        column: &'static str,
        message: String,
    },
}

impl StoreError {
    /// PostgreSQL gave up waiting for a lock (`lock_timeout`, SQLSTATE 55P03): another
    /// transaction held it too long.
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03"))
    }
}

/// Set on every PostgreSQL session of the daemon when it connects. runbookd's transactions
/// never wait on anything but the server between their statements (no network call, no
/// script), so one idle inside a transaction for 10 s belongs to a replica that is frozen
/// or cut off in its middle: the server ends it, and the advisory locks it holds (incident
/// keys, budgets) come free for the other replicas — whose lock waits are bounded at 5 s,
/// so their alerts are refused until then, not forever. A frozen replica's lease (15 s by
/// default) runs out after that; when it wakes, its connection is gone and its batch was
/// rolled back whole: its notifications are recorded again one by one on fresh connections
/// (meeting what the others recorded meanwhile: nothing starts twice), or, alone in the
/// batch, answered 503 for the sender to resend.
const PG_SESSION_SETTINGS: &str = "SET idle_in_transaction_session_timeout = '10s'";

/// Which engine the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the state store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    writer: AnyPool,
    reader: AnyPool,
    backend: Backend,
    /// Stamps timeline entries, fires, notifications and audit entries (virtual in
    /// simulations, so their timelines read in simulated time).
    clock: crate::clock::Clock,
    /// SQLite file stores: where each process keeps the lock file of its lease.
    lease_dir: Option<std::path::PathBuf>,
    /// SQLite with `synchronous=FULL` (run status changes relax it per transaction).
    sqlite_full_sync: bool,
    /// The lease lock files this process holds (released when it exits, however it exits).
    lease_locks: std::sync::Arc<std::sync::Mutex<Vec<std::fs::File>>>,
    /// Bumped after every commit that queued a notification, so delivery wakes on enqueue
    /// instead of polling the outbox.
    outbox_changed: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Why the last write that counts (an alert batch, run status changes, the lease's
    /// renewal) failed, until one succeeds again: `/readyz` says so (a full disk, a server
    /// refusing writes).
    write_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Store {
    /// Connects, creating the SQLite file if missing, and applies migrations. SQLite commits
    /// are synced to disk (`synchronous=FULL`).
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Self::connect_with(
            database_url,
            max_connections,
            crate::config::SqliteSynchronous::Full,
        )
        .await
    }

    /// [`Store::connect`] with SQLite's `synchronous` setting chosen.
    pub async fn connect_with(
        database_url: &str,
        max_connections: u32,
        sync: crate::config::SqliteSynchronous,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if database_url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let store = match backend {
            Backend::Sqlite => {
                let url = if database_url.contains("mode=") || database_url.contains(":memory:") {
                    database_url.to_string()
                } else if database_url.contains('?') {
                    format!("{database_url}&mode=rwc")
                } else {
                    format!("{database_url}?mode=rwc")
                };
                let opts: AnyConnectOptions = url.parse()?;
                let memory = url.contains("mode=memory") || url.contains(":memory:");
                let writer = sqlite_pool(1, sync, memory)
                    .before_acquire(move |conn, _meta| {
                        Box::pin(async move { Ok(writer_is_clean(conn, sync, memory).await) })
                    })
                    .connect_with(opts.clone())
                    .await?;
                // The writer creates the file and switches it to WAL before readers open it.
                let reader = sqlite_pool(4, sync, memory).connect_with(opts).await?;
                let wal = sqlite_file(database_url)
                    .map(|f| std::path::PathBuf::from(format!("{}-wal", f.display())));
                spawn_checkpointer(reader.clone(), wal);
                Store {
                    writer,
                    reader,
                    backend,
                    clock: Default::default(),
                    lease_dir: sqlite_file(database_url)
                        .map(|f| std::path::PathBuf::from(format!("{}-leases", f.display()))),
                    lease_locks: Default::default(),
                    sqlite_full_sync: sync == crate::config::SqliteSynchronous::Full,
                    outbox_changed: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
                    write_error: Default::default(),
                }
            }
            Backend::Postgres => {
                // sqlx pings each connection before handing it out (`test_before_acquire`, its
                // default). Skipping the ping for connections back in the pool moments ago was
                // tried in session 13 and undone: a connection the server dropped meanwhile
                // (failover, `pg_terminate_backend`) then failed an alert with a 500
                // (`alerts::alerts_are_accepted_after_the_server_drops_the_daemons_connections`).
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(5))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute(PG_SESSION_SETTINGS).await?;
                            Ok(())
                        })
                    })
                    .connect(database_url)
                    .await?;
                Store {
                    writer: pool.clone(),
                    reader: pool,
                    backend,
                    clock: Default::default(),
                    lease_dir: None,
                    lease_locks: Default::default(),
                    sqlite_full_sync: false,
                    outbox_changed: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
                    write_error: Default::default(),
                }
            }
        };
        migrator(store.backend).run(&store.writer).await?;
        Ok(store)
    }

    /// The same store, stamping times from `clock`.
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Store {
        self.clock = clock;
        self
    }

    /// Now, by the store's clock (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Remembers whether a write went through: a failure is shown by `/readyz` until the
    /// next write succeeds.
    pub(crate) fn observe_write<T>(&self, result: &Result<T, StoreError>) {
        let mut last = self.write_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => *last = None,
            Err(e) => *last = Some(e.to_string()),
        }
    }

    /// Why writes fail now (the last one failed), if they do.
    pub fn write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Which engine this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Readiness probe: the store answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    /// Closes every connection (SQLite checkpoints its WAL on close).
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// `INSERT INTO … VALUES ($1,…,$cols),($cols+1,…),…` for `rows` rows: one statement (one
/// round trip) for many rows, with placeholders both engines read. (PostgreSQL's ingest
/// batch takes its rows as JSON instead: `json_rows.rs`.)
fn insert_values(head: &str, cols: usize, rows: usize) -> String {
    let mut sql = String::from(head);
    sql.push_str(" VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 1..=cols {
            if c > 1 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", r * cols + c));
        }
        sql.push(')');
    }
    sql
}

/// A statement being built with its bound values.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Rows per multi-row insert (keeps placeholders well under SQLite's limit).
const ROWS_PER_INSERT: usize = 100;

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Formats store milliseconds as RFC 3339 for API answers.
/// Serialises unix ms as RFC 3339 (how the API shows times).
pub(super) fn ser_ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ms_to_rfc3339(*ms))
}

/// [`ser_ms`] for optional times.
pub(super) fn ser_ms_opt<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&ms_to_rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

pub fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_urls_name_their_file() {
        use std::path::PathBuf;
        assert_eq!(
            super::sqlite::sqlite_file("sqlite://runbookd.db"),
            Some(PathBuf::from("runbookd.db"))
        );
        assert_eq!(
            super::sqlite::sqlite_file("sqlite:///var/lib/r.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/r.db"))
        );
        assert_eq!(super::sqlite::sqlite_file("sqlite::memory:"), None);
        assert_eq!(
            super::sqlite::sqlite_file("sqlite:file:x?mode=memory&cache=shared"),
            None
        );
    }

    #[test]
    fn multi_row_inserts_number_placeholders_row_by_row() {
        assert_eq!(
            super::insert_values("INSERT INTO t (a, b)", 2, 3),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4),($5,$6)"
        );
    }
}
