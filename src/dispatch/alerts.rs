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
    admission::{decide, incident_key, matching, Match, Verdict},
    DispatchError, Dispatcher, Prepared, RunRequest,
};
use crate::{
    config::AlertsConfig,
    event::AlertFacts,
    store::{AlertRecord, Batch, Incident, RunStatus},
    triggers::alertmanager::{Alert, AlertStatus},
};

/// What happened to one alert.
#[derive(Debug, Clone, Serialize)]
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

/// One notification waiting to be recorded.
pub struct IngestJob {
    alerts: Vec<Alert>,
    cfg: AlertsConfig,
    actor: String,
    reply: tokio::sync::oneshot::Sender<Result<Vec<AlertOutcome>, DispatchError>>,
}

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
    /// notification goes in chunks of [`ALERTS_PER_TURN`], one at a time, taking turns with every other notification waiting, so a small urgent one is never
    /// stuck behind ten thousand others. Each chunk is recorded all or nothing; when a later
    /// chunk fails the sender gets the error and resends the notification (Alertmanager
    /// does), and the chunks already recorded meet themselves at the door (deduplicated,
    /// nothing started twice).
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
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.inner
                .ingest
                .send(IngestJob {
                    alerts: chunk,
                    cfg: cfg.clone(),
                    actor: actor.to_string(),
                    reply,
                })
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

    /// Records one alert inside `batch`; the runs it starts are added to `prepared`.
    async fn ingest_one(
        &self,
        batch: &mut Batch,
        alert: &Alert,
        cfg: &AlertsConfig,
        actor: &str,
        prepared: &mut Vec<Prepared>,
    ) -> Result<AlertOutcome, DispatchError> {
        let key = incident_key(alert, cfg);
        let mut outcome = AlertOutcome {
            alertname: alert.name().to_string(),
            fingerprint: alert.fingerprint.clone(),
            status: alert.status.to_string(),
            incident: None,
            opened: false,
            runs: Vec::new(),
            notes: Vec::new(),
        };
        let labels = Value::Object(to_map(&alert.labels));
        let firing = alert.status == AlertStatus::Firing;
        // An incident opened by this very alert has no runs yet: no need to ask for them.
        let mut opened_here = false;
        let incident: Option<Incident> = match batch.open_incident_by_key(&key).await? {
            Some(i) => Some(i),
            None if firing => {
                opened_here = true;
                let title = alert
                    .annotations
                    .get("summary")
                    .cloned()
                    .unwrap_or_else(|| alert.name().to_string());
                // Opened when the alert started, but never in the future: an alert whose
                // `startsAt` lies ahead (a skewed clock) would otherwise stay "young" and
                // never meet an age condition.
                let received = self.inner.store.now();
                let opened = alert.starts_at_ms().unwrap_or(received).min(received);
                Some(batch.create_incident(
                    &key,
                    &format!("alert:{}", alert.name()),
                    &title,
                    &labels,
                    opened,
                ))
            }
            None => None,
        };
        outcome.incident = incident.as_ref().map(|i| i.id.clone());
        outcome.opened = opened_here;
        let matches = matching(&self.inner.catalog, alert, cfg.cooldown);
        let mut resolve_now = !firing;
        match &incident {
            None => outcome
                .notes
                .push("resolved, but no open incident has this key".into()),
            Some(incident) => {
                if matches.is_empty() {
                    self.inner.metrics.alert_unmatched();
                    outcome
                        .notes
                        .push("no playbook is triggered by this alert".into());
                }
                for Match {
                    playbook,
                    on_resolved,
                    cooldown,
                } in matches
                {
                    let last = if opened_here || (!firing && !on_resolved) {
                        None
                    } else {
                        batch
                            .last_incident_run(&incident.id, &playbook)
                            .await?
                            .and_then(|(status, at)| Some((RunStatus::parse(&status)?, at)))
                    };
                    let m = Match {
                        playbook,
                        on_resolved,
                        cooldown,
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
                    let facts = AlertFacts {
                        name: alert.name().to_string(),
                        status: alert.status.to_string(),
                        labels: to_map(&alert.labels),
                        annotations: to_map(&alert.annotations),
                    };
                    let run =
                        self.prepare(RunRequest::alert(&playbook, facts, &incident.id, actor))?;
                    batch.insert_run(&run.record);
                    if !firing {
                        // The run resolves the incident when it finishes.
                        resolve_now = false;
                    }
                    outcome
                        .notes
                        .push(format!("{playbook}: run {}", run.record.id));
                    outcome.runs.push(run.record.id.clone());
                    prepared.push(run);
                }
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
            annotations: Value::Object(to_map(&alert.annotations)),
            incident_id: outcome.incident.clone(),
            outcome: outcome.notes.join("; "),
        });
        Ok(outcome)
    }

    /// Records `jobs` in one transaction; on success queues their runs. On failure nothing
    /// of it is recorded and no run is queued (their reserved slots are released).
    /// `locked` is told once the batch holds its keys' locks.
    async fn ingest_batch(
        &self,
        jobs: &[IngestJob],
        locked: Option<&watch::Sender<bool>>,
    ) -> Result<Vec<Vec<AlertOutcome>>, DispatchError> {
        let mut batch = self.inner.store.batch().await?;
        // Every key's lock, open incident and latest runs in a few statements for the batch.
        let keys = keys_of(jobs);
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
            for alert in &job.alerts {
                of_job.push(
                    self.ingest_one(&mut batch, alert, &job.cfg, &job.actor, &mut prepared)
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

/// The ingester: takes every notification waiting, records them together, answers each.
/// When a batch fails, its notifications are retried one by one, so one bad notification
/// (or a full run queue) is answered on its own and does not fail the others.
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
        let first = tokio::select! {
            biased;
            job = rx.recv() => match job { Some(j) => j, None => return },
            _ = retired.cancelled() => return,
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Arrival order between batches sharing a key: this one asks for its locks only
        // once every earlier batch sharing one holds its own (the server then queues it
        // behind them until they commit). With one batch at a time there is none.
        let (locked, locked_rx) = watch::channel(false);
        let mut earlier: Vec<watch::Receiver<bool>> = Vec::new();
        if in_flight > 1 {
            unlocked.retain(|b| !*b.locked.borrow() && b.locked.has_changed().is_ok());
            let keys: HashSet<String> = keys_of(&jobs).into_iter().collect();
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
            record_and_answer(&recorder, jobs, &locked).await;
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
fn keys_of(jobs: &[IngestJob]) -> Vec<String> {
    jobs.iter()
        .flat_map(|job| job.alerts.iter().map(|a| incident_key(a, &job.cfg)))
        .collect()
}

/// Records one batch and answers its senders. When it fails, its notifications are
/// recorded one by one (each takes its locks anew; arrival order is not kept on this path).
async fn record_and_answer(
    dispatcher: &Dispatcher,
    mut jobs: Vec<IngestJob>,
    locked: &watch::Sender<bool>,
) {
    match dispatcher.ingest_batch(&jobs, Some(locked)).await {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Some(job) = jobs.pop() {
                let _ = job.reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, batch = jobs.len(), "alert batch failed; recording its notifications one by one");
            for job in jobs {
                let single = std::slice::from_ref(&job);
                let result = dispatcher
                    .ingest_batch(single, None)
                    .await
                    .map(|mut o| o.pop().unwrap_or_default());
                let _ = job.reply.send(result);
            }
        }
    }
}
