//! Alert benchmarks against the real `runbookd` binary (`cargo bench --bench alerts`), on
//! SQLite and — when it answers at `RUNBOOKD_TEST_POSTGRES_URL` (default: the local server)
//! — PostgreSQL, side by side in one run. Every measurement gets a fresh store and daemon.
//!
//! **Ingestion**: Alertmanager payload received → incident, alert row and run durably
//! recorded and the run queued (the webhook's 200): p50/p99 over 5,000 sequential alerts,
//! each with a new fingerprint. Then 64 concurrent senders post 9,600 more; a sender that
//! gets 503 (the run queue is full) waits 10 ms and resends, as Alertmanager retries. Reported:
//! alerts accepted per second, and **end to end** — every one of those alerts' runs finished
//! (read from `runbookd_runs_total`) — per second. Under the shipped defaults (1,024 queued
//! runs, 16 at once, info logs) and under the tuned configuration of docs/performance.md.
//!
//! **Alert → first action**: the playbook's first primitive, `webhooks::probe()`, reaching a
//! local HTTP endpoint the bench runs, under both configurations: p50/p99 over 2,000
//! sequential alerts (POST sent → probe received) beside the same alerts' POST → 200, then
//! actions/s with 16 concurrent senders and how many were lost.
//!
//! `RUNBOOKD_BENCH_SECTION=first_action` (or `ingestion`) runs one section only, and
//! `RUNBOOKD_BENCH_TUNING=shipped` (or `tuned`) one configuration, to compare builds quickly.
//!
//! Both slow the escalation evaluator to once an hour, so that it does not escalate the
//! tens of thousands of incidents this opens while ingestion is measured.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::sync::mpsc;

mod support;

fn notification(alertname: &str, fingerprint: &str) -> Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"PaymentProcessorDown\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "runbookd", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": alertname, "service": "payments"},
            "annotations": {"summary": "breaker open"},
            "startsAt": "2026-11-27T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom", "fingerprint": fingerprint
        }]
    })
}

fn ms(v: &[Duration], p: f64) -> f64 {
    support::percentile(v, p).as_secs_f64() * 1000.0
}

/// How the daemon is configured for a measurement.
#[derive(Clone, Copy, PartialEq)]
enum Tuning {
    /// The shipped defaults (JSON log lines so the bench can read the address).
    Shipped,
    /// docs/performance.md's tuned configuration.
    Tuned,
}

impl Tuning {
    fn name(self) -> &'static str {
        match self {
            Tuning::Shipped => "shipped defaults",
            Tuning::Tuned => "tuned",
        }
    }

    /// `[playbooks]` keys; `RUNBOOKD_BENCH_TUNED` replaces the tuned ones (to try others).
    fn settings(self) -> String {
        match self {
            Tuning::Shipped => String::new(),
            Tuning::Tuned => std::env::var("RUNBOOKD_BENCH_TUNED")
                .map(|s| s.replace("\\n", "\n") + "\n")
                .unwrap_or_else(|_| "queue_capacity = 100000\nmax_concurrent_runs = 64\n".into()),
        }
    }
}

/// A daemon on a fresh store with the bench's playbooks.
struct Bench {
    _dir: tempfile::TempDir,
    daemon: support::Daemon,
    client: reqwest::Client,
}

