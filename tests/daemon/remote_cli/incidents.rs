//! `runbookd incidents [--all]`, `incident ID`, `ack ID`, `resolve ID --comment` against
//! the daemon; each change checked through the API.

use super::{cli, prefix, tokens, OP, VIEW};
use crate::helpers::{Daemon, Db, Workspace};

const WATCH: &str =
    "fn triggers() { [#{ alert: \"PaymentProcessorDown\" }] }\nfn run(event) { note(\"looking\"); 1 }\n";

#[tokio::test]
async fn incidents_are_listed_shown_acknowledged_and_resolved_with_a_comment() {
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("watch", WATCH);
    let d = Daemon::start(&ws, &tokens(&prefix(), ""));
    let url = d.url("");
    let body = crate::alerts::notification(&[("PaymentProcessorDown", "fp-remote-cli", "firing")]);
    let (s, outcome) = crate::alerts::post(&d, &body).await;
    assert_eq!(s, 200, "{outcome}");
    let id = outcome["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();

    let out = cli(&url, Some(VIEW), &["incidents"]);
    assert_eq!(out.code, Some(0), "{out}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("open") && row.contains("alert:PaymentProcessorDown"),
        "{out}"
    );
    let out = cli(&url, Some(VIEW), &["incident", &id]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.contains("status:   open") && out.stdout.contains("timeline:"),
        "{out}"
    );
    let out = cli(&url, Some(VIEW), &["incident", &id, "--json"]);
    let (_, api) = d.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(out.json(), api, "--json is the API's answer unchanged");

    // A viewer may not acknowledge (3, the token's refusal); the operator may, once.
    let out = cli(&url, Some(VIEW), &["ack", &id]);
    assert_eq!(out.code, Some(3), "{out}");
    let out = cli(&url, Some(OP), &["ack", &id]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("acknowledged by op"), "{out}");
    let (_, inc) = d.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(
        (inc["status"].as_str(), inc["acked_by"].as_str()),
        (Some("acknowledged"), Some("op")),
        "{inc}"
    );
    let out = cli(&url, Some(OP), &["ack", &id]);
    assert_eq!(out.code, Some(1), "acknowledged already (409): {out}");
    assert!(out.stderr.contains("409"), "{out}");
    let out = cli(&url, Some(VIEW), &["incidents", "--json"]);
    assert_eq!(
        out.json()[0]["status"],
        "acknowledged",
        "still listed: {out}"
    );

    let out = cli(
        &url,
        Some(OP),
        &[
            "resolve",
            &id,
            "--comment",
            "Stripe recovered; reconciled 3 payments",
        ],
    );
    assert_eq!(out.code, Some(0), "{out}");
    let (_, inc) = d.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(inc["status"], "resolved", "{inc}");
    assert_eq!(inc["resolved_by"], "op", "{inc}");
    let line = inc["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|l| l["kind"] == "resolved"))
        .unwrap_or_else(|| panic!("{inc}"));
    assert_eq!(
        line["message"], "resolved by op: Stripe recovered; reconciled 3 payments",
        "{inc}"
    );
    let out = cli(&url, Some(OP), &["resolve", &id]);
    assert_eq!(out.code, Some(1), "resolved already: {out}");

    // Resolved: gone from the default list, there with --all.
    let out = cli(&url, Some(VIEW), &["incidents"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!out.stdout.contains(&id), "{out}");
    let out = cli(&url, Some(VIEW), &["incidents", "--all"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("resolved")),
        "{out}"
    );
    let out = cli(
        &url,
        Some(VIEW),
        &["incident", &uuid::Uuid::now_v7().to_string()],
    );
    assert_eq!(out.code, Some(4), "{out}");
    let out = cli(&url, Some(OP), &["ack", "not-an-id"]);
    assert_eq!(out.code, Some(2), "{out}");
}
