//! Telling users (runbook Scenario 1, step 4) through the status page: the shipped outage
//! playbook against a fake Atlassian Statuspage over HTTP, in the DebtFlow world of
//! `outage.rs` (real PostgreSQL tables, Django breaker in real Redis, fake Stripe), and the
//! parity of the HTTP status page with the simulated one.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    fake_statuspage::{FakeStatusPage, KEY},
    fake_stripe::GOOD_KEY,
    helpers::{Daemon, Options},
    outage::{alert_now, finished_run, post_alert, Debtflow},
};

const PLAYBOOK: &str = "payment_processor_outage";

fn stripe_major(w: &Debtflow) {
    w.stripe.behave(|b| {
        b.status_page = Some((
            200,
            json!({"status": {"indicator": "major", "description": "Elevated API error rates"}})
                .to_string(),
        ))
    });
}

fn with_page(w: &Debtflow, page: &FakeStatusPage, key: &str) -> Options {
    let mut opts = w.options("", GOOD_KEY);
    opts.extra_config.push_str(&page.config());
    opts.env.push(("STATUSPAGE_API_KEY".into(), key.into()));
    opts
}

/// The outage playbook's finished run for the alert (not the escalation table's runs).
async fn alert_run(d: &Daemon) -> Value {
    let list = d
        .poll(
            &format!("/api/v1/runs?playbook={PLAYBOOK}&limit=50"),
            Duration::from_secs(30),
            |v| {
                v.as_array().is_some_and(|r| {
                    r.iter().any(|r| {
                        r["trigger"]["kind"] == "alert"
                            && !matches!(r["status"].as_str(), Some("queued" | "running"))
                    })
                })
            },
        )
        .await;
    let id = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["trigger"]["kind"] == "alert")
        .and_then(|r| r["id"].as_str())
        .expect("an alert run")
        .to_string();
    d.get(&format!("/api/v1/runs/{id}")).await.1
}

