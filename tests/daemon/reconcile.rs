//! `reconcile()` and `celery_enqueue()` against the app's PostgreSQL, the fake Stripe and Redis.

use std::time::Duration;

use base64::Engine as _;
use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::{
    fake_stripe::{FakeStripe, GOOD_KEY},
    helpers::{redis_url, AppDb, Daemon, Db, Options, Workspace},
};

struct Setup {
    app: AppDb,
    fake: FakeStripe,
    _ws: Workspace,
    d: Daemon,
    prefix: String,
}

async fn setup(playbooks: &[(&str, &str)], stripe_extra: &str) -> Setup {
    let app = AppDb::new().await;
    let fake = FakeStripe::start().await;
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let ws = Workspace::new(Db::Sqlite).await;
    for (n, s) in playbooks {
        ws.write_playbook(n, s);
    }
    let config = format!(
        "{}{}[redis]\nurl = \"{}\"\n[breakers.stripe]\nkey_prefix = \"{prefix}\"\n[celery]\nbroker_url = \"{}\"\nqueue = \"{prefix}-celery\"\n",
        app.config(),
        fake.config(stripe_extra),
        redis_url(),
        redis_url(),
    );
    let d = Daemon::start(
        &ws,
        &Options {
            bearer: None,
            serve_args: Vec::new(),
            extra_config: config,
            env: vec![("STRIPE_API_KEY".into(), GOOD_KEY.into())],
        },
    );
    Setup {
        app,
        fake,
        _ws: ws,
        d,
        prefix,
    }
}

const RECONCILE: &str = "fn run(event) { reconcile(event.params) }\n";

