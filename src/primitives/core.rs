//! `log`, `sleep`, `now`: the primitives every playbook uses.

use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, FLOAT, INT};

use super::{script_error, terminated, with_run, TERMINATED_SHUTDOWN, TERMINATED_TIMEOUT};
use crate::store::{ms_to_rfc3339, LogLine};

const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];

/// Appends a line to the run's log and to the daemon's log (with the run id). A line is
/// cut at `max_log_line_bytes`; past `max_log_lines` or `max_log_bytes` lines are counted,
/// not kept — a chatty or hostile loop can exhaust neither memory nor the store.
/// Bytes past a log line's cut that are still scanned for card numbers: more than the
/// longest card number (19 digits) with a separator between every two of its digits.
pub(crate) const CARD_MARGIN: usize = 40;

pub fn append_log(level: &str, message: &str) {
    let _ = with_run("log", |ctx| {
        let limits = ctx.limits;
        let mut logs = ctx.logs.borrow_mut();
        if logs.len() >= limits.max_log_lines {
            *ctx.dropped_logs.borrow_mut() += 1;
            return Ok(());
        }
        // Card numbers never reach a run's log (nor the daemon's). Only what the record
        // keeps is scanned, so a megabyte line costs what its kept bytes cost; the scan runs
        // past the cut by more than a card number's length with its separators, so a number
        // straddling the cut is seen whole and masked as in the whole line.
        let scanned = crate::text::prefix(message, limits.max_log_line_bytes + CARD_MARGIN);
        let masked = crate::redact::mask_cards(scanned);
        let message = crate::text::truncate_from(&masked, message.len(), limits.max_log_line_bytes);
        let mut bytes = ctx.log_bytes.borrow_mut();
        if *bytes + message.len() > limits.max_log_bytes {
            *ctx.dropped_logs.borrow_mut() += 1;
            return Ok(());
        }
        match level {
            "error" => tracing::error!(run = %ctx.run_id, playbook = %ctx.playbook, "{message}"),
            "warn" => tracing::warn!(run = %ctx.run_id, playbook = %ctx.playbook, "{message}"),
            "debug" => tracing::debug!(run = %ctx.run_id, playbook = %ctx.playbook, "{message}"),
            _ => tracing::info!(run = %ctx.run_id, playbook = %ctx.playbook, "{message}"),
        }
        *bytes += message.len();
        logs.push(LogLine {
            at: ms_to_rfc3339(ctx.services.clock.now_ms()),
            level: level.to_string(),
            message: message.into_owned(),
        });
        Ok(())
    });
}

fn sleep_for(seconds: f64) -> Result<(), Box<EvalAltResult>> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(script_error(format!(
            "sleep({seconds}): seconds must be a finite number ≥ 0"
        )));
    }
    with_run("sleep", |ctx| {
        let wanted = Duration::from_secs_f64(seconds);
        if ctx.services.clock.is_virtual() {
            // Simulated time: move the clock instead of waiting (the simulated app, watching
            // the clock, moves with it); the run's deadline is on the same clock.
            let deadline = ctx.started_ms + ctx.timeout.as_millis() as i64;
            let now = ctx.services.clock.now_ms();
            let step = (wanted.as_millis() as i64).min((deadline - now).max(0));
            ctx.services.clock.advance(step);
            return if now + (wanted.as_millis() as i64) > deadline {
                Err(terminated(TERMINATED_TIMEOUT))
            } else {
                Ok(())
            };
        }
        let remaining = ctx.deadline.saturating_duration_since(Instant::now());
        let cancel = ctx.cancel.clone();
        let cancelled = ctx.services.runtime.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(wanted.min(remaining)) => false,
                _ = cancel.cancelled() => true,
            }
        });
        if cancelled {
            Err(terminated(TERMINATED_SHUTDOWN))
        } else if wanted > remaining {
            Err(terminated(TERMINATED_TIMEOUT))
        } else {
            Ok(())
        }
    })
}

/// `setting(name)` / `setting(name, default)`: a value from `[playbooks.settings]` (dots
/// walk into tables: `outage.watch_seconds`). With a
/// default, a configured value of another type is an error (a typo in the config must not
/// silently become `()` in a decision); without one, an unset name is an error.
fn setting(name: &str, default: Option<Dynamic>) -> Result<Dynamic, Box<EvalAltResult>> {
    let value = with_run("setting", |ctx| {
        // `outage.watch_seconds` reads [playbooks.settings.outage] watch_seconds.
        let lookup = || {
            let mut parts = name.split('.');
            let mut value = ctx.services.settings.get(parts.next()?)?;
            for part in parts {
                value = value.get(part)?;
            }
            Some(value.clone())
        };
        Ok(lookup())
    })?;
    match (value, default) {
        (Some(v), default) => {
            let v: Dynamic = rhai::serde::to_dynamic(&v)?;
            match default {
                Some(d) if !d.is_unit() && !same_kind(&v, &d) => Err(script_error(format!(
                    "setting `{name}` is configured as {} but the playbook expects {} \
                     ([playbooks.settings] {name})",
                    v.type_name(),
                    d.type_name()
                ))),
                _ => Ok(v),
            }
        }
        (None, Some(d)) => Ok(d),
        (None, None) => Err(script_error(format!(
            "setting `{name}` is not set: add it to [playbooks.settings]"
        ))),
    }
}

/// Integers and floats count as one kind: `watch = 60` serves a playbook default of `60.0`.
fn same_kind(a: &Dynamic, b: &Dynamic) -> bool {
    let number = |d: &Dynamic| d.is::<INT>() || d.is::<FLOAT>();
    a.type_id() == b.type_id() || (number(a) && number(b))
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("log", |message: &str| append_log("info", message));
    engine.register_fn(
        "log",
        |level: &str, message: &str| -> Result<(), Box<EvalAltResult>> {
            if !LEVELS.contains(&level) {
                return Err(script_error(format!(
                    "log(level, message): level `{level}` is not one of {}",
                    LEVELS.join(", ")
                )));
            }
            append_log(level, message);
            Ok(())
        },
    );
    engine.on_print(|text| append_log("info", text));
    engine.on_debug(|text, _source, pos| append_log("debug", &format!("{text} ({pos})")));
    engine.register_fn("sleep", |seconds: INT| sleep_for(seconds as f64));
    engine.register_fn("sleep", sleep_for);
    engine.register_fn("now", || -> Result<FLOAT, Box<EvalAltResult>> {
        super::recorder::read("now", vec![], || {
            with_run("now", |ctx| Ok(ctx.services.clock.now_seconds()))
        })
    });
    engine.register_fn("setting", |name: &str| {
        super::recorder::read("setting", vec![serde_json::json!(name)], || {
            setting(name, None)
        })
    });
    engine.register_fn("setting", |name: &str, default: Dynamic| {
        let args = vec![
            serde_json::json!(name),
            super::recorder::arg(default.clone()),
        ];
        super::recorder::read("setting", args, || setting(name, Some(default)))
    });
}
