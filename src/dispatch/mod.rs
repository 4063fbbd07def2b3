//! The dispatcher: between triggers and the runner. It resolves the playbook version,
//! records the run as `queued` (from then on it survives a crash), holds it in a bounded
//! queue, and starts it when one of `max_concurrent_runs` slots is free. A full queue is a
//! refusal *before* anything is recorded, so the caller can retry and nothing accepted is
//! ever dropped.

pub mod alerts;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::PlaybooksConfig,
    engine::{runner, Catalog, Playbook},
    metrics::Metrics,
    primitives::Services,
    store::{now_ms, RunError, RunRecord, RunStatus, RunUpdate, Store, StoreError, Trigger},
    triggers::Event,
};

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

/// A request to run a playbook.
pub struct RunRequest {
    pub playbook: String,
    pub event: Event,
    pub trigger: Trigger,
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

/// A run with a reserved queue slot, not recorded yet.
struct Prepared {
    permit: mpsc::OwnedPermit<Job>,
    record: RunRecord,
    playbook: Arc<Playbook>,
}

/// Turn-taking locks by (incident, playbook).
type IncidentLocks = std::collections::HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

struct Inner {
    catalog: Arc<Catalog>,
    store: Store,
    metrics: Arc<Metrics>,
    services: Services,
    limits: PlaybooksConfig,
    queue: mpsc::Sender<Job>,
    accepting: AtomicBool,
    /// Stops the dispatch loop from starting more runs.
    draining: CancellationToken,
    /// Ends running scripts (after the shutdown grace period).
    stop_runs: CancellationToken,
    runs: TaskTracker,
    /// Alert ingestion: notifications wait here for the ingester, which records every one
    /// waiting in one transaction (see [`alerts`]).
    ingest: mpsc::Sender<alerts::IngestJob>,
    /// Run status changes wait here for the status writer, which commits every one waiting
    /// in one transaction.
    run_updates: mpsc::Sender<UpdateJob>,
    /// One lock per (incident, playbook): runs for the same incident never overlap.
    incident_locks: std::sync::Mutex<IncidentLocks>,
}

/// Cheap to clone handle to the dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
    loop_done: Arc<tokio::sync::Notify>,
}

impl Dispatcher {
    /// Starts the dispatch loop.
    pub fn start(
        catalog: Arc<Catalog>,
        store: Store,
        metrics: Arc<Metrics>,
        services: Services,
        limits: PlaybooksConfig,
    ) -> Dispatcher {
        let (queue, rx) = mpsc::channel(limits.queue_capacity);
        let slots = Arc::new(Semaphore::new(limits.max_concurrent_runs));
        let (ingest_tx, ingest_rx) = mpsc::channel(alerts::INGEST_QUEUE);
        let (updates_tx, updates_rx) = mpsc::channel(4096);
        tokio::spawn(status_writer(store.clone(), updates_rx));
        let inner = Arc::new(Inner {
            catalog,
            store,
            metrics,
            services,
            limits,
            queue,
            accepting: AtomicBool::new(true),
            draining: CancellationToken::new(),
            stop_runs: CancellationToken::new(),
            runs: TaskTracker::new(),
            ingest: ingest_tx,
            run_updates: updates_tx,
            incident_locks: Default::default(),
        });
        let loop_done = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(dispatch_loop(inner.clone(), rx, slots, loop_done.clone()));
        let dispatcher = Dispatcher { inner, loop_done };
        tokio::spawn(alerts::ingest_loop(dispatcher.clone(), ingest_rx));
        dispatcher
    }

    /// Records and queues a run. With `wait`, the submission carries a receiver for the
    /// finished record.
    pub async fn submit(&self, req: RunRequest, wait: bool) -> Result<Submission, DispatchError> {
        let prepared = self.prepare(req)?;
        self.inner.store.insert_run(&prepared.record).await?;
        Ok(self.send(prepared, wait))
    }

