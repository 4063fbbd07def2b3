//! One run's life on this replica: admitted into a free slot (recorded `running` in the
//! commit that records it) or the queue, take the incident's turn, mark it running if it
//! was queued (only if this process still owns it), execute the script on a blocking
//! thread, record the outcome — or, when the attempt was cut off, hand the run to the retry
//! path.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{DispatchError, Inner, Job};
use crate::{
    engine::{runner, Playbook},
    store::{Lease, RunError, RunErrorReason, RunRecord, RunStatus, RunUpdate},
};

/// Where an accepted run goes once its record is durable.
pub(super) enum Admission {
    /// A slot was free and no run waited for one: the run is recorded `running` — this
    /// attempt, this replica, under this lease — by the commit that records it, and starts
    /// as soon as that commit returns. One durable write before its first action instead
    /// of two; a crash after that commit leaves a `running` run of a dead lease, which is
    /// retried as a new attempt like any run cut off mid-way (docs/operations.md).
    Started(Slot),
    /// Its place in the bounded queue: recorded `queued`, marked `running` when a slot
    /// frees.
    Queued(mpsc::OwnedPermit<Job>),
}

/// Admits `record` (owned by this process's lease) before it is recorded: into a free slot
/// when `start_now` allows it and one is free — `record` is then `running` — else into the
/// queue. A full queue is a refusal before anything is recorded.
pub(super) fn admit(
    inner: &Arc<Inner>,
    record: &mut RunRecord,
    start_now: bool,
) -> Result<Admission, DispatchError> {
    if let Some(slot) = start_now.then(|| Slot::free(inner)).flatten() {
        record.status = RunStatus::Running;
        record.started_at = Some(record.queued_at);
        record.replica = Some(inner.replica.name.clone());
        return Ok(Admission::Started(slot));
    }
    let permit = inner.queue.clone().try_reserve_owned().map_err(|_| {
        inner.metrics.run_rejected("queue_full");
        DispatchError::QueueFull(inner.limits.queue_capacity)
    })?;
    Ok(Admission::Queued(permit))
}

/// Hands an admitted run on once its record is durable: started now, or queued.
pub(super) fn hand_on(inner: &Arc<Inner>, admission: Admission, job: Job) {
    match admission {
        Admission::Started(slot) => {
            inner.runs.spawn(run_job(inner.clone(), job, slot));
        }
        Admission::Queued(permit) => {
            inner.metrics.queued().inc();
            permit.send(job);
        }
    }
}

/// One of `max_concurrent_runs`, held by a run while it may act. Given back, it wakes the
/// claimer when unowned runs wait in the store.
pub(super) struct Slot {
    pub(super) permit: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(super) inner: Arc<Inner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Free first, so the woken claimer counts this slot.
        drop(self.permit.take());
        if self.inner.backlog.load(Ordering::Acquire) {
            self.inner.claim_wake.notify_one();
        }
    }
}

impl Slot {
    /// A slot for a run admitted now, if one is free and no run waits for one (those go
    /// first), on a dispatcher whose loop starts runs (a simulation starts its own).
    pub(super) fn free(inner: &Arc<Inner>) -> Option<Slot> {
        let waiting = inner.queue.max_capacity() - inner.queue.capacity()
            + inner.claimed_waiting.load(Ordering::Acquire);
        if inner.stepped || waiting > 0 {
            return None;
        }
        let permit = inner.slots.clone().try_acquire_owned().ok()?;
        Some(Slot {
            permit: Some(permit),
            inner: inner.clone(),
        })
    }
}

