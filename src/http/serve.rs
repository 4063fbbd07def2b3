//! The HTTP server loop: HTTP/1.1 over hyper with the limits a daemon that must stay up
//! during an outage needs — a client that never finishes its headers is cut off after
//! `[server] header_read_timeout`; one that does not read its answers (a write that makes
//! no progress for `write_timeout`) is cut off too, which also bounds pipelining: hyper
//! answers one request of a connection at a time, so a client that sends a thousand and
//! reads none holds one blocked answer until then; one client address holds at most
//! `max_connections_per_client` connections (past that it is answered 429 and closed); at
//! most `max_connections` are open at once (past that, connections wait in the kernel's
//! accept queue), and a stop lets open requests finish. Body and whole-request time limits
//! are layers of the router ([`super::router::router`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Connection-level limits (`[server]`).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub write_timeout: Duration,
    pub max_connections_per_client: usize,
    /// Peers not capped per address (reverse proxies carry many clients).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
}

/// Connections open per client address; a slot is given back when its guard drops.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.1.2.3".parse().expect("h"),
        );
        let proxy: std::net::SocketAddr = "10.0.0.5:4000".parse().expect("addr");
        let stranger: std::net::SocketAddr = "192.0.2.1:4000".parse().expect("addr");
        // From a trusted proxy: the last address that is not a proxy of ours.
        assert_eq!(
            client_address(proxy, &h, &trusted).ip().to_string(),
            "198.51.100.7"
        );
        // From anyone else: the socket's peer, whatever the header says.
        assert_eq!(client_address(stranger, &h, &trusted), stranger);
        // A trusted proxy without the header: itself.
        assert_eq!(
            client_address(proxy, &axum::http::HeaderMap::new(), &trusted),
            proxy
        );
    }
}

#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

struct ClientSlot {
    clients: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The client's address: the socket's peer, unless the peer is a trusted proxy — then the
/// last address in `X-Forwarded-For` that is not a trusted proxy itself (each proxy appends
/// the address it heard from, so addresses left of an untrusted one may be forged).
fn client_address(
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::SocketAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer.ip().to_canonical()) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect::<Vec<_>>();
    forwarded
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .map(|ip| std::net::SocketAddr::new(*ip, peer.port()))
        .unwrap_or(peer)
}

/// What a client over its connection cap is told before the connection closes.
const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 88\r\n\r\n{\"error\":\"too many connections from this address ([server] max_connections_per_client)\"}";

/// Serves `app` on `listener` until `stop`, then waits up to `drain` for open
/// connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients = Arc::new(PerClient::default());
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        let client = if limits.trusted_proxies.iter().any(|n| n.contains(&ip)) {
            None
        } else {
            match clients.take(ip, limits.max_connections_per_client) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(client = %ip, "connection refused: too many from this address");
                    // Best effort, never waiting: the client is told why, then closed.
                    let _ = stream.try_write(TOO_MANY);
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = super::stalled::StallLimit::new(stream, limits.write_timeout);
        // Every request carries its client's address (`ConnectInfo`): the socket's peer, or
        // behind a trusted proxy the address its `X-Forwarded-For` names.
        let trusted = limits.trusted_proxies.clone();
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                let client = client_address(peer, req.headers(), &trusted);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(client));
                req
            },
        ));
        let stop = stop.clone();
        let header_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let _client = client;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP connections still open after {} s; closing",
            drain.as_secs()
        );
    }
}