    /// Accepts a run without recording it: checks that runbookd takes work and reserves a
    /// queue slot (a refusal must happen before anything is recorded). The caller records
    /// `record` — alone, or in a batch with others — and then calls [`Dispatcher::send`].
    fn prepare(&self, req: RunRequest) -> Result<Prepared, DispatchError> {
        let inner = &self.inner;
        if !inner.accepting.load(Ordering::Acquire) {
            inner.metrics.run_rejected("shutting_down");
            return Err(DispatchError::ShuttingDown);
        }
        let playbook = inner
            .catalog
            .get(&req.playbook)
            .ok_or_else(|| DispatchError::UnknownPlaybook(req.playbook.clone()))?;
        let permit = inner.queue.clone().try_reserve_owned().map_err(|_| {
            inner.metrics.run_rejected("queue_full");
            DispatchError::QueueFull(inner.limits.queue_capacity)
        })?;
        let record = RunRecord {
            id: uuid::Uuid::now_v7().to_string(),
            playbook: playbook.name.clone(),
            version: playbook.version.clone(),
            trigger: req.trigger,
            status: RunStatus::Queued,
            dry_run: req.event.dry_run,
            event: serde_json::to_value(&req.event).unwrap_or_default(),
            queued_at: now_ms(),
            started_at: None,
            finished_at: None,
            logs: Vec::new(),
            actions: Vec::new(),
            result: None,
            error: None,
        };
        Ok(Prepared {
            permit,
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
        self.inner.metrics.queued().inc();
        let record = prepared.record;
        prepared.permit.send(Job {
            record: record.clone(),
            playbook: prepared.playbook,
            waiter,
        });
        Submission { run: record, done }
    }

    /// Queues runs found `queued` in the store at start (accepted before a crash).
    pub async fn resume(&self, runs: Vec<RunRecord>) {
        for mut record in runs {
            match self.inner.catalog.get(&record.playbook) {
                Some(playbook) => {
                    tracing::info!(run = %record.id, playbook = %record.playbook, "resuming run accepted before restart");
                    record.version = playbook.version.clone();
                    self.inner.metrics.queued().inc();
                    let job = Job {
                        record,
                        playbook,
                        waiter: None,
                    };
                    if self.inner.queue.send(job).await.is_err() {
                        return;
                    }
                }
                None => {
                    record.status = RunStatus::Failed;
                    record.finished_at = Some(now_ms());
                    record.error = Some(RunError {
                        message: format!(
                            "playbook `{}` no longer exists; run accepted before restart was not started",
                            record.playbook
                        ),
                        reason: "load".into(),
                        line: None,
                        column: None,
                    });
                    if let Err(e) = self.inner.store.finish_run(&record).await {
                        tracing::error!(run = %record.id, error = %e, "cannot record run");
                    }
                }
            }
        }
    }

    /// Runs waiting for a slot.
    pub fn queued(&self) -> i64 {
        self.inner.metrics.queued().get()
    }

    /// Graceful stop: refuse new runs, fail queued ones with reason `shutdown`, let running
    /// ones finish within `grace`, then cancel the rest (recorded as failed, `shutdown`).
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::Release);
        inner.draining.cancel();
        self.loop_done.notified().await;
        inner.runs.close();
        if tokio::time::timeout(grace, inner.runs.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = %humantime::format_duration(grace),
                "runs still executing after the shutdown grace period; cancelling them"
            );
            inner.stop_runs.cancel();
            inner.runs.wait().await;
        }
    }
}

