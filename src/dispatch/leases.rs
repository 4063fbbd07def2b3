//! The dispatcher's side of run ownership: renewing this process's lease, claiming runs
//! nobody owns when slots are free, and recovering the runs of replicas whose lease
//! expired. The store does each step as a compare-and-set (`store/leases.rs`).

use std::{sync::atomic::Ordering, sync::Arc};

use super::{Held, Inner, Job};
use crate::store::{Fence, Lease, RunError, RunStatus};

/// A replica whose wall clock differs from the store's by more than this is warned about.
/// Leases do not depend on it (they run on the store's clock); timestamps a replica
/// stamps itself (runs' start and end) do.
const SKEW_WARNING: f64 = 1.0;

/// Exports this replica's clock skew against the store and warns when it passes a second
/// (once, and again once it is back in bounds).
fn observe_skew(inner: &Inner, store_now: i64, warned: &mut bool) {
    let skew = (inner.store.now() - store_now) as f64 / 1000.0;
    inner.metrics.clock_skew(skew);
    if skew.abs() > SKEW_WARNING && !*warned {
        tracing::warn!(skew_seconds = skew, "this replica's clock differs from the state store's by more than a second; leases use the store's clock, but the times this replica stamps on runs are off by as much");
        *warned = true;
    } else if skew.abs() <= SKEW_WARNING && *warned {
        tracing::info!(
            skew_seconds = skew,
            "this replica's clock agrees with the state store's again"
        );
        *warned = false;
    }
}

/// Renews the lease every third of its ttl. A lease found gone (this process was frozen or
/// cut off longer than the ttl, and another replica took its runs) is replaced by a new
/// one, and the runs still executing under the old one are cancelled: they are another
/// replica's now, and their outcome would be discarded anyway.
pub(super) async fn keep_lease(inner: Arc<Inner>) {
    let every = inner.replica.lease_ttl / 3;
    let mut skewed = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = inner.lease_wake.notified() => {}
            _ = inner.retired.cancelled() => return,
        }
        let (lease, _, fence) = inner.held();
        let sent = std::time::Instant::now();
        match inner
            .store
            .renew_lease(&lease, inner.replica.lease_ttl)
            .await
        {
            Ok(Some(store_now)) => {
                fence.extend(sent, inner.replica.lease_ttl);
                observe_skew(&inner, store_now, &mut skewed);
            }
            Ok(None) => {
                // Nothing acts under the old lease from now on, even before its runs see
                // their cancellation.
                fence.revoke();
                let fresh = Lease::new(&inner.replica.name);
                tracing::error!(old = %lease.id, new = %fresh.id, "this replica's lease expired and its runs were taken over; cancelling the runs still executing under it and taking a new lease");
                inner.metrics.run_lost("lease_lost");
                let sent = std::time::Instant::now();
                if let Err(e) = inner
                    .store
                    .register_lease(&fresh, inner.replica.lease_ttl)
                    .await
                {
                    tracing::error!(error = %e, "cannot take a new lease; retrying");
                    continue;
                }
                let old = std::mem::replace(
                    &mut *inner.held.write().unwrap_or_else(|p| p.into_inner()),
                    Held {
                        lease: fresh,
                        runs: inner.stop_runs.child_token(),
                        fence: Fence::new(sent, inner.replica.lease_ttl),
                    },
                );
                old.runs.cancel();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew this replica's lease; retrying")
            }
        }
    }
}

