//! End to end with the real Prometheus Alertmanager from Debian: an alert posted to
//! Alertmanager's API reaches runbookd through its webhook (bearer token), runs the
//! playbook, and its expiry resolves the incident.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

use crate::{
    helpers::{free_port, wait_listening, Daemon, Db, Options, Workspace},
    notify::Sink,
};

struct Alertmanager {
    child: Child,
    url: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_alertmanager(dir: &std::path::Path, runbookd: &str, token: &str) -> Alertmanager {
    let port = free_port();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: runbookd\n  group_by: ['alertname']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: runbookd\n    webhook_configs:\n      - url: {runbookd}/api/v1/alerts\n        send_resolved: true\n\
             \x20       http_config:\n          authorization:\n            credentials: {token}\n"
        ),
    )
    .expect("config");
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager (scripts/test installs it)");
    wait_listening(port, "Alertmanager");
    Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test]
async fn alertmanager_pages_runbookd_and_resolution_closes_the_incident() {
    let ws = Workspace::new(Db::Sqlite).await;
    let oncall = Sink::start(vec![]).await;
    std::fs::write(
        ws.dir.path().join("escalation.toml"),
        "[[levels]]\nname = \"L1\"\ncondition = 'facts.stripe_degraded == true'\nchannels = [\"oncall\"]\n\n\
         [[levels]]\nname = \"P1\"\ncondition = 'age > 3600.0'\nchannels = [\"oncall\"]\n",
    )
    .expect("table");
    ws.write_playbook(
        "responder",
        r#"
fn triggers() { [#{ alert: "PaymentProcessorDown", on_resolved: true }] }
fn run(event) {
    if event.status == "firing" { set_fact("stripe_degraded", true); }
    event.status
}
"#,
    );
    let d = Daemon::start(
        &ws,
        &Options {
            bearer: None,
            serve_args: Vec::new(),
            extra_config: format!(
                "[[server.tokens]]\nname = \"alertmanager\"\ntoken_env = \"AM_TOKEN\"\nrole = \"ingest\"\n\
                 [[server.tokens]]\nname = \"sre\"\ntoken_env = \"SRE_TOKEN\"\nrole = \"viewer\"\n\
                 [channels.oncall]\ntype = \"slack\"\nurl = \"{}\"\n",
                oncall.url()
            ),
            env: vec![
                ("AM_TOKEN".into(), "am-secret".into()),
                ("SRE_TOKEN".into(), "sre-secret".into()),
                ("RUNBOOKD_ESCALATION__INTERVAL".into(), "200ms".into()),
            ],
        },
    );
    let am = start_alertmanager(ws.dir.path(), &format!("http://{}", d.addr), "am-secret");
    let client = reqwest::Client::new();
    let get = |path: String| {
        let c = d.client.clone();
        let url = d.url(&path);
        async move {
            c.get(url)
                .bearer_auth("sre-secret")
                .send()
                .await
                .expect("get")
                .json::<Value>()
                .await
                .unwrap_or(Value::Null)
        }
    };
    let alert = |ends: Option<String>| {
        let mut a = json!({
            "labels": {"alertname": "PaymentProcessorDown", "service": "payments", "severity": "critical"},
            "annotations": {"summary": "Stripe circuit breaker is open"},
        });
        if let Some(e) = ends {
            a["endsAt"] = json!(e);
        }
        json!([a])
    };
    // Alertmanager may need a moment before its API accepts alerts.
    let mut posted = false;
    for _ in 0..100 {
        if let Ok(r) = client
            .post(format!("{}/api/v2/alerts", am.url))
            .json(&alert(None))
            .send()
            .await
        {
            if r.status().is_success() {
                posted = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(posted, "Alertmanager did not accept the alert");

    let mut incident = Value::Null;
    for _ in 0..100 {
        let list = get("/api/v1/incidents".into()).await;
        if list[0]["level"] == "L1" {
            incident = list[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        incident["level"],
        "L1",
        "the playbook ran and escalated: {}",
        d.logs()
    );
    // The fingerprint real Alertmanager sent is the one simulations compute from labels.
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_value(incident["labels"].clone()).expect("incident labels");
    assert_eq!(
        incident["key"],
        format!(
            "fingerprint:{}",
            runbookd::dispatch::admission::fingerprint(&labels)
        ),
        "Alertmanager's fingerprint of {labels:?}"
    );
    let runs = get("/api/v1/runs?logs=true&playbook=responder".into()).await;
    assert_eq!(
        runs[0]["trigger"]["actor"], "alertmanager",
        "Alertmanager authenticated with its token"
    );
    assert_eq!(runs[0]["result"], "firing");

    // Expire the alert: Alertmanager sends the resolution, the resolved run closes the incident.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = client
        .post(format!("{}/api/v2/alerts", am.url))
        .json(&alert(Some(now)))
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success());
    let id = incident["id"].as_str().expect("id").to_string();
    let mut resolved = Value::Null;
    for _ in 0..150 {
        resolved = get(format!("/api/v1/incidents/{id}")).await;
        if resolved["status"] == "resolved" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    let runs = get("/api/v1/runs?logs=true&playbook=responder".into()).await;
    assert_eq!(runs[0]["result"], "resolved", "{runs}");
    // And the channel that was paged hears of the resolution.
    let all = oncall.wait_for(2, Duration::from_secs(10)).await;
    assert!(
        all[1].2["text"].as_str().unwrap_or("").contains("RESOLVED"),
        "{:?}",
        all[1].2
    );
}
