//! Cost as history grows (`cargo bench --bench scale`), on SQLite and — when it answers at
//! `RUNBOOKD_TEST_POSTGRES_URL` — PostgreSQL.
//!
//! The same measurements on an empty store and on one holding months of history —
//! 1,000,000 runs and 100,000 incidents, 10,000 of them open, with their timelines and alert
//! rows — loaded straight into the schema (the bench measures reading, not loading):
//! the real daemon's startup time and RSS, p99 of 1,000 sequential alerts (each opening an
//! incident and queueing a run), p99 of 200 `GET /api/v1/runs?limit=50`,
//! `?playbook=X&status=failed`, `GET /api/v1/incidents` and `?status=open`; and one pass of
//! the escalation evaluator (the runbook's table) over the 10,000 open incidents, with and
//! without the history around them.

use std::time::{Duration, Instant};

use runbookd::{escalation, store::Store};
use sqlx::Connection;

mod support;

const RUNS: i64 = 1_000_000;
const INCIDENTS: i64 = 100_000;
const OPEN: i64 = 10_000;

/// `n` rows of a generated series `x` = 0…n-1, as both stores write it.
fn series(n: i64) -> String {
    format!("WITH RECURSIVE s(x) AS (SELECT CAST(0 AS BIGINT) UNION ALL SELECT x + 1 FROM s WHERE x < {n} - 1) ")
}

/// A UUIDv7-shaped id, unique per `(tag, x)`, sorting in `x` order.
fn id(tag: u8, x: &str) -> String {
    format!("'00000000-0000-7000-{tag}000-' || CAST(100000000000 + {x} AS TEXT)")
}

/// The 10,000 open incidents: young (opened a minute ago), so that a pass evaluates each and
/// fires nothing — the steady state.
async fn seed_open(conn: &mut sqlx::AnyConnection, now: i64) {
    sqlx::query(&format!(
        "{}INSERT INTO incidents (id, incident_key, source, title, labels, status, facts, opened_at, updated_at) \
         SELECT {}, 'scale:' || CAST(x AS TEXT), 'alert:PaymentsPendingTooLong', 'pending too long', '{{}}', 'open', '{{}}', \
         {now} - 60000, {now} FROM s",
        series(OPEN),
        id(9, &format!("{} + x", INCIDENTS - OPEN)),
    ))
    .execute(&mut *conn)
    .await
    .expect("open incidents");
}

