//! `runbookd approvals`, `runbookd approve ID`, `runbookd deny ID`: a client of a running
//! daemon's approvals API (`--url`, default the configured listen address; the token from
//! `RUNBOOKD_TOKEN`). Exit 0 when the daemon did it, 1 when it refused (the daemon's reason
//! is printed), 2 when it could not be asked.

use std::process::ExitCode;

use anyhow::Context;
use runbookd::config::Config;
use serde_json::{json, Value};

/// Where the daemon answers: `--url`, else `server.listen` (a wildcard address is asked on
/// loopback).
fn base_url(config: &Config, url: Option<String>) -> String {
    if let Some(u) = url {
        return u.trim_end_matches('/').to_string();
    }
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

fn client() -> anyhow::Result<(reqwest::Client, Option<String>)> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let token = std::env::var("RUNBOOKD_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    Ok((http, token))
}

async fn answer(resp: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

fn refused(status: u16, body: &Value) -> ExitCode {
    let reason = body["error"].as_str().unwrap_or("no reason given");
    eprintln!("runbookd: the daemon refused ({status}): {reason}");
    if reason.contains("cannot tell who you are") {
        eprintln!("runbookd: say who decides with --by NAME");
    }
    ExitCode::FAILURE
}

/// `runbookd approvals [--status S] [--json]`: one line per approval, newest first.
pub async fn list(
    config: &Config,
    url: Option<String>,
    status: Option<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let base = base_url(config, url);
    let (http, token) = client()?;
    let mut req = http.get(format!("{base}/api/v1/approvals")).query(&[
        ("status", status.unwrap_or_default()),
        ("limit", "200".to_string()),
    ]);
    if let Some(t) = &token {
        req = req.bearer_auth(t);
    }
    let (code, body) = answer(req.send().await.with_context(|| format!("asking {base}"))?).await?;
    if code != 200 {
        return Ok(refused(code, &body));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
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
                    .map(|d| {
                        format!(
                            "{} {}",
                            d["decision"].as_str().unwrap_or(""),
                            d["by"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{}  {:<8}  {} {}  playbook {}  asked by {}  expires {}{}\n    {}",
            a["id"].as_str().unwrap_or(""),
            a["status"].as_str().unwrap_or(""),
            a["action"].as_str().unwrap_or(""),
            a["target"].as_str().unwrap_or(""),
            a["playbook"].as_str().unwrap_or(""),
            a["requested_by"].as_str().unwrap_or(""),
            a["expires_at"].as_str().unwrap_or(""),
            if decided.is_empty() {
                String::new()
            } else {
                format!("  ({})", decided.join(", "))
            },
            a["reason"].as_str().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `runbookd approve ID` / `runbookd deny ID` `[--comment TEXT] [--by NAME]`.
pub async fn decide(
    config: &Config,
    url: Option<String>,
    id: &str,
    approve: bool,
    comment: Option<String>,
    by: Option<String>,
) -> anyhow::Result<ExitCode> {
    // An id is a UUID, nothing else: `../incidents/ID/resolve?` is not an approval, and
    // must not become another route of the daemon's.
    let Ok(id) = uuid::Uuid::parse_str(id.trim()) else {
        eprintln!(
            "runbookd: `{id}` is not an approval id (a UUID, as `runbookd approvals` lists them)"
        );
        return Ok(ExitCode::from(2));
    };
    let id = id.hyphenated().to_string();
    let base = base_url(config, url);
    let (http, token) = client()?;
    let what = if approve { "approve" } else { "deny" };
    let mut body = json!({ "comment": comment.unwrap_or_default() });
    if let Some(by) = by {
        body["by"] = by.into();
    }
    let mut req = http
        .post(format!("{base}/api/v1/approvals/{id}/{what}"))
        .json(&body);
    if let Some(t) = &token {
        req = req.bearer_auth(t);
    }
    let (code, answer) =
        answer(req.send().await.with_context(|| format!("asking {base}"))?).await?;
    if code != 200 {
        return Ok(refused(code, &answer));
    }
    let status = answer["status"].as_str().unwrap_or("");
    match answer["follow_up_run"].as_str() {
        Some(run) => println!("approval {id}: {status}; run {run} started"),
        None => println!(
            "approval {id}: {status}; {} of {} approver(s) so far",
            answer["decisions"].as_array().map(Vec::len).unwrap_or(0),
            answer["required"]
        ),
    }
    Ok(ExitCode::SUCCESS)
}
