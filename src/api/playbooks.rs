//! `GET /api/v1/playbooks[/{name}]`: what is serving, and what failed to load.

use axum::{
    extract::{Path, State},
    Json,
};
use serde::Serialize;

use super::{
    auth::{Access, Caller},
    ApiError, AppState,
};
use crate::{engine::LoadError, store::ms_to_rfc3339, triggers::TriggerSpec};

#[derive(Serialize)]
pub struct PlaybookView {
    pub name: String,
    /// Serving version; null when the file never compiled.
    pub version: Option<String>,
    pub path: Option<String>,
    pub triggers: Vec<TriggerSpec>,
    pub loaded_at: Option<String>,
    /// The latest edit's compile error; the previous version (if any) keeps serving.
    pub error: Option<LoadError>,
}

pub(crate) fn views(state: &AppState) -> Vec<PlaybookView> {
    let mut errors = state.catalog.errors();
    let mut out: Vec<PlaybookView> = state
        .catalog
        .playbooks()
        .into_iter()
        .map(|p| PlaybookView {
            error: errors.remove(&p.name),
            name: p.name.clone(),
            version: Some(p.version.clone()),
            path: Some(p.path.display().to_string()),
            triggers: p.triggers.clone(),
            loaded_at: Some(ms_to_rfc3339(p.loaded_at)),
        })
        .collect();
    out.extend(errors.into_iter().map(|(name, e)| PlaybookView {
        name,
        version: None,
        path: Some(e.path.clone()),
        triggers: Vec::new(),
        loaded_at: None,
        error: Some(e),
    }));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<PlaybookView>>, ApiError> {
    caller.require(Access::Read)?;
    Ok(Json(views(&state)))
}

pub async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PlaybookView>, ApiError> {
    caller.require(Access::Read)?;
    views(&state)
        .into_iter()
        .find(|v| v.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no playbook named `{name}`")))
}
