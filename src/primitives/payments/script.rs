//! The `payments::*` module scripts call.

use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, FLOAT, INT};
use serde::Serialize;

use super::Payments;
use crate::primitives::{act, block_on, script_error, with_run};

const LIMIT: Duration = Duration::from_secs(15);

fn payments() -> Result<Payments, Box<EvalAltResult>> {
    with_run("payments", |ctx| Ok(ctx.services.payments.clone()))
}

fn seconds(what: &str, v: FLOAT) -> Result<Duration, Box<EvalAltResult>> {
    if !v.is_finite() || v < 0.0 {
        return Err(script_error(format!(
            "{what}: seconds must be ≥ 0, got {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

fn dynamic<T: Serialize>(v: &T) -> Result<Dynamic, Box<EvalAltResult>> {
    rhai::serde::to_dynamic(v)
}

fn stale(older: FLOAT, opts: Map) -> Result<Array, Box<EvalAltResult>> {
    let older = seconds("payments::stale_pending", older)?;
    let with_ref = match opts.get("with_ref") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => Some(
            v.as_bool()
                .map_err(|_| script_error("with_ref must be true, false or ()"))?,
        ),
    };
    let limit = match opts.get("limit") {
        None => 100,
        Some(v) => v
            .as_int()
            .map_err(|_| script_error("limit must be an integer"))?,
    };
    let p = payments()?;
    let rows = block_on("payments::stale_pending", LIMIT, async move {
        p.backend()?.stale_pending(older, with_ref, limit).await
    })?;
    rows.iter().map(dynamic).collect()
}

/// Prevention 5, "reconciliation runs via Celery Beat — verify it's scheduled and completing":
/// a payment pending longer than `stale_after` plus one schedule interval (the app's task
/// runs every `schedule_s`) should not exist if the task runs and completes.
fn reconciliation_check(schedule_s: INT) -> Result<Dynamic, Box<EvalAltResult>> {
    let p = payments()?;
    let stale_after = p.stale_after().as_secs_f64();
    let (oldest, newest) = block_on("payments::reconciliation_check", LIMIT, async move {
        let b = p.backend()?;
        Ok::<_, super::PaymentsError>((
            b.oldest_pending_age().await?,
            b.newest_app_reconciled_age().await?,
        ))
    })?;
    let allowed = stale_after + schedule_s.max(0) as FLOAT;
    let overdue = oldest.is_some_and(|a| a > allowed);
    let minutes = |s: f64| (s / 60.0).round() as i64;
    let verdict = match (overdue, oldest) {
        (true, Some(age)) => format!(
            "overdue: a payment has been pending {} min, longer than stale_after + one schedule interval ({} min) — the app's reconciliation is not running or not completing (or Stripe still reports it processing)",
            minutes(age),
            minutes(allowed)
        ),
        _ => "ok: no payment pending longer than stale_after + one schedule interval".to_string(),
    };
    dynamic(&serde_json::json!({
        "oldest_pending_age_s": oldest,
        "newest_app_reconciled_age_s": newest,
        "allowed_s": allowed,
        "overdue": overdue,
        "verdict": verdict,
    }))
}

fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("counts", |window: FLOAT| {
        crate::primitives::recorder::read(
            "payments::counts",
            vec![serde_json::json!(window)],
            || {
                let w = seconds("payments::counts", window)?;
                let p = payments()?;
                let c = block_on("payments::counts", LIMIT, async move {
                    p.backend()?.counts(w).await
                })?;
                dynamic(&c)
            },
        )
    });
    m.set_native_fn("counts", |window: INT| {
        crate::primitives::recorder::read(
            "payments::counts",
            vec![serde_json::json!(window)],
            || {
                let w = seconds("payments::counts", window as FLOAT)?;
                let p = payments()?;
                let c = block_on("payments::counts", LIMIT, async move {
                    p.backend()?.counts(w).await
                })?;
                dynamic(&c)
            },
        )
    });
    m.set_native_fn("hourly", |hours: INT| {
        crate::primitives::recorder::read(
            "payments::hourly",
            vec![serde_json::json!(hours)],
            || {
                let p = payments()?;
                let rows = block_on("payments::hourly", LIMIT, async move {
                    p.backend()?.hourly(hours).await
                })?;
                Ok(rows
                    .into_iter()
                    .map(|(hour, status, count)| {
                        let mut m = Map::new();
                        m.insert("hour".into(), hour.into());
                        m.insert("status".into(), status.into());
                        m.insert("count".into(), count.into());
                        Dynamic::from_map(m)
                    })
                    .collect::<Array>())
            },
        )
    });
    m.set_native_fn("stale_pending", |older: INT| {
        crate::primitives::recorder::read(
            "payments::stale_pending",
            vec![serde_json::json!(older)],
            || stale(older as FLOAT, Map::new()),
        )
    });
    m.set_native_fn("stale_pending", |older: INT, opts: Map| {
        crate::primitives::recorder::read(
            "payments::stale_pending",
            vec![
                serde_json::json!(older),
                crate::primitives::recorder::arg(Dynamic::from(opts.clone())),
            ],
            || stale(older as FLOAT, opts),
        )
    });
    m.set_native_fn("stale_pending", |older: FLOAT, opts: Map| {
        crate::primitives::recorder::read(
            "payments::stale_pending",
            vec![
                serde_json::json!(older),
                crate::primitives::recorder::arg(Dynamic::from(opts.clone())),
            ],
            || stale(older, opts),
        )
    });
    m.set_native_fn("recent_failures", |window: INT, limit: INT| {
        crate::primitives::recorder::read(
            "payments::recent_failures",
            vec![serde_json::json!(window), serde_json::json!(limit)],
            || {
                let w = seconds("payments::recent_failures", window as FLOAT)?;
                let p = payments()?;
                let rows = block_on("payments::recent_failures", LIMIT, async move {
                    p.backend()?.recent_failures(w, limit).await
                })?;
                rows.iter().map(dynamic).collect::<Result<Array, _>>()
            },
        )
    });
    m.set_native_fn("get", |id: &str| {
        crate::primitives::recorder::read("payments::get", vec![serde_json::json!(id)], || {
            let p = payments()?;
            let id = id.to_string();
            let row = block_on("payments::get", LIMIT, async move {
                p.backend()?.get(&id).await
            })?;
            match row {
                Some(r) => dynamic(&r),
                None => Ok(Dynamic::UNIT),
            }
        })
    });
    // `#{ total, without_ref }`: how many are stale however many there are (a listing
    // stops at its limit).
    m.set_native_fn("count_stale_pending", |older: INT| {
        crate::primitives::recorder::read(
            "payments::count_stale_pending",
            vec![serde_json::json!(older)],
            || {
                let older = seconds("payments::count_stale_pending", older as FLOAT)?;
                let p = payments()?;
                let (total, without_ref) =
                    block_on("payments::count_stale_pending", LIMIT, async move {
                        p.backend()?.count_stale_pending(older).await
                    })?;
                let mut m = rhai::Map::new();
                m.insert("total".into(), Dynamic::from_int(total));
                m.insert("without_ref".into(), Dynamic::from_int(without_ref));
                Ok(m)
            },
        )
    });
    m.set_native_fn("reconciliation_check", |schedule_s: INT| {
        crate::primitives::recorder::read(
            "payments::reconciliation_check",
            vec![serde_json::json!(schedule_s)],
            || reconciliation_check(schedule_s),
        )
    });
    m.set_native_fn("reconciliation_check", || {
        crate::primitives::recorder::read(
            "payments::reconciliation_check",
            vec![serde_json::json!(3600)],
            || reconciliation_check(3600),
        )
    });
    m.set_native_fn("stale_after", || {
        crate::primitives::recorder::read("payments::stale_after", vec![], || {
            let p = payments()?;
            Ok(p.stale_after().as_secs() as INT)
        })
    });
    m.set_native_fn("oldest_pending_age", || {
        crate::primitives::recorder::read("payments::oldest_pending_age", vec![], || {
            let p = payments()?;
            let age = block_on("payments::oldest_pending_age", LIMIT, async move {
                p.backend()?.oldest_pending_age().await
            })?;
            Ok(age.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT))
        })
    });
    m.set_native_fn("webhooks", |limit: INT| {
        crate::primitives::recorder::read(
            "payments::webhooks",
            vec![serde_json::json!(limit)],
            || {
                let p = payments()?;
                let rows = block_on("payments::webhooks", LIMIT, async move {
                    p.backend()?.recent_webhooks(limit).await
                })?;
                rows.iter().map(dynamic).collect::<Result<Array, _>>()
            },
        )
    });
    m.set_native_fn("webhook_count", |window: INT| {
        crate::primitives::recorder::read(
            "payments::webhook_count",
            vec![serde_json::json!(window)],
            || {
                let w = seconds("payments::webhook_count", window as FLOAT)?;
                let p = payments()?;
                block_on("payments::webhook_count", LIMIT, async move {
                    p.backend()?.webhook_count(w).await
                })
            },
        )
    });
    m.set_native_fn(
        "set_status",
        |id: &str, from: &str, to: &str, reason: &str| -> Result<bool, Box<EvalAltResult>> {
            let p = payments()?;
            let (id, from, to, reason) = (
                id.to_string(),
                from.to_string(),
                to.to_string(),
                reason.to_string(),
            );
            let details = serde_json::json!({ "from": from, "to": to, "reason": reason });
            let target = format!("payment:{id}");
            let outcome = act("payments.set_status", &target, details, || {
                let changed = block_on("payments::set_status", LIMIT, async move {
                    p.backend()?.set_status(&id, &from, &to, &reason).await
                })?;
                Ok(serde_json::json!({ "changed": changed }))
            })?;
            Ok(outcome
                .and_then(|o| o["changed"].as_bool())
                .unwrap_or(false))
        },
    );
    m
}

pub fn register(engine: &mut Engine) {
    engine.register_static_module("payments", module().into());
}
