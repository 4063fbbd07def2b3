//! `/playbooks`: what is loaded (version, triggers), what failed to load (file:line:col),
//! the last runs of each, and "Run (dry run)" with params. A real run needs the
//! confirmation box ticked: the button alone never changes the world.

use axum::{
    extract::{Form, Path, State},
    http::HeaderMap,
    response::Response,
};
use serde::Deserialize;

use super::{
    back_to,
    pages::{run_row, Chrome, RunRow},
    Viewer, WebError,
};
use crate::{
    http::{actions::Actions, caller::Access, error::ApiError},
    store::{RunFilter, Store},
    triggers::TriggerSpec,
};

pub struct PlaybookRow {
    pub name: String,
    /// The first 12 characters of the content hash.
    pub version: Option<String>,
    pub triggers: Vec<String>,
    /// `file:line:col: message` of the latest edit that did not compile.
    pub error: Option<String>,
    pub runs: Vec<RunRow>,
}

fn trigger_text(t: &TriggerSpec) -> String {
    match t {
        TriggerSpec::Alert {
            alert,
            labels,
            on_resolved,
            ..
        } => {
            let mut s = format!("alert {alert}");
            for (k, v) in labels {
                s.push_str(&format!(" {k}={v}"));
            }
            if *on_resolved {
                s.push_str(" (and resolved)");
            }
            s
        }
        TriggerSpec::Cron { cron } => format!("cron {cron}"),
        TriggerSpec::Manual => "manual".into(),
    }
}

/// Every playbook, load errors included (without their runs).
pub fn playbook_rows(actions: &Actions) -> Vec<PlaybookRow> {
    actions
        .playbooks()
        .into_iter()
        .map(|v| PlaybookRow {
            version: v.version.map(|h| h.chars().take(12).collect()),
            triggers: v.triggers.iter().map(trigger_text).collect(),
            error: v.error.map(|e| e.to_string()),
            name: v.name,
            runs: Vec::new(),
        })
        .collect()
}

#[derive(askama::Template)]
#[template(path = "playbooks.html")]
struct PlaybooksPage {
    chrome: Chrome,
    playbooks: Vec<PlaybookRow>,
}

/// Runs shown under each playbook.
const LAST_RUNS: u32 = 5;

pub async fn page(
    viewer: Viewer,
    State(actions): State<Actions>,
    State(store): State<Store>,
) -> Result<Response, WebError> {
    viewer.caller.require(Access::Read)?;
    let now = store.now();
    let mut playbooks = playbook_rows(&actions);
    for p in &mut playbooks {
        p.runs = store
            .list_runs(&RunFilter {
                playbook: Some(p.name.clone()),
                limit: LAST_RUNS,
                ..RunFilter::default()
            })
            .await?
            .iter()
            .map(|r| run_row(r, now))
            .collect();
    }
    viewer.render(&PlaybooksPage {
        chrome: Chrome::new(&viewer, "Playbooks", "playbooks"),
        playbooks,
    })
}

#[derive(Deserialize)]
pub struct RunForm {
    #[serde(default)]
    csrf: String,
    /// A JSON object; empty means `{}`.
    #[serde(default)]
    params: String,
    /// `real` for a real run; anything else is a dry run.
    #[serde(default)]
    mode: String,
    /// The confirmation box a real run needs.
    confirm: Option<String>,
}

pub async fn run(
    viewer: Viewer,
    State(actions): State<Actions>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<RunForm>,
) -> Result<Response, WebError> {
    viewer.check(&headers, &form.csrf)?;
    let params = if form.params.trim().is_empty() {
        serde_json::Map::new()
    } else {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&form.params)
            .map_err(|e| ApiError::bad_request(format!("params must be a JSON object: {e}")))?
    };
    let dry_run = form.mode != "real";
    if !dry_run && form.confirm.as_deref() != Some("yes") {
        return Err(ApiError::bad_request(
            "a real run changes the world: tick \"I mean it: run for real\" to confirm",
        )
        .into());
    }
    let submission = actions
        .start(&viewer.caller, name, params, dry_run, false)
        .await?;
    Ok(back_to(&format!("/runs/{}", submission.run.id)))
}
