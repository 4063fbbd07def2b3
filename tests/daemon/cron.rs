//! Cron triggers: fire on schedule, survive restarts without repeating or replaying ticks,
//! and pick up playbooks added while running.

use std::{collections::HashSet, time::Duration};

use serde_json::Value;

use crate::helpers::{Daemon, Db, Options, Workspace};

const EVERY_SECOND: &str = "fn triggers() { [#{ cron: \"* * * * * *\" }] }\nfn run(event) { event.params.scheduled_for }\n";

async fn cron_runs(d: &Daemon) -> Vec<Value> {
    d.get("/api/v1/runs?logs=true&limit=1000")
        .await
        .1
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ticks(runs: &[Value]) -> Vec<chrono::DateTime<chrono::FixedOffset>> {
    runs.iter()
        .filter_map(|r| r["event"]["params"]["scheduled_for"].as_str())
        .filter_map(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .collect()
}

#[tokio::test]
async fn fires_on_schedule_and_restarts_neither_repeat_nor_replay() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("tick", EVERY_SECOND);
    let mut d = Daemon::start(&ws, &Options::default());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let runs = cron_runs(&d).await;
    assert!(runs.len() >= 2, "fired every second: {runs:?}");
    assert_eq!(runs[0]["trigger"]["kind"], "cron");
    assert_eq!(runs[0]["trigger"]["name"], "* * * * * *");
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(10));
    drop(d);
    let stopped = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let restarted = chrono::Utc::now();
    let d = Daemon::start(&ws, &Options::default());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = ticks(&cron_runs(&d).await);
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a tick fired twice: {all:?}");
    // Three ticks passed while it was down; they are not replayed: at start only the latest
    // due tick fires (which may already be one after the restart began).
    let in_downtime = all
        .iter()
        .filter(|t| **t > stopped && **t < restarted)
        .count();
    assert!(in_downtime <= 1, "missed ticks replayed: {all:?}");
    assert!(
        all.iter().any(|t| *t > restarted),
        "ticks resumed after the restart: {all:?}"
    );
}

#[tokio::test]
async fn a_playbook_added_while_running_is_scheduled() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("other", "fn run(event) { 1 }\n");
    let d = Daemon::start(&ws, &Options::default());
    ws.write_playbook("tick", EVERY_SECOND);
    let runs = d
        .poll(
            "/api/v1/runs?logs=true&playbook=tick",
            Duration::from_secs(4),
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    assert!(
        runs.as_array().is_some_and(|a| !a.is_empty()),
        "no cron run after adding the playbook"
    );
    // Removing it stops the ticks.
    std::fs::remove_file(ws.playbooks().join("tick.rhai")).expect("rm");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = d
        .get("/api/v1/runs?logs=true&playbook=tick&limit=1000")
        .await
        .1
        .as_array()
        .map(Vec::len);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let after = d
        .get("/api/v1/runs?logs=true&playbook=tick&limit=1000")
        .await
        .1
        .as_array()
        .map(Vec::len);
    assert_eq!(before, after, "a removed playbook does not fire");
}
