//! The HTTP API: triggering and reading runs, errors, auth.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{Daemon, Db, Options, Workspace};

const ECHO: &str = r#"
fn triggers() { [#{ manual: true }] }
fn run(event) {
    log("hello from " + event.name);
    #{ got: event.params, dry_run: event.dry_run, kind: event.kind }
}
"#;

async fn trigger_and_read_back(db: Db) {
    let ws = Workspace::new(db).await;
    ws.write_playbook("echo", ECHO);
    let d = Daemon::start(&ws, &Options::default());

    // ?wait=true answers with the finished run.
    let (status, run) = d
        .run_wait(
            "echo",
            json!({"params": {"n": 3, "who": "sre"}, "dry_run": true}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["result"],
        json!({"got": {"n": 3, "who": "sre"}, "dry_run": true, "kind": "manual"})
    );
    assert_eq!(run["dry_run"], true);
    assert_eq!(run["logs"][0]["message"], "hello from echo");
    assert_eq!(run["trigger"]["actor"], "local");
    assert_eq!(run["version"].as_str().map(str::len), Some(16));

    // Read it back by id and in the list.
    let id = run["id"].as_str().expect("id").to_string();
    let (status, stored) = d.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(stored, run, "stored run equals the one returned");

    // Without wait: 202 with an id, finished shortly after.
    let resp = d
        .client
        .post(d.url("/api/v1/playbooks/echo/runs"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().await.expect("json");
    let id2 = body["id"].as_str().expect("id").to_string();
    assert_eq!(body["status"], "queued");
    let done = d
        .poll(
            &format!("/api/v1/runs/{id2}"),
            Duration::from_secs(5),
            |v| v["status"] == "succeeded",
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["got"], json!({}));

    let (_, list) = d.get("/api/v1/runs?logs=true&playbook=echo&limit=10").await;
    let ids: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id2.as_str(), id.as_str()], "newest first");
    let (_, one) = d.get("/api/v1/runs?logs=true&limit=1").await;
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    let (_, failed) = d.get("/api/v1/runs?logs=true&status=failed").await;
    assert_eq!(failed, json!([]));
}

#[tokio::test]
async fn trigger_and_read_back_sqlite() {
    trigger_and_read_back(Db::Sqlite).await;
}

#[tokio::test]
async fn trigger_and_read_back_postgres() {
    trigger_and_read_back(Db::Postgres).await;
}

#[tokio::test]
async fn bad_requests_get_precise_json_errors() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("echo", ECHO);
    let d = Daemon::start(&ws, &Options::default());
    let post = |path: &str, body: Vec<u8>| {
        d.client
            .post(d.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let r = post("/api/v1/playbooks/echo/runs", b"{not json".to_vec())
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await.expect("json");
    assert!(e["error"].as_str().unwrap_or("").contains("line 1"), "{e}");

    let r = post("/api/v1/playbooks/echo/runs", br#"{"params": []}"#.to_vec())
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await.expect("json");
    assert!(
        e["error"].as_str().unwrap_or("").contains("params")
            || e["error"].as_str().unwrap_or("").contains("map"),
        "{e}"
    );

    let r = post("/api/v1/playbooks/nope/runs", Vec::new())
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 404);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"], "no playbook named `nope`");

    let big = vec![b' '; 1024 * 1024 + 10];
    let r = post("/api/v1/playbooks/echo/runs", big)
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 413);
    let e: Value = r.json().await.expect("json");
    assert!(
        e["error"].as_str().unwrap_or("").contains("max_body_bytes"),
        "{e}"
    );

    let (s, e) = d.get("/api/v1/runs/does-not-exist").await;
    assert_eq!((s, e["error"].as_str().is_some()), (404, true));
    let (s, e) = d.get("/api/v1/runs?logs=true&status=done").await;
    assert_eq!(s, 400);
    assert!(
        e["error"].as_str().unwrap_or("").contains("timed_out"),
        "{e}"
    );
    let (s, _) = d.get("/api/v1/runs?logs=true&limit=0").await;
    assert_eq!(s, 400);
    let (s, e) = d.get("/api/v1/nothing-here").await;
    assert_eq!((s, e["error"].as_str().is_some()), (404, true));

    // The daemon is still fine after all that.
    let (s, run) = d.run_wait("echo", json!({})).await;
    assert_eq!((s, run["status"].as_str()), (200, Some("succeeded")));
}

#[tokio::test]
async fn tokens_authenticate_by_role() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("echo", ECHO);
    std::fs::write(ws.dir.path().join("viewer.token"), "view-secret\n").expect("token file");
    let extra = format!(
        "[[server.tokens]]\nname = \"oncall\"\ntoken_env = \"T_OP\"\nrole = \"operator\"\n\n\
         [[server.tokens]]\nname = \"grafana\"\ntoken_file = \"{}\"\nrole = \"viewer\"\n\n\
         [[server.tokens]]\nname = \"alertmanager\"\ntoken_env = \"T_IN\"\nrole = \"ingest\"\n",
        ws.dir.path().join("viewer.token").display()
    );
    let d = Daemon::start(
        &ws,
        &Options {
            bearer: None,
            serve_args: Vec::new(),
            extra_config: extra,
            env: vec![
                ("T_OP".into(), "op-secret".into()),
                ("T_IN".into(), "in-secret".into()),
            ],
        },
    );
    let trigger = |token: Option<&'static str>| {
        let mut req = d
            .client
            .post(d.url("/api/v1/playbooks/echo/runs?wait=true"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(trigger(None).await.expect("req").status().as_u16(), 401);
    assert_eq!(
        trigger(Some("wrong")).await.expect("req").status().as_u16(),
        401
    );
    let r = trigger(Some("view-secret")).await.expect("req");
    assert_eq!(r.status().as_u16(), 403);
    let e: Value = r.json().await.expect("json");
    assert!(
        e["error"].as_str().unwrap_or("").contains("operator"),
        "{e}"
    );
    assert_eq!(
        trigger(Some("in-secret"))
            .await
            .expect("req")
            .status()
            .as_u16(),
        403
    );
    let r = trigger(Some("op-secret")).await.expect("req");
    assert_eq!(r.status().as_u16(), 200);
    let run: Value = r.json().await.expect("json");
    assert_eq!(
        run["trigger"]["actor"], "oncall",
        "actor is the token's name"
    );

    let read = |token: &'static str| {
        d.client
            .get(d.url("/api/v1/runs"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        read("view-secret").await.expect("req").status().as_u16(),
        200
    );
    assert_eq!(read("op-secret").await.expect("req").status().as_u16(), 200);
    assert_eq!(read("in-secret").await.expect("req").status().as_u16(), 403);
    // Probes stay open for load balancers.
    assert_eq!(d.get("/healthz").await.0, 200);
    // Secrets never reach the log.
    let logs = d.logs();
    for secret in ["op-secret", "view-secret", "in-secret"] {
        assert!(!logs.contains(secret), "{secret} leaked into the log");
    }
}

#[tokio::test]
async fn refuses_public_listen_without_tokens() {
    let ws = Workspace::new(Db::Sqlite).await;
    let out = std::process::Command::new(crate::helpers::BIN)
        .args(["--config"])
        .arg(ws.config(""))
        .arg("serve")
        .env("RUNBOOKD_SERVER__LISTEN", "0.0.0.0:0")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0"), "{err}");
}

#[tokio::test]
async fn metrics_and_readiness() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("echo", ECHO);
    let d = Daemon::start(&ws, &Options::default());
    let (s, ready) = d.get("/readyz").await;
    assert_eq!((s, ready["checks"]["state"].as_str()), (200, Some("ok")));
    d.run_wait("echo", json!({})).await;
    // The counter is raised after the run's outcome is written.
    let counted = r#"runbookd_runs_total{playbook="echo",status="succeeded"} 1"#;
    let text = d.metrics_holding(counted, Duration::from_secs(5)).await;
    assert!(text.contains(counted), "{text}");
    assert!(text.contains("runbookd_playbooks_loaded 1"), "{text}");
}

#[tokio::test]
async fn a_tokenless_daemon_refuses_what_web_pages_send() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("echo", "fn run(event) { 1 }\n");
    let d = Daemon::start(&ws, &Options::default());
    let url = d.url("/api/v1/playbooks/echo/runs");
    // A cross-site form post: text/plain, foreign Origin.
    let r = d
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .header("origin", "https://evil.example")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    // The same without Origin (an old browser, a sandboxed frame): not JSON.
    let r = d
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 415);
    // DNS rebinding: evil.example resolving to 127.0.0.1 reads nothing.
    let r = d
        .client
        .get(d.url("/api/v1/runs"))
        .header("host", "evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 421);
    let (_, runs) = d.get("/api/v1/runs").await;
    assert_eq!(runs, serde_json::json!([]), "nothing ran");
    // curl keeps working: JSON, or a bodiless POST.
    let r = d
        .client
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    let r = d.client.post(&url).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test]
async fn readyz_names_each_configured_backend_that_does_not_answer() {
    let ws = Workspace::new(Db::Sqlite).await;
    let closed = crate::helpers::free_port();
    let down = Daemon::start(
        &ws,
        &Options {
            extra_config: format!(
                "[redis]\nurl = \"redis://127.0.0.1:{closed}\"\n[celery]\nbroker_url = \"redis://127.0.0.1:{closed}/1\"\n"
            ),
            ..Default::default()
        },
    );
    let (s, ready) = down.get("/readyz").await;
    assert_eq!(s, 503, "{ready}");
    let failing: Vec<&str> = ready["failing"]
        .as_array()
        .expect("failing")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(failing.contains(&"breaker:stripe"), "{ready}");
    assert!(failing.contains(&"celery_broker"), "{ready}");
    assert_eq!(ready["checks"]["state"], "ok");
    drop(down);
    let redis = crate::helpers::redis_url();
    let up = Daemon::start(
        &ws,
        &Options {
            extra_config: format!(
                "[redis]\nurl = \"{redis}\"\n[celery]\nbroker_url = \"{redis}/1\"\n"
            ),
            ..Default::default()
        },
    );
    let (s, ready) = up.get("/readyz").await;
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["checks"]["breaker:stripe"], "ok", "{ready}");
    assert_eq!(ready["checks"]["celery_broker"], "ok", "{ready}");
}

#[tokio::test]
async fn slow_clients_cannot_hold_a_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ws = Workspace::new(Db::Sqlite).await;
    let d = Daemon::start(
        &ws,
        &Options {
            env: vec![
                (
                    "RUNBOOKD_SERVER__HEADER_READ_TIMEOUT".into(),
                    "500ms".into(),
                ),
                (
                    "RUNBOOKD_SERVER__REQUEST_BODY_TIMEOUT".into(),
                    "500ms".into(),
                ),
            ],
            ..Default::default()
        },
    );
    // Headers that never end, then a body that never arrives: each connection is answered
    // or closed within the configured time, not held.
    let cases: [&[u8]; 2] = [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        b"POST /api/v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    ];
    for partial in cases {
        let mut conn = tokio::net::TcpStream::connect(d.addr)
            .await
            .expect("connect");
        conn.write_all(partial).await.expect("write");
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection still held after 5 s");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "held for {:?}",
            started.elapsed()
        );
    }
    let (s, _) = d.get("/healthz").await;
    assert_eq!(s, 200, "still serving");
}

#[tokio::test]
async fn a_body_is_an_object_not_an_array_of_its_fields() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("hello", "fn run(event) { 1 }");
    let d = Daemon::start(&ws, &Options::default());
    // serde would read `["why"]` as a resolve body's comment, `[{}, true]` as a trigger's
    // params and dry run: refused, naming what a body is.
    for (path, body) in [
        (
            "/api/v1/incidents/01a25038-0000-7000-8000-000000000000/resolve",
            r#"["why"]"#,
        ),
        ("/api/v1/playbooks/hello/runs", r#"[{}, true]"#),
        ("/api/v1/breakers/stripe/reset", r#""dry""#),
    ] {
        let resp = d
            .client
            .post(d.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 400, "{path} {body}: {text}");
        assert!(text.contains("expected a JSON object"), "{path}: {text}");
    }
    // An object, or nothing, still is one.
    let (status, _) = d.run_wait("hello", json!({})).await;
    assert_eq!(status, 200);
    assert!(d
        .get("/api/v1/runs")
        .await
        .1
        .as_array()
        .is_some_and(|r| r.len() == 1));
}