/// The history: 90,000 resolved incidents over 30 days (each paged at L1 and its resolution
/// announced), two timeline lines per incident, an alert row per incident, and 1,000,000 runs of ten playbooks (2 % failed) spread over the same
/// 30 days, each belonging to one of the incidents.
async fn seed_history(conn: &mut sqlx::AnyConnection, now: i64) {
    let month = 30 * 24 * 3600 * 1000_i64;
    let resolved = INCIDENTS - OPEN;
    let statements = [
        format!(
            "{}INSERT INTO incidents (id, incident_key, source, title, labels, status, level, facts, opened_at, resolved_at, resolved_by, updated_at, resolution_sent) \
             SELECT {}, 'old:' || CAST(x AS TEXT), 'alert:PaymentProcessorDown', 'breaker open', '{{\"service\":\"payments\"}}', 'resolved', 'L1', \
             '{{\"stripe\":\"operational\"}}', {now} - {month} + x * {step}, {now} - {month} + x * {step} + 600000, 'alertmanager', {now}, 1 FROM s",
            series(resolved),
            id(9, "x"),
            step = month / resolved,
        ),
        format!(
            "{}INSERT INTO escalation_fires (incident_id, level, fired_at, last_sent, sends) \
             SELECT {}, 'L1', {now} - {month} + x * {step} + 1000, {now} - {month} + x * {step} + 1000, 1 FROM s",
            series(resolved),
            id(9, "x"),
            step = month / resolved,
        ),
        format!(
            "{}INSERT INTO incident_timeline (id, incident_id, at, kind, actor, message, details) \
             SELECT {}, {}, {now} - {month} + x * {step}, CASE WHEN x % 2 = 0 THEN 'opened' ELSE 'resolved' END, \
             'runbookd', 'opened: breaker open', '{{}}' FROM s",
            series(2 * INCIDENTS),
            id(8, "x"),
            id(9, "x / 2"),
            step = month / (2 * INCIDENTS),
        ),
        format!(
            "{}INSERT INTO alerts (id, received_at, alertname, fingerprint, status, starts_at, labels, annotations, incident_id, outcome) \
             SELECT {}, {now} - {month} + x * {step}, 'PaymentProcessorDown', 'f' || CAST(x AS TEXT), 'firing', '2026-11-01T00:00:00Z', \
             '{{}}', '{{}}', {}, 'responder: run' FROM s",
            series(INCIDENTS),
            id(7, "x"),
            id(9, "x"),
            step = month / INCIDENTS,
        ),
        format!(
            "{}INSERT INTO runs (id, playbook, version, trigger, event, dry_run, status, queued_at, started_at, finished_at, logs, actions, result, incident_id, attempts) \
             SELECT {}, 'pb' || CAST(x % 10 AS TEXT), 'v1', '{{\"kind\":\"alert\",\"name\":\"PaymentProcessorDown\",\"actor\":\"alertmanager\"}}', \
             '{{\"kind\":\"alert\"}}', 0, CASE WHEN x % 50 = 7 THEN 'failed' ELSE 'succeeded' END, {now} - {month} + x * {step}, \
             {now} - {month} + x * {step} + 1, {now} - {month} + x * {step} + 40, '[\"checked the breaker\"]', '[]', 'null', {}, '[]' FROM s",
            series(RUNS),
            id(6, "x"),
            id(9, &format!("x % {INCIDENTS}")),
            step = month / RUNS,
        ),
    ];
    for sql in statements {
        sqlx::query(&sql).execute(&mut *conn).await.expect("seed");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn p99(mut v: Vec<Duration>) -> f64 {
    v.sort();
    ms(support::percentile(&v, 0.99))
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// What one round measures.
struct Figures {
    startup_ms: f64,
    alert_p99: f64,
    api: Vec<(&'static str, f64)>,
    rss_mb: f64,
}

const ROUTES: [(&str, &str); 4] = [
    ("runs?limit=50", "/api/v1/runs?limit=50"),
    (
        "runs?playbook&status=failed",
        "/api/v1/runs?playbook=pb3&status=failed&limit=50",
    ),
    ("incidents", "/api/v1/incidents"),
    ("incidents?status=open", "/api/v1/incidents?status=open"),
];

async fn measure(dir: &std::path::Path, db: &str, round: &str) -> Figures {
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).expect("dir");
    std::fs::write(
        playbooks.join("responder.rhai"),
        "fn triggers() { [#{ alert: \"PaymentProcessorDown\" }] }\nfn run(event) { event.incident }\n",
    )
    .expect("playbook");
    let config = dir.join("runbookd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndatabase_url = \"{db}\"\n[playbooks]\ndir = \"{}\"\n\
             [escalation]\ninterval = \"1h\"\n[log]\nformat = \"json\"\n",
            playbooks.display()
        ),
    )
    .expect("config");
    let started = Instant::now();
    let daemon = support::start(&config);
    let startup_ms = ms(started.elapsed());
    let client = reqwest::Client::new();
    let base = format!("http://{}", daemon.addr);
    let mut alerts = Vec::new();
    for i in 0..1000 {
        let body = serde_json::json!({
            "version": "4", "status": "firing", "receiver": "runbookd", "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "groupKey": "{}", "truncatedAlerts": 0,
            "alerts": [{ "status": "firing",
                "labels": {"alertname": "PaymentProcessorDown", "service": "payments"},
                "annotations": {"summary": "breaker open"},
                "startsAt": "2026-11-27T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prom", "fingerprint": format!("{round}{i}") }]
        });
        let t = Instant::now();
        let r = client
            .post(format!("{base}/api/v1/alerts"))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 200);
        let _ = r.bytes().await;
        alerts.push(t.elapsed());
    }
    let mut api = Vec::new();
    for (name, path) in ROUTES {
        let mut lat = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let r = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("get");
            assert_eq!(r.status().as_u16(), 200, "{path}");
            let _ = r.bytes().await;
            lat.push(t.elapsed());
        }
        api.push((name, p99(lat)));
    }
    let rss_mb = rss_mb(daemon.child.id());
    drop(daemon);
    Figures {
        startup_ms,
        alert_p99: p99(alerts),
        api,
        rss_mb,
    }
}

