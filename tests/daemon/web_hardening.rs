//! The dashboard's second hardening pass, from outside: where a login and a decision send
//! the browser back to; how many event streams may be open, and how long one lasts.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    approvals::{pending, with_tokens, GATE},
    dashboard::{csrf_of, login, raw},
    helpers::{Daemon, Db, Workspace},
};

/// What a `next` or `back` field must not send a browser to (each one a browser reads as
/// another site, or that a parser could), and what it stays.
const ELSEWHERE: &[&str] = &[
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/\x0b/evil.example",
    " /evil.example",
    "/ /evil.example",
    "//evil.example",
    "/\\evil.example",
    "/\\/evil.example",
    "\\/evil.example",
    "/./\\evil.example",
    "/..//evil.example",
    "/.//evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "evil.example",
    "",
];

#[tokio::test]
async fn login_and_decisions_redirect_only_to_a_path_of_this_site() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let d = Daemon::start(&ws, &with_tokens(""));
    for next in ELSEWHERE {
        let r = raw()
            .post(d.url("/login"))
            .form(&[("token", "bob-secret"), ("next", next)])
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 303, "{next:?}");
        assert_eq!(r.headers()["location"], "/", "login with next = {next:?}");
    }
    for (next, to) in [
        ("/incidents/abc?tab=1", "/incidents/abc?tab=1"),
        ("/runs/x#logs", "/runs/x#logs"),
        ("/approvals/../playbooks", "/playbooks"),
    ] {
        let r = raw()
            .post(d.url("/login"))
            .form(&[("token", "bob-secret"), ("next", next)])
            .send()
            .await
            .expect("login");
        assert_eq!(r.headers()["location"], to, "login with next = {next:?}");
    }
    // The login page's own form carries only a local path.
    let html = raw()
        .get(d.url("/login?next=%2F%09%2Fevil.example"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(!html.contains("evil.example"), "{html}");

    let (_, cookie) = login(&d, "bob-secret").await;
    let csrf = csrf_of(&d, &cookie, "/approvals").await;
    for back in ELSEWHERE.iter().chain(&["/playbooks"]) {
        let (_, run) = d.run_wait("gate", json!({})).await;
        assert_eq!(run["status"], "awaiting_approval", "{run}");
        let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
        let r = raw()
            .post(d.url(&format!("/approvals/{id}/deny")))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str()), ("back", back)])
            .send()
            .await
            .expect("deny");
        assert_eq!(r.status().as_u16(), 303, "{back:?}");
        let want = if *back == "/playbooks" {
            "/playbooks"
        } else {
            "/approvals"
        };
        assert_eq!(r.headers()["location"], want, "deny with back = {back:?}");
    }
}

fn with_env(mut opts: crate::helpers::Options, env: &[(&str, &str)]) -> crate::helpers::Options {
    for (k, v) in env {
        opts.env.push((k.to_string(), v.to_string()));
    }
    opts
}

/// `who` opens an event stream: the answer, its body unread.
async fn stream(d: &Daemon, who: &str) -> reqwest::Response {
    raw()
        .get(d.url("/api/v1/events"))
        .bearer_auth(format!("{who}-secret"))
        .send()
        .await
        .expect("events")
}

/// Reads a stream until it ends (or `limit`): how long that took.
async fn lasts(r: reqwest::Response, limit: Duration) -> Duration {
    use futures_util::StreamExt;
    let start = Instant::now();
    let mut body = r.bytes_stream();
    let _ = tokio::time::timeout(limit, async { while body.next().await.is_some() {} }).await;
    start.elapsed()
}

