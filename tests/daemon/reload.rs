//! Hot reload: edits, broken edits, deletions, new files.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{Daemon, Db, Options, Workspace};

fn answer(n: i64) -> String {
    format!("fn run(event) {{ {n} }}\n")
}

async fn playbook(d: &Daemon, name: &str) -> Value {
    d.get(&format!("/api/v1/playbooks/{name}")).await.1
}

#[tokio::test]
async fn edit_is_serving_within_two_seconds() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("answer", &answer(1));
    let d = Daemon::start(&ws, &Options::default());
    let v1 = playbook(&d, "answer").await["version"].clone();
    assert_eq!(d.run_wait("answer", json!({})).await.1["result"], 1);

    let written = Instant::now();
    ws.write_playbook("answer", &answer(2));
    let pb = d
        .poll("/api/v1/playbooks/answer", Duration::from_secs(2), |v| {
            v["version"] != v1
        })
        .await;
    assert_ne!(
        pb["version"], v1,
        "new version not serving 2 s after the edit"
    );
    assert!(written.elapsed() < Duration::from_secs(2));
    let (_, run) = d.run_wait("answer", json!({})).await;
    assert_eq!(run["result"], 2);
    assert_eq!(
        run["version"], pb["version"],
        "the run records the version it ran"
    );

    // A brand-new file appears too.
    ws.write_playbook("fresh", &answer(7));
    let pb = d
        .poll("/api/v1/playbooks/fresh", Duration::from_secs(2), |v| {
            v["version"].is_string()
        })
        .await;
    assert!(pb["version"].is_string(), "{pb}");
}

#[tokio::test]
async fn broken_edit_keeps_last_good_version_and_shows_error() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("answer", &answer(1));
    let d = Daemon::start(&ws, &Options::default());
    let good = playbook(&d, "answer").await["version"].clone();

    ws.write_playbook("answer", "fn run(event) {\n    let x = ;\n}\n");
    let pb = d
        .poll("/api/v1/playbooks/answer", Duration::from_secs(2), |v| {
            !v["error"].is_null()
        })
        .await;
    assert_eq!(pb["version"], good, "last good version keeps serving: {pb}");
    assert_eq!(pb["error"]["line"], 2, "{pb}");
    assert!(pb["error"]["column"].as_u64().is_some(), "{pb}");
    assert!(pb["error"]["path"]
        .as_str()
        .unwrap_or("")
        .ends_with("answer.rhai"));
    assert_eq!(d.run_wait("answer", json!({})).await.1["result"], 1);

    let metrics = d.metrics().await;
    assert!(
        metrics.contains(r#"runbookd_playbook_load_error{playbook="answer"} 1"#),
        "{metrics}"
    );
    assert!(d.logs().contains("playbook failed to compile"));

    // Fixing the file clears the error.
    ws.write_playbook("answer", &answer(3));
    let pb = d
        .poll("/api/v1/playbooks/answer", Duration::from_secs(2), |v| {
            v["error"].is_null()
        })
        .await;
    assert!(pb["error"].is_null(), "{pb}");
    assert_eq!(d.run_wait("answer", json!({})).await.1["result"], 3);
}

#[tokio::test]
async fn deleting_a_file_removes_the_playbook() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("answer", &answer(1));
    ws.write_playbook("other", &answer(2));
    let d = Daemon::start(&ws, &Options::default());
    std::fs::remove_file(ws.playbooks().join("answer.rhai")).expect("rm");
    let list = d
        .poll("/api/v1/playbooks", Duration::from_secs(2), |v| {
            v.as_array().map(Vec::len) == Some(1)
        })
        .await;
    assert_eq!(list[0]["name"], "other", "{list}");
    let (s, _) = d.run_wait("answer", json!({})).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_run_finishes_on_the_version_it_started_on() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("slow", "fn run(event) { sleep(1.0); \"v1\" }\n");
    let d = Daemon::start(&ws, &Options::default());
    let id = d.start_run("slow", json!({})).await;
    d.poll(&format!("/api/v1/runs/{id}"), Duration::from_secs(2), |v| {
        v["status"] == "running"
    })
    .await;
    ws.write_playbook("slow", "fn run(event) { \"v2\" }\n");
    let done = d
        .poll(&format!("/api/v1/runs/{id}"), Duration::from_secs(5), |v| {
            v["status"] == "succeeded"
        })
        .await;
    assert_eq!(done["result"], "v1", "{done}");
    let (_, next) = d.run_wait("slow", json!({})).await;
    assert_eq!(next["result"], "v2");
    assert_ne!(next["version"], done["version"]);
}

