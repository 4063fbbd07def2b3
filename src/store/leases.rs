//! Replica leases and the recovery of runs whose owner is gone.
//!
//! Every daemon process registers a lease (its own id, the replica's name) and renews it
//! while it lives. It owns the runs it claimed, and every status change of a run is
//! conditional on that ownership (see `runs.rs`). A replica recovers only runs whose owner's
//! lease expired — or, on SQLite, which one process at a time holds, any other owner's — so
//! a starting replica never touches live work of another one:
//! - a queued run of a dead owner is released (owner cleared) for any replica to claim;
//! - a running one is started again as a new attempt, up to `retries` times (primitives are
//!   idempotent by contract); after that it ends `failed` (reason `interrupted`), with a
//!   timeline line and the incident fact `run_interrupted = true`.

use std::time::Duration;

use sqlx::{Any, Row, Transaction};

use super::{
    incidents::{add_timeline_on, set_fact_on},
    ms_to_rfc3339,
    runs::{from_json, to_json, Attempt},
    RunError, Store, StoreError,
};

/// One daemon process's claim on its runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique per process (and renewed after a lost lease): what `runs.owner` holds.
    pub id: String,
    /// The replica's name (`[server] replica_id`), shown on runs and in logs.
    pub name: String,
}

impl Lease {
    /// A fresh lease for replica `name`.
    pub fn new(name: &str) -> Lease {
        Lease {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_string(),
        }
    }
}

/// How long this process may still act under its lease, by its own monotonic clock.
///
/// Set from the instant a registration or renewal was *sent* (the store's lease runs from
/// a later moment, so this end always comes first) plus the lease's ttl, less a safety
/// margin of a fifth of it. A process frozen past its lease (SIGSTOP, a GC-like pause, a VM
/// migration) finds its fence lapsed the moment it resumes, before its lease keeper runs:
/// primitives refuse to act and the attempt ends as interrupted, so the replica that took
/// the run over is the only one that acts. The monotonic clock keeps counting while a
/// process is stopped and is untouched by wall-clock steps.
#[derive(Debug)]
pub struct Fence {
    base: std::time::Instant,
    /// Microseconds after `base` at which acting stops; 0: revoked.
    deadline_us: std::sync::atomic::AtomicU64,
}

impl Fence {
    /// A fence for a lease whose registration was sent at `sent`.
    pub fn new(sent: std::time::Instant, ttl: Duration) -> std::sync::Arc<Fence> {
        let fence = Fence {
            base: sent,
            deadline_us: std::sync::atomic::AtomicU64::new(0),
        };
        fence.extend(sent, ttl);
        std::sync::Arc::new(fence)
    }

    /// A renewal sent at `sent` succeeded: acting may go on until `sent + ttl − margin`.
    pub fn extend(&self, sent: std::time::Instant, ttl: Duration) {
        let until = sent.saturating_duration_since(self.base) + ttl.saturating_sub(ttl / 5);
        let us = u64::try_from(until.as_micros()).unwrap_or(u64::MAX).max(1);
        self.deadline_us
            .fetch_max(us, std::sync::atomic::Ordering::AcqRel);
    }

    /// The lease is gone: nothing acts under it any more.
    pub fn revoke(&self) {
        self.deadline_us
            .store(0, std::sync::atomic::Ordering::Release);
    }

    /// The lease may have lapsed: refuse to act.
    pub fn lapsed(&self) -> bool {
        self.lapsed_at(std::time::Instant::now())
    }

    /// [`Fence::lapsed`] at `now` (the engine's progress check reads the clock once).
    pub fn lapsed_at(&self, now: std::time::Instant) -> bool {
        let deadline = self.deadline_us.load(std::sync::atomic::Ordering::Acquire);
        let at = now.saturating_duration_since(self.base).as_micros();
        u64::try_from(at).unwrap_or(u64::MAX) >= deadline
    }
}

