//! `budget(name, count, window)`: a remediation budget ("at most 2 breaker resets per
//! 30 min"). A playbook asks before it acts; a spent budget answers `false`, so the playbook
//! escalates instead of resetting the same breaker forever. Uses live in the state store:
//! a restart does not hand out a fresh budget, and replicas share it.

use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, FLOAT, INT};

use super::{block_on, core::append_log, script_error, with_run};

/// Reads a window given as seconds (`1800`, `1800.0`) or as text (`"30m"`).
fn window(value: &Dynamic) -> Result<Duration, Box<EvalAltResult>> {
    let secs = if let Some(i) = value.clone().try_cast::<INT>() {
        i as f64
    } else if let Some(f) = value.clone().try_cast::<FLOAT>() {
        f
    } else if let Some(s) = value.clone().try_cast::<rhai::ImmutableString>() {
        humantime::parse_duration(s.trim())
            .map_err(|e| script_error(format!("budget: window `{s}`: {e}")))?
            .as_secs_f64()
    } else {
        return Err(script_error(format!(
            "budget: window must be seconds or text like \"30m\", not {}",
            value.type_name()
        )));
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(script_error("budget: window must be longer than 0 s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn budget(name: &str, count: INT, window_value: Dynamic) -> Result<bool, Box<EvalAltResult>> {
    if name.trim().is_empty() {
        return Err(script_error("budget: name must not be empty"));
    }
    if count < 0 {
        return Err(script_error("budget: count must be ≥ 0"));
    }
    let window = window(&window_value)?;
    let (clock, store, run_id, dry_run) = with_run("budget", |ctx| {
        Ok((
            ctx.services.clock.clone(),
            ctx.services.store.clone(),
            ctx.run_id.clone(),
            ctx.dry_run,
        ))
    })?;
    let store = store.ok_or_else(|| script_error("budget: budgets need the state store"));
    let name_owned = name.to_string();
    let window_ms = window.as_millis() as i64;
    let now = clock.now_ms();
    // The store's answer is what is recorded (a replay answers it without taking a use);
    // the verdict and its log line are made from it either way.
    let args = vec![
        serde_json::json!(name),
        serde_json::json!(count),
        super::recorder::arg(window_value.clone()),
    ];
    let check: rhai::Map = super::recorder::read("budget", args, || {
        let store = store?;
        let check = block_on("budget", Duration::from_secs(10), async move {
            store
                .take_budget(&name_owned, count, window_ms, now, &run_id, !dry_run)
                .await
        })?;
        let mut m = rhai::Map::new();
        m.insert("granted".into(), check.granted.into());
        m.insert("used".into(), check.used.into());
        m.insert(
            "frees_at".into(),
            check
                .frees_at
                .map(Dynamic::from_int)
                .unwrap_or(Dynamic::UNIT),
        );
        Ok(m)
    })?;
    let check = crate::store::BudgetCheck {
        granted: check
            .get("granted")
            .and_then(|v| v.as_bool().ok())
            .unwrap_or(false),
        used: check.get("used").and_then(|v| v.as_int().ok()).unwrap_or(0),
        frees_at: check.get("frees_at").and_then(|v| v.as_int().ok()),
    };
    let span = humantime::format_duration(Duration::from_secs(window.as_secs()));
    let verdict = match (check.granted, dry_run) {
        (true, false) => format!("granted, use {} of {count}", check.used + 1),
        (true, true) => format!(
            "would be granted ({} of {count} used; dry run uses none)",
            check.used
        ),
        (false, _) => {
            let frees = check
                .frees_at
                .map(|t| format!("; next use frees in {} s", ((t - now).max(0) + 999) / 1000))
                .unwrap_or_default();
            format!("spent, {} of {count} used{frees}", check.used)
        }
    };
    append_log(
        if check.granted { "info" } else { "warn" },
        &format!("budget {name} ({count} per {span}): {verdict}"),
    );
    Ok(check.granted)
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("budget", budget);
}
