//! PostgreSQL: an ingest batch's rows as JSON parameters (`json_to_recordset($n::json)`), so
//! that the batch's insert statement has one text whatever the number of rows.
//!
//! Why: a `VALUES` list has a placeholder per value, so a batch of 1, 2 … 100 rows is 100
//! different statements, and PostgreSQL plans a prepared statement afresh for each of its
//! first five executions: nearly every batch was planned again (pg_stat_statements under
//! `cargo bench --bench alerts`: 1,111 plans for 1,481 multi-row batches, 0.44 ms each). One
//! text is parsed once per connection and its plan kept (docs/performance.md, session 15).
//!
//! Only inserts: an insert from a record set has one plan whatever the tables hold. The run
//! status changes (`run_updates.rs`) join `runs`, and a plan kept from a new, empty store —
//! a hash join over a scan of `runs` — would stay while the table grew (measured: 1.2 ms per
//! statement instead of 0.1); they keep their `VALUES`, planned with their values each time.
//! SQLite keeps its `VALUES` lists too: it plans a statement in microseconds, in process.

use std::{ops::Range, sync::LazyLock};

use serde::Serialize;
use sqlx::AnyConnection;

use super::{incidents::TimelineLine, runs::to_json, AlertRecord, Incident, RunRecord, StoreError};

/// Rows of one kind per statement: bounds a statement's parameter at a few megabytes.
pub(super) const ROWS_PER_STATEMENT: usize = 1000;

/// A table's columns as written, with their types in the JSON record set.
struct RecordSet {
    table: &'static str,
    columns: &'static [(&'static str, &'static str)],
}

impl RecordSet {
    fn names(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `INSERT INTO table (…) SELECT … FROM json_to_recordset($param::json) AS r(…)`.
    fn insert(&self, param: usize) -> String {
        let names = self.names();
        let defs = self
            .columns
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({names}) SELECT {names} FROM json_to_recordset(${param}::json) AS r({defs})",
            self.table
        )
    }
}

const INCIDENTS: RecordSet = RecordSet {
    table: "incidents",
    columns: &[
        ("id", "text"),
        ("incident_key", "text"),
        ("source", "text"),
        ("title", "text"),
        ("labels", "text"),
        ("status", "text"),
        ("facts", "text"),
        ("opened_at", "bigint"),
        ("resolved_at", "bigint"),
        ("resolved_by", "text"),
        ("updated_at", "bigint"),
    ],
};

const TIMELINE: RecordSet = RecordSet {
    table: "incident_timeline",
    columns: &[
        ("id", "text"),
        ("incident_id", "text"),
        ("at", "bigint"),
        ("kind", "text"),
        ("actor", "text"),
        ("message", "text"),
        ("details", "text"),
    ],
};

const RUNS: RecordSet = RecordSet {
    table: "runs",
    columns: &[
        ("id", "text"),
        ("playbook", "text"),
        ("version", "text"),
        ("trigger", "text"),
        ("event", "text"),
        ("dry_run", "bigint"),
        ("status", "text"),
        ("queued_at", "bigint"),
        ("incident_id", "text"),
        ("owner", "text"),
        ("started_at", "bigint"),
        ("replica", "text"),
    ],
};

const ALERTS: RecordSet = RecordSet {
    table: "alerts",
    columns: &[
        ("id", "text"),
        ("received_at", "bigint"),
        ("alertname", "text"),
        ("fingerprint", "text"),
        ("status", "text"),
        ("starts_at", "text"),
        ("labels", "text"),
        ("annotations", "text"),
        ("incident_id", "text"),
        ("outcome", "text"),
    ],
};

/// An ingest batch's rows — `$1` incidents, `$2` their timeline lines, `$3` runs, `$4` alert
/// rows — in one statement (`WITH … AS (INSERT …) INSERT …`); an empty kind is `[]`.
static BATCH_INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH w0 AS ({}), w1 AS ({}), w2 AS ({}) {}",
        INCIDENTS.insert(1),
        TIMELINE.insert(2),
        RUNS.insert(3),
        ALERTS.insert(4)
    )
});

