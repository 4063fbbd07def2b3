//! The app's `payments_payment` and `audit_auditlog` tables, simulated: the same answers the
//! `payments::*` primitives give from PostgreSQL, computed over the world's rows at the
//! virtual clock's now.

use std::time::Duration;

use crate::primitives::payments::{Counts, Payment, PaymentsBackend, PaymentsError};
use crate::sim::{SimPayment, World};

fn down() -> PaymentsError {
    PaymentsError::Unavailable("payments database does not answer (simulated outage)".into())
}

impl World {
    fn payment_view(&self, p: &SimPayment, now: i64) -> Payment {
        Payment {
            id: p.id.clone(),
            account_id: Some(p.account_id.clone()),
            amount: Some(p.amount.clone()),
            status: p.status.clone(),
            processor_ref: p.processor_ref.clone(),
            idempotency_key: Some(format!("idem-{}", p.id)),
            metadata: p.metadata.clone(),
            created_at: crate::store::ms_to_rfc3339(p.created_ms),
            age_seconds: (now - p.created_ms) as f64 / 1000.0,
        }
    }

    /// Rows matching `keep`, as payments, in the order `order` gives.
    fn select(
        &self,
        keep: impl Fn(&SimPayment) -> bool,
        newest_first: bool,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentsError> {
        let now = self.clock.now_ms();
        let s = self.state();
        if s.payments_down {
            return Err(down());
        }
        let mut rows: Vec<&SimPayment> = s.payments.iter().filter(|p| keep(p)).collect();
        rows.sort_by_key(|p| p.created_ms);
        if newest_first {
            rows.reverse();
        }
        Ok(rows
            .into_iter()
            .take(limit.max(0) as usize)
            .map(|p| self.payment_view(p, now))
            .collect())
    }
}

#[async_trait::async_trait]
impl PaymentsBackend for World {
    async fn ping(&self) -> Result<(), PaymentsError> {
        if self.state().payments_down {
            return Err(down());
        }
        Ok(())
    }

    async fn counts(&self, window: Duration) -> Result<Counts, PaymentsError> {
        let since = self.clock.now_ms() - window.as_millis() as i64;
        let mut counts = Counts::default();
        for p in self.select(|p| p.created_ms >= since, false, i64::MAX)? {
            counts.total += 1;
            if p.status == "failed" {
                counts.failed += 1;
            }
            *counts.by_status.entry(p.status).or_default() += 1;
        }
        if counts.total > 0 {
            counts.failure_rate = counts.failed as f64 / counts.total as f64;
        }
        Ok(counts)
    }

    async fn hourly(&self, hours: i64) -> Result<Vec<(String, String, i64)>, PaymentsError> {
        let since = self.clock.now_ms() - hours * 3_600_000;
        let mut by: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for p in self.select(|p| p.created_ms > since, false, i64::MAX)? {
            let hour_ms = chrono::DateTime::parse_from_rfc3339(&p.created_at)
                .map(|t| t.timestamp_millis() / 3_600_000 * 3_600_000)
                .unwrap_or_default();
            let hour = chrono::DateTime::from_timestamp_millis(hour_ms)
                .map(|t| t.format("%Y-%m-%dT%H:00:00Z").to_string())
                .unwrap_or_default();
            *by.entry((hour, p.status)).or_default() += 1;
        }
        let mut rows: Vec<(String, String, i64)> =
            by.into_iter().map(|((h, s), n)| (h, s, n)).collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(rows)
    }

    async fn stale_pending(
        &self,
        older_than: Duration,
        with_ref: Option<bool>,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentsError> {
        let before = self.clock.now_ms() - older_than.as_millis() as i64;
        self.select(
            |p| {
                p.status == "pending"
                    && p.created_ms < before
                    && with_ref.is_none_or(|w| w == p.processor_ref.is_some())
            },
            false,
            limit,
        )
    }

    async fn recent_failures(
        &self,
        window: Duration,
        limit: i64,
    ) -> Result<Vec<Payment>, PaymentsError> {
        let since = self.clock.now_ms() - window.as_millis() as i64;
        self.select(
            |p| p.status == "failed" && p.created_ms >= since,
            true,
            limit,
        )
    }

    async fn get(&self, id: &str) -> Result<Option<Payment>, PaymentsError> {
        Ok(self.select(|p| p.id == id, false, 1)?.pop())
    }

    async fn oldest_pending_age(&self) -> Result<Option<f64>, PaymentsError> {
        Ok(self
            .select(|p| p.status == "pending", false, 1)?
            .first()
            .map(|p| p.age_seconds))
    }

    async fn newest_app_reconciled_age(&self) -> Result<Option<f64>, PaymentsError> {
        let by_app = |p: &SimPayment| {
            p.metadata["reconciled"] == true && p.metadata["status_changed_by"] != "runbookd"
        };
        Ok(self.select(by_app, true, 1)?.first().map(|p| p.age_seconds))
    }

    async fn count_stale_pending(&self, older_than: Duration) -> Result<(i64, i64), PaymentsError> {
        let stale = self.stale_pending(older_than, None, i64::MAX).await?;
        let without_ref = stale.iter().filter(|p| p.processor_ref.is_none()).count();
        Ok((stale.len() as i64, without_ref as i64))
    }

    async fn set_status(
        &self,
        id: &str,
        from: &str,
        to: &str,
        reason: &str,
    ) -> Result<bool, PaymentsError> {
        let mut s = self.state();
        if s.payments_down {
            return Err(down());
        }
        let Some(p) = s
            .payments
            .iter_mut()
            .find(|p| p.id == id && p.status == from)
        else {
            return Ok(false);
        };
        p.status = to.into();
        if !p.metadata.is_object() {
            p.metadata = serde_json::json!({});
        }
        p.metadata["reconciled"] = true.into();
        p.metadata["status_reason"] = reason.into();
        p.metadata["status_changed_by"] = "runbookd".into();
        p.metadata["previous_status"] = from.into();
        Ok(true)
    }

    async fn recent_webhooks(&self, limit: i64) -> Result<Vec<serde_json::Value>, PaymentsError> {
        let s = self.state();
        if s.payments_down {
            return Err(down());
        }
        let mut rows = s.webhook_rows.clone();
        rows.sort_unstable_by(|a, b| b.cmp(a));
        Ok(rows
            .into_iter()
            .take(limit.max(0) as usize)
            .map(|t| {
                serde_json::json!({
                    "created_at": crate::store::ms_to_rfc3339(t),
                    "object_id": null,
                    "changes": {"type": "payment_intent.succeeded"},
                })
            })
            .collect())
    }

    async fn webhook_count(&self, window: Duration) -> Result<i64, PaymentsError> {
        let since = self.clock.now_ms() - window.as_millis() as i64;
        let s = self.state();
        if s.payments_down {
            return Err(down());
        }
        Ok(s.webhook_rows.iter().filter(|t| **t >= since).count() as i64)
    }
}
