//! Slack's Approve / Deny buttons: the approval message carries them, a press signed as
//! Slack signs (computed here with Python's `hmac`, not runbookd's code) decides, and a bad
//! signature, an old timestamp or an unmapped Slack user decide nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    approvals::{finished, pending, tokens_with, GATE},
    helpers::{python, Daemon, Db, Workspace},
    notify::Sink,
};

pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// The form body Slack posts for a button press, and its signature (`v0=…`) with `secret`
/// at `ts`.
pub fn signed_press(
    secret: &str,
    ts: i64,
    user: &str,
    action: &str,
    approval: &str,
    response_url: &str,
) -> (String, String) {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase()},
        "actions": [{"action_id": action, "value": approval, "type": "button"}],
        "response_url": response_url,
    });
    let input = json!({"secret": secret, "ts": ts.to_string(), "payload": payload.to_string()});
    let out = python(
        "import hashlib, hmac, json, sys, urllib.parse\n\
         i = json.load(sys.stdin)\n\
         body = 'payload=' + urllib.parse.quote(i['payload'], safe='')\n\
         base = ('v0:' + i['ts'] + ':' + body).encode()\n\
         sig = 'v0=' + hmac.new(i['secret'].encode(), base, hashlib.sha256).hexdigest()\n\
         print(json.dumps({'body': body, 'sig': sig}))\n",
        input.to_string().as_bytes(),
    );
    let v: Value = serde_json::from_slice(&out).expect("python output");
    (
        v["body"].as_str().expect("body").into(),
        v["sig"].as_str().expect("sig").into(),
    )
}

pub async fn press(d: &Daemon, ts: i64, body: &str, sig: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(d.url("/api/v1/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sig)
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_signed_slack_press_decides_and_nothing_else_does() {
    let (channel, responses) = (Sink::start(vec![]).await, Sink::start(vec![]).await);
    let ws = Workspace::new(Db::Sqlite).await;
    ws.write_playbook("gate", GATE);
    let mut opts = tokens_with(
        "[channels.approvers]\ntype = \"slack\"\nurl_env = \"SLACK_URL\"\n",
        &format!(
            "signing_secret_env = \"SLACK_SIGNING_SECRET\"\nslack_response_prefix = \"{}\"\n\
             [approvals.slack_users]\nU_BOB = \"bob\"\nU_ALICE = \"alice\"\n",
            responses.url()
        ),
    );
    opts.env.push(("SLACK_URL".into(), channel.url()));
    opts.env
        .push(("SLACK_SIGNING_SECRET".into(), SECRET.into()));
    let d = Daemon::start(&ws, &opts);
    let (_, run) = d.run_wait("gate", json!({})).await;
    assert_eq!(run["status"], "awaiting_approval");
    let id = pending(&d).await[0]["id"].as_str().expect("id").to_string();

    // The request reaches Slack with its two buttons, their value the approval id.
    let sent = channel.wait_for(1, Duration::from_secs(10)).await;
    let msg = &sent.first().expect("slack message").2;
    let buttons = &msg["blocks"][1]["elements"];
    assert_eq!(buttons[0]["action_id"], "approve", "{msg}");
    assert_eq!(buttons[0]["value"], id.as_str());
    assert_eq!(buttons[1]["action_id"], "deny");
    assert!(
        msg["text"]
            .as_str()
            .unwrap_or("")
            .contains("breaker.reset stripe"),
        "{msg}"
    );

    let now = chrono::Utc::now().timestamp();
    let url = responses.url();
    // A wrong secret, a replayed (old) timestamp: 401, nothing decided.
    let (body, sig) = signed_press("not-the-secret", now, "U_BOB", "approve", &id, &url);
    assert_eq!(press(&d, now, &body, &sig).await.0, 401);
    let old = now - 600;
    let (body, sig) = signed_press(SECRET, old, "U_BOB", "approve", &id, &url);
    assert_eq!(press(&d, old, &body, &sig).await.0, 401);
    // A tampered body under a valid signature: 401.
    let (body, sig) = signed_press(SECRET, now, "U_BOB", "deny", &id, &url);
    let tampered = body.replace("deny", "approve");
    assert_eq!(press(&d, now, &tampered, &sig).await.0, 401);
    // An unmapped Slack user is told, nothing decided.
    let (body, sig) = signed_press(SECRET, now, "U_EVE", "approve", &id, &url);
    let (s, answer) = press(&d, now, &body, &sig).await;
    assert_eq!(s, 200);
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or("")
            .contains("not an approver"),
        "{answer}"
    );
    // The requester, mapped: refused (ephemeral), nothing decided.
    let (body, sig) = signed_press(SECRET, now, "U_ALICE", "approve", &id, &url);
    let (_, answer) = press(&d, now, &body, &sig).await;
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or("")
            .contains("may not approve"),
        "{answer}"
    );
    assert_eq!(
        pending(&d).await.len(),
        1,
        "still pending after every refusal"
    );

    // bob, signed as Slack signs: approved, and the message replaced with who decided.
    let (body, sig) = signed_press(SECRET, now, "U_BOB", "approve", &id, &url);
    let (s, answer) = press(&d, now, &body, &sig).await;
    assert_eq!(s, 200, "{answer}");
    let (_, a) = d.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(a["decisions"][0]["by"], "bob", "{a}");
    let replies = responses.wait_for(3, Duration::from_secs(10)).await;
    let replaced = replies
        .iter()
        .map(|r| &r.2)
        .find(|r| r["replace_original"] == true)
        .expect("the message replaced");
    assert!(
        replaced["text"]
            .as_str()
            .unwrap_or("")
            .contains("approved by bob"),
        "{replaced}"
    );
    assert!(
        replies.iter().any(|r| r.2["response_type"] == "ephemeral"
            && r.2["text"]
                .as_str()
                .unwrap_or("")
                .contains("not an approver")),
        "the unmapped user was told: {replies:?}"
    );
    let runs = d
        .poll("/api/v1/runs?playbook=gate", Duration::from_secs(10), |v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|r| r["trigger"]["kind"] == "approval"))
        })
        .await;
    let follow_up = runs
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r["trigger"]["kind"] == "approval")
                .cloned()
        })
        .expect("follow-up");
    let done = finished(&d, follow_up["id"].as_str().expect("id")).await;
    assert_eq!(done["result"]["did"], "reset", "{done}");
    assert!(
        !d.logs().contains(SECRET),
        "the signing secret stays out of the log"
    );
}
