//! Replay (docs/replay.md): the outage playbook runs against real Redis (its breaker open)
//! and the fake Stripe; its recording holds what it read; `runbookd replay` plays it again
//! offline — Redis, Stripe and the payments database out of reach — against the same
//! playbook (no difference), a version that would not reset (the missing reset), one that
//! reads something new (named), and as a saved test that `runbookd test` runs.

use std::{path::Path, process::Command};

use serde_json::{json, Value};

use crate::{
    fake_stripe::GOOD_KEY,
    helpers::{Daemon, BIN},
    outage::{alert_now, finished_run, post_alert, Debtflow},
    remote_cli::Out,
};

/// Planted where a read answers it: neither may reach a recording.
const PLANTED_KEY: &str = "sk_live_PLANTEDreplay0123456789";
const PLANTED_CARD: &str = "4242 4242 4242 4242";

/// The outage run of a stuck breaker, Stripe healthy (its status page quoting a key and a
/// card number), recorded; its recording as the API serves it.
async fn recorded_outage(w: &Debtflow, d: &Daemon) -> Value {
    w.open_breaker(100.0).await;
    w.stripe.intent("pi_paid", "succeeded", "ignored");
    w.app.payment("pending", 2400, Some("pi_paid")).await;
    w.stripe.behave(|b| {
        b.status_page = Some((
            200,
            json!({"status": {"indicator": "none",
                "description": format!("All Systems Operational (ops key {PLANTED_KEY}, test card {PLANTED_CARD})")}})
            .to_string(),
        ))
    });
    post_alert(d, &alert_now("PaymentProcessorDown", "fp-replay", "firing")).await;
    let run = finished_run(d, "payment_processor_outage", 1).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let id = run["id"].as_str().expect("id");
    let (status, recording) = d.get(&format!("/api/v1/runs/{id}/recording")).await;
    assert_eq!(status, 200, "{recording}");
    recording
}

/// A configuration for replays with nothing real reachable: Redis, Stripe and the payments
/// database on ports nobody listens on, the on-call channel a dead URL; the workspace's
/// escalation table.
fn offline_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("offline.toml");
    std::fs::write(
        &path,
        format!("[escalation]\nfile = \"{}\"\ninterval = \"1s\"\n\n", dir.join("escalation.toml").display())
            + "[redis]\nurl = \"redis://127.0.0.1:1\"\n\n[breakers.stripe]\npreset = \"django\"\n\n\
         [stripe]\napi_base = \"http://127.0.0.1:1\"\nstatus_url = \"http://127.0.0.1:1/status.json\"\n\n\
         [payments]\ndatabase_url = \"postgres://nobody@127.0.0.1:1/none\"\n\n\
         [channels.oncall]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/never\"\n",
    )
    .expect("offline config");
    path
}

/// The daemon's own configuration — the live Redis, the fake Stripe, the app's database,
/// the on-call sink — for replays that must not touch any of them.
fn live_config(w: &Debtflow) -> std::path::PathBuf {
    let path = w.ws.dir.path().join("live.toml");
    let escalation = w.ws.dir.path().join("escalation.toml");
    std::fs::write(
        &path,
        format!(
            "[escalation]\nfile = \"{}\"\n\n{}",
            escalation.display(),
            w.config("")
        ),
    )
    .expect("live config");
    path
}

