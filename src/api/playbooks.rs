//! `GET /api/v1/playbooks[/{name}]`: what is serving, and what failed to load.

use axum::{
    extract::{Path, State},
    Json,
};

use crate::http::{
    actions::{Actions, PlaybookView},
    caller::{Access, Caller},
    error::{ApiError, ErrorBody},
};

/// Every playbook: what is serving, and the edits that failed to load.
#[utoipa::path(get, path = "/api/v1/playbooks", tag = "playbooks",
    responses((status = 200, description = "Every playbook", body = [PlaybookView])),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn list(
    caller: Caller,
    State(actions): State<Actions>,
) -> Result<Json<Vec<PlaybookView>>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(actions.playbooks()))
}

/// One playbook.
#[utoipa::path(get, path = "/api/v1/playbooks/{name}", tag = "playbooks",
    params(("name" = String, Path, description = "The playbook's name", example = "health_probe")),
    responses((status = 200, description = "The playbook", body = PlaybookView),
        (status = 404, description = "No playbook by that name", body = ErrorBody)),
    extensions(("x-runbookd-role" = json!("viewer"))))]
pub async fn show(
    caller: Caller,
    State(actions): State<Actions>,
    Path(name): Path<String>,
) -> Result<Json<PlaybookView>, ApiError> {
    caller.require(Access::Read)?;
    actions
        .playbooks()
        .into_iter()
        .find(|v| v.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no playbook named `{name}`")))
}
