//! `runbookd breakers` and `runbookd status` (readiness, replicas, approvals waiting).

use std::process::ExitCode;

use serde_json::{json, Value};

use super::{args::done, runs::when, table::Table, text, Client, Failure, Outcome};

/// `runbookd breakers`: every configured breaker and its state.
pub async fn breakers(c: &Client) -> Outcome {
    let body = c.get("/api/v1/breakers").await?;
    if c.json_out(&body) {
        return done();
    }
    let mut t = Table::new(&[
        "NAME",
        "STATE",
        "FAILURES",
        "THRESHOLD",
        "SINCE OPEN",
        "PRESET",
        "ERROR",
    ]);
    for b in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(b, "name").into(),
            text(b, "state").into(),
            b["failures"].as_i64().map_or("-".into(), |f| f.to_string()),
            b["failure_threshold"]
                .as_u64()
                .map_or("-".into(), |f| f.to_string()),
            b["seconds_since_open"]
                .as_f64()
                .map_or("-".into(), |s| format!("{s:.0}s")),
            text(b, "preset").into(),
            text(b, "error").into(),
        ]);
    }
    t.print("no breakers configured ([breakers.NAME])");
    done()
}

/// `runbookd status`: is the daemon ready (and if not, what fails), which replicas share
/// its state store, and which approvals wait for a human. Exit 1 when it is not ready.
pub async fn status(c: &Client) -> Outcome {
    // `/readyz` answers 503 with the same shape when something fails: both are answers.
    let ready = c
        .send(c.request(reqwest::Method::GET, "/readyz"), false)
        .await?;
    if !matches!(ready.status, 200 | 503) {
        return Err(Failure::new(
            Failure::FAILED,
            format!("/readyz answered {}", ready.status),
        ));
    }
    let replicas = c.get("/api/v1/replicas").await?;
    let approvals = c.get("/api/v1/approvals?status=pending&limit=50").await?;
    let is_ready = ready.status == 200;
    let code = if is_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    let all = json!({ "ready": ready.body, "replicas": replicas, "approvals": approvals });
    if c.json_out(&all) {
        return Ok(code);
    }
    out!(
        "daemon:   {} {}",
        c.base,
        if is_ready { "ready" } else { "NOT READY" }
    );
    let mut t = Table::new(&["CHECK", "OUTCOME"]);
    for (k, v) in ready.body["checks"].as_object().into_iter().flatten() {
        t.row(vec![k.clone(), v.as_str().unwrap_or("-").into()]);
    }
    for (k, v) in ready.body["channels"].as_object().into_iter().flatten() {
        t.row(vec![
            format!("channel:{k}"),
            v.as_str().unwrap_or("-").into(),
        ]);
    }
    out_raw!("{}", t.render());
    out!("\nreplicas:");
    let mut t = Table::new(&["NAME", "LEASE EXPIRES", "ANSWERED"]);
    for r in replicas.as_array().into_iter().flatten() {
        t.row(vec![
            text(r, "name").into(),
            when(&r["lease_expires_at"]),
            if r["this"] == true { "yes" } else { "-" }.into(),
        ]);
    }
    out_raw!("{}", t.render());
    out!("\nwaiting for approval:");
    let waiting: Vec<&Value> = approvals.as_array().into_iter().flatten().collect();
    if waiting.is_empty() {
        out!("  nothing");
    } else {
        let mut t = Table::new(&["ID", "PLAYBOOK", "ACTION", "TARGET", "EXPIRES"]);
        for a in waiting {
            t.row(vec![
                text(a, "id").into(),
                text(a, "playbook").into(),
                text(a, "action").into(),
                text(a, "target").into(),
                when(&a["expires_at"]),
            ]);
        }
        out_raw!("{}", t.render());
    }
    Ok(code)
}