impl Bench {
    fn start(db: &str, tuning: Tuning, probe_url: &str) -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let playbooks = dir.path().join("playbooks");
        std::fs::create_dir(&playbooks).expect("dir");
        std::fs::write(
            playbooks.join("responder.rhai"),
            "fn triggers() { [#{ alert: \"PaymentProcessorDown\" }] }\nfn run(event) { event.incident }\n",
        )
        .expect("playbook");
        std::fs::write(
            playbooks.join("first_action.rhai"),
            "fn triggers() { [#{ alert: \"CheckoutWebhookDown\" }] }\nfn run(event) { webhooks::probe() }\n",
        )
        .expect("playbook");
        let db = if db == "sqlite" {
            format!("sqlite://{}", dir.path().join("state.db").display())
        } else {
            db.to_string()
        };
        let config = dir.path().join("runbookd.toml");
        std::fs::write(
            &config,
            format!(
                // The bench's 64 senders all come from 127.0.0.1: the per-address connection
                // cap (64 by default) would refuse a sender's new connection while an old
                // one closes. One Alertmanager holds a few.
                "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections_per_client = 1024\n[state]\ndatabase_url = \"{db}\"\n[playbooks]\ndir = \"{}\"\n{}\
                 [stripe]\nwebhook_url = \"{probe_url}\"\n[escalation]\ninterval = \"1h\"\n[log]\nformat = \"json\"\n",
                playbooks.display(),
                tuning.settings(),
            ),
        )
        .expect("config");
        let daemon = support::start(&config);
        Bench {
            _dir: dir,
            daemon,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.daemon.addr)
    }

    /// Posts until accepted (503: wait 10 ms and resend, as Alertmanager retries). Returns
    /// how many 503s it took.
    async fn post(&self, body: &Value) -> usize {
        let mut refused = 0;
        loop {
            let r = self
                .client
                .post(self.url("/api/v1/alerts"))
                .json(body)
                .send()
                .await
                .expect("post");
            match r.status().as_u16() {
                200 => return refused,
                503 => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                s => panic!("alert answered {s}: {}", r.text().await.unwrap_or_default()),
            }
        }
    }

    /// `runbookd_runs_total{playbook, status="succeeded"}`.
    async fn succeeded(&self, playbook: &str) -> usize {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let series = format!("runbookd_runs_total{{playbook=\"{playbook}\",status=\"succeeded\"}}");
        text.lines()
            .filter(|l| l.starts_with(&series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize
    }

    /// Waits until `n` runs of `playbook` have succeeded; the moment it saw them.
    async fn finished(&self, playbook: &str, n: usize) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let done = self.succeeded(playbook).await;
            if done >= n {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "only {done} of {n} runs finished"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn ingestion(store: &str, db: &str, tuning: Tuning) {
    let bench = Bench::start(db, tuning, "http://127.0.0.1:9/unused");
    let n = 5000;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let body = notification("PaymentProcessorDown", &format!("seq{i}"));
        let t = Instant::now();
        bench.post(&body).await;
        lat.push(t.elapsed());
    }
    lat.sort();
    bench.finished("responder", n).await;
    let (senders, per) = (64, 150);
    let refused = Arc::new(AtomicUsize::new(0));
    let bench = Arc::new(bench);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (bench, refused) = (bench.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let body = notification("PaymentProcessorDown", &format!("c{s}-{i}"));
                refused.fetch_add(bench.post(&body).await, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let accepted_in = started.elapsed();
    let total = senders * per;
    let finished_in = bench.finished("responder", n + total).await - started;
    println!(
        "{store:<10} {:<16} {:>8.2} {:>8.2} {:>11.0} {:>11.0} {:>9}",
        tuning.name(),
        ms(&lat, 0.5),
        ms(&lat, 0.99),
        total as f64 / accepted_in.as_secs_f64(),
        total as f64 / finished_in.as_secs_f64(),
        refused.load(Ordering::Relaxed)
    );
}

/// A local HTTP endpoint standing for the outside world: notes when each probe arrives.
async fn endpoint() -> (String, mpsc::UnboundedReceiver<Instant>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move || {
            let _ = tx.send(Instant::now());
            async { axum::http::StatusCode::BAD_REQUEST }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/webhook"), rx)
}

async fn first_action(store: &str, db: &str, tuning: Tuning) {
    let (url, mut arrivals) = endpoint().await;
    let bench = Arc::new(Bench::start(db, tuning, &url));
    let n = 2000;
    let mut lat = Vec::with_capacity(n);
    // The same alerts' POST → 200: what the first action is held against.
    let mut acked = Vec::with_capacity(n);
    for i in 0..n {
        let body = notification("CheckoutWebhookDown", &format!("fa{i}"));
        let t = Instant::now();
        bench.post(&body).await;
        acked.push(t.elapsed());
        let arrived = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .expect("the probe never arrived")
            .expect("endpoint");
        lat.push(arrived - t);
    }
    lat.sort();
    acked.sort();
    let (senders, per) = (16, 250);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let bench = bench.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let body = notification("CheckoutWebhookDown", &format!("fc{s}-{i}"));
                bench.post(&body).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let total = senders * per;
    let mut received = 0;
    let mut last = started;
    while received < total {
        match tokio::time::timeout(Duration::from_secs(10), arrivals.recv()).await {
            Ok(Some(at)) => {
                received += 1;
                last = at;
            }
            _ => break,
        }
    }
    println!(
        "{store:<10} {:<16} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>11.0} {:>6}",
        tuning.name(),
        ms(&acked, 0.5),
        ms(&acked, 0.99),
        ms(&lat, 0.5),
        ms(&lat, 0.99),
        ms(&lat, 1.0),
        received as f64 / (last - started).as_secs_f64(),
        total - received
    );
}

#[tokio::main]
async fn main() {
    let mut stores = vec![("sqlite", None)];
    if support::postgres_answers().await {
        stores.push(("postgresql", Some(())));
    } else {
        println!("(PostgreSQL does not answer at RUNBOOKD_TEST_POSTGRES_URL: SQLite only)");
    }
    // `RUNBOOKD_BENCH_STORE=postgresql` (or `sqlite`): that store only, to compare builds.
    if let Ok(only) = std::env::var("RUNBOOKD_BENCH_STORE") {
        stores.retain(|(store, _)| *store == only);
    }
    let db = |pg: Option<()>| async move {
        match pg {
            None => "sqlite".to_string(),
            Some(()) => support::fresh_postgres().await.expect("postgres"),
        }
    };
    // `RUNBOOKD_BENCH_TUNING=shipped` (or `tuned`): that configuration only.
    let mut tunings = vec![Tuning::Shipped, Tuning::Tuned];
    if let Ok(only) = std::env::var("RUNBOOKD_BENCH_TUNING") {
        tunings.retain(|t| t.name().starts_with(only.as_str()));
    }
    // `RUNBOOKD_BENCH_SECTION=first_action` (or `ingestion`): that section only.
    let section = std::env::var("RUNBOOKD_BENCH_SECTION").unwrap_or_default();
    if section.is_empty() || section == "ingestion" {
        println!(
            "runbookd alert ingestion: 5,000 sequential alerts, then 9,600 from 64 concurrent senders"
        );
        println!(
            "{:<10} {:<16} {:>8} {:>8} {:>11} {:>11} {:>9}",
            "store", "configuration", "p50 ms", "p99 ms", "accepted/s", "finished/s", "503s"
        );
        for &tuning in &tunings {
            for (store, pg) in &stores {
                let db = db(*pg).await;
                ingestion(store, &db, tuning).await;
                support::drop_postgres(&db).await;
            }
        }
    }
    if !(section.is_empty() || section == "first_action") {
        return;
    }
    println!(
        "\nrunbookd alert → first action (webhooks::probe reaching a local endpoint): \
         2,000 sequential alerts (POST → 200 and POST → first action), then 4,000 from 16 \
         concurrent senders"
    );
    println!(
        "{:<10} {:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>6}",
        "store",
        "configuration",
        "200 p50",
        "200 p99",
        "act p50",
        "act p99",
        "act max",
        "actions/s",
        "lost"
    );
    for &tuning in &tunings {
        for (store, pg) in &stores {
            let db = db(*pg).await;
            first_action(store, &db, tuning).await;
            support::drop_postgres(&db).await;
        }
    }
}
