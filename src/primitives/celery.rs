//! `celery_enqueue(task, args, kwargs)`: hands work to the payments app itself by putting a
//! task message on its Celery broker (Redis), in Celery's message protocol 2 as kombu's Redis
//! transport stores it — e.g. the runbook's `tasks.payment_tasks.reconcile_payments`.

use std::time::Duration;

use base64::Engine as _;
use redis::AsyncCommands;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};

use super::{
    act, block_on,
    redis_conn::{RedisConnections, RedisError},
    script_error, with_run,
};

/// Why a task could not be queued (or the broker not reached).
#[derive(Debug, thiserror::Error)]
pub enum CeleryError {
    #[error("the Celery broker is not configured: set [celery] broker_url")]
    NotConfigured,
    #[error(transparent)]
    Broker(#[from] RedisError),
}
use crate::config::CeleryConfig;

/// The app's broker.
#[derive(Clone)]
pub struct Celery {
    cfg: CeleryConfig,
    redis: std::sync::Arc<RedisConnections>,
}

/// Builds the kombu envelope of a protocol-2 task message.
pub fn message(
    task: &str,
    id: &str,
    args: &serde_json::Value,
    kwargs: &serde_json::Value,
    queue: &str,
) -> serde_json::Value {
    let body = serde_json::json!([
        args,
        kwargs,
        { "callbacks": null, "errbacks": null, "chain": null, "chord": null }
    ]);
    let body = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    serde_json::json!({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": id,
            "shadow": null,
            "eta": null,
            "expires": null,
            "group": null,
            "group_index": null,
            "retries": 0,
            "timelimit": [null, null],
            "root_id": id,
            "parent_id": null,
            "argsrepr": args.to_string(),
            "kwargsrepr": kwargs.to_string(),
            "origin": format!("runbookd@{host}"),
            "ignore_result": false,
        },
        "properties": {
            "correlation_id": id,
            "reply_to": uuid::Uuid::now_v7().to_string(),
            "delivery_mode": 2,
            "delivery_info": { "exchange": "", "routing_key": queue },
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::now_v7().to_string(),
        }
    })
}

impl Celery {
    pub fn new(cfg: &CeleryConfig, redis: std::sync::Arc<RedisConnections>) -> Celery {
        Celery {
            cfg: cfg.clone(),
            redis,
        }
    }

    /// Whether `task` is one of `[celery] tasks`.
    pub fn allows(&self, task: &str) -> bool {
        self.cfg.tasks.iter().any(|t| t == task)
    }

    /// Readiness: the broker answers PING. None when no broker is configured.
    pub async fn ping(&self) -> Option<Result<(), CeleryError>> {
        let url = self.cfg.broker_url.as_deref()?;
        Some(
            async {
                let mut con = self.redis.get(url)?;
                redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .map(|_| ())
                    .map_err(|e| CeleryError::Broker(e.into()))
            }
            .await,
        )
    }

    /// Pushes the task where the app's workers pop it; returns the task id.
    pub async fn enqueue(
        &self,
        task: &str,
        args: serde_json::Value,
        kwargs: serde_json::Value,
    ) -> Result<String, CeleryError> {
        let url = self
            .cfg
            .broker_url
            .as_deref()
            .ok_or(CeleryError::NotConfigured)?;
        let mut con = self.redis.get(url)?;
        let id = uuid::Uuid::now_v7().to_string();
        let msg = message(task, &id, &args, &kwargs, &self.cfg.queue);
        let _: i64 = con
            .lpush(&self.cfg.queue, msg.to_string())
            .await
            .map_err(|e| CeleryError::Broker(e.into()))?;
        Ok(id)
    }
}

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
            celery.cfg.tasks.join(", ")
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

pub fn register(engine: &mut Engine) {
    engine.register_fn("celery_enqueue", |task: &str| {
        enqueue(task, Array::new(), Map::new())
    });
    engine.register_fn("celery_enqueue", |task: &str, args: Array| {
        enqueue(task, args, Map::new())
    });
    engine.register_fn("celery_enqueue", enqueue);
}
