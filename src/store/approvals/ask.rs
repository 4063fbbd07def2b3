//! `approved()` asking: a grant of this exact request used (once per run, however many
//! attempts), a pending one found, or a new request recorded — with its notification,
//! audit entry and timeline line — in one transaction.

use super::{
    approval, audit_entry, Approval, ApprovalStatus, Asked, NewApproval, COLUMNS,
    GRANT_USE_WINDOW_MS,
};
use crate::store::{
    audit::audit_on, incidents::add_timeline_on, outbox::enqueue_on, Store, StoreError,
};

impl Store {
    /// `approved()`: uses a grant for this exact request, or finds it pending, or asks for
    /// it (recorded with its notification, audit entry and timeline line in one
    /// transaction).
    pub async fn ask_approval(&self, new: &NewApproval) -> Result<Asked, StoreError> {
        let now = self.now();
        let mut tx = self.writer.begin().await?;
        if let Some(a) = used_by_this_run(&mut tx, new, now).await? {
            tx.commit().await?;
            return Ok(Asked::Granted(a));
        }
        match open_request(&mut tx, new, now).await? {
            // Dropping the transaction rolls it back: nothing was changed.
            Some(Open::Pending(a)) => return Ok(Asked::Pending(a)),
            Some(Open::Granted(a)) => {
                tx.commit().await?;
                return Ok(Asked::Granted(a));
            }
            // A stale grant retired (in `tx`), or none: the request is asked for again.
            Some(Open::Retired) | None => {}
        }
        let a = match insert_request(&mut tx, new, now).await {
            Ok(a) => a,
            Err(e) => {
                // Another replica asked for the same request at this very moment (the
                // unique index on open requests): that one stands.
                drop(tx);
                let row = sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM approvals WHERE request_hash = $1 AND status = 'pending'"
                ))
                .bind(&new.request_hash)
                .fetch_optional(&self.writer)
                .await?;
                return match row {
                    Some(row) => Ok(Asked::Pending(approval(&row)?)),
                    None => Err(e),
                };
            }
        };
        announce_request(&mut tx, new, &a, now).await?;
        tx.commit().await?;
        self.outbox_touched();
        Ok(Asked::Requested(a))
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A grant belongs to the run that used it, not to one attempt: an attempt cut off between
/// the use and the action (a crash, a lost lease) is retried, and the retry is granted
/// again — no new request, no second notification. The reuse is audited.
async fn used_by_this_run(
    tx: &mut Tx,
    new: &NewApproval,
    now: i64,
) -> Result<Option<Approval>, StoreError> {
    let used = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE used_by_run = $1 AND request_hash = $2 \
         AND status = 'used'"
    ))
    .bind(&new.run_id)
    .bind(&new.request_hash)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = used else {
        return Ok(None);
    };
    let a = approval(&row)?;
    let actor = format!("playbook:{}", a.playbook);
    let entry = audit_entry(&actor, "use_again", &a, Some(&new.run_id));
    audit_on(&mut **tx, now, &entry).await?;
    Ok(Some(a))
}

/// What an open request for the same thing says.
enum Open {
    /// Nobody has decided yet.
    Pending(Approval),
    /// Granted, and used by this run now (compare-and-set, audited, on the timeline).
    Granted(Approval),
    /// Granted too long ago to be used: retired (`expired`), asked for again.
    Retired,
}

