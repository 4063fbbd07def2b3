//! The shipped runbook playbooks (`playbooks/payment_processor_outage.rhai`,
//! `playbooks/reconcile_payments.rhai`) against a DebtFlow world of real parts: the app's
//! PostgreSQL tables, its Django-layout breaker in real Redis (pickles from Python), a fake
//! Stripe over HTTP, and an on-call webhook sink. Each scenario of the runbook, driven the way
//! production drives it: Alertmanager notifications and manual runs over the API.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::{
    alerts::notification,
    fake_stripe::{FakeStripe, GOOD_KEY},
    helpers::{python, redis, redis_url, AppDb, Daemon, Db, Options, Workspace},
    notify::Sink,
};

const PLAYBOOK: &str = "payment_processor_outage";

/// The payments app and everything around it.
pub struct Debtflow {
    pub ws: Workspace,
    pub app: AppDb,
    pub stripe: FakeStripe,
    pub oncall: Sink,
    /// Django cache key prefix of this test's breaker, so tests share Redis safely.
    pub prefix: String,
}

impl Debtflow {
    pub async fn new() -> Debtflow {
        let ws = Workspace::new(Db::Sqlite).await;
        ws.install_shipped_playbooks();
        // The runbook's escalation table as shipped, paging the on-call sink.
        let table = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/escalation.toml"
        ))
        .expect("shipped table")
        .replace("channels = [\"log\"]", "channels = [\"oncall\"]");
        std::fs::write(ws.dir.path().join("escalation.toml"), table).expect("table");
        Debtflow {
            ws,
            app: AppDb::new().await,
            stripe: FakeStripe::start().await,
            oncall: Sink::start(vec![]).await,
            prefix: format!("t{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// runbookd.toml for this world; `outage` lines (`key = value`) override the test's
    /// [playbooks.settings.outage].
    pub fn config(&self, outage: &str) -> String {
        format!(
            "[redis]\nurl = \"{redis}\"\n\n[breakers.stripe]\npreset = \"django\"\nkey_prefix = \"{prefix}\"\n\n\
             {payments}\n{stripe}\n[channels.oncall]\ntype = \"webhook\"\nurl = \"{sink}\"\n\n\
             [notify]\nmax_backoff = \"1s\"\n\n\
             [playbooks.settings.outage]\n{outage}\n",
            redis = redis_url(),
            prefix = self.prefix,
            payments = self.app.config(),
            stripe = self.stripe.config(""),
            sink = self.oncall.url(),
            outage = outage_settings(outage),
        )
    }

    pub fn start(&self, outage: &str, stripe_key: &str) -> Daemon {
        Daemon::start(&self.ws, &self.options(outage, stripe_key))
    }

    /// How [`Debtflow::start`] starts runbookd; callers may add to it.
    pub fn options(&self, outage: &str, stripe_key: &str) -> Options {
        Options {
            extra_config: self.config(outage),
            env: vec![
                ("STRIPE_API_KEY".into(), stripe_key.into()),
                (
                    "STRIPE_WEBHOOK_SECRET".into(),
                    "whsec_runbookd_test_secret".into(),
                ),
                ("RUNBOOKD_ESCALATION__INTERVAL".into(), "200ms".into()),
            ],
            bearer: None,
            serve_args: Vec::new(),
        }
    }

    fn key(&self, part: &str) -> String {
        format!("{}:1:circuit_breaker:stripe:{part}", self.prefix)
    }

    /// Opens the breaker exactly as the app's workers do (Django cache, pickled values).
    pub async fn open_breaker(&self, opened_secs_ago: f64) {
        let state = python(
            "import pickle,sys; sys.stdout.buffer.write(pickle.dumps('open', protocol=5))",
            b"",
        );
        let opened = python(
            &format!("import pickle,sys,time; sys.stdout.buffer.write(pickle.dumps(time.time() - {opened_secs_ago}, protocol=5))"),
            b"",
        );
        let mut r = redis().await;
        let _: () = r.set_ex(self.key("state"), state, 300).await.expect("set");
        let _: () = r
            .set_ex(self.key("opened_at"), opened, 300)
            .await
            .expect("set");
        let _: () = r.set_ex(self.key("failures"), "5", 60).await.expect("set");
    }

    /// The app's half-open trial succeeded: the breaker's keys are gone (closed).
    pub async fn close_breaker(&self) {
        let mut r = redis().await;
        for part in ["state", "opened_at", "failures"] {
            let _: () = r.del(self.key(part)).await.expect("del");
        }
    }

    /// Which of the breaker's three keys exist.
    pub async fn breaker_keys(&self) -> usize {
        let mut r = redis().await;
        let mut n = 0;
        for part in ["state", "opened_at", "failures"] {
            let exists: bool = r.exists(self.key(part)).await.expect("exists");
            n += usize::from(exists);
        }
        n
    }

    /// Everything the on-call sink received, as one string per message.
    pub fn pages(&self) -> Vec<String> {
        self.oncall
            .received()
            .into_iter()
            .map(|(_, _, body)| body.to_string())
            .collect()
    }

    /// Waits until a message containing `needle` reaches the on-call sink.
    pub async fn wait_page(&self, needle: &str) -> String {
        for _ in 0..100 {
            if let Some(p) = self.pages().into_iter().find(|p| p.contains(needle)) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no page containing {needle:?}; got {:#?}", self.pages());
    }
}

/// Short watches for tests, paging the on-call sink; `overrides` replace keys.
fn outage_settings(overrides: &str) -> String {
    let mut settings: Vec<(String, String)> = [
        ("watch_seconds", "2"),
        ("watch_every", "0.25"),
        ("channel", "\"oncall\""),
        ("page_channel", "\"oncall\""),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    for line in overrides.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').expect("key = value");
        settings.retain(|(key, _)| key != k.trim());
        settings.push((k.trim().to_string(), v.trim().to_string()));
    }
    settings
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect()
}

/// An Alertmanager notification whose alerts started now (an incident's age drives the
/// time-based levels L2 and P1).
pub fn alert_now(name: &str, fingerprint: &str, status: &str) -> Value {
    let mut n = notification(&[(name, fingerprint, status)]);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    n["alerts"][0]["startsAt"] = json!(now);
    n
}

pub async fn post_alert(d: &Daemon, body: &Value) {
    let resp = d
        .client
        .post(d.url("/api/v1/alerts"))
        .json(body)
        .send()
        .await
        .expect("post alert");
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
}

/// Waits for the `n`th finished run of `playbook` (oldest first).
pub async fn finished_run(d: &Daemon, playbook: &str, n: usize) -> Value {
    let list = d
        .poll(
            &format!("/api/v1/runs?logs=true&playbook={playbook}&limit=50"),
            Duration::from_secs(30),
            |v| {
                v.as_array().is_some_and(|r| {
                    r.iter()
                        .filter(|r| !matches!(r["status"].as_str(), Some("queued" | "running")))
                        .count()
                        >= n
                })
            },
        )
        .await;
    let mut runs: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    runs.reverse();
    let id = runs
        .get(n - 1)
        .and_then(|r| r["id"].as_str())
        .unwrap_or_else(|| panic!("{n} runs of {playbook} did not finish: {list}"))
        .to_string();
    d.get(&format!("/api/v1/runs/{id}")).await.1
}

fn log_text(run: &Value) -> String {
    run["logs"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|x| x["message"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn actions(run: &Value) -> Vec<(String, String)> {
    run["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["action"].as_str().unwrap_or_default().to_string(),
                        x["outcome"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn stuck_breaker_with_stripe_healthy_is_reset_and_stale_payments_reconciled() {
    let w = Debtflow::new().await;
    w.open_breaker(100.0).await;
    w.stripe.intent("pi_paid", "succeeded", "ignored");
    let paid = w.app.payment("pending", 2400, Some("pi_paid")).await;
    let fresh = w.app.payment("pending", 60, None).await;
    let d = w.start("", GOOD_KEY);

    post_alert(&d, &alert_now("PaymentProcessorDown", "fp-stuck", "firing")).await;
    let run = finished_run(&d, PLAYBOOK, 1).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let log = log_text(&run);
    assert!(
        log.contains("Stripe healthy, breaker half_open 10")
            && log.contains("s > 30 s recovery: resetting"),
        "the decision explains itself in the runbook's words:\n{log}"
    );
    assert_eq!(w.breaker_keys().await, 0, "the breaker was reset");
    assert_eq!(
        run["result"]["scenarios"],
        json!(["breaker_stuck", "stale_pending"])
    );
    assert_eq!(w.app.status_of(&paid).await.0, "completed");
    assert_eq!(
        w.app.status_of(&fresh).await.0,
        "pending",
        "a payment pending for 1 minute is not stale"
    );
    let acts = actions(&run);
    assert!(
        acts.contains(&("breaker.reset".into(), "done".into())),
        "{acts:?}"
    );
    w.wait_page("reset").await;

    // The diagnosis is on the incident, for humans and for the escalation table.
    let incident = run["event"]["incident"]
        .as_str()
        .map(String::from)
        .expect("alert run has an incident");
    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident}")).await;
    assert_eq!(inc["facts"]["breaker_open"], false, "{inc}");
    assert_eq!(
        inc["facts"]["diagnosis"]["stripe_indicator"], "none",
        "{inc}"
    );
    assert_eq!(
        inc["facts"]["diagnosis"]["breaker_state"], "half_open",
        "{inc}"
    );

    // Alert resolves: Scenario 1 step 7 reconciles again, then the incident is resolved.
    post_alert(
        &d,
        &alert_now("PaymentProcessorDown", "fp-stuck", "resolved"),
    )
    .await;
    let resolved = finished_run(&d, PLAYBOOK, 2).await;
    assert_eq!(resolved["status"], "succeeded", "{resolved}");
    assert_eq!(resolved["result"]["resolved"], true);
    let inc = d
        .poll(
            &format!("/api/v1/incidents/{incident}"),
            Duration::from_secs(10),
            |v| v["status"] == "resolved",
        )
        .await;
    assert_eq!(inc["status"], "resolved", "{inc}");
}

#[tokio::test]
async fn stripe_down_leaves_the_breaker_alone_and_pages_l1_with_stripes_words() {
    let w = Debtflow::new().await;
    w.open_breaker(100.0).await;
    w.stripe.behave(|b| {
        b.status_page = Some((
            200,
            json!({"status": {"indicator": "major", "description": "Elevated API error rates"}})
                .to_string(),
        ))
    });
    w.stripe.intent("pi_paid", "succeeded", "ignored");
    let stale = w.app.payment("pending", 2400, Some("pi_paid")).await;
    let d = w.start("", GOOD_KEY);

    post_alert(&d, &alert_now("PaymentProcessorDown", "fp-down", "firing")).await;
    let run = finished_run(&d, PLAYBOOK, 1).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["scenarios"], json!(["stripe_down"]));
    assert_eq!(
        w.breaker_keys().await,
        3,
        "never reset while Stripe is down"
    );
    assert_eq!(
        w.app.status_of(&stale).await.0,
        "pending",
        "no retries, no reconciliation while Stripe is down"
    );
    assert!(
        !actions(&run)
            .iter()
            .any(|(a, _)| a.starts_with("breaker") || a == "reconcile"),
        "{:?}",
        actions(&run)
    );
    let page = w.wait_page("Elevated API error rates").await;
    assert!(page.contains("L1"), "{page}");
    assert!(page.contains("Do NOT retry payments"), "{page}");
    // No [statuspage]: the humans paged are asked to tell users themselves.
    assert!(
        page.contains("Tell users payment processing is temporarily unavailable — runbookd did not: the status page is not configured"),
        "{page}"
    );
}

#[tokio::test]
async fn a_rejected_api_key_is_diagnosed_and_nothing_is_changed() {
    let w = Debtflow::new().await;
    w.open_breaker(100.0).await;
    let d = w.start("", "sk_test_rotated_key_that_stripe_rejects");

    let (status, run) = d.run_wait(PLAYBOOK, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["scenarios"], json!(["key_problem"]));
    assert_eq!(w.breaker_keys().await, 3, "a reset would only reopen it");
    let page = w.wait_page("Stripe rejects the API key").await;
    assert!(page.contains("prefix sk_test"), "{page}");
    assert!(
        !page.contains("rotated_key_that"),
        "the key itself never leaves runbookd: {page}"
    );
}

#[tokio::test]
async fn a_spent_reset_budget_escalates_instead_of_resetting_again() {
    let w = Debtflow::new().await;
    w.open_breaker(100.0).await;
    let d = w.start("reset_budget = 1\nwatch_seconds = 0", GOOD_KEY);

    let (_, first) = d.run_wait(PLAYBOOK, json!({})).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(w.breaker_keys().await, 0, "first reset within budget");

    // The app's workers open it again; the budget (1 per 30 min) is spent.
    w.open_breaker(100.0).await;
    let (_, second) = d.run_wait(PLAYBOOK, json!({})).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(w.breaker_keys().await, 3, "no second reset");
    assert!(
        log_text(&second).contains("budget breaker_reset:stripe (1 per 30m): spent"),
        "{}",
        log_text(&second)
    );
    let page = w.wait_page("reset budget (1 per 30m) is spent").await;
    assert!(page.contains("[L2]"), "{page}");
}

#[tokio::test]
async fn a_breaker_that_reopens_after_the_reset_is_escalated() {
    let w = Debtflow::new().await;
    w.open_breaker(100.0).await;
    let d = w.start("watch_seconds = 5", GOOD_KEY);
    let run = {
        let client = d.client.clone();
        let url = d.url(&format!("/api/v1/playbooks/{PLAYBOOK}/runs?wait=true"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({}))
                .send()
                .await
                .expect("run")
                .json::<Value>()
                .await
                .expect("json")
        })
    };
    // Wait for the reset, then fail payments again the app's way.
    for _ in 0..100 {
        if w.breaker_keys().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w.breaker_keys().await, 0, "the playbook reset the breaker");
    w.open_breaker(0.0).await;
    let run = run.await.expect("run task");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(
        log_text(&run).contains("it reopened after"),
        "{}",
        log_text(&run)
    );
    let page = w.wait_page("it reopened after").await;
    assert!(page.contains("[L2]"), "{page}");
}

#[tokio::test]
async fn charged_but_failed_payments_raise_l3() {
    let w = Debtflow::new().await;
    w.stripe.intent("pi_charged", "succeeded", "ignored");
    // Pending 40 minutes (stale), and a payment the app failed although Stripe charged it.
    let stale = w.app.payment("pending", 2400, None).await;
    let charged = w.app.payment("failed", 600, Some("pi_charged")).await;
    let d = w.start("", GOOD_KEY);

    post_alert(&d, &alert_now("PaymentProcessorDown", "fp-l3", "firing")).await;
    let run = finished_run(&d, PLAYBOOK, 1).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        w.app.status_of(&stale).await.0,
        "failed",
        "no PaymentIntent carries its payment_id: never charged"
    );
    assert_eq!(
        w.app.status_of(&charged).await.0,
        "failed",
        "an inconsistency is reported, never fixed silently"
    );
    let page = w.wait_page(&charged).await;
    assert!(
        page.contains("L3") && page.contains("charged_but_failed"),
        "{page}"
    );
    let incidents = d.get("/api/v1/incidents").await.1;
    assert_eq!(incidents[0]["level"], "L3", "{incidents}");
}

#[tokio::test]
async fn webhook_delivery_problems_are_reported_with_what_was_found() {
    let w = Debtflow::new().await;
    w.stripe.behave(|b| b.webhook_status = Some(500));
    let now = chrono::Utc::now().timestamp();
    w.stripe.world.lock().expect("world").events.push(json!({
        "id": "evt_undelivered", "object": "event", "type": "payment_intent.succeeded",
        "created": now - 120, "pending_webhooks": 1, "livemode": false, "api_version": "2024-06-20",
        "data": {"object": {}}, "request": {"id": null, "idempotency_key": null},
    }));
    let d = w.start("", GOOD_KEY);

    let (_, run) = d.run_wait(PLAYBOOK, json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["scenarios"], json!(["webhooks"]));
    let page = w.wait_page("Webhook delivery (Scenario 5)").await;
    assert!(
        page.contains("broken: the webhook handler fails with 500"),
        "{page}"
    );
    assert!(page.contains("1 Stripe event(s) failed delivery"), "{page}");
}

#[tokio::test]
async fn a_dry_run_plans_the_remediation_and_changes_nothing() {
    let w = Debtflow::new().await;
    w.open_breaker(100.0).await;
    w.stripe.intent("pi_paid", "succeeded", "ignored");
    let stale = w.app.payment("pending", 2400, Some("pi_paid")).await;
    let d = w.start("", GOOD_KEY);

    let (_, run) = d.run_wait(PLAYBOOK, json!({"dry_run": true})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(w.breaker_keys().await, 3, "dry run: breaker untouched");
    assert_eq!(
        w.app.status_of(&stale).await.0,
        "pending",
        "dry run: payment untouched"
    );
    let acts = actions(&run);
    assert!(
        acts.contains(&("breaker.reset".into(), "planned".into())),
        "{acts:?}"
    );
    assert!(acts.iter().all(|(_, o)| o == "planned"), "{acts:?}");
    // A dry run does not use up the remediation budget: a real run may still reset.
    let (_, real) = d.run_wait(PLAYBOOK, json!({})).await;
    assert_eq!(real["status"], "succeeded", "{real}");
    assert_eq!(w.breaker_keys().await, 0);
}

#[tokio::test]
async fn reconcile_payments_runs_by_hand_and_says_what_it_did() {
    let w = Debtflow::new().await;
    w.stripe.intent("pi_a", "succeeded", "ignored");
    w.stripe
        .intent("pi_b", "requires_payment_method", "ignored");
    let a = w.app.payment("pending", 2400, Some("pi_a")).await;
    let b = w.app.payment("pending", 2400, Some("pi_b")).await;
    let d = w.start("", GOOD_KEY);

    let (_, run) = d.run_wait("reconcile_payments", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["checked"], 2, "{run}");
    assert_eq!(run["result"]["updated"], 2, "{run}");
    assert_eq!(w.app.status_of(&a).await.0, "completed");
    assert_eq!(w.app.status_of(&b).await.0, "failed");
    // Safe to run repeatedly: the second run changes nothing.
    let (_, again) = d.run_wait("reconcile_payments", json!({})).await;
    assert_eq!(again["result"]["checked"], 0, "{again}");
    let (_, list) = d.get("/api/v1/playbooks").await;
    let reconcile = list
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "reconcile_payments"))
        .cloned()
        .expect("listed");
    assert!(
        reconcile.to_string().contains("0 * * * *"),
        "hourly, as the app schedules it: {reconcile}"
    );
}

/// `[payments] stale_after` is the one stale threshold: the outage playbook's diagnosis, the
/// reconciliation and the metric the alert rule compares with all follow it.
#[tokio::test]
async fn the_stale_threshold_is_set_once_in_payments_stale_after() {
    let w = Debtflow::new().await;
    w.app.payment("pending", 15 * 60, None).await;
    w.app.payment("pending", 5 * 60, None).await;
    let mut opts = w.options("", GOOD_KEY);
    opts.extra_config =
        opts.extra_config
            .replacen("[payments]\n", "[payments]\nstale_after = \"10m\"\n", 1);
    opts.env
        .push(("RUNBOOKD_KEY_METRICS__INTERVAL".into(), "200ms".into()));
    let d = crate::helpers::Daemon::start(&w.ws, &opts);

    let (status, run) = d.run_wait(PLAYBOOK, json!({"dry_run": true})).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        run["result"]["diagnosis"]["payments"]["stale_pending"], 1,
        "15 minutes is stale at 10m, 5 minutes is not: {}",
        run["result"]["diagnosis"]["payments"]
    );
    let (_, rec) = d
        .run_wait("reconcile_payments", json!({"dry_run": true}))
        .await;
    assert_eq!(rec["result"]["checked"], 1, "{}", rec["result"]);
    for _ in 0..100 {
        let m = d.metrics().await;
        let value = m
            .lines()
            .find(|l| l.starts_with("runbookd_payments_stale_after_seconds"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.trim().parse::<f64>().ok());
        if value == Some(600.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = d.metrics().await;
    let lines: Vec<&str> = m.lines().filter(|l| l.contains("stale_after")).collect();
    panic!("no runbookd_payments_stale_after_seconds 600 in /metrics: {lines:?}");
}

/// Prevention 5: the app's own hourly reconciliation is checked — a payment pending longer
/// than stale_after plus one schedule interval says it is not running or not completing.
#[tokio::test]
async fn the_apps_own_reconciliation_is_checked_for_keeping_up() {
    let w = Debtflow::new().await;
    w.app.payment("pending", 2 * 3600, None).await;
    let settled = w
        .app
        .payment("completed", 40 * 60, Some("pi_settled"))
        .await;
    sqlx::query("UPDATE payments_payment SET metadata = metadata || '{\"reconciled\": true}' WHERE id = $1::uuid")
        .bind(&settled)
        .execute(&w.app.pool)
        .await
        .expect("the app's task settled it");
    let mut opts = w.options("", GOOD_KEY);
    opts.env
        .push(("RUNBOOKD_KEY_METRICS__INTERVAL".into(), "200ms".into()));
    let d = crate::helpers::Daemon::start(&w.ws, &opts);
    let (_, run) = d.run_wait(PLAYBOOK, json!({"dry_run": true})).await;
    let check = &run["result"]["diagnosis"]["payments"]["app_reconciliation"];
    assert_eq!(check["overdue"], true, "{check}");
    assert!(
        check["verdict"]
            .as_str()
            .unwrap_or("")
            .contains("pending 120 min"),
        "{check}"
    );
    assert!(
        log_text(&run).contains("The app's own reconciliation: overdue"),
        "{}",
        log_text(&run)
    );
    for _ in 0..100 {
        let m = d.metrics().await;
        let age = m
            .lines()
            .find(|l| l.starts_with("runbookd_payments_app_reconciled_newest_age_seconds"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(age) = age {
            assert!((age - 2400.0).abs() < 60.0, "{age}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no runbookd_payments_app_reconciled_newest_age_seconds in /metrics");
}
