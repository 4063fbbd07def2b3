//! The CLI: `check`, `run` and `test`.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{Db, Workspace, BIN};

#[tokio::test]
async fn check_prints_path_line_col_and_exits_1() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("good", "fn run(event) { 1 }\n");
    ws.write_playbook("bad", "fn run(event) {\n  let = 3;\n}\n");
    ws.write_playbook("no_entry", "fn other() { 1 }\n");
    ws.write_playbook(
        "bad_trigger",
        "fn triggers() { [#{ cron: \"every day\" }] }\nfn run(e) { 1 }\n",
    );
    let out = Command::new(BIN)
        .arg("check")
        .arg(ws.playbooks())
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bad = format!("{}:2:", ws.playbooks().join("bad.rhai").display());
    assert!(stdout.lines().any(|l| l.starts_with(&bad)), "{stdout}");
    assert!(stdout.contains("no entry point"), "{stdout}");
    assert!(stdout.contains("every day"), "{stdout}");
    assert_eq!(
        stdout.lines().count(),
        3,
        "one line per broken playbook: {stdout}"
    );

    std::fs::remove_file(ws.playbooks().join("bad.rhai")).expect("rm");
    std::fs::remove_file(ws.playbooks().join("no_entry.rhai")).expect("rm");
    std::fs::remove_file(ws.playbooks().join("bad_trigger.rhai")).expect("rm");
    let out = Command::new(BIN)
        .arg("check")
        .arg(ws.playbooks())
        .output()
        .expect("check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn shipped_playbooks_compile_and_their_tests_pass() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks");
    let out = Command::new(BIN)
        .args(["check", "--with-tests"])
        .arg(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed, 0 failed") && !summary.starts_with("0 passed"),
        "{stdout}"
    );
}

const FLAKY_BREAKER: &str = r#"
fn run(event) {
    let b = breaker("stripe");
    log(`breaker is ${b.state}`);
    if b.state != "closed" { b.reset(); }
    b.state
}
"#;

#[tokio::test]
async fn test_reports_where_what_differed_and_the_playbook_log() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("fix_breaker", FLAKY_BREAKER);
    std::fs::create_dir(ws.playbooks().join("tests")).expect("mkdir");
    std::fs::write(
        ws.playbooks().join("tests/fix_breaker.rhai"),
        "fn test_resets_an_open_breaker() {
    let w = world();
    w.open_breaker(100);
             let r = w.run(\"fix_breaker\");
    assert_eq(w.breaker(), \"closed\");
}

         fn test_wrong_expectation() {
    let w = world();
    w.open_breaker(100);
             let r = w.run(\"fix_breaker\");
    assert_eq(r.result, \"open\", \"what the run returned\");
}

         fn helper_not_a_test() { assert(false); }
",
    )
    .expect("write test");
    let out = Command::new(BIN)
        .arg("test")
        .arg(ws.playbooks())
        .env_remove("RUST_LOG")
        .output()
        .expect("test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ok    fix_breaker::test_resets_an_open_breaker"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  fix_breaker::test_wrong_expectation"),
        "{stdout}"
    );
    let at = format!(
        "{}:12:5:",
        ws.playbooks().join("tests/fix_breaker.rhai").display()
    );
    assert!(stdout.contains(&at), "where it failed: {stdout}");
    assert!(
        stdout.contains("what the run returned: expected \"open\", got \"closed\""),
        "what differed: {stdout}"
    );
    assert!(
        stdout.contains("| fix_breaker (manual fix_breaker) succeeded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("|   breaker is half_open"),
        "the playbook's log: {stdout}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("1 passed, 1 failed"),
        "{stdout}"
    );
}

#[tokio::test]
async fn run_prints_the_run_as_json_and_sets_exit_code() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("sum", "fn run(event) { event.params.a + event.params.b }\n");
    ws.write_playbook("boom", "fn run(event) {\n  throw \"no\";\n}\n");
    let config = ws.config("");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args([
            "run",
            "sum",
            "--param",
            "a=2",
            "--param",
            "b=40",
            "--dry-run",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).expect("run JSON on stdout");
    assert_eq!(run["result"], 42);
    assert_eq!(run["dry_run"], true);
    assert_eq!(run["trigger"]["name"], "cli");

    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["run", "boom"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let run: Value = serde_json::from_slice(&out.stdout).expect("run JSON on stdout");
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["line"], 2);

    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["run", "sum", "--param", "novalue"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key=value"));
}

#[test]
fn bad_config_is_rejected_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[playbooks]\nmax_concurent_runs = 4\n").expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_concurent_runs"), "{err}");
}

#[tokio::test]
async fn test_files_import_only_inside_the_playbook_directory() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("fix_breaker", FLAKY_BREAKER);
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("evil.rhai"), "fn f() { 1 }").expect("write");
    std::fs::create_dir_all(ws.playbooks().join("tests")).expect("mkdir");
    std::fs::create_dir_all(ws.playbooks().join("lib")).expect("mkdir");
    std::fs::write(
        ws.playbooks().join("lib/expect.rhai"),
        "fn open_for(w) { w.open_breaker(0); }",
    )
    .expect("write lib");
    std::fs::write(
        ws.playbooks().join("tests/imports.rhai"),
        "import \"lib/expect\" as x;\nfn test_a_helper_from_lib() { let w = world(); x::open_for(w); assert_eq(w.breaker(), \"open\"); }\n",
    )
    .expect("write test");
    std::fs::write(
        ws.playbooks().join("tests/outside.rhai"),
        format!(
            "import \"{}\" as evil;\nfn test_nothing() {{ }}\n",
            outside.path().join("evil").display()
        ),
    )
    .expect("write test");
    let out = Command::new(BIN)
        .arg("test")
        .arg(ws.playbooks())
        .env_remove("RUST_LOG")
        .output()
        .expect("test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("ok    imports::test_a_helper_from_lib"),
        "a module inside the playbook directory imports: {stdout}{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("imports are paths inside the playbook directory"),
        "an absolute import is refused with the reason: {stdout}{stderr}"
    );
}

