//! The closed loop, every part real except Stripe: the app's breaker opens in Redis ⇒
//! runbookd's key metrics show it ⇒ real Prometheus (Debian's) fires `PaymentProcessorDown`
//! from `examples/prometheus/rules.yml` ⇒ real Alertmanager routes it with
//! `examples/alertmanager/alertmanager.yml` and a bearer token ⇒ the shipped outage playbook
//! diagnoses and acts ⇒ the alert resolves ⇒ the resolved run reconciles and the incident is
//! resolved. The example configs are used as shipped, with only their addresses and
//! intervals shortened (each substitution is checked, so the examples cannot drift).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

use crate::{
    fake_statuspage::{FakeStatusPage, KEY},
    fake_stripe::GOOD_KEY,
    helpers::{free_port, wait_listening, Daemon},
    outage::{finished_run, Debtflow},
};

const INGEST_TOKEN: &str = "alertmanager-ingest-token";
const VIEWER_TOKEN: &str = "sre-viewer-token";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `text` with `from` replaced by `to`; panics if the example no longer contains `from`.
fn substitute(text: String, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the example config no longer contains {from:?}"
    );
    text.replace(from, to)
}

/// The whole monitoring stack for one runbookd.
struct Stack {
    _prometheus: Process,
    _alertmanager: Process,
}

fn start_stack(dir: &Path, runbookd: &str) -> Stack {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Alertmanager, from the example: runbookd's address, a token file, short waits.
    let am_port = free_port();
    std::fs::write(dir.join("ingest-token"), INGEST_TOKEN).expect("token file");
    let am = std::fs::read_to_string(manifest.join("examples/alertmanager/alertmanager.yml"))
        .expect("example alertmanager.yml");
    let am = substitute(
        am,
        "http://127.0.0.1:8765/api/v1/alerts",
        &format!("http://{runbookd}/api/v1/alerts"),
    );
    let am = substitute(
        am,
        "/etc/runbookd/tokens/alertmanager",
        &dir.join("ingest-token").display().to_string(),
    );
    let am = substitute(am, "group_wait: 10s", "group_wait: 0s");
    let am = substitute(am, "group_interval: 1m", "group_interval: 1s");
    std::fs::write(dir.join("alertmanager.yml"), am).expect("write");
    let alertmanager = Process(
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (scripts/test installs it)"),
    );
    wait_listening(am_port, "Alertmanager");

    // Prometheus with the example rules: PaymentProcessorDown fires at once instead of 30 s.
    let rules = std::fs::read_to_string(manifest.join("examples/prometheus/rules.yml"))
        .expect("example rules");
    let rules = substitute(rules, "for: 30s", "for: 0s");
    // ... and PaymentsPendingTooLong (against the exported [payments] stale_after) at once.
    let rules = substitute(
        rules,
        "> runbookd_payments_stale_after_seconds\n        for: 1m",
        "> runbookd_payments_stale_after_seconds\n        for: 0s",
    );
    std::fs::write(dir.join("rules.yml"), rules).expect("write");
    let prom_port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{rules}\"]\n\
             alerting:\n  alertmanagers:\n    - static_configs: [{{ targets: [\"127.0.0.1:{am_port}\"] }}]\n\
             scrape_configs:\n  - job_name: runbookd\n    static_configs: [{{ targets: [\"{runbookd}\"] }}]\n",
            rules = dir.join("rules.yml").display()
        ),
    )
    .expect("write");
    let prometheus = Process(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (scripts/test installs it)"),
    );
    wait_listening(prom_port, "Prometheus");
    Stack {
        _prometheus: prometheus,
        _alertmanager: alertmanager,
    }
}

/// runbookd for the loop: tokens as in production (Alertmanager ingests, the test reads as
/// a viewer), key metrics measured every 300 ms.
fn start_runbookd(w: &Debtflow, status_page: Option<&FakeStatusPage>) -> Daemon {
    let mut opts = w.options("", GOOD_KEY);
    if let Some(page) = status_page {
        opts.extra_config.push_str(&page.config());
        opts.env.push(("STATUSPAGE_API_KEY".into(), KEY.into()));
    }
    opts.extra_config.push_str(
        "\n[[server.tokens]]\nname = \"alertmanager\"\ntoken_env = \"AM_TOKEN\"\nrole = \"ingest\"\n\
         [[server.tokens]]\nname = \"sre\"\ntoken_env = \"SRE_TOKEN\"\nrole = \"viewer\"\n\
",
    );
    opts.env
        .push(("RUNBOOKD_KEY_METRICS__INTERVAL".into(), "300ms".into()));
    opts.env.push(("AM_TOKEN".into(), INGEST_TOKEN.into()));
    opts.env.push(("SRE_TOKEN".into(), VIEWER_TOKEN.into()));
    opts.bearer = Some(VIEWER_TOKEN.into());
    Daemon::start(&w.ws, &opts)
}

async fn incident_of(d: &Daemon, run: &Value) -> Value {
    let id = run["event"]["incident"]
        .as_str()
        .expect("alert run has an incident");
    d.get(&format!("/api/v1/incidents/{id}")).await.1
}