/// What one recovery pass did.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Queued runs of dead owners, given back for any replica to claim.
    pub released: u64,
    /// (run, playbook) of running runs started again as a new attempt.
    pub retried: Vec<(String, String)>,
    /// (run, playbook) of runs that used up their attempts: now failed, `interrupted`.
    pub interrupted: Vec<(String, String)>,
    /// Leases found dead and removed.
    pub dead_leases: u64,
    /// Delivery claims of dead replicas given back (their notifications are due again).
    pub notifications_released: u64,
}

/// What ended an attempt that did not finish.
#[derive(Debug, Clone, Copy)]
pub enum Interruption {
    /// Its replica died (crash, kill -9, power loss, lost lease).
    ReplicaDied,
    /// Its replica stopped (SIGTERM) and the run outlived the shutdown grace period.
    Shutdown,
}

/// A run caught mid-attempt, as read for recovery.
struct Unfinished {
    id: String,
    playbook: String,
    status: String,
    owner: Option<String>,
    replica: Option<String>,
    attempt: i64,
    attempts: Vec<Attempt>,
    started_at: Option<i64>,
    incident: Option<String>,
}

const UNFINISHED_COLUMNS: &str =
    "id, playbook, status, owner, replica, attempt, attempts, started_at, incident_id";

fn unfinished_from_row(r: &sqlx::any::AnyRow) -> Result<Unfinished, StoreError> {
    Ok(Unfinished {
        id: r.try_get("id")?,
        playbook: r.try_get("playbook")?,
        status: r.try_get("status")?,
        owner: r.try_get("owner")?,
        replica: r.try_get("replica")?,
        attempt: r.try_get("attempt")?,
        attempts: from_json("attempts", &r.try_get::<String, _>("attempts")?)?,
        started_at: r.try_get("started_at")?,
        incident: r.try_get("incident_id")?,
    })
}

impl Store {
    /// Registers `lease`, valid for `ttl`. On a SQLite file this process also holds the
    /// lease's lock file while it lives: the kernel frees it when the process dies, so a
    /// restart after `kill -9` knows at once that the old process's runs are orphaned.
    pub async fn register_lease(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        if let Some(dir) = &self.lease_dir {
            let lock = || -> std::io::Result<std::fs::File> {
                std::fs::create_dir_all(dir)?;
                let file = std::fs::File::create(dir.join(&lease.id))?;
                file.try_lock().map_err(std::io::Error::other)?;
                Ok(file)
            };
            let file = lock().map_err(|e| StoreError::Lease(format!("{}: {e}", dir.display())))?;
            self.lease_locks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(file);
        }
        let now = self.lease_now().await?;
        sqlx::query(
            "INSERT INTO replicas (id, name, started_at, renewed_at, expires_at) VALUES ($1, $2, $3, $3, $4)",
        )
        .bind(&lease.id)
        .bind(&lease.name)
        .bind(now)
        .bind(now + ttl.as_millis() as i64)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Now by the clock leases are kept on. On PostgreSQL that is the server's: replicas on
    /// several machines agree on when a lease expires whatever their own clocks say (a
    /// replica 20 s behind would otherwise write leases that look expired to the others,
    /// one 20 s ahead would see every other lease expired). SQLite is one machine.
    pub async fn lease_now(&self) -> Result<i64, StoreError> {
        match self.backend {
            super::Backend::Postgres => Ok(sqlx::query_scalar::<_, i64>(
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            )
            .fetch_one(&self.writer)
            .await?),
            super::Backend::Sqlite => Ok(super::now_ms()),
        }
    }

    /// Renews `lease` for another `ttl`; returns the store's time of the renewal. None: the
    /// lease is gone — another replica found it expired and took its runs over; the caller
    /// must stop acting on them.
    pub async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let result = self.renew_lease_once(lease, ttl).await;
        self.observe_write(&result);
        result
    }

    async fn renew_lease_once(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let now = self.lease_now().await?;
        let done = sqlx::query(
            "UPDATE replicas SET renewed_at = $1, expires_at = $2 WHERE id = $3 AND expires_at >= $1",
        )
        .bind(now)
        .bind(now + ttl.as_millis() as i64)
        .bind(&lease.id)
        .execute(&self.writer)
        .await?;
        Ok((done.rows_affected() == 1).then_some(now))
    }

