//! Restarts and signals: history survives, SIGTERM is graceful, a crash loses nothing.

use std::time::Duration;

use serde_json::json;

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

#[tokio::test]
async fn sigterm_lets_running_runs_finish_within_grace() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("slow", "fn run(event) { sleep(0.8); \"finished\" }\n");
    let opts = Options::default(); // grace 5 s
    let mut d = Daemon::start(&ws, &opts);
    let id = d.start_run("slow", json!({})).await;
    d.run_reaching(&id, "running", Duration::from_secs(2)).await;
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

/// Blocks on its first attempt when asked to; any later attempt returns its number.
const BLOCK_FIRST_ATTEMPT: &str =
    "fn run(event) { if event.params.block == true && event.attempt == 1 { sleep(60); } event.attempt }\n";

#[tokio::test]
async fn sigterm_keeps_queued_runs_and_retries_the_ones_past_grace() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("work", BLOCK_FIRST_ATTEMPT);
    let opts = Options {
        env: vec![
            ("RUNBOOKD_SERVER__SHUTDOWN_GRACE".into(), "300ms".into()),
            ("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS".into(), "1".into()),
        ],
        ..Default::default()
    };
    let mut d = Daemon::start(&ws, &opts);
    let running = d.start_run("work", json!({"block": true})).await;
    d.run_reaching(&running, "running", Duration::from_secs(2))
        .await;
    let queued = d.start_run("work", json!({})).await;
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    drop(d);
    let d = Daemon::start(&ws, &opts);
    let run = d
        .run_reaching(&queued, "succeeded", Duration::from_secs(8))
        .await;
    assert_eq!(
        run["status"], "succeeded",
        "accepted run dropped at SIGTERM: {run}"
    );
    assert_eq!(run["result"], 1, "{run}");
    let run = d
        .run_reaching(&running, "succeeded", Duration::from_secs(8))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["attempt"], 2,
        "the run cut off by the grace period ran again: {run}"
    );
    assert_eq!(run["result"], 2, "{run}");
    assert_eq!(run["attempts"][0]["outcome"], "interrupted", "{run}");
}

#[tokio::test]
async fn crash_recovery_requeues_accepted_runs() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("block", BLOCK_FIRST_ATTEMPT);
    ws.write_playbook("quick", "fn run(event) { event.params.n }\n");
    let opts = Options {
        env: vec![("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS".into(), "1".into())],
        ..Default::default()
    };
    let mut d = Daemon::start(&ws, &opts);
    let blocking = d.start_run("block", json!({"block": true})).await;
    d.run_reaching(&blocking, "running", Duration::from_secs(2))
        .await;
    let mut waiting = Vec::new();
    for n in 0..3 {
        waiting.push(d.start_run("quick", json!({"n": n})).await);
    }
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(8));
    drop(d);

    // The restarted process knows at once (the dead one's lease lock is free) that the
    // runs are orphaned: the one that was executing runs again, the queued ones run.
    let d = Daemon::start(&ws, &opts);
    let run = d
        .run_reaching(&blocking, "succeeded", Duration::from_secs(8))
        .await;
    assert_eq!(
        run["status"], "succeeded",
        "interrupted run not retried: {run}"
    );
    assert_eq!(run["attempt"], 2, "{run}");
    assert_eq!(run["attempts"][0]["outcome"], "interrupted", "{run}");
    for (n, id) in waiting.iter().enumerate() {
        let run = d
            .run_reaching(id, "succeeded", Duration::from_secs(8))
            .await;
        assert_eq!(
            run["status"], "succeeded",
            "accepted run lost in the crash: {run}"
        );
        assert_eq!(run["result"], n as i64);
    }
}

#[tokio::test]
async fn a_run_out_of_attempts_ends_interrupted_and_tells_its_incident() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "responder",
        "fn triggers() { [#{ alert: \"PaymentProcessorDown\" }] }\nfn run(event) { sleep(60); }\n",
    );
    let opts = Options {
        env: vec![("RUNBOOKD_PLAYBOOKS__RETRY_INTERRUPTED".into(), "0".into())],
        ..Default::default()
    };
    let mut d = Daemon::start(&ws, &opts);
    let (s, out) = crate::alerts::post(
        &d,
        &crate::alerts::notification(&[("PaymentProcessorDown", "fp-int", "firing")]),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    let run_id = out["alerts"][0]["runs"][0]
        .as_str()
        .expect("run")
        .to_string();
    let incident = out["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    d.run_reaching(&run_id, "running", Duration::from_secs(2))
        .await;
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(8));
    drop(d);
    let d = Daemon::start(&ws, &opts);
    let run = d
        .run_reaching(&run_id, "failed", Duration::from_secs(8))
        .await;
    assert_eq!(run["error"]["reason"], "interrupted", "{run}");
    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident}")).await;
    assert_eq!(inc["facts"]["run_interrupted"], true, "{inc}");
    assert!(
        inc["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|t| t["kind"] == "run_interrupted"),
        "{inc}"
    );
    let counted = "runbookd_runs_interrupted_total{playbook=\"responder\"} 1";
    let metrics = d.metrics_holding(counted, Duration::from_secs(5)).await;
    assert!(metrics.contains(counted), "metric counts it:\n{metrics}");
}
