//! Remediation budgets: how many times an action may happen in a sliding window.

use sqlx::{Executor, Row};

use super::{Backend, Store, StoreError};

/// What a budget looks like at the moment it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetCheck {
    /// Uses inside the window before this call.
    pub used: i64,
    /// Whether this call was granted (and, when `consume`, recorded).
    pub granted: bool,
    /// When the oldest use in the window leaves it (ms), if the budget is spent.
    pub frees_at: Option<i64>,
}

impl Store {
    /// Asks for one use of budget `name` (`limit` uses per `window_ms`) at `now`. With
    /// `consume` a granted use is recorded; without it (dry runs) nothing is written.
    /// Check and insert are one transaction; on PostgreSQL an advisory lock on the name
    /// serialises replicas asking for the same budget.
    pub async fn take_budget(
        &self,
        name: &str,
        limit: i64,
        window_ms: i64,
        now: i64,
        run_id: &str,
        consume: bool,
    ) -> Result<BudgetCheck, StoreError> {
        let mut tx = self.writer.begin().await?;
        if self.backend == Backend::Postgres {
            tx.execute(
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1)::bigint)").bind(name),
            )
            .await?;
        }
        let since = now - window_ms;
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(used_at) FROM budget_uses WHERE name = $1 AND used_at > $2",
        )
        .bind(name)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?;
        let used: i64 = row.try_get(0)?;
        let oldest: Option<i64> = row.try_get(1)?;
        let granted = used < limit;
        if granted && consume {
            sqlx::query("INSERT INTO budget_uses (name, used_at, run_id) VALUES ($1, $2, $3)")
                .bind(name)
                .bind(now)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            // Uses older than a day past any sane window only cost space.
            sqlx::query("DELETE FROM budget_uses WHERE name = $1 AND used_at < $2")
                .bind(name)
                .bind(since - 86_400_000)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(BudgetCheck {
            used,
            granted,
            frees_at: (!granted).then(|| oldest.map(|o| o + window_ms)).flatten(),
        })
    }
}
