//! `GET /api/v1/playbooks[/{name}]`: what is serving, and what failed to load.

use axum::{
    extract::{Path, State},
    Json,
};

use crate::http::{
    actions::{Actions, PlaybookView},
    caller::{Access, Caller},
    error::ApiError,
};

pub async fn list(
    caller: Caller,
    State(actions): State<Actions>,
) -> Result<Json<Vec<PlaybookView>>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(actions.playbooks()))
}

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
