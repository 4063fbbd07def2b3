//! Several writes committed as one transaction. Alert ingestion records every alert waiting
//! at the door — incidents, their timelines, runs, alert rows — in one commit (group
//! commit): one round of locking and one WAL append per batch instead of six per alert.
//!
//! A batch also reads in bulk: [`Batch::load_keys`] takes the locks of every incident key the
//! batch will touch, reads their unresolved incidents and the latest run of each, in a few
//! statements for the whole batch. What the batch writes — new incidents, their timeline
//! lines, runs, alert rows — waits in memory until [`Batch::commit`], many rows per
//! statement, and the batch answers for it meanwhile. On PostgreSQL every statement is a
//! round trip to the server: a new alert used to cost four in sequence (lock, lookup, insert,
//! timeline line); now a batch of new alerts costs five whatever its size (the pool's ping,
//! `BEGIN`, locks and lookup in one call, the inserts as one statement, `COMMIT`), one more
//! when some of its keys have open incidents (their latest runs).

use sqlx::{Any, Row, Transaction};

use std::collections::{HashMap, HashSet};

use super::{
    alerts::record_alerts_on,
    incidents::{incident_from_row, last_incident_run_on, TimelineLine, COLUMNS},
    json_rows,
    resolution::resolve_incident_on,
    runs::insert_runs_on,
    AlertRecord, Incident, IncidentStatus, RunRecord, Store, StoreError,
};

/// Keys (or incident ids) per lookup statement: well under SQLite's 32,766 bound values.
const KEYS_PER_LOOKUP: usize = 500;
/// On PostgreSQL: a `VALUES` row per key (planning time grows with them).
const PG_KEYS_PER_LOOKUP: usize = 100;

/// An open transaction on the writer; nothing is visible to others until [`Batch::commit`].
pub struct Batch {
    tx: Transaction<'static, Any>,
    /// Told whether the commit went through (`/readyz` shows a failing one).
    store: Store,
    now: i64,
    backend: super::Backend,
    /// Runs and alert rows are written at commit, many per statement; until then the
    /// batch answers for them itself.
    runs: Vec<RunRecord>,
    alerts: Vec<AlertRecord>,
    /// (incident, playbook) → queued_at of the latest run recorded in this batch.
    queued: HashMap<(String, String), i64>,
    /// Key → its unresolved incident (`None`: it has none), for every key locked and read
    /// by [`Batch::load_keys`] and kept up to date by this batch's own opens and resolves.
    open: HashMap<String, Option<Incident>>,
    /// Incidents whose latest runs were read: (incident, playbook) → (status, queued_at).
    runs_read: HashSet<String>,
    last_runs: HashMap<(String, String), (String, i64)>,
    /// Incidents this batch opened, and timeline lines of theirs, written at commit.
    opened: Vec<Incident>,
    timeline: Vec<TimelineLine>,
}