fn replay(config: &Path, args: &[&str]) -> Out {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("replay")
        .args(args)
        .env_remove("RUNBOOKD_URL")
        .env_remove("RUNBOOKD_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("run runbookd replay");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A copy of the workspace's playbooks in `dir`, `edit` applied to the outage playbook.
fn playbooks_with(from: &Path, dir: &Path, edit: impl Fn(String) -> String) {
    crate::helpers::copy_dir(from, dir);
    let file = dir.join("payment_processor_outage.rhai");
    let source = std::fs::read_to_string(&file).expect("outage playbook");
    let edited = edit(source.clone());
    assert_ne!(edited, source, "the edit changed the playbook");
    std::fs::write(&file, edited).expect("write playbook");
}

fn names(recording: &Value) -> Vec<String> {
    recording["recording"]["reads"]
        .as_array()
        .expect("reads")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn an_outage_replays_offline_and_shows_what_a_new_version_would_do() {
    let w = Debtflow::new().await;
    let d = w.start("", GOOD_KEY);
    let recording = recorded_outage(&w, &d).await;
    let reads = names(&recording);
    for wanted in [
        "breaker",
        "stripe::status",
        "stripe::ping",
        "payments::counts",
        "setting",
        "budget",
        "reconcile",
    ] {
        assert!(
            reads.iter().any(|n| n == wanted),
            "{wanted} recorded: {reads:?}"
        );
    }
    let breaker = recording["recording"]["reads"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "breaker"))
        .expect("a breaker read");
    assert_eq!(breaker["args"], json!(["stripe"]));
    assert_eq!(breaker["answer"]["state"], "half_open", "{breaker}");
    let text = recording["recording"].to_string();
    for secret in [
        PLANTED_KEY,
        PLANTED_CARD,
        GOOD_KEY,
        "whsec_runbookd_test_secret",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} reached the recording: {text}"
        );
    }
    assert!(
        text.contains("[redacted]") && text.contains("4242 42** **** 4242"),
        "the planted values are there, redacted: {text}"
    );

    // The daemon and the world are out of reach from here on.
    let id = recording["run"]["id"].as_str().expect("id").to_string();
    let file = w.ws.dir.path().join("run.json");
    std::fs::write(&file, recording.to_string()).expect("export");
    // Fetched from the daemon while it runs: the same answer as the file.
    let fetched = replay(
        &offline_config(w.ws.dir.path()),
        &[
            &id,
            "--url",
            &d.url(""),
            "--playbooks",
            w.ws.playbooks().to_str().expect("utf-8"),
        ],
    );
    assert_eq!(fetched.code, Some(0), "{fetched}");
    drop(d);
    // The world as the recorded run did not leave it: a replay that acted on Redis, asked
    // Stripe or paged would show here.
    w.open_breaker(100.0).await;
    let stripe_requests = w.stripe.requests().len();
    let pages = w.oncall.received().len();
    let config = live_config(&w);
    let playbooks = w.ws.playbooks();
    let pb = playbooks.to_str().expect("utf-8");
    let file_arg = file.to_str().expect("utf-8");

    let same = replay(&config, &["--file", file_arg, "--playbooks", pb]);
    assert_eq!(same.code, Some(0), "{same}");
    assert!(
        same.stdout
            .contains("= breaker.reset breaker:stripe [done]"),
        "{same}"
    );
    assert!(same.stdout.contains("VERDICT: the same actions"), "{same}");
    let json_out = replay(&config, &["--file", file_arg, "--playbooks", pb, "--json"]);
    for secret in [PLANTED_KEY, PLANTED_CARD] {
        assert!(
            !same.stdout.contains(secret) && !json_out.stdout.contains(secret),
            "{secret} printed"
        );
    }
    let report: Value = serde_json::from_str(&json_out.stdout).expect("--json is JSON");
    assert_eq!(report["verdict"], "same", "{report}");
    assert_eq!(report["runs"][0]["findings"]["missing"], json!([]));

    // A version that would not reset: the reset is missing.
    let no_reset = w.ws.dir.path().join("no-reset");
    playbooks_with(&playbooks, &no_reset, |s| {
        s.replace("    b.reset();", "    // no reset")
    });
    let differs = replay(
        &config,
        &[
            "--file",
            file_arg,
            "--playbooks",
            no_reset.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(differs.code, Some(1), "{differs}");
    assert!(
        differs
            .stdout
            .contains("- breaker.reset breaker:stripe [done]"),
        "the recorded reset is shown as not taken: {differs}"
    );

    // A version that reads something the recorded run never read: named, exit 2.
    let new_read = w.ws.dir.path().join("new-read");
    playbooks_with(&playbooks, &new_read, |s| {
        s.replacen(
            "fn run(event) {",
            "fn run(event) {\n    let endpoints = stripe::webhook_endpoints();",
            1,
        )
    });
    let nr = new_read.to_str().expect("utf-8");
    let unrecorded = replay(&config, &["--file", file_arg, "--playbooks", nr]);
    assert_eq!(unrecorded.code, Some(2), "{unrecorded}");
    assert!(
        unrecorded.stdout.contains(
            "the new version asks `stripe::webhook_endpoints()`, which the recorded run never read"
        ),
        "{unrecorded}"
    );
    // --fill default answers it from the default simulated world instead.
    let filled = replay(
        &config,
        &["--file", file_arg, "--playbooks", nr, "--fill", "default"],
    );
    assert_eq!(filled.code, Some(0), "{filled}");

    assert_eq!(
        w.stripe.requests().len(),
        stripe_requests,
        "no replay asked Stripe"
    );
    assert_eq!(
        w.breaker_keys().await,
        3,
        "no replay reset the live breaker"
    );
    assert_eq!(w.oncall.received().len(), pages, "no replay paged");

    // Kept as a test: it passes against this version and fails against one that acts
    // differently.
    let saved = w.ws.dir.path().join("saved");
    playbooks_with(&playbooks, &saved, |s| {
        s.replacen("fn run(event) {", "fn run(event) {\n", 1)
    });
    let sv = saved.to_str().expect("utf-8");
    let save = replay(
        &config,
        &[
            "--file",
            file_arg,
            "--playbooks",
            sv,
            "--save-test",
            "stuck_breaker_outage",
        ],
    );
    assert_eq!(save.code, Some(0), "{save}");
    let kept = std::fs::read_to_string(saved.join("tests/recorded/stuck_breaker_outage.json"))
        .expect("recording saved");
    assert!(
        !kept.contains(PLANTED_KEY) && !kept.contains(PLANTED_CARD),
        "{kept}"
    );
    let test = |config: &Path| {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .args(["test", sv, "--filter", "stuck_breaker_outage"])
            .env_remove("RUST_LOG")
            .output()
            .expect("runbookd test");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = test(&config);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 passed"), "{out}");
    let file = saved.join("payment_processor_outage.rhai");
    let source = std::fs::read_to_string(&file).expect("playbook");
    std::fs::write(&file, source.replace("    b.reset();", "    // no reset")).expect("edit");
    let (code, out) = test(&config);
    assert_eq!(
        code,
        Some(1),
        "the saved test holds the playbook to the recorded reset: {out}"
    );
    assert!(out.contains("breaker.reset"), "{out}");
}

#[tokio::test]
async fn a_recording_past_its_cap_is_cut_and_replays_up_to_the_cut() {
    let w = Debtflow::new().await;
    let mut opts = w.options("", GOOD_KEY);
    // [playbooks] is written by the workspace: the environment sets the cap.
    opts.env.push((
        "RUNBOOKD_PLAYBOOKS__MAX_RECORDING_BYTES".into(),
        "6000".into(),
    ));
    let d = Daemon::start(&w.ws, &opts);
    let recording = recorded_outage(&w, &d).await;
    let cut = &recording["recording"]["cut"];
    assert!(cut.is_object(), "cut with a marker: {recording}");
    assert!(cut["omitted"].as_u64().unwrap_or(0) > 0, "{cut}");
    assert!(
        cut["why"]
            .as_str()
            .unwrap_or("")
            .contains("max_recording_bytes = 6000"),
        "{cut}"
    );
    let kept = names(&recording).len();
    assert_eq!(cut["after_reads"].as_u64(), Some(kept as u64), "{cut}");
    let bytes = recording["recording"]["reads"].to_string().len();
    assert!(bytes <= 6000 + kept + 2, "{bytes} bytes kept");
    drop(d);
    let file = w.ws.dir.path().join("cut.json");
    std::fs::write(&file, recording.to_string()).expect("export");
    let out = replay(
        &offline_config(w.ws.dir.path()),
        &[
            "--file",
            file.to_str().expect("utf-8"),
            "--playbooks",
            w.ws.playbooks().to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.stdout.contains("the replay stopped at the cut"),
        "{out}"
    );
    assert!(
        cut["actions_before"].as_u64().unwrap_or(0) >= 1
            && out.stdout.contains("= breaker.reset breaker:stripe [done]"),
        "the reset came before the cut and replays: {out}"
    );
    assert_eq!(
        out.code,
        Some(0),
        "the actions before the cut are the same: {out}"
    );
    // A read the recording lacks before its cut is a new read, not the cut.
    let new_read = w.ws.dir.path().join("new-read");
    playbooks_with(&w.ws.playbooks(), &new_read, |s| {
        s.replacen(
            "fn run(event) {",
            "fn run(event) {\n    let endpoints = stripe::webhook_endpoints();",
            1,
        )
    });
    let out = replay(
        &offline_config(w.ws.dir.path()),
        &[
            "--file",
            file.to_str().expect("utf-8"),
            "--playbooks",
            new_read.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stdout.contains("`stripe::webhook_endpoints()`"),
        "{out}"
    );
}

#[tokio::test]
async fn an_incidents_runs_replay_in_order_on_one_clock() {
    let w = Debtflow::new().await;
    let d = w.start("", GOOD_KEY);
    w.open_breaker(100.0).await;
    w.stripe.intent("pi_paid", "succeeded", "ignored");
    w.app.payment("pending", 2400, Some("pi_paid")).await;
    post_alert(
        &d,
        &alert_now("PaymentProcessorDown", "fp-incident", "firing"),
    )
    .await;
    let firing = finished_run(&d, "payment_processor_outage", 1).await;
    post_alert(
        &d,
        &alert_now("PaymentProcessorDown", "fp-incident", "resolved"),
    )
    .await;
    let resolved = finished_run(&d, "payment_processor_outage", 2).await;
    assert_eq!(resolved["result"]["resolved"], true, "{resolved}");
    let incident = firing["event"]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let config = offline_config(w.ws.dir.path());
    let playbooks = w.ws.playbooks();
    let url = d.url("");
    let out = replay(
        &config,
        &[
            "--incident",
            &incident,
            "--url",
            &url,
            "--playbooks",
            playbooks.to_str().expect("utf-8"),
            "--json",
        ],
    );
    assert_eq!(out.code, Some(0), "{out}");
    let report: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let runs = report["runs"].as_array().expect("runs");
    let recorded: Vec<&str> = runs
        .iter()
        .map(|r| r["recorded"]["run"]["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        recorded,
        [
            firing["id"].as_str().unwrap_or(""),
            resolved["id"].as_str().unwrap_or("")
        ],
        "oldest first"
    );
    // One clock: the second run started when it did, after the first.
    let started = |r: &Value| r["replay"]["started_at"].as_str().unwrap_or("").to_string();
    assert!(started(&runs[0]) < started(&runs[1]), "{report}");
    assert_eq!(runs[1]["replay"]["event"]["status"], "resolved");
    // The incident's two timelines: as it happened, as the replay's world wrote it.
    let lines = |side: &str| {
        report["timelines"][side]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0)
    };
    assert!(
        lines("recorded") > 0 && lines("replay") > 0,
        "{}",
        report["timelines"]
    );
    let text = |side: &str| report["timelines"][side].to_string();
    assert!(
        text("recorded").contains("resolved") && text("replay").contains("resolved"),
        "{}",
        report["timelines"]
    );
    // The version that would not reset differs in the first run only.
    let no_reset = w.ws.dir.path().join("no-reset");
    playbooks_with(&playbooks, &no_reset, |s| {
        s.replace("    b.reset();", "    // no reset")
    });
    let out = replay(
        &config,
        &[
            "--incident",
            &incident,
            "--url",
            &url,
            "--playbooks",
            no_reset.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout
            .contains("the replay acts differently in 1 of 2 run(s)"),
        "{out}"
    );
    // An incident that does not exist: exit 4.
    let out = replay(
        &config,
        &[
            "--incident",
            "01a25038-0000-7000-8000-000000000000",
            "--url",
            &url,
        ],
    );
    assert_eq!(out.code, Some(4), "{out}");
}

#[tokio::test]
async fn an_incident_replay_walks_the_current_escalation_table() {
    let w = Debtflow::new().await;
    // L1 runs the health probe once Stripe is degraded.
    let table = |playbook: &str| {
        format!(
            "[[levels]]\nname = \"L1\"\ncondition = 'facts.stripe_degraded == true'\nchannels = [\"oncall\"]\n{playbook}"
        )
    };
    let escalation = w.ws.dir.path().join("escalation.toml");
    std::fs::write(&escalation, table("playbook = \"health_probe\"\n")).expect("table");
    w.open_breaker(100.0).await;
    w.stripe.behave(|b| {
        b.status_page = Some((
            200,
            json!({"status": {"indicator": "major", "description": "Elevated API error rates"}})
                .to_string(),
        ))
    });
    let d = w.start("", GOOD_KEY);
    post_alert(&d, &alert_now("PaymentProcessorDown", "fp-walk", "firing")).await;
    let outage = finished_run(&d, "payment_processor_outage", 1).await;
    let probe = finished_run(&d, "health_probe", 1).await;
    assert_eq!(probe["trigger"]["kind"], "escalation", "{probe}");
    let incident = outage["event"]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let url = d.url("");
    let playbooks = w.ws.playbooks();
    let pb = playbooks.to_str().expect("utf-8");

    // The same table: the level's run is the table's to start, and it is the recorded one.
    let config = live_config(&w);
    let out = replay(
        &config,
        &[
            "--incident",
            &incident,
            "--url",
            &url,
            "--playbooks",
            pb,
            "--json",
        ],
    );
    assert_eq!(out.code, Some(0), "{out}");
    let report: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let level_run = report["runs"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["replay"]["playbook"] == "health_probe"))
        .unwrap_or_else(|| panic!("the table started the level's run: {report}"));
    assert_eq!(level_run["replay"]["trigger"]["kind"], "escalation");
    assert_eq!(
        level_run["recorded"]["run"]["id"], probe["id"],
        "it replays the recorded level run"
    );

    // A table whose L1 runs nothing: the recorded level run does not run.
    std::fs::write(&escalation, table("")).expect("table");
    let out = replay(
        &config,
        &["--incident", &incident, "--url", &url, "--playbooks", pb],
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout
            .contains("did not run (the current escalation table did not start it)"),
        "{out}"
    );
    assert!(out.stdout.contains("INCIDENT TIMELINE"), "{out}");
}