#[tokio::test]
async fn stuck_breaker_closed_loop_resets_reconciles_and_resolves() {
    let w = Debtflow::new().await;
    w.stripe.intent("pi_paid", "succeeded", "ignored");
    let stale = w.app.payment("pending", 2400, Some("pi_paid")).await;
    let d = start_runbookd(&w, None);
    let _stack = start_stack(w.ws.dir.path(), &d.addr.to_string());

    // The app's workers gave up on Stripe 100 s ago; Stripe has since recovered.
    w.open_breaker(100.0).await;

    let run = finished_run(&d, "payment_processor_outage", 1).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["trigger"]["actor"], "alertmanager",
        "Alertmanager delivered it with its ingest token: {run}"
    );
    assert_eq!(run["event"]["name"], "PaymentProcessorDown");
    // The stale payment also fires PaymentsPendingTooLong: when Prometheus and Alertmanager
    // deliver that alert first, `reconcile_payments` has completed it before this run's
    // diagnosis reads the payments, and the diagnosis rightly finds nothing stale.
    let scenarios = run["result"]["scenarios"].clone();
    if scenarios != json!(["breaker_stuck", "stale_pending"]) {
        assert_eq!(scenarios, json!(["breaker_stuck"]), "{}", run["result"]);
        let reconcile = finished_run(&d, "reconcile_payments", 1).await;
        assert_eq!(
            reconcile["event"]["name"], "PaymentsPendingTooLong",
            "without stale_pending in the diagnosis, the payment was reconciled by the alert's own playbook: {reconcile}"
        );
    }
    assert_eq!(w.breaker_keys().await, 0, "the stuck breaker was reset");
    assert_eq!(w.app.status_of(&stale).await.0, "completed");
    w.wait_page("reset").await;

    // Prometheus sees the breaker closed, the alert resolves, Alertmanager says so.
    let resolved = finished_run(&d, "payment_processor_outage", 2).await;
    assert_eq!(resolved["event"]["status"], "resolved", "{resolved}");
    assert_eq!(resolved["status"], "succeeded", "{resolved}");
    let incident = d
        .poll(
            &format!(
                "/api/v1/incidents/{}",
                run["event"]["incident"].as_str().unwrap_or("")
            ),
            Duration::from_secs(10),
            |v| v["status"] == "resolved",
        )
        .await;
    assert_eq!(incident["status"], "resolved", "{incident}");
    w.wait_page("PaymentProcessorDown resolved").await;
}

#[tokio::test]
async fn stripe_down_closed_loop_leaves_the_breaker_alone_and_escalates() {
    let w = Debtflow::new().await;
    w.stripe.behave(|b| {
        b.status_page = Some((
            200,
            json!({"status": {"indicator": "critical", "description": "Stripe API unavailable"}})
                .to_string(),
        ))
    });
    let status_page = FakeStatusPage::start().await;
    // Pending for 40 minutes: over [payments] stale_after, which /metrics exports and the
    // PaymentsPendingTooLong rule compares with.
    w.app.payment("pending", 2400, None).await;
    let d = start_runbookd(&w, Some(&status_page));
    let _stack = start_stack(w.ws.dir.path(), &d.addr.to_string());
    w.open_breaker(100.0).await;

    let run = finished_run(&d, "payment_processor_outage", 1).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["result"]["scenarios"], json!(["stripe_down"]));
    assert_eq!(
        w.breaker_keys().await,
        3,
        "never reset while Stripe is down"
    );
    let page = w.wait_page("Stripe API unavailable").await;
    assert!(page.contains("L1"), "{page}");
    let incident = incident_of(&d, &run).await;
    assert_eq!(incident["level"], "L1", "{incident}");
    assert_eq!(incident["facts"]["stripe_degraded"], true, "{incident}");
    assert_eq!(incident["status"], "open", "still firing: {incident}");
    // The stale payment: Prometheus fired PaymentsPendingTooLong on runbookd's own threshold.
    let reconcile = finished_run(&d, "reconcile_payments", 1).await;
    assert_eq!(
        reconcile["event"]["name"], "PaymentsPendingTooLong",
        "{reconcile}"
    );
    // Users were told: one status-page incident, Payments a major outage (Stripe critical).
    let opened = status_page.incidents();
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert_eq!(
        opened[0]["metadata"]["runbookd"]["incident"],
        incident["id"]
    );
    assert_eq!(status_page.component(), "major_outage");

    // Stripe recovers and the app's half-open trial closes the breaker: Prometheus resolves
    // the alert, Alertmanager says so, the resolved run tells users and closes the incident.
    w.stripe.behave(|b| {
        b.status_page = Some((
            200,
            json!({"status": {"indicator": "none", "description": "All Systems Operational"}})
                .to_string(),
        ))
    });
    w.close_breaker().await;
    let resolved = finished_run(&d, "payment_processor_outage", 2).await;
    assert_eq!(resolved["event"]["status"], "resolved", "{resolved}");
    assert_eq!(
        resolved["result"]["users"]["told"], true,
        "{}",
        resolved["result"]
    );
    let after = status_page.incidents();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["status"], "resolved", "{after:#?}");
    assert_eq!(status_page.component(), "operational");
    let incident = d
        .poll(
            &format!(
                "/api/v1/incidents/{}",
                incident["id"].as_str().unwrap_or("")
            ),
            Duration::from_secs(10),
            |v| v["status"] == "resolved",
        )
        .await;
    assert_eq!(incident["status"], "resolved", "{incident}");
}
