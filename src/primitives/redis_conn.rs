//! Reconnecting Redis connections, one per URL, shared by every primitive that needs Redis
//! (breakers, the Celery broker). Created lazily: a Redis that is down at start only makes
//! the primitives that need it fail, with a message saying so.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connections by URL.
#[derive(Default)]
pub struct RedisConnections {
    by_url: Mutex<HashMap<String, ConnectionManager>>,
}

impl RedisConnections {
    /// The connection for `url`, created on first use. Must be called inside the runtime.
    pub fn get(&self, url: &str) -> Result<ConnectionManager, String> {
        let mut map = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(url) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(url)
            .map_err(|e| format!("invalid Redis URL {}: {e}", crate::redact::redact_url(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("Redis {}: {e}", crate::redact::redact_url(url)))?;
        map.insert(url.to_string(), manager.clone());
        Ok(manager)
    }
}
