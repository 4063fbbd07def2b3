//! `runbookd trigger`, `runs`, `show`, `logs [--follow]` and `breakers` against the daemon.

use std::{
    io::{BufRead, BufReader, Read},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use redis::AsyncCommands;
use serde_json::json;

use super::{cli, command, prefix, tokens, OP, VIEW};
use crate::helpers::{redis, Daemon, Db, Workspace};

const GREET: &str = r#"
fn run(event) {
    log("hello " + event.params.who);
    if event.params.reset == true { breaker("gate").reset(); }
    #{ who: event.params.who, n: event.params.n ?? 0, dry_run: event.dry_run }
}
"#;

const BOOM: &str = "fn run(event) {\n  log(\"about to fail\");\n  throw \"no luck\";\n}\n";

/// Waits until the `gate` breaker is open (the test opens it in Redis), then logs.
const HELD: &str = r#"
fn run(event) {
    while breaker("gate").state != "open" { sleep(0.05); }
    log("released: the gate is open");
    "through"
}
"#;

#[tokio::test]
async fn trigger_runs_show_and_logs_drive_a_running_daemon() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("greet", GREET);
    ws.write_playbook("boom", BOOM);
    let d = Daemon::start(&ws, &tokens(&prefix(), ""));
    let url = d.url("");

    let out = cli(&url, Some(VIEW), &["status"]);
    assert_eq!(out.code, Some(0), "ready: {out}");
    assert!(
        out.stdout.contains(" ready") && out.stdout.contains("breaker:gate"),
        "{out}"
    );

    // --wait: exit 0 only when the run succeeded; --param values read as JSON when they are.
    let out = cli(
        &url,
        Some(OP),
        &[
            "trigger", "greet", "--param", "who=ops", "--param", "n=3", "--wait",
        ],
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.contains("status:   succeeded") && out.stdout.contains("hello ops"),
        "{out}"
    );
    let out = cli(
        &url,
        Some(OP),
        &[
            "trigger", "greet", "--param", "who=json", "--wait", "--json",
        ],
    );
    let greeted = out.json();
    assert_eq!(greeted["result"]["who"], "json", "{out}");
    let greet_id = greeted["id"].as_str().expect("id").to_string();
    let out = cli(&url, Some(OP), &["trigger", "boom", "--wait"]);
    assert_eq!(out.code, Some(1), "a failed run is exit 1: {out}");
    assert!(
        out.stdout.contains("no luck") && out.stdout.contains("(script)"),
        "{out}"
    );

    // Without --wait: the id alone on stdout, for `RUN=$(runbookd trigger …)`.
    let out = cli(
        &url,
        Some(OP),
        &[
            "trigger",
            "greet",
            "--dry-run",
            "--param",
            "who=plan",
            "--param",
            "reset=true",
        ],
    );
    assert_eq!(out.code, Some(0), "{out}");
    let planned = out.stdout.trim().to_string();
    let run = d
        .run_reaching(&planned, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(run["dry_run"], true, "{run}");
    assert_eq!(run["event"]["params"]["who"], "plan", "{run}");
    assert_eq!(run["result"]["dry_run"], true, "{run}");

    // `runs` filters on the daemon: a table, or the API's JSON.
    let out = cli(&url, Some(VIEW), &["runs", "--playbook", "greet"]);
    assert_eq!(out.code, Some(0), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("STATUS"),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "header and three greet runs: {out}");
    assert!(
        lines[1].starts_with(&planned) && lines[1].contains("yes"),
        "{out}"
    );
    let status_col = lines[0].find("STATUS").expect("column");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l[status_col..].starts_with("succeeded")),
        "aligned: {out}"
    );
    let out = cli(&url, Some(VIEW), &["runs", "--status", "failed", "--json"]);
    let failed = out.json();
    let failed = failed.as_array().expect("array");
    assert_eq!(failed.len(), 1, "{out}");
    assert_eq!(failed[0]["playbook"], "boom");
    let boom_id = failed[0]["id"].as_str().expect("id").to_string();
    let out = cli(&url, Some(VIEW), &["runs", "--limit", "1", "--json"]);
    assert_eq!(out.json().as_array().map(Vec::len), Some(1), "{out}");

    // `show`: record, attempts, actions, log; `logs`: the log.
    let out = cli(&url, Some(VIEW), &["show", &boom_id]);
    assert_eq!(out.code, Some(0), "{out}");
    for part in [
        "playbook: boom",
        "status:   failed",
        "attempts:",
        "OUTCOME",
        "actions:",
        "log:",
        "about to fail",
        "no luck",
    ] {
        assert!(out.stdout.contains(part), "`{part}` missing: {out}");
    }
    let out = cli(&url, Some(VIEW), &["show", &planned]);
    assert!(out.stdout.contains("actions (planned: dry run):"), "{out}");
    let action = out
        .stdout
        .lines()
        .find(|l| l.contains("breaker.reset"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(action.contains("breaker:gate"), "{out}");
    let out = cli(&url, Some(VIEW), &["show", &greet_id, "--json"]);
    let (_, api) = d.get(&format!("/api/v1/runs/{greet_id}")).await;
    assert_eq!(out.json(), api, "--json is the API's answer unchanged");
    let out = cli(&url, Some(VIEW), &["logs", &greet_id]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.contains("info") && out.stdout.contains("hello json"),
        "{out}"
    );
    // A reader that goes away (`| head`) ends the output, not the command's exit code.
    let mut child = command(&url, Some(VIEW), &["logs", &boom_id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let gone = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(gone.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = cli(&url, Some(VIEW), &["logs", &boom_id, "--follow"]);
    assert_eq!(
        out.code,
        Some(1),
        "following a failed run: its outcome: {out}"
    );
    assert!(out.stdout.contains("about to fail"), "{out}");

    // Not found is 4; a bad value is a usage error, 2; a viewer may not trigger: 3.
    let nobody = uuid::Uuid::now_v7().to_string();
    for args in [
        vec!["show", nobody.as_str()],
        vec!["logs", nobody.as_str(), "--follow"],
    ] {
        let out = cli(&url, Some(VIEW), &args);
        assert_eq!(out.code, Some(4), "{args:?}: {out}");
        assert!(out.stderr.contains("404"), "{out}");
    }
    let out = cli(&url, Some(OP), &["trigger", "nope", "--wait"]);
    assert_eq!(out.code, Some(4), "an unknown playbook: {out}");
    let out = cli(&url, Some(VIEW), &["runs", "--status", "bogus"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stderr.contains("awaiting_approval"),
        "the daemon's reason: {out}"
    );
    let out = cli(&url, Some(VIEW), &["show", "../playbooks"]);
    assert_eq!(out.code, Some(2), "{out}");
    let out = cli(&url, Some(OP), &["trigger", "greet", "--param", "novalue"]);
    assert_eq!(out.code, Some(2), "{out}");
    let out = cli(&url, Some(VIEW), &["trigger", "greet"]);
    assert_eq!(out.code, Some(3), "{out}");
    assert!(out.stderr.contains("403"), "{out}");
}

#[tokio::test]
async fn logs_follow_a_run_until_it_ends_and_breakers_show_what_redis_holds() {
    let stem = prefix();
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("held", HELD);
    let d = Daemon::start(&ws, &tokens(&stem, ""));
    let url = d.url("");

    let out = cli(&url, Some(VIEW), &["breakers"]);
    assert_eq!(out.code, Some(0), "{out}");
    let gate = out
        .stdout
        .lines()
        .find(|l| l.starts_with("gate "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(gate.contains("closed"), "{out}");

    let id = d.start_run("held", json!({})).await;
    let mut child = command(&url, Some(VIEW), &["logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The CLI says the run is running (from the daemon's answer or its event stream)…
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l == &format!("run {id}: running"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no `running` from the CLI: {seen:?}"),
        }
    }
    // …and is still following: the run waits for the gate.
    assert!(child.try_wait().expect("try_wait").is_none(), "{seen:?}");
    let (_, run) = d.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["status"], "running", "{run}");

    // Opened where the app's workers would open it: the run ends, and the CLI with it.
    let mut r = redis().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let _: () = r
        .set(format!("{stem}:gate:failures"), "5")
        .await
        .expect("set");
    let _: () = r
        .set(format!("{stem}:gate:last_failure"), now.to_string())
        .await
        .expect("set");
    let _: () = r
        .set(format!("{stem}:gate:state"), "open")
        .await
        .expect("set");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the CLI did not end with the run"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    seen.extend(rx.try_iter());
    assert_eq!(status.code(), Some(0), "{stdout} {seen:?}");
    assert!(stdout.contains("released: the gate is open"), "{stdout}");
    assert!(seen.contains(&format!("run {id}: succeeded")), "{seen:?}");
    let (_, run) = d.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    let out = cli(&url, Some(VIEW), &["breakers"]);
    let gate = out
        .stdout
        .lines()
        .find(|l| l.starts_with("gate "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(gate.contains("open") && gate.contains(" 5 "), "{out}");
    let out = cli(&url, Some(VIEW), &["breakers", "--json"]);
    let all = out.json();
    assert_eq!(all[0]["name"], "gate", "{out}");
    assert_eq!(all[0]["state"], "open", "{out}");
    let (_, one) = d.get("/api/v1/breakers/gate").await;
    assert_eq!(one["failures"], all[0]["failures"]);
}
