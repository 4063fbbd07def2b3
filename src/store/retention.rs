//! Retention: rows past their time (`[state] retain_*`) removed in small batches, each its
//! own short transaction, so pruning months of history never holds the writer long enough
//! to delay an alert. Only finished things go: queued and running runs, open or acknowledged
//! incidents and pending notifications stay whatever their age.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};
use crate::{config::StateConfig, metrics::Metrics};

/// Rows removed per statement.
const BATCH: i64 = 500;
/// Pause between two batches: the writer is free for whoever waits.
const BREATHE: Duration = Duration::from_millis(20);

/// What one rule removes: `DELETE … WHERE id IN (SELECT … LIMIT $2)` with `$1` the cutoff.
struct Rule {
    table: &'static str,
    /// `(metric label, statement)`, run in order; the last one removes the rows the earlier
    /// ones hang off (an incident after its timeline and fires).
    steps: &'static [(&'static str, &'static str)],
}

const RUNS: Rule = Rule {
    table: "runs",
    steps: &[(
        "runs",
        "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE queued_at < $1 \
         AND status NOT IN ('queued', 'running') ORDER BY queued_at LIMIT $2)",
    )],
};

const APPROVALS: Rule = Rule {
    table: "approvals",
    steps: &[(
        "approvals",
        "DELETE FROM approvals WHERE id IN (SELECT id FROM approvals WHERE requested_at < $1 \
         AND status IN ('denied', 'expired', 'used', 'withdrawn') ORDER BY requested_at LIMIT $2)",
    )],
};

const INCIDENTS: Rule = Rule {
    table: "incidents",
    steps: &[
        (
            "incident_timeline",
            "DELETE FROM incident_timeline WHERE incident_id IN (SELECT id FROM incidents \
             WHERE status = 'resolved' AND resolved_at < $1 ORDER BY resolved_at, id LIMIT $2)",
        ),
        (
            "escalation_fires",
            "DELETE FROM escalation_fires WHERE incident_id IN (SELECT id FROM incidents \
             WHERE status = 'resolved' AND resolved_at < $1 ORDER BY resolved_at, id LIMIT $2)",
        ),
        (
            "incidents",
            "DELETE FROM incidents WHERE id IN (SELECT id FROM incidents \
             WHERE status = 'resolved' AND resolved_at < $1 ORDER BY resolved_at, id LIMIT $2)",
        ),
    ],
};

const ALERTS: Rule = Rule {
    table: "alerts",
    steps: &[(
        "alerts",
        "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE received_at < $1 \
         ORDER BY received_at LIMIT $2)",
    )],
};

const NOTIFICATIONS: Rule = Rule {
    table: "outbox",
    steps: &[(
        "outbox",
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE created_at < $1 \
         AND status IN ('sent', 'failed') ORDER BY created_at LIMIT $2)",
    )],
};

const AUDIT: Rule = Rule {
    table: "audit",
    steps: &[(
        "audit",
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 ORDER BY at LIMIT $2)",
    )],
};

impl Store {
    /// Removes up to one batch of `rule`'s rows older than `cutoff`; the number removed of
    /// each table.
    async fn prune_batch(
        &self,
        rule: &Rule,
        cutoff: i64,
    ) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut removed = Vec::new();
        for (table, sql) in rule.steps {
            let done = sqlx::query(sql)
                .bind(cutoff)
                .bind(BATCH)
                .execute(&mut *tx)
                .await?;
            removed.push((*table, done.rows_affected()));
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// One retention pass over every table: batch after batch until nothing is past its
    /// time. Returns the rows removed per table.
    pub async fn prune(
        &self,
        cfg: &StateConfig,
    ) -> Result<std::collections::BTreeMap<&'static str, u64>, StoreError> {
        let now = self.now();
        let mut total = std::collections::BTreeMap::new();
        for (rule, keep) in [
            (&RUNS, cfg.retain_runs),
            (&APPROVALS, cfg.retain_runs),
            (&INCIDENTS, cfg.retain_incidents),
            (&ALERTS, cfg.retain_alerts),
            (&NOTIFICATIONS, cfg.retain_notifications),
            (&AUDIT, cfg.retain_audit),
        ] {
            if keep.is_zero() {
                continue; // kept forever
            }
            let cutoff = now - keep.as_millis() as i64;
            loop {
                let removed = self.prune_batch(rule, cutoff).await?;
                let mut last = 0;
                for (table, n) in removed {
                    *total.entry(table).or_insert(0) += n;
                    if table == rule.table {
                        last = n;
                    }
                }
                if last < BATCH as u64 {
                    break;
                }
                tokio::time::sleep(BREATHE).await;
            }
        }
        // Expired dashboard sessions go whatever the retention settings.
        let sessions = self.prune_sessions().await?;
        if sessions > 0 {
            total.insert("sessions", sessions);
        }
        Ok(total)
    }
}

/// Prunes every `[state] prune_interval` until `stop` (every replica may; a row is removed
/// once).
pub async fn prune_loop(
    store: Store,
    cfg: StateConfig,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        match store.prune(&cfg).await {
            Ok(removed) => {
                let any = removed.values().any(|n| *n > 0);
                for (table, n) in &removed {
                    if *n > 0 {
                        metrics.pruned(table, *n);
                    }
                }
                if any {
                    tracing::info!(?removed, "retention: removed rows past [state] retain_*");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying next interval"),
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.prune_interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}
