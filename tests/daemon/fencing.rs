//! Leases at the edges: a replica frozen past its lease acts no more when it resumes
//! (fenced actions), and leases hold whatever the replicas' wall clocks say (they run on
//! the store's clock). Side effects are counted outside runbookd, as Celery messages on
//! Redis.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::{
    faults::{celery_config, marks, replica},
    helpers::{redis, redis_url, Daemon, Db, Workspace},
};

/// Sleeps (a pause can land there), then acts once: one Celery message per attempt that
/// acts.
const ACT_AFTER_A_PAUSE: &str = r#"
fn run(event) {
    sleep(event.params.pause);
    celery_enqueue("drill.mark", ["act", event.params.key, event.attempt]);
    event.attempt
}
"#;

/// Polls until `pred` holds on the daemon's log or `timeout` passes.
async fn logged(d: &Daemon, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if pred(&d.logs()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_replica_frozen_past_its_lease_does_not_act_when_it_resumes() {
    let queue = format!("fence-{}", uuid::Uuid::now_v7().simple());
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("frozen", ACT_AFTER_A_PAUSE);
    let config = celery_config(&queue);
    let a = Daemon::start(&ws, &replica("a", &config, &[]));
    let b = Daemon::start(&ws, &replica("b", &config, &[]));
    // Three trials, resumed at different moments after the frozen attempt's pause ended.
    for (trial, resume_after) in [(0, 5.0), (1, 5.6), (2, 6.3)] {
        let key = format!("trial-{trial}");
        let started = Instant::now();
        let id = a
            .start_run("frozen", json!({ "key": key, "pause": 4.0 }))
            .await;
        let running = a.run_reaching(&id, "running", Duration::from_secs(5)).await;
        assert_eq!(running["replica"], "a", "{running}");
        a.freeze();
        // lease_ttl 2 s: B takes the run over as attempt 2 while A is frozen.
        let retried = b
            .poll(
                &format!("/api/v1/runs/{id}"),
                Duration::from_secs(10),
                |v| v["attempt"] == 2 && v["status"] == "running",
            )
            .await;
        assert_eq!(retried["replica"], "b", "trial {trial}: {retried}");
        // The fault: A stays frozen until after its own pause would have ended, so the
        // moment it resumes its script goes on to the action.
        let until = Duration::from_secs_f64(resume_after);
        tokio::time::sleep(until.saturating_sub(started.elapsed())).await;
        a.signal("CONT");
        let done = b
            .run_reaching(&id, "succeeded", Duration::from_secs(15))
            .await;
        assert_eq!(done["status"], "succeeded", "trial {trial}: {done}");
        assert_eq!(done["result"], 2, "trial {trial}: {done}");
        // A noticed (its fence, or its lease keeper) before anything else happened.
        assert!(
            logged(&a, Duration::from_secs(5), |l| l.contains("fenced")
                || l.contains("lease expired"))
            .await,
            "trial {trial}: A never noticed it lost its lease:\n{}",
            a.logs()
        );
        let acted: Vec<_> = marks(&queue)
            .await
            .into_iter()
            .filter(|(_, k, _)| *k == key)
            .collect();
        assert_eq!(
            acted,
            vec![("act".to_string(), key.clone(), 2)],
            "trial {trial}: exactly one side effect, by the attempt that owned the run\nA:\n{}",
            a.logs()
        );
    }
    // A goes on serving under a new lease: a run it accepts now acts, once (a run accepted
    // in the moment before its keeper replaced the lapsed lease is fenced and retried).
    let id = a
        .start_run("frozen", json!({ "key": "after", "pause": 0.0 }))
        .await;
    let done = a
        .run_reaching(&id, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let after = marks(&queue)
        .await
        .into_iter()
        .filter(|(_, k, _)| k == "after")
        .count();
    assert_eq!(after, 1);
}

/// Attempt 1 pauses before it writes the breaker; later attempts write at once.
const FAIL_AFTER_A_PAUSE: &str = r#"
fn run(event) {
    if event.attempt == 1 { sleep(event.params.pause); }
    breaker("stripe").record_failure();
    event.attempt
}
"#;

#[tokio::test]
async fn a_stale_attempts_breaker_write_is_refused_by_redis() {
    // The hole the monotonic fence leaves: an attempt that passed its own check and whose
    // write arrives after a later attempt's. Injected through the store's tables: A's
    // lease is ended there (as a replica cut off from the store for longer than the lease
    // would find it) while A's own monotonic clock — lease_ttl 60 s — still says it holds,
    // so A's attempt 1 goes on to write after B's attempt 2 did.
    let base = format!("t{}:circuit_breaker:stripe", uuid::Uuid::now_v7().simple());
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("stale", FAIL_AFTER_A_PAUSE);
    let config = format!(
        "[redis]\nurl = \"{}\"\n[breakers.stripe]\npreset = \"plain\"\nkey_base = \"{base}\"\n",
        redis_url()
    );
    // One slot on A, held by attempt 1: A cannot claim attempt 2 itself.
    let a = Daemon::start(
        &ws,
        &replica(
            "a",
            &config,
            &[
                ("RUNBOOKD_SERVER__LEASE_TTL", "60s"),
                ("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS", "1"),
            ],
        ),
    );
    let b = Daemon::start(&ws, &replica("b", &config, &[]));
    let id = a.start_run("stale", json!({ "pause": 5.0 })).await;
    let running = a.run_reaching(&id, "running", Duration::from_secs(5)).await;
    assert_eq!(running["replica"], "a", "{running}");
    let mut db = sqlx::PgConnection::connect(&ws.database_url)
        .await
        .expect("state store");
    let ended = sqlx::query(
        "UPDATE replicas SET expires_at = 0 WHERE id = (SELECT owner FROM runs WHERE id = $1)",
    )
    .bind(&id)
    .execute(&mut db)
    .await
    .expect("end A's lease in the store");
    assert_eq!(ended.rows_affected(), 1);
    // B (lease_ttl 2 s: a recovery pass every 0.7 s) starts attempt 2, which writes first.
    let done = b
        .run_reaching(&id, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(
        (done["attempt"].clone(), done["replica"].clone()),
        (json!(2), json!("b")),
        "{done}"
    );
    let mut con = redis().await;
    let failures = |con: &redis::aio::MultiplexedConnection| {
        let key = format!("{base}:failures");
        let mut con = con.clone();
        async move { con.get::<_, Option<String>>(key).await.expect("get") }
    };
    assert_eq!(
        failures(&con).await.as_deref(),
        Some("1"),
        "attempt 2's failure"
    );
    // A's attempt 1 wakes from its pause and writes with its token: refused by the script.
    assert!(
        logged(&a, Duration::from_secs(10), |l| l
            .contains("breaker write refused"))
        .await,
        "A's stale write was not refused:\n{}",
        a.logs()
    );
    assert_eq!(
        failures(&con).await.as_deref(),
        Some("1"),
        "exactly one failure counted, by the attempt that owned the run\nA:\n{}",
        a.logs()
    );
    let fence: Option<String> = con
        .get(format!("{base}:state:runbookd_fence:{id}"))
        .await
        .expect("get");
    assert_eq!(fence.as_deref(), Some("2"), "the highest attempt seen");
    // Neither the refused write nor its attempt left a trace in the run or the audit trail.
    let (_, audit) = b.get("/api/v1/audit?limit=1000").await;
    let writes = audit.as_array().map(|a| {
        a.iter()
            .filter(|e| e["run_id"] == id.as_str() && e["action"] == "breaker.record_failure")
            .count()
    });
    assert_eq!(writes, Some(1), "{audit}");
    let (_, run) = b.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let _: () = con
        .del(&[
            format!("{base}:failures"),
            format!("{base}:state"),
            format!("{base}:last_failure"),
            format!("{base}:state:runbookd_fence:{id}"),
        ])
        .await
        .expect("cleanup");
}

/// libfaketime's offset for one replica (its monotonic clock left alone).
fn skewed(offset: &str) -> Vec<(&'static str, String)> {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "{lib} is missing: scripts/test installs Debian's faketime"
    );
    vec![
        ("LD_PRELOAD", lib.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn replicas_whose_clocks_are_20_s_off_keep_their_leases_and_their_runs() {
    let queue = format!("skew-{}", uuid::Uuid::now_v7().simple());
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("frozen", ACT_AFTER_A_PAUSE);
    let config = celery_config(&queue);
    let start = |name: &str, offset: Option<&str>| {
        let env = offset.map(skewed).unwrap_or_default();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut opts = replica(name, &config, &env);
        opts.env
            .push(("RUNBOOKD_SERVER__LEASE_TTL".into(), "3s".into()));
        Daemon::start(&ws, &opts)
    };
    let on_time = start("on-time", None);
    let behind = start("behind", Some("-20s"));
    let ahead = start("ahead", Some("+20s"));
    // Each replica runs one run well past its lease ttl.
    let mut runs = Vec::new();
    for (d, key) in [
        (&on_time, "on-time"),
        (&behind, "behind"),
        (&ahead, "ahead"),
    ] {
        runs.push((
            d,
            key,
            d.start_run("frozen", json!({ "key": key, "pause": 7.0 }))
                .await,
        ));
    }
    for (d, key, id) in &runs {
        let done: Value = d
            .run_reaching(id, "succeeded", Duration::from_secs(20))
            .await;
        assert_eq!(done["status"], "succeeded", "{key}: {done}");
        assert_eq!(
            done["attempt"], 1,
            "{key}: nobody took the run over: {done}"
        );
        assert_eq!(done["replica"], *key, "{key}: {done}");
    }
    for (d, key, _) in &runs {
        assert!(
            !d.logs().contains("lease expired"),
            "{key} lost its lease:\n{}",
            d.logs()
        );
    }
    let acted = marks(&queue).await;
    assert_eq!(acted.len(), 3, "each run acted once: {acted:?}");
    // Each replica knows how far its clock is from the store's, and says so.
    for (d, want) in [(&on_time, 0.0), (&behind, -20.0), (&ahead, 20.0)] {
        let skew = metric(&d.metrics().await, "runbookd_clock_skew_seconds")
            .expect("runbookd_clock_skew_seconds exported");
        assert!((skew - want).abs() < 1.0, "skew {skew}, want {want}");
    }
    assert!(behind.logs().contains("differs from the state store's"));
    assert!(!on_time.logs().contains("differs from the state store's"));
}
