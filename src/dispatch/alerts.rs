//! Alerts into incidents and runs: match triggers, attach to an incident, deduplicate at the
//! door, honour cooldowns, and resolve incidents when their alert resolves.
//!
//! Everything is recorded in the store before the webhook is answered, so Alertmanager's
//! retries (after a 5xx or a crash) meet the same records and start nothing twice.

use serde::Serialize;
use serde_json::{Map, Value};

use std::{collections::HashSet, sync::Arc};

use tokio::sync::{mpsc, watch};

use super::{
    admission::{decide, incident_key, matching, Verdict},
    DispatchError, Dispatcher, Prepared, RunRequest,
};
use crate::{
    config::AlertsConfig,
    event::AlertFacts,
    store::{
        group_commit::{commit_and_answer, take_waiting, Commit, Waiter},
        AlertRecord, Batch, Incident, RunStatus,
    },
    triggers::alertmanager::{Alert, AlertStatus},
};

/// What happened to one alert.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertOutcome {
    pub alertname: String,
    pub fingerprint: String,
    pub status: String,
    pub incident: Option<String>,
    /// This alert opened its incident (no open one had its key).
    pub opened: bool,
    /// Runs started for it.
    pub runs: Vec<String>,
    /// One line per matching playbook (or why nothing ran).
    pub notes: Vec<String>,
}

fn to_map(m: &std::collections::BTreeMap<String, String>) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// Alerts of one notification recorded per turn of the ingester (see
/// [`Dispatcher::ingest_alerts`]).
pub const ALERTS_PER_TURN: usize = 100;
/// Notifications that may wait for the ingester; beyond that senders wait (backpressure).
pub const INGEST_QUEUE: usize = 1024;
/// Most notifications recorded in one transaction.
const MAX_BATCH: usize = 256;

/// One notification's alerts (or a chunk of them), as the ingester records them.
pub struct Notification {
    alerts: Vec<Alert>,
    /// Each alert's incident key, computed once when the notification arrives: the
    /// batch's locks and lookups and the alert's own recording all use it.
    keys: Vec<String>,
    cfg: AlertsConfig,
    actor: String,
}

/// One notification waiting to be recorded, and its sender waiting for the outcomes.
pub type IngestJob = Waiter<Notification, Vec<AlertOutcome>, DispatchError>;

impl Dispatcher {
    /// Records the alerts of one notification — incidents, alert rows, runs — and queues
    /// the runs. Answers once all of it is committed (a crash after the answer loses
    /// nothing).
    ///
    /// Group commit: the ingester takes every chunk of alerts waiting at that moment and
    /// records them in one transaction. Batches sharing an incident key are serialised —
    /// by SQLite's single writer, by the keys' advisory locks on PostgreSQL (where two
    /// batches may be in flight, and other replicas' too) — so the two copies an HA
    /// Alertmanager pair delivers at the same moment cannot both start a run. A large
    /// notification goes in chunks of [`ALERTS_PER_TURN`], one at a time, taking turns
    /// with every other notification waiting, so a small urgent one is never stuck behind
    /// ten thousand others. Each chunk is recorded all or nothing; when a later chunk fails
    /// the sender gets the error and resends the notification (Alertmanager does), and the
    /// chunks already recorded meet themselves at the door (deduplicated, nothing started
    /// twice).
    pub async fn ingest_alerts(
        &self,
        alerts: Vec<Alert>,
        cfg: &AlertsConfig,
        actor: &str,
    ) -> Result<Vec<AlertOutcome>, DispatchError> {
        let mut outcomes = Vec::with_capacity(alerts.len());
        let mut rest = alerts;
        loop {
            let tail = if rest.len() > ALERTS_PER_TURN {
                rest.split_off(ALERTS_PER_TURN)
            } else {
                Vec::new()
            };
            let chunk = std::mem::replace(&mut rest, tail);
            let keys = chunk.iter().map(|a| incident_key(a, cfg)).collect();
            let (job, answer) = Waiter::new(Notification {
                alerts: chunk,
                keys,
                cfg: cfg.clone(),
                actor: actor.to_string(),
            });
            self.inner
                .ingest
                .send(job)
                .await
                .map_err(|_| DispatchError::ShuttingDown)?;
            outcomes.extend(answer.await.map_err(|_| DispatchError::ShuttingDown)??);
            if rest.is_empty() {
                return Ok(outcomes);
            }
        }
    }

