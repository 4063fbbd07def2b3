//! Approvals against the real daemon: a playbook asks, humans decide through the API, the
//! follow-up run does exactly what was approved, once. Self-approval, viewers, a second
//! click, denial, expiry on the real clock, the two-person rule, a restart between request
//! and decision, and two replicas deciding at the same moment.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Daemon, Db, Options, Workspace};

/// Asks to reset the breaker; does it (here: says so) only when approved, and reports what
/// a decision said.
pub const GATE: &str = r#"
fn run(event) {
    if event.kind == "approval" && event.approval.decision != "approved" {
        return #{ did: "nothing", decision: event.approval.decision };
    }
    let ask = #{ action: "breaker.reset", target: "stripe", reason: "Stripe healthy, breaker stuck" };
    if "expires" in event.params { ask.expires = event.params.expires; }
    if !approved(ask) {
        return #{ did: "asked" };
    }
    #{ did: "reset" }
}
"#;

/// Operators alice, bob and dave; viewer carol; approvals announced on a log channel.
pub fn with_tokens(extra: &str) -> Options {
    tokens_with("[channels.approvers]\ntype = \"log\"\n", extra)
}

/// [`with_tokens`] with the `approvers` channel defined by `channel` and `extra` appended
/// to `[approvals]`.
pub fn tokens_with(channel: &str, extra: &str) -> Options {
    Options {
        bearer: Some("alice-secret".into()),
        extra_config: format!(
            "[[server.tokens]]\nname = \"alice\"\ntoken_env = \"T_ALICE\"\nrole = \"operator\"\n\n\
             [[server.tokens]]\nname = \"bob\"\ntoken_env = \"T_BOB\"\nrole = \"operator\"\n\n\
             [[server.tokens]]\nname = \"dave\"\ntoken_env = \"T_DAVE\"\nrole = \"operator\"\n\n\
             [[server.tokens]]\nname = \"carol\"\ntoken_env = \"T_CAROL\"\nrole = \"viewer\"\n\n\
             {channel}\n[approvals]\nchannel = \"approvers\"\n{extra}"
        ),
        env: ["alice", "bob", "dave", "carol"]
            .map(|n| (format!("T_{}", n.to_uppercase()), format!("{n}-secret")))
            .to_vec(),
        serve_args: Vec::new(),
    }
}

