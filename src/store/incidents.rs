//! Incidents, their timeline, and the alerts that opened them.

use serde::Serialize;
use sqlx::{any::AnyRow, Any, AnyConnection, Executor, Row};

use super::{ms_to_rfc3339, ser_ms, ser_ms_opt, Store, StoreError};

/// Where an incident is. Only forward: open → acknowledged → resolved (or open → resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<IncidentStatus> {
        Some(match s {
            "open" => IncidentStatus::Open,
            "acknowledged" => IncidentStatus::Acknowledged,
            "resolved" => IncidentStatus::Resolved,
            _ => return None,
        })
    }
}

/// An incident as stored and shown.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Incident {
    pub id: String,
    /// What identifies "the same problem": the alert's fingerprint by default.
    pub key: String,
    /// `alert:NAME` or `manual`.
    pub source: String,
    pub title: String,
    pub labels: serde_json::Value,
    pub status: IncidentStatus,
    /// Highest escalation level reached (`L1`…`P1`), if any.
    pub level: Option<String>,
    /// Facts playbooks recorded; escalation conditions read them.
    pub facts: serde_json::Value,
    #[serde(serialize_with = "ser_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub opened_at: i64,
    #[serde(serialize_with = "ser_ms_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    #[serde(serialize_with = "ser_ms_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
}

impl Incident {
    /// A new incident, open, no level or facts yet, with a fresh time-ordered id.
    pub(super) fn opened(
        key: &str,
        source: &str,
        title: &str,
        labels: &serde_json::Value,
        opened_at: i64,
    ) -> Incident {
        Incident {
            id: uuid::Uuid::now_v7().to_string(),
            key: key.to_string(),
            source: source.to_string(),
            title: title.to_string(),
            labels: labels.clone(),
            status: IncidentStatus::Open,
            level: None,
            facts: serde_json::json!({}),
            opened_at,
            acked_at: None,
            acked_by: None,
            resolved_at: None,
            resolved_by: None,
        }
    }
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub message: String,
    pub details: serde_json::Value,
}

pub(super) const COLUMNS: &str =
    "id, incident_key, source, title, labels, status, level, facts, opened_at, \
                       acked_at, acked_by, resolved_at, resolved_by";

fn json(column: &'static str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        column,
        message: e.to_string(),
    })
}

pub(super) fn incident_from_row(row: &AnyRow) -> Result<Incident, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Incident {
        id: row.try_get("id")?,
        key: row.try_get("incident_key")?,
        source: row.try_get("source")?,
        title: row.try_get("title")?,
        labels: json("incidents.labels", &row.try_get::<String, _>("labels")?)?,
        status: IncidentStatus::parse(&status).ok_or(StoreError::Corrupt {
            column: "incidents.status",
            message: status.clone(),
        })?,
        level: row.try_get("level")?,
        facts: json("incidents.facts", &row.try_get::<String, _>("facts")?)?,
        opened_at: row.try_get("opened_at")?,
        acked_at: row.try_get("acked_at")?,
        acked_by: row.try_get("acked_by")?,
        resolved_at: row.try_get("resolved_at")?,
        resolved_by: row.try_get("resolved_by")?,
    })
}

impl Store {
    /// The unresolved incident with this key, if any.
    pub async fn open_incident_by_key(&self, key: &str) -> Result<Option<Incident>, StoreError> {
        open_incident_by_key_on(&self.writer, key).await
    }

    /// Opens an incident (status `open`, no level yet).
    pub async fn create_incident(
        &self,
        key: &str,
        source: &str,
        title: &str,
        labels: &serde_json::Value,
        opened_at: i64,
    ) -> Result<Incident, StoreError> {
        let mut conn = self.writer.acquire().await?;
        create_incident_on(&mut conn, self.now(), key, source, title, labels, opened_at).await
    }