    /// [`Dispatcher::ingest_alerts`] for one alert.
    pub async fn ingest_alert(
        &self,
        alert: &Alert,
        cfg: &AlertsConfig,
        actor: &str,
    ) -> Result<AlertOutcome, DispatchError> {
        self.ingest_alerts(vec![alert.clone()], cfg, actor)
            .await?
            .pop()
            .ok_or_else(|| DispatchError::NotRecorded("no outcome".into()))
    }

    /// Records one alert inside `batch`: its incident (found, or opened by a firing
    /// alert), the runs it starts (added to `prepared`), the incident resolved by a
    /// `resolved` alert that starts nothing, and the alert's own row.
    async fn ingest_one(
        &self,
        batch: &mut Batch,
        alert: &Alert,
        key: &str,
        cfg: &AlertsConfig,
        actor: &str,
        prepared: &mut Vec<Prepared>,
    ) -> Result<AlertOutcome, DispatchError> {
        let mut outcome = AlertOutcome {
            alertname: alert.name().to_string(),
            fingerprint: alert.fingerprint.clone(),
            status: alert.status.to_string(),
            incident: None,
            opened: false,
            runs: Vec::new(),
            notes: Vec::new(),
        };
        // The alert as its runs' events carry it: labels and annotations converted once.
        let facts = AlertFacts {
            name: alert.name().to_string(),
            status: alert.status.to_string(),
            labels: to_map(&alert.labels),
            annotations: to_map(&alert.annotations),
        };
        let labels = Value::Object(facts.labels.clone());
        let incident = self.incident_of(batch, alert, key, &labels).await?;
        outcome.incident = incident.as_ref().map(|(i, _)| i.id.clone());
        outcome.opened = incident.as_ref().is_some_and(|(_, opened)| *opened);
        match &incident {
            None => outcome
                .notes
                .push("resolved, but no open incident has this key".into()),
            Some((incident, opened_here)) => {
                let started = self
                    .start_runs(
                        batch,
                        alert,
                        &facts,
                        cfg,
                        actor,
                        incident,
                        *opened_here,
                        &mut outcome,
                    )
                    .await?;
                // A run started by a resolved alert resolves the incident when it finishes.
                let resolve_now = alert.status != AlertStatus::Firing && started.is_empty();
                prepared.extend(started);
                if resolve_now {
                    batch
                        .resolve_incident(
                            &incident.id,
                            "alertmanager",
                            &format!("alert {} resolved", alert.name()),
                        )
                        .await?;
                    outcome.notes.push("incident resolved".into());
                }
            }
        }
        batch.record_alert(AlertRecord {
            alertname: alert.name().to_string(),
            fingerprint: alert.fingerprint.clone(),
            status: alert.status.to_string(),
            starts_at: alert.starts_at.clone(),
            labels,
            annotations: Value::Object(facts.annotations),
            incident_id: outcome.incident.clone(),
            outcome: outcome.notes.join("; "),
        });
        Ok(outcome)
    }

    /// The open incident with `key`, or — for a firing alert — one opened now (then true:
    /// this alert opened it). `None`: a resolved alert with no open incident.
    async fn incident_of(
        &self,
        batch: &mut Batch,
        alert: &Alert,
        key: &str,
        labels: &Value,
    ) -> Result<Option<(Incident, bool)>, DispatchError> {
        if let Some(open) = batch.open_incident_by_key(key).await? {
            return Ok(Some((open, false)));
        }
        if alert.status != AlertStatus::Firing {
            return Ok(None);
        }
        let title = alert
            .annotations
            .get("summary")
            .cloned()
            .unwrap_or_else(|| alert.name().to_string());
        // Opened when the alert started, but never in the future: an alert whose
        // `startsAt` lies ahead (a skewed clock) would otherwise stay "young" and never
        // meet an age condition.
        let received = self.inner.store.now();
        let opened = alert.starts_at_ms().unwrap_or(received).min(received);
        let incident = batch.create_incident(
            key,
            &format!("alert:{}", alert.name()),
            &title,
            labels,
            opened,
        );
        Ok(Some((incident, true)))
    }