/// Runs one job to its end. Returns the final record when this process recorded it (a
/// simulation collects them); `None` when the run was not this process's to run or
/// finish, or went the retry path.
///
/// `slot` is the run's share of `max_concurrent_runs`. It bounds what runs *act* at once — scripts
/// calling Stripe, Redis, the payments database — so it is given back as soon as the script
/// has ended, not after its outcome is durable: holding it through the outcome commit kept
/// each slot idle for a commit's wait without protecting anything (giving it back earlier
/// raised the shipped end-to-end alert rate by a third, docs/performance.md). The incident's turn is still held
/// until the outcome is recorded, so the next run of this playbook for this incident reads
/// it.
pub(super) async fn run_job(inner: Arc<Inner>, job: Job, slot: Slot) -> Option<RunRecord> {
    let Job {
        mut record,
        playbook,
        waiter,
    } = job;
    // Runs of one playbook for one incident take turns.
    let _turn = inner
        .turns
        .take(record.event.incident.as_deref(), &record.playbook)
        .await;
    let (lease, lease_runs, fence) = inner.held();
    if !begin(&inner, &mut record, &playbook, &lease).await {
        return None;
    }
    let started = Instant::now();
    // The script sees which attempt this is, so a retried run can look before it acts.
    record.event.attempt = record.attempt;
    inner.metrics.running().inc();
    let outcome = execute(&inner, &record, &playbook, fence, lease_runs).await;
    inner.metrics.running().dec();
    drop(slot);
    if let Ok(o) = &outcome {
        if let Some(reason) = o.error.as_ref().map(|e| &e.reason) {
            if cut_off(&inner, &record, reason) {
                // This attempt has no outcome; the run goes the retry path (a
                // compare-and-set on this lease: a run taken over meanwhile is left alone).
                interrupted(&inner, &record, &lease).await;
                return None;
            }
        }
    }
    conclude(&mut record, outcome);
    record.finished_at = Some(inner.store.now());
    record.close_attempt();
    if !finish(&inner, &record).await {
        return None;
    }
    resolve_after_resolved_alert(&inner, &record).await;
    inner
        .metrics
        .run_finished(&record.playbook, record.status.as_str(), started.elapsed());
    if let Some(w) = waiter {
        let _ = w.send(record.clone());
    }
    Some(record)
}

/// Whether this process may start the run now: it still holds the run's lease, and the run
/// is marked `running` (a queued one now; one admitted into a free slot already was) —
/// unless shutdown began, which leaves it for another replica or the next start.
async fn begin(inner: &Inner, record: &mut RunRecord, playbook: &Playbook, lease: &Lease) -> bool {
    if record.owner.as_deref().unwrap_or_default() != lease.id {
        // Claimed under a lease this process has lost since: another replica has it.
        inner.metrics.run_lost("lease_lost");
        return false;
    }
    if record.status == RunStatus::Queued {
        record.status = RunStatus::Running;
        record.started_at = Some(inner.store.now());
        record.replica = Some(lease.name.clone());
        return mark_running(inner, record, playbook).await;
    }
    if inner.draining.is_cancelled() {
        // Recorded `running` at admission, but shutdown began before it started: like a
        // queued run, it is left for another replica or the next start.
        give_back(inner, record).await;
        return false;
    }
    true
}

