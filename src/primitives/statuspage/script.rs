//! The `statuspage::*` module scripts call. Every operation is about the run's incident:
//! one page incident per runbookd incident (a run without one cannot tell users anything
//! the page could tie back to it).
//!
//! - `statuspage::configured()` → bool
//! - `statuspage::find()` → the page incident (`#{ id, name, status, last_update,
//!   shortlink }`) or ()
//! - `statuspage::open(#{ name, body, component_status })` — opens it unless it is open
//! - `statuspage::update(#{ body, status, component_status })` — posts an update unless the
//!   page already says exactly this
//! - `statuspage::resolve(#{ body })` — resolves it, the component back to `operational`
//! - `statuspage::component()` → the component's status, or () when none is configured
//! - `statuspage::component_status_for(indicator, reachable)` → the component status for
//!   Stripe's status-page indicator
//!
//! Each change is an action (audited, planned only in a dry run) and returns `#{ changed,
//! planned, id, status, shortlink, note }`.

use std::time::Duration;

use rhai::{Dynamic, EvalAltResult, Map, Module};

use super::{Outcome, PageChange, StatusPage, COMPONENT_STATUSES, INCIDENT_STATUSES};
use crate::primitives::{act, block_on, script_error, with_run};

/// Three attempts with pauses, each bounded by `[statuspage] timeout` (10 s by default).
const LIMIT: Duration = Duration::from_secs(40);

/// The status page and the run's incident. A dry run without an incident (an operator's
/// `--dry-run`) may still ask what would be done; everything else needs the incident.
fn page(what: &str) -> Result<(StatusPage, Option<String>, bool), Box<EvalAltResult>> {
    with_run(what, |ctx| {
        if ctx.incident.is_none() && !ctx.dry_run {
            return Err(script_error(format!(
                "{what}: this run belongs to no incident (a status-page incident is opened for an alert's incident)"
            )));
        }
        Ok((
            ctx.services.statuspage.clone(),
            ctx.incident.clone(),
            ctx.dry_run,
        ))
    })
}

fn text(opts: &Map, key: &str, what: &str) -> Result<Option<String>, Box<EvalAltResult>> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .clone()
            .into_string()
            .map(Some)
            .map_err(|t| script_error(format!("{what}: `{key}` must be a string, not {t}"))),
    }
}

fn one_of(
    value: Option<String>,
    allowed: &[&str],
    key: &str,
    what: &str,
) -> Result<Option<String>, Box<EvalAltResult>> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(script_error(format!(
            "{what}: `{key}` is `{v}`, not one of {}",
            allowed.join(", ")
        ))),
        v => Ok(v),
    }
}

/// The change a call asks for; `status` / `component_status` default by operation.
fn change(
    opts: &Map,
    what: &str,
    status: &str,
    component: Option<&str>,
) -> Result<PageChange, Box<EvalAltResult>> {
    let body = text(opts, "body", what)?
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| script_error(format!("{what}: `body` (the text users read) is required")))?;
    let status = one_of(
        text(opts, "status", what)?,
        &INCIDENT_STATUSES,
        "status",
        what,
    )?
    .unwrap_or_else(|| status.to_string());
    let component_status = one_of(
        text(opts, "component_status", what)?,
        &COMPONENT_STATUSES,
        "component_status",
        what,
    )?
    .or(component.map(str::to_string));
    Ok(PageChange {
        name: text(opts, "name", what)?,
        status,
        body,
        component_status,
        incident: None,
    })
}

fn answer(o: &Outcome, planned: bool) -> Result<Dynamic, Box<EvalAltResult>> {
    let p = o.page.as_ref();
    rhai::serde::to_dynamic(serde_json::json!({
        "changed": o.changed && !planned,
        "planned": planned,
        "id": p.map(|p| p.id.clone()),
        "status": p.map(|p| p.status.clone()),
        "shortlink": p.and_then(|p| p.shortlink.clone()),
        "note": o.note,
    }))
}

