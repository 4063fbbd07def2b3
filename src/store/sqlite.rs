//! What SQLite needs beyond sqlx's defaults: one writer and a few readers, WAL with
//! checkpoints from a task of runbookd's own, and the file a `sqlite://` URL names.

use std::time::Duration;

use sqlx::{any::AnyPoolOptions, AnyPool, Executor};

/// SQLite's automatic checkpoint runs inside whichever commit crosses the WAL threshold and
/// copies the WAL into the database file with an fsync: a few milliseconds on the path of
/// an alert's answer. runbookd turns it off on every connection and checkpoints from this
/// task instead, once a second, PASSIVE (it never waits for writers). What is in the WAL is
/// already durable (with `synchronous=FULL` each commit's WAL frames are fsynced): a crash
/// between checkpoints loses nothing.
///
/// A WAL that did not change since the last checkpoint (same length and modification time)
/// is not checkpointed again: an idle daemon makes no query a second for nothing.
pub(super) fn spawn_checkpointer(pool: AnyPool, wal: Option<std::path::PathBuf>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpointed = None;
        loop {
            tick.tick().await;
            if pool.is_closed() {
                return;
            }
            let seen = wal
                .as_ref()
                .and_then(|w| std::fs::metadata(w).ok())
                .map(|m| (m.len(), m.modified().ok()));
            if seen.is_some() && seen == checkpointed {
                continue;
            }
            checkpointed = seen;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "SQLite checkpoint failed; retrying in 1 s");
                checkpointed = None;
            }
        }
    });
}

/// The file behind a `sqlite:` URL; None for in-memory databases.
pub(super) fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(
        path.strip_prefix("file:").unwrap_or(path),
    ))
}

/// Whether the SQLite writer connection may be handed out: not left inside a transaction.
///
/// A commit that fails — the disk is full — can leave SQLite's transaction open on the
/// connection while sqlx believes it closed, and every later "transaction" would then be a
/// savepoint inside it: answered, visible, and never durable (alerts answered 200 and lost
/// at the next restart). Setting `synchronous` is refused inside a transaction, so it is
/// the test — and it re-asserts the durability every alert's 200 promises. A connection
/// that fails it is closed (which rolls its transaction back) and a fresh one opened.
pub(super) async fn writer_is_clean(
    conn: &mut sqlx::AnyConnection,
    sync: crate::config::SqliteSynchronous,
    memory: bool,
) -> bool {
    if memory {
        return true;
    }
    let pragma = match sync {
        crate::config::SqliteSynchronous::Full => "PRAGMA synchronous = FULL",
        crate::config::SqliteSynchronous::Normal => "PRAGMA synchronous = NORMAL",
    };
    match conn.execute(pragma).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "the SQLite writer connection was left inside a failed transaction; closing it and opening a fresh one");
            false
        }
    }
}

pub(super) fn sqlite_pool(
    size: u32,
    sync: crate::config::SqliteSynchronous,
    memory: bool,
) -> AnyPoolOptions {
    let pragmas = match sync {
        // An in-memory database (simulations) has no journal to switch, and asking for one
        // takes a schema lock: a reader connecting while a write is under way would fail.
        _ if memory => "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
        crate::config::SqliteSynchronous::Full => {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;"
        }
        crate::config::SqliteSynchronous::Normal => {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;"
        }
    };
    AnyPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(pragmas).await?;
                Ok(())
            })
        })
}
