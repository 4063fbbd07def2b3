//! Clients that do not read: a reader that never reads its answers is cut off after
//! `[server] write_timeout`, and one address cannot take every connection
//! (`max_connections_per_client`), so `/healthz` and alerts are answered during the attack.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::helpers::{Daemon, Db, Options, Workspace};

/// A connection from `from` with a 4 KiB receive buffer that pipelines `n` requests for
/// `/metrics` and never reads an answer: more answers than the kernel's buffers hold, so
/// the server's writes stall. Resolves when the server closes the connection (the
/// pipeline's write fails), with how long that took.
async fn stalled_reader(from: &'static str, to: SocketAddr, n: usize) -> Duration {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind");
    let start = Instant::now();
    let Ok(mut stream) = socket.connect(to).await else {
        return start.elapsed();
    };
    let requests = "GET /metrics HTTP/1.1\r\nHost: runbookd\r\n\r\n".repeat(n);
    // Once the server stops reading (its answers do not go out), this write waits; it fails
    // when the server closes the connection.
    let written = tokio::time::timeout(
        Duration::from_secs(30),
        stream.write_all(requests.as_bytes()),
    )
    .await;
    assert!(
        written.is_ok(),
        "a stalled reader's connection was still open after 30 s"
    );
    if matches!(written, Ok(Ok(()))) {
        // Everything went out: wait for the close without reading.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: runbookd\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
        .await;
    }
    start.elapsed()
}

#[tokio::test]
async fn readers_that_never_read_cannot_take_every_connection() {
    let ws = Workspace::new(Db::Sqlite).await;
    let opts = Options {
        env: vec![
            ("RUNBOOKD_SERVER__MAX_CONNECTIONS".into(), "64".into()),
            (
                "RUNBOOKD_SERVER__MAX_CONNECTIONS_PER_CLIENT".into(),
                "8".into(),
            ),
            ("RUNBOOKD_SERVER__WRITE_TIMEOUT".into(), "2s".into()),
            // Nothing but the write timeout may close the attacker's connections here.
            ("RUNBOOKD_SERVER__HEADER_READ_TIMEOUT".into(), "120s".into()),
            ("RUNBOOKD_SERVER__REQUEST_TIMEOUT".into(), "120s".into()),
        ],
        ..Default::default()
    };
    let d = Daemon::start(&ws, &opts);
    // The attack, from 127.0.0.2: 64 connections, each pipelining 20,000 requests (about
    // 60 MB of answers) and reading none.
    let attack: Vec<_> = (0..64)
        .map(|_| tokio::spawn(stalled_reader("127.0.0.2", d.addr, 20_000)))
        .collect();
    // Everyone else is still answered while it lasts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    for path in ["/healthz", "/api/v1/playbooks"] {
        let resp = client
            .get(d.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} not answered during the attack: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    // A connection past the attacker's cap is told why.
    let mut extra = TcpStream::connect_std_from("127.0.0.2", d.addr).await;
    let mut told = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), extra.read_to_string(&mut told)).await;
    assert!(told.starts_with("HTTP/1.1 429"), "{told}");
    assert!(told.contains("max_connections_per_client"), "{told}");
    // The attacker's connections past its cap close at once; the 8 it holds once their
    // answers made no progress for 2 s. When that is depends on how fast this machine fills
    // the kernel's send buffers with answers (seconds under load), so the held ones are only
    // known to last at least the write timeout and to be closed well before the other
    // timeouts (120 s) or the attacker's own patience (30 s, asserted in `stalled_reader`).
    let mut closed = Vec::new();
    for a in attack {
        closed.push(a.await.expect("attacker"));
    }
    closed.sort();
    println!("attacker's connections closed after {closed:?}");
    let refused = closed
        .iter()
        .filter(|t| **t < Duration::from_secs(2))
        .count();
    let cut_off: Vec<_> = closed
        .iter()
        .filter(|t| **t >= Duration::from_secs(2) && **t < Duration::from_secs(30))
        .collect();
    assert_eq!(refused, 56, "{closed:?}");
    assert_eq!(cut_off.len(), 8, "{closed:?}");
    // And the daemon serves on.
    let resp = client.get(d.url("/healthz")).send().await.expect("healthz");
    assert_eq!(resp.status().as_u16(), 200);
}

/// `TcpStream::connect` from a given local address.
trait ConnectFrom {
    async fn connect_std_from(from: &str, to: SocketAddr) -> TcpStream;
}

impl ConnectFrom for TcpStream {
    async fn connect_std_from(from: &str, to: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{from}:0").parse().expect("address"))
            .expect("bind");
        socket.connect(to).await.expect("connect")
    }
}