#[tokio::test]
async fn event_streams_are_capped_in_all_and_per_caller() {
    let ws = Workspace::new(Db::Sqlite).await;
    let d = Daemon::start(
        &ws,
        &with_env(
            with_tokens(""),
            &[
                ("RUNBOOKD_DASHBOARD__MAX_STREAMS", "3"),
                ("RUNBOOKD_DASHBOARD__MAX_STREAMS_PER_CALLER", "2"),
            ],
        ),
    );
    let mut open = Vec::new();
    for _ in 0..2 {
        let r = stream(&d, "alice").await;
        assert_eq!(r.status().as_u16(), 200);
        open.push(r);
    }
    let r = stream(&d, "alice").await;
    assert_eq!(r.status().as_u16(), 429, "alice's third stream");
    assert!(r.headers().contains_key("retry-after"));
    let e: serde_json::Value = r.json().await.expect("json");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("max_streams_per_caller")),
        "{e}"
    );
    let r = stream(&d, "carol").await;
    assert_eq!(
        r.status().as_u16(),
        200,
        "another caller (a viewer) may watch"
    );
    open.push(r);
    let r = stream(&d, "bob").await;
    assert_eq!(r.status().as_u16(), 429, "a fourth stream in all");
    // Everything else still answers.
    let (s, _) = d.get("/healthz").await;
    assert_eq!(s, 200);
    let (s, _) = d.get("/api/v1/playbooks").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn an_event_stream_ends_at_its_lifetime_and_with_its_session() {
    let ws = Workspace::new(Db::Sqlite).await;
    let d = Daemon::start(
        &ws,
        &with_env(
            with_tokens(""),
            &[("RUNBOOKD_DASHBOARD__MAX_STREAM_LIFETIME", "2s")],
        ),
    );
    let r = stream(&d, "bob").await;
    assert_eq!(r.status().as_u16(), 200);
    let took = lasts(r, Duration::from_secs(20)).await;
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "a 2 s stream lasted {took:?}"
    );
    drop(d);

    // A session's stream ends soon after the logout (the lifetime is long here).
    let d = Daemon::start(&ws, &with_tokens(""));
    let (_, cookie) = login(&d, "bob-secret").await;
    let r = raw()
        .get(d.url("/api/v1/events"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("events");
    assert_eq!(r.status().as_u16(), 200);
    let csrf = csrf_of(&d, &cookie, "/").await;
    let out = raw()
        .post(d.url("/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status().as_u16(), 303);
    let took = lasts(r, Duration::from_secs(30)).await;
    assert!(
        took < Duration::from_secs(8),
        "the stream outlived its session by {took:?}"
    );
}

#[tokio::test]
async fn behind_a_host_rewriting_proxy_the_public_origin_is_this_site() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let public = "https://runbookd.example.com";
    let post_login = |d: &Daemon, origin: &'static str| {
        raw()
            .post(d.url("/login"))
            .header("origin", origin)
            .form(&[("token", "bob-secret"), ("next", "/approvals")])
            .send()
    };
    // Without the key, the proxy's origin is another site.
    let d = Daemon::start(&ws, &with_tokens(""));
    let r = post_login(&d, "https://runbookd.example.com")
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 403);
    drop(d);

    let d = Daemon::start(
        &ws,
        &with_env(
            with_tokens(""),
            &[("RUNBOOKD_DASHBOARD__PUBLIC_ORIGIN", public)],
        ),
    );
    let r = post_login(&d, "https://runbookd.example.com")
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 303, "the public origin logs in");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    for other in [
        "https://evil.example",
        "http://runbookd.example.com",
        "null",
    ] {
        let r = post_login(&d, other).await.expect("login");
        assert_eq!(r.status().as_u16(), 403, "{other}");
    }
    // A decision's form from the public origin is taken too.
    let (_, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    let csrf = csrf_of(&d, &cookie, "/approvals").await;
    let r = raw()
        .post(d.url(&format!("/approvals/{id}/deny")))
        .header("cookie", &cookie)
        .header("origin", public)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("deny");
    assert_eq!(r.status().as_u16(), 303);
    let (_, a) = d.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(a["status"], "denied", "{a}");
}

