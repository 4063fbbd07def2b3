//! Several writes committed as one transaction. Alert ingestion records every alert waiting
//! at the door — incidents, their timelines, runs, alert rows — in one commit (group
//! commit): one round of locking and one WAL append per batch instead of six per alert.

use sqlx::{Any, Transaction};

use std::collections::HashMap;

use super::{
    incidents::{
        create_incident_on, last_incident_run_on, open_incident_by_key_on, record_alerts_on,
        resolve_incident_on,
    },
    runs::insert_runs_on,
    AlertRecord, Incident, RunRecord, Store, StoreError,
};

/// An open transaction on the writer; nothing is visible to others until [`Batch::commit`].
pub struct Batch {
    tx: Transaction<'static, Any>,
    now: i64,
    backend: super::Backend,
    /// Runs and alert rows are written at commit, many per statement; until then the
    /// batch answers for them itself.
    runs: Vec<RunRecord>,
    alerts: Vec<AlertRecord>,
    /// (incident, playbook) → queued_at of the latest run recorded in this batch.
    queued: HashMap<(String, String), i64>,
}

impl Store {
    /// Starts a batch; its timestamps are the store clock's now.
    pub async fn batch(&self) -> Result<Batch, StoreError> {
        Ok(Batch {
            tx: self.writer.begin().await?,
            now: self.now(),
            backend: self.backend,
            runs: Vec::new(),
            alerts: Vec::new(),
            queued: HashMap::new(),
        })
    }
}

impl Batch {
    /// Holds `key` until the batch ends, against other replicas sharing a PostgreSQL store
    /// (a transaction-scoped advisory lock), so two replicas that receive the same alert
    /// cannot both open its incident or both start its run. SQLite has one writer anyway.
    /// Two batches locking keys in opposite orders deadlock; PostgreSQL then fails one of
    /// them, and its notifications are retried one by one.
    pub async fn lock_key(&mut self, key: &str) -> Result<(), StoreError> {
        if self.backend == super::Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1)::bigint)")
                .bind(key)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// The unresolved incident with this key, including one this batch created.
    pub async fn open_incident_by_key(
        &mut self,
        key: &str,
    ) -> Result<Option<Incident>, StoreError> {
        open_incident_by_key_on(&mut *self.tx, key).await
    }

    pub async fn create_incident(
        &mut self,
        key: &str,
        source: &str,
        title: &str,
        labels: &serde_json::Value,
        opened_at: i64,
    ) -> Result<Incident, StoreError> {
        create_incident_on(
            &mut self.tx,
            self.now,
            key,
            source,
            title,
            labels,
            opened_at,
        )
        .await
    }

    pub async fn resolve_incident(
        &mut self,
        id: &str,
        by: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        resolve_incident_on(&mut self.tx, self.now, id, by, why).await
    }

    /// The latest run of `playbook` for an incident, including one this batch recorded
    /// (which is the latest: it is still queued).
    pub async fn last_incident_run(
        &mut self,
        incident_id: &str,
        playbook: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let key = (incident_id.to_string(), playbook.to_string());
        if let Some(queued_at) = self.queued.get(&key) {
            return Ok(Some(("queued".into(), *queued_at)));
        }
        last_incident_run_on(&mut *self.tx, incident_id, playbook).await
    }

    /// Records a queued run (written at commit).
    pub fn insert_run(&mut self, run: &RunRecord) {
        if let Some(incident) = run.event["incident"].as_str() {
            self.queued
                .insert((incident.to_string(), run.playbook.clone()), run.queued_at);
        }
        self.runs.push(run.clone());
    }

    /// Records a received alert (written at commit).
    pub fn record_alert(&mut self, a: AlertRecord) {
        self.alerts.push(a);
    }

    /// Writes the runs and alert rows, then makes every write of the batch durable at once.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        insert_runs_on(&mut self.tx, &self.runs).await?;
        record_alerts_on(&mut self.tx, self.now, &self.alerts).await?;
        self.tx.commit().await?;
        Ok(())
    }
}
