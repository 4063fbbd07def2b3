//! `[server]`: where the API listens, who may call it, how this replica is named among
//! the others and how long its lease lasts.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{bad, duration, ConfigError};

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on. Without tokens only loopback addresses are allowed.
    pub listen: SocketAddr,
    /// Bearer tokens, each with a role. Empty means: no auth, loopback only.
    pub tokens: Vec<TokenConfig>,
    /// Largest request body accepted; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long running runs may take to finish after SIGTERM before they are cancelled.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// This replica's name, shown on the runs it executes; empty: `HOSTNAME-PID`. Replicas
    /// sharing a store are told apart by a lease of their own, whatever their names.
    pub replica_id: String,
    /// How long a replica's lease on its runs lasts without renewal (renewed every third
    /// of it). A replica that stops renewing — crashed, frozen, cut off — loses its runs to
    /// the others this long after its last renewal.
    #[serde(deserialize_with = "duration")]
    pub lease_ttl: Duration,
    /// A client must have sent its request headers this long after it connected (or after
    /// its previous request): a slow or silent client cannot hold a connection.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A request body must have arrived within this.
    #[serde(deserialize_with = "duration")]
    pub request_body_timeout: Duration,
    /// Longest time to answer a request (`?wait=true` runs wait for their run instead,
    /// bounded by the playbook timeout).
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// An answer the client does not read for this long (a write that makes no progress:
    /// a slow or stalled reader, a pipelining client that never reads) closes the
    /// connection, so readers that do not read cannot hold connections.
    #[serde(deserialize_with = "duration")]
    pub write_timeout: Duration,
    /// Connections one client address may hold at once, well below `max_connections`, so
    /// one client cannot take every connection (the address is the socket's peer;
    /// connections from `trusted_proxies` are not capped: a proxy carries many clients).
    pub max_connections_per_client: usize,
    /// Addresses or CIDR blocks of reverse proxies (`"10.0.0.0/8"`, `"192.0.2.7"`): only
    /// from them is `X-Forwarded-For` believed as the client's address.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8765)),
            tokens: Vec::new(),
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            replica_id: String::new(),
            lease_ttl: Duration::from_secs(15),
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
            write_timeout: Duration::from_secs(10),
            max_connections_per_client: 64,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// `trusted_proxies` parsed (validated at load, so nothing is dropped here).
    pub fn trusted_proxy_nets(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|p| parse_net(p).ok())
            .collect()
    }

    /// `replica_id`, or `HOSTNAME-PID` when it is not set.
    pub fn replica_name(&self) -> String {
        if !self.replica_id.is_empty() {
            return self.replica_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "runbookd".into());
        format!("{host}-{}", std::process::id())
    }
}

/// One `[[server.tokens]]` entry. The token itself never appears in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token; recorded as the actor of what they do.
    pub name: String,
    /// Environment variable holding the token.
    pub token_env: Option<String>,
    /// File holding the token (trailing newline ignored).
    pub token_file: Option<PathBuf>,
    /// What the token may do.
    pub role: Role,
}

/// API roles. `operator` can also read; `ingest` can only post alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Alertmanager: `POST /api/v1/alerts` only.
    Ingest,
    /// Humans on call: trigger runs, ack, resolve, reset — and read.
    Operator,
    /// Dashboards and auditors: reads only.
    Viewer,
}

/// A `trusted_proxies` entry that names no network.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is neither an address nor a CIDR block like 10.0.0.0/8")]
struct NotANetwork(String);

/// An address (`192.0.2.7`, a /32 or /128) or a CIDR block (`10.0.0.0/8`).
fn parse_net(s: &str) -> Result<ipnet::IpNet, NotANetwork> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| NotANetwork(s.to_string()))
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(bad("server.max_connections", "must be at least 1"));
        }
        if self.max_connections_per_client == 0 {
            return Err(bad(
                "server.max_connections_per_client",
                "must be at least 1",
            ));
        }
        if self.write_timeout.is_zero() {
            return Err(bad("server.write_timeout", "must be longer than zero"));
        }
        for p in &self.trusted_proxies {
            parse_net(p).map_err(|e| bad("server.trusted_proxies", e.to_string()))?;
        }
        for (key, d) in [
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.request_body_timeout", self.request_body_timeout),
            ("server.request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(bad(key, "must be longer than zero"));
            }
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err(bad(
                "server.lease_ttl",
                "must be at least 300ms (it is renewed every third of it)",
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token_env.is_some() == t.token_file.is_some() {
                return Err(bad(
                    format!("server.tokens[{i}]"),
                    format!(
                        "token `{}` needs exactly one of token_env or token_file",
                        t.name
                    ),
                ));
            }
        }
        Ok(())
    }
}
