//! `/approvals`: what waits for a human (Approve / Deny with a comment), and what was
//! decided, by whom and when. Deciding here is `http::actions::Actions::decide`, as from
//! the API and the CLI.

use axum::{
    extract::{Form, Path, State},
    http::HeaderMap,
    response::Response,
};
use serde::Deserialize;

use super::{
    back_to,
    pages::{pretty, short_id, when, when_str, Chrome, When},
    Viewer, WebError,
};
use crate::{
    http::{actions::Actions, caller::Access, session::local_back},
    store::{Approval, ApprovalStatus, Store},
};

pub struct DecisionRow {
    pub by: String,
    pub decision: String,
    pub at: When,
    pub comment: String,
}

pub struct ApprovalRow {
    pub id: String,
    pub short: String,
    pub playbook: String,
    pub incident: Option<String>,
    pub run: String,
    pub action: String,
    pub target: String,
    pub params: String,
    pub reason: String,
    pub status: &'static str,
    pub pending: bool,
    pub required: i64,
    pub requested_by: String,
    pub requested: When,
    pub expires: When,
    pub used_by_run: Option<String>,
    pub decisions: Vec<DecisionRow>,
}

pub fn approval_row(a: &Approval, now: i64) -> ApprovalRow {
    ApprovalRow {
        id: a.id.clone(),
        short: short_id(&a.id),
        playbook: a.playbook.clone(),
        incident: a.incident.clone(),
        run: a.run.clone(),
        action: a.action.clone(),
        target: a.target.clone(),
        params: pretty(&a.params),
        reason: a.reason.clone(),
        status: a.status.as_str(),
        pending: a.status == ApprovalStatus::Pending,
        required: a.required,
        requested_by: a.requested_by.clone(),
        requested: when(a.requested_at, now),
        expires: when(a.expires_at, now),
        used_by_run: a.used_by_run.clone(),
        decisions: a
            .decisions
            .iter()
            .map(|d| DecisionRow {
                by: d.by.clone(),
                decision: d.decision.clone(),
                at: when_str(&d.at, now),
                comment: d.comment.clone(),
            })
            .collect(),
    }
}

#[derive(askama::Template)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    chrome: Chrome,
    pending: Vec<ApprovalRow>,
    decided: Vec<ApprovalRow>,
}

pub async fn page(viewer: Viewer, State(store): State<Store>) -> Result<Response, WebError> {
    viewer.caller.require(Access::Read)?;
    let now = store.now();
    // Pending requests on their own, all of them; the newest 100 decided ones beside.
    let pending = store
        .pending_approvals()
        .await?
        .iter()
        .map(|a| approval_row(a, now))
        .collect();
    let decided = store
        .list_approvals(None, 100)
        .await?
        .iter()
        .map(|a| approval_row(a, now))
        .filter(|a| !a.pending)
        .collect();
    viewer.render(&ApprovalsPage {
        chrome: Chrome::new(&viewer, "Approvals", "approvals"),
        pending,
        decided,
    })
}

#[derive(Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
    /// Who decides, on a daemon without tokens.
    by: Option<String>,
    /// The page to return to.
    back: Option<String>,
}

pub async fn approve(
    viewer: Viewer,
    actions: State<Actions>,
    id: Path<String>,
    headers: HeaderMap,
    form: Form<DecisionForm>,
) -> Result<Response, WebError> {
    decide(viewer, actions, id, headers, form, true).await
}

pub async fn deny(
    viewer: Viewer,
    actions: State<Actions>,
    id: Path<String>,
    headers: HeaderMap,
    form: Form<DecisionForm>,
) -> Result<Response, WebError> {
    decide(viewer, actions, id, headers, form, false).await
}

async fn decide(
    viewer: Viewer,
    State(actions): State<Actions>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DecisionForm>,
    approve: bool,
) -> Result<Response, WebError> {
    viewer.check(&headers, &form.csrf)?;
    let by = form.by.filter(|b| !b.trim().is_empty());
    // With tokens the approver is the login; the field only exists without them.
    let by = if viewer.caller.identified() { None } else { by };
    actions
        .decide(&viewer.caller, &id, approve, form.comment.trim(), by)
        .await?;
    Ok(back_to(&local_back(form.back.as_deref(), "/approvals")))
}
