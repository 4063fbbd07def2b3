//! The approvals chain: a follow-up run started by a decision or an expiry asks on behalf of
//! the original requester, who never approves; the two-person rule counts people other
//! than the requester; a denial or an expiry is never asked again by the run it started.

use std::time::Duration;

use serde_json::{json, Value};

use crate::approvals::{finished, pending, with_tokens};
use crate::helpers::{Daemon, Workspace};

/// The idiom as the README once wrote it: ask, and return when not approved.
const NAIVE: &str = r#"
fn run(event) {
    let ask = #{ action: "breaker.reset", target: "stripe", reason: "breaker stuck" };
    if "expires" in event.params { ask.expires = event.params.expires; }
    if !approved(ask) {
        return #{ did: "asked" };
    }
    #{ did: "reset" }
}
"#;

/// Asks twice in a row (a second action after the first one is granted), and on expiry
/// asks for something else.
const CHAIN: &str = r#"
fn run(event) {
    if event.kind == "approval" && event.approval.decision == "expired" {
        if !approved(#{ action: "page", target: "l2", reason: "nobody answered" }) {
            return #{ did: "asked l2" };
        }
        return #{ did: "paged" };
    }
    let ask = #{ action: "breaker.reset", target: "stripe", reason: "breaker stuck" };
    if "expires" in event.params { ask.expires = event.params.expires; }
    if !approved(ask) {
        return #{ did: "asked" };
    }
    if !approved(#{ action: "payments.retry", target: "stale", reason: "after the reset" }) {
        return #{ did: "asked again" };
    }
    #{ did: "both" }
}
"#;

