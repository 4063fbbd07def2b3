//! The dashboard in a real browser: Debian's Chromium, headless, driven through
//! ChromeDriver (WebDriver) against the real daemon. Logging in, reading an incident an
//! Alertmanager payload opened, acknowledging it with the page's button, approving from the
//! page and watching the follow-up run arrive without a reload, a viewer with no working
//! buttons, the run page's log and actions.
//!
//! `RUNBOOKD_SCREENSHOTS=DIR` keeps the screenshots (overview, incident, run, phone in dark
//! mode) in DIR; `docs/dashboard.md` shows them (see there for the command).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::{
    approvals::with_tokens,
    helpers::{free_port, wait_listening, Daemon, Db, Workspace},
    outage::alert_now,
};

/// An alert opens the incident; the run diagnoses, records a summary and asks to reset the
/// breaker; the approved follow-up run does it (here: records that it did).
const GATE: &str = r#"
fn triggers() { [#{ alert: "PaymentProcessorDown" }] }
fn run(event) {
    if event.kind == "approval" && event.approval.decision != "approved" {
        return #{ did: "nothing" };
    }
    if event.kind != "approval" {
        log("diagnosis: Stripe healthy, breaker stuck open for 4 min");
        log("warn", "payments fail fast against a healthy Stripe");
        set_fact("summary", "Stripe healthy; breaker stuck open");
        set_fact("breaker_open", true);
    }
    let ask = #{ action: "breaker.reset", target: "stripe", reason: "Stripe healthy, breaker stuck open" };
    if !approved(ask) { return #{ did: "asked" }; }
    log(`approved by ${event.approval.approver}: resetting the breaker`);
    set_fact("breaker_reset_by", event.approval.approver);
    #{ did: "reset" }
}
"#;

const WAIT: Duration = Duration::from_secs(20);

/// Chromium under ChromeDriver, with a profile of its own.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(extra_args: &[&str]) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; scripts/test installs it)");
        wait_listening(port, "chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            // The machine's network is closed: nothing but loopback.
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let caps = json!({
            "goog:chromeOptions": { "binary": chromium(), "args": args }
        });
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.as_object().cloned().unwrap_or_default());
        let client = builder
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session in Chromium");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("`{css}` did not appear: {e}"))
    }

    /// Retries `act` on the element `css` while the live page replaces it (a refresh swaps
    /// `<main>` between finding an element and using it).
    async fn on<T>(
        &self,
        css: &str,
        act: impl for<'a> Fn(
            &'a Element,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, fantoccini::error::CmdError>> + 'a>,
        >,
    ) -> T {
        for _ in 0..50 {
            let el = self.find(css).await;
            match act(&el).await {
                Ok(v) => return v,
                // Replaced, or detached and not yet laid out again: find it anew.
                Err(fantoccini::error::CmdError::Standard(w))
                    if matches!(
                        w.error,
                        fantoccini::error::ErrorStatus::StaleElementReference
                            | fantoccini::error::ErrorStatus::ElementNotInteractable
                    ) =>
                {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("`{css}`: {e}"),
            }
        }
        panic!("`{css}` kept being replaced");
    }

    async fn text(&self, css: &str) -> String {
        self.on(css, |e| Box::pin(e.text())).await
    }

    async fn click(&self, css: &str) {
        self.on(css, |e| Box::pin(e.click())).await
    }

    async fn type_into(&self, css: &str, text: &str) {
        let text = text.to_string();
        self.on(css, move |e| {
            let text = text.clone();
            Box::pin(async move { e.send_keys(&text).await })
        })
        .await
    }

    async fn login(&self, d: &Daemon, token: &str) {
        self.client.goto(&d.url("/")).await.expect("goto /");
        // Not logged in: the page sends us to /login, and back after.
        self.type_into("form[action='/login'] input[name=token]", token)
            .await;
        self.click("form[action='/login'] button").await;
        self.find("#incidents").await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = std::env::var_os("RUNBOOKD_SCREENSHOTS") {
            let path = PathBuf::from(dir).join(format!("{name}.png"));
            std::fs::write(&path, png).expect("write screenshot");
        }
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromium() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("chromium")
        .to_string()
}

/// Polls the API until `done` holds for the answer at `path`.
async fn api_until(d: &Daemon, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    d.poll(path, WAIT, done).await
}

#[tokio::test]
async fn an_sre_reads_acknowledges_and_approves_in_the_browser() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("outage_gate", GATE);
    let opts = with_tokens("");
    let d = Daemon::start(&ws, &opts);
    // Bob's token posts the alert, so the run asks on bob's behalf and alice may approve.
    let r = reqwest::Client::new()
        .post(d.url("/api/v1/alerts"))
        .bearer_auth("bob-secret")
        .json(&alert_now("PaymentProcessorDown", "fp-browser", "firing"))
        .send()
        .await
        .expect("post alert");
    assert_eq!(r.status().as_u16(), 200);
    let runs = api_until(&d, "/api/v1/runs?playbook=outage_gate", |v| {
        v[0]["status"] == "awaiting_approval"
    })
    .await;
    let first_run = runs[0]["id"].as_str().expect("run id").to_string();
    let incidents = d.get("/api/v1/incidents").await.1;
    let incident = incidents[0]["id"].as_str().expect("incident").to_string();
    let approval = d.get("/api/v1/approvals?status=pending").await.1[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no pending approval; runs: {runs}"))
        .to_string();

    let b = Browser::start(&[]).await;
    b.login(&d, "alice-secret").await;
    // The overview: the incident with its summary and last run, the pending approval, the
    // breaker list, the run.
    let card = b.text(&format!("[data-incident='{incident}']")).await;
    assert!(card.contains("PaymentProcessorDown"), "{card}");
    assert!(
        card.contains("Stripe healthy; breaker stuck open"),
        "{card}"
    );
    assert!(card.contains("outage_gate"), "last run: {card}");
    let run_row = b.text(&format!("#runs tr[data-run='{first_run}']")).await;
    assert!(run_row.contains("awaiting_approval"), "{run_row}");
    b.find(&format!(
        "#approvals [data-approval='{approval}'] button[data-action=approve]"
    ))
    .await;
    assert!(b.text(".who").await.contains("alice (operator)"));
    b.screenshot("overview").await;

    // The incident page: timeline, facts, escalation; the Acknowledge button acknowledges.
    b.click(&format!("[data-incident='{incident}'] a")).await;
    let timeline = b.text("#timeline").await;
    assert!(timeline.contains("outage_gate"), "{timeline}");
    assert!(
        timeline.contains("asked to approve breaker.reset stripe"),
        "{timeline}"
    );
    let facts = b.text("#facts").await;
    assert!(facts.contains("breaker_open"), "{facts}");
    let escalation = b.text("#escalation").await;
    assert!(
        escalation.contains("L1") && escalation.contains("P1"),
        "{escalation}"
    );
    b.screenshot("incident").await;
    b.click("button[data-action=ack]").await;
    b.find("#incident-status .s-acknowledged").await;
    let acked = d.get(&format!("/api/v1/incidents/{incident}")).await.1;
    assert_eq!(acked["status"], "acknowledged", "{acked}");
    assert_eq!(acked["acked_by"], "alice", "{acked}");

    // Back to the overview; approve there, and the follow-up run arrives without a reload.
    b.click("header.top a.brand").await;
    b.find(&format!("[data-approval='{approval}']")).await;
    b.find("body[data-live='connected']").await;
    b.client
        .execute("window.__sameDocument = 'yes'; return true;", vec![])
        .await
        .expect("mark the document");
    b.type_into(
        &format!("[data-approval='{approval}'] input[name=comment]"),
        "breaker stuck, Stripe green",
    )
    .await;
    b.click(&format!(
        "[data-approval='{approval}'] button[data-action=approve]"
    ))
    .await;
    let decided = api_until(&d, &format!("/api/v1/approvals/{approval}"), |v| {
        v["used_by_run"].is_string()
    })
    .await;
    assert_eq!(decided["decisions"][0]["by"], "alice", "{decided}");
    assert_eq!(
        decided["decisions"][0]["comment"],
        "breaker stuck, Stripe green"
    );
    let follow_up = decided["used_by_run"]
        .as_str()
        .unwrap_or_else(|| panic!("no follow-up run: {decided}"))
        .to_string();
    b.find(&format!("#runs tr[data-run='{follow_up}'] .s-succeeded"))
        .await;
    let same = b
        .client
        .execute("return window.__sameDocument || 'reloaded';", vec![])
        .await
        .expect("read the mark");
    assert_eq!(same, json!("yes"), "the page was reloaded");

    // The run page: log with levels, actions with outcomes, the result.
    b.client
        .goto(&d.url(&format!("/runs/{first_run}")))
        .await
        .expect("run page");
    let log = b.text("#log").await;
    assert!(
        log.contains("diagnosis: Stripe healthy, breaker stuck open"),
        "{log}"
    );
    assert!(log.contains("warn"), "levels shown: {log}");
    let actions = b.text("#actions").await;
    assert!(actions.contains("incident.set_fact"), "{actions}");
    assert!(actions.contains("done"), "{actions}");
    assert!(b.text("#result").await.contains("asked"));
    b.screenshot("run").await;

    // Log out; a viewer sees everything and no working button.
    b.click("form.logout button").await;
    b.find("form[action='/login']").await;
    b.login(&d, "carol-secret").await;
    assert!(b.text(".who").await.contains("carol (viewer)"));
    b.client
        .goto(&d.url(&format!("/incidents/{incident}")))
        .await
        .expect("incident as viewer");
    b.find("#timeline").await;
    let enabled = b
        .client
        .find_all(Locator::Css("main button:not([disabled])"))
        .await
        .expect("buttons");
    assert!(
        enabled.is_empty(),
        "a viewer has {} working buttons",
        enabled.len()
    );
    b.find("main button[disabled]").await;
    // A forged post from the viewer's own page, with the page's CSRF token: refused by role.
    let forged = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const csrf = document.querySelector('form.logout input[name=csrf]').value;
             fetch(arguments[0], {method: 'POST', body: new URLSearchParams({csrf}), credentials: 'same-origin'})
               .then(r => done(r.status), e => done(String(e)));",
            vec![json!(format!("/incidents/{incident}/resolve"))],
        )
        .await
        .expect("forged post");
    assert_eq!(forged, json!(403), "a viewer's post");
    let still = d.get(&format!("/api/v1/incidents/{incident}")).await.1;
    assert_eq!(still["status"], "acknowledged", "{still}");
    b.close().await;

    // A phone in dark mode, for the docs.
    let phone = Browser::start(&["--force-dark-mode", "--window-size=390,844"]).await;
    phone.login(&d, "carol-secret").await;
    phone.screenshot("overview-phone-dark").await;
    phone.close().await;
}