    /// Admits a run of every playbook this alert triggers on `incident`, unless the
    /// playbook's last run there says otherwise (active, cooling down, not opted into
    /// resolved alerts): each admitted run is recorded in `batch` and returned; the others
    /// leave a note in `outcome`.
    #[allow(clippy::too_many_arguments)]
    async fn start_runs(
        &self,
        batch: &mut Batch,
        alert: &Alert,
        facts: &AlertFacts,
        cfg: &AlertsConfig,
        actor: &str,
        incident: &Incident,
        opened_here: bool,
        outcome: &mut AlertOutcome,
    ) -> Result<Vec<Prepared>, DispatchError> {
        let firing = alert.status == AlertStatus::Firing;
        let matches = matching(&self.inner.catalog, alert, cfg.cooldown);
        if matches.is_empty() {
            self.inner.metrics.alert_unmatched();
            outcome
                .notes
                .push("no playbook is triggered by this alert".into());
        }
        let mut started = Vec::new();
        for m in matches {
            // An incident opened by this very alert has no runs yet: no need to ask.
            let last = if opened_here || (!firing && !m.on_resolved) {
                None
            } else {
                batch
                    .last_incident_run(&incident.id, &m.playbook)
                    .await?
                    .and_then(|(status, at)| Some((RunStatus::parse(&status)?, at)))
            };
            let verdict = decide(&m, firing, last, self.inner.store.now());
            if verdict != Verdict::Start {
                if let Some(note) = verdict.note(&m.playbook) {
                    self.inner.metrics.alert_deduplicated();
                    outcome.notes.push(note);
                }
                continue;
            }
            let playbook = m.playbook;
            let run = self.prepare(
                RunRequest::alert(&playbook, facts.clone(), &incident.id, actor),
                true,
            )?;
            batch.insert_run(&run.record);
            outcome
                .notes
                .push(format!("{playbook}: run {}", run.record.id));
            outcome.runs.push(run.record.id.clone());
            started.push(run);
        }
        Ok(started)
    }

    /// Records `jobs` in one transaction; on success hands their runs on (started at once
    /// when admitted into a free slot, else queued). On failure nothing of it is recorded
    /// and no run starts or is queued (their reserved slots and queue places are released).
    /// `locked` is told once the batch holds its keys' locks.
    async fn ingest_batch(
        &self,
        jobs: &[Notification],
        locked: Option<&watch::Sender<bool>>,
    ) -> Result<Vec<Vec<AlertOutcome>>, DispatchError> {
        let mut batch = self.inner.store.batch().await?;
        // Every key's lock, open incident and latest runs in a few statements for the batch.
        let keys = keys_of(jobs.iter());
        batch
            .load_keys(keys.iter().map(String::as_str))
            .await
            .map_err(|e| {
                if e.is_lock_timeout() {
                    // 5 s: migration 13's `lock_timeout` on the lookup function.
                    tracing::warn!(
                        error = %e,
                        "an ingest batch waited 5 s for its incident keys' locks; its alerts are \
                         refused (503) for their senders to resend"
                    );
                    // A batch of several is recorded again one by one: only a notification
                    // alone in its batch is refused with this answer.
                    if let [job] = jobs {
                        self.inner
                            .metrics
                            .alerts_key_locked(job.alerts.len() as u64);
                    }
                    DispatchError::NotRecorded(
                        "an incident key of these alerts stayed locked by another transaction \
                         (another replica's batch?) for 5 s"
                            .into(),
                    )
                } else {
                    e.into()
                }
            })?;
        if let Some(locked) = locked {
            locked.send_replace(true);
        }
        let mut prepared = Vec::new();
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut of_job = Vec::with_capacity(job.alerts.len());
            for (alert, key) in job.alerts.iter().zip(&job.keys) {
                of_job.push(
                    self.ingest_one(&mut batch, alert, key, &job.cfg, &job.actor, &mut prepared)
                        .await?,
                );
            }
            outcomes.push(of_job);
        }
        batch.commit().await?;
        for run in prepared {
            self.send(run, false);
        }
        Ok(outcomes)
    }
}

/// A batch of notifications committed by [`Dispatcher::ingest_batch`]; `locked` is told
/// once the batch (not a notification retried alone) holds its keys' locks.
struct IngestCommit<'a> {
    dispatcher: &'a Dispatcher,
    locked: &'a watch::Sender<bool>,
}

impl Commit<Notification> for IngestCommit<'_> {
    type Answer = Vec<AlertOutcome>;
    type Error = DispatchError;

    /// A notification retried alone takes its locks anew; arrival order is not kept on
    /// that path.
    async fn commit(
        &self,
        jobs: &[Notification],
        retry: bool,
    ) -> Result<Vec<Vec<AlertOutcome>>, DispatchError> {
        let locked = (!retry).then_some(self.locked);
        self.dispatcher.ingest_batch(jobs, locked).await
    }
}