/// Waits until the fake page satisfies `ok`.
async fn page_reaching(
    page: &FakeStatusPage,
    what: &str,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..200 {
        let incidents = page.incidents();
        if ok(&incidents) {
            return incidents;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the status page never got to {what}: {:#?}",
        page.incidents()
    );
}

fn updates(i: &Value) -> Vec<(String, String)> {
    i["incident_updates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            (
                u["status"].as_str().unwrap_or_default().to_string(),
                u["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_stripe_outage_is_told_to_users_once_updated_at_l2_and_resolved_with_the_alert() {
    let w = Debtflow::new().await;
    let page = FakeStatusPage::start().await;
    w.open_breaker(100.0).await;
    stripe_major(&w);
    let d = Daemon::start(&w.ws, &with_page(&w, &page, KEY));

    // The outage began 31 minutes ago: the escalation table's L2 is due at once, and runs
    // the outage playbook again after reconciliation.
    let mut alert = alert_now("PaymentProcessorDown", "fp-users", "firing");
    let began = chrono::Utc::now() - chrono::Duration::minutes(31);
    alert["alerts"][0]["startsAt"] =
        json!(began.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    post_alert(&d, &alert).await;
    let run = alert_run(&d).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["users"]["told"], true, "{}", run["result"]);

    let incidents = page_reaching(&page, "an L2 update", |i| {
        i.first().is_some_and(|i| updates(i).len() >= 2)
    })
    .await;
    assert_eq!(
        incidents.len(),
        1,
        "one status-page incident: {incidents:#?}"
    );
    let i = &incidents[0];
    let incident = run["event"]["incident"]
        .as_str()
        .expect("alert run has an incident");
    assert_eq!(
        i["metadata"]["runbookd"]["incident"], incident,
        "tied to runbookd's incident"
    );
    assert_eq!(i["name"], "Payment processing is temporarily unavailable");
    assert_eq!(
        page.component(),
        "partial_outage",
        "Stripe `major`: a partial outage for users"
    );
    let u = updates(i);
    assert_eq!(u[1].0, "investigating");
    assert!(u[1].1.contains("No payment is lost"), "{u:?}");
    assert_eq!(u[0].0, "identified", "{u:?}");
    assert!(
        u[0].1.contains("has not recovered yet (31 minutes so far)"),
        "{u:?}"
    );
    // What the pages say (L1, or L2 when it fired first: the outage is 31 minutes old).
    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident}")).await;
    let summary = inc["facts"]["summary"].as_str().unwrap_or_default();
    let link = format!("https://stspg.io/{}", i["id"].as_str().unwrap_or("?"));
    assert!(
        summary.contains(&format!("Users are told on the status page ({link})")),
        "{summary}"
    );
    assert_eq!(inc["facts"]["status_page"]["id"], i["id"], "{inc}");

    // Stripe recovers, the alert resolves: the page says so, the component is operational.
    post_alert(
        &d,
        &alert_now("PaymentProcessorDown", "fp-users", "resolved"),
    )
    .await;
    let incidents = page_reaching(&page, "resolved", |i| {
        i.first().is_some_and(|i| i["status"] == "resolved")
    })
    .await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(page.component(), "operational");
    let u = updates(&incidents[0]);
    assert_eq!(
        u.len(),
        3,
        "opened, escalated, resolved — nothing said twice: {u:?}"
    );
    assert!(u[0].1.contains("has recovered"), "{u:?}");
    assert_eq!(page.writes(), 3, "one request per change");

    // Audited, and the key is nowhere runbookd shows or writes.
    let (_, audit) = d.get("/api/v1/audit?limit=200").await;
    let acts: Vec<&str> = audit
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["action"].as_str())
        .filter(|a| a.starts_with("statuspage."))
        .collect();
    for a in ["statuspage.open", "statuspage.update", "statuspage.resolve"] {
        assert!(acts.contains(&a), "{a} audited: {acts:?}");
    }
    let (_, runs) = d.get("/api/v1/runs?logs=true&limit=50").await;
    assert!(!runs.to_string().contains(KEY) && !audit.to_string().contains(KEY));
    assert!(
        !d.logs().contains(KEY),
        "the API key leaked into the daemon's log"
    );
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_found_again_not_opened_twice() {
    let w = Debtflow::new().await;
    let page = FakeStatusPage::start().await;
    // The page creates the incident but the answer never arrives (503), then answers 503 to
    // the next request too: runbookd tries again, looks first, and finds it.
    page.with(|p| p.lose_create_answers = 1);
    w.open_breaker(100.0).await;
    stripe_major(&w);
    let d = Daemon::start(&w.ws, &with_page(&w, &page, KEY));
    post_alert(&d, &alert_now("PaymentProcessorDown", "fp-lost", "firing")).await;
    let run = finished_run(&d, PLAYBOOK, 1).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(page.incidents().len(), 1, "{:#?}", page.incidents());
    assert_eq!(run["result"]["users"]["told"], true, "{}", run["result"]);
    w.wait_page("Users are told on the status page").await;
}

#[tokio::test]
async fn a_refused_key_or_a_dry_run_changes_nothing_and_the_page_asks_a_human() {
    let w = Debtflow::new().await;
    let page = FakeStatusPage::start().await;
    w.open_breaker(100.0).await;
    stripe_major(&w);
    let d = Daemon::start(&w.ws, &with_page(&w, &page, "sp_wrong_key"));

    // An operator's dry run: the plan says it would tell users, and nothing is written.
    let (status, dry) = d.run_wait(PLAYBOOK, json!({"dry_run": true})).await;
    assert_eq!(status, 200, "{dry}");
    let planned: Vec<&Value> = dry["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["action"] == "statuspage.open")
        .collect();
    assert_eq!(planned.len(), 1, "{}", dry["actions"]);
    assert_eq!(planned[0]["outcome"], "planned");
    assert_eq!(page.writes(), 0);

    // The alert's run: the key is refused, users are not told, the L1 page says a human must.
    post_alert(&d, &alert_now("PaymentProcessorDown", "fp-key", "firing")).await;
    let run = finished_run(&d, PLAYBOOK, 2).await;
    assert_eq!(
        run["status"], "succeeded",
        "a status page failing does not fail the run: {run}"
    );
    assert_eq!(run["result"]["users"]["told"], false);
    let l1 = w.wait_page("runbookd did not").await;
    assert!(l1.contains("refused the API key (401)"), "{l1}");
    assert!(page.incidents().is_empty());
    assert!(page.with(|p| p.refused) > 0, "runbookd did call the page");
    assert!(
        !d.logs().contains("sp_wrong_key"),
        "the key leaked into the log"
    );
}

/// What the status-page table compares: everything but the ids each page makes up.
fn page_outcome(
    o: Result<
        runbookd::primitives::statuspage::Outcome,
        runbookd::primitives::statuspage::StatusPageError,
    >,
) -> serde_json::Value {
    use runbookd::primitives::statuspage::StatusPageError as E;
    match o {
        Ok(o) => serde_json::json!({
            "changed": o.changed, "note": o.note,
            "page": o.page.map(|p| serde_json::json!({
                "name": p.name, "status": p.status, "incident": p.incident, "last_update": p.last_update,
            })),
        }),
        // The texts name different transports; the kind of failure must agree.
        Err(E::Unavailable(_)) => serde_json::json!("unavailable"),
        Err(e) => serde_json::json!(e.to_string()),
    }
}

#[tokio::test]
async fn status_pages_http_and_simulated_answer_alike() {
    use runbookd::{
        config::StatusPageConfig,
        primitives::statuspage::{PageChange, StatusPage},
        sim::backends::statuspage::SimStatusPageBackend,
    };
    let fake = crate::fake_statuspage::FakeStatusPage::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("statuspage.key");
    std::fs::write(&key_file, crate::fake_statuspage::KEY).expect("key");
    let cfg = StatusPageConfig {
        api_base: fake.api_base(),
        page_id: Some(crate::fake_statuspage::PAGE.into()),
        api_key_file: Some(key_file),
        component_id: Some(crate::fake_statuspage::COMPONENT.into()),
        ..Default::default()
    };
    let http = StatusPage::new(&cfg);
    let world = runbookd::sim::World::new(
        runbookd::clock::Clock::virtual_at(chrono::Utc::now().timestamp_millis()),
        &runbookd::config::Config::default(),
    );
    let sim = StatusPage::with_backend(
        std::sync::Arc::new(SimStatusPageBackend {
            world: world.clone(),
        }),
        world.clock().clone(),
    );
    let change =
        |name: Option<&str>, status: &str, body: &str, component: Option<&str>| PageChange {
            name: name.map(String::from),
            status: status.into(),
            body: body.into(),
            component_status: component.map(String::from),
            incident: None,
        };
    let opening = change(
        Some("Payments unavailable"),
        "investigating",
        "Stripe is down.",
        Some("major_outage"),
    );
    let later = change(None, "identified", "Still down after 30 minutes.", None);
    let resolved = change(None, "resolved", "Recovered.", Some("operational"));
    // (operation, incident, change)
    let table: Vec<(&str, &str, PageChange)> = vec![
        ("find", "inc-a", opening.clone()),
        ("open", "inc-a", opening.clone()),
        ("find", "inc-a", opening.clone()),
        ("open", "inc-a", opening.clone()), // a retry or a second replica: found, not opened again
        (
            "open",
            "inc-b",
            change(
                Some("Other"),
                "investigating",
                "Another.",
                Some("partial_outage"),
            ),
        ),
        ("update", "inc-a", later.clone()),
        ("update", "inc-a", later.clone()), // says what the page says already
        (
            "update",
            "inc-a",
            change(
                None,
                "identified",
                "Still down after 60 minutes.",
                Some("major_outage"),
            ),
        ),
        ("update", "inc-a", resolved.clone()),
        ("update", "inc-a", resolved.clone()), // resolved: no longer among the open ones
        ("update", "inc-c", later.clone()),
    ];
    for (i, (op, incident, ch)) in table.into_iter().enumerate() {
        let mut answers = Vec::new();
        for page in [&http, &sim] {
            let outcome =
                match op {
                    "find" => page.find(incident).await.map(|p| {
                        runbookd::primitives::statuspage::Outcome {
                            page: p,
                            changed: false,
                            note: None,
                        }
                    }),
                    "open" => page.open(incident, ch.clone()).await,
                    _ => page.update(incident, ch.clone()).await,
                };
            answers.push((page_outcome(outcome), page.component().await.ok().flatten()));
        }
        assert_eq!(
            answers[0], answers[1],
            "step {i}: {op} {incident} (HTTP, then simulated)"
        );
    }
    assert_eq!(fake.incidents().len(), 2, "one page incident per incident");
    assert_eq!(
        world.status_page_view()["incidents"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Failures: the page down (503 to every attempt) and the key refused.
    fake.with(|p| p.fail_503 = 100);
    world.state().status_page.as_mut().expect("page").down = true;
    let down =
        [
            page_outcome(http.find("inc-b").await.map(|p| {
                runbookd::primitives::statuspage::Outcome {
                    page: p,
                    changed: false,
                    note: None,
                }
            })),
            page_outcome(sim.find("inc-b").await.map(|p| {
                runbookd::primitives::statuspage::Outcome {
                    page: p,
                    changed: false,
                    note: None,
                }
            })),
        ];
    assert_eq!(down[0], down[1]);
    assert_eq!(down[0], serde_json::json!("unavailable"));
    fake.with(|p| p.fail_503 = 0);
    world.state().status_page.as_mut().expect("page").down = false;
    let mut wrong = cfg.clone();
    let bad_key = dir.path().join("wrong.key");
    std::fs::write(&bad_key, "sp_wrong").expect("key");
    wrong.api_key_file = Some(bad_key);
    world
        .state()
        .status_page
        .as_mut()
        .expect("page")
        .key_rejected = true;
    let refused = [
        page_outcome(StatusPage::new(&wrong).open("inc-d", opening.clone()).await),
        page_outcome(sim.open("inc-d", opening.clone()).await),
    ];
    assert_eq!(refused[0], refused[1]);
    assert_eq!(
        refused[0],
        serde_json::json!("the status page refused the API key (401)")
    );
}