    pub async fn get_incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM incidents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(incident_from_row).transpose()
    }

    /// Newest first, optionally only one status.
    pub async fn list_incidents(
        &self,
        status: Option<IncidentStatus>,
        limit: u32,
    ) -> Result<Vec<Incident>, StoreError> {
        let rows = match status {
            Some(s) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM incidents WHERE status = $1 ORDER BY opened_at DESC, id DESC LIMIT $2"
                ))
                .bind(s.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM incidents ORDER BY opened_at DESC, id DESC LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?
            }
        };
        rows.iter().map(incident_from_row).collect()
    }

    /// Up to `limit` incidents with `status` whose id sorts after `after` (ids are
    /// time-ordered UUIDv7), by id: the evaluator pages through every unresolved incident,
    /// however many, with an index range scan per page.
    pub async fn incidents_page(
        &self,
        status: IncidentStatus,
        after: &str,
        limit: u32,
    ) -> Result<Vec<Incident>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM incidents WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(status.as_str())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(incident_from_row).collect()
    }

    /// Acknowledges an open incident. Returns false if it was not open.
    pub async fn ack_incident(&self, id: &str, by: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let done = sqlx::query(
            "UPDATE incidents SET status = 'acknowledged', acked_at = $1, acked_by = $2, updated_at = $1 \
             WHERE id = $3 AND status = 'open'",
        )
        .bind(now)
        .bind(by)
        .bind(id)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 1 {
            self.add_timeline(
                id,
                "acknowledged",
                by,
                &format!("acknowledged by {by}"),
                &serde_json::json!({}),
            )
            .await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Raises the incident to `level` unless it already is at one of `at_or_above` (the
    /// table's levels from `level` up): a compare-and-set, so levels only go up even when
    /// a playbook and the evaluator (or two replicas) raise it at once. True if raised.
    pub async fn raise_incident_level(
        &self,
        id: &str,
        level: &str,
        at_or_above: &[String],
    ) -> Result<bool, StoreError> {
        raise_level_on(&self.writer, self.now(), id, level, at_or_above).await
    }

    /// Sets one fact, leaving the others as they are (one statement: facts two runs write
    /// at once are all kept).
    pub async fn set_incident_fact(
        &self,
        id: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        set_fact_on(&self.writer, self.backend, self.now(), id, key, value).await
    }

    pub async fn add_timeline(
        &self,
        incident_id: &str,
        kind: &str,
        actor: &str,
        message: &str,
        details: &serde_json::Value,
    ) -> Result<(), StoreError> {
        add_timeline_on(
            &self.writer,
            self.now(),
            incident_id,
            kind,
            actor,
            message,
            details,
        )
        .await
    }

    pub async fn timeline(&self, incident_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, kind, actor, message, details FROM incident_timeline WHERE incident_id = $1 ORDER BY at, id",
        )
        .bind(incident_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TimelineEntry {
                    at: ms_to_rfc3339(r.try_get("at")?),
                    kind: r.try_get("kind")?,
                    actor: r.try_get("actor")?,
                    message: r.try_get("message")?,
                    details: json(
                        "incident_timeline.details",
                        &r.try_get::<String, _>("details")?,
                    )?,
                })
            })
            .collect()
    }

    /// The latest run of `playbook` for an incident: (status, queued_at).
    pub async fn last_incident_run(
        &self,
        incident_id: &str,
        playbook: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        last_incident_run_on(&self.writer, incident_id, playbook).await
    }
}

// The statements alert ingestion uses, on any executor: the writer pool for one statement,
// or a transaction when a whole batch of alerts is committed at once (see `batch.rs`).

pub(super) async fn open_incident_by_key_on<'c, E: Executor<'c, Database = Any>>(
    e: E,
    key: &str,
) -> Result<Option<Incident>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM incidents WHERE incident_key = $1 AND status <> 'resolved' \
         ORDER BY opened_at DESC LIMIT 1"
    ))
    .bind(key)
    .fetch_optional(e)
    .await?;
    row.as_ref().map(incident_from_row).transpose()
}

