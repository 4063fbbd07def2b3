//! Reconnecting Redis connections, one per URL, shared by every primitive that needs Redis
//! (breakers, the Celery broker). Created lazily: a Redis that is down at start only makes
//! the primitives that need it fail, with a message saying so.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A Redis that cannot be used; the URL is shown redacted.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis URL {url}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis {url}: {source}")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis: {0}")]
    Command(#[from] redis::RedisError),
}

/// Connections by URL.
#[derive(Default)]
pub struct RedisConnections {
    by_url: Mutex<HashMap<String, ConnectionManager>>,
}

impl RedisConnections {
    /// The connection for `url`, created on first use. Must be called inside the runtime.
    pub fn get(&self, url: &str) -> Result<ConnectionManager, RedisError> {
        let mut map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(url) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(url).map_err(|source| RedisError::Url {
            url: crate::redact::redact_url(url),
            source,
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|source| {
                RedisError::Connect {
                    url: crate::redact::redact_url(url),
                    source,
                }
            })?;
        map.insert(url.to_string(), manager.clone());
        Ok(manager)
    }
}