/// `who` decides `id` (`approve` or `deny`): status and answer.
async fn decide(d: &Daemon, who: &str, id: &str, decision: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(d.url(&format!("/api/v1/approvals/{id}/{decision}")))
        .bearer_auth(format!("{who}-secret"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn pending(d: &Daemon) -> Vec<Value> {
    let (s, v) = d.get("/api/v1/approvals?status=pending").await;
    assert_eq!(s, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

pub async fn finished(d: &Daemon, run: &str) -> Value {
    d.poll(
        &format!("/api/v1/runs/{run}"),
        Duration::from_secs(15),
        |v| !matches!(v["status"].as_str(), Some("queued" | "running") | None),
    )
    .await
}

#[tokio::test]
async fn an_approved_action_runs_once_in_the_follow_up_run_and_nobody_approves_their_own() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let d = Daemon::start(&ws, &with_tokens(""));
    let (s, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    assert_eq!(run["result"]["did"], "asked");
    let asked = pending(&d).await;
    assert_eq!(asked.len(), 1, "{asked:?}");
    let a = &asked[0];
    let id = a["id"].as_str().expect("id").to_string();
    assert_eq!(a["requested_by"], "alice");
    assert_eq!(a["run"], run["id"]);
    assert_eq!(
        (a["action"].as_str(), a["target"].as_str()),
        (Some("breaker.reset"), Some("stripe"))
    );
    assert_eq!(a["required"], 1);
    // Asked on the approvals channel, with the commands to decide.
    let (_, notes) = d.get("/api/v1/notifications").await;
    let ask = notes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["kind"] == "approval").cloned())
        .expect("approval notification");
    assert_eq!(ask["channel"], "approvers");
    let text = ask["payload"]["text"].as_str().unwrap_or("");
    assert!(text.contains(&format!("runbookd approve {id}")), "{text}");
    // Asking again while it waits asks nothing new.
    let (_, again) = d.run_wait("gate", json!({})).await;
    assert_eq!(again["status"], "awaiting_approval");
    assert_eq!(pending(&d).await.len(), 1, "one request, not two");

    // The requester, a viewer: refused.
    let (s, e) = decide(&d, "alice", &id, "approve", json!({})).await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("may not approve"),
        "{e}"
    );
    assert_eq!(decide(&d, "carol", &id, "approve", json!({})).await.0, 403);
    // Unknown id: 404.
    assert_eq!(decide(&d, "bob", "nope", "approve", json!({})).await.0, 404);

    let (s, decided) = decide(
        &d,
        "bob",
        &id,
        "approve",
        json!({"comment": "checked Stripe"}),
    )
    .await;
    assert_eq!(s, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["decisions"][0]["by"], "bob");
    let follow_up = decided["follow_up_run"]
        .as_str()
        .expect("follow-up run")
        .to_string();
    // A second click decides nothing.
    assert_eq!(decide(&d, "dave", &id, "approve", json!({})).await.0, 409);
    assert_eq!(decide(&d, "bob", &id, "deny", json!({})).await.0, 409);

    let done = finished(&d, &follow_up).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["did"], "reset", "{done}");
    assert_eq!(done["trigger"]["kind"], "approval");
    assert_eq!(done["trigger"]["actor"], "bob");
    assert_eq!(done["event"]["approval"]["approver"], "bob");
    let (_, used) = d.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(used["status"], "used", "{used}");
    assert_eq!(used["used_by_run"], follow_up.as_str());

    // The grant is spent: the same request asks again.
    let (_, third) = d.run_wait("gate", json!({})).await;
    assert_eq!(third["result"]["did"], "asked", "{third}");
    let again = pending(&d).await;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0]["id"], id.as_str(), "a new request");

    // Every step is in the audit trail, by name.
    let (_, audit) = d.get("/api/v1/audit?limit=100").await;
    let entries: Vec<(String, String)> = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["target"] == format!("approval:{id}").as_str())
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").into(),
                e["actor"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    for want in [
        ("approval.request", "playbook:gate"),
        ("approval.approve", "bob"),
        ("approval.use", "playbook:gate"),
    ] {
        assert!(
            entries
                .iter()
                .any(|(a, b)| (a.as_str(), b.as_str()) == want),
            "{want:?} missing from {entries:?}"
        );
    }
}

#[tokio::test]
async fn a_denied_action_is_not_done_and_a_tokenless_daemon_asks_who_decides() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let d = Daemon::start(&ws, &Options::default());
    let (_, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    let post = |body: Value| {
        d.client
            .post(d.url(&format!("/api/v1/approvals/{id}/deny")))
            .json(&body)
            .send()
    };
    // Without tokens nobody is identified: the decider must say who they are, and the
    // requester (every manual run here is `local`) may not decide.
    let r = post(json!({})).await.expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let r = post(json!({"by": "local"})).await.expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let r = post(json!({"by": "erin", "comment": "Stripe still degraded"}))
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let decided: Value = r.json().await.expect("json");
    assert_eq!(decided["status"], "denied");
    let done = finished(&d, decided["follow_up_run"].as_str().expect("run")).await;
    assert_eq!(
        done["result"],
        json!({"did": "nothing", "decision": "denied"}),
        "{done}"
    );
    assert_eq!(
        done["event"]["approval"]["comment"],
        "Stripe still degraded"
    );
    assert_eq!(
        post(json!({"by": "frank"}))
            .await
            .expect("post")
            .status()
            .as_u16(),
        409
    );
}