/// `runbookd ARGS` from `cwd` with only PATH and `env` set: (exit code, stdout + stderr).
fn runbookd(cwd: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("runbookd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn check_refuses_what_serve_would_refuse_naming_each_key_once() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("good", "fn run(event) { 1 }\n");
    let dir = ws.dir.path();
    std::fs::write(
        dir.join("escalation.toml"),
        "[[levels]]\nname = \"L1\"\ncondition = 'age > 1.0'\nchannels = [\"pay\"]\nplaybook = \"missing_playbook\"\n",
    )
    .expect("table");
    std::fs::write(
        dir.join("runbookd.toml"),
        "[playbooks]\ndir = \"playbooks\"\n\n\
         [[server.tokens]]\nname = \"am\"\ntoken_file = \"tokens/missing\"\nrole = \"ingest\"\n\n\
         [channels.pay]\ntype = \"slack\"\nurl_env = \"RUNBOOKD_TEST_UNSET_SLACK_URL\"\n\n\
         [escalation]\nfile = \"escalation.toml\"\n",
    )
    .expect("config");
    let (code, out) = runbookd(dir, &["--config", "runbookd.toml", "check"], &[]);
    assert_eq!(code, Some(2), "{out}");
    for expected in [
        "config key `server.tokens[0] (am)`: cannot read tokens/missing",
        "environment variable RUNBOOKD_TEST_UNSET_SLACK_URL: channels.pay.url",
        "escalation level L1 runs playbook `missing_playbook`",
        "3 problem(s)",
    ] {
        assert!(out.contains(expected), "`{expected}` in:\n{out}");
    }
    assert_eq!(
        out.matches("server.tokens[0]").count(),
        1,
        "key once: {out}"
    );
    assert_eq!(out.matches("os error 2").count(), 1, "cause once: {out}");

    // Fixed, it passes; serve's loopback rule is checked too.
    std::fs::create_dir(dir.join("tokens")).expect("mkdir");
    std::fs::write(dir.join("tokens/missing"), "t0ken\n").expect("token");
    std::fs::write(
        dir.join("escalation.toml"),
        "[[levels]]\nname = \"L1\"\ncondition = 'age > 1.0'\nchannels = [\"pay\"]\nplaybook = \"good\"\n",
    )
    .expect("table");
    let env = [("RUNBOOKD_TEST_UNSET_SLACK_URL", "https://hooks.slack.com/x")];
    let (code, out) = runbookd(dir, &["--config", "runbookd.toml", "check"], &env);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = runbookd(
        dir,
        &["check"],
        &[("RUNBOOKD_SERVER__LISTEN", "0.0.0.0:8765")],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("config key `server.listen`"), "{out}");

    // What serve starts without but cannot do: a warning, exit 0.
    let (code, out) = runbookd(
        dir,
        &["--config", "runbookd.toml", "check"],
        &[env[0], ("RUNBOOKD_STATUSPAGE__PAGE_ID", "kctbh9vrtdwd")],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: environment variable STATUSPAGE_API_KEY: statuspage.api_key"),
        "{out}"
    );
}

#[tokio::test]
async fn every_subcommand_that_loads_playbooks_takes_playbooks_dir() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("hello", "fn run(event) { 42 }\n");
    std::fs::create_dir(ws.playbooks().join("tests")).expect("mkdir");
    std::fs::write(
        ws.playbooks().join("tests/hello.rhai"),
        "fn test_it_answers() { let w = world(); assert_eq(w.run(\"hello\").result, 42); }\n",
    )
    .expect("test file");
    let cwd = tempfile::tempdir().expect("cwd");
    let pb = ws.playbooks().display().to_string();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/scenarios/demo.toml");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks");
    for args in [
        vec!["check", "--playbooks", &pb],
        vec!["check", &pb],
        vec!["test", "--playbooks", &pb],
        vec!["test", &pb],
        vec!["run", "hello", "--playbooks", &pb],
        vec!["simulate", demo, "--playbooks", shipped],
        vec!["simulate", demo, "--dir", shipped],
    ] {
        let (code, out) = runbookd(cwd.path(), &args, &[]);
        assert_eq!(code, Some(0), "{args:?}: {out}");
    }
    let (code, out) = runbookd(cwd.path(), &["check", &pb, "--playbooks", &pb], &[]);
    assert_eq!(code, Some(2), "one or the other: {out}");

    // No directory: the message says which setting named it and how to name another.
    let (code, out) = runbookd(cwd.path(), &["check"], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("playbook directory playbooks ([playbooks] dir, the default)")
            && out.contains("--playbooks DIR"),
        "{out}"
    );
    for args in [
        vec!["run", "hello", "--playbooks", "nowhere"],
        vec!["serve", "--playbooks", "nowhere"],
    ] {
        let (code, out) = runbookd(cwd.path(), &args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains("(named by --playbooks)"), "{args:?}: {out}");
    }
}
