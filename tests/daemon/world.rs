//! `runbookd serve --world`: the real daemon against a simulated world, on the real clock,
//! marked as simulated in every answer and log line, touching nothing real.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Daemon, Db, Options, Workspace};

const SCENARIO: &str = r#"
title = "stuck breaker, fast"
duration = "1m"
alerts = false

[settings.outage]
watch_seconds = 1
watch_every = 0.5

[[step]]
at = "0s"
open_breaker = "2m"
breaker_stuck = true
payments = [{ status = "pending", age = "40m", count = 3, stripe = ["succeeded"] }]
alert = "PaymentProcessorDown"
"#;

#[tokio::test]
async fn serve_world_runs_the_real_daemon_on_a_simulated_outage() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.install_shipped_playbooks();
    let scenario = ws.dir.path().join("fast.toml");
    std::fs::write(&scenario, SCENARIO).expect("scenario");
    let d = Daemon::start(
        &ws,
        &Options {
            serve_args: vec!["--world".into(), scenario.display().to_string()],
            ..Default::default()
        },
    );
    let runs = d
        .poll(
            "/api/v1/runs?logs=true&playbook=payment_processor_outage",
            Duration::from_secs(20),
            |v| v[0]["status"] == "succeeded",
        )
        .await;
    let run = &runs[0];
    assert_eq!(run["status"], "succeeded", "{runs}");
    assert_eq!(run["trigger"]["actor"], "simulated-world");
    assert_eq!(
        run["result"]["scenarios"],
        json!(["breaker_stuck", "stale_pending"]),
        "{run}"
    );

    // Every answer says it is simulated: a header always, a field in JSON objects.
    let resp = d
        .client
        .get(d.url("/api/v1/breakers/stripe"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        resp.headers()
            .get("runbookd-simulated")
            .and_then(|v| v.to_str().ok()),
        Some("stuck breaker, fast")
    );
    let breaker: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(breaker["simulated"], "stuck breaker, fast");
    assert_eq!(
        breaker["state"], "closed",
        "the playbook reset it: {breaker}"
    );
    let metrics = d
        .client
        .get(d.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert!(metrics.headers().contains_key("runbookd-simulated"));

    // Every log line says so too, and nothing real was touched: no state file, no pages.
    let logs = d.logs();
    assert!(
        logs.lines()
            .all(|l| l.starts_with("{\"simulated\":\"simulated world ")),
        "{logs}"
    );
    assert!(
        !ws.dir.path().join("state.db").exists(),
        "a simulated world keeps its incidents apart from the configured store"
    );
    let scratch = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["fields"]["state"].as_str().map(String::from))
        .expect("the scratch state file is logged");
    assert!(std::path::Path::new(&scratch).exists());
    let mut d = d;
    d.signal("TERM");
    assert!(d.wait_exit(Duration::from_secs(10)).success());
    assert!(
        !std::path::Path::new(&scratch).exists(),
        "the scratch state is removed at stop"
    );
}
