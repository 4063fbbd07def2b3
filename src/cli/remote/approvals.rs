//! `runbookd approvals`, `runbookd approve ID`, `runbookd deny ID`: the approvals API of a
//! running daemon. A refused decision is exit 1 even when the daemon's answer is 403: there
//! 403 is the four-eyes rule (nobody approves the run they triggered), not a bad token.

use serde_json::{json, Value};

use super::{args::done, text, uuid_arg, Client, Failure, Outcome};

/// `runbookd approvals [--status S] [--json]`: one line per approval, newest first.
pub async fn list(c: &Client, status: Option<String>) -> Outcome {
    let req = c
        .request(reqwest::Method::GET, "/api/v1/approvals")
        .query(&[
            ("status", status.unwrap_or_default()),
            ("limit", "200".to_string()),
        ]);
    let body = super::ok(c.send(req, false).await?)?;
    if c.json_out(&body) {
        return done();
    }
    let items = body.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        eprintln!("no approvals");
    }
    for a in items {
        let decided: Vec<String> = a["decisions"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|d| format!("{} {}", text(d, "decision"), text(d, "by")))
                    .collect()
            })
            .unwrap_or_default();
        out!(
            "{}  {:<8}  {} {}  playbook {}  asked by {}  expires {}{}\n    {}",
            text(&a, "id"),
            text(&a, "status"),
            text(&a, "action"),
            text(&a, "target"),
            text(&a, "playbook"),
            text(&a, "requested_by"),
            text(&a, "expires_at"),
            if decided.is_empty() {
                String::new()
            } else {
                format!("  ({})", decided.join(", "))
            },
            a["reason"].as_str().unwrap_or(""),
        );
    }
    done()
}

/// `runbookd approve ID` / `runbookd deny ID` `[--comment TEXT] [--by NAME]`.
pub async fn decide(
    c: &Client,
    id: &str,
    approve: bool,
    comment: Option<String>,
    by: Option<String>,
) -> Outcome {
    let id = uuid_arg(id, "an approval", "runbookd approvals")?;
    let what = if approve { "approve" } else { "deny" };
    let mut body = json!({ "comment": comment.unwrap_or_default() });
    if let Some(by) = by {
        body["by"] = by.into();
    }
    let answer = c
        .send(
            c.request(
                reqwest::Method::POST,
                &format!("/api/v1/approvals/{id}/{what}"),
            )
            .json(&body),
            false,
        )
        .await?;
    if answer.status == 403 {
        return Err(refused_decision(&answer.body));
    }
    let answer = super::ok(answer).map_err(|mut f| {
        if f.message.contains("cannot tell who you are") {
            f.message
                .push_str("\nrunbookd: say who decides with --by NAME");
        }
        f
    })?;
    if c.json_out(&answer) {
        return done();
    }
    let status = text(&answer, "status");
    match answer["follow_up_run"].as_str() {
        Some(run) => out!("approval {id}: {status}; run {run} started"),
        None => out!(
            "approval {id}: {status}; {} of {} approver(s) so far",
            answer["decisions"].as_array().map(Vec::len).unwrap_or(0),
            answer["required"]
        ),
    }
    done()
}

fn refused_decision(body: &Value) -> Failure {
    Failure::new(
        Failure::FAILED,
        format!(
            "the daemon refused (403): {}",
            body["error"].as_str().unwrap_or("no reason given")
        ),
    )
}
