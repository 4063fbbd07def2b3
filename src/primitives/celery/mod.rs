//! `celery::*` and `celery_enqueue`: the app's Celery side, behind [`Broker`] — kombu's Redis
//! transport in production ([`kombu`]), the simulated world's workers and queues in
//! simulations. Step 4 of the runbook (`celery inspect active | grep process_payment`, queue
//! depth) is read here; what the workers' replies mean (who is alive, which payment tasks
//! run or wait, who heard and did not answer) is decided here once, for both worlds.

pub mod kombu;
mod script;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::Serialize;

use super::redis_conn::{RedisConnections, RedisError};
use crate::{clock::Clock, config::CeleryConfig};

pub use script::register;

/// Why the broker could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CeleryError {
    #[error("the Celery broker is not configured: set [celery] broker_url")]
    NotConfigured,
    #[error("the Celery broker is unavailable: {0}")]
    Broker(String),
}

impl From<RedisError> for CeleryError {
    fn from(e: RedisError) -> Self {
        CeleryError::Broker(e.to_string())
    }
}

impl CeleryError {
    fn from_redis(e: redis::RedisError) -> Self {
        CeleryError::Broker(e.to_string())
    }
}

/// One worker's answer to one remote-control method, as Celery sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub method: String,
    /// The worker's node name (`celery@host`).
    pub worker: String,
    pub value: serde_json::Value,
}

/// What a remote-control broadcast brought back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Broadcast {
    /// Subscribers that received the request (the broker says so when it is published).
    pub heard_by: usize,
    pub replies: Vec<Reply>,
}

/// The app's broker.
#[async_trait::async_trait]
pub trait Broker: Send + Sync {
    /// Readiness: the broker answers.
    async fn ping(&self) -> Result<(), CeleryError>;
    /// Puts a task message (a kombu envelope, [`kombu::message`]) where workers pop it.
    async fn push(&self, queue: &str, message: String) -> Result<(), CeleryError>;
    /// Messages waiting in `queue`, every priority included.
    async fn queue_length(&self, queue: &str) -> Result<i64, CeleryError>;
    /// Sends each remote-control `method` (no arguments) to every worker and collects the
    /// replies for at most `timeout`.
    async fn broadcast(
        &self,
        methods: &[&str],
        timeout: Duration,
    ) -> Result<Broadcast, CeleryError>;
}

/// A queue's depth.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueDepth {
    pub queue: String,
    pub length: i64,
}

/// A payment task a worker runs or holds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PaymentTask {
    pub id: String,
    pub worker: String,
    /// `active` (running) or `reserved` (prefetched, waiting for a free process).
    pub state: String,
    /// The task's arguments as JSON, redacted of anything that looks like a key.
    pub args: String,
    /// When it started running (`active` only).
    pub started: Option<String>,
}

/// One worker that answered.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerReport {
    pub name: String,
    /// Tasks running / prefetched; `None` when its answer to that method did not come.
    pub active: Option<i64>,
    pub reserved: Option<i64>,
    /// Of those, instances of `[celery] payment_task`.
    pub payments_active: i64,
    pub payments_reserved: i64,
    /// Workers answering with this node name: more than 1 means duplicate names (their
    /// counts are added up here).
    pub instances: i64,
}

/// `celery::workers()`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkersReport {
    /// Workers that answered (by replies: duplicate node names count each worker).
    pub alive: i64,
    /// Subscribers that heard the broadcast and did not answer in time: a hung or
    /// overloaded worker (its process is connected, its remote control is not served).
    pub unanswered: i64,
    pub workers: Vec<WorkerReport>,
    pub payment_task: String,
    pub payments_active: i64,
    pub payments_reserved: i64,
    /// The payment tasks, active first, at most [`LISTED_TASKS`].
    pub payment_tasks: Vec<PaymentTask>,
}

/// Payment tasks listed by name in a report (the counts are always complete).
pub const LISTED_TASKS: usize = 20;

/// The methods `workers()` broadcasts: the runbook's `inspect ping`, `active`, `reserved`.
const METHODS: [&str; 3] = ["ping", "active", "reserved"];

/// The app's Celery side as primitives and metrics use it; `None` inside: not configured.
#[derive(Clone)]
pub struct Celery {
    cfg: CeleryConfig,
    broker: Option<Arc<dyn Broker>>,
    /// Why the configured broker cannot be used at all (an invalid URL), said on every call.
    invalid: Option<CeleryError>,
}

impl Default for Celery {
    /// Not configured.
    fn default() -> Self {
        Celery {
            cfg: CeleryConfig::default(),
            broker: None,
            invalid: None,
        }
    }
}

