//! Cron marks: the last tick each (playbook, schedule) fired for.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// The last tick fired for this trigger, if it ever fired or was seen.
    pub async fn cron_mark(
        &self,
        playbook: &str,
        schedule: &str,
    ) -> Result<Option<i64>, StoreError> {
        let row =
            sqlx::query("SELECT last_tick FROM cron_marks WHERE playbook = $1 AND schedule = $2")
                .bind(playbook)
                .bind(schedule)
                .fetch_optional(&self.writer)
                .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Moves the mark from `from` (None: no mark yet) to `to`. Returns false when another
    /// process moved it first — then that process fires this tick, not us.
    pub async fn advance_cron_mark(
        &self,
        playbook: &str,
        schedule: &str,
        from: Option<i64>,
        to: i64,
    ) -> Result<bool, StoreError> {
        let done = match from {
            Some(from) => {
                sqlx::query(
                    "UPDATE cron_marks SET last_tick = $1 WHERE playbook = $2 AND schedule = $3 AND last_tick = $4",
                )
                .bind(to)
                .bind(playbook)
                .bind(schedule)
                .bind(from)
                .execute(&self.writer)
                .await?
            }
            None => {
                sqlx::query(
                    "INSERT INTO cron_marks (playbook, schedule, last_tick) VALUES ($1, $2, $3) \
                     ON CONFLICT (playbook, schedule) DO NOTHING",
                )
                .bind(playbook)
                .bind(schedule)
                .bind(to)
                .execute(&self.writer)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }
}
