//! The Rhai side: `celery::configured()`, `celery::queues()`, `celery::workers()` (reads) and
//! `celery_enqueue(task, args, kwargs)` (an audited action, planned only in a dry run).

use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module};

use crate::primitives::{act, block_on, script_error, with_run};

/// Bound on one read: a broadcast waits at most `[celery] inspect_timeout` (≤ 30 s).
const LIMIT: Duration = Duration::from_secs(40);

fn enqueue(task: &str, args: Array, kwargs: Map) -> Result<Dynamic, Box<EvalAltResult>> {
    if task.is_empty() || task.contains(char::is_whitespace) {
        return Err(script_error(format!(
            "celery_enqueue: `{task}` is not a task name"
        )));
    }
    let celery = with_run("celery_enqueue", |ctx| Ok(ctx.services.celery.clone()))?;
    if !celery.allows(task) {
        return Err(script_error(format!(
            "celery_enqueue: task `{task}` is not in [celery] tasks ({})",
            celery.config().tasks.join(", ")
        )));
    }
    let args: serde_json::Value = rhai::serde::from_dynamic(&Dynamic::from_array(args))?;
    let kwargs: serde_json::Value = rhai::serde::from_dynamic(&Dynamic::from_map(kwargs))?;
    let task = task.to_string();
    let details = serde_json::json!({ "task": task, "args": args, "kwargs": kwargs });
    let outcome = act("celery.enqueue", &format!("task:{task}"), details, || {
        let id = block_on("celery_enqueue", Duration::from_secs(10), async move {
            celery.enqueue(&task, args, kwargs).await
        })?;
        Ok(serde_json::json!({ "task_id": id }))
    })?;
    Ok(outcome
        .and_then(|o| o["task_id"].as_str().map(|s| Dynamic::from(s.to_string())))
        .unwrap_or(Dynamic::UNIT))
}

/// `celery::queues()` → `[#{ queue, length }]`, one per `[celery] queues`.
fn queues() -> Result<Dynamic, Box<EvalAltResult>> {
    let celery = with_run("celery::queues", |ctx| Ok(ctx.services.celery.clone()))?;
    let depths = block_on(
        "celery::queues",
        LIMIT,
        async move { celery.queues().await },
    )?;
    rhai::serde::to_dynamic(depths)
}

/// `celery::workers()` → `#{ alive, unanswered, workers, payment_task, payments_active,
/// payments_reserved, payment_tasks }`.
fn workers() -> Result<Dynamic, Box<EvalAltResult>> {
    let celery = with_run("celery::workers", |ctx| Ok(ctx.services.celery.clone()))?;
    let report = block_on(
        "celery::workers",
        LIMIT,
        async move { celery.workers().await },
    )?;
    rhai::serde::to_dynamic(report)
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("celery_enqueue", |task: &str| {
        enqueue(task, Array::new(), Map::new())
    });
    engine.register_fn("celery_enqueue", |task: &str, args: Array| {
        enqueue(task, args, Map::new())
    });
    engine.register_fn("celery_enqueue", enqueue);
    let mut m = Module::new();
    m.set_native_fn("configured", || {
        crate::primitives::recorder::read("celery::configured", vec![], || {
            with_run("celery::configured", |ctx| {
                Ok(ctx.services.celery.configured())
            })
        })
    });
    m.set_native_fn("queues", || {
        crate::primitives::recorder::read("celery::queues", vec![], queues)
    });
    m.set_native_fn("workers", || {
        crate::primitives::recorder::read("celery::workers", vec![], workers)
    });
    engine.register_static_module("celery", m.into());
}