#[tokio::test]
async fn wrong_tokens_make_their_address_wait_on_the_api_and_the_login() {
    let ws = Workspace::new(Db::Sqlite).await;
    let d = Daemon::start(&ws, &with_tokens(""));
    let get = |token: &'static str| {
        raw()
            .get(d.url("/api/v1/playbooks"))
            .bearer_auth(token)
            .send()
    };
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..300 {
        statuses.push(get("guess").await.expect("get").status().as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let tried = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        tried <= 8 && refused >= 290,
        "300 wrong tokens in {:?}: {tried} tried, {refused} refused",
        started.elapsed()
    );
    // While it waits, even the right token is refused, and told how long.
    let r = get("bob-secret").await.expect("get");
    assert_eq!(r.status().as_u16(), 429);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&after), "Retry-After {after}");
    // The refusal's log line names the address.
    let logs = d.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("bearer token refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{logs}"));
    assert!(line.contains("\"peer\":\"127.0.0.1\""), "{line}");
    drop(d);

    // The login form: the same per address.
    let d = Daemon::start(&ws, &with_tokens(""));
    let mut last = 0;
    for _ in 0..20 {
        last = raw()
            .post(d.url("/login"))
            .form(&[("token", "guess"), ("next", "/")])
            .send()
            .await
            .expect("login")
            .status()
            .as_u16();
    }
    assert_eq!(last, 429, "the twentieth wrong login");
    let r = raw()
        .post(d.url("/login"))
        .form(&[("token", "bob-secret"), ("next", "/")])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 429, "waiting, whatever the token");
    assert!(r.headers().contains_key("retry-after"));
    assert!(d.logs().contains("dashboard login refused"));
}

/// Writes card numbers everywhere a playbook can: its log, its result, a notification, an
/// incident's facts and timeline, an approval's reason, its error.
const CARDS: &str = r#"
fn triggers() { [#{ alert: "PaymentProcessorDown" }] }
fn run(event) {
    if event.params.fail == true { throw "cannot charge 4222222222222"; }
    log("card 4242 4242 4242 4242 declined; order 4242424242424241 kept");
    log("amex 378282246310005, mastercard 5555-5555-5555-4444, unionpay 6205500000000000004");
    notify("approvers", "payment of 4000056655665556 failed");
    set_fact("last_card", "3566002020360505");
    note("retried 6011111111111117");
    approved(#{ action: "payments.retry", target: "card 5105105105105100",
                reason: "charge 36227206271667 again" });
    #{ card: "2223003122003222", note: "order 4242424242424241" }
}
"#;

#[tokio::test]
async fn card_numbers_are_masked_in_everything_a_run_writes() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("cards", CARDS);
    let d = Daemon::start(&ws, &with_tokens(""));
    let body = crate::alerts::notification(&[("PaymentProcessorDown", "fp-cards", "firing")]);
    let (s, outcome) = crate::alerts::post(&d, &body).await;
    assert_eq!(s, 200, "{outcome}");
    let incident = outcome["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let runs = d
        .poll(
            "/api/v1/runs?playbook=cards",
            Duration::from_secs(10),
            |v| {
                v.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|r| !matches!(r["status"].as_str(), Some("queued" | "running")))
                })
            },
        )
        .await;
    let id = runs[0]["id"].as_str().expect("id").to_string();
    let (_, failed) = d.run_wait("cards", json!({"params": {"fail": true}})).await;
    assert_eq!(failed["status"], "failed", "{failed}");

    let mut seen = String::new();
    for path in [
        format!("/api/v1/runs/{id}"),
        format!("/api/v1/runs/{}", failed["id"].as_str().unwrap_or("")),
        format!("/api/v1/incidents/{incident}"),
        "/api/v1/notifications".to_string(),
        "/api/v1/audit?limit=100".to_string(),
        "/api/v1/approvals".to_string(),
    ] {
        let (s, v) = d.get(&path).await;
        assert_eq!(s, 200, "{path}: {v}");
        seen.push_str(&v.to_string());
    }
    let (_, cookie) = login(&d, "bob-secret").await;
    for path in [format!("/runs/{id}"), format!("/incidents/{incident}")] {
        let html = raw()
            .get(d.url(&path))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        seen.push_str(&html);
    }
    seen.push_str(&d.logs());
    for card in [
        "4242 4242 4242 4242",
        "378282246310005",
        "5555-5555-5555-4444",
        "6205500000000000004",
        "4000056655665556",
        "3566002020360505",
        "6011111111111117",
        "5105105105105100",
        "36227206271667",
        "4222222222222",
        "2223003122003222",
    ] {
        assert!(!seen.contains(card), "{card} left a run");
    }
    for shown in [
        "4242 42** **** 4242",
        "378282*****0005",
        "5555-55**-****-4444",
        "620550*********0004",
        "400005******5556",
        "356600******0505",
        "601111******1117",
        "510510******5100",
        "362272****1667",
        "422222***2222",
        "222300******3222",
    ] {
        assert!(seen.contains(shown), "{shown} not shown masked");
    }
    // A number that fails the Luhn check is no card number: left as it was.
    assert!(seen.contains("order 4242424242424241"));
}

