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

    /// Moves the mark from `from` to `to` and records the runs of the ticks that fire, in
    /// one transaction: a crash (or a full run queue) can neither lose a tick that was
    /// marked nor fire one twice. False when another process moved the mark first.
    pub async fn fire_cron_ticks(
        &self,
        playbook: &str,
        schedule: &str,
        from: i64,
        to: i64,
        runs: &[super::RunRecord],
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE cron_marks SET last_tick = $1 WHERE playbook = $2 AND schedule = $3 AND last_tick = $4",
        )
        .bind(to)
        .bind(playbook)
        .bind(schedule)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        super::runs::insert_runs_on(&mut tx, runs).await?;
        tx.commit().await?;
        Ok(true)
    }
}
