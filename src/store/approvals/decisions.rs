//! Humans' decisions on approvals, and nobody's: each a compare-and-set on the approval,
//! recorded in one transaction with the follow-up run it starts, the audit entry and the
//! incident's timeline.

use sqlx::Row;

use super::{
    approval, audit_entry, Approval, ApprovalStatus, DecideError, Decided, Decision, COLUMNS,
    GRANT_USE_WINDOW_MS,
};
use crate::store::{
    audit::audit_on,
    incidents::{add_timeline_on, set_fact_on},
    outbox::enqueue_on,
    runs::{insert_runs_on, to_json},
    RunRecord, Store, StoreError,
};

/// Resolving an incident withdraws its pending approvals (in the resolution's transaction):
/// each a compare-and-set to `withdrawn`, audited (`approval.withdraw`, by who resolved),
/// on the timeline, and — where the request was announced — a message on the same channel
/// saying it is withdrawn (a press on the old buttons then answers 409). No follow-up run:
/// the incident is over. Returns how many were withdrawn.
pub(in crate::store) async fn withdraw_approvals_on(
    conn: &mut sqlx::AnyConnection,
    now: i64,
    incident: &str,
    by: &str,
) -> Result<usize, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE incident_id = $1 AND status = 'pending'"
    ))
    .bind(incident)
    .fetch_all(&mut *conn)
    .await?;
    let mut withdrawn = 0;
    for row in &rows {
        let mut a = approval(row)?;
        let done = sqlx::query(
            "UPDATE approvals SET status = 'withdrawn', decided_at = $1 \
             WHERE id = $2 AND status = 'pending'",
        )
        .bind(now)
        .bind(&a.id)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() != 1 {
            continue;
        }
        withdrawn += 1;
        a.status = ApprovalStatus::Withdrawn;
        a.decided_at = Some(now);
        audit_on(&mut *conn, now, &audit_entry(by, "withdraw", &a, None)).await?;
        add_timeline_on(
            &mut *conn,
            now,
            incident,
            "approval",
            by,
            &format!(
                "approval of {} {} withdrawn: the incident is resolved",
                a.action, a.target
            ),
            &serde_json::json!({ "approval": a.id }),
        )
        .await?;
        // Where it was announced (the outbox keeps the channel of each message).
        let asked = sqlx::query(
            "SELECT channel, payload FROM outbox WHERE incident_id = $1 AND kind = 'approval'",
        )
        .bind(incident)
        .fetch_all(&mut *conn)
        .await?;
        let mut channels = std::collections::BTreeSet::new();
        for row in &asked {
            let payload: String = row.try_get("payload")?;
            let names_it = serde_json::from_str::<serde_json::Value>(&payload)
                .is_ok_and(|p| p["approval"].as_str() == Some(a.id.as_str()));
            if names_it {
                channels.insert(row.try_get::<String, _>("channel")?);
            }
        }
        for channel in channels {
            let message = serde_json::json!({
                "kind": "approval_withdrawn",
                "title": format!("runbookd: approval of {} {} withdrawn", a.action, a.target),
                "text": format!(
                    "{} no longer asks to {} {}: incident {incident} was resolved by {by}. \
                     Nothing to decide (approval {}).",
                    a.playbook, a.action, a.target, a.id
                ),
                "incident": incident,
                "level": null,
                "approval": a.id,
            });
            enqueue_on(
                &mut *conn,
                now,
                &channel,
                Some(incident),
                "approval_withdrawn",
                &message,
            )
            .await?;
        }
    }
    Ok(withdrawn)
}

