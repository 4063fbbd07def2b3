//! The app's Celery side, simulated: the world keeps its workers (who answers remote control,
//! which payment tasks each runs or holds) and its queues, and answers the [`Broker`] calls
//! of production's `celery::*` primitives with what Celery itself would send — the same
//! request dicts a worker puts in its `inspect active` / `reserved` replies — so production
//! decides what they mean in both worlds.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crate::primitives::celery::{Broadcast, Broker, CeleryError, Reply};
use crate::sim::World;

/// A worker of the simulated app.
#[derive(Debug, Clone, PartialEq)]
pub struct SimWorker {
    /// Node name, `celery@worker-1`.
    pub name: String,
    /// Serves remote control; `false`: connected but hung (it hears, it does not answer).
    pub answers: bool,
    /// Payment ids of the payment tasks it runs, with their start (virtual ms).
    pub active: Vec<(String, i64)>,
    /// Payment ids of the payment tasks it has prefetched.
    pub reserved: Vec<String>,
}

/// The world's broker (`None` in the world: runbookd has no `[celery] broker_url`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimCelery {
    /// The broker does not answer.
    pub down: bool,
    /// Messages waiting, by queue.
    pub queued: BTreeMap<String, Vec<String>>,
    pub workers: Vec<SimWorker>,
}

impl SimCelery {
    /// Two idle workers, nothing queued.
    pub fn healthy() -> SimCelery {
        SimCelery {
            down: false,
            queued: BTreeMap::new(),
            workers: (1..=2).map(worker).collect(),
        }
    }
}

/// Worker `n`, idle and answering.
pub fn worker(n: usize) -> SimWorker {
    SimWorker {
        name: format!("celery@worker-{n}"),
        answers: true,
        active: Vec::new(),
        reserved: Vec::new(),
    }
}

pub struct SimBroker {
    pub world: Arc<World>,
}

impl SimBroker {
    fn celery<T>(&self, f: impl FnOnce(&mut SimCelery) -> T) -> Result<T, CeleryError> {
        let mut s = self.world.state();
        let c = s.celery.as_mut().ok_or(CeleryError::NotConfigured)?;
        if c.down {
            return Err(CeleryError::Broker(
                "Redis: Connection refused (os error 111) (simulated)".into(),
            ));
        }
        Ok(f(c))
    }

    /// A request dict as a worker reports it.
    fn request(&self, w: &SimWorker, payment: &str, started_ms: Option<i64>) -> serde_json::Value {
        serde_json::json!({
            "id": format!("{}-{payment}", w.name),
            "name": self.world.celery_names().1,
            "args": [payment],
            "kwargs": {},
            "type": self.world.celery_names().1,
            "hostname": w.name,
            "time_start": started_ms.map(|ms| ms as f64 / 1000.0),
            "acknowledged": started_ms.is_some(),
            "delivery_info": {
                "exchange": "",
                "routing_key": self.world.celery_names().0,
                "priority": 0,
                "redelivered": false,
            },
            "worker_pid": null,
        })
    }
}

#[async_trait::async_trait]
impl Broker for SimBroker {
    async fn ping(&self) -> Result<(), CeleryError> {
        self.celery(|_| ())
    }

    async fn push(&self, queue: &str, message: String) -> Result<(), CeleryError> {
        self.celery(|c| c.queued.entry(queue.to_string()).or_default().push(message))
    }

    async fn queue_length(&self, queue: &str) -> Result<i64, CeleryError> {
        self.celery(|c| c.queued.get(queue).map_or(0, |q| q.len() as i64))
    }

    async fn broadcast(
        &self,
        methods: &[&str],
        _timeout: Duration,
    ) -> Result<Broadcast, CeleryError> {
        let workers = self.celery(|c| c.workers.clone())?;
        let mut replies = Vec::new();
        for w in workers.iter().filter(|w| w.answers) {
            for method in methods {
                let value = match *method {
                    "ping" => serde_json::json!({ "ok": "pong" }),
                    "active" => w
                        .active
                        .iter()
                        .map(|(p, at)| self.request(w, p, Some(*at)))
                        .collect(),
                    "reserved" => w
                        .reserved
                        .iter()
                        .map(|p| self.request(w, p, None))
                        .collect(),
                    other => {
                        serde_json::json!({ "error": format!("No such control command: {other}") })
                    }
                };
                replies.push(Reply {
                    method: method.to_string(),
                    worker: w.name.clone(),
                    value,
                });
            }
        }
        Ok(Broadcast {
            heard_by: workers.len(),
            replies,
        })
    }
}