impl Celery {
    /// The app's broker on Redis, its messages stamped by `clock`.
    pub fn new(cfg: &CeleryConfig, redis: Arc<RedisConnections>, clock: Clock) -> Celery {
        let (broker, invalid) = match kombu::KombuRedis::from_config(cfg, redis, clock) {
            None => (None, None),
            Some(Ok(b)) => (Some(Arc::new(b) as Arc<dyn Broker>), None),
            Some(Err(e)) => (None, Some(e)),
        };
        Celery {
            cfg: cfg.clone(),
            broker,
            invalid,
        }
    }

    /// A broker of another world (the simulation's).
    pub fn with_broker(cfg: &CeleryConfig, broker: Arc<dyn Broker>) -> Celery {
        Celery {
            cfg: cfg.clone(),
            broker: Some(broker),
            invalid: None,
        }
    }

    pub fn configured(&self) -> bool {
        self.broker.is_some() || self.invalid.is_some()
    }

    pub fn config(&self) -> &CeleryConfig {
        &self.cfg
    }

    fn broker(&self) -> Result<&dyn Broker, CeleryError> {
        if let Some(e) = &self.invalid {
            return Err(e.clone());
        }
        self.broker.as_deref().ok_or(CeleryError::NotConfigured)
    }

    /// Whether `task` is one of `[celery] tasks`.
    pub fn allows(&self, task: &str) -> bool {
        self.cfg.tasks.iter().any(|t| t == task)
    }

    /// Readiness: the broker answers PING. None when no broker is configured.
    pub async fn ping(&self) -> Option<Result<(), CeleryError>> {
        if !self.configured() {
            return None;
        }
        Some(async { self.broker()?.ping().await }.await)
    }

    /// Pushes the task where the app's workers pop it; returns the task id.
    pub async fn enqueue(
        &self,
        task: &str,
        args: serde_json::Value,
        kwargs: serde_json::Value,
    ) -> Result<String, CeleryError> {
        let broker = self.broker()?;
        let id = uuid::Uuid::now_v7().to_string();
        let msg = kombu::message(task, &id, &args, &kwargs, &self.cfg.queue);
        broker.push(&self.cfg.queue, msg.to_string()).await?;
        Ok(id)
    }

    /// The depth of each payment queue (`[celery] queues`).
    pub async fn queues(&self) -> Result<Vec<QueueDepth>, CeleryError> {
        let broker = self.broker()?;
        let mut out = Vec::new();
        for queue in self.cfg.payment_queues() {
            let length = broker.queue_length(&queue).await?;
            out.push(QueueDepth { queue, length });
        }
        Ok(out)
    }

    /// Workers alive (answering `ping`), for the key metric: one method, so the wait is
    /// the shortest.
    pub async fn alive(&self) -> Result<(i64, i64), CeleryError> {
        let b = self
            .broker()?
            .broadcast(&["ping"], self.cfg.inspect_timeout)
            .await?;
        let report = workers_report(&b, &self.cfg.payment_task);
        Ok((report.alive, report.unanswered))
    }

    /// The workers and their payment tasks (`inspect ping`, `active`, `reserved`).
    pub async fn workers(&self) -> Result<WorkersReport, CeleryError> {
        let b = self
            .broker()?
            .broadcast(&METHODS, self.cfg.inspect_timeout)
            .await?;
        Ok(workers_report(&b, &self.cfg.payment_task))
    }
}