#[tokio::test]
async fn a_request_nobody_decides_expires_and_its_incident_says_so() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "gate",
        &format!(
            "fn triggers() {{ [#{{ alert: \"PaymentProcessorDown\" }}] }}\n{}",
            GATE.replace(
                "if \"expires\" in event.params { ask.expires = event.params.expires; }",
                "ask.expires = \"1s\";"
            )
        ),
    );
    let d = Daemon::start(
        &ws,
        &Options {
            env: vec![("RUNBOOKD_ESCALATION__INTERVAL".into(), "200ms".into())],
            ..Default::default()
        },
    );
    let body = crate::alerts::notification(&[("PaymentProcessorDown", "fp-expiry", "firing")]);
    let (s, outcome) = crate::alerts::post(&d, &body).await;
    assert_eq!(s, 200, "{outcome}");
    let incident = outcome["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let asked = d
        .poll("/api/v1/approvals", Duration::from_secs(10), |v| {
            v.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let id = asked[0]["id"].as_str().expect("id").to_string();
    assert_eq!(asked[0]["incident"], incident.as_str());
    // On the real clock: the evaluator expires it after a second, and the playbook is told.
    let expired = d
        .poll(
            &format!("/api/v1/approvals/{id}"),
            Duration::from_secs(10),
            |v| v["status"] == "expired",
        )
        .await;
    assert_eq!(expired["status"], "expired", "{expired}");
    let runs = d
        .poll("/api/v1/runs?playbook=gate", Duration::from_secs(10), |v| {
            v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["trigger"]["kind"] == "approval" && r["status"] == "succeeded")
            })
        })
        .await;
    let follow_up = runs
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r["trigger"]["kind"] == "approval")
                .cloned()
        })
        .expect("follow-up run");
    assert_eq!(follow_up["result"]["decision"], "expired", "{follow_up}");
    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident}")).await;
    assert_eq!(inc["facts"]["approval_expired"], true, "{inc}");
    assert!(
        inc["timeline"].as_array().is_some_and(|t| t
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains("expired")))),
        "{inc}"
    );
    // Too late to decide.
    let r = d
        .client
        .post(d.url(&format!("/api/v1/approvals/{id}/approve")))
        .json(&json!({"by": "bob"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 409);
}

#[tokio::test]
async fn two_persons_must_approve_when_required_and_a_restart_loses_no_request() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let opts = with_tokens("required = 2\n");
    let mut d = Daemon::start(&ws, &opts);
    let (_, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval");
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    // Killed between the request and the decision: the request is in the store.
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(5));
    drop(d);
    let d = Daemon::start(&ws, &opts);
    let (s, first) = decide(&d, "bob", &id, "approve", json!({})).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["status"], "pending", "one of two approvers: {first}");
    assert_eq!(first["follow_up_run"], Value::Null);
    let (s, e) = decide(&d, "bob", &id, "approve", json!({})).await;
    assert_eq!(s, 409, "the same approver twice: {e}");
    let (s, second) = decide(&d, "dave", &id, "approve", json!({})).await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["status"], "approved");
    let done = finished(&d, second["follow_up_run"].as_str().expect("run")).await;
    assert_eq!(done["result"]["did"], "reset", "{done}");
    assert_eq!(
        done["event"]["approval"]["approvers"],
        json!(["bob", "dave"])
    );
}

#[tokio::test]
async fn two_replicas_deciding_the_same_approval_at_once_decide_it_once() {
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("gate", GATE);
    let mut a_opts = with_tokens("");
    a_opts
        .env
        .push(("RUNBOOKD_SERVER__REPLICA_ID".into(), "a".into()));
    let mut b_opts = with_tokens("");
    b_opts
        .env
        .push(("RUNBOOKD_SERVER__REPLICA_ID".into(), "b".into()));
    let a = Daemon::start(&ws, &a_opts);
    let b = Daemon::start(&ws, &b_opts);
    let (_, run) = a.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval");
    let id = pending(&a).await[0]["id"].as_str().expect("id").to_string();
    // bob approves on one replica while dave denies on the other, many times over.
    let mut answers = Vec::new();
    let mut tries = Vec::new();
    for i in 0..8 {
        let (d, who, what) = if i % 2 == 0 {
            (&a, "bob", "approve")
        } else {
            (&b, "dave", "deny")
        };
        tries.push(decide(d, who, &id, what, json!({})));
    }
    for (s, v) in futures_util::future::join_all(tries).await {
        answers.push((s, v));
    }
    let won: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(won.len(), 1, "exactly one decision: {answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 409),
        "{answers:?}"
    );
    let (_, final_state) = a.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(
        final_state["decisions"].as_array().map(Vec::len),
        Some(1),
        "{final_state}"
    );
    // One follow-up run, on whichever replica claimed it.
    let follow_up = won[0]["follow_up_run"].as_str().expect("run");
    let done = finished(&a, follow_up).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let (_, runs) = a.get("/api/v1/runs?playbook=gate").await;
    let follow_ups = runs.as_array().map(|r| {
        r.iter()
            .filter(|r| r["trigger"]["kind"] == "approval")
            .count()
    });
    assert_eq!(follow_ups, Some(1), "{runs}");
}

