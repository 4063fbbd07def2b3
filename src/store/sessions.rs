//! Dashboard sessions (`/login`): which token a browser logged in with, until when. Kept in
//! the state store so every replica behind a load balancer knows them and a restart does
//! not log anybody out.

use sqlx::Row;

use super::{Store, StoreError};

/// A live session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub token_name: String,
    /// SHA-256 (hex) of the token's secret when the session began.
    pub token_digest: String,
    pub expires_at: i64,
}

impl Store {
    /// Records a session whose cookie secret hashes to `id_hash`.
    pub async fn create_session(
        &self,
        id_hash: &str,
        token_name: &str,
        token_digest: &str,
        ttl: std::time::Duration,
    ) -> Result<i64, StoreError> {
        let now = super::now_ms();
        let expires = now + ttl.as_millis() as i64;
        sqlx::query(
            "INSERT INTO sessions (id_hash, token_name, token_digest, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(token_name)
        .bind(token_digest)
        .bind(now)
        .bind(expires)
        .execute(&self.writer)
        .await?;
        Ok(expires)
    }

    /// The session, unless it does not exist or has expired (wall clock: sessions are
    /// about people, not a simulated world).
    pub async fn session(&self, id_hash: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT token_name, token_digest, expires_at FROM sessions \
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(super::now_ms())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(Session {
                token_name: r.try_get("token_name")?,
                token_digest: r.try_get("token_digest")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Logs a session out.
    pub async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Removes sessions that expired; returns how many.
    pub async fn prune_sessions(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(super::now_ms())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}