#[tokio::test]
async fn modules_are_imported_from_the_playbook_directory_only() {
    let ws = Workspace::new(Db::Sqlite).await;
    std::fs::create_dir(ws.playbooks().join("lib")).expect("lib dir");
    std::fs::write(
        ws.playbooks().join("lib/greet.rhai"),
        "fn hello(n) { `hello ${n}` }\n",
    )
    .expect("module");
    ws.write_playbook(
        "uses_lib",
        "import \"lib/greet\" as g;\nfn run(event) { g::hello(\"sre\") }\n",
    );
    ws.write_playbook(
        "escapes",
        "import \"../../etc/passwd\" as p;\nfn run(event) { 1 }\n",
    );
    let d = Daemon::start(&ws, &Options::default());
    assert_eq!(
        d.run_wait("uses_lib", json!({})).await.1["result"],
        "hello sre"
    );
    let pb = playbook(&d, "escapes").await;
    assert!(pb["version"].is_null(), "{pb}");
    assert!(
        pb["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("without `..`"),
        "{pb}"
    );

    // Editing the module gives the importing playbook a new version.
    let before = playbook(&d, "uses_lib").await["version"].clone();
    std::fs::write(
        ws.playbooks().join("lib/greet.rhai"),
        "fn hello(n) { `hi ${n}` }\n",
    )
    .expect("module");
    d.poll("/api/v1/playbooks/uses_lib", Duration::from_secs(2), |v| {
        v["version"] != before
    })
    .await;
    assert_eq!(
        d.run_wait("uses_lib", json!({})).await.1["result"],
        "hi sre"
    );
}

#[tokio::test]
async fn require_tests_refuses_an_edit_whose_tests_fail_until_they_pass() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("answer", &answer(1));
    std::fs::create_dir(ws.playbooks().join("tests")).expect("mkdir");
    let test = |want: i64| {
        format!(
            "fn test_answer() {{\n    let w = world();\n    assert_eq(w.run(\"answer\").result, {want});\n}}\n"
        )
    };
    std::fs::write(ws.playbooks().join("tests/answer.rhai"), test(1)).expect("test");
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: String::new(),
            env: vec![("RUNBOOKD_PLAYBOOKS__REQUIRE_TESTS".into(), "true".into())],
            ..Default::default()
        },
    );
    let good = playbook(&d, "answer").await["version"].clone();

    // An edit that breaks the test is refused; the last good version keeps serving.
    ws.write_playbook("answer", &answer(2));
    let pb = d
        .poll("/api/v1/playbooks/answer", Duration::from_secs(5), |v| {
            v["error"].is_object()
        })
        .await;
    assert_eq!(pb["version"], good, "{pb}");
    let why = pb["error"]["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("playbook tests fail") && why.contains("expected 1, got 2"),
        "{pb}"
    );
    assert_eq!(d.run_wait("answer", json!({})).await.1["result"], 1);

    // Fixing the test lets the edit in.
    std::fs::write(ws.playbooks().join("tests/answer.rhai"), test(2)).expect("test");
    let pb = d
        .poll("/api/v1/playbooks/answer", Duration::from_secs(5), |v| {
            v["version"] != good
        })
        .await;
    assert_ne!(pb["version"], good, "{pb}");
    assert_eq!(d.run_wait("answer", json!({})).await.1["result"], 2);
}

fn reload_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("runbookd_playbook_reload_duration_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_idle_daemon_does_not_reload() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.install_shipped_playbooks();
    let d = Daemon::start(&ws, &Options::default());
    // An edit reloads (the watcher works) ...
    ws.write_playbook("extra", &answer(1));
    let loaded = d
        .poll("/api/v1/playbooks", Duration::from_secs(3), |v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|p| p["name"] == "extra"))
        })
        .await;
    assert!(loaded
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["name"] == "extra")));
    let after_edit = reload_count(&d.metrics().await);
    // ... and then nothing changes: the reload's own reads of lib/*.rhai must not count.
    // (Absence needs a window: 2 s is twenty 100 ms debounce periods.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = reload_count(&d.metrics().await);
    assert_eq!(idle, after_edit, "reloads while idle");
}

#[tokio::test]
async fn a_symlink_loop_and_a_fifo_are_load_errors_not_hangs() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("fine", &answer(7));
    let lib = ws.playbooks().join("lib");
    std::fs::create_dir(&lib).expect("lib");
    std::os::unix::fs::symlink("..", lib.join("loop")).expect("symlink");
    let fifo = lib.join("pipe.rhai");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let started = Instant::now();
    let out = std::process::Command::new(crate::helpers::BIN)
        .arg("check")
        .arg(ws.playbooks())
        .output()
        .expect("check");
    assert!(started.elapsed() < Duration::from_secs(2), "check hung");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&lib.join("loop").display().to_string()),
        "{stdout}"
    );
    assert!(stdout.contains("loop"), "{stdout}");
    assert!(stdout.contains(&fifo.display().to_string()), "{stdout}");
    // The daemon starts and serves the good playbook.
    let d = Daemon::start(&ws, &Options::default());
    let (s, run) = d.run_wait("fine", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(run["result"], 7);
}

/// `[playbooks] require_tests` runs the shipped playbooks' tests inside the daemon: what
/// their simulated worlds log (breaker resets among it) is marked simulated, never read
/// like a real reset by someone searching the log.
#[tokio::test]
async fn the_test_worlds_of_require_tests_log_as_simulated() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.install_shipped_playbooks();
    let d = Daemon::start(
        &ws,
        &Options {
            env: vec![("RUNBOOKD_PLAYBOOKS__REQUIRE_TESTS".into(), "true".into())],
            ..Default::default()
        },
    );
    let lines: Vec<serde_json::Value> = d
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let resets: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("breaker.reset breaker:stripe: done"))
        })
        .collect();
    assert!(
        !resets.is_empty(),
        "the tests reset breakers in their worlds"
    );
    for r in &resets {
        assert_eq!(r["simulated"], "playbook tests", "unmarked: {r}");
    }
    // The daemon's own lines stay unmarked (this one is logged before it listens, so it is
    // in the log by the time the daemon has started).
    let own = lines
        .iter()
        .find(|v| v["fields"]["message"] == "replica lease taken")
        .expect("the daemon's own line");
    assert!(own.get("simulated").is_none(), "{own}");
}