/// p50 of three evaluator passes.
async fn escalation_pass(db: &str, esc: &escalation::Escalation) -> f64 {
    let store = Store::connect(db, 4).await.expect("store");
    let mut passes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        runbookd::schedulers::escalation::evaluate(esc, &store)
            .await
            .expect("pass");
        passes.push(t.elapsed());
    }
    store.close().await;
    passes.sort();
    ms(passes[1])
}

fn report(store: &str, empty: &Figures, loaded: &Figures, esc: (f64, f64)) {
    let row = |what: &str, a: f64, b: f64| {
        println!(
            "{store:<10} {what:<30} {a:>10.2} {b:>10.2} {:>7.2}×",
            b / a.max(0.001)
        );
    };
    row("startup ms", empty.startup_ms, loaded.startup_ms);
    row("alert p99 ms", empty.alert_p99, loaded.alert_p99);
    for ((name, a), (_, b)) in empty.api.iter().zip(&loaded.api) {
        row(&format!("GET {name} p99 ms"), *a, *b);
    }
    row("escalation pass ms (10k open)", esc.0, esc.1);
    row("RSS MB", empty.rss_mb, loaded.rss_mb);
}

#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let mut dir = tempfile::tempdir().expect("tempdir");
    // RUNBOOKD_BENCH_KEEP=1 keeps the loaded stores (to read their query plans).
    if std::env::var_os("RUNBOOKD_BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("(stores kept in {})", dir.path().display());
    }
    let esc = escalation::Escalation::load(dir.path().join("none.toml"), Vec::new())
        .expect("the shipped table");
    let mut stores = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("scale.db").display()),
    )];
    match support::fresh_postgres().await {
        Some(pg) => stores.push(("postgresql", pg)),
        None => println!("(PostgreSQL does not answer at RUNBOOKD_TEST_POSTGRES_URL: SQLite only)"),
    }
    println!(
        "runbookd at scale: empty store vs {RUNS} runs and {INCIDENTS} incidents ({OPEN} open)"
    );
    println!(
        "{:<10} {:<30} {:>10} {:>10} {:>8}",
        "store", "measure", "empty", "loaded", "ratio"
    );
    for (name, db) in stores {
        let round = dir.path().join(name);
        let empty = measure(&round.join("empty"), &db, "e").await;
        let now = chrono::Utc::now().timestamp_millis();
        let mut conn = sqlx::AnyConnection::connect(&db).await.expect("connect");
        // The empty round's alerts opened incidents of their own: resolve them, so that
        // both passes evaluate exactly the seeded open incidents.
        sqlx::query("UPDATE incidents SET status = 'resolved', resolved_at = opened_at")
            .execute(&mut conn)
            .await
            .expect("resolve");
        seed_open(&mut conn, now).await;
        let esc_empty = escalation_pass(&db, &esc).await;
        let t = Instant::now();
        seed_history(&mut conn, now).await;
        if name == "postgresql" {
            sqlx::query("VACUUM ANALYZE")
                .execute(&mut conn)
                .await
                .expect("analyze");
            // The load's dirty pages written out now, not during the measurement.
            sqlx::query("CHECKPOINT")
                .execute(&mut conn)
                .await
                .expect("checkpoint");
        } else {
            sqlx::query("ANALYZE")
                .execute(&mut conn)
                .await
                .expect("analyze");
        }
        conn.close().await.expect("close");
        println!(
            "({name}: history loaded in {:.0} s)",
            t.elapsed().as_secs_f64()
        );
        let esc_loaded = escalation_pass(&db, &esc).await;
        let loaded = measure(&round.join("loaded"), &db, "l").await;
        report(name, &empty, &loaded, (esc_empty, esc_loaded));
    }
}
