//! Fault injection from outside: replicas sharing one PostgreSQL store, `kill -9`, SIGTERM,
//! a full run queue, a crowd of open incidents, two runs writing facts at once. Side effects
//! are counted outside runbookd (Celery messages in Redis, pages in an HTTP sink), not only
//! in its own store.

use std::{collections::HashMap, time::Duration};

use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::{
    alerts::{notification, post},
    helpers::{redis, redis_url, Daemon, Db, Options, Workspace},
    notify::Sink,
};

/// Marks its start and end on the Celery broker (an external side effect), sleeping in
/// between so a fault can land mid-run.
const DRILL: &str = r#"
fn triggers() { [#{ alert: "FaultDrill" }] }
fn run(event) {
    celery_enqueue("drill.mark", ["start", event.incident, event.attempt]);
    sleep(0.3);
    celery_enqueue("drill.mark", ["end", event.incident, event.attempt]);
    "done"
}
"#;

/// A broker queue of this test's own.
pub fn celery_config(queue: &str) -> String {
    format!(
        "[celery]\nbroker_url = \"{}\"\nqueue = \"{queue}\"\ntasks = [\"drill.mark\"]\n",
        redis_url()
    )
}

/// (phase, incident, attempt) of every mark, oldest first.
pub async fn marks(queue: &str) -> Vec<(String, String, i64)> {
    let mut r = redis().await;
    let raw: Vec<String> = r.lrange(queue, 0, -1).await.expect("lrange");
    raw.iter()
        .rev() // LPUSH: newest first
        .map(|m| {
            let m: Value = serde_json::from_str(m).expect("celery message");
            let args: Value =
                serde_json::from_str(m["headers"]["argsrepr"].as_str().expect("argsrepr"))
                    .expect("args");
            (
                args[0].as_str().expect("phase").to_string(),
                args[1].as_str().expect("incident").to_string(),
                args[2].as_i64().expect("attempt"),
            )
        })
        .collect()
}

pub fn replica(name: &str, extra: &str, env: &[(&str, &str)]) -> Options {
    let mut e: Vec<(String, String)> = vec![
        ("RUNBOOKD_SERVER__REPLICA_ID".into(), name.into()),
        ("RUNBOOKD_SERVER__LEASE_TTL".into(), "2s".into()),
    ];
    e.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Options {
        extra_config: extra.to_string(),
        env: e,
        ..Default::default()
    }
}

fn drill_alert(fingerprint: &str) -> Value {
    let mut n = notification(&[("FaultDrill", fingerprint, "firing")]);
    n["alerts"][0]["startsAt"] = json!(chrono::Utc::now().to_rfc3339());
    n
}

/// Every run of `playbook` in the store, by id.
async fn all_runs(d: &Daemon, playbook: &str) -> Vec<Value> {
    let (_, runs) = d
        .get(&format!(
            "/api/v1/runs?logs=true&playbook={playbook}&limit=1000"
        ))
        .await;
    runs.as_array().cloned().unwrap_or_default()
}

/// Attempts of one incident as (start index, end index) in the mark log: they must not
/// overlap (no run executes on two replicas at once).
fn assert_attempts_disjoint(incident: &str, marks: &[(String, String, i64)]) {
    let mut spans: HashMap<i64, (usize, Option<usize>)> = HashMap::new();
    for (i, (phase, inc, attempt)) in marks.iter().enumerate() {
        if inc != incident {
            continue;
        }
        match phase.as_str() {
            "start" => {
                assert!(
                    spans.insert(*attempt, (i, None)).is_none(),
                    "attempt {attempt} of {incident} started twice"
                );
            }
            _ => {
                let span = spans
                    .get_mut(attempt)
                    .unwrap_or_else(|| panic!("end without start for {incident}"));
                span.1 = Some(i);
            }
        }
    }
    let mut spans: Vec<_> = spans.into_iter().collect();
    spans.sort();
    for w in spans.windows(2) {
        let ((a, (_, a_end)), (b, (b_start, _))) = (w[0], w[1]);
        if let Some(a_end) = a_end {
            assert!(
                a_end < b_start,
                "{incident}: attempt {a} still ran when attempt {b} started"
            );
        }
    }
}

/// L1 pages every incident at once, so double pages would show in the sink.
const PAGE_AT_ONCE: &str = r#"
[[levels]]
name = "L1"
condition = 'alert == "FaultDrill"'
channels = ["hook"]
"#;

#[tokio::test]
async fn three_replicas_lose_nothing_and_run_nothing_twice_through_kill_and_sigterm() {
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("drill", DRILL);
    std::fs::write(ws.dir.path().join("escalation.toml"), PAGE_AT_ONCE).expect("table");
    let sink = Sink::start(Vec::new()).await;
    let queue = format!("drill-{}", uuid::Uuid::now_v7().simple());
    let extra = format!(
        "{}[channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
        celery_config(&queue),
        sink.url()
    );
    let env = [
        ("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS", "6"),
        ("RUNBOOKD_SERVER__SHUTDOWN_GRACE", "500ms"),
        ("RUNBOOKD_ESCALATION__INTERVAL", "300ms"),
        // A page claimed by the replica that is killed is sent by another one when its
        // outbox lease (notify timeout + 30 s) runs out.
        ("RUNBOOKD_NOTIFY__TIMEOUT", "1s"),
    ];
    let a = Daemon::start(&ws, &replica("a", &extra, &env));
    let mut b = Daemon::start(&ws, &replica("b", &extra, &env));
    let mut c = Daemon::start(&ws, &replica("c", &extra, &env));

    const ALERTS: usize = 200;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..ALERTS {
        if i == 70 {
            b.signal("KILL");
        }
        if i == 140 {
            c.signal("TERM");
        }
        let fp = format!("fp-drill-{i:03}");
        let target = [&a, &b, &c][i % 3];
        let resp = target
            .client
            .post(target.url("/api/v1/alerts"))
            .json(&drill_alert(&fp))
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == 200 => accepted.push(fp),
            _ => refused.push(fp),
        }
    }
    // Alertmanager resends what was not answered 200; the surviving replica takes it.
    for fp in &refused {
        let (s, body) = post(&a, &drill_alert(fp)).await;
        assert_eq!(s, 200, "{body}");
        accepted.push(fp.clone());
    }
    assert_eq!(accepted.len(), ALERTS);
    assert!(!refused.is_empty(), "the faults landed mid-burst");
    b.wait_exit(Duration::from_secs(5));
    assert!(
        c.wait_exit(Duration::from_secs(10)).success(),
        "{}",
        c.logs()
    );

    // Every accepted alert's run ends succeeded, on the replica still alive if need be.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = all_runs(&a, "drill").await;
        let done = runs.iter().filter(|r| r["status"] == "succeeded").count();
        if done >= ALERTS || std::time::Instant::now() > deadline {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut by_incident: HashMap<String, Vec<&Value>> = HashMap::new();
    for r in &runs {
        by_incident
            .entry(
                r["event"]["incident"]
                    .as_str()
                    .expect("incident")
                    .to_string(),
            )
            .or_default()
            .push(r);
    }
    assert_eq!(by_incident.len(), ALERTS, "one incident per alert");
    let marks = marks(&queue).await;
    let mut retried = 0;
    for (incident, runs) in &by_incident {
        let ok: Vec<_> = runs.iter().filter(|r| r["status"] == "succeeded").collect();
        assert_eq!(
            ok.len(),
            1,
            "{incident}: exactly one successful run: {runs:?}"
        );
        assert_eq!(runs.len(), 1, "{incident}: one run per alert: {runs:?}");
        let run = ok[0];
        let ends = marks
            .iter()
            .filter(|(p, i, _)| p == "end" && i == incident)
            .count();
        let attempts = run["attempt"].as_i64().expect("attempt");
        if attempts > 1 {
            retried += 1;
        }
        // Only an attempt cut off between its last action and its recorded end may have
        // done its side effect twice.
        assert!(
            ends == 1 || (attempts > 1 && ends <= attempts as usize),
            "{incident}: the run's work was done {ends} times: {run}"
        );
        assert_attempts_disjoint(incident, &marks);
    }
    assert!(
        retried > 0,
        "the killed replica's running runs were retried"
    );

    // Pages: each incident's L1 exactly once, across three evaluators and two faults.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, n) = a.get("/api/v1/notifications?limit=1000").await;
        let all = n.as_array().cloned().unwrap_or_default();
        let sent = all.iter().filter(|n| n["status"] == "sent").count();
        if sent >= ALERTS || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One page per incident: one L1 notification (one id). Delivery is at least once: a
    // replica killed between the sink's answer and its "sent" mark has that page resent by
    // another when the claim runs out — the same id, so receivers can tell (and under load
    // a 1 s notify timeout can also resend an answered POST). Never more than once again.
    let mut pages: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for (_, _, body) in sink.received() {
        if body["kind"] == "trigger" && body["level"] == "L1" {
            *pages
                .entry(body["incident"].as_str().unwrap_or("").to_string())
                .or_default()
                .entry(body["id"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(pages.len(), ALERTS, "every incident paged");
    let twice: Vec<_> = pages.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(twice.is_empty(), "an incident was paged twice: {twice:?}");
    let redelivered: Vec<_> = pages
        .values()
        .flat_map(|ids| ids.iter())
        .filter(|(_, n)| **n > 1)
        .collect();
    assert!(
        redelivered.iter().all(|(id, n)| !id.is_empty() && **n <= 2),
        "a page was delivered more than once again: {redelivered:?}"
    );
    eprintln!(
        "drill: {} page(s) redelivered with the same id",
        redelivered.len()
    );
    eprintln!(
        "faults: {ALERTS} alerts, {} answered 200 at first, {} resent; {} runs, {} retried after a fault, 0 duplicates, 0 lost",
        ALERTS - refused.len(),
        refused.len(),
        runs.len(),
        retried
    );
}

#[tokio::test]
async fn a_replica_that_starts_leaves_live_work_of_the_others_alone() {
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("drill", DRILL);
    let queue = format!("drill-{}", uuid::Uuid::now_v7().simple());
    let extra = celery_config(&queue);
    let env = [("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS", "1")];
    let a = Daemon::start(&ws, &replica("a", &extra, &env));
    for fp in ["fp-live-1", "fp-live-2"] {
        let (s, body) = post(&a, &drill_alert(fp)).await;
        assert_eq!(s, 200, "{body}");
    }
    // One executing, one queued behind it; now a second replica starts.
    let b = Daemon::start(&ws, &replica("b", &extra, &env));
    let (_, replicas) = b.get("/api/v1/replicas").await;
    let names: Vec<(&str, bool)> = replicas
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| (r["name"].as_str().unwrap_or(""), r["this"] == true))
        .collect();
    assert_eq!(names, vec![("a", false), ("b", true)], "{replicas}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let runs = loop {
        let runs = all_runs(&b, "drill").await;
        if runs.iter().all(|r| r["status"] == "succeeded") || std::time::Instant::now() > deadline {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["attempt"], 1, "nobody took the run over: {r}");
        assert_eq!(r["replica"], "a", "{r}");
    }
    let marks = marks(&queue).await;
    assert_eq!(marks.len(), 4, "each run's work done once: {marks:?}");
}

#[tokio::test]
async fn a_crashed_replicas_run_finishes_on_the_survivor_within_the_lease() {
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook(
        "slow",
        "fn run(event) { if event.attempt == 1 { sleep(30); } event.attempt }\n",
    );
    let a = Daemon::start(&ws, &replica("a", "", &[]));
    let mut b = Daemon::start(&ws, &replica("b", "", &[]));
    let id = b.start_run("slow", json!({})).await;
    a.run_reaching(&id, "running", Duration::from_secs(3)).await;
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(5));
    let killed = std::time::Instant::now();
    let run = a
        .run_reaching(&id, "succeeded", Duration::from_secs(10))
        .await;
    let took = killed.elapsed();
    assert_eq!(run["status"], "succeeded", "{run}\n{}", a.logs());
    assert_eq!(run["replica"], "a", "{run}");
    assert_eq!(run["attempt"], 2, "{run}");
    assert_eq!(run["attempts"][0]["replica"], "b", "{run}");
    assert_eq!(run["attempts"][0]["outcome"], "interrupted", "{run}");
    // lease_ttl 2 s, recovery every third of it.
    assert!(took < Duration::from_secs(5), "took over after {took:?}");
}

#[tokio::test]
async fn sigterm_hands_queued_alert_runs_to_another_replica() {
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("drill", DRILL);
    let queue = format!("drill-{}", uuid::Uuid::now_v7().simple());
    let extra = celery_config(&queue);
    let env = [("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS", "1")];
    let mut a = Daemon::start(&ws, &replica("a", &extra, &env));
    let b = Daemon::start(&ws, &replica("b", &extra, &env));
    let mut ids = Vec::new();
    for fp in ["fp-term-1", "fp-term-2", "fp-term-3"] {
        let (s, body) = post(&a, &drill_alert(fp)).await;
        assert_eq!(s, 200, "{body}");
        ids.push(
            body["alerts"][0]["runs"][0]
                .as_str()
                .expect("run")
                .to_string(),
        );
    }
    a.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(10)).success());
    for id in &ids {
        let run = b
            .run_reaching(id, "succeeded", Duration::from_secs(10))
            .await;
        assert_eq!(
            run["status"], "succeeded",
            "accepted alert run dropped: {run}"
        );
        assert_eq!(run["attempt"], 1, "{run}");
    }
    let replicas: Vec<String> = {
        let mut v = Vec::new();
        for id in &ids {
            let (_, r) = b.get(&format!("/api/v1/runs/{id}")).await;
            v.push(r["replica"].as_str().unwrap_or("").to_string());
        }
        v
    };
    assert!(
        replicas.iter().any(|r| r == "b"),
        "queued runs moved: {replicas:?}"
    );
    assert_eq!(marks(&queue).await.len(), 6, "each run's work done once");
}

const BLOCKER: &str = "fn run(event) { sleep(event.params.secs); }\n";

#[tokio::test]
async fn escalation_and_cron_runs_wait_out_a_full_queue() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("blocker", BLOCKER);
    ws.write_playbook(
        "l1_action",
        "fn run(event) { note(\"L1 playbook ran\"); event.name }\n",
    );
    ws.write_playbook(
        "ticker",
        "fn triggers() { [#{ cron: \"* * * * * *\" }] }\nfn run(event) { event.params.scheduled_for }\n",
    );
    std::fs::write(
        ws.dir.path().join("escalation.toml"),
        "[[levels]]\nname = \"L1\"\ncondition = 'alert == \"Unhandled\"'\nplaybook = \"l1_action\"\n",
    )
    .expect("table");
    let opts = Options {
        env: vec![
            ("RUNBOOKD_PLAYBOOKS__MAX_CONCURRENT_RUNS".into(), "1".into()),
            ("RUNBOOKD_PLAYBOOKS__QUEUE_CAPACITY".into(), "1".into()),
            ("RUNBOOKD_ESCALATION__INTERVAL".into(), "200ms".into()),
        ],
        ..Default::default()
    };
    let d = Daemon::start(&ws, &opts);
    // Fill the slot and the queue until triggers from outside are refused.
    let mut refused = false;
    for _ in 0..6 {
        let resp = d
            .client
            .post(d.url("/api/v1/playbooks/blocker/runs"))
            .json(&json!({"params": {"secs": 1.5}}))
            .send()
            .await
            .expect("post");
        if resp.status().as_u16() == 503 {
            refused = true;
            break;
        }
        assert_eq!(resp.status().as_u16(), 202);
    }
    assert!(refused, "the queue filled up");
    // An alert no playbook handles opens an incident; its L1 wants a playbook run.
    let (s, body) = post(&d, &notification(&[("Unhandled", "fp-full", "firing")])).await;
    assert_eq!(s, 200, "{body}");
    let incident = body["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let l1 = d
        .poll(
            "/api/v1/runs?logs=true&playbook=l1_action",
            Duration::from_secs(3),
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    assert_eq!(
        l1[0]["status"], "queued",
        "recorded while the queue is full: {l1}"
    );
    // Cron ticks that fall while the queue is full are recorded too.
    let ticks = d
        .poll(
            "/api/v1/runs?logs=true&playbook=ticker",
            Duration::from_secs(3),
            |v| v.as_array().is_some_and(|a| a.len() >= 2),
        )
        .await;
    assert!(ticks.as_array().is_some_and(|a| a.len() >= 2), "{ticks}");
    // When the slots free, every one of them runs.
    let l1 = d
        .poll(
            "/api/v1/runs?logs=true&playbook=l1_action",
            Duration::from_secs(10),
            |v| v[0]["status"] == "succeeded",
        )
        .await;
    assert_eq!(l1[0]["status"], "succeeded", "{l1}");
    assert_eq!(l1[0]["event"]["incident"], incident.as_str());
    let recorded: Vec<String> = ticks
        .as_array()
        .expect("ticks")
        .iter()
        .map(|t| t["id"].as_str().unwrap_or("").to_string())
        .collect();
    for id in recorded {
        let run = d
            .run_reaching(&id, "succeeded", Duration::from_secs(10))
            .await;
        assert_eq!(run["status"], "succeeded", "a cron tick was lost: {run}");
    }
}

#[tokio::test]
async fn escalation_reaches_an_incident_behind_a_crowd_with_future_start_times() {
    let ws = Workspace::new(Db::Sqlite).await;
    let sink = Sink::start(Vec::new()).await;
    std::fs::write(
        ws.dir.path().join("escalation.toml"),
        "[[levels]]\nname = \"L1\"\ncondition = 'alert == \"Target\" && age > 1.0'\nchannels = [\"hook\"]\n",
    )
    .expect("table");
    let opts = Options {
        extra_config: format!(
            "[channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
            sink.url()
        ),
        env: vec![("RUNBOOKD_ESCALATION__INTERVAL".into(), "300ms".into())],
        ..Default::default()
    };
    let d = Daemon::start(&ws, &opts);
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    for batch in 0..12 {
        let names: Vec<(String, String)> = (0..100)
            .map(|i| ("Crowd".to_string(), format!("fp-crowd-{batch}-{i}")))
            .collect();
        let refs: Vec<(&str, &str, &str)> = names
            .iter()
            .map(|(n, f)| (n.as_str(), f.as_str(), "firing"))
            .collect();
        let mut n = notification(&refs);
        for a in n["alerts"].as_array_mut().expect("alerts") {
            a["startsAt"] = json!(future);
        }
        let (s, body) = post(&d, &n).await;
        assert_eq!(s, 200, "{body}");
    }
    let mut target = notification(&[("Target", "fp-target", "firing")]);
    target["alerts"][0]["startsAt"] = json!(chrono::Utc::now().to_rfc3339());
    let (s, body) = post(&d, &target).await;
    assert_eq!(s, 200, "{body}");
    let incident = body["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let pages = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(pages.len(), 1, "the target incident was never escalated");
    assert_eq!(pages[0].2["incident"], incident.as_str());
    // A future startsAt is clamped to when runbookd heard of the alert.
    let (_, list) = d.get("/api/v1/incidents?status=open&limit=5").await;
    let opened = list[0]["opened_at"].as_str().expect("opened_at");
    let opened = chrono::DateTime::parse_from_rfc3339(opened).expect("time");
    assert!(
        opened <= chrono::Utc::now() + chrono::Duration::seconds(1),
        "{list}"
    );
}

#[tokio::test]
async fn facts_two_runs_set_at_once_are_all_kept() {
    let ws = Workspace::new(Db::Sqlite).await;
    for who in ["left", "right"] {
        ws.write_playbook(
            who,
            &format!(
                "fn triggers() {{ [#{{ alert: \"Facts\" }}] }}\nfn run(event) {{ for i in 0..150 {{ set_fact(`{who}_${{i}}`, i); }} }}\n"
            ),
        );
    }
    let d = Daemon::start(&ws, &Options::default());
    let (s, body) = post(&d, &notification(&[("Facts", "fp-facts", "firing")])).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["alerts"][0]["runs"].as_array().map(Vec::len), Some(2));
    let incident = body["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    d.poll(
        "/api/v1/runs?logs=true&status=succeeded",
        Duration::from_secs(20),
        |v| v.as_array().is_some_and(|a| a.len() == 2),
    )
    .await;
    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident}")).await;
    let facts = inc["facts"].as_object().expect("facts");
    assert_eq!(facts.len(), 300, "facts lost to a concurrent write");
}
