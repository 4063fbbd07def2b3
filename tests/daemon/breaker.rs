//! The circuit breaker against real Redis, in the app's own layouts, with pickles made by
//! Python's own `pickle` at test time.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::helpers::{python, redis, redis_url, Daemon, Db, Options, Workspace};

/// A Django-layout breaker under a key prefix of its own, so tests share Redis safely.
fn django_config(prefix: &str, extra: &str) -> String {
    format!(
        "[redis]\nurl = \"{}\"\n\n[breakers.stripe]\npreset = \"django\"\nkey_prefix = \"{prefix}\"\n{extra}\n",
        redis_url()
    )
}

const INSPECT: &str = r#"
fn run(event) {
    let b = breaker("stripe");
    b
}
"#;

#[tokio::test]
async fn reads_what_django_wrote_and_computes_half_open() {
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let mut r = redis().await;
    // What the app's workers write: pickled 'open' and pickled time.time() (protocol 5).
    let state = python(
        "import pickle,sys; sys.stdout.buffer.write(pickle.dumps('open', protocol=5))",
        b"",
    );
    let opened_45s_ago = python(
        "import pickle,sys,time; sys.stdout.buffer.write(pickle.dumps(time.time() - 45, protocol=5))",
        b"",
    );
    let _: () = r
        .set(format!("{prefix}:1:circuit_breaker:stripe:state"), &state)
        .await
        .expect("set");
    let _: () = r
        .set(
            format!("{prefix}:1:circuit_breaker:stripe:opened_at"),
            &opened_45s_ago,
        )
        .await
        .expect("set");
    let _: () = r
        .set(format!("{prefix}:1:circuit_breaker:stripe:failures"), "5")
        .await
        .expect("set");

    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("inspect", INSPECT);
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: django_config(&prefix, ""),
            ..Default::default()
        },
    );
    let (_, run) = d.run_wait("inspect", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let b = &run["result"];
    assert_eq!(b["state"], "half_open", "open 45 s > 30 s recovery: {b}");
    assert_eq!(b["failures"], 5);
    let since = b["seconds_since_open"].as_f64().expect("seconds");
    assert!((44.0..50.0).contains(&since), "{since}");

    // Opened 10 s ago: still open. Same answer from the API.
    let recent = python(
        "import pickle,sys,time; sys.stdout.buffer.write(pickle.dumps(time.time() - 10, protocol=5))",
        b"",
    );
    let _: () = r
        .set(
            format!("{prefix}:1:circuit_breaker:stripe:opened_at"),
            &recent,
        )
        .await
        .expect("set");
    let (s, b) = d.get("/api/v1/breakers/stripe").await;
    assert_eq!((s, b["state"].as_str()), (200, Some("open")), "{b}");
    let (s, _) = d.get("/api/v1/breakers/nope").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn failures_open_the_breaker_in_a_layout_python_reads() {
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "fail5",
        "fn run(event) { let b = breaker(\"stripe\"); for i in 0..5 { b.record_failure(); } b }\n",
    );
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: django_config(&prefix, ""),
            ..Default::default()
        },
    );
    let (_, run) = d.run_wait("fail5", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["state"], "open");
    assert_eq!(
        run["actions"].as_array().map(Vec::len),
        Some(5),
        "each change is an action"
    );

    let mut r = redis().await;
    let key = |f: &str| format!("{prefix}:1:circuit_breaker:stripe:{f}");
    // An int is stored as decimal text, as django-redis does.
    let failures: String = r.get(key("failures")).await.expect("failures");
    assert_eq!(failures, "5");
    let ttl: i64 = r.ttl(key("failures")).await.expect("ttl");
    assert!(
        (55..=60).contains(&ttl),
        "failures TTL is the 60 s window: {ttl}"
    );
    let state: Vec<u8> = r.get(key("state")).await.expect("state");
    let opened_at: Vec<u8> = r.get(key("opened_at")).await.expect("opened_at");
    assert_eq!(
        python(
            "import pickle,sys; print(pickle.loads(sys.stdin.buffer.read()))",
            &state
        ),
        b"open\n"
    );
    let age = python(
        "import pickle,sys,time; v = pickle.loads(sys.stdin.buffer.read()); assert type(v) is float; print(time.time() - v)",
        &opened_at,
    );
    let age: f64 = String::from_utf8_lossy(&age).trim().parse().expect("float");
    assert!((0.0..5.0).contains(&age), "{age}");
    let ttl: i64 = r.ttl(key("state")).await.expect("ttl");
    assert!(
        (295..=300).contains(&ttl),
        "state TTL is 10 x recovery: {ttl}"
    );

    // Success stores pickled 'closed' with a 600 s TTL and forgets failures.
    ws.write_playbook(
        "ok",
        "fn run(event) { let b = breaker(\"stripe\"); b.record_success(); b.state }\n",
    );
    d.poll("/api/v1/playbooks/ok", Duration::from_secs(2), |v| {
        v["version"].is_string()
    })
    .await;
    let (_, run) = d.run_wait("ok", json!({})).await;
    assert_eq!(run["result"], "closed", "{run}");
    let state: Vec<u8> = r.get(key("state")).await.expect("state");
    assert_eq!(
        python(
            "import pickle,sys; print(pickle.loads(sys.stdin.buffer.read()))",
            &state
        ),
        b"closed\n"
    );
    let exists: bool = r.exists(key("failures")).await.expect("exists");
    assert!(!exists);
    let ttl: i64 = r.ttl(key("state")).await.expect("ttl");
    assert!((595..=600).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn concurrent_failures_are_all_counted() {
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "fail",
        "fn run(event) { breaker(\"stripe\").record_failure(); }\n",
    );
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: django_config(&prefix, "failure_threshold = 1000\n"),
            ..Default::default()
        },
    );
    let mut calls = Vec::new();
    for _ in 0..50 {
        let client = d.client.clone();
        let url = d.url("/api/v1/playbooks/fail/runs?wait=true");
        calls.push(tokio::spawn(async move {
            client
                .post(url)
                .send()
                .await
                .expect("post")
                .json::<Value>()
                .await
                .expect("json")
        }));
    }
    for c in calls {
        assert_eq!(c.await.expect("join")["status"], "succeeded");
    }
    let mut r = redis().await;
    let failures: String = r
        .get(format!("{prefix}:1:circuit_breaker:stripe:failures"))
        .await
        .expect("failures");
    assert_eq!(
        failures, "50",
        "50 concurrent record_failure() calls leave exactly 50"
    );
}