/// What the replies say. Workers are counted by replies, not by name: two workers started
/// with one node name (containers sharing a hostname; Celery only warns) each answer, and
/// must count as two alive, not as one alive and one hung. A name's instances are the most
/// replies it sent to any one method; its task lists (Celery's request dicts: `id`, `name`
/// or `type`, `args`, `time_start`) are added up.
pub fn workers_report(b: &Broadcast, payment_task: &str) -> WorkersReport {
    let mut workers: BTreeMap<String, WorkerReport> = BTreeMap::new();
    let mut tasks: Vec<PaymentTask> = Vec::new();
    let mut per_method: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in &b.replies {
        let w = workers
            .entry(r.worker.clone())
            .or_insert_with(|| WorkerReport {
                name: r.worker.clone(),
                active: None,
                reserved: None,
                payments_active: 0,
                payments_reserved: 0,
                instances: 0,
            });
        *per_method
            .entry((r.worker.clone(), r.method.clone()))
            .or_insert(0) += 1;
        let state = match r.method.as_str() {
            "active" => "active",
            "reserved" => "reserved",
            _ => continue,
        };
        // A worker answers an error as `{"error": …}`: its list stays unknown.
        let Some(list) = r.value.as_array() else {
            continue;
        };
        let payments: Vec<&serde_json::Value> = list
            .iter()
            .filter(|t| task_name(t) == Some(payment_task))
            .collect();
        let n = payments.len() as i64;
        let len = list.len() as i64;
        if state == "active" {
            w.active = Some(w.active.unwrap_or(0) + len);
            w.payments_active += n;
        } else {
            w.reserved = Some(w.reserved.unwrap_or(0) + len);
            w.payments_reserved += n;
        }
        for t in payments {
            tasks.push(PaymentTask {
                id: t["id"].as_str().unwrap_or_default().to_string(),
                worker: r.worker.clone(),
                state: state.into(),
                args: redacted(&t["args"]).to_string(),
                started: t["time_start"]
                    .as_f64()
                    .filter(|_| state == "active")
                    .map(|s| crate::store::ms_to_rfc3339((s * 1000.0) as i64)),
            });
        }
    }
    for ((name, _), n) in per_method {
        if let Some(w) = workers.get_mut(&name) {
            w.instances = w.instances.max(n);
        }
    }
    let workers: Vec<WorkerReport> = workers.into_values().collect();
    let alive = workers.iter().map(|w| w.instances).sum();
    tasks.sort_by(|a, b| {
        (a.state != "active", &a.worker, &a.id).cmp(&(b.state != "active", &b.worker, &b.id))
    });
    let payments_active = workers.iter().map(|w| w.payments_active).sum();
    let payments_reserved = workers.iter().map(|w| w.payments_reserved).sum();
    tasks.truncate(LISTED_TASKS);
    WorkersReport {
        alive,
        unanswered: (b.heard_by as i64 - alive).max(0),
        workers,
        payment_task: payment_task.to_string(),
        payments_active,
        payments_reserved,
        payment_tasks: tasks,
    }
}

/// `v` with every string redacted of anything that looks like a key (task arguments are
/// the app's, and end up in a run's record).
fn redacted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => {
            serde_json::Value::String(crate::primitives::logs::redact(s))
        }
        serde_json::Value::Array(a) => a.iter().map(redacted).collect(),
        serde_json::Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), redacted(v))).collect(),
        other => other.clone(),
    }
}

fn task_name(t: &serde_json::Value) -> Option<&str> {
    t["name"].as_str().or_else(|| t["type"].as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(method: &str, worker: &str, value: serde_json::Value) -> Reply {
        Reply {
            method: method.into(),
            worker: worker.into(),
            value,
        }
    }

    #[test]
    fn replies_make_a_report_of_payment_tasks_and_silent_workers() {
        let pay = "tasks.payment_tasks.process_payment";
        let b = Broadcast {
            heard_by: 3,
            replies: vec![
                reply("ping", "w1@a", serde_json::json!({"ok": "pong"})),
                reply("ping", "w2@b", serde_json::json!({"ok": "pong"})),
                reply(
                    "active",
                    "w1@a",
                    serde_json::json!([
                        {"id": "t1", "name": pay, "args": ["p_1"], "time_start": 1.5},
                        {"id": "t2", "name": "tasks.other", "args": []},
                    ]),
                ),
                reply(
                    "reserved",
                    "w1@a",
                    serde_json::json!([{"id": "t3", "type": pay, "args": ["sk_live_abc"], "time_start": null}]),
                ),
                reply("active", "w2@b", serde_json::json!({"error": "no"})),
            ],
        };
        let r = workers_report(&b, pay);
        assert_eq!(r.alive, 2);
        assert_eq!(r.unanswered, 1);
        assert_eq!(r.payments_active, 1);
        assert_eq!(r.payments_reserved, 1);
        assert_eq!(r.workers[0].active, Some(2));
        assert_eq!(r.workers[1].active, None);
        assert_eq!(r.payment_tasks[0].id, "t1");
        assert_eq!(
            r.payment_tasks[0].started.as_deref(),
            Some("1970-01-01T00:00:01.500Z")
        );
        assert_eq!(r.payment_tasks[1].args, "[\"[redacted]\"]");
    }

    #[test]
    fn two_workers_with_one_name_are_two_alive_not_one_hung() {
        let b = Broadcast {
            heard_by: 2,
            replies: vec![
                reply("ping", "celery@dup", serde_json::json!({"ok": "pong"})),
                reply("ping", "celery@dup", serde_json::json!({"ok": "pong"})),
                reply(
                    "active",
                    "celery@dup",
                    serde_json::json!([{"id": "a", "name": "p"}]),
                ),
                reply(
                    "active",
                    "celery@dup",
                    serde_json::json!([{"id": "b", "name": "p"}]),
                ),
            ],
        };
        let r = workers_report(&b, "p");
        assert_eq!((r.alive, r.unanswered), (2, 0));
        assert_eq!(r.workers.len(), 1);
        assert_eq!(r.workers[0].instances, 2);
        assert_eq!(r.workers[0].active, Some(2));
        assert_eq!(r.payments_active, 2);
    }
}
