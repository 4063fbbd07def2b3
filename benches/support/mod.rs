//! What the binary benchmarks share (each bench uses a subset, hence `dead_code` allowed): the real `runbookd serve` on a free port, and
//! percentiles.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_runbookd");

/// The binary to measure: `RUNBOOKD_BENCH_BIN` when set (another build, to compare two in
/// one run), else the one cargo built for this bench.
pub fn bin() -> String {
    std::env::var("RUNBOOKD_BENCH_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// A running daemon; stopped with SIGTERM when dropped.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Starts `runbookd --config CONFIG serve` (JSON logs) and waits for its address.
pub fn start(config: &Path) -> Daemon {
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn runbookd");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("daemon exited before listening")
            .expect("read");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"].as_str().expect("addr").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Daemon { child, addr }
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Whether PostgreSQL answers at `RUNBOOKD_TEST_POSTGRES_URL` (creates nothing).
pub async fn postgres_answers() -> bool {
    use sqlx::Connection;
    let admin = std::env::var("RUNBOOKD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    sqlx::PgConnection::connect(&admin).await.is_ok()
}

/// A new, empty PostgreSQL database for one measurement, from the admin URL in
/// `RUNBOOKD_TEST_POSTGRES_URL` (default: the local server, user `postgres`); `None` when no
/// server answers there.
/// Drops a database [`fresh_postgres`] made (`WITH (FORCE)` ends a daemon's sessions still
/// in it): stores left behind were written out by checkpoints during later measurements,
/// and the bench read slower run after run until they were dropped.
pub async fn drop_postgres(url: &str) {
    use sqlx::Connection;
    let Some(name) = url
        .rsplit('/')
        .next()
        .and_then(|n| n.split('?').next())
        .filter(|n| n.starts_with("runbookd_bench_"))
    else {
        return;
    };
    let admin = std::env::var("RUNBOOKD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

pub async fn fresh_postgres() -> Option<String> {
    use sqlx::Connection;
    let admin = std::env::var("RUNBOOKD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
    let name = format!("runbookd_bench_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    // `RUNBOOKD_BENCH_POSTGRES_PARAMS` (say `statement-cache-capacity=100`, sqlx's default)
    // is added to the daemon's URL, to measure a connection setting.
    match std::env::var("RUNBOOKD_BENCH_POSTGRES_PARAMS") {
        Ok(params) if !params.is_empty() => Some(format!("{base}/{name}?{params}")),
        _ => Some(format!("{base}/{name}")),
    }
}
