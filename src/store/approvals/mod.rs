//! Approvals: a playbook's request that humans approve one concrete action, their
//! decisions, its single use, its expiry. Every change of status is a compare-and-set in one
//! transaction with what goes with it (the notification asking for it, the follow-up run a
//! decision starts, the audit entry, the incident's timeline), so two clicks — on two
//! replicas — decide once, and a crash never leaves a decision without its run.

use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, Row};

mod ask;
mod decisions;
mod hash;

pub(super) use decisions::withdraw_approvals_on;
pub use hash::request_hash;

use super::{runs::from_json, ser_ms, ser_ms_opt, NewAudit, RunRecord, Store, StoreError};

/// How long a granted approval stays usable after the decision when its request's own
/// expiry is nearer: the follow-up run may wait in the queue for a while.
const GRANT_USE_WINDOW_MS: i64 = 10 * 60 * 1000;

/// Where an approval is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Asked for; waiting for decisions.
    Pending,
    /// Granted; the next `approved()` for the same request uses it.
    Approved,
    Denied,
    /// Nobody decided in time (or a grant was never used).
    Expired,
    /// Granted and used by a run: it allows nothing more.
    Used,
    /// Its incident was resolved before anyone decided: nothing left to approve.
    Withdrawn,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Used => "used",
            ApprovalStatus::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        Some(match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "expired" => ApprovalStatus::Expired,
            "used" => ApprovalStatus::Used,
            "withdrawn" => ApprovalStatus::Withdrawn,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One human's decision on an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub by: String,
    /// `approve` or `deny`.
    pub decision: String,
    pub at: String,
    #[serde(default)]
    pub comment: String,
}

/// An approval as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Approval {
    pub id: String,
    pub playbook: String,
    pub incident: Option<String>,
    /// The run that asked.
    pub run: String,
    pub action: String,
    pub target: String,
    pub params: serde_json::Value,
    pub reason: String,
    pub status: ApprovalStatus,
    /// Distinct approvers needed (`[approvals] required`).
    pub required: i64,
    /// Who triggered the run that asked; they may not approve it.
    pub requested_by: String,
    #[serde(serialize_with = "ser_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: i64,
    #[serde(serialize_with = "ser_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: i64,
    #[serde(serialize_with = "ser_ms_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub decided_at: Option<i64>,
    #[serde(serialize_with = "ser_ms_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub used_at: Option<i64>,
    pub used_by_run: Option<String>,
    pub decisions: Vec<Decision>,
    /// What identifies "the same request".
    #[serde(skip)]
    pub request_hash: String,
}

/// A request for approval, as `approved()` makes it.
pub struct NewApproval {
    pub id: String,
    pub request_hash: String,
    pub playbook: String,
    pub incident: Option<String>,
    pub run_id: String,
    pub action: String,
    pub target: String,
    pub params: serde_json::Value,
    pub reason: String,
    pub required: i64,
    pub requested_by: String,
    pub expires_at: i64,
    /// The channel to ask on, and the message.
    pub notify: Option<(String, serde_json::Value)>,
}

/// What asking for approval found.
#[derive(Debug)]
pub enum Asked {
    /// A grant for this exact request, now used by the asking run.
    Granted(Approval),
    /// Already asked; still waiting (nothing new was asked).
    Pending(Approval),
    /// Asked now (recorded, humans notified).
    Requested(Approval),
}

/// A decision that was recorded.
#[derive(Debug)]
pub struct Decided {
    pub approval: Approval,
    /// The run the decision started (none while more approvers are needed).
    pub follow_up: Option<RunRecord>,
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no approval `{0}`")]
    NotFound(String),
    #[error("approval `{id}` is {status}, not pending; nothing was decided")]
    NotPending { id: String, status: ApprovalStatus },
    #[error("approval `{0}` expired before it was decided")]
    Expired(String),
    #[error("`{by}` triggered the run that asked for approval `{id}` and may not approve it")]
    SelfApproval { id: String, by: String },
    #[error("`{by}` has already approved `{id}`; another approver is needed")]
    AlreadyApproved { id: String, by: String },
    #[error("approval `{0}` was decided by someone else at the same moment; look again")]
    Concurrent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const COLUMNS: &str = "id, request_hash, playbook, incident_id, run_id, action, target, params, \
                       reason, status, required, requested_by, requested_at, expires_at, \
                       decided_at, used_at, used_by_run, decisions";

fn approval(row: &AnyRow) -> Result<Approval, StoreError> {
    let status: String = row.try_get("status")?;
    let params: String = row.try_get("params")?;
    let decisions: String = row.try_get("decisions")?;
    Ok(Approval {
        id: row.try_get("id")?,
        request_hash: row.try_get("request_hash")?,
        playbook: row.try_get("playbook")?,
        incident: row.try_get("incident_id")?,
        run: row.try_get("run_id")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        params: from_json("approvals.params", &params)?,
        reason: row.try_get("reason")?,
        status: ApprovalStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            column: "approvals.status",
            message: format!("unknown status `{status}`"),
        })?,
        required: row.try_get("required")?,
        requested_by: row.try_get("requested_by")?,
        requested_at: row.try_get("requested_at")?,
        expires_at: row.try_get("expires_at")?,
        decided_at: row.try_get("decided_at")?,
        used_at: row.try_get("used_at")?,
        used_by_run: row.try_get("used_by_run")?,
        decisions: from_json("approvals.decisions", &decisions)?,
    })
}

/// The audit entry of an approval's event, by `actor`.
fn audit_entry(actor: &str, what: &str, a: &Approval, run_id: Option<&str>) -> NewAudit {
    NewAudit {
        actor: actor.to_string(),
        action: format!("approval.{what}"),
        target: format!("approval:{}", a.id),
        run_id: run_id.map(str::to_string),
        dry_run: false,
        details: serde_json::json!({
            "playbook": a.playbook, "incident": a.incident, "action": a.action,
            "target": a.target, "params": a.params, "reason": a.reason,
            "status": a.status, "decisions": a.decisions,
        }),
    }
}

impl Store {
    /// One approval.
    pub async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(approval).transpose()
    }

    /// Approvals, newest first, of one status or all.
    pub async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        let rows = match status {
            Some(s) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM approvals WHERE status = $1 \
                     ORDER BY requested_at DESC, id DESC LIMIT $2"
                ))
                .bind(s.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM approvals ORDER BY requested_at DESC, id DESC LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?
            }
        };
        rows.iter().map(approval).collect()
    }

    /// Every pending approval, oldest first: what humans must decide is never hidden behind
    /// a page of newer, decided ones (bounded only against a runaway: pending requests are
    /// one per distinct request).
    pub async fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE status = 'pending' \
             ORDER BY requested_at, id LIMIT 10000"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(approval).collect()
    }

    /// One incident's approvals, oldest first (the dashboard's incident page).
    /// How many requests wait for a human now (`runbookd_approvals_pending`).
    pub async fn count_pending_approvals(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM approvals WHERE status = 'pending'")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn approvals_of(&self, incident_id: &str) -> Result<Vec<Approval>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE incident_id = $1 \
             ORDER BY requested_at, id LIMIT 1000"
        ))
        .bind(incident_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(approval).collect()
    }
}