/// The script, on a blocking thread, with the run's deadline, limits and fence, and the
/// backends its world has now.
async fn execute(
    inner: &Inner,
    record: &RunRecord,
    playbook: &Arc<Playbook>,
    fence: Arc<crate::store::Fence>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<runner::RunOutcome, tokio::task::JoinError> {
    let engine = inner.catalog.engine().clone();
    let services = inner.services();
    let timeout = inner.limits.timeout;
    let limits = crate::primitives::RecordLimits::of(&inner.limits);
    let run_id = record.id.clone();
    let event = record.event.clone();
    let dry_run = record.dry_run;
    let requested_by = record.trigger.actor.clone();
    let pb = playbook.clone();
    tokio::task::spawn_blocking(move || {
        runner::execute(
            &engine,
            &pb,
            runner::RunSpec {
                run_id: &run_id,
                requested_by: &requested_by,
                event: &event,
                dry_run,
                timeout,
                limits,
                fence: Some(fence),
            },
            services,
            cancel,
        )
    })
    .await
}

/// An attempt cut off from outside — by the shutdown grace period, because the lease was
/// lost, or fenced because it may have lapsed — has no outcome of its own.
fn cut_off(inner: &Inner, record: &RunRecord, reason: &RunErrorReason) -> bool {
    match reason {
        RunErrorReason::LeaseLapsed => {
            tracing::warn!(run = %record.id, playbook = %record.playbook, attempt = record.attempt, "this replica's lease may have lapsed: the attempt stopped before acting (fenced)");
            inner.metrics.run_lost("lease_lapsed");
            inner.lease_wake.notify_one();
            true
        }
        RunErrorReason::Shutdown => true,
        _ => false,
    }
}

/// The script's outcome into the record (a panic of the runner's thread is a failure).
fn conclude(record: &mut RunRecord, outcome: Result<runner::RunOutcome, tokio::task::JoinError>) {
    match outcome {
        Ok(o) => {
            record.status = o.status;
            record.result = o.result;
            record.error = o.error;
            record.logs = o.logs;
            record.actions = o.actions;
            record.recording = o.recording;
        }
        Err(join) => {
            record.status = RunStatus::Failed;
            record.error = Some(RunError {
                message: format!("internal error while running the playbook: {join}"),
                reason: RunErrorReason::Internal,
                line: None,
                column: None,
            });
        }
    }
}

/// Marks the run running (conditional on this process still owning it), retrying while
/// the store is unreachable. False: the run is not to be started here.
async fn mark_running(inner: &Inner, record: &RunRecord, playbook: &Playbook) -> bool {
    let mut delay = Duration::from_millis(50);
    loop {
        let update = RunUpdate::Running {
            id: record.id.clone(),
            owner: record.owner.clone().unwrap_or_default(),
            attempt: record.attempt,
            replica: record.replica.clone().unwrap_or_default(),
            started_at: record.started_at.unwrap_or_default(),
            version: playbook.version.clone(),
        };
        match inner.write_update(update).await {
            Ok(true) => return true,
            Ok(false) => {
                tracing::warn!(run = %record.id, playbook = %record.playbook, "run is no longer this replica's (taken over or released); not starting it");
                inner.metrics.run_lost("taken_over");
                return false;
            }
            Err(e) if inner.draining.is_cancelled() => {
                tracing::error!(run = %record.id, error = %e, "cannot start run while shutting down; it stays queued");
                return false;
            }
            Err(e) => {
                tracing::warn!(run = %record.id, error = %e, "cannot mark run as running; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A run recorded `running` at admission that this process will not start after all
/// (shutting down) goes back to `queued`, owned by nobody, as if it had waited in the
/// queue. Should that fail, it stays `running` under this lease and is retried as a new
/// attempt once the lease is gone.
async fn give_back(inner: &Inner, record: &RunRecord) {
    let owner = record.owner.as_deref().unwrap_or_default();
    match inner
        .store
        .release_unstarted(&record.id, owner, record.attempt)
        .await
    {
        Ok(true) => {
            tracing::info!(run = %record.id, playbook = %record.playbook, "run left queued for another replica or the next start")
        }
        Ok(false) => inner.metrics.run_lost("taken_over"),
        Err(e) => {
            tracing::error!(run = %record.id, error = %e, "cannot give back a run not started; it is retried when this replica's lease expires")
        }
    }
}

/// This process's attempt ended without an outcome: the run is started again later (or,
/// out of attempts, ends `interrupted`).
async fn interrupted(inner: &Inner, record: &RunRecord, lease: &Lease) {
    let retries = inner.limits.retry_interrupted;
    match inner
        .store
        .interrupt_own_run(&record.id, &lease.id, retries)
        .await
    {
        Ok(Some(true)) => {
            tracing::warn!(run = %record.id, playbook = %record.playbook, attempt = record.attempt, "run interrupted; it is started again as a new attempt");
            inner.metrics.run_retried(&record.playbook);
        }
        Ok(Some(false)) => {
            tracing::error!(run = %record.id, playbook = %record.playbook, attempt = record.attempt, "run interrupted and out of attempts: failed, reason interrupted");
            inner.metrics.run_interrupted(&record.playbook);
        }
        Ok(None) => inner.metrics.run_lost("taken_over"),
        Err(e) => {
            tracing::error!(run = %record.id, error = %e, "cannot record the interruption; the run is recovered when this replica's lease expires")
        }
    }
}

/// A run started by a `resolved` alert resolves its incident when it ends (the runbook:
/// reconcile on recovery, then close). Derived from the stored event, so a run resumed after
/// a restart does the same.
async fn resolve_after_resolved_alert(inner: &Inner, record: &RunRecord) {
    let e = &record.event;
    if e.kind != crate::event::EventKind::Alert || e.status != "resolved" {
        return;
    }
    let Some(incident) = e.incident.as_deref() else {
        return;
    };
    let why = format!(
        "alert {} resolved; {} run {} {}",
        e.name,
        record.playbook,
        record.id,
        record.status.as_str()
    );
    if let Err(err) = inner
        .store
        .resolve_incident(incident, "runbookd", &why)
        .await
    {
        tracing::error!(incident, error = %err, "cannot resolve incident");
    }
}

/// Writes the final record, retrying briefly: a run's outcome is worth a few attempts.
/// False when it was not written: the run is another replica's now, or the store failed.
pub(super) async fn finish(inner: &Inner, record: &RunRecord) -> bool {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        match inner
            .write_update(RunUpdate::Finished(Box::new(record.clone())))
            .await
        {
            Ok(true) => return true,
            Ok(false) => {
                tracing::error!(run = %record.id, status = record.status.as_str(), "run outcome discarded: another replica took the run over (this replica lost its lease)");
                inner.metrics.run_lost("outcome_discarded");
                return false;
            }
            Err(e) if attempt == 5 => {
                tracing::error!(run = %record.id, error = %e, status = record.status.as_str(), "cannot record run outcome");
            }
            Err(e) => {
                tracing::warn!(run = %record.id, error = %e, attempt, "recording run outcome failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    false
}
