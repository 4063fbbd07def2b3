//! The dispatcher: between triggers and the runner. It resolves the playbook version,
//! records the run as `queued` and owned by this process's lease (from then on it survives
//! a crash: if this process dies, another replica or the next start runs it), holds it in a
//! bounded queue, and starts it when one of `max_concurrent_runs` slots is free (an alert's
//! run that finds a slot free is recorded `running` and starts at once, `run.rs`). A full
//! queue is a refusal *before* anything is recorded, so the caller can retry and nothing
//! accepted is ever dropped. Runs nobody owns yet (runbookd's own triggers, work of dead
//! replicas) wait in the store and are claimed when slots free (`leases.rs`).

pub mod admission;
pub mod alerts;
mod leases;
mod queue;
mod run;
mod turns;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::store::status_writer::{self, UpdateJob};
use crate::{
    config::PlaybooksConfig,
    engine::{Catalog, Playbook},
    metrics::Metrics,
    primitives::ServiceSource,
    store::{Fence, Lease, RunRecord, RunUpdate, Store, StoreError},
};

pub use crate::event::RunRequest;
pub use queue::{Started, Until};

/// Why a trigger was refused.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no playbook named `{0}`")]
    UnknownPlaybook(String),
    #[error("run queue is full ({0} runs waiting); retry later")]
    QueueFull(usize),
    #[error("runbookd is shutting down and takes no new runs")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A batch of alerts could not be recorded; its senders get this (503) and retry.
    #[error("alerts not recorded: {0}; retry")]
    NotRecorded(String),
}

/// An accepted run; `done` resolves with the final record when asked for.
pub struct Submission {
    pub run: RunRecord,
    pub done: Option<oneshot::Receiver<RunRecord>>,
}

struct Job {
    record: RunRecord,
    playbook: Arc<Playbook>,
    waiter: Option<oneshot::Sender<RunRecord>>,
}

/// A run with a reserved queue place or run slot, not recorded yet.
struct Prepared {
    admission: run::Admission,
    record: RunRecord,
    playbook: Arc<Playbook>,
}

/// Who this daemon is among the replicas sharing the store.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// `[server] replica_id` (or `HOSTNAME-PID`).
    pub name: String,
    /// `[server] lease_ttl`.
    pub lease_ttl: Duration,
}

/// The lease in force, the token that ends the runs executing under it, and its fence.
struct Held {
    lease: Lease,
    /// Cancelled when the lease is lost: its runs belong to other replicas by then.
    runs: CancellationToken,
    /// Until when, by this process's monotonic clock, its runs may act.
    fence: Arc<Fence>,
}

struct Inner {
    catalog: Arc<Catalog>,
    store: Store,
    metrics: Arc<Metrics>,
    /// Where each run gets its backends when it starts.
    services: Arc<dyn ServiceSource>,
    limits: PlaybooksConfig,
    replica: ReplicaSettings,
    held: std::sync::RwLock<Held>,
    /// Admission from outside (API, alerts): bounded, a full queue is a 503.
    queue: mpsc::Sender<Job>,
    /// Runs claimed from the store (runbookd's own triggers, work of dead replicas).
    claimed: mpsc::UnboundedSender<Job>,
    /// Claimed runs not started yet.
    claimed_waiting: AtomicUsize,
    /// The last claim filled every free slot: more unowned runs may wait, so a slot that
    /// frees wakes the claimer. Otherwise runs finishing cost the store nothing.
    backlog: AtomicBool,
    slots: Arc<Semaphore>,
    /// Wakes the claimer: a slot freed or an internal run was recorded.
    claim_wake: Notify,
    /// Wakes the lease keeper: a run found the lease's fence lapsed, so the lease is
    /// renewed (or replaced) now rather than at the next third of its ttl.
    lease_wake: Notify,
    accepting: AtomicBool,
    /// Stops the dispatch loop from starting more runs.
    draining: CancellationToken,
    /// Ends running scripts (after the shutdown grace period).
    stop_runs: CancellationToken,
    /// Set at the end of shutdown: the lease is given up, not renewed.
    retired: CancellationToken,
    /// The dispatch, ingest, claim, lease and status-writer loops (they end at `retired`
    /// or when draining).
    loops: TaskTracker,
    runs: TaskTracker,
    /// Alert ingestion: notifications wait here for the ingester, which records every one
    /// waiting in one transaction (see [`alerts`]).
    ingest: mpsc::Sender<alerts::IngestJob>,
    /// Run status changes wait here for the status writer, which commits every one waiting
    /// in one transaction.
    run_updates: mpsc::Sender<UpdateJob>,
    /// Runs for the same incident and playbook take turns.
    turns: turns::Turns,
    /// Runs accepted or claimed, not started yet; [`Dispatcher::step`] takes them.
    waiting: tokio::sync::Mutex<queue::Waiting>,
    /// No loop starts runs: the caller steps (a simulation). Then no run starts at
    /// admission either, so runs start only when and in the order the caller steps.
    stepped: bool,
}