/// One changing operation: look, then (unless nothing would change) act — planned only in a
/// dry run.
fn change_page(
    what: &'static str,
    opening: bool,
    change: PageChange,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let (sp, incident, _) = page(what)?;
    if !sp.configured() {
        return Err(script_error(format!(
            "{what}: {}",
            super::StatusPageError::NotConfigured
        )));
    }
    let plan = match incident.clone() {
        Some(inc) => {
            let (sp2, ch2) = (sp.clone(), change.clone());
            // What the page holds decides the action: recorded, so a replay plans the same.
            let args = vec![
                serde_json::json!(opening),
                serde_json::to_value(&change).unwrap_or_default(),
            ];
            crate::primitives::recorder::read_json("statuspage::plan", args, || {
                block_on(
                    what,
                    LIMIT,
                    async move { sp2.plan(&inc, opening, &ch2).await },
                )
            })?
        }
        // A dry run without an incident: nothing could be open for it.
        None => Outcome {
            page: None,
            changed: opening,
            note: None,
        },
    };
    if !plan.changed {
        let note = match (&plan.page, opening) {
            (Some(_), true) => "already open for this incident",
            (Some(_), false) => "the page already says this",
            (None, _) => "no open status-page incident for this incident",
        };
        return answer(
            &Outcome {
                note: Some(note.into()),
                ..plan
            },
            false,
        );
    }
    let action = what.replace("::", ".");
    let target = match (&plan.page, &incident) {
        (Some(p), _) => format!("statuspage:{}", p.id),
        (None, Some(i)) => format!("statuspage:incident:{i}"),
        (None, None) => "statuspage:new".to_string(),
    };
    let details = serde_json::json!({ "incident": incident, "change": change });
    let done = act(&action, &target, details, || {
        let incident = incident
            .clone()
            .ok_or_else(|| script_error(format!("{what}: no incident")))?;
        let outcome = block_on(what, LIMIT, async move {
            if opening {
                sp.open(&incident, change).await
            } else {
                sp.update(&incident, change).await
            }
        })?;
        serde_json::to_value(&outcome).map_err(|e| script_error(e.to_string()))
    })?;
    match done {
        None => answer(&plan, true),
        Some(v) => {
            let o: Outcome = serde_json::from_value(v).map_err(|e| script_error(e.to_string()))?;
            answer(&o, false)
        }
    }
}

fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("configured", || {
        crate::primitives::recorder::read("statuspage::configured", vec![], || {
            with_run("statuspage::configured", |ctx| {
                Ok(ctx.services.statuspage.configured())
            })
        })
    });
    m.set_native_fn("find", || {
        crate::primitives::recorder::read("statuspage::find", vec![], || {
            let (sp, incident, _) = page("statuspage::find")?;
            let Some(incident) = incident else {
                return Ok(Dynamic::UNIT);
            };
            let found = block_on("statuspage::find", LIMIT, async move {
                sp.find(&incident).await
            })?;
            match found {
                None => Ok(Dynamic::UNIT),
                Some(p) => rhai::serde::to_dynamic(&p),
            }
        })
    });
    m.set_native_fn("component", || {
        crate::primitives::recorder::read("statuspage::component", vec![], || {
            let sp = with_run("statuspage::component", |ctx| {
                Ok(ctx.services.statuspage.clone())
            })?;
            let status = block_on("statuspage::component", LIMIT, async move {
                sp.component().await
            })?;
            Ok(status.map(Dynamic::from).unwrap_or(Dynamic::UNIT))
        })
    });
    m.set_native_fn(
        "component_status_for",
        |indicator: &str, reachable: bool| {
            Ok(super::component_status_for(indicator, reachable).to_string())
        },
    );
    m.set_native_fn("open", |opts: Map| {
        let what = "statuspage::open";
        let c = change(&opts, what, "investigating", Some("major_outage"))?;
        if c.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(script_error(format!(
                "{what}: `name` (the incident's title) is required"
            )));
        }
        change_page(what, true, c)
    });
    m.set_native_fn("update", |opts: Map| {
        let c = change(&opts, "statuspage::update", "identified", None)?;
        change_page("statuspage::update", false, c)
    });
    m.set_native_fn("resolve", |opts: Map| {
        let what = "statuspage::resolve";
        let mut c = change(&opts, what, "resolved", Some("operational"))?;
        c.status = "resolved".into();
        change_page(what, false, c)
    });
    m
}

pub fn register(engine: &mut rhai::Engine) {
    engine.register_static_module("statuspage", module().into());
}