#[tokio::test]
async fn reconciles_by_the_apps_mapping_and_reports_inconsistencies() {
    let s = setup(&[("reconcile", RECONCILE)], "").await;
    let (app, fake) = (&s.app, &s.fake);
    let paid = app.payment("pending", 3600, Some("pi_paid")).await;
    fake.intent("pi_paid", "succeeded", &paid);
    let canceled = app.payment("pending", 3600, Some("pi_canceled")).await;
    fake.intent("pi_canceled", "canceled", &canceled);
    let processing = app.payment("pending", 3600, Some("pi_processing")).await;
    fake.intent("pi_processing", "processing", &processing);
    // A worker died after Stripe charged: no processor_ref, but Stripe knows the payment.
    let orphan_paid = app.payment("pending", 3600, None).await;
    fake.intent("pi_orphan", "succeeded", &orphan_paid);
    // Never reached Stripe at all.
    let never_sent = app.payment("pending", 3600, None).await;
    // A reference Stripe has never heard of.
    let ghost = app.payment("pending", 3600, Some("pi_ghost")).await;
    // Too recent to touch.
    let fresh = app.payment("pending", 60, Some("pi_fresh")).await;
    fake.intent("pi_fresh", "succeeded", &fresh);
    // Charged but recorded as failed: the runbook's L3.
    let charged_failed = app.payment("failed", 600, Some("pi_charged")).await;
    fake.intent("pi_charged", "succeeded", &charged_failed);

    let (_, run) = s.d.run_wait("reconcile", json!({"params": {}})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let r = &run["result"];
    assert_eq!(r["checked"], 6, "{r}");
    assert_eq!(r["updated"], 4, "{r}");
    assert_eq!(
        r["unchanged"], 2,
        "processing stays pending; the ghost is reported, not changed"
    );
    assert_eq!(app.status_of(&paid).await.0, "completed");
    assert_eq!(app.status_of(&canceled).await.0, "failed");
    assert_eq!(app.status_of(&processing).await.0, "pending");
    assert_eq!(
        app.status_of(&orphan_paid).await.0,
        "completed",
        "found by metadata.payment_id, not failed blindly"
    );
    assert_eq!(app.status_of(&never_sent).await.0, "failed");
    assert_eq!(app.status_of(&ghost).await.0, "pending");
    assert_eq!(app.status_of(&fresh).await.0, "pending");
    let (_, meta) = app.status_of(&paid).await;
    assert_eq!(meta["reconciled"], true);
    assert!(
        meta["status_reason"]
            .as_str()
            .unwrap_or("")
            .contains("pi_paid"),
        "{meta}"
    );
    let kinds: Vec<(String, String)> = r["inconsistencies"]
        .as_array()
        .expect("array")
        .iter()
        .map(|f| {
            (
                f["payment_id"].as_str().unwrap_or("").to_string(),
                f["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&(ghost.clone(), "unknown_processor_ref".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(charged_failed.clone(), "charged_but_failed".into())),
        "{kinds:?}"
    );
    assert_eq!(
        run["actions"].as_array().map(Vec::len),
        Some(4),
        "one audited action per update"
    );

    // Safe to run again: nothing changes the second time.
    let (_, again) = s.d.run_wait("reconcile", json!({"params": {}})).await;
    assert_eq!(again["result"]["updated"], 0, "{again}");
    assert_eq!(again["result"]["checked"], 2);
}

#[tokio::test]
async fn dry_run_plans_and_changes_nothing() {
    let s = setup(&[("reconcile", RECONCILE)], "").await;
    let paid = s.app.payment("pending", 3600, Some("pi_paid")).await;
    s.fake.intent("pi_paid", "succeeded", &paid);
    let (_, run) =
        s.d.run_wait("reconcile", json!({"params": {}, "dry_run": true}))
            .await;
    assert_eq!(run["result"]["dry_run"], true);
    assert_eq!(run["result"]["changes"][0]["to"], "completed", "{run}");
    assert_eq!(run["result"]["changes"][0]["applied"], false);
    assert_eq!(run["actions"][0]["outcome"], "planned");
    assert_eq!(s.app.status_of(&paid).await.0, "pending");
}

#[tokio::test]
async fn an_open_breaker_stops_it_before_stripe_is_called() {
    let s = setup(
        &[
            ("reconcile", RECONCILE),
            ("trip", "fn run(event) { let b = breaker(\"stripe\"); for i in 0..5 { b.record_failure(); } b.state }\n"),
        ],
        "",
    )
    .await;
    let p = s.app.payment("pending", 3600, Some("pi_paid")).await;
    s.fake.intent("pi_paid", "succeeded", &p);
    assert_eq!(s.d.run_wait("trip", json!({})).await.1["result"], "open");
    let (_, run) = s.d.run_wait("reconcile", json!({"params": {}})).await;
    let r = &run["result"];
    assert!(
        r["stopped"]
            .as_str()
            .unwrap_or("")
            .contains("breaker stripe is open"),
        "{r}"
    );
    assert_eq!(r["checked"], 0);
    assert!(s.fake.requests().is_empty(), "no request reached Stripe");
    assert_eq!(s.app.status_of(&p).await.0, "pending");
    // Ignoring the breaker is an explicit choice.
    let (_, run) =
        s.d.run_wait("reconcile", json!({"params": {"breaker": ()}}))
            .await;
    assert_eq!(run["result"]["updated"], 1, "{run}");
    let _ = &s.prefix;
}

#[tokio::test]
async fn a_webhook_landing_meanwhile_wins() {
    // Stripe answers slowly; while reconcile waits, the app's webhook settles the payment.
    let s = setup(&[("reconcile", RECONCILE)], "").await;
    let p = s.app.payment("pending", 3600, Some("pi_x")).await;
    s.fake.intent("pi_x", "canceled", &p);
    s.fake.behave(|b| b.latency = Duration::from_millis(800));
    let url = s.d.url("/api/v1/playbooks/reconcile/runs?wait=true");
    let client = s.d.client.clone();
    let call = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"params": {"check_failed_within": ()}}))
            .send()
            .await
            .expect("post")
            .json::<Value>()
            .await
            .expect("json")
    });
    // Once reconcile has asked Stripe, the webhook lands.
    for _ in 0..200 {
        if !s.fake.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::query("UPDATE payments_payment SET status = 'completed' WHERE id = $1::uuid")
        .bind(&p)
        .execute(&s.app.pool)
        .await
        .expect("webhook update");
    let run = call.await.expect("join");
    assert_eq!(run["result"]["superseded"], 1, "{run}");
    assert_eq!(run["result"]["updated"], 0);
    assert_eq!(
        s.app.status_of(&p).await.0,
        "completed",
        "the webhook's change stands"
    );
}

#[tokio::test]
async fn holds_the_stripe_request_rate_limit() {
    let s = setup(
        &[("reconcile", RECONCILE)],
        "max_requests_per_second = 20\n",
    )
    .await;
    for i in 0..40 {
        let p = s
            .app
            .payment("pending", 3600, Some(&format!("pi_{i}")))
            .await;
        s.fake.intent(&format!("pi_{i}"), "processing", &p);
    }
    let (_, run) =
        s.d.run_wait(
            "reconcile",
            json!({"params": {"concurrency": 16, "check_failed_within": ()}}),
        )
        .await;
    assert_eq!(run["result"]["checked"], 40, "{run}");
    let reqs = s.fake.requests();
    assert_eq!(reqs.len(), 40);
    // Burst of up to 20, then 20/s: 40 requests need at least ~1 s.
    let span = reqs.last().expect("last").1 - reqs.first().expect("first").1;
    assert!(
        span >= Duration::from_millis(900),
        "40 requests at 20/s went out in {span:?}"
    );
}

