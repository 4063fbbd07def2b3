//! Restarts and signals: history survives, SIGTERM is graceful, a crash loses nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Daemon, Db, Options, Workspace};

async fn history_survives_restart(db: Db) {
    let ws = Workspace::new(db).await;
    ws.write_playbook("echo", "fn run(event) { event.params }\n");
    let opts = Options::default();
    let mut d = Daemon::start(&ws, &opts);
    let (_, run) = d.run_wait("echo", json!({"params": {"k": "v"}})).await;
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    drop(d);

    let d = Daemon::start(&ws, &opts);
    let (s, stored) = d
        .get(&format!("/api/v1/runs/{}", run["id"].as_str().expect("id")))
        .await;
    assert_eq!(s, 200);
    assert_eq!(stored, run);
}

#[tokio::test]
async fn history_survives_restart_sqlite() {
    history_survives_restart(Db::Sqlite).await;
}

#[tokio::test]
async fn history_survives_restart_postgres() {
    history_survives_restart(Db::Postgres).await;
}

async fn start_run(d: &Daemon, playbook: &str) -> String {
    let resp = d
        .client
        .post(d.url(&format!("/api/v1/playbooks/{playbook}/runs")))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

#[tokio::test]
async fn sigterm_lets_running_runs_finish_within_grace() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("slow", "fn run(event) { sleep(0.8); \"finished\" }\n");
    let opts = Options::default(); // grace 5 s
    let mut d = Daemon::start(&ws, &opts);
    let id = start_run(&d, "slow").await;
    d.poll(&format!("/api/v1/runs/{id}"), Duration::from_secs(2), |v| {
        v["status"] == "running"
    })
    .await;
    d.signal("TERM");
    // New work is refused while draining.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = d
        .client
        .post(d.url("/api/v1/playbooks/slow/runs"))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status().as_u16(), 503, "no new runs during shutdown");
    }
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    drop(d);
    let d = Daemon::start(&ws, &opts);
    let (_, run) = d.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"], "finished");
}

#[tokio::test]
async fn sigterm_past_grace_fails_runs_with_reason_shutdown() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("forever", "fn run(event) { sleep(60); 1 }\n");
    let opts = Options {
        env: vec![
            ("RUNBOOKD_SERVER__SHUTDOWN_GRACE".into(), "300ms".into()),
            ("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS".into(), "1".into()),
        ],
        ..Default::default()
    };
    let mut d = Daemon::start(&ws, &opts);
    let running = start_run(&d, "forever").await;
    d.poll(
        &format!("/api/v1/runs/{running}"),
        Duration::from_secs(2),
        |v| v["status"] == "running",
    )
    .await;
    let queued = start_run(&d, "forever").await;
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    drop(d);
    let d = Daemon::start(&ws, &opts);
    for id in [&running, &queued] {
        let (_, run) = d.get(&format!("/api/v1/runs/{id}")).await;
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(run["error"]["reason"], "shutdown", "{run}");
    }
}

#[tokio::test]
async fn crash_recovery_requeues_accepted_runs() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("block", "fn run(event) { sleep(60); 1 }\n");
    ws.write_playbook("quick", "fn run(event) { event.params.n }\n");
    let opts = Options {
        env: vec![("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS".into(), "1".into())],
        ..Default::default()
    };
    let mut d = Daemon::start(&ws, &opts);
    let blocking = start_run(&d, "block").await;
    d.poll(
        &format!("/api/v1/runs/{blocking}"),
        Duration::from_secs(2),
        |v| v["status"] == "running",
    )
    .await;
    let mut waiting = Vec::new();
    for n in 0..3 {
        let resp = d
            .client
            .post(d.url("/api/v1/playbooks/quick/runs"))
            .json(&json!({"params": {"n": n}}))
            .send()
            .await
            .expect("post");
        waiting.push(
            resp.json::<Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(5));
    drop(d);

    let d = Daemon::start(&ws, &opts);
    let (_, run) = d.get(&format!("/api/v1/runs/{blocking}")).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["reason"], "interrupted", "{run}");
    for (n, id) in waiting.iter().enumerate() {
        let run = d
            .poll(&format!("/api/v1/runs/{id}"), Duration::from_secs(5), |v| {
                v["status"] == "succeeded"
            })
            .await;
        assert_eq!(
            run["status"], "succeeded",
            "accepted run lost in the crash: {run}"
        );
        assert_eq!(run["result"], n as i64);
    }
}
