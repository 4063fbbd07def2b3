//! Approvals: list and read them (viewers), approve or deny (operators, never the one who
//! triggered the run that asked). A decision that settles an approval starts the follow-up
//! run; the answer is the approval as it now stands, with that run's id.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        Path, Query, State,
    },
    Json,
};
use serde::{Deserialize, Serialize};

use crate::{
    http::{
        actions::Actions,
        caller::{Access, Caller},
        error::{body, ApiError, ErrorBody},
    },
    store::{Approval, ApprovalStatus, Store},
};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Approvals in this status only.
    #[param(schema_with = super::approval_status_filter)]
    status: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// An approval after a decision, with the run the decision started (if it settled it).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct DecidedView {
    #[serde(flatten)]
    approval: Approval,
    /// The follow-up run's id, when this decision settled the approval.
    follow_up_run: Option<String>,
}

/// Approvals playbooks asked for, newest first.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals", params(ListQuery),
    responses((status = 200, description = "Newest first", body = [Approval], links(
        ("show" = (operation_id = "approvals_show", parameters(("id" = "$response.body#/0/id")), description = "The newest one")),
        ("approve" = (operation_id = "approvals_approve", parameters(("id" = "$response.body#/0/id")), description = "The newest one")),
        ("deny" = (operation_id = "approvals_deny", parameters(("id" = "$response.body#/0/id")), description = "The newest one"))))),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn list(
    caller: Caller,
    State(store): State<Store>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<Approval>>, ApiError> {
    caller.require(Access::Read)?;
    let Query(q) = query?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status `{s}` is not one of pending, approved, denied, expired, used"
            ))
        })?),
    };
    let limit = super::limit(q.limit, 50)?;
    Ok(Json(store.list_approvals(status, limit).await?))
}

/// One approval, with every decision on it.
#[utoipa::path(get, path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    responses((status = 200, description = "The approval", body = Approval),
        (status = 404, description = "No such approval", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn show(
    caller: Caller,
    State(store): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<Approval>, ApiError> {
    caller.require(Access::Read)?;
    let a = store
        .get_approval(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no approval with id `{id}`")))?;
    Ok(Json(a))
}

/// One decision (the whole body is optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DecisionBody {
    /// Why, for the timeline (at most 4,096 bytes).
    #[serde(default)]
    comment: String,
    /// Who decides, on a daemon without tokens (which cannot tell callers apart).
    by: Option<String>,
}

/// Approves: the approver is the token's name, never whoever triggered the run that asked.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    request_body(content = Option<DecisionBody>, description = "Optional"),
    responses((status = 200, description = "The approval as it now stands", body = DecidedView),
        (status = 403, description = "Not an operator, the one who triggered the run that asked, or `by` names someone else", body = ErrorBody),
        (status = 404, description = "No such approval", body = ErrorBody),
        (status = 409, description = "Not pending (decided, expired), or this approver already approved", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("operator"))))]
pub async fn approve(
    caller: Caller,
    actions: State<Actions>,
    id: Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<DecidedView>, ApiError> {
    decide(caller, actions, id, request, true).await
}

/// Denies: the approval is settled and the playbook's follow-up run is told.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/deny", tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    request_body(content = Option<DecisionBody>, description = "Optional"),
    responses((status = 200, description = "The approval as it now stands", body = DecidedView),
        (status = 403, description = "Not an operator, the one who triggered the run that asked, or `by` names someone else", body = ErrorBody),
        (status = 404, description = "No such approval", body = ErrorBody),
        (status = 409, description = "Not pending (decided or expired)", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("operator"))))]
pub async fn deny(
    caller: Caller,
    actions: State<Actions>,
    id: Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<DecidedView>, ApiError> {
    decide(caller, actions, id, request, false).await
}

async fn decide(
    caller: Caller,
    State(actions): State<Actions>,
    Path(id): Path<String>,
    request: Result<Bytes, BytesRejection>,
    approve: bool,
) -> Result<Json<DecidedView>, ApiError> {
    caller.require(Access::Operate)?;
    let body = body(request)?;
    let body: DecisionBody = super::optional_body(&body, "decision body")?;
    let decided = actions
        .decide(&caller, &id, approve, &body.comment, body.by)
        .await?;
    Ok(Json(DecidedView {
        approval: decided.approval,
        follow_up_run: decided.follow_up.map(|r| r.id),
    }))
}
