//! Step 4, the workers' logs: the outage playbook's diagnosis reads them from a fake Loki over
//! HTTP (count and the three most recent lines, keys redacted), and Loki and the simulated
//! world answer the same questions alike.

use std::time::Duration;

use serde_json::json;

use crate::{fake_loki::FakeLoki, fake_stripe::GOOD_KEY, helpers::Daemon, outage::Debtflow};

const LEAK: &str = "sk_live_51Hleakedkey0123456789";

fn worker_lines(loki: &FakeLoki) {
    loki.line(
        600,
        "worker-1",
        "stripe.error.APIConnectionError: Could not connect to Stripe",
    );
    loki.line(
        300,
        "worker-2",
        &format!("stripe.error.AuthenticationError: Invalid API Key provided: {LEAK}"),
    );
    loki.line(
        120,
        "worker-1",
        "Circuit breaker stripe OPEN, payment 42 refused",
    );
    loki.line(60, "worker-2", "Payment 43 failed: ServiceUnavailableError");
    loki.line(30, "worker-1", "celery@worker-1 ready."); // not about stripe/payment/circuit
    loki.line(
        7200,
        "worker-1",
        "stripe timeout (two hours ago: outside the window)",
    );
}

#[tokio::test]
async fn the_diagnosis_counts_and_quotes_the_workers_lines_without_their_keys() {
    let w = Debtflow::new().await;
    let loki = FakeLoki::start().await;
    worker_lines(&loki);
    let mut opts = w.options("", GOOD_KEY);
    opts.extra_config.push_str(&format!(
        "\n[logs]\nloki_url = \"{}\"\ntenant = \"payments\"\n",
        loki.url()
    ));
    let d = Daemon::start(&w.ws, &opts);
    let (status, run) = d
        .run_wait("payment_processor_outage", json!({"dry_run": true}))
        .await;
    assert_eq!(status, 200, "{run}");
    let logs = &run["result"]["diagnosis"]["worker_logs"];
    assert_eq!(logs["count"], 4, "{logs}");
    let recent: Vec<&str> = logs["recent"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["line"].as_str())
        .collect();
    assert_eq!(
        recent,
        [
            "Payment 43 failed: ServiceUnavailableError",
            "Circuit breaker stripe OPEN, payment 42 refused",
            "stripe.error.AuthenticationError: Invalid API Key provided: [redacted]",
        ],
        "newest first, across both workers' streams"
    );
    assert!(
        run["result"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("4 worker log line(s)"),
        "{}",
        run["result"]["summary"]
    );
    assert!(
        !run.to_string().contains(LEAK) && !d.logs().contains(LEAK),
        "a key from the logs leaked"
    );
    let q = loki.queries();
    assert!(
        q.iter().any(|(p, q, t)| p == "query"
            && q == "sum(count_over_time(({unit=\"celery-worker\"} |~ \"(?i)stripe|payment|circuit\")[3600s]))"
            && t.as_deref() == Some("payments")),
        "{q:?}"
    );
}

#[tokio::test]
async fn loki_and_the_simulated_logs_answer_alike() {
    use runbookd::primitives::logs::{loki::Loki, LogsBackend};
    let loki = FakeLoki::start().await;
    worker_lines(&loki);
    let world = runbookd::sim::World::new(
        runbookd::clock::Clock::virtual_at(chrono::Utc::now().timestamp_millis()),
        &runbookd::config::Config::default(),
    );
    let now = world.clock().now_ms();
    for (at, _, line) in loki.lines.lock().expect("lines").lines.iter() {
        world.state().worker_logs.push((
            *at - (chrono::Utc::now().timestamp_millis() - now),
            line.clone(),
        ));
    }
    let cfg = runbookd::config::LogsConfig {
        loki_url: Some(loki.url()),
        ..Default::default()
    };
    let http = Loki::from_config(&cfg, runbookd::clock::Clock::Real).expect("configured");
    let sim = runbookd::sim::backends::logs::SimLogs {
        world: world.clone(),
    };
    let query = "{unit=\"celery-worker\"} |~ \"(?i)stripe|payment|circuit\"";
    for window in [
        Duration::from_secs(90),
        Duration::from_secs(3600),
        Duration::from_secs(86_400),
    ] {
        assert_eq!(
            http.count(query, window).await.expect("loki"),
            sim.count(query, window).await.expect("sim"),
            "count over {window:?}"
        );
        let lines = |v: Vec<runbookd::primitives::logs::LogEntry>| {
            v.into_iter().map(|e| e.line).collect::<Vec<_>>()
        };
        assert_eq!(
            lines(http.recent(query, window, 3).await.expect("loki")),
            lines(sim.recent(query, window, 3).await.expect("sim")),
            "recent over {window:?}"
        );
    }
    assert_eq!(
        http.count(query, Duration::from_secs(3600))
            .await
            .expect("loki"),
        4
    );
}