/// One recovery pass: runs of dead replicas are released or started again.
pub(super) async fn recover(inner: &Inner) {
    let lease = inner.lease();
    match inner
        .store
        .recover_runs(&lease, inner.limits.retry_interrupted)
        .await
    {
        Ok(r) => {
            if r.notifications_released > 0 {
                tracing::warn!(
                    notifications = r.notifications_released,
                    "gave back the delivery claims of replicas that are gone; their notifications go out now"
                );
            }
            if r.released > 0 || !r.retried.is_empty() || !r.interrupted.is_empty() {
                tracing::warn!(
                    released = r.released,
                    retried = r.retried.len(),
                    interrupted = r.interrupted.len(),
                    dead_leases = r.dead_leases,
                    "took over the runs of replicas that are gone"
                );
            }
            if r.released > 0 || !r.retried.is_empty() {
                inner.backlog.store(true, Ordering::Release);
                inner.claim_wake.notify_one();
            }
            for (run, playbook) in &r.retried {
                tracing::warn!(%run, %playbook, "run interrupted when its replica died; starting it again");
                inner.metrics.run_retried(playbook);
            }
            for (run, playbook) in &r.interrupted {
                tracing::error!(%run, %playbook, "run interrupted when its replica died, out of attempts: failed, reason interrupted");
                inner.metrics.run_interrupted(playbook);
            }
        }
        Err(e) => tracing::warn!(error = %e, "recovery of dead replicas' runs failed; retrying"),
    }
}

/// Claims unowned queued runs while slots are free; every third of the lease ttl also
/// recovers the runs of replicas that died.
pub(super) async fn claim_loop(inner: Arc<Inner>) {
    let recover_every = inner.replica.lease_ttl / 3;
    let mut last_recovery = tokio::time::Instant::now();
    loop {
        if inner.draining.is_cancelled() {
            return;
        }
        if last_recovery.elapsed() >= recover_every {
            recover(&inner).await;
            last_recovery = tokio::time::Instant::now();
        }
        let claimed = claim(&inner).await;
        if claimed > 0 {
            continue; // there may be more, and room for them
        }
        tokio::select! {
            _ = inner.claim_wake.notified() => {}
            // Runs recorded here, slots freeing with a backlog and recoveries wake the
            // claimer; this wait only finds runs other replicas recorded and could not
            // start (a third of the lease ttl, with the recovery pass): idle means idle.
            _ = tokio::time::sleep(recover_every) => {}
            _ = inner.draining.cancelled() => return,
        }
    }
}

/// Claims as many runs as there are free slots not spoken for by runs already waiting
/// here; returns how many it claimed.
pub(super) async fn claim(inner: &Inner) -> usize {
    let external_waiting = inner.queue.max_capacity() - inner.queue.capacity();
    let waiting = external_waiting + inner.claimed_waiting.load(Ordering::Acquire);
    let room = inner.slots.available_permits().saturating_sub(waiting);
    if room == 0 {
        return 0;
    }
    let lease = inner.lease();
    let runs = match inner.store.claim_queued(&lease.id, room).await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim queued runs; retrying");
            return 0;
        }
    };
    let n = runs.len();
    inner.backlog.store(n == room, Ordering::Release);
    for mut record in runs {
        record.owner = Some(lease.id.clone());
        match inner.catalog.get(&record.playbook) {
            Some(playbook) => {
                tracing::info!(run = %record.id, playbook = %record.playbook, attempt = record.attempt, trigger = %record.trigger.kind, "claimed queued run");
                record.version = playbook.version.clone();
                inner.metrics.queued().inc();
                inner.claimed_waiting.fetch_add(1, Ordering::AcqRel);
                let job = Job {
                    record,
                    playbook,
                    waiter: None,
                };
                if inner.claimed.send(job).is_err() {
                    inner.claimed_waiting.fetch_sub(1, Ordering::AcqRel);
                    inner.metrics.queued().dec();
                }
            }
            None => {
                record.status = RunStatus::Failed;
                record.finished_at = Some(inner.store.now());
                record.error = Some(RunError {
                    message: format!(
                        "playbook `{}` does not exist (any more); the run was not started",
                        record.playbook
                    ),
                    reason: crate::store::RunErrorReason::Load,
                    line: None,
                    column: None,
                });
                super::run::finish(inner, &record).await;
            }
        }
    }
    n
}