async fn decide(d: &Daemon, who: &str, id: &str, decision: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(d.url(&format!("/api/v1/approvals/{id}/{decision}")))
        .bearer_auth(format!("{who}-secret"))
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn fast_expiry(mut opts: crate::helpers::Options) -> crate::helpers::Options {
    opts.env
        .push(("RUNBOOKD_ESCALATION__INTERVAL".into(), "200ms".into()));
    opts
}

/// The follow-up run (kind `approval`) of approval `id`, once finished.
async fn follow_up_of(d: &Daemon, playbook: &str, id: &str) -> Value {
    let runs = d
        .poll(
            &format!("/api/v1/runs?playbook={playbook}"),
            Duration::from_secs(15),
            |v| {
                v.as_array().is_some_and(|a| {
                    a.iter().any(|r| {
                        r["trigger"]["name"] == id
                            && !matches!(r["status"].as_str(), Some("queued" | "running"))
                    })
                })
            },
        )
        .await;
    runs.as_array()
        .and_then(|a| a.iter().find(|r| r["trigger"]["name"] == id).cloned())
        .unwrap_or_else(|| panic!("no follow-up run of {id}: {runs}"))
}

#[tokio::test]
async fn a_denial_or_an_expiry_is_not_asked_again_by_the_run_it_started() {
    let ws = Workspace::new(crate::helpers::Db::Sqlite).await;
    ws.write_playbook("naive", NAIVE);
    let d = Daemon::start(&ws, &fast_expiry(with_tokens("")));

    // Denied: the follow-up run sees the denial and asks nothing.
    let (_, run) = d.run_wait("naive", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    let (s, denied) = decide(&d, "bob", &id, "deny").await;
    assert_eq!(s, 200, "{denied}");
    let follow = finished(&d, denied["follow_up_run"].as_str().expect("run")).await;
    assert_eq!(follow["event"]["approval"]["decision"], "denied");
    assert_eq!(follow["result"]["did"], "asked", "{follow}");
    assert_eq!(
        follow["status"], "succeeded",
        "not awaiting again: {follow}"
    );
    let left = pending(&d).await;
    assert!(left.is_empty(), "a denial asked again: {left:?}");

    // Expired: the same, and nothing is notified again.
    let (_, run) = d
        .run_wait("naive", json!({"params": {"expires": "1s"}}))
        .await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();
    let follow = follow_up_of(&d, "naive", &id).await;
    assert_eq!(follow["event"]["approval"]["decision"], "expired");
    assert_eq!(follow["status"], "succeeded", "{follow}");
    // Give a re-ask (and its follow-ups) time to show.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let left = pending(&d).await;
    assert!(left.is_empty(), "an expiry asked again: {left:?}");
    let (_, notes) = d.get("/api/v1/notifications").await;
    let asks = notes
        .as_array()
        .map(|n| n.iter().filter(|n| n["kind"] == "approval").count())
        .unwrap_or(0);
    assert_eq!(asks, 2, "one announcement per request: {notes}");
}

#[tokio::test]
async fn the_requester_is_carried_through_the_chain_and_never_counts_as_an_approver() {
    let ws = Workspace::new(crate::helpers::Db::Sqlite).await;
    ws.write_playbook("chain", CHAIN);
    ws.write_playbook("chain_expiry", CHAIN);
    let d = Daemon::start(&ws, &fast_expiry(with_tokens("required = 2\n")));

    // Approved by bob and dave: the follow-up run asks for the next action as alice.
    let (_, run) = d.run_wait("chain", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let first = pending(&d).await[0].clone();
    let id = first["id"].as_str().expect("id").to_string();
    assert_eq!(first["requested_by"], "alice");
    assert_eq!(decide(&d, "bob", &id, "approve").await.0, 200);
    let (s, ok) = decide(&d, "dave", &id, "approve").await;
    assert_eq!(s, 200, "{ok}");
    let follow = finished(&d, ok["follow_up_run"].as_str().expect("run")).await;
    assert_eq!(follow["result"]["did"], "asked again", "{follow}");
    let next = pending(&d).await;
    assert_eq!(next.len(), 1, "{next:?}");
    let next_id = next[0]["id"].as_str().expect("id").to_string();
    assert_eq!(next[0]["requested_by"], "alice", "{:?}", next[0]);
    let (s, e) = decide(&d, "alice", &next_id, "approve").await;
    assert_eq!(s, 403, "the requester approved her own action: {e}");
    // The approver of the first step may approve the second, as one of two.
    let (s, one) = decide(&d, "dave", &next_id, "approve").await;
    assert_eq!((s, one["status"].as_str()), (200, Some("pending")), "{one}");

    // Expired: the follow-up asks for something else, still as alice, and alice with one
    // other person is not two.
    let (_, run) = d
        .run_wait("chain_expiry", json!({"params": {"expires": "1s"}}))
        .await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let asked = pending(&d).await;
    let expiring = asked
        .iter()
        .find(|a| a["playbook"] == "chain_expiry")
        .expect("request")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let follow = follow_up_of(&d, "chain_expiry", &expiring).await;
    assert_eq!(follow["result"]["did"], "asked l2", "{follow}");
    let page = pending(&d)
        .await
        .into_iter()
        .find(|a| a["action"] == "page")
        .expect("the page request");
    assert_eq!(page["requested_by"], "alice", "{page}");
    let page_id = page["id"].as_str().expect("id").to_string();
    assert_eq!(decide(&d, "alice", &page_id, "approve").await.0, 403);
    let (s, one) = decide(&d, "bob", &page_id, "approve").await;
    assert_eq!((s, one["status"].as_str()), (200, Some("pending")), "{one}");
}

#[tokio::test]
async fn resolving_an_incident_withdraws_its_pending_approvals() {
    let ws = Workspace::new(crate::helpers::Db::Sqlite).await;
    ws.write_playbook(
        "gate",
        &format!(
            "fn triggers() {{ [#{{ alert: \"PaymentProcessorDown\" }}] }}\n{}",
            crate::approvals::GATE
        ),
    );
    let d = Daemon::start(&ws, &with_tokens(""));
    let body = crate::alerts::notification(&[("PaymentProcessorDown", "fp-withdraw", "firing")]);
    let (s, outcome) = crate::alerts::post(&d, &body).await;
    assert_eq!(s, 200, "{outcome}");
    let incident = outcome["alerts"][0]["incident"]
        .as_str()
        .expect("incident")
        .to_string();
    let asked = d
        .poll(
            "/api/v1/approvals?status=pending",
            Duration::from_secs(10),
            |v| v.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
    let id = asked[0]["id"].as_str().expect("id").to_string();
    assert_eq!(asked[0]["incident"], incident.as_str());

    let r = reqwest::Client::new()
        .post(d.url(&format!("/api/v1/incidents/{incident}/resolve")))
        .bearer_auth("dave-secret")
        .send()
        .await
        .expect("resolve");
    assert_eq!(r.status().as_u16(), 200);

    let (_, a) = d.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(a["status"], "withdrawn", "{a}");
    let (s, e) = decide(&d, "bob", &id, "approve").await;
    assert_eq!(s, 409, "a withdrawn request was decided: {e}");
    assert!(pending(&d).await.is_empty());
    // Nothing ran because of it.
    let (_, runs) = d.get("/api/v1/runs?playbook=gate").await;
    assert!(
        runs.as_array()
            .is_some_and(|r| r.iter().all(|r| r["trigger"]["kind"] != "approval")),
        "{runs}"
    );
    // Audited by who resolved, on the timeline, and told where it was asked.
    let (_, audit) = d.get("/api/v1/audit?limit=100").await;
    assert!(
        audit
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["action"] == "approval.withdraw"
                && e["actor"] == "dave"
                && e["target"] == format!("approval:{id}").as_str())),
        "{audit}"
    );
    let (_, inc) = d.get(&format!("/api/v1/incidents/{incident}")).await;
    assert!(
        inc["timeline"]
            .as_array()
            .is_some_and(|t| t.iter().any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("withdrawn")))),
        "{inc}"
    );
    let notes = d
        .poll("/api/v1/notifications", Duration::from_secs(10), |v| {
            v.as_array()
                .is_some_and(|n| n.iter().any(|n| n["kind"] == "approval_withdrawn"))
        })
        .await;
    let told = notes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["kind"] == "approval_withdrawn"))
        .expect("withdrawal message");
    assert_eq!(told["channel"], "approvers", "{told}");
    assert_eq!(told["payload"]["approval"], id.as_str(), "{told}");
}