#[tokio::test]
async fn reset_deletes_the_keys_and_dry_run_changes_nothing() {
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "fix",
        "fn run(event) {\n  let b = breaker(\"stripe\");\n  let did = b.reset();\n  #{ did: did, state: b.state }\n}\n",
    );
    ws.write_playbook(
        "open",
        "fn run(event) { let b = breaker(\"stripe\"); for i in 0..5 { b.record_failure(); } }\n",
    );
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: django_config(&prefix, ""),
            ..Default::default()
        },
    );
    d.run_wait("open", json!({})).await;
    let mut r = redis().await;
    let key = |f: &str| format!("{prefix}:1:circuit_breaker:stripe:{f}");

    let (_, run) = d.run_wait("fix", json!({"dry_run": true})).await;
    assert_eq!(run["result"]["did"], false, "{run}");
    assert_eq!(run["actions"][0]["outcome"], "planned");
    assert!(
        run["logs"].to_string().contains("would breaker.reset"),
        "{run}"
    );
    let exists: bool = r.exists(key("state")).await.expect("exists");
    assert!(exists, "a dry run leaves Redis alone");

    let (_, run) = d.run_wait("fix", json!({})).await;
    assert_eq!(
        run["result"],
        json!({"did": true, "state": "closed"}),
        "{run}"
    );
    let left: i64 = r
        .exists(&[key("state"), key("failures"), key("opened_at")])
        .await
        .expect("exists");
    assert_eq!(left, 0, "reset deletes the preset's three keys");

    // Both resets are in the audit trail, attributed to the playbook.
    let (_, audit) = d.get("/api/v1/audit").await;
    let resets: Vec<&Value> = audit
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["action"] == "breaker.reset")
        .collect();
    assert_eq!(resets.len(), 2, "{audit}");
    assert_eq!(resets[0]["actor"], "playbook:fix");
    assert_eq!(resets[1]["dry_run"], true);

    // The operator's reset through the API is audited too, and honours dry_run.
    d.run_wait("open", json!({})).await;
    let resp = d
        .client
        .post(d.url("/api/v1/breakers/stripe/reset"))
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .expect("post");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["after"]["state"], "open", "{body}");
    let resp = d
        .client
        .post(d.url("/api/v1/breakers/stripe/reset"))
        .send()
        .await
        .expect("post");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        (
            body["before"]["state"].as_str(),
            body["after"]["state"].as_str()
        ),
        (Some("open"), Some("closed"))
    );
    let (_, audit) = d.get("/api/v1/audit?limit=1").await;
    assert_eq!(audit[0]["actor"], "local");
}

