//! `[celery]`: the app's Celery broker (Redis, kombu's transport) — its payment queues and
//! workers (runbook Step 4: `celery inspect active | grep process_payment`), and the tasks
//! runbookd may hand the app (`celery_enqueue`).

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{bad, duration, ConfigError};

/// `[celery]`. Unset `broker_url`: not configured; `celery_enqueue` says so and the diagnosis
/// lists the workers among what it could not check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CeleryConfig {
    /// The app's `CELERY_BROKER_URL` (Redis).
    pub broker_url: Option<String>,
    /// The URL from an environment variable instead (it may hold a password).
    pub broker_url_env: Option<String>,
    /// The URL from a file instead.
    pub broker_url_file: Option<PathBuf>,
    /// Queue (Redis list) `celery_enqueue` puts tasks on.
    pub queue: String,
    /// The payment queues whose depth `celery::queues()` and the key metric report. Empty:
    /// `queue` alone.
    pub queues: Vec<String>,
    /// The only task names `celery_enqueue` may send: a playbook must not be able to start
    /// any task the app's workers would run.
    pub tasks: Vec<String>,
    /// The task whose active and reserved instances `celery::workers()` lists (the
    /// runbook's `grep process_payment`).
    pub payment_task: String,
    /// The app's `control_exchange` (Celery's default `celery`): its workers listen for
    /// remote control on `<control_exchange>.pidbox`.
    pub control_exchange: String,
    /// How long a remote-control broadcast waits for workers' replies (Celery's `inspect`
    /// default is 1 s). It ends sooner once every worker that heard it has answered.
    #[serde(deserialize_with = "duration")]
    pub inspect_timeout: Duration,
}

impl Default for CeleryConfig {
    fn default() -> Self {
        CeleryConfig {
            broker_url: None,
            broker_url_env: None,
            broker_url_file: None,
            queue: "celery".into(),
            queues: Vec::new(),
            tasks: vec!["tasks.payment_tasks.reconcile_payments".into()],
            payment_task: "tasks.payment_tasks.process_payment".into(),
            control_exchange: "celery".into(),
            inspect_timeout: Duration::from_secs(1),
        }
    }
}

impl CeleryConfig {
    /// The queues measured: `queues`, or `queue` when none is listed.
    pub fn payment_queues(&self) -> Vec<String> {
        if self.queues.is_empty() {
            vec![self.queue.clone()]
        } else {
            self.queues.clone()
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = |n: &str| !n.is_empty() && !n.contains(char::is_whitespace);
        if !name_ok(&self.queue) || !self.queues.iter().all(|q| name_ok(q)) {
            return Err(bad(
                "celery.queues",
                "queue names must be non-empty, without spaces",
            ));
        }
        if !name_ok(&self.control_exchange) {
            return Err(bad(
                "celery.control_exchange",
                "must be a non-empty name without spaces",
            ));
        }
        if !name_ok(&self.payment_task) {
            return Err(bad("celery.payment_task", "must be a task name"));
        }
        if self.inspect_timeout.is_zero() || self.inspect_timeout > Duration::from_secs(30) {
            return Err(bad(
                "celery.inspect_timeout",
                "must be between 1 ms and 30 s",
            ));
        }
        if let Some(u) = &self.broker_url {
            if !(u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("unix://"))
            {
                return Err(bad(
                    "celery.broker_url",
                    "must be a redis:// URL (runbookd reads kombu's Redis transport)",
                ));
            }
        }
        Ok(())
    }
}
