//! A full disk under the SQLite store is an outage, not a loss: while nothing can be
//! committed alerts are answered 503 (Alertmanager resends them) and `/readyz` says why;
//! every alert answered 200 is stored with its run; when space returns the daemon goes on
//! by itself, and a restart finds everything it answered for.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    alerts::{notification, post},
    helpers::{Daemon, Db, Options, Workspace},
};

/// A small tmpfs of the test's own, unmounted when dropped (after the daemon using it).
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(parent: &Path, size: &str) -> SmallDisk {
        let path = parent.join("small-disk");
        std::fs::create_dir_all(&path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (scripts/test runs as root in CI)"
        );
        SmallDisk { path }
    }

    /// Writes zeros until the disk refuses more.
    fn fill(&self) -> PathBuf {
        let file = self.path.join("filler");
        let mut f = std::fs::File::create(&file).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        file
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

const DRILL: &str = r#"
fn triggers() { [#{ alert: "DiskDrill" }] }
fn run(event) { log("drill " + event.labels.fp); event.labels.fp }
"#;

fn alert(fp: &str) -> Value {
    let mut n = notification(&[("DiskDrill", fp, "firing")]);
    n["alerts"][0]["labels"]["fp"] = fp.into();
    n
}

/// Runs of the drill that succeeded, by the fingerprint they ran for.
async fn succeeded(d: &Daemon) -> Vec<String> {
    let (_, runs) = d.get("/api/v1/runs?playbook=drill&limit=1000").await;
    let mut fps: Vec<String> = runs
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["status"] == "succeeded")
                .filter_map(|r| r["result"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    fps.sort();
    fps
}

/// Resends each refused alert, as Alertmanager does after a 503, until it is accepted
/// (at most 30 s in all: the daemon must recover by itself); adds them to `answered`.
async fn resend_until_accepted(d: &Daemon, refused: &[String], answered: &mut Vec<String>) {
    let start = Instant::now();
    for fp in refused {
        loop {
            let (s, v) = post(d, &alert(fp)).await;
            if s == 200 {
                answered.push(fp.clone());
                break;
            }
            assert_eq!(s, 503, "{v}");
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no recovery once writes could go through again:\n{}",
                d.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    answered.sort();
}

/// Every alert answered 200 has its run succeeded, once (waiting up to 30 s for the runs).
async fn every_answered_alert_ran(d: &Daemon, answered: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while succeeded(d).await != answered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(succeeded(d).await, answered, "{}", d.logs());
}

#[tokio::test]
async fn a_full_disk_answers_503_loses_no_200_and_recovers_without_a_restart() {
    let mut ws = Workspace::new(Db::Sqlite).await;
    let disk = SmallDisk::mount(ws.dir.path(), "24m");
    // This test is about SQLite on a disk of its own, whichever store the suite runs on.
    ws.database_url = format!("sqlite://{}/state.db", disk.path.display());
    ws.write_playbook("drill", DRILL);
    let opts = Options::default();
    let mut d = Daemon::start(&ws, &opts);
    let mut answered = Vec::new();
    for i in 0..3 {
        let fp = format!("before-{i}");
        let (s, v) = post(&d, &alert(&fp)).await;
        assert_eq!(s, 200, "{v}");
        answered.push(fp);
    }
    let filler = disk.fill();
    // Alerts keep coming; once SQLite cannot commit, they are refused.
    let mut refused = Vec::new();
    for i in 0..300 {
        let fp = format!("full-{i}");
        let (s, v) = post(&d, &alert(&fp)).await;
        match s {
            200 => answered.push(fp),
            503 => {
                refused.push(fp);
                if refused.len() == 10 {
                    break;
                }
            }
            other => panic!("alert answered {other}: {v}"),
        }
    }
    assert_eq!(refused.len(), 10, "the full disk never refused an alert");
    let (status, ready) = d.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["checks"]["state"]
            .as_str()
            .is_some_and(|s| s.contains("cannot write") && s.contains("full")),
        "{ready}"
    );
    // Space returns: the daemon recovers by itself; Alertmanager's resends get through.
    std::fs::remove_file(filler).expect("free the disk");
    resend_until_accepted(&d, &refused, &mut answered).await;
    // Every alert answered 200 has run, once.
    every_answered_alert_ran(&d, &answered).await;
    let (status, ready) = d.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    // And all of it is on disk: a restart finds every answered alert with its run and its
    // incident's timeline.
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(15));
    drop(d);
    let d = Daemon::start(&ws, &opts);
    assert_eq!(succeeded(&d).await, answered);
    let (_, incidents) = d.get("/api/v1/incidents?limit=1000").await;
    let incidents = incidents.as_array().cloned().unwrap_or_default();
    assert_eq!(incidents.len(), answered.len(), "one incident per alert");
    for i in incidents.iter().take(5) {
        let id = i["id"].as_str().expect("incident id");
        let (_, one) = d.get(&format!("/api/v1/incidents/{id}")).await;
        assert!(
            one["timeline"].as_array().is_some_and(|t| !t.is_empty()),
            "{one}"
        );
    }
    println!(
        "{} alerts answered 200 and stored with their runs, {} refused with 503 while the disk was full",
        answered.len(),
        refused.len()
    );
}

/// Makes every new session of `db` read-only (or writable again) and ends the daemon's
/// sessions, so the next ones pick the setting up: a server that refuses writes.
async fn set_read_only(db: &str, on: bool) {
    use sqlx::{Connection, Executor};
    let admin_url = std::env::var("RUNBOOKD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin");
    admin
        .execute(
            format!(
                "ALTER DATABASE {db} SET default_transaction_read_only = {}",
                if on { "on" } else { "off" }
            )
            .as_str(),
        )
        .await
        .expect("alter database");
    // A session reads the database's settings when it starts, so every session that may
    // have started before the change is ended; the daemon's pool may be opening one at this
    // very moment (it shows in pg_stat_activity only once it has read its settings), so
    // the sessions are watched until none older than the change has been seen for a while.
    let changed: String = sqlx::query_scalar("SELECT clock_timestamp()::text")
        .fetch_one(&mut admin)
        .await
        .expect("clock");
    let mut quiet = 0;
    while quiet < 5 {
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_start <= $2::timestamptz",
        )
        .bind(db)
        .bind(&changed)
        .fetch_all(&mut admin)
        .await
        .expect("terminate");
        quiet = if ended.is_empty() { quiet + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_postgres_server_refusing_writes_answers_503_loses_no_200_and_recovers() {
    let ws = Workspace::new(Db::Postgres).await;
    let db = crate::alerts::database_name(&ws);
    ws.write_playbook("drill", DRILL);
    let opts = Options::default();
    let d = Daemon::start(&ws, &opts);
    let mut answered = Vec::new();
    for i in 0..3 {
        let fp = format!("before-{i}");
        let (s, v) = post(&d, &alert(&fp)).await;
        assert_eq!(s, 200, "{v}");
        answered.push(fp);
    }
    set_read_only(&db, true).await;
    let mut refused = Vec::new();
    for i in 0..5 {
        let fp = format!("refused-{i}");
        let (s, v) = post(&d, &alert(&fp)).await;
        match s {
            200 => answered.push(fp),
            503 => refused.push(fp),
            other => panic!("alert answered {other}: {v}"),
        }
    }
    assert_eq!(refused.len(), 5, "a read-only server accepted alerts");
    let (status, ready) = d.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["checks"]["state"]
            .as_str()
            .is_some_and(|s| s.contains("cannot write") && s.contains("read-only")),
        "{ready}"
    );
    set_read_only(&db, false).await;
    resend_until_accepted(&d, &refused, &mut answered).await;
    every_answered_alert_ran(&d, &answered).await;
    let (status, ready) = d.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
}