#[tokio::test]
async fn holds_the_stripe_connection_cap() {
    let s = setup(
        &[("reconcile", RECONCILE)],
        "max_requests_per_second = 0\nmax_connections = 2\n",
    )
    .await;
    // Every answer held 30 ms: twelve workers would each want a connection of their own.
    s.fake.behave(|b| b.latency = Duration::from_millis(30));
    for i in 0..24 {
        let p = s
            .app
            .payment("pending", 3600, Some(&format!("pi_{i}")))
            .await;
        s.fake.intent(&format!("pi_{i}"), "processing", &p);
    }
    let before = s.fake.connections_accepted();
    let (_, run) =
        s.d.run_wait(
            "reconcile",
            json!({"params": {"concurrency": 12, "check_failed_within": ()}}),
        )
        .await;
    assert_eq!(run["result"]["checked"], 24, "{run}");
    assert_eq!(run["result"]["errors"], json!([]), "{run}");
    let opened = s.fake.connections_accepted() - before;
    assert!(
        (1..=2).contains(&opened),
        "{opened} TCP connections to Stripe under max_connections = 2"
    );
    // Two connections, 30 ms each, 24 requests: the cap paced them (≥ 12 rounds).
    let reqs = s.fake.requests();
    let span = reqs.last().expect("last").1 - reqs.first().expect("first").1;
    assert!(
        span >= Duration::from_millis(11 * 30),
        "24 requests over 2 connections went out in {span:?}"
    );
}

#[tokio::test]
async fn celery_enqueue_puts_a_protocol_2_message_on_the_broker() {
    let s = setup(
        &[
            ("handoff", "fn run(event) { celery_enqueue(\"tasks.payment_tasks.reconcile_payments\", [], #{ limit: 100 }) }\n"),
            ("rogue", "fn run(event) { celery_enqueue(\"tasks.payment_tasks.refund_everything\") }\n"),
        ],
        "",
    )
    .await;
    // Only [celery] tasks (by default the app's reconcile task) can be sent.
    let (_, rogue) = s.d.run_wait("rogue", json!({})).await;
    assert_eq!(rogue["status"], "failed", "{rogue}");
    let why = rogue["error"]["message"].as_str().unwrap_or("");
    assert!(why.contains("[celery] tasks"), "{why}");
    let (_, run) = s.d.run_wait("handoff", json!({})).await;
    let task_id = run["result"].as_str().expect("task id").to_string();
    let mut r = redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let raw: Vec<String> = r
        .lrange(format!("{}-celery", s.prefix), 0, -1)
        .await
        .expect("lrange");
    assert_eq!(raw.len(), 1);
    let msg: Value = serde_json::from_str(&raw[0]).expect("envelope is JSON");
    assert_eq!(
        msg["headers"]["task"],
        "tasks.payment_tasks.reconcile_payments"
    );
    assert_eq!(msg["headers"]["id"], task_id.as_str());
    assert_eq!(msg["content-type"], "application/json");
    assert_eq!(msg["properties"]["body_encoding"], "base64");
    assert_eq!(
        msg["properties"]["delivery_info"]["routing_key"],
        format!("{}-celery", s.prefix)
    );
    let body = base64::engine::general_purpose::STANDARD
        .decode(msg["body"].as_str().expect("body"))
        .expect("base64");
    let body: Value = serde_json::from_slice(&body).expect("body JSON");
    assert_eq!(body[0], json!([]));
    assert_eq!(body[1], json!({"limit": 100}));
    assert_eq!(body[2]["chord"], Value::Null);

    let (_, dry) = s.d.run_wait("handoff", json!({"dry_run": true})).await;
    assert_eq!(dry["actions"][0]["outcome"], "planned");
    let len: i64 = r.llen(format!("{}-celery", s.prefix)).await.expect("llen");
    assert_eq!(len, 1, "a dry run enqueues nothing");
}

#[tokio::test]
async fn a_reconcile_cut_short_by_the_deadline_keeps_what_it_settled() {
    let app = AppDb::new().await;
    let fake = FakeStripe::start().await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = app.payment("pending", 3600, Some(&format!("pi_{i}"))).await;
        fake.intent(&format!("pi_{i}"), "succeeded", &id);
        ids.push(id);
    }
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("reconcile", RECONCILE);
    let d = Daemon::start(
        &ws,
        &Options {
            bearer: None,
            serve_args: Vec::new(),
            // 40 payments at 10 requests/s need 3+ s; the run may take 1 s.
            extra_config: format!(
                "{}{}",
                app.config(),
                fake.config("max_requests_per_second = 10\n")
            ),
            env: vec![
                ("STRIPE_API_KEY".into(), GOOD_KEY.into()),
                ("RUNBOOKD_PLAYBOOKS__TIMEOUT".into(), "1s".into()),
            ],
        },
    );
    let (_, run) = d
        .run_wait(
            "reconcile",
            json!({"params": {"breaker": (), "check_failed_within": ()}}),
        )
        .await;
    assert_eq!(run["status"], "timed_out", "{run}");
    let mut completed = 0;
    for id in &ids {
        if app.status_of(id).await.0 == "completed" {
            completed += 1;
        }
    }
    assert!(
        completed >= 5,
        "payments settled before the deadline stay settled ({completed} of 40)"
    );
    assert!(completed < 40, "the deadline did cut it short");
}
