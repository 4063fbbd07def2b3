//! Starting queued runs. The daemon's dispatch loop starts each run when one of
//! `max_concurrent_runs` slots frees, runs claimed from the store first. A simulation
//! starts them itself instead ([`Dispatcher::run_waiting`]): one at a time on the calling
//! task, on its virtual clock — the same records, leases, status writes and incident turns,
//! only no concurrency, so the same inputs always give the same timeline.

use std::sync::{atomic::Ordering, Arc};

use tokio::sync::{mpsc, Notify};

use super::{leases, run, run::Slot, Dispatcher, Inner, Job};
use crate::store::RunRecord;

/// Where runs wait to be started: the bounded queue of runs accepted from outside, and
/// the runs claimed from the store.
pub(super) struct Waiting {
    pub(super) submitted: mpsc::Receiver<Job>,
    pub(super) claimed: mpsc::UnboundedReceiver<Job>,
}

/// The daemon's executor: starts runs as slots free, until draining.
pub(super) async fn dispatch_loop(inner: Arc<Inner>, mut waiting: Waiting, done: Arc<Notify>) {
    loop {
        let job = tokio::select! {
            biased;
            _ = inner.draining.cancelled() => break,
            Some(job) = waiting.claimed.recv() => {
                inner.claimed_waiting.fetch_sub(1, Ordering::AcqRel);
                job
            }
            job = waiting.submitted.recv() => match job { Some(j) => j, None => break },
        };
        let permit = tokio::select! {
            biased;
            _ = inner.draining.cancelled() => {
                leave_queued(&inner, job);
                break;
            }
            p = inner.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        inner.metrics.queued().dec();
        let inner2 = inner.clone();
        inner.runs.spawn(async move {
            let slot = Slot {
                permit: Some(permit),
                inner: inner2.clone(),
            };
            run::run_job(inner2, job, Some(slot)).await;
        });
    }
    waiting.submitted.close();
    waiting.claimed.close();
    while let Ok(job) = waiting.submitted.try_recv() {
        leave_queued(&inner, job);
    }
    while let Ok(job) = waiting.claimed.try_recv() {
        leave_queued(&inner, job);
    }
    done.notify_one();
}

/// A run not started at shutdown stays queued in the store (released with the lease);
/// whoever waits for it is told that this process will not run it.
pub(super) fn leave_queued(inner: &Inner, job: Job) {
    inner.metrics.queued().dec();
    tracing::info!(run = %job.record.id, playbook = %job.record.playbook, "run left queued for another replica or the next start");
    drop(job.waiter);
}

impl Dispatcher {
    /// The inline executor (a dispatcher made with [`Dispatcher::start_inline`]): runs
    /// every run waiting — submitted, or recorded for nobody (escalation levels, cron
    /// ticks) and claimed now — to its end on the calling task, one at a time, claimed runs
    /// first as the dispatch loop takes them. Returns the finished records in the order
    /// they ran. A daemon's dispatcher has no inline queue: nothing runs, `[]`.
    pub async fn run_waiting(&self) -> Vec<RunRecord> {
        let inner = &self.inner;
        let Some(waiting) = &inner.inline else {
            return Vec::new();
        };
        let mut waiting = waiting.lock().await;
        let mut finished = Vec::new();
        loop {
            let job = if let Ok(job) = waiting.claimed.try_recv() {
                inner.claimed_waiting.fetch_sub(1, Ordering::AcqRel);
                job
            } else if let Ok(job) = waiting.submitted.try_recv() {
                job
            } else if inner.accepting.load(Ordering::Acquire) && leases::claim(inner).await > 0 {
                continue;
            } else {
                return finished;
            };
            inner.metrics.queued().dec();
            finished.extend(run::run_job(inner.clone(), job, None).await);
        }
    }
}