    /// Leases (other than `me`) whose process is gone: on SQLite, those whose lock file no
    /// process holds. PostgreSQL replicas may live on other machines: only expiry counts.
    async fn dead_by_lock(&self, me: &Lease) -> Result<Vec<String>, StoreError> {
        let Some(dir) = &self.lease_dir else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query("SELECT id FROM replicas WHERE id <> $1 AND expires_at >= $2")
            .bind(&me.id)
            .bind(self.lease_now().await?)
            .fetch_all(&self.writer)
            .await?;
        let mut dead = Vec::new();
        for r in &rows {
            let id: String = r.try_get(0)?;
            let path = dir.join(&id);
            let free = match std::fs::File::open(&path) {
                Ok(f) => f.try_lock().is_ok(),
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            };
            if free {
                let _ = std::fs::remove_file(&path);
                dead.push(id);
            }
        }
        Ok(dead)
    }

    /// Ends `lease` at a clean stop (after its queued runs were released).
    pub async fn retire_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        if let Some(dir) = &self.lease_dir {
            let _ = std::fs::remove_file(dir.join(&lease.id));
        }
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(&lease.id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Replicas holding a live lease: (name, lease id, expires_at ms).
    pub async fn live_leases(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, id, expires_at FROM replicas WHERE expires_at >= $1 ORDER BY name, id",
        )
        .bind(self.lease_now().await?)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Takes over the runs of every owner other than `me` whose lease expired — or, on
    /// SQLite, whose process is gone (its lease lock file is free). Safe to run on every
    /// replica at once: each change is a compare-and-set on the run's owner, status and
    /// attempt, so one replica wins each run.
    pub async fn recover_runs(&self, me: &Lease, retries: u32) -> Result<Recovered, StoreError> {
        let now = self.lease_now().await?;
        for id in self.dead_by_lock(me).await? {
            sqlx::query("UPDATE replicas SET expires_at = 0 WHERE id = $1")
                .bind(&id)
                .execute(&self.writer)
                .await?;
        }
        let dead_owner =
            "owner <> $1 AND owner NOT IN (SELECT id FROM replicas WHERE expires_at >= $2)";
        // A running run without an owner was left by a version before leases.
        let rows = sqlx::query(&format!(
            "SELECT {UNFINISHED_COLUMNS} FROM runs WHERE status IN ('queued', 'running') \
             AND (({dead_owner}) OR (owner IS NULL AND status = 'running')) ORDER BY queued_at, id"
        ))
        .bind(&me.id)
        .bind(now)
        .fetch_all(&self.writer)
        .await?;
        let mut out = Recovered::default();
        for row in &rows {
            let run = unfinished_from_row(row)?;
            if run.status == "queued" {
                let done = sqlx::query(
                    "UPDATE runs SET owner = NULL WHERE id = $1 AND owner = $2 AND status = 'queued'",
                )
                .bind(&run.id)
                .bind(run.owner.as_deref().unwrap_or(""))
                .execute(&self.writer)
                .await?;
                out.released += done.rows_affected();
                continue;
            }
            let mut tx = self.writer.begin().await?;
            match interrupt_in(
                &mut tx,
                self.backend,
                &run,
                retries,
                Interruption::ReplicaDied,
                now,
            )
            .await?
            {
                Some(true) => out.retried.push((run.id.clone(), run.playbook.clone())),
                Some(false) => out.interrupted.push((run.id.clone(), run.playbook.clone())),
                None => {}
            }
            tx.commit().await?;
        }
        out.notifications_released = self.release_dead_claims(&me.id, now).await?;
        let gone = sqlx::query("DELETE FROM replicas WHERE id <> $1 AND expires_at < $2")
            .bind(&me.id)
            .bind(now)
            .execute(&self.writer)
            .await?;
        out.dead_leases = gone.rows_affected();
        Ok(out)
    }

    /// Ends this owner's attempt at run `id` without an outcome (it outlived the shutdown
    /// grace period): started again later as a new attempt while `retries` allow, else
    /// failed as `interrupted`. Some(true): requeued; Some(false): given up; None: the run
    /// was not ours any more.
    pub async fn interrupt_own_run(
        &self,
        id: &str,
        owner: &str,
        retries: u32,
    ) -> Result<Option<bool>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {UNFINISHED_COLUMNS} FROM runs WHERE id = $1 AND owner = $2 AND status = 'running'"
        ))
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let run = unfinished_from_row(&row)?;
        let out = interrupt_in(
            &mut tx,
            self.backend,
            &run,
            retries,
            Interruption::Shutdown,
            super::now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// Requeues `run` as its next attempt, or gives up on it — a compare-and-set on what was
/// read, so of two replicas recovering the same run one wins. See [`Store::interrupt_own_run`].
async fn interrupt_in(
    tx: &mut Transaction<'static, Any>,
    backend: super::Backend,
    run: &Unfinished,
    retries: u32,
    why: Interruption,
    now: i64,
) -> Result<Option<bool>, StoreError> {
    let mut attempts = run.attempts.clone();
    attempts.push(Attempt {
        attempt: run.attempt,
        replica: run.replica.clone(),
        started_at: run.started_at.map(ms_to_rfc3339),
        ended_at: Some(ms_to_rfc3339(now)),
        outcome: "interrupted".into(),
    });
    let owner_is = "COALESCE(owner, '') = $4";
    let retry = run.attempt <= i64::from(retries);
    let replica = run.replica.as_deref().unwrap_or("an unknown replica");
    let cause = match why {
        Interruption::ReplicaDied => {
            format!("replica {replica} died while attempt {} ran", run.attempt)
        }
        Interruption::Shutdown => format!(
            "replica {replica} shut down and attempt {} outlived the grace period",
            run.attempt
        ),
    };
    let done = if retry {
        sqlx::query(&format!(
            "UPDATE runs SET status = 'queued', owner = NULL, replica = NULL, started_at = NULL, \
             attempt = attempt + 1, attempts = $1 \
             WHERE id = $2 AND attempt = $3 AND {owner_is} AND status = 'running'"
        ))
        .bind(to_json(&attempts))
        .bind(&run.id)
        .bind(run.attempt)
        .bind(run.owner.as_deref().unwrap_or(""))
        .execute(&mut **tx)
        .await?
    } else {
        let error = RunError {
            message: format!(
                "{cause}; its effects are unknown and it was not retried again ({} attempt(s), \
                 [playbooks] retry_interrupted = {retries})",
                run.attempt
            ),
            reason: crate::store::RunErrorReason::Interrupted,
            line: None,
            column: None,
        };
        sqlx::query(&format!(
            "UPDATE runs SET status = 'failed', finished_at = $5, error = $6, attempts = $1 \
             WHERE id = $2 AND attempt = $3 AND {owner_is} AND status = 'running'"
        ))
        .bind(to_json(&attempts))
        .bind(&run.id)
        .bind(run.attempt)
        .bind(run.owner.as_deref().unwrap_or(""))
        .bind(now)
        .bind(to_json(&error))
        .execute(&mut **tx)
        .await?
    };
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    if let Some(incident) = &run.incident {
        let message = if retry {
            format!(
                "run {} of {} interrupted ({cause}); starting attempt {}",
                run.id,
                run.playbook,
                run.attempt + 1
            )
        } else {
            set_fact_on(
                &mut **tx,
                backend,
                now,
                incident,
                "run_interrupted",
                &serde_json::Value::Bool(true),
            )
            .await?;
            format!(
                "run {} of {} interrupted ({cause}); not retried again",
                run.id, run.playbook
            )
        };
        add_timeline_on(
            &mut **tx,
            now,
            incident,
            "run_interrupted",
            "runbookd",
            &message,
            &serde_json::json!({ "run": run.id, "playbook": run.playbook, "attempt": run.attempt, "retried": retry }),
        )
        .await?;
    }
    Ok(Some(retry))
}