/// Cheap to clone handle to the dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
    loop_done: Arc<Notify>,
}

impl Dispatcher {
    /// Registers this process's lease and starts the dispatch loop. Runs are claimed from
    /// the store and dead replicas' work recovered only once [`Dispatcher::serve`] runs (the
    /// daemon); a one-shot `runbookd run` only executes what it submits.
    pub async fn start(
        catalog: Arc<Catalog>,
        store: Store,
        metrics: Arc<Metrics>,
        services: Arc<dyn ServiceSource>,
        limits: PlaybooksConfig,
        replica: ReplicaSettings,
    ) -> Result<Dispatcher, StoreError> {
        Self::start_with(catalog, store, metrics, services, limits, replica, false).await
    }

    /// A dispatcher for a simulation: everything the daemon's does (admission, records,
    /// lease, status writer, incident turns, resolution) except that no loop starts runs:
    /// the caller [`Dispatcher::step`]s and runs each, on the store's (virtual) clock.
    pub async fn start_stepped(
        catalog: Arc<Catalog>,
        store: Store,
        metrics: Arc<Metrics>,
        services: Arc<dyn ServiceSource>,
        limits: PlaybooksConfig,
        replica: ReplicaSettings,
    ) -> Result<Dispatcher, StoreError> {
        Self::start_with(catalog, store, metrics, services, limits, replica, true).await
    }

