//! Starting queued runs, one [`Dispatcher::step`] at a time: take the next waiting run —
//! runs claimed from the store first — and one of `max_concurrent_runs` slots for it. The
//! daemon's dispatch loop steps and spawns each run it gets; a simulation steps itself and
//! runs each to its end on its own task, on its virtual clock — the same records, leases,
//! status writes and incident turns, only one run at a time, so the same inputs always give
//! the same timeline.

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

/// How long [`Dispatcher::step`] waits for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The daemon's loop: until a run is submitted or claimed, or draining begins.
    Next,
    /// A simulation: only for what waits now — runs submitted, and unowned runs in the
    /// store (escalation levels, cron ticks), claimed now. `None` when nothing does.
    Idle,
}

/// A run taken off the queue with a slot to run in.
pub struct Started {
    inner: Arc<Inner>,
    job: Job,
    slot: Slot,
}

impl Started {
    /// Runs it to its end. The final record when this process recorded it; `None` when the
    /// run was not this process's to run or finish, or went the retry path.
    pub async fn run(self) -> Option<RunRecord> {
        run::run_job(self.inner, self.job, self.slot).await
    }
}

impl Dispatcher {
    /// The next run to start, with its slot: what the daemon's loop spawns and a simulation
    /// runs itself. `None` once draining (what waits stays queued for another replica or the
    /// next start), or with [`Until::Idle`] when nothing waits.
    pub async fn step(&self, until: Until) -> Option<Started> {
        let inner = &self.inner;
        let job = {
            let mut waiting = inner.waiting.lock().await;
            next_job(inner, &mut waiting, until).await?
        };
        let permit = tokio::select! {
            biased;
            _ = inner.draining.cancelled() => {
                leave_queued(inner, job);
                return None;
            }
            p = inner.slots.clone().acquire_owned() => p.ok()?,
        };
        inner.metrics.queued().dec();
        Some(Started {
            inner: inner.clone(),
            job,
            slot: Slot {
                permit: Some(permit),
                inner: inner.clone(),
            },
        })
    }
}

/// Claimed runs first: they waited in the store, some since a replica died.
async fn next_job(inner: &Arc<Inner>, waiting: &mut Waiting, until: Until) -> Option<Job> {
    loop {
        if inner.draining.is_cancelled() {
            return None;
        }
        match until {
            Until::Next => {
                return tokio::select! {
                    biased;
                    _ = inner.draining.cancelled() => None,
                    Some(job) = waiting.claimed.recv() => {
                        inner.claimed_waiting.fetch_sub(1, Ordering::AcqRel);
                        Some(job)
                    }
                    job = waiting.submitted.recv() => job,
                };
            }
            Until::Idle => {
                if let Ok(job) = waiting.claimed.try_recv() {
                    inner.claimed_waiting.fetch_sub(1, Ordering::AcqRel);
                    return Some(job);
                }
                if let Ok(job) = waiting.submitted.try_recv() {
                    return Some(job);
                }
                if !inner.accepting.load(Ordering::Acquire) || leases::claim(inner).await == 0 {
                    return None;
                }
            }
        }
    }
}

/// The daemon's executor: steps, and starts every run it gets, until draining; then what
/// still waits stays queued.
pub(super) async fn dispatch_loop(dispatcher: Dispatcher, done: Arc<Notify>) {
    while let Some(started) = dispatcher.step(Until::Next).await {
        dispatcher.inner.runs.spawn(started.run());
    }
    let inner = &dispatcher.inner;
    let mut waiting = inner.waiting.lock().await;
    waiting.submitted.close();
    waiting.claimed.close();
    while let Ok(job) = waiting.submitted.try_recv() {
        leave_queued(inner, job);
    }
    while let Ok(job) = waiting.claimed.try_recv() {
        leave_queued(inner, job);
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
