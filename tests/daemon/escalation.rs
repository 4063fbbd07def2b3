//! The escalation table on second-scale durations: L1 → L2 → L3 → P1, repeats until ack,
//! resolution to every paged channel, a restart in the middle, a broken table edit.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    alerts::notification,
    helpers::{Daemon, Db, Options, Workspace},
    notify::Sink,
};

const TABLE: &str = r#"
[[levels]]
name = "L1"
condition = 'facts.stripe_degraded == true'
channels = ["hook"]
repeat = "1s"

[[levels]]
name = "L2"
condition = 'age > 2.0'
channels = ["hook"]
playbook = "l2_action"

[[levels]]
name = "L3"
condition = 'facts.data_inconsistency == true'
channels = ["hook"]

[[levels]]
name = "P1"
condition = 'age > 5.0'
channels = ["hook"]
"#;

const RESPONDER: &str = r#"
fn triggers() { [#{ alert: "PaymentProcessorDown" }] }
fn run(event) { set_fact("stripe_degraded", true); }
"#;

fn now_alert() -> Value {
    let mut n = notification(&[("PaymentProcessorDown", "fp-esc", "firing")]);
    n["alerts"][0]["startsAt"] = json!(chrono::Utc::now().to_rfc3339());
    n
}

fn setup(ws: &Workspace, sink: &Sink) -> Options {
    std::fs::write(ws.dir.path().join("escalation.toml"), TABLE).expect("table");
    ws.write_playbook("responder", RESPONDER);
    ws.write_playbook(
        "l2_action",
        "fn run(event) { note(`L2 playbook ran for ${event.name}`); set_fact(\"data_inconsistency\", true); }\n",
    );
    Options {
        bearer: None,
        serve_args: Vec::new(),
        extra_config: format!(
            "[channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
            sink.url()
        ),
        env: vec![("RUNBOOKD_ESCALATION__INTERVAL".into(), "200ms".into())],
    }
}

/// Waits until the sink has received the trigger of `level` (delivery is asynchronous).
async fn wait_trigger(sink: &Sink, level: &str) {
    for _ in 0..100 {
        if kinds_and_levels(sink)
            .iter()
            .any(|(k, l)| k == "trigger" && l == level)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kinds_and_levels(sink: &Sink) -> Vec<(String, String)> {
    sink.received()
        .iter()
        .map(|(_, _, v)| {
            (
                v["kind"].as_str().unwrap_or("").to_string(),
                v["level"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_ladder_climbs_repeats_until_ack_and_resolution_reaches_every_paged_channel() {
    let sink = Sink::start(vec![]).await;
    let ws = Workspace::new(Db::Sqlite).await;
    let d = Daemon::start(&ws, &setup(&ws, &sink));
    let resp = d
        .client
        .post(d.url("/api/v1/alerts"))
        .json(&now_alert())
        .send()
        .await
        .expect("post");
    let body: Value = resp.json().await.expect("json");
    let id = body["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();

    // L1 once the playbook set stripe_degraded, repeating every second while unacknowledged.
    sink.wait_for(2, Duration::from_secs(5)).await;
    let seen = kinds_and_levels(&sink);
    assert_eq!(seen[0], ("trigger".into(), "L1".into()), "{seen:?}");
    assert!(seen.contains(&("repeat".into(), "L1".into())), "{seen:?}");

    // L2 after 2 s: its playbook runs and finds an inconsistency, so L3 follows; P1 after 5 s.
    let inc = d
        .poll(
            &format!("/api/v1/incidents/{id}"),
            Duration::from_secs(10),
            |v| v["level"] == "P1",
        )
        .await;
    assert_eq!(inc["level"], "P1", "{inc}");
    wait_trigger(&sink, "P1").await;
    let seen = kinds_and_levels(&sink);
    let triggers: Vec<&str> = seen
        .iter()
        .filter(|(k, _)| k == "trigger")
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(
        triggers,
        vec!["L1", "L2", "L3", "P1"],
        "each level fires once, in order: {seen:?}"
    );
    // Each fire counted once, by level (after the pass that fired it, which may end just
    // after its page was delivered).
    let series = ["L1", "L2", "L3", "P1"]
        .map(|level| format!("runbookd_escalations_total{{level=\"{level}\"}} 1"));
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = d.metrics().await;
        if series.iter().all(|s| metrics.lines().any(|l| l == s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &series {
        assert!(metrics.lines().any(|l| l == s), "{s} missing:\n{metrics}");
    }
    let (_, runs) = d.get("/api/v1/runs?logs=true&playbook=l2_action").await;
    assert_eq!(runs[0]["trigger"]["kind"], "escalation");
    assert_eq!(runs[0]["event"]["incident"], id.as_str());

    // Acknowledging stops repeats.
    d.client
        .post(d.url(&format!("/api/v1/incidents/{id}/ack")))
        .send()
        .await
        .expect("ack");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after_ack = sink.received().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.received().len(), after_ack, "no repeats after ack");

    // Resolving tells the paged channel.
    d.client
        .post(d.url(&format!("/api/v1/incidents/{id}/resolve")))
        .send()
        .await
        .expect("resolve");
    sink.wait_for(after_ack + 1, Duration::from_secs(5)).await;
    let last = sink
        .received()
        .last()
        .map(|(_, _, v)| v.clone())
        .expect("resolution");
    assert_eq!(last["kind"], "resolve", "{last}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sink.received().len(), after_ack + 1, "resolution sent once");
}

#[tokio::test]
async fn a_restart_mid_escalation_repeats_nothing_and_loses_nothing() {
    let sink = Sink::start(vec![]).await;
    let ws = Workspace::new(Db::Sqlite).await;
    let opts = setup(&ws, &sink);
    let mut d = Daemon::start(&ws, &opts);
    let resp = d
        .client
        .post(d.url("/api/v1/alerts"))
        .json(&now_alert())
        .send()
        .await
        .expect("post");
    let id = resp.json::<Value>().await.expect("json")["alerts"][0]["incident"]
        .as_str()
        .expect("id")
        .to_string();
    sink.wait_for(1, Duration::from_secs(5)).await;
    d.client
        .post(d.url(&format!("/api/v1/incidents/{id}/ack")))
        .send()
        .await
        .expect("ack");
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(5));
    drop(d);
    let d = Daemon::start(&ws, &opts);
    let inc = d
        .poll(
            &format!("/api/v1/incidents/{id}"),
            Duration::from_secs(10),
            |v| v["level"] == "P1",
        )
        .await;
    assert_eq!(
        inc["level"], "P1",
        "levels due while it was down still fire: {inc}"
    );
    wait_trigger(&sink, "P1").await;
    let triggers: Vec<String> = kinds_and_levels(&sink)
        .into_iter()
        .filter(|(k, _)| k == "trigger")
        .map(|(_, l)| l)
        .collect();
    assert_eq!(
        triggers,
        vec!["L1", "L2", "L3", "P1"],
        "L1 was not paged again after the restart"
    );
}

#[tokio::test]
async fn a_broken_table_edit_keeps_the_last_good_table() {
    let sink = Sink::start(vec![]).await;
    let ws = Workspace::new(Db::Sqlite).await;
    let d = Daemon::start(&ws, &setup(&ws, &sink));
    std::fs::write(
        ws.dir.path().join("escalation.toml"),
        "[[levels]]\nname = \"L1\"\ncondition = \"age >\"\n",
    )
    .expect("edit");
    for _ in 0..50 {
        if d.logs().contains("keeping the last good one") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        d.logs().contains("levels[0] (L1)"),
        "the error names the level: {}",
        d.logs()
    );
    // The good table still works.
    d.client
        .post(d.url("/api/v1/alerts"))
        .json(&now_alert())
        .send()
        .await
        .expect("post");
    let got = sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].2["level"], "L1");
}

#[tokio::test]
async fn a_broken_table_at_start_is_refused_naming_the_problem() {
    let ws = Workspace::new(Db::Sqlite).await;
    std::fs::write(
        ws.dir.path().join("escalation.toml"),
        "[[levels]]\nname = \"L1\"\ncondition = \"true\"\nchannels = [\"nowhere\"]\n",
    )
    .expect("table");
    let err = Daemon::try_start(&ws, &Options::default())
        .err()
        .expect("must not start");
    assert!(err.contains("channel `nowhere` is not configured"), "{err}");
}

#[tokio::test]
async fn playbooks_escalate_to_the_levels_of_a_custom_table() {
    let ws = Workspace::new(Db::Sqlite).await;
    let sink = Sink::start(vec![]).await;
    std::fs::write(
        ws.dir.path().join("escalation.toml"),
        "[[levels]]\nname = \"SEV3\"\ncondition = 'false'\nchannels = [\"hook\"]\n\n\
         [[levels]]\nname = \"SEV2\"\ncondition = 'false'\nchannels = [\"hook\"]\n\n\
         [[levels]]\nname = \"SEV1\"\ncondition = 'false'\nchannels = [\"hook\"]\n",
    )
    .expect("table");
    ws.write_playbook(
        "responder",
        r#"
fn triggers() { [#{ alert: "PaymentProcessorDown" }] }
fn run(event) {
    let refused = "";
    try { escalate("L1", "the runbook's name"); } catch (e) { refused = `${e}`; }
    escalate("sev2", "a custom level, any case");
    refused
}
"#,
    );
    let d = Daemon::start(
        &ws,
        &Options {
            extra_config: format!(
                "[channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
                sink.url()
            ),
            env: vec![("RUNBOOKD_ESCALATION__INTERVAL".into(), "200ms".into())],
            ..Default::default()
        },
    );
    let resp = d
        .client
        .post(d.url("/api/v1/alerts"))
        .json(&now_alert())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let runs = d
        .poll(
            "/api/v1/runs?logs=true&playbook=responder",
            Duration::from_secs(10),
            |v| v[0]["status"] == "succeeded",
        )
        .await;
    let refused = runs[0]["result"].as_str().unwrap_or_default();
    assert!(
        refused.contains("not a level of the escalation table (SEV3, SEV2, SEV1)"),
        "{runs}"
    );
    let incidents = d
        .poll("/api/v1/incidents", Duration::from_secs(5), |v| {
            v[0]["level"] == "SEV2"
        })
        .await;
    assert_eq!(incidents[0]["level"], "SEV2", "{incidents}");
    wait_trigger(&sink, "SEV2").await;
}