impl Store {
    /// Records `by`'s decision on a pending approval (a compare-and-set on its status and
    /// decisions). When it decides the approval — a denial, or the last approver needed —
    /// the run `follow_up` builds is recorded with it, for whichever replica claims it.
    pub async fn decide_approval(
        &self,
        id: &str,
        by: &str,
        approve: bool,
        comment: &str,
        follow_up: impl FnOnce(&Approval) -> RunRecord,
    ) -> Result<Decided, DecideError> {
        let now = self.now();
        let mut tx = self.writer.begin().await.map_err(StoreError::from)?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| DecideError::NotFound(id.to_string()))?;
        let mut a = approval(&row)?;
        if a.status != ApprovalStatus::Pending {
            return Err(DecideError::NotPending {
                id: a.id,
                status: a.status,
            });
        }
        if now >= a.expires_at {
            return Err(DecideError::Expired(a.id));
        }
        if by == a.requested_by {
            return Err(DecideError::SelfApproval {
                id: a.id,
                by: by.to_string(),
            });
        }
        if approve
            && a.decisions
                .iter()
                .any(|d| d.by == by && d.decision == "approve")
        {
            return Err(DecideError::AlreadyApproved {
                id: a.id,
                by: by.to_string(),
            });
        }
        let before = to_json(&a.decisions);
        a.decisions.push(Decision {
            by: by.to_string(),
            decision: if approve { "approve" } else { "deny" }.into(),
            at: crate::store::ms_to_rfc3339(now),
            comment: comment.to_string(),
        });
        // Distinct people other than the requester (who is refused above; counted out here
        // too, so no older record can make the requester one of two).
        let approvers = a
            .decisions
            .iter()
            .filter(|d| d.decision == "approve" && d.by != a.requested_by)
            .map(|d| d.by.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as i64;
        a.status = match (approve, approvers >= a.required) {
            (false, _) => ApprovalStatus::Denied,
            (true, true) => ApprovalStatus::Approved,
            (true, false) => ApprovalStatus::Pending,
        };
        let decided = a.status != ApprovalStatus::Pending;
        if decided {
            a.decided_at = Some(now);
        }
        let done = sqlx::query(
            "UPDATE approvals SET status = $1, decisions = $2, decided_at = $3 \
             WHERE id = $4 AND status = 'pending' AND decisions = $5",
        )
        .bind(a.status.as_str())
        .bind(to_json(&a.decisions))
        .bind(a.decided_at)
        .bind(&a.id)
        .bind(&before)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if done.rows_affected() != 1 {
            return Err(DecideError::Concurrent(a.id));
        }
        let run = decided.then(|| follow_up(&a));
        if let Some(run) = &run {
            insert_runs_on(&mut tx, std::slice::from_ref(run)).await?;
        }
        let what = if approve { "approve" } else { "deny" };
        audit_on(
            &mut *tx,
            now,
            &audit_entry(by, what, &a, run.as_ref().map(|r| r.id.as_str())),
        )
        .await?;
        if let Some(incident) = &a.incident {
            let text = match a.status {
                ApprovalStatus::Pending => format!(
                    "{by} approved {} {} ({approvers} of {} approvers)",
                    a.action, a.target, a.required
                ),
                ApprovalStatus::Approved => format!("{by} approved {} {}", a.action, a.target),
                _ => format!("{by} denied {} {}", a.action, a.target),
            };
            let text = if comment.is_empty() {
                text
            } else {
                format!("{text}: {comment}")
            };
            add_timeline_on(
                &mut *tx,
                now,
                incident,
                "approval",
                by,
                &text,
                &serde_json::json!({ "approval": a.id }),
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Decided {
            approval: a,
            follow_up: run,
        })
    }

    /// Expires pending approvals whose time ran out (each a compare-and-set, so every
    /// replica may run this at once): the incident gets the fact `approval_expired = true`
    /// and the run `follow_up` builds, which sees the decision `expired`. Grants never
    /// used are retired quietly. Returns the follow-up runs recorded.
    pub async fn expire_approvals(
        &self,
        follow_up: impl Fn(&Approval) -> RunRecord,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        sqlx::query(
            "UPDATE approvals SET status = 'expired' WHERE status = 'approved' \
             AND expires_at < $1 AND decided_at < $2",
        )
        .bind(now)
        .bind(now - GRANT_USE_WINDOW_MS)
        .execute(&self.writer)
        .await?;
        let due = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE status = 'pending' AND expires_at <= $1 \
             ORDER BY expires_at LIMIT 100"
        ))
        .bind(now)
        .fetch_all(&self.reader)
        .await?;
        let mut runs = Vec::new();
        for row in &due {
            let mut a = approval(row)?;
            let mut tx = self.writer.begin().await?;
            let done = sqlx::query(
                "UPDATE approvals SET status = 'expired', decided_at = $1 \
                 WHERE id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(&a.id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                continue;
            }
            a.status = ApprovalStatus::Expired;
            a.decided_at = Some(now);
            let run = follow_up(&a);
            insert_runs_on(&mut tx, std::slice::from_ref(&run)).await?;
            audit_on(
                &mut *tx,
                now,
                &audit_entry("runbookd", "expire", &a, Some(&run.id)),
            )
            .await?;
            if let Some(incident) = &a.incident {
                set_fact_on(
                    &mut *tx,
                    self.backend,
                    now,
                    incident,
                    "approval_expired",
                    &serde_json::Value::Bool(true),
                )
                .await?;
                add_timeline_on(
                    &mut *tx,
                    now,
                    incident,
                    "approval",
                    "runbookd",
                    &format!(
                        "approval of {} {} expired: nobody decided in time",
                        a.action, a.target
                    ),
                    &serde_json::json!({ "approval": a.id }),
                )
                .await?;
            }
            tx.commit().await?;
            runs.push(run);
        }
        Ok(runs)
    }
}
