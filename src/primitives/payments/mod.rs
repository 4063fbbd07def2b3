//! `payments::*`: the payments app's own tables as the runbook's investigation steps read
//! them, and one guarded write (`set_status`), behind [`PaymentsBackend`]: PostgreSQL in
//! production ([`postgres`]), the simulated world's rows in simulations. Scripts and
//! reconciliation see one [`Payments`] and cannot tell which.

pub mod postgres;
mod script;

use std::{sync::Arc, time::Duration};

use serde::Serialize;

pub use self::script::register;
use crate::config::PaymentsConfig;

/// Errors from the app's database.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("payments database is not configured: set [payments] database_url")]
    NotConfigured,
    #[error("payments database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Unavailable(String),
}

/// One payment row as scripts and reconciliation see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Payment {
    pub id: String,
    pub account_id: Option<String>,
    /// Decimal text, exactly as stored (`"42.50"`).
    pub amount: Option<String>,
    pub status: String,
    pub processor_ref: Option<String>,
    pub idempotency_key: Option<String>,
    pub metadata: serde_json::Value,
    pub created_at: String,
    pub age_seconds: f64,
}

/// Counts of payments by status in a window, and the failure rate over them.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Counts {
    pub total: i64,
    pub failed: i64,
    /// failed / total, 0 when there were none.
    pub failure_rate: f64,
    pub by_status: std::collections::BTreeMap<String, i64>,
}

/// Where the app's payments live.
#[async_trait::async_trait]
pub trait PaymentsBackend: Send + Sync {
    /// Readiness: the database answers.
    async fn ping(&self) -> Result<(), PaymentsError>;
    /// Payments created in the last `window`, by status.
    async fn counts(&self, window: Duration) -> Result<Counts, PaymentsError>;
    /// The runbook's hourly breakdown: (hour, status, count), newest hour first.
    async fn hourly(&self, hours: i64) -> Result<Vec<(String, String, i64)>, PaymentsError>;
    /// Pending payments older than `older_than`, oldest first. `with_ref`: only those with
    /// (true) or without (false) a `processor_ref`; `None`: both.
    async fn stale_pending(
        &self,
        older_than: Duration,
        with_ref: Option<bool>,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentsError>;
    /// Failed payments of the last `window`, newest first.
    async fn recent_failures(
        &self,
        window: Duration,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentsError>;
    /// One payment by id.
    async fn get(&self, id: &str) -> Result<Option<Payment>, PaymentsError>;
    /// Age in seconds of the oldest pending payment, if any.
    async fn oldest_pending_age(&self) -> Result<Option<f64>, PaymentsError>;
    /// Age in seconds of the newest payment the app's own reconciliation settled
    /// (`metadata.reconciled = true`, not `status_changed_by: runbookd`), if any. The table
    /// has no `updated_at`: a payment is reconciled only once stale, so the app's task ran at
    /// least `stale_after` after that payment was created.
    async fn newest_app_reconciled_age(&self) -> Result<Option<f64>, PaymentsError>;
    /// How many payments are pending longer than `older_than`, and how many of those have
    /// no `processor_ref` — counted, never capped as a listing is.
    async fn count_stale_pending(&self, older_than: Duration) -> Result<(i64, i64), PaymentsError>;
    /// Compare-and-set of a payment's status: changes it only if it is still `from`, and
    /// records why in `metadata` (as the app's reconciliation does). False: someone (a
    /// webhook) changed it first, and that change wins.
    async fn set_status(
        &self,
        id: &str,
        from: &str,
        to: &str,
        reason: &str,
    ) -> Result<bool, PaymentsError>;
    /// The app's most recent `webhook_received` audit rows, newest first.
    async fn recent_webhooks(&self, limit: i64) -> Result<Vec<serde_json::Value>, PaymentsError>;
    /// `webhook_received` rows in the last `window`.
    async fn webhook_count(&self, window: Duration) -> Result<i64, PaymentsError>;
}

/// The app's payments as primitives use them; `None` inside: not configured.
#[derive(Clone)]
pub struct Payments {
    backend: Option<Arc<dyn PaymentsBackend>>,
    /// `[payments] stale_after`.
    stale_after: Duration,
}

impl Default for Payments {
    fn default() -> Self {
        Payments {
            backend: None,
            stale_after: PaymentsConfig::default().stale_after,
        }
    }
}

impl Payments {
    /// From `[payments]`: PostgreSQL when `database_url` is set, else not configured.
    pub fn new(cfg: &PaymentsConfig) -> Result<Payments, PaymentsError> {
        let backend = match &cfg.database_url {
            None => None,
            Some(url) => Some(
                Arc::new(postgres::PostgresPayments::connect_lazy(cfg, url)?)
                    as Arc<dyn PaymentsBackend>,
            ),
        };
        Ok(Payments {
            backend,
            stale_after: cfg.stale_after,
        })
    }

    /// Any backend (a simulation's), with `[payments] stale_after` from `cfg`.
    pub fn with_backend(backend: Arc<dyn PaymentsBackend>, cfg: &PaymentsConfig) -> Payments {
        Payments {
            backend: Some(backend),
            stale_after: cfg.stale_after,
        }
    }

    /// How long a payment may stay pending before it needs reconciliation.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// True when a database is configured (or simulated).
    pub fn configured(&self) -> bool {
        self.backend.is_some()
    }

    /// The backend, or why there is none.
    pub fn backend(&self) -> Result<&dyn PaymentsBackend, PaymentsError> {
        self.backend.as_deref().ok_or(PaymentsError::NotConfigured)
    }
}