/// The open request (pending or granted) for the same thing, if any; a grant is used by
/// this run or, past its use-by time, retired — in `tx`.
async fn open_request(
    tx: &mut Tx,
    new: &NewApproval,
    now: i64,
) -> Result<Option<Open>, StoreError> {
    let open = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE request_hash = $1 \
         AND status IN ('pending', 'approved')"
    ))
    .bind(&new.request_hash)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = open else {
        return Ok(None);
    };
    let mut a = approval(&row)?;
    if a.status == ApprovalStatus::Pending {
        return Ok(Some(Open::Pending(a)));
    }
    let use_by = a
        .expires_at
        .max(a.decided_at.unwrap_or(0) + GRANT_USE_WINDOW_MS);
    let (status, what) = if now <= use_by {
        (ApprovalStatus::Used, "use")
    } else {
        (ApprovalStatus::Expired, "expire_unused")
    };
    let done = sqlx::query(
        "UPDATE approvals SET status = $1, used_at = $2, used_by_run = $3 \
         WHERE id = $4 AND status = 'approved'",
    )
    .bind(status.as_str())
    .bind((status == ApprovalStatus::Used).then_some(now))
    .bind((status == ApprovalStatus::Used).then(|| new.run_id.clone()))
    .bind(&a.id)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        // Another run used it at this moment: it allows nothing more here.
        return Ok(Some(Open::Pending(a)));
    }
    a.status = status;
    let actor = format!("playbook:{}", a.playbook);
    audit_on(
        &mut **tx,
        now,
        &audit_entry(&actor, what, &a, Some(&new.run_id)),
    )
    .await?;
    if status != ApprovalStatus::Used {
        return Ok(Some(Open::Retired));
    }
    a.used_at = Some(now);
    a.used_by_run = Some(new.run_id.clone());
    if let Some(incident) = &a.incident {
        let what = format!(
            "approved {} {} used by run {}",
            a.action, a.target, new.run_id
        );
        let facts = serde_json::json!({ "approval": a.id });
        add_timeline_on(&mut **tx, now, incident, "approval", &actor, &what, &facts).await?;
    }
    Ok(Some(Open::Granted(a)))
}

/// The new request's row, `pending`.
async fn insert_request(tx: &mut Tx, new: &NewApproval, now: i64) -> Result<Approval, StoreError> {
    sqlx::query(
        "INSERT INTO approvals (id, request_hash, playbook, incident_id, run_id, action, \
         target, params, reason, status, required, requested_by, requested_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13)",
    )
    .bind(&new.id)
    .bind(&new.request_hash)
    .bind(&new.playbook)
    .bind(new.incident.clone())
    .bind(&new.run_id)
    .bind(&new.action)
    .bind(&new.target)
    .bind(new.params.to_string())
    .bind(&new.reason)
    .bind(new.required)
    .bind(&new.requested_by)
    .bind(now)
    .bind(new.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(Approval {
        id: new.id.clone(),
        request_hash: new.request_hash.clone(),
        playbook: new.playbook.clone(),
        incident: new.incident.clone(),
        run: new.run_id.clone(),
        action: new.action.clone(),
        target: new.target.clone(),
        params: new.params.clone(),
        reason: new.reason.clone(),
        status: ApprovalStatus::Pending,
        required: new.required,
        requested_by: new.requested_by.clone(),
        requested_at: now,
        expires_at: new.expires_at,
        decided_at: None,
        used_at: None,
        used_by_run: None,
        decisions: Vec::new(),
    })
}

/// What goes with a new request, in its transaction: the notification asking for it, the
/// audit entry, the incident's timeline.
async fn announce_request(
    tx: &mut Tx,
    new: &NewApproval,
    a: &Approval,
    now: i64,
) -> Result<(), StoreError> {
    if let Some((channel, payload)) = &new.notify {
        enqueue_on(
            &mut **tx,
            now,
            channel,
            a.incident.as_deref(),
            "approval",
            payload,
        )
        .await?;
    }
    let actor = format!("playbook:{}", a.playbook);
    audit_on(
        &mut **tx,
        now,
        &audit_entry(&actor, "request", a, Some(&a.run)),
    )
    .await?;
    if let Some(incident) = &a.incident {
        let what = format!(
            "asks for approval of {} {}: {}",
            a.action, a.target, a.reason
        );
        let facts = serde_json::json!({ "approval": a.id });
        add_timeline_on(&mut **tx, now, incident, "approval", &actor, &what, &facts).await?;
    }
    Ok(())
}
