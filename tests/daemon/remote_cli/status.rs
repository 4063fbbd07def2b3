//! `runbookd status` (readiness, replicas, approvals waiting), the exit code of a daemon
//! that cannot be asked, and shell completions.

use super::{cli, prefix, tokens, OP, VIEW};
use crate::helpers::{free_port, Daemon, Db, Workspace, BIN};

#[tokio::test]
async fn status_shows_readiness_replicas_and_what_waits_for_approval() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", crate::approvals::GATE);
    // A breaker whose Redis is not there: the daemon is not ready, and says why.
    let dead = format!(
        "[breakers.dead]\npreset = \"plain\"\nredis_url = \"redis://127.0.0.1:{}\"\n\n\
         [channels.approvers]\ntype = \"log\"\n\n[approvals]\nchannel = \"approvers\"\n",
        free_port()
    );
    let d = Daemon::start(&ws, &tokens(&prefix(), &dead));
    let url = d.url("");
    let out = cli(&url, Some(OP), &["trigger", "gate", "--wait", "--json"]);
    assert_eq!(out.code, Some(1), "awaiting approval is not success: {out}");
    assert_eq!(out.json()["status"], "awaiting_approval", "{out}");
    let (_, pending) = d.get("/api/v1/approvals?status=pending").await;
    let approval = pending[0]["id"].as_str().expect("approval").to_string();

    let out = cli(&url, Some(VIEW), &["status"]);
    assert_eq!(out.code, Some(1), "not ready is exit 1: {out}");
    for part in [
        "NOT READY",
        "breaker:dead",
        "replicas:",
        "waiting for approval:",
        approval.as_str(),
        "breaker.reset",
    ] {
        assert!(out.stdout.contains(part), "`{part}` missing: {out}");
    }
    let state = out
        .stdout
        .lines()
        .find(|l| l.starts_with("state "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(state.ends_with("ok"), "{out}");
    let (_, replicas) = d.get("/api/v1/replicas").await;
    let me = replicas[0]["name"].as_str().expect("replica name");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(me) && l.ends_with("yes")),
        "{out}"
    );
    let out = cli(&url, Some(VIEW), &["status", "--json"]);
    assert_eq!(out.code, Some(1), "{out}");
    let all = out.json();
    assert_eq!(all["ready"]["status"], "not ready", "{out}");
    assert_eq!(all["replicas"], replicas);
    assert_eq!(all["approvals"][0]["id"], approval.as_str(), "{out}");
    let out = cli(&url, Some(VIEW), &["approvals", "--json"]);
    assert_eq!(out.json()[0]["id"], approval.as_str(), "{out}");

    // The unreadable breaker is listed as unknown, with why; the readable one beside it.
    let out = cli(&url, Some(VIEW), &["breakers", "--json"]);
    let all = out.json();
    let dead = all
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "dead"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(dead["state"], "unknown", "{out}");
    assert!(dead["error"].is_string(), "{out}");
    assert!(
        all.as_array().is_some_and(|b| b
            .iter()
            .any(|b| b["name"] == "gate" && b["state"] == "closed")),
        "{out}"
    );

    // A daemon that cannot be asked is exit 3: a wrong token, no token, nothing listening.
    for token in [Some("wrong-secret"), None] {
        let out = cli(&url, token, &["runs"]);
        assert_eq!(out.code, Some(3), "{token:?}: {out}");
        assert!(
            out.stderr.contains("401") && out.stderr.contains("RUNBOOKD_TOKEN"),
            "{out}"
        );
    }
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    for args in [&["status"][..], &["runs"], &["trigger", "gate", "--wait"]] {
        let out = cli(&nowhere, Some(OP), args);
        assert_eq!(out.code, Some(3), "{args:?}: {out}");
        assert!(out.stderr.contains("cannot reach the daemon at"), "{out}");
    }
    // No secret on the command line: there is no flag for one.
    let out = cli(&url, None, &["runs", "--token", OP]);
    assert_eq!(out.code, Some(2), "{out}");
}

#[test]
fn completions_are_scripts_for_each_shell() {
    for (shell, mark) in [
        ("bash", "complete -F _runbookd"),
        ("zsh", "#compdef runbookd"),
        ("fish", "complete -c runbookd"),
    ] {
        let out = std::process::Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("run");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}: {script}");
        assert!(script.contains(mark), "{shell}: {script}");
        for verb in ["trigger", "incidents", "breakers", "completions"] {
            assert!(script.contains(verb), "{shell} lacks {verb}");
        }
    }
    if std::process::Command::new("bash")
        .arg("--version")
        .output()
        .is_ok()
    {
        // bash itself accepts the script and registers the completion.
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                &format!("source <({BIN} completions bash) && complete -p runbookd"),
            ])
            .output()
            .expect("bash");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("_runbookd"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