async fn dispatch_loop(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Job>,
    slots: Arc<Semaphore>,
    done: Arc<tokio::sync::Notify>,
) {
    loop {
        let job = tokio::select! {
            biased;
            _ = inner.draining.cancelled() => break,
            job = rx.recv() => match job { Some(j) => j, None => break },
        };
        let permit = tokio::select! {
            biased;
            _ = inner.draining.cancelled() => {
                fail_unstarted(&inner, job).await;
                break;
            }
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        inner.metrics.queued().dec();
        let inner2 = inner.clone();
        inner.runs.spawn(async move {
            run_job(inner2, job).await;
            drop(permit);
        });
    }
    rx.close();
    while let Ok(job) = rx.try_recv() {
        fail_unstarted(&inner, job).await;
    }
    done.notify_one();
}

async fn fail_unstarted(inner: &Inner, job: Job) {
    inner.metrics.queued().dec();
    let mut record = job.record;
    record.status = RunStatus::Failed;
    record.finished_at = Some(now_ms());
    record.error = Some(RunError {
        message: "runbookd shut down before this run started".into(),
        reason: "shutdown".into(),
        line: None,
        column: None,
    });
    finish(inner, &record).await;
    inner
        .metrics
        .run_finished(&record.playbook, record.status.as_str(), Duration::ZERO);
    if let Some(w) = job.waiter {
        let _ = w.send(record);
    }
}

async fn run_job(inner: Arc<Inner>, job: Job) {
    let Job {
        mut record,
        playbook,
        waiter,
    } = job;
    // Runs of one playbook for one incident take turns.
    let _turn = match record.event["incident"].as_str() {
        Some(incident) => {
            let lock = {
                let mut locks = inner
                    .incident_locks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                locks.retain(|_, l| Arc::strong_count(l) > 1);
                locks
                    .entry((incident.to_string(), record.playbook.clone()))
                    .or_default()
                    .clone()
            };
            Some(lock.lock_owned().await)
        }
        None => None,
    };
    let started = Instant::now();
    record.status = RunStatus::Running;
    record.started_at = Some(now_ms());
    inner.metrics.running().inc();
    if let Err(e) = inner
        .write_update(RunUpdate::Running {
            id: record.id.clone(),
            started_at: record.started_at.unwrap_or_default(),
            version: record.version.clone(),
        })
        .await
    {
        tracing::error!(run = %record.id, error = %e, "cannot mark run as running; running it anyway");
    }
    let engine = inner.catalog.engine().clone();
    let services = inner.services.clone();
    let cancel = inner.stop_runs.clone();
    let timeout = inner.limits.timeout;
    let max_log_lines = inner.limits.max_log_lines;
    let run_id = record.id.clone();
    let event = record.event.clone();
    let dry_run = record.dry_run;
    let pb = playbook.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        runner::execute(
            &engine,
            &pb,
            runner::RunSpec {
                run_id: &run_id,
                event: &event,
                dry_run,
                timeout,
                max_log_lines,
            },
            services,
            cancel,
        )
    })
    .await;
    match outcome {
        Ok(o) => {
            record.status = o.status;
            record.result = o.result;
            record.error = o.error;
            record.logs = o.logs;
            record.actions = o.actions;
        }
        Err(join) => {
            record.status = RunStatus::Failed;
            record.error = Some(RunError {
                message: format!("internal error while running the playbook: {join}"),
                reason: "internal".into(),
                line: None,
                column: None,
            });
        }
    }
    record.finished_at = Some(now_ms());
    finish(&inner, &record).await;
    resolve_after_resolved_alert(&inner, &record).await;
    inner.metrics.running().dec();
    inner
        .metrics
        .run_finished(&record.playbook, record.status.as_str(), started.elapsed());
    if let Some(w) = waiter {
        let _ = w.send(record);
    }
}

/// A run started by a `resolved` alert resolves its incident when it ends (the runbook:
/// reconcile on recovery, then close). Derived from the stored event, so a run resumed after
/// a restart does the same.
async fn resolve_after_resolved_alert(inner: &Inner, record: &RunRecord) {
    let e = &record.event;
    if e["kind"] != "alert" || e["status"] != "resolved" {
        return;
    }
    let Some(incident) = e["incident"].as_str() else {
        return;
    };
    let why = format!(
        "alert {} resolved; {} run {} {}",
        e["name"].as_str().unwrap_or(""),
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
/// A status change and who waits for it to be durable.
struct UpdateJob {
    update: RunUpdate,
    done: oneshot::Sender<Result<(), String>>,
}

impl Inner {
    /// Writes a run's status change and waits until it is committed.
    async fn write_update(&self, update: RunUpdate) -> Result<(), String> {
        let (done, committed) = oneshot::channel();
        self.run_updates
            .send(UpdateJob { update, done })
            .await
            .map_err(|_| "the status writer has stopped".to_string())?;
        committed
            .await
            .map_err(|_| "the status writer has stopped".to_string())?
    }
}

/// Group commit for run status changes: every change waiting is written in one
/// transaction; a failed batch is retried change by change so one bad row fails alone.
async fn status_writer(store: Store, mut rx: mpsc::Receiver<UpdateJob>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < 512 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // Split so the updates (a finished run carries its logs) are not copied.
        let (updates, acks): (Vec<RunUpdate>, Vec<_>) =
            jobs.into_iter().map(|j| (j.update, j.done)).unzip();
        match store.write_run_updates(&updates).await {
            Ok(()) => {
                for ack in acks {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) if acks.len() == 1 => {
                for ack in acks {
                    let _ = ack.send(Err(e.to_string()));
                }
            }
            Err(_) => {
                for (update, ack) in updates.iter().zip(acks) {
                    let r = store
                        .write_run_updates(std::slice::from_ref(update))
                        .await
                        .map_err(|e| e.to_string());
                    let _ = ack.send(r);
                }
            }
        }
    }
}

async fn finish(inner: &Inner, record: &RunRecord) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        match inner
            .write_update(RunUpdate::Finished(Box::new(record.clone())))
            .await
        {
            Ok(()) => return,
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
}