#[tokio::test]
async fn the_cli_lists_and_decides_the_approvals_of_a_running_daemon() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let d = Daemon::start(&ws, &with_tokens(""));
    let (_, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval");
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    // Another process, as an SRE's shell runs it (blocking this test's thread is fine: the
    // daemon is its own process).
    let cli = |token: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
            .args(args)
            .args(["--url", &d.url("")])
            .env("RUNBOOKD_TOKEN", token)
            .env_remove("RUNBOOKD_CONFIG")
            .output()
    };
    let out = cli("carol-secret", &["approvals", "--status", "pending"]).expect("cli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&id) && stdout.contains("breaker.reset stripe"),
        "{stdout}"
    );
    // The requester is refused with the daemon's reason and exit 1.
    let out = cli("alice-secret", &["approve", &id]).expect("cli");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("403") && stderr.contains("may not approve"),
        "{stderr}"
    );
    let out = cli(
        "bob-secret",
        &["approve", &id, "--comment", "Stripe is green"],
    )
    .expect("cli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("approved; run"), "{stdout}");
    let run = stdout
        .split("run ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("run id");
    let done = finished(&d, run).await;
    assert_eq!(done["result"]["did"], "reset", "{done}");
    assert_eq!(done["event"]["approval"]["comment"], "Stripe is green");
    let out = cli("dave-secret", &["deny", &id]).expect("cli");
    assert_eq!(out.status.code(), Some(1), "decided already");
}

/// Acts only when approved, after a pause in which a crash can land; the action is a
/// Celery message on Redis, counted outside runbookd.
const GATE_THEN_ACT: &str = r#"
fn run(event) {
    if event.kind == "approval" && event.approval.decision != "approved" { return "denied"; }
    if !approved(#{ action: "breaker.reset", target: "stripe", reason: "drill" }) { return "asked"; }
    sleep(3.0);
    celery_enqueue("drill.mark", ["act", "gate", event.attempt]);
    "acted"
}
"#;

#[tokio::test]
async fn a_crash_between_an_approvals_use_and_its_action_neither_loses_the_action_nor_asks_again() {
    let queue = format!("approval-crash-{}", uuid::Uuid::now_v7().simple());
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE_THEN_ACT);
    let opts = with_tokens(&format!("\n{}", crate::faults::celery_config(&queue)));
    let mut d = Daemon::start(&ws, &opts);
    let (_, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let asked = pending(&d).await;
    let id = asked[0]["id"].as_str().expect("id").to_string();
    let (s, decided) = decide(&d, "bob", &id, "approve", json!({})).await;
    assert_eq!(s, 200, "{decided}");
    let follow_up = decided["follow_up_run"].as_str().expect("run").to_string();
    // The follow-up run used the grant and is in its pause: kill -9.
    let used = d
        .poll(
            &format!("/api/v1/approvals/{id}"),
            Duration::from_secs(10),
            |v| v["status"] == "used",
        )
        .await;
    assert_eq!(used["used_by_run"], follow_up.as_str(), "{used}");
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(5));
    drop(d);
    let d = Daemon::start(&ws, &opts);
    let done = finished(&d, &follow_up).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", d.logs());
    assert_eq!(done["result"], "acted", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    let acted = crate::faults::marks(&queue).await;
    assert_eq!(
        acted,
        vec![("act".to_string(), "gate".to_string(), 2)],
        "one action"
    );
    // No new request, no second notification.
    let (_, all) = d.get("/api/v1/approvals?limit=100").await;
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(all[0]["status"], "used", "{all}");
    let (_, notes) = d.get("/api/v1/notifications").await;
    let asks = notes
        .as_array()
        .map(|n| n.iter().filter(|n| n["kind"] == "approval").count());
    assert_eq!(asks, Some(1), "{notes}");
}

/// The value of an unlabelled series in the daemon's `/metrics`, if it has one.
async fn gauge(d: &Daemon, name: &str) -> Option<f64> {
    d.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_requests_waiting_for_a_human_are_a_gauge() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let mut opts = with_tokens("");
    opts.env
        .push(("RUNBOOKD_ESCALATION__INTERVAL".into(), "200ms".into()));
    let d = Daemon::start(&ws, &opts);
    let until = |want: f64| {
        let d = &d;
        async move {
            for _ in 0..100 {
                if gauge(d, "runbookd_approvals_pending").await == Some(want) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(until(0.0).await, "{}", d.metrics().await);
    let (_, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    assert!(until(1.0).await, "one request waits: {}", d.metrics().await);
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    let (s, denied) = decide(&d, "bob", &id, "deny", json!({})).await;
    assert_eq!(s, 200, "{denied}");
    assert!(
        until(0.0).await,
        "decided, none waits: {}",
        d.metrics().await
    );
}