impl Store {
    /// Starts a batch; its timestamps are the store clock's now.
    pub async fn batch(&self) -> Result<Batch, StoreError> {
        Ok(Batch {
            tx: self.writer.begin().await?,
            store: self.clone(),
            now: self.now(),
            backend: self.backend,
            runs: Vec::new(),
            alerts: Vec::new(),
            queued: HashMap::new(),
            open: HashMap::new(),
            runs_read: HashSet::new(),
            last_runs: HashMap::new(),
            opened: Vec::new(),
            timeline: Vec::new(),
        })
    }
}

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Batch {
    /// `select … column IN ($1…$n)`; on PostgreSQL, `select … column = k` once per key `k`
    /// of a `VALUES` list (a lateral subquery, kept apart from the join by `OFFSET 0`).
    /// PostgreSQL estimates an IN list of n keys on a column it has no statistics for (a new
    /// store, or autovacuum behind or off) at n × 0.5 % of the table: for 31 keys among
    /// 14,600 incidents it read the whole table (2.7–4 ms, growing with history, on the
    /// ingester's path), and spelt as a `UNION ALL` of single keys it started two parallel
    /// workers (9–11 ms). Per key it is a nested loop of index probes (0.26 ms) whatever the
    /// statistics say. SQLite probes the index for every IN value anyway.
    fn by_key(&self, select: &str, column: &str, n: usize) -> String {
        match self.backend {
            super::Backend::Sqlite => format!("{select} {column} IN ({})", placeholders(1, n)),
            super::Backend::Postgres => format!(
                "SELECT matched.* FROM (VALUES {}) AS keys(k) CROSS JOIN LATERAL \
                 ({select} {column} = keys.k OFFSET 0) AS matched",
                (1..=n)
                    .map(|i| format!("(${i})"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// Keys per lookup statement.
    fn keys_per_lookup(&self) -> usize {
        match self.backend {
            super::Backend::Sqlite => KEYS_PER_LOOKUP,
            super::Backend::Postgres => PG_KEYS_PER_LOOKUP,
        }
    }

    /// Locks every key in `keys` until the batch ends and reads what the batch needs to know
    /// about them: the unresolved incident of each and the latest run of each of those
    /// incidents' playbooks. Keys already loaded are skipped.
    ///
    /// On PostgreSQL the locks are transaction-scoped advisory locks on `hashtext(key)`, all
    /// taken by one statement in hash order, so two replicas that receive the same alert
    /// cannot both open its incident or both start its run, and two batches sharing keys
    /// take them in the same order (a deadlock would fail one of them; its notifications are
    /// then retried one by one). SQLite has one writer anyway.
    pub async fn load_keys<'k>(
        &mut self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<(), StoreError> {
        let mut keys: Vec<&str> = keys
            .into_iter()
            .filter(|k| !self.open.contains_key(*k))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        for k in &keys {
            self.open.insert((*k).to_string(), None);
        }
        // PostgreSQL: the locks and the lookup in one round trip, through the function of
        // migration 12. It takes every key's lock in hash order (`EXPLAIN VERBOSE` of its lock
        // statement over an unnest of literal keys shows `pg_advisory_xact_lock` evaluated
        // above the Sort/Unique of the hashes), then reads with a snapshot of its own taken after the locks are granted (a
        // VOLATILE function's statements each take a fresh one), so it sees what a batch that
        // held a lock before committed. At most 256 × 100 keys: within PostgreSQL's 65,535
        // bound values. SQLite has one writer: no locks, and the lookup by chunks.
        let statements: Vec<(String, &[&str])> = match self.backend {
            super::Backend::Postgres => vec![(
                format!(
                    "SELECT {COLUMNS} FROM runbookd_lock_open_incidents(VARIADIC ARRAY[{}])",
                    placeholders(1, keys.len())
                ),
                &keys[..],
            )],
            super::Backend::Sqlite => keys
                .chunks(KEYS_PER_LOOKUP)
                .map(|chunk| {
                    (
                        self.by_key(
                            &format!(
                                "SELECT {COLUMNS} FROM incidents WHERE status <> 'resolved' AND"
                            ),
                            "incident_key",
                            chunk.len(),
                        ),
                        chunk,
                    )
                })
                .collect(),
        };
        for (sql, chunk) in statements {
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(*k);
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                let incident = incident_from_row(&row)?;
                // The newest unresolved one, as `open_incident_by_key` answers.
                let slot = self.open.entry(incident.key.clone()).or_insert(None);
                let newer = slot.as_ref().is_none_or(|held| {
                    (incident.opened_at, &incident.id) > (held.opened_at, &held.id)
                });
                if newer {
                    *slot = Some(incident);
                }
            }
        }
        let found: Vec<String> = keys
            .iter()
            .filter_map(|k| Some(self.open.get(*k)?.as_ref()?.id.clone()))
            .collect();
        for chunk in found.chunks(self.keys_per_lookup()) {
            let sql = format!(
                "SELECT incident_id, playbook, status, queued_at FROM (\
                 SELECT incident_id, playbook, status, queued_at, ROW_NUMBER() OVER \
                 (PARTITION BY incident_id, playbook ORDER BY queued_at DESC, id DESC) AS newest \
                 FROM ({}) AS of_incidents) AS latest WHERE newest = 1",
                self.by_key(
                    "SELECT incident_id, playbook, status, queued_at, id FROM runs WHERE",
                    "incident_id",
                    chunk.len()
                )
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                self.last_runs.insert(
                    (row.try_get("incident_id")?, row.try_get("playbook")?),
                    (row.try_get("status")?, row.try_get("queued_at")?),
                );
            }
            self.runs_read.extend(chunk.iter().cloned());
        }
        Ok(())
    }

    /// The unresolved incident with this key, including one this batch opened. A key not
    /// given to [`Batch::load_keys`] is locked and read now.
    pub async fn open_incident_by_key(
        &mut self,
        key: &str,
    ) -> Result<Option<Incident>, StoreError> {
        self.load_keys([key]).await?;
        Ok(self.open.get(key).cloned().flatten())
    }

    /// Opens an incident (written at commit, with its "opened" timeline line).
    pub fn create_incident(
        &mut self,
        key: &str,
        source: &str,
        title: &str,
        labels: &serde_json::Value,
        opened_at: i64,
    ) -> Incident {
        let incident = Incident::opened(key, source, title, labels, opened_at);
        self.timeline.push(TimelineLine {
            id: uuid::Uuid::now_v7().to_string(),
            incident_id: incident.id.clone(),
            kind: "opened",
            actor: "runbookd".into(),
            message: format!("opened: {title}"),
            details: serde_json::json!({ "labels": labels }),
        });
        self.open.insert(key.to_string(), Some(incident.clone()));
        self.opened.push(incident.clone());
        incident
    }

    /// Resolves an incident that is not resolved yet. False if it already was.
    pub async fn resolve_incident(
        &mut self,
        id: &str,
        by: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        let resolved = match self.opened.iter_mut().find(|i| i.id == id) {
            Some(i) if i.status == IncidentStatus::Resolved => false,
            Some(i) => {
                i.status = IncidentStatus::Resolved;
                i.resolved_at = Some(self.now);
                i.resolved_by = Some(by.to_string());
                self.timeline.push(TimelineLine {
                    id: uuid::Uuid::now_v7().to_string(),
                    incident_id: id.to_string(),
                    kind: "resolved",
                    actor: by.to_string(),
                    message: why.to_string(),
                    details: serde_json::json!({}),
                });
                true
            }
            None => resolve_incident_on(&mut self.tx, self.now, id, by, why).await?,
        };
        for slot in self.open.values_mut() {
            if slot.as_ref().is_some_and(|i| i.id == id) {
                *slot = None;
            }
        }
        Ok(resolved)
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
        if self.runs_read.contains(incident_id) {
            return Ok(self.last_runs.get(&key).cloned());
        }
        if self.opened.iter().any(|i| i.id == incident_id) {
            return Ok(None);
        }
        last_incident_run_on(&mut *self.tx, incident_id, playbook).await
    }

    /// Records a queued run (written at commit).
    pub fn insert_run(&mut self, run: &RunRecord) {
        if let Some(incident) = run.event.incident.as_deref() {
            self.queued
                .insert((incident.to_string(), run.playbook.clone()), run.queued_at);
        }
        self.runs.push(run.clone());
    }

    /// Records a received alert (written at commit).
    pub fn record_alert(&mut self, a: AlertRecord) {
        self.alerts.push(a);
    }

    /// Writes the incidents, timeline lines, runs and alert rows, then makes every write of
    /// the batch durable at once.
    pub async fn commit(self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let result = self.commit_once().await;
        store.observe_write(&result);
        result
    }

    async fn commit_once(mut self) -> Result<(), StoreError> {
        match self.backend {
            super::Backend::Postgres => {
                json_rows::insert_batch_on(
                    &mut self.tx,
                    self.now,
                    &self.opened,
                    &self.timeline,
                    &self.runs,
                    &self.alerts,
                )
                .await?;
            }
            super::Backend::Sqlite => {
                let (now, rows) = (self.now, super::ROWS_PER_INSERT);
                for chunk in self.opened.chunks(rows) {
                    let (head, cols) = INCIDENT_INSERT;
                    let sql = super::insert_values(head, cols, chunk.len());
                    bind_incidents(sqlx::query(&sql), now, chunk)
                        .execute(&mut *self.tx)
                        .await?;
                }
                for chunk in self.timeline.chunks(rows) {
                    let (head, cols) = TIMELINE_INSERT;
                    let sql = super::insert_values(head, cols, chunk.len());
                    bind_timeline(sqlx::query(&sql), now, chunk)
                        .execute(&mut *self.tx)
                        .await?;
                }
                insert_runs_on(&mut self.tx, &self.runs).await?;
                record_alerts_on(&mut self.tx, now, &self.alerts).await?;
            }
        }
        self.tx.commit().await?;
        Ok(())
    }
}

const INCIDENT_INSERT: (&str, usize) = (
    "INSERT INTO incidents (id, incident_key, source, title, labels, status, facts, opened_at, \
     resolved_at, resolved_by, updated_at)",
    11,
);

fn bind_incidents<'q>(
    mut q: super::AnyQuery<'q>,
    now: i64,
    incidents: &'q [Incident],
) -> super::AnyQuery<'q> {
    for i in incidents {
        q = q
            .bind(&i.id)
            .bind(&i.key)
            .bind(&i.source)
            .bind(&i.title)
            .bind(i.labels.to_string())
            .bind(i.status.as_str())
            .bind(i.facts.to_string())
            .bind(i.opened_at)
            .bind(i.resolved_at)
            .bind(i.resolved_by.clone())
            .bind(now);
    }
    q
}

const TIMELINE_INSERT: (&str, usize) = (
    "INSERT INTO incident_timeline (id, incident_id, at, kind, actor, message, details)",
    7,
);

fn bind_timeline<'q>(
    mut q: super::AnyQuery<'q>,
    now: i64,
    lines: &'q [TimelineLine],
) -> super::AnyQuery<'q> {
    for l in lines {
        q = q
            .bind(&l.id)
            .bind(&l.incident_id)
            .bind(now)
            .bind(l.kind)
            .bind(&l.actor)
            .bind(&l.message)
            .bind(l.details.to_string());
    }
    q
}

#[cfg(test)]
mod tests;