/// Writes an ingest batch's rows on PostgreSQL: its four inserts as one statement
/// ([`BATCH_INSERT`]) — every statement is a round trip to the server, and under an alert
/// storm each waited about a millisecond for the server's turn on the CPU
/// (docs/performance.md), so the three saved come off every batch. More than
/// [`ROWS_PER_STATEMENT`] rows of a kind take one more statement per thousand, in the same
/// transaction.
pub(super) async fn insert_batch_on(
    conn: &mut AnyConnection,
    now: i64,
    incidents: &[Incident],
    timeline: &[TimelineLine],
    runs: &[RunRecord],
    alerts: &[AlertRecord],
) -> Result<(), StoreError> {
    let lens = [incidents.len(), timeline.len(), runs.len(), alerts.len()];
    for [i, t, r, a] in rounds(lens, ROWS_PER_STATEMENT) {
        sqlx::query(BATCH_INSERT.as_str())
            .bind(self::incidents(now, &incidents[i]))
            .bind(self::timeline(now, &timeline[t]))
            .bind(self::runs(&runs[r]))
            .bind(self::alerts(now, &alerts[a]))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The statements that write `lens` rows of four kinds, at most `per` of each kind in one:
/// for each statement, the range of each kind's rows it carries (empty once a kind is done).
fn rounds(lens: [usize; 4], per: usize) -> Vec<[Range<usize>; 4]> {
    let n = lens.iter().map(|len| len.div_ceil(per)).max().unwrap_or(0);
    (0..n)
        .map(|round| lens.map(|len| (round * per).min(len)..((round + 1) * per).min(len)))
        .collect()
}

/// `rows` as a JSON array (`[]` when there are none).
fn array<T: Serialize>(rows: impl Iterator<Item = T>) -> String {
    serde_json::to_string(&rows.collect::<Vec<T>>()).unwrap_or_else(|_| "[]".into())
}

#[derive(Serialize)]
struct IncidentRow<'a> {
    id: &'a str,
    incident_key: &'a str,
    source: &'a str,
    title: &'a str,
    labels: String,
    status: &'a str,
    facts: String,
    opened_at: i64,
    resolved_at: Option<i64>,
    resolved_by: Option<&'a str>,
    updated_at: i64,
}

pub(super) fn incidents(now: i64, incidents: &[Incident]) -> String {
    array(incidents.iter().map(|i| IncidentRow {
        id: &i.id,
        incident_key: &i.key,
        source: &i.source,
        title: &i.title,
        labels: i.labels.to_string(),
        status: i.status.as_str(),
        facts: i.facts.to_string(),
        opened_at: i.opened_at,
        resolved_at: i.resolved_at,
        resolved_by: i.resolved_by.as_deref(),
        updated_at: now,
    }))
}

#[derive(Serialize)]
struct TimelineRow<'a> {
    id: &'a str,
    incident_id: &'a str,
    at: i64,
    kind: &'a str,
    actor: &'a str,
    message: &'a str,
    details: String,
}

pub(super) fn timeline(now: i64, lines: &[TimelineLine]) -> String {
    array(lines.iter().map(|l| TimelineRow {
        id: &l.id,
        incident_id: &l.incident_id,
        at: now,
        kind: l.kind,
        actor: &l.actor,
        message: &l.message,
        details: l.details.to_string(),
    }))
}

#[derive(Serialize)]
struct RunRow<'a> {
    id: &'a str,
    playbook: &'a str,
    version: &'a str,
    trigger: String,
    event: String,
    dry_run: i64,
    status: &'a str,
    queued_at: i64,
    incident_id: Option<&'a str>,
    owner: Option<&'a str>,
    started_at: Option<i64>,
    replica: Option<&'a str>,
}

pub(super) fn runs(runs: &[RunRecord]) -> String {
    array(runs.iter().map(|run| RunRow {
        id: &run.id,
        playbook: &run.playbook,
        version: &run.version,
        trigger: to_json(&run.trigger),
        event: to_json(&run.event),
        dry_run: i64::from(run.dry_run),
        status: run.status.as_str(),
        queued_at: run.queued_at,
        incident_id: run.event.incident.as_deref(),
        owner: run.owner.as_deref(),
        started_at: run.started_at,
        replica: run.replica.as_deref(),
    }))
}

#[derive(Serialize)]
struct AlertRow<'a> {
    id: String,
    received_at: i64,
    alertname: &'a str,
    fingerprint: &'a str,
    status: &'a str,
    starts_at: &'a str,
    labels: String,
    annotations: String,
    incident_id: Option<&'a str>,
    outcome: &'a str,
}

pub(super) fn alerts(now: i64, alerts: &[AlertRecord]) -> String {
    array(alerts.iter().map(|a| AlertRow {
        id: uuid::Uuid::now_v7().to_string(),
        received_at: now,
        alertname: &a.alertname,
        fingerprint: &a.fingerprint,
        status: &a.status,
        starts_at: &a.starts_at,
        labels: a.labels.to_string(),
        annotations: a.annotations.to_string(),
        incident_id: a.incident_id.as_deref(),
        outcome: &a.outcome,
    }))
}

#[cfg(test)]
mod tests {
    use super::rounds;

    /// Every row of every kind is in exactly one statement, in order, and no statement carries
    /// more than `per` of a kind.
    #[test]
    fn a_batch_larger_than_a_statement_is_split_without_losing_a_row() {
        assert!(rounds([0, 0, 0, 0], 1000).is_empty());
        assert_eq!(rounds([1, 1, 1, 1], 1000), vec![[0..1, 0..1, 0..1, 0..1]]);
        let lens = [2500, 0, 1000, 1001];
        let split = rounds(lens, 1000);
        assert_eq!(split.len(), 3);
        for (kind, len) in lens.iter().enumerate() {
            let rows: Vec<usize> = split.iter().flat_map(|r| r[kind].clone()).collect();
            assert_eq!(rows, (0..*len).collect::<Vec<_>>(), "kind {kind}");
            assert!(split.iter().all(|r| r[kind].len() <= 1000));
        }
    }
}
