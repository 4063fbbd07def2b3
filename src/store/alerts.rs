//! The alerts received, each with what runbookd did about it (the incident it went to, the
//! runs it started or why none): recorded in the ingest batch that acted on them.

use sqlx::AnyConnection;

use super::StoreError;

/// An alert as received, with what runbookd did about it.
#[derive(Debug, Clone)]
pub struct AlertRecord {
    pub alertname: String,
    pub fingerprint: String,
    pub status: String,
    pub starts_at: String,
    pub labels: serde_json::Value,
    pub annotations: serde_json::Value,
    pub incident_id: Option<String>,
    pub outcome: String,
}

/// `INSERT INTO alerts` of a batch's alert rows.
const ALERT_INSERT: (&str, usize) = (
    "INSERT INTO alerts (id, received_at, alertname, fingerprint, status, starts_at, labels, annotations, incident_id, outcome)",
    10,
);

/// Binds [`ALERT_INSERT`]'s values for `alerts`, received `now`.
fn bind_alerts<'q>(
    mut q: super::AnyQuery<'q>,
    now: i64,
    alerts: &'q [AlertRecord],
) -> super::AnyQuery<'q> {
    for a in alerts {
        q = q
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(now)
            .bind(&a.alertname)
            .bind(&a.fingerprint)
            .bind(&a.status)
            .bind(&a.starts_at)
            .bind(a.labels.to_string())
            .bind(a.annotations.to_string())
            .bind(a.incident_id.clone())
            .bind(&a.outcome);
    }
    q
}

/// Records received alerts and their outcomes, many rows per statement.
pub(super) async fn record_alerts_on(
    conn: &mut AnyConnection,
    now: i64,
    alerts: &[AlertRecord],
) -> Result<(), StoreError> {
    let (head, cols) = ALERT_INSERT;
    for chunk in alerts.chunks(super::ROWS_PER_INSERT) {
        let sql = super::insert_values(head, cols, chunk.len());
        bind_alerts(sqlx::query(&sql), now, chunk)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