#[tokio::test]
async fn serve_warns_at_start_of_an_escalation_level_whose_playbook_is_missing() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let d = Daemon::start(&ws, &crate::helpers::Options::default());
    let logs = d.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("escalation level L2 runs playbook")
                && l.contains("reconcile_payments")
                && l.contains("WARN")),
        "{logs}"
    );
}

#[tokio::test]
async fn the_approvals_page_lists_every_pending_request_however_many_were_decided_since() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    ws.write_playbook("old_gate", GATE);
    let d = Daemon::start(&ws, &with_tokens(""));
    let (_, run) = d.run_wait("old_gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let old = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    // 101 newer requests, each denied.
    for _ in 0..101 {
        let (_, run) = d.run_wait("gate", json!({})).await;
        assert_eq!(run["status"], "awaiting_approval", "{run}");
        let id = pending(&d)
            .await
            .into_iter()
            .find(|a| a["playbook"] == "gate")
            .expect("request")["id"]
            .as_str()
            .expect("id")
            .to_string();
        let r = raw()
            .post(d.url(&format!("/api/v1/approvals/{id}/deny")))
            .bearer_auth("bob-secret")
            .json(&json!({}))
            .send()
            .await
            .expect("deny");
        assert_eq!(r.status().as_u16(), 200);
    }
    let html = raw()
        .get(d.url("/approvals"))
        .bearer_auth("bob-secret")
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(html.contains(&old), "the old pending request is hidden");
}

#[tokio::test]
async fn what_runbookd_answers_slack_is_escaped() {
    use crate::slack_approvals::{press, signed_press, SECRET};
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "gate",
        r#"
fn run(event) {
    if event.kind == "approval" { return "done"; }
    if !approved(#{ action: "breaker.reset", target: "<!channel> & <https://evil.example|Approve here>",
                    reason: "<!here>" }) { return "asked"; }
    "done"
}
"#,
    );
    let mut opts = crate::approvals::tokens_with(
        "[channels.approvers]\ntype = \"log\"\n",
        "signing_secret_env = \"SLACK_SIGNING_SECRET\"\nslack_response_prefix = \"http://127.0.0.1:9/\"\n\
         [approvals.slack_users]\nU_BOB = \"bob\"\n",
    );
    opts.env
        .push(("SLACK_SIGNING_SECRET".into(), SECRET.into()));
    let d = Daemon::start(&ws, &opts);
    let (_, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    let now = chrono::Utc::now().timestamp();
    let url = "http://127.0.0.1:9/r";
    // An unmapped user whose id is markup.
    let (body, sig) = signed_press(SECRET, now, "<!channel>", "approve", &id, url);
    let (s, answer) = press(&d, now, &body, &sig).await;
    assert_eq!(s, 200);
    let text = answer["text"].as_str().unwrap_or("");
    assert!(
        text.contains("&lt;!channel&gt;") && !text.contains("<!"),
        "{answer}"
    );
    let (body, sig) = signed_press(SECRET, now, "U_BOB", "approve", &id, url);
    let (s, answer) = press(&d, now, &body, &sig).await;
    assert_eq!(s, 200, "{answer}");
    let text = answer["text"].as_str().unwrap_or("");
    assert!(
        text.contains("&lt;!channel&gt; &amp; &lt;https://evil.example|Approve here&gt;"),
        "{answer}"
    );
    assert!(!text.contains('<') && !text.contains('>'), "{answer}");
    // A refusal quoting the approval is escaped too.
    let (body, sig) = signed_press(SECRET, now, "U_BOB", "approve", &id, url);
    let (_, answer) = press(&d, now, &body, &sig).await;
    let text = answer["text"].as_str().unwrap_or("");
    assert!(!text.contains('<'), "{answer}");
}

