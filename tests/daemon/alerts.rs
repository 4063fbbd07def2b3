//! Alertmanager webhooks into incidents and runs; the incident API and primitives.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Daemon, Db, Options, Workspace};

/// An Alertmanager v4 notification with one alert per (fingerprint, status).
pub fn notification(alerts: &[(&str, &str, &str)]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(name, fingerprint, status)| {
            json!({
                "status": status,
                "labels": {"alertname": name, "service": "payments", "severity": "critical"},
                "annotations": {"summary": format!("{name} on payments")},
                "startsAt": "2026-11-27T10:00:00Z",
                "endsAt": if *status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-11-27T10:30:00Z" },
                "generatorURL": "http://prometheus/graph",
                "fingerprint": fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"X\"}", "truncatedAlerts": 0,
        "status": alerts.first().map(|a| a["status"].clone()).unwrap_or(json!("firing")),
        "receiver": "runbookd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager", "notification_reason": "new", "routeLabels": {},
        "alerts": alerts,
    })
}

const RESPONDER: &str = r#"
fn triggers() { [#{ alert: "PaymentProcessorDown", labels: #{ service: "payments" }, on_resolved: true, cooldown: "3s" }] }
fn run(event) {
    if event.status == "firing" {
        set_fact("stripe_status", "major");
        note("investigating");
        escalate("L1", "Stripe degraded, breaker handling it");
    }
    sleep(event.params.hold ?? 0.0);
    #{ status: event.status, incident: event.incident, level: incident().level, facts: incident().facts }
}
"#;

pub async fn post(d: &Daemon, body: &Value) -> (u16, Value) {
    let resp = d
        .client
        .post(d.url("/api/v1/alerts"))
        .json(body)
        .send()
        .await
        .expect("post");
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

async fn wait_runs(d: &Daemon, playbook: &str, n: usize) -> Vec<Value> {
    let list = d
        .poll(
            &format!("/api/v1/runs?logs=true&playbook={playbook}"),
            Duration::from_secs(5),
            |v| {
                v.as_array().is_some_and(|a| {
                    a.len() >= n
                        && a.iter()
                            .all(|r| r["status"] == "succeeded" || r["status"] == "failed")
                })
            },
        )
        .await;
    list.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn firing_alert_opens_an_incident_and_runs_the_playbook() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("responder", RESPONDER);
    let d = Daemon::start(&ws, &Options::default());
    // Started a minute ago: the evaluator's first pass may see the incident, and a
    // PaymentProcessorDown firing for hours would rightly be P1 already.
    let started = (chrono::Utc::now() - chrono::Duration::seconds(60))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut n = notification(&[("PaymentProcessorDown", "fp1", "firing")]);
    n["alerts"][0]["startsAt"] = json!(started);
    let (s, body) = post(&d, &n).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["alerts"][0]["runs"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    let incident_id = body["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let runs = wait_runs(&d, "responder", 1).await;
    let run = &runs[0];
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["event"]["kind"], "alert");
    assert_eq!(run["event"]["labels"]["service"], "payments");
    assert_eq!(run["trigger"]["kind"], "alert");
    assert_eq!(run["result"]["incident"], incident_id.as_str());
    assert_eq!(run["result"]["level"], "L1");
    assert_eq!(run["result"]["facts"]["stripe_status"], "major");

    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident_id}")).await;
    assert_eq!(
        inc["opened_at"],
        started.as_str(),
        "start time from startsAt"
    );
    assert_eq!(inc["title"], "PaymentProcessorDown on payments");
    assert_eq!(inc["level"], "L1");
    // The playbook's lines. The escalation evaluator's first pass, made when the daemon
    // starts, may come after the playbook's `escalate` and page L1 ("paged"): that is its
    // own behaviour, tested in escalation.rs, and how it falls against this run is timing
    // (it failed a CI run once).
    let kinds: Vec<&str> = inc["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .filter(|k| *k != "paged")
        .collect();
    assert_eq!(kinds, vec!["opened", "note", "escalated"], "{inc}");
}

#[tokio::test]
async fn duplicate_deliveries_start_nothing_new_and_cooldown_holds() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("responder", RESPONDER);
    let d = Daemon::start(&ws, &Options::default());
    let n = notification(&[("PaymentProcessorDown", "fp1", "firing")]);
    // An HA pair delivers the same notification twice, at the same moment.
    let (a, b) = tokio::join!(post(&d, &n), post(&d, &n));
    assert_eq!((a.0, b.0), (200, 200));
    let started = a.1["alerts"][0]["runs"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
        + b.1["alerts"][0]["runs"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
    assert_eq!(started, 1, "{a:?} {b:?}");
    assert_eq!(
        a.1["alerts"][0]["incident"], b.1["alerts"][0]["incident"],
        "one incident"
    );
    wait_runs(&d, "responder", 1).await;
    // Resent within the trigger's 3 s cooldown: nothing.
    let (_, c) = post(&d, &n).await;
    assert!(
        c["alerts"][0]["notes"][0]
            .as_str()
            .unwrap_or("")
            .contains("cooldown"),
        "{c}"
    );
    // After the cooldown, repeat_interval's resend runs the playbook again.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (_, e) = post(&d, &n).await;
    assert_eq!(
        e["alerts"][0]["runs"].as_array().map(Vec::len),
        Some(1),
        "{e}"
    );
    let metrics = d.metrics().await;
    assert!(
        metrics.contains(r#"runbookd_alerts_total{reason="deduplicated"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn resolved_alert_runs_opted_in_playbooks_then_resolves_the_incident() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("responder", RESPONDER);
    ws.write_playbook(
        "silent",
        "fn triggers() { [#{ alert: \"Other\" }] }\nfn run(event) { event.status }\n",
    );
    let d = Daemon::start(&ws, &Options::default());
    let (_, fired) = post(
        &d,
        &notification(&[
            ("PaymentProcessorDown", "fp1", "firing"),
            ("Other", "fp2", "firing"),
        ]),
    )
    .await;
    let inc1 = fired["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let inc2 = fired["alerts"][1]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    assert_ne!(inc1, inc2);
    wait_runs(&d, "responder", 1).await;
    let (_, res) = post(
        &d,
        &notification(&[
            ("PaymentProcessorDown", "fp1", "resolved"),
            ("Other", "fp2", "resolved"),
        ]),
    )
    .await;
    assert_eq!(
        res["alerts"][0]["runs"].as_array().map(Vec::len),
        Some(1),
        "on_resolved: true runs: {res}"
    );
    assert_eq!(
        res["alerts"][1]["runs"].as_array().map(Vec::len),
        Some(0),
        "no on_resolved: no run"
    );
    let runs = wait_runs(&d, "responder", 2).await;
    assert_eq!(runs[0]["result"]["status"], "resolved");
    let inc = d
        .poll(
            &format!("/api/v1/incidents/{inc1}"),
            Duration::from_secs(5),
            |v| v["status"] == "resolved",
        )
        .await;
    assert_eq!(inc["status"], "resolved", "resolved after its run: {inc}");
    let (_, other) = d.get(&format!("/api/v1/incidents/{inc2}")).await;
    assert_eq!(
        other["status"], "resolved",
        "resolved at once without a run"
    );
    let (_, silent) = d.get("/api/v1/runs?logs=true&playbook=silent").await;
    assert_eq!(silent.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn malformed_unmatched_and_unauthorised_alerts() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("responder", RESPONDER);
    let d = Daemon::start(
        &ws,
        &Options {
            bearer: None,
            serve_args: Vec::new(),
            extra_config: "[[server.tokens]]\nname = \"alertmanager\"\ntoken_env = \"AM\"\nrole = \"ingest\"\n\
                           [[server.tokens]]\nname = \"grafana\"\ntoken_env = \"VIEW\"\nrole = \"viewer\"\n".into(),
            env: vec![("AM".into(), "am-token".into()), ("VIEW".into(), "view-token".into())],
        },
    );
    let send = |token: &'static str, body: String| {
        d.client
            .post(d.url("/api/v1/alerts"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let good = notification(&[("Unrelated", "fpX", "firing")]).to_string();
    assert_eq!(
        send("view-token", good.clone())
            .await
            .expect("post")
            .status()
            .as_u16(),
        403
    );
    let r = send("am-token", good).await.expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["alerts"][0]["notes"][0]
            .as_str()
            .unwrap_or("")
            .contains("no playbook"),
        "{v}"
    );

    let mut bad = notification(&[("PaymentProcessorDown", "fp1", "firing")]);
    bad["alerts"][0]["startsAt"] = json!("not a time");
    let r = send("am-token", bad.to_string()).await.expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await.expect("json");
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("alerts[0].startsAt"),
        "{e}"
    );
    let r = send("am-token", "{\"version\": \"4\"}".into())
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let r = send("am-token", "[]".into()).await.expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let metrics = d.metrics().await;
    assert!(
        metrics.contains(r#"runbookd_alerts_total{reason="unmatched"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn bursts_of_alerts_are_all_accounted_for() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("responder", RESPONDER);
    let d = Daemon::start(&ws, &Options::default());
    let fps: Vec<String> = (0..500).map(|i| format!("fp{i}")).collect();
    let mut sends = Vec::new();
    for chunk in fps.chunks(50) {
        let alerts: Vec<(&str, &str, &str)> = chunk
            .iter()
            .map(|f| ("PaymentProcessorDown", f.as_str(), "firing"))
            .collect();
        let body = notification(&alerts);
        let client = d.client.clone();
        let url = d.url("/api/v1/alerts");
        sends.push(tokio::spawn(async move {
            let r = client.post(url).json(&body).send().await.expect("post");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }));
    }
    let mut runs = 0;
    for s in sends {
        let (status, body) = s.await.expect("join");
        assert_eq!(status, 200, "{body}");
        runs += body["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .filter(|a| a["runs"].as_array().map(Vec::len) == Some(1))
            .count();
    }
    assert_eq!(runs, 500, "every alert started its run");
    let (_, incidents) = d.get("/api/v1/incidents?limit=1000").await;
    assert_eq!(incidents.as_array().map(Vec::len), Some(500));
    let all = d
        .poll(
            "/api/v1/runs?logs=true&status=succeeded&limit=1000",
            Duration::from_secs(30),
            |v| v.as_array().map(Vec::len) == Some(500),
        )
        .await;
    assert_eq!(all.as_array().map(Vec::len), Some(500), "no run lost");
}

/// One notification of 250 new alerts, recorded in turns of 100 (`ALERTS_PER_TURN`), is
/// written whole, on either store. (How a batch past one statement's rows is split is unit
/// tested: `store::json_rows::tests`.)
#[tokio::test]
async fn a_notification_of_250_alerts_is_recorded_whole() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("responder", RESPONDER);
    let d = Daemon::start(&ws, &Options::default());
    let fps: Vec<String> = (0..250).map(|i| format!("big{i}")).collect();
    let alerts: Vec<(&str, &str, &str)> = fps
        .iter()
        .map(|f| ("PaymentProcessorDown", f.as_str(), "firing"))
        .collect();
    let (status, body) = post(&d, &notification(&alerts)).await;
    assert_eq!(status, 200, "{body}");
    let answered = body["alerts"].as_array().expect("alerts");
    assert_eq!(answered.len(), 250);
    let mut incidents: Vec<&str> = answered
        .iter()
        .filter_map(|a| a["incident"].as_str())
        .collect();
    incidents.sort_unstable();
    incidents.dedup();
    assert_eq!(incidents.len(), 250, "one incident per alert");
    let (_, stored) = d.get("/api/v1/incidents?limit=1000").await;
    assert_eq!(stored.as_array().map(Vec::len), Some(250));
    for id in &incidents {
        let (_, inc) = d.get(&format!("/api/v1/incidents/{id}")).await;
        let kinds: Vec<&str> = inc["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .filter_map(|t| t["kind"].as_str())
            .collect();
        assert_eq!(kinds.first(), Some(&"opened"), "{inc}");
    }
    let all = d
        .poll(
            "/api/v1/runs?status=succeeded&limit=1000",
            Duration::from_secs(30),
            |v| v.as_array().map(Vec::len) == Some(250),
        )
        .await;
    assert_eq!(all.as_array().map(Vec::len), Some(250), "no run lost");
}

#[tokio::test]
async fn incidents_can_be_acknowledged_and_resolved_by_an_operator() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("responder", RESPONDER);
    let d = Daemon::start(&ws, &Options::default());
    let (_, fired) = post(
        &d,
        &notification(&[("PaymentProcessorDown", "fp1", "firing")]),
    )
    .await;
    let id = fired["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let ack = |id: String| {
        d.client
            .post(d.url(&format!("/api/v1/incidents/{id}/ack")))
            .send()
    };
    let r = ack(id.clone()).await.expect("ack");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        (v["status"].as_str(), v["acked_by"].as_str()),
        (Some("acknowledged"), Some("local"))
    );
    assert_eq!(ack(id.clone()).await.expect("ack").status().as_u16(), 409);
    let r = d
        .client
        .post(d.url(&format!("/api/v1/incidents/{id}/resolve")))
        .send()
        .await
        .expect("resolve");
    assert_eq!(r.status().as_u16(), 200);
    let r = d
        .client
        .post(d.url(&format!("/api/v1/incidents/{id}/resolve")))
        .send()
        .await
        .expect("resolve");
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(
        ack("nope".into()).await.expect("ack").status().as_u16(),
        404
    );
    let (_, open) = d.get("/api/v1/incidents?status=open").await;
    assert_eq!(open, json!([]));
    // A new firing of the same alert after resolution is a new incident.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, again) = post(
        &d,
        &notification(&[("PaymentProcessorDown", "fp1", "firing")]),
    )
    .await;
    assert_ne!(again["alerts"][0]["incident"].as_str(), Some(id.as_str()));
}

#[tokio::test]
async fn two_replicas_receiving_the_same_alerts_open_one_incident_and_one_run_each() {
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook(
        "responder",
        "fn triggers() { [#{ alert: \"PaymentProcessorDown\" }] }\nfn run(event) { sleep(0.2); 1 }\n",
    );
    let a = Daemon::start(&ws, &Options::default());
    let b = Daemon::start(&ws, &Options::default());
    // An HA Alertmanager pair behind a load balancer: each notification reaches both
    // replicas at the same moment.
    let mut sends = Vec::new();
    for i in 0..20 {
        let body = notification(&[("PaymentProcessorDown", &format!("fp-ha-{i}"), "firing")]);
        for d in [&a, &b] {
            let (client, url, body) = (d.client.clone(), d.url("/api/v1/alerts"), body.clone());
            sends.push(tokio::spawn(async move {
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .expect("post")
                    .status()
                    .as_u16()
            }));
        }
    }
    for s in sends {
        assert_eq!(s.await.expect("join"), 200);
    }
    let incidents = a.get("/api/v1/incidents?limit=1000").await.1;
    assert_eq!(
        incidents.as_array().map(Vec::len),
        Some(20),
        "one incident per alert: {incidents}"
    );
    let runs = a
        .get("/api/v1/runs?logs=true&playbook=responder&limit=1000")
        .await
        .1;
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(20),
        "one run per alert: {runs}"
    );
}

#[tokio::test]
async fn a_single_alert_is_not_stuck_behind_huge_notifications() {
    let ws = Workspace::new(Db::Sqlite).await;
    let d = std::sync::Arc::new(Daemon::start(&ws, &Options::default()));
    let huge = |n: usize| {
        let names: Vec<String> = (0..3000).map(|i| format!("fp-huge-{n}-{i}")).collect();
        let refs: Vec<(&str, &str, &str)> = names
            .iter()
            .map(|f| ("Crowd", f.as_str(), "firing"))
            .collect();
        notification(&refs)
    };
    let mut big = Vec::new();
    for n in 0..3 {
        let d = d.clone();
        let body = huge(n);
        big.push(tokio::spawn(async move { post(&d, &body).await.0 }));
    }
    // Once the crowd is being recorded, one urgent alert arrives.
    d.poll("/api/v1/incidents?limit=1", Duration::from_secs(10), |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let sent = std::time::Instant::now();
    let (s, body) = post(
        &d,
        &notification(&[("PaymentProcessorDown", "fp-urgent", "firing")]),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    eprintln!(
        "single alert answered in {:?} beside 3 × 3,000 alerts",
        sent.elapsed()
    );
    let still_recording = big.iter().filter(|t| !t.is_finished()).count();
    assert!(
        still_recording > 0,
        "the single alert was answered only after all 9,000 others"
    );
    for t in big {
        assert_eq!(t.await.expect("task"), 200);
    }
}

/// One notification that opens an incident and resolves it again (Alertmanager sends such
/// pairs when an alert flaps inside one group interval): both land in one batch, where the
/// incident exists only in memory until the commit. It is written resolved, with both
/// timeline lines, and the next firing opens a new incident.
#[tokio::test]
async fn an_incident_opened_and_resolved_in_one_batch_is_stored_resolved() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "silent",
        "fn triggers() { [#{ alert: \"Other\" }] }\nfn run(event) { event.status }\n",
    );
    let d = Daemon::start(&ws, &Options::default());
    let (s, body) = post(
        &d,
        &notification(&[("Other", "flap", "firing"), ("Other", "flap", "resolved")]),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let first = body["alerts"][0]["incident"].as_str().expect("incident");
    assert_eq!(body["alerts"][0]["opened"], true, "{body}");
    assert_eq!(body["alerts"][1]["incident"], first, "{body}");
    assert!(
        body["alerts"][1]["notes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n == "incident resolved")),
        "{body}"
    );
    let (_, inc) = d.get(&format!("/api/v1/incidents/{first}")).await;
    assert_eq!(inc["status"], "resolved", "{inc}");
    assert_eq!(inc["resolved_by"], "alertmanager", "{inc}");
    let kinds: Vec<&str> = inc["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|l| l["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"opened") && kinds.contains(&"resolved"),
        "{inc}"
    );
    let (_, again) = post(&d, &notification(&[("Other", "flap", "firing")])).await;
    assert_eq!(again["alerts"][0]["opened"], true, "{again}");
    assert_ne!(again["alerts"][0]["incident"], first, "{again}");
}

/// Whatever characters an alert carries — quotes, backslashes, newlines, non-ASCII, text
/// that looks like JSON — come back from the incident, its timeline and its run exactly as
/// sent (on PostgreSQL the batch's rows travel as JSON parameters, escaped once more).
#[tokio::test]
async fn an_alerts_text_is_stored_exactly_as_sent() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "echo",
        "fn triggers() { [#{ alert: \"Odd\" }] }\nfn run(event) { #{ labels: event.labels, annotations: event.annotations } }\n",
    );
    let d = Daemon::start(&ws, &Options::default());
    let odd = "quote \" backslash \\ slash / tab \t newline \n é ü 日本 🚨 {\"json\": [1]} \\u0041";
    let mut n = notification(&[("Odd", "fp-\"odd\"-\\-é", "firing")]);
    n["alerts"][0]["labels"]["detail"] = json!(odd);
    n["alerts"][0]["annotations"]["summary"] = json!(odd);
    let (s, body) = post(&d, &n).await;
    assert_eq!(s, 200, "{body}");
    let incident = body["alerts"][0]["incident"].as_str().expect("incident");
    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident}")).await;
    assert_eq!(inc["labels"]["detail"], odd, "{inc}");
    assert_eq!(inc["title"], odd, "{inc}");
    let opened = inc["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|l| l["kind"] == "opened"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(opened["message"], format!("opened: {odd}"), "{inc}");
    assert_eq!(opened["details"]["labels"]["detail"], odd, "{inc}");
    let runs = wait_runs(&d, "echo", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    assert_eq!(runs[0]["event"]["labels"]["detail"], odd, "{}", runs[0]);
    assert_eq!(
        runs[0]["result"]["annotations"]["summary"], odd,
        "{}",
        runs[0]
    );
    // A resend of the same alert meets it at the door: the fingerprint matched as stored.
    let (s, again) = post(&d, &n).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["alerts"][0]["incident"], incident, "{again}");
    assert_eq!(again["alerts"][0]["opened"], false, "{again}");
}

/// An alert carrying NUL characters (JSON's `\u0000`, which PostgreSQL's text cannot hold)
/// is recorded with U+FFFD in their place, on both stores, and its resend meets it at the
/// door. Before, PostgreSQL refused its batch and the alert got 503 at every resend.
#[tokio::test]
async fn an_alert_with_nul_characters_is_recorded_not_refused_for_ever() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook(
        "echo",
        "fn triggers() { [#{ alert: \"Odd\" }] }\nfn run(event) { event.labels }\n",
    );
    let d = Daemon::start(&ws, &Options::default());
    let mut n = notification(&[("Odd", "fp\u{0}nul", "firing")]);
    n["alerts"][0]["labels"]["detail"] = json!("a\u{0}b");
    n["alerts"][0]["annotations"]["summary"] = json!("breaker\u{0}open");
    let (s, body) = post(&d, &n).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["alerts"][0]["fingerprint"], "fp\u{FFFD}nul", "{body}");
    let incident = body["alerts"][0]["incident"].as_str().expect("incident");
    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident}")).await;
    assert_eq!(inc["title"], "breaker\u{FFFD}open", "{inc}");
    assert_eq!(inc["labels"]["detail"], "a\u{FFFD}b", "{inc}");
    let runs = wait_runs(&d, "echo", 1).await;
    assert_eq!(runs[0]["result"]["detail"], "a\u{FFFD}b", "{}", runs[0]);
    let (s, again) = post(&d, &n).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["alerts"][0]["incident"], incident, "{again}");
    assert_eq!(again["alerts"][0]["opened"], false, "{again}");
}

/// PostgreSQL: an ingest batch's lookup (migration 12's function) waits for another batch
/// holding one of its keys' locks, and then sees the incident that batch committed — its
/// read is taken after the lock is granted, not when the statement started. Without that,
/// two replicas receiving the same new alert would both open its incident.
#[tokio::test]
async fn the_ingest_lookup_waits_for_the_keys_lock_and_sees_what_its_holder_committed() {
    use sqlx::{Connection, Executor};
    let ws = Workspace::new(Db::Postgres).await;
    let _d = Daemon::start(&ws, &Options::default()); // the store is migrated
    let url = ws.database_url.clone();
    let lookup = "SELECT id FROM runbookd_lock_open_incidents('fp-locked')";
    let mut holder = sqlx::PgConnection::connect(&url).await.expect("holder");
    holder.execute("BEGIN").await.expect("begin");
    let seen: Vec<String> = sqlx::query_scalar(lookup)
        .fetch_all(&mut holder)
        .await
        .expect("holder's lookup");
    assert!(seen.is_empty(), "{seen:?}");

    let mut waiter = sqlx::PgConnection::connect(&url).await.expect("waiter");
    let waiter_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut waiter)
        .await
        .expect("pid");
    let waiting = tokio::spawn(async move {
        waiter.execute("BEGIN").await.expect("begin");
        let seen: Vec<String> = sqlx::query_scalar(lookup)
            .fetch_all(&mut waiter)
            .await
            .expect("waiter's lookup");
        waiter.execute("COMMIT").await.expect("commit");
        seen
    });
    // Until PostgreSQL shows the waiter blocked on a lock (bounded: 10 s).
    let mut watcher = sqlx::PgConnection::connect(&url).await.expect("watcher");
    let mut blocked = false;
    for _ in 0..1000 {
        let wait: Option<String> =
            sqlx::query_scalar("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1")
                .bind(waiter_pid)
                .fetch_optional(&mut watcher)
                .await
                .expect("pg_stat_activity")
                .flatten();
        if wait.as_deref() == Some("Lock") {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(blocked, "the second lookup did not wait for the key's lock");
    holder
        .execute(
            "INSERT INTO incidents (id, incident_key, source, title, labels, status, opened_at, updated_at) \
             VALUES ('inc-locked', 'fp-locked', 'alert:A', 'A', '{}', 'open', 1, 1)",
        )
        .await
        .expect("insert");
    holder.execute("COMMIT").await.expect("commit");
    let seen = waiting.await.expect("join");
    assert_eq!(
        seen,
        ["inc-locked"],
        "the waiter read before the lock was granted"
    );
}

/// PostgreSQL: the server drops every connection of the daemon (a failover, an operator's
/// `pg_terminate_backend`) right after it used them; the next alert is still answered 200
/// and its run succeeds — a dead connection in the pool must cost a reconnect, not the
/// alert.
#[tokio::test]
async fn alerts_are_accepted_after_the_server_drops_the_daemons_connections() {
    use sqlx::Connection;
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("responder", RESPONDER);
    let d = Daemon::start(&ws, &Options::default());
    let (status, _) = post(
        &d,
        &notification(&[("PaymentProcessorDown", "before-drop", "firing")]),
    )
    .await;
    assert_eq!(status, 200);
    // Its run done (a script using the store while its connection is dropped fails, which
    // is not what this test is about), every connection is back in the pool.
    d.poll(
        "/api/v1/runs?status=succeeded&limit=100",
        Duration::from_secs(30),
        |v| v.as_array().map(Vec::len) == Some(1),
    )
    .await;
    let db = database_name(&ws);
    let mut admin = sqlx::PgConnection::connect(&ws.database_url)
        .await
        .expect("admin");
    let dropped: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&db)
    .fetch_all(&mut admin)
    .await
    .expect("terminate");
    assert!(!dropped.is_empty(), "the daemon had connections to drop");
    for i in 0..3 {
        let fp = format!("after-drop-{i}");
        let (status, body) = post(
            &d,
            &notification(&[("PaymentProcessorDown", fp.as_str(), "firing")]),
        )
        .await;
        assert_eq!(status, 200, "alert {i} after the drop: {body}");
    }
    let runs = d
        .poll(
            "/api/v1/runs?status=succeeded&limit=100",
            Duration::from_secs(30),
            |v| v.as_array().map(Vec::len) == Some(4),
        )
        .await;
    let (_, all) = d.get("/api/v1/runs?limit=100").await;
    let statuses: Vec<(&str, &str)> = all
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap_or(""),
                r["error"]["message"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(runs.as_array().map(Vec::len), Some(4), "{statuses:?}");
}

/// PostgreSQL: an ingest batch waiting for a key's lock (held here by another "replica")
/// does not hold up the alerts behind it — a second batch is recorded meanwhile — and, once
/// the lock is released, the waiting alert joins the incident the holder committed.
#[tokio::test]
async fn an_alert_waiting_for_its_keys_lock_does_not_hold_up_other_alerts() {
    use sqlx::Executor;
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("responder", RESPONDER);
    let d = std::sync::Arc::new(Daemon::start(&ws, &Options::default()));
    let mut holder = hold_key(&ws, "fingerprint:fp-held").await;
    let held = {
        let d = d.clone();
        tokio::spawn(async move {
            post(
                &d,
                &notification(&[("PaymentProcessorDown", "fp-held", "firing")]),
            )
            .await
        })
    };
    assert!(
        ingest_lookups_come_to(&ws, "active", Some("Lock")).await,
        "the daemon's batch did not wait for the held key"
    );
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(10),
        post(
            &d,
            &notification(&[("PaymentProcessorDown", "fp-free", "firing")]),
        ),
    )
    .await
    .expect("an alert with another key waited for the held lock");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alerts"][0]["opened"], true, "{body}");
    assert!(
        !held.is_finished(),
        "the held alert was answered under the lock"
    );
    holder
        .execute(
            "INSERT INTO incidents (id, incident_key, source, title, labels, status, opened_at, updated_at) \
             VALUES ('inc-held', 'fingerprint:fp-held', 'alert:A', 'A', '{}', 'open', 1, 1)",
        )
        .await
        .expect("insert");
    holder.execute("COMMIT").await.expect("commit");
    let (status, body) = held.await.expect("join");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alerts"][0]["incident"], "inc-held", "{body}");
    assert_eq!(body["alerts"][0]["opened"], false, "{body}");
}

/// PostgreSQL: a key's lock held and never released (a replica frozen in the middle of its
/// batch, an operator's forgotten transaction) costs that key's alert a 503 after 5 s —
/// Alertmanager resends it — not an answer that never comes; once the holder is gone the
/// resent alert is recorded.
#[tokio::test]
async fn an_alert_whose_key_stays_locked_is_refused_and_recorded_when_resent() {
    use sqlx::Executor;
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("responder", RESPONDER);
    let d = Daemon::start(&ws, &Options::default());
    let mut holder = hold_key(&ws, "fingerprint:fp-stuck").await;
    let stuck = notification(&[("PaymentProcessorDown", "fp-stuck", "firing")]);
    let sent = std::time::Instant::now();
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), post(&d, &stuck))
        .await
        .expect("the alert was not answered within 30 s");
    let waited = sent.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string()
            .contains("stayed locked by another transaction"),
        "{body}"
    );
    assert!(waited >= Duration::from_secs(5), "refused after {waited:?}");
    let metrics = d.metrics().await;
    assert!(
        metrics.contains(r#"runbookd_alerts_total{reason="key_locked"} 1"#),
        "{metrics}"
    );
    let (_, incidents) = d.get("/api/v1/incidents?limit=10").await;
    assert_eq!(incidents.as_array().map(Vec::len), Some(0), "{incidents}");
    holder.execute("ROLLBACK").await.expect("rollback");
    let (status, body) = post(&d, &stuck).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alerts"][0]["opened"], true, "{body}");
    assert_eq!(
        body["alerts"][0]["runs"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
}

/// PostgreSQL, two replicas: one is frozen (SIGSTOP) right after its batch was granted an
/// incident key's lock, so its transaction stays open holding it. The server ends that
/// transaction after 10 s idle; the other replica, receiving the same alert (Alertmanager
/// resends after each 503), then records it: one incident, one run. Without the session
/// setting the frozen replica would hold the key for as long as it stays frozen.
#[tokio::test]
async fn a_replica_frozen_mid_batch_does_not_hold_its_keys_from_the_others() {
    use sqlx::Executor;
    let ws = Workspace::new(Db::Postgres).await;
    ws.write_playbook("responder", RESPONDER);
    let frozen = std::sync::Arc::new(Daemon::start(&ws, &Options::default()));
    let other = Daemon::start(&ws, &Options::default());
    let alert = notification(&[("PaymentProcessorDown", "fp-frozen", "firing")]);
    // A lock held from outside makes the replica's batch wait at the right step: granted
    // the moment the holder lets go, while the replica is stopped.
    let mut holder = hold_key(&ws, "fingerprint:fp-frozen").await;
    let sent = {
        let (d, body) = (frozen.clone(), alert.clone());
        tokio::spawn(async move { post(&d, &body).await })
    };
    assert!(
        ingest_lookups_come_to(&ws, "active", Some("Lock")).await,
        "the replica's batch did not wait for the held key"
    );
    frozen.freeze();
    holder.execute("ROLLBACK").await.expect("rollback");
    // The frozen replica's session: granted the lock, then idle inside its transaction.
    assert!(
        ingest_lookups_come_to(&ws, "idle in transaction", None).await,
        "the frozen replica's transaction is not idle holding the lock"
    );
    // Alertmanager's side: resend after each 503, for at most 40 s.
    let started = std::time::Instant::now();
    let mut answers = Vec::new();
    let recorded = loop {
        let (status, body) = post(&other, &alert).await;
        answers.push(status);
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the other replica could not record the alert in 40 s: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(recorded["alerts"][0]["opened"], true, "{recorded}");
    frozen.signal("CONT");
    // The woken replica's batch lost its transaction; it answers, and starts nothing twice.
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), sent)
        .await
        .expect("the woken replica did not answer")
        .expect("join");
    assert!(status == 200 || status == 503, "{status}: {body}");
    let incidents = other.get("/api/v1/incidents?limit=10").await.1;
    assert_eq!(incidents.as_array().map(Vec::len), Some(1), "{incidents}");
    let runs = other
        .get("/api/v1/runs?playbook=responder&limit=10")
        .await
        .1;
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    eprintln!("woken replica answered {status}: {body}; the other replica's answers {answers:?}");
}

/// The PostgreSQL database of a workspace's store (its URL's last segment).
pub fn database_name(ws: &Workspace) -> String {
    ws.database_url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_string()
}

/// A transaction outside runbookd holding `key`'s ingest lock (as another replica's batch
/// would) until it commits or rolls back.
async fn hold_key(ws: &Workspace, key: &str) -> sqlx::PgConnection {
    use sqlx::{Connection, Executor};
    let mut holder = sqlx::PgConnection::connect(&ws.database_url)
        .await
        .expect("holder");
    holder.execute("BEGIN").await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1)::bigint)")
        .bind(key)
        .execute(&mut holder)
        .await
        .expect("lock");
    holder
}

/// Whether, within 10 s, a session on the workspace's database whose last statement is an
/// ingest batch's lookup (migration 12's function) is in `state` (and waiting on
/// `wait_event_type`, when given), as `pg_stat_activity` shows it. Only that statement: a
/// replica's other work (its lease, its claims) may wait on row locks for a moment.
async fn ingest_lookups_come_to(
    ws: &Workspace,
    state: &str,
    wait_event_type: Option<&str>,
) -> bool {
    use sqlx::Connection;
    let mut watcher = sqlx::PgConnection::connect(&ws.database_url)
        .await
        .expect("watcher");
    let db = database_name(ws);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let lookups: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT pid, state, wait_event_type FROM pg_stat_activity WHERE datname = $1 \
             AND query LIKE '%runbookd_lock_open_incidents%' AND pid <> pg_backend_pid()",
        )
        .bind(&db)
        .fetch_all(&mut watcher)
        .await
        .unwrap_or_default();
        seen.extend(lookups);
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = $2 \
             AND ($3::text IS NULL OR wait_event_type = $3) \
             AND query LIKE '%runbookd_lock_open_incidents%' AND pid <> pg_backend_pid()",
        )
        .bind(&db)
        .bind(state)
        .bind(wait_event_type)
        .fetch_one(&mut watcher)
        .await
        .expect("pg_stat_activity");
        if n > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sessions: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', pid, state, wait_event_type, left(query, 80)) \
         FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&db)
    .fetch_all(&mut watcher)
    .await
    .unwrap_or_default();
    eprintln!("no ingest lookup came to {state:?}; lookups seen: {seen:?}; the database's sessions: {sessions:?}");
    false
}