/// Ingest batches recorded at once on PostgreSQL, at most. Batches in flight together are
/// as safe as two replicas ingesting at once: each holds its keys' advisory locks until it
/// commits, so a batch sharing keys with another waits for it and then reads what it
/// committed. SQLite has one writer connection: one batch at a time.
const PG_BATCHES_IN_FLIGHT: usize = 2;
/// A second batch starts only once the one in flight has taken this long. A quick batch is
/// waited for, so everything arriving meanwhile goes into the next one: on this project's
/// 2-core machine, always keeping two in flight made smaller batches, more commits, and
/// 9–14 % fewer alerts accepted per second (docs/performance.md). A batch this slow is
/// waiting — for a key's lock another replica holds, for a slow server — and alerts with
/// other keys should not wait with it.
const SECOND_BATCH_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// The ingester: takes every notification waiting, records them together, answers each
/// (the group commit of `store/group_commit.rs`). When a batch fails, its notifications are
/// retried one by one, so one bad notification (or a full run queue) is answered on its
/// own and does not fail the others.
///
/// On PostgreSQL a second batch starts when the one in flight has taken
/// [`SECOND_BATCH_AFTER`] (up to [`PG_BATCHES_IN_FLIGHT`] at once), so a batch waiting for a
/// key's lock does not hold up alerts with other keys. A later batch sharing a key with an
/// earlier one asks for its locks only once the earlier holds its own: for a key, batches
/// are recorded in the order they were taken. Otherwise they need not commit in that order:
/// notifications waiting together have none between them (a sender, Alertmanager too,
/// sends its next one after the answer to the last).
pub(super) async fn ingest_loop(dispatcher: Dispatcher, mut rx: mpsc::Receiver<IngestJob>) {
    // Ends once the replica has retired (alerts are refused from the start of shutdown).
    let retired = dispatcher.inner.retired.clone();
    let in_flight = match dispatcher.inner.store.backend() {
        crate::store::Backend::Postgres => PG_BATCHES_IN_FLIGHT,
        crate::store::Backend::Sqlite => 1,
    };
    let batches = Arc::new(tokio::sync::Semaphore::new(in_flight));
    // Told whenever a batch ends.
    let ended = Arc::new(tokio::sync::Notify::new());
    let mut last_started = tokio::time::Instant::now();
    // Batches started and not yet holding their locks.
    let mut unlocked: Vec<InFlight> = Vec::new();
    loop {
        // While a batch is in flight, wait for it to end, up to SECOND_BATCH_AFTER after it
        // started; then for a free batch. Notifications arriving meanwhile wait together for
        // the next one.
        if in_flight > 1 {
            let second_after = last_started + SECOND_BATCH_AFTER;
            while batches.available_permits() < in_flight {
                tokio::select! {
                    _ = ended.notified() => {}
                    _ = tokio::time::sleep_until(second_after) => break,
                }
            }
        }
        let Ok(permit) = batches.clone().acquire_owned().await else {
            return;
        };
        let Some(jobs) = take_waiting(&mut rx, MAX_BATCH, &retired).await else {
            return;
        };
        // Arrival order between batches sharing a key: this one asks for its locks only
        // once every earlier batch sharing one holds its own (the server then queues it
        // behind them until they commit). With one batch at a time there is none.
        let (locked, locked_rx) = watch::channel(false);
        let mut earlier: Vec<watch::Receiver<bool>> = Vec::new();
        if in_flight > 1 {
            unlocked.retain(|b| !*b.locked.borrow() && b.locked.has_changed().is_ok());
            let keys: HashSet<String> = keys_of(jobs.iter().map(|w| &w.job)).into_iter().collect();
            earlier = unlocked
                .iter()
                .filter(|b| !b.keys.is_disjoint(&keys))
                .map(|b| b.locked.clone())
                .collect();
            unlocked.push(InFlight {
                keys,
                locked: locked_rx,
            });
        }
        let recorder = dispatcher.clone();
        let tell = ended.clone();
        last_started = tokio::time::Instant::now();
        // Tracked with the dispatcher's loops: shutdown waits for batches in flight.
        dispatcher.inner.loops.spawn(async move {
            for mut b in earlier {
                // Err: that batch ended without its locks (it failed); nothing to wait for.
                let _ = b.wait_for(|held| *held).await;
            }
            let batch = IngestCommit {
                dispatcher: &recorder,
                locked: &locked,
            };
            commit_and_answer(&batch, jobs).await;
            drop(permit);
            tell.notify_one();
        });
    }
}

/// A batch in flight, as later batches see it until it holds its keys' locks.
struct InFlight {
    keys: HashSet<String>,
    /// True once it holds them; closed when the batch ended.
    locked: watch::Receiver<bool>,
}

/// The incident keys of a batch's alerts.
fn keys_of<'a>(jobs: impl Iterator<Item = &'a Notification>) -> Vec<String> {
    jobs.flat_map(|job| job.keys.iter().cloned()).collect()
}
