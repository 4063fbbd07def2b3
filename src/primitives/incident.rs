//! `incident()`, `set_fact()`, `note()`, `escalate()`: what a run knows and says about the
//! incident it belongs to. Facts and levels are what the escalation table reads.

use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult};

use super::{act, block_on, script_error, with_run};
use crate::store::Store;

/// The levels of the escalation table in force, lowest first; the daemon keeps it current
/// as the table file is reloaded, so `escalate()` knows a custom table's levels too.
pub type LevelNames = std::sync::Arc<std::sync::RwLock<Vec<String>>>;

/// The runbook's levels (the shipped table), until a table says otherwise.
pub fn runbook_levels() -> LevelNames {
    std::sync::Arc::new(std::sync::RwLock::new(
        ["L1", "L2", "L3", "P1"].map(String::from).to_vec(),
    ))
}

/// Position of `level` among `levels` (case-insensitive) and its spelling there.
fn rank(levels: &[String], level: &str) -> Option<(usize, String)> {
    levels
        .iter()
        .position(|l| l.eq_ignore_ascii_case(level))
        .map(|i| (i, levels[i].clone()))
}

const LIMIT: Duration = Duration::from_secs(10);

fn current() -> Result<(Store, String), Box<EvalAltResult>> {
    let (store, incident) = with_run("incident", |ctx| {
        Ok((ctx.services.store.clone(), ctx.incident.clone()))
    })?;
    let store = store.ok_or_else(|| script_error("incident: no state store"))?;
    let incident = incident.ok_or_else(|| {
        script_error("this run belongs to no incident (it was not started by an alert)")
    })?;
    Ok((store, incident))
}

fn incident() -> Result<Dynamic, Box<EvalAltResult>> {
    let has = with_run("incident()", |ctx| Ok(ctx.incident.is_some()))?;
    if !has {
        return Ok(Dynamic::UNIT);
    }
    let (store, id) = current()?;
    let now = store.now();
    let inc = block_on(
        "incident()",
        LIMIT,
        async move { store.get_incident(&id).await },
    )?;
    match inc {
        None => Ok(Dynamic::UNIT),
        Some(i) => {
            let mut v = serde_json::to_value(&i).map_err(|e| script_error(e.to_string()))?;
            v["age_seconds"] = serde_json::json!((now - i.opened_at) as f64 / 1000.0);
            rhai::serde::to_dynamic(&v)
        }
    }
}

fn set_fact(key: &str, value: Dynamic) -> Result<bool, Box<EvalAltResult>> {
    if key.is_empty() || key.contains('"') || key.contains('\\') {
        return Err(script_error(format!(
            "set_fact: `{key}` is not a fact name (empty, or holds a quote or backslash)"
        )));
    }
    let (store, id) = current()?;
    let value: serde_json::Value =
        crate::redact::mask_cards_json(&rhai::serde::from_dynamic(&value)?);
    let key = key.to_string();
    let details = serde_json::json!({ "fact": key, "value": value });
    let out = act(
        "incident.set_fact",
        &format!("incident:{id}"),
        details,
        || {
            block_on("set_fact", LIMIT, async move {
                // One key, set in the store itself: facts other runs set meanwhile stay.
                if !store.set_incident_fact(&id, &key, &value).await? {
                    return Err(crate::store::StoreError::Corrupt {
                        column: "incidents",
                        message: "incident not found".into(),
                    });
                }
                Ok::<_, crate::store::StoreError>(
                    serde_json::json!({ "fact": key, "value": value }),
                )
            })
        },
    )?;
    Ok(out.is_some())
}

fn note(text: &str) -> Result<(), Box<EvalAltResult>> {
    let (store, id) = current()?;
    let (playbook, dry_run) = with_run("note", |ctx| Ok((ctx.playbook.clone(), ctx.dry_run)))?;
    let text = crate::redact::mask_cards(text);
    let text = if dry_run {
        format!("[dry run] {text}")
    } else {
        text.to_string()
    };
    block_on("note", LIMIT, async move {
        store
            .add_timeline(
                &id,
                "note",
                &format!("playbook:{playbook}"),
                &text,
                &serde_json::json!({}),
            )
            .await
    })
}

fn escalate(level: &str, reason: &str) -> Result<bool, Box<EvalAltResult>> {
    let levels: Vec<String> = with_run("escalate", |ctx| {
        Ok(ctx
            .services
            .levels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    })?;
    let (wanted, level) = rank(&levels, level).ok_or_else(|| {
        script_error(format!(
            "escalate: `{level}` is not a level of the escalation table ({})",
            levels.join(", ")
        ))
    })?;
    let (store, id) = current()?;
    let playbook = with_run("escalate", |ctx| Ok(ctx.playbook.clone()))?;
    let reason = crate::redact::mask_cards(reason).into_owned();
    let details = serde_json::json!({ "level": level, "reason": reason });
    let out = act(
        "incident.escalate",
        &format!("incident:{id}"),
        details,
        || {
            block_on("escalate", LIMIT, async move {
                // Levels only go up: a compare-and-set against every level from the
                // wanted one up, so a concurrent raise (the evaluator, another run)
                // is never lowered.
                let at_or_above = levels[wanted..].to_vec();
                if !store
                    .raise_incident_level(&id, &level, &at_or_above)
                    .await?
                {
                    let inc = store.get_incident(&id).await?;
                    return Ok::<_, crate::store::StoreError>(
                        serde_json::json!({ "raised": false, "level": inc.and_then(|i| i.level) }),
                    );
                }
                store
                    .add_timeline(
                        &id,
                        "escalated",
                        &format!("playbook:{playbook}"),
                        &format!("escalated to {level}: {reason}"),
                        &serde_json::json!({ "level": level, "reason": reason }),
                    )
                    .await?;
                Ok(serde_json::json!({ "raised": true, "level": level }))
            })
        },
    )?;
    Ok(out.and_then(|o| o["raised"].as_bool()).unwrap_or(false))
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("incident", || {
        super::recorder::read("incident", vec![], incident)
    });
    engine.register_fn("set_fact", set_fact);
    engine.register_fn("note", note);
    engine.register_fn("escalate", escalate);
}