    async fn start_with(
        catalog: Arc<Catalog>,
        store: Store,
        metrics: Arc<Metrics>,
        services: Arc<dyn ServiceSource>,
        limits: PlaybooksConfig,
        replica: ReplicaSettings,
        stepped: bool,
    ) -> Result<Dispatcher, StoreError> {
        let lease = Lease::new(&replica.name);
        let sent = std::time::Instant::now();
        store.register_lease(&lease, replica.lease_ttl).await?;
        let fence = Fence::new(sent, replica.lease_ttl);
        let (queue, rx) = mpsc::channel(limits.queue_capacity);
        let (claimed, claimed_rx) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(limits.max_concurrent_runs));
        let (ingest_tx, ingest_rx) = mpsc::channel(alerts::INGEST_QUEUE);
        let (updates_tx, updates_rx) = mpsc::channel(4096);
        // The dispatcher's own loops; `shutdown` waits for every one of them.
        let loops = TaskTracker::new();
        let retired = CancellationToken::new();
        loops.spawn(status_writer::status_writer(
            store.clone(),
            updates_rx,
            retired.clone(),
        ));
        let stop_runs = CancellationToken::new();
        let waiting = queue::Waiting {
            submitted: rx,
            claimed: claimed_rx,
        };
        let inner = Arc::new(Inner {
            catalog,
            store,
            metrics,
            services,
            limits,
            replica,
            held: std::sync::RwLock::new(Held {
                lease,
                runs: stop_runs.child_token(),
                fence,
            }),
            queue,
            claimed,
            claimed_waiting: AtomicUsize::new(0),
            backlog: AtomicBool::new(false),
            slots,
            claim_wake: Notify::new(),
            lease_wake: Notify::new(),
            accepting: AtomicBool::new(true),
            draining: CancellationToken::new(),
            stop_runs,
            retired,
            runs: TaskTracker::new(),
            loops,
            ingest: ingest_tx,
            run_updates: updates_tx,
            turns: Default::default(),
            waiting: tokio::sync::Mutex::new(waiting),
            stepped,
        });
        let loop_done = Arc::new(Notify::new());
        let dispatcher = Dispatcher { inner, loop_done };
        if stepped {
            // No loop to wait for at shutdown.
            dispatcher.loop_done.notify_one();
        } else {
            dispatcher.inner.loops.spawn(queue::dispatch_loop(
                dispatcher.clone(),
                dispatcher.loop_done.clone(),
            ));
        }
        dispatcher
            .inner
            .loops
            .spawn(alerts::ingest_loop(dispatcher.clone(), ingest_rx));
        dispatcher
            .inner
            .loops
            .spawn(leases::keep_lease(dispatcher.inner.clone()));
        Ok(dispatcher)
    }

    /// The lease this process holds now.
    pub fn lease(&self) -> Lease {
        self.inner.lease()
    }

    /// Records and queues a run. With `wait`, the submission carries a receiver for the
    /// finished record.
    pub async fn submit(&self, req: RunRequest, wait: bool) -> Result<Submission, DispatchError> {
        // A 202 answer says `queued`: only a run waited for may start at admission.
        let prepared = self.prepare(req, wait)?;
        self.inner.store.insert_run(&prepared.record).await?;
        Ok(self.send(prepared, wait))
    }

    /// Accepts a run without recording it: checks that runbookd takes work and reserves a
    /// queue slot (a refusal must happen before anything is recorded). The caller records
    /// `record` — alone, or in a batch with others — and then calls [`Dispatcher::send`].
    /// `start_now`: a free slot may be taken at once (see [`run::admit`]).
    fn prepare(&self, req: RunRequest, start_now: bool) -> Result<Prepared, DispatchError> {
        let inner = &self.inner;
        if !inner.accepting.load(Ordering::Acquire) {
            inner.metrics.run_rejected("shutting_down");
            return Err(DispatchError::ShuttingDown);
        }
        let playbook = inner
            .catalog
            .get(&req.playbook)
            .ok_or_else(|| DispatchError::UnknownPlaybook(req.playbook.clone()))?;
        let mut record = RunRecord::queued(req, &playbook.version, inner.store.now());
        record.owner = Some(inner.lease().id);
        let admission = run::admit(inner, &mut record, start_now)?;
        Ok(Prepared {
            admission,
            record,
            playbook,
        })
    }

    /// Queues a prepared run once its record is durable.
    fn send(&self, prepared: Prepared, wait: bool) -> Submission {
        let (waiter, done) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let record = prepared.record;
        let job = Job {
            record: record.clone(),
            playbook: prepared.playbook,
            waiter,
        };
        run::hand_on(&self.inner, prepared.admission, job);
        Submission { run: record, done }
    }

    /// Tells the claimer that runs nobody owns were recorded.
    pub fn wake_claimer(&self) {
        self.inner.backlog.store(true, Ordering::Release);
        self.inner.claim_wake.notify_one();
    }

    /// Claims unowned queued runs while slots are free and recovers dead replicas' runs,
    /// until [`Dispatcher::shutdown`]. The daemon runs this; one recovery pass happens
    /// before it returns the first time, so work left by a crash is queued before the API
    /// listens.
    pub async fn serve(&self) {
        leases::recover(&self.inner).await;
        self.inner
            .loops
            .spawn(leases::claim_loop(self.inner.clone()));
    }

    /// Runs waiting for a slot.
    pub fn queued(&self) -> i64 {
        self.inner.metrics.queued().get()
    }

    /// Graceful stop: refuse new runs, give queued ones back to the store (another replica,
    /// or the next start, runs them), let running ones finish within `grace`, then cancel
    /// the rest into the retry path (a new attempt later, see `[playbooks]
    /// retry_interrupted`), and end the lease.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::Release);
        inner.draining.cancel();
        inner.claim_wake.notify_one();
        self.loop_done.notified().await;
        inner.runs.close();
        if tokio::time::timeout(grace, inner.runs.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = %humantime::format_duration(grace),
                "runs still executing after the shutdown grace period; cancelling them (they are started again later as a new attempt)"
            );
            inner.stop_runs.cancel();
            inner.runs.wait().await;
        }
        inner.retired.cancel();
        let lease = inner.lease();
        match inner.store.release_queued(&lease.id).await {
            Err(e) => {
                tracing::error!(error = %e, "cannot give back queued runs; they are recovered when this replica's lease expires")
            }
            Ok(_) => {
                if let Err(e) = inner.store.retire_lease(&lease).await {
                    tracing::warn!(error = %e, "cannot end this replica's lease; it expires by itself");
                }
            }
        }
        // Every loop ends at retirement (or when draining); none outlives the dispatcher.
        inner.loops.close();
        inner.loops.wait().await;
    }
}

impl Inner {
    fn services(&self) -> crate::primitives::Services {
        self.services.services()
    }

    fn lease(&self) -> Lease {
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lease
            .clone()
    }

    /// The current lease, the token that ends runs started under it, and its fence.
    fn held(&self) -> (Lease, CancellationToken, Arc<Fence>) {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        (held.lease.clone(), held.runs.clone(), held.fence.clone())
    }

    /// Writes a run's status change and waits until it is committed. Ok(false): the run is
    /// not this process's any more.
    async fn write_update(&self, update: RunUpdate) -> Result<bool, status_writer::WriteError> {
        status_writer::write(&self.run_updates, update).await
    }
}