#[tokio::test]
async fn the_cli_takes_only_an_approval_id_for_an_approval() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "gate",
        &format!("fn triggers() {{ [#{{ alert: \"PaymentProcessorDown\" }}] }}\n{GATE}"),
    );
    let d = Daemon::start(&ws, &with_tokens(""));
    let body = crate::alerts::notification(&[("PaymentProcessorDown", "fp-cli", "firing")]);
    let (_, outcome) = crate::alerts::post(&d, &body).await;
    let incident = outcome["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    for id in [
        format!("../incidents/{incident}/resolve?"),
        format!("../incidents/{incident}/resolve#"),
        format!("%2e%2e/incidents/{incident}/resolve?"),
        "nope".to_string(),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbookd"))
            .args(["approve", &id, "--url", &d.url("")])
            .env("RUNBOOKD_TOKEN", "bob-secret")
            .env_remove("RUNBOOKD_CONFIG")
            .output()
            .expect("cli");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{id}: {stderr}");
        assert!(stderr.contains("not an approval id"), "{stderr}");
    }
    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident}")).await;
    assert_eq!(inc["status"], "open", "{inc}");
}

async fn nul_answers(db: Db) {
    let ws = Workspace::new(db).await;
    ws.write_playbook("gate", GATE);
    let d = Daemon::start(&ws, &with_tokens(""));
    let (_, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    let http = raw();
    let gets = [
        "/api/v1/runs/%00",
        "/api/v1/runs/a%00b",
        "/api/v1/incidents/%00",
        "/api/v1/approvals/%00",
        "/api/v1/runs?before=%00",
        "/api/v1/runs?playbook=%00",
        "/incidents/%00",
        "/runs/%00",
    ];
    for path in gets {
        let r = http
            .get(d.url(path))
            .bearer_auth("bob-secret")
            .send()
            .await
            .expect("get");
        let s = r.status().as_u16();
        assert!(s == 400 || s == 404, "{db:?} GET {path}: {s}");
    }
    for path in [
        "/api/v1/approvals/%00/approve",
        "/api/v1/approvals/%00/deny",
        "/api/v1/incidents/%00/ack",
        "/api/v1/incidents/%00/resolve",
    ] {
        let r = http
            .post(d.url(path))
            .bearer_auth("bob-secret")
            .json(&json!({}))
            .send()
            .await
            .expect("post");
        let s = r.status().as_u16();
        assert!(s == 400 || s == 404, "{db:?} POST {path}: {s}");
    }
    // A NUL inside a JSON body (a decision's comment).
    let r = http
        .post(d.url(&format!("/api/v1/approvals/{id}/deny")))
        .bearer_auth("bob-secret")
        .json(&json!({"comment": "a\u{0}b"}))
        .send()
        .await
        .expect("post");
    let s = r.status().as_u16();
    assert!(s == 400 || s == 200, "{db:?} a NUL comment: {s}");
    let text = r.text().await.unwrap_or_default();
    assert!(!text.contains("invalid byte sequence"), "{text}");
    let logs = d.logs();
    assert!(
        !logs.contains("invalid byte sequence") && !logs.contains("\"level\":\"ERROR\""),
        "{db:?}: {logs}"
    );
}

#[tokio::test]
async fn a_nul_in_an_id_is_bad_input_on_postgres() {
    nul_answers(Db::Postgres).await;
}

#[tokio::test]
async fn a_nul_in_an_id_is_bad_input_on_sqlite() {
    nul_answers(Db::Sqlite).await;
}