#[tokio::test]
async fn plain_preset_reads_the_runbook_layout() {
    let base = format!("t{}:circuit_breaker:stripe", uuid::Uuid::now_v7().simple());
    let mut r = redis().await;
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let _: () = r.set(format!("{base}:state"), "OPEN").await.expect("set");
    let _: () = r.set(format!("{base}:failures"), 7).await.expect("set");
    let _: () = r
        .set(format!("{base}:last_failure"), format!("{}", now - 100.0))
        .await
        .expect("set");
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("inspect", INSPECT);
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: format!(
                "[redis]\nurl = \"{}\"\n[breakers.stripe]\npreset = \"plain\"\nkey_base = \"{base}\"\n",
                redis_url()
            ),
            ..Default::default()
        },
    );
    let (_, run) = d.run_wait("inspect", json!({})).await;
    assert_eq!(run["result"]["state"], "half_open", "{run}");
    assert_eq!(run["result"]["failures"], 7);
    let _: () = r
        .set(format!("{base}:state"), "half-open")
        .await
        .expect("set");
    let (_, b) = d.get("/api/v1/breakers/stripe").await;
    assert_eq!(b["state"], "half_open");
}

/// A Redis of the test's own, so it can be stopped mid-test.
struct OwnRedis {
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { child }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn redis_going_away_is_a_script_error_and_comes_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let own = OwnRedis::start(port);
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("inspect", INSPECT);
    ws.write_playbook(
        "careful",
        "fn run(event) {\n  try { return breaker(\"stripe\").state; } catch (e) { return `unavailable: ${e}`; }\n}\n",
    );
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: format!("[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\n"),
            ..Default::default()
        },
    );
    assert_eq!(
        d.run_wait("inspect", json!({})).await.1["result"]["state"],
        "closed"
    );
    drop(own);
    let (_, run) = d.run_wait("inspect", json!({})).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Redis"),
        "{run}"
    );
    let (_, run) = d.run_wait("careful", json!({})).await;
    assert!(
        run["result"]
            .as_str()
            .unwrap_or("")
            .starts_with("unavailable"),
        "catchable: {run}"
    );
    assert_eq!(d.get("/healthz").await.0, 200);
    let (s, _) = d.get("/api/v1/breakers/stripe").await;
    assert_eq!(s, 502);

    let _own = OwnRedis::start(port);
    let run = async {
        for _ in 0..50 {
            let (_, run) = d.run_wait("inspect", json!({})).await;
            if run["status"] == "succeeded" {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Value::Null
    }
    .await;
    assert_eq!(
        run["result"]["state"], "closed",
        "reconnects once Redis is back"
    );
}

#[tokio::test]
async fn unconfigured_redis_says_so() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("inspect", INSPECT);
    let d = Daemon::start(&ws, &Options::default());
    let (_, run) = d.run_wait("inspect", json!({})).await;
    assert_eq!(run["status"], "failed");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("set [redis] url"),
        "{run}"
    );
}

#[tokio::test]
async fn memory_store_has_the_same_semantics() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "cycle",
        r#"fn run(event) {
    let b = breaker("stripe");
    let seen = [b.state];
    for i in 0..4 { b.record_failure(); }
    seen.push(b.state);
    b.record_failure();
    seen.push(b.state);
    seen.push(b.allow());
    b.reset();
    seen.push(b.state);
    seen.push(b.failures);
    seen
}"#,
    );
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: "[breakers.stripe]\nstore = \"memory\"\n".into(),
            ..Default::default()
        },
    );
    let (_, run) = d.run_wait("cycle", json!({})).await;
    assert_eq!(
        run["result"],
        json!(["closed", "closed", "open", false, "closed", 0]),
        "{run}"
    );
}