pub(super) async fn create_incident_on(
    conn: &mut AnyConnection,
    now: i64,
    key: &str,
    source: &str,
    title: &str,
    labels: &serde_json::Value,
    opened_at: i64,
) -> Result<Incident, StoreError> {
    let incident = Incident::opened(key, source, title, labels, opened_at);
    let id = incident.id.clone();
    sqlx::query(
        "INSERT INTO incidents (id, incident_key, source, title, labels, status, facts, opened_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'open', '{}', $6, $7)",
    )
    .bind(&id)
    .bind(key)
    .bind(source)
    .bind(title)
    .bind(labels.to_string())
    .bind(opened_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    add_timeline_on(
        &mut *conn,
        now,
        &id,
        "opened",
        "runbookd",
        &format!("opened: {title}"),
        &serde_json::json!({ "labels": labels }),
    )
    .await?;
    Ok(incident)
}

/// A timeline line a batch holds until its commit (`batch.rs`, `json_rows.rs`).
pub(super) struct TimelineLine {
    pub(super) id: String,
    pub(super) incident_id: String,
    pub(super) kind: &'static str,
    pub(super) actor: String,
    pub(super) message: String,
    pub(super) details: serde_json::Value,
}

pub(super) async fn add_timeline_on<'c, E: Executor<'c, Database = Any>>(
    e: E,
    now: i64,
    incident_id: &str,
    kind: &str,
    actor: &str,
    message: &str,
    details: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO incident_timeline (id, incident_id, at, kind, actor, message, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(incident_id)
    .bind(now)
    .bind(kind)
    .bind(actor)
    .bind(message)
    .bind(details.to_string())
    .execute(e)
    .await?;
    Ok(())
}

pub(super) async fn last_incident_run_on<'c, E: Executor<'c, Database = Any>>(
    e: E,
    incident_id: &str,
    playbook: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    let row = sqlx::query(
        "SELECT status, queued_at FROM runs WHERE incident_id = $1 AND playbook = $2 \
         ORDER BY queued_at DESC, id DESC LIMIT 1",
    )
    .bind(incident_id)
    .bind(playbook)
    .fetch_optional(e)
    .await?;
    row.map(|r| Ok((r.try_get("status")?, r.try_get("queued_at")?)))
        .transpose()
}

/// `UPDATE incidents SET level` unless the level is already `at_or_above`.
pub(super) async fn raise_level_on<'c, E: Executor<'c, Database = Any>>(
    e: E,
    now: i64,
    id: &str,
    level: &str,
    at_or_above: &[String],
) -> Result<bool, StoreError> {
    let mut sql = String::from(
        "UPDATE incidents SET level = $1, updated_at = $2 WHERE id = $3 AND status <> 'resolved' \
         AND (level IS NULL",
    );
    if !at_or_above.is_empty() {
        sql.push_str(" OR level NOT IN (");
        for i in 0..at_or_above.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", i + 4));
        }
        sql.push(')');
    }
    sql.push(')');
    let mut q = sqlx::query(&sql).bind(level).bind(now).bind(id);
    for l in at_or_above {
        q = q.bind(l.clone());
    }
    Ok(q.execute(e).await?.rows_affected() == 1)
}

/// Sets `facts[key] = value` in the store itself (`jsonb ||` on PostgreSQL, `json_set` on
/// SQLite), never by reading the map and writing it back. False if no such incident.
pub(super) async fn set_fact_on<'c, E: Executor<'c, Database = Any>>(
    e: E,
    backend: super::Backend,
    now: i64,
    id: &str,
    key: &str,
    value: &serde_json::Value,
) -> Result<bool, StoreError> {
    let done = match backend {
        super::Backend::Postgres => {
            sqlx::query(
                "UPDATE incidents SET facts = (facts::jsonb || jsonb_build_object($1::text, $2::jsonb))::text, \
                 updated_at = $3 WHERE id = $4",
            )
            .bind(key)
            .bind(value.to_string())
            .bind(now)
            .bind(id)
            .execute(e)
            .await?
        }
        super::Backend::Sqlite => {
            // A JSON path label in double quotes takes any key but one holding a quote,
            // which `set_fact` refuses.
            sqlx::query(
                "UPDATE incidents SET facts = json_set(facts, $1, json($2)), updated_at = $3 WHERE id = $4",
            )
            .bind(format!("$.\"{key}\""))
            .bind(value.to_string())
            .bind(now)
            .bind(id)
            .execute(e)
            .await?
        }
    };
    Ok(done.rows_affected() == 1)
}
