//! `runbookd runs`, `show RUN`, `logs RUN [--follow]`, `trigger PLAYBOOK`: runs on a
//! running daemon.

use std::{process::ExitCode, time::Duration};

use serde_json::{json, Value};

use super::{args::done, ok, segment, table::Table, text, uuid_arg, Client, Failure, Outcome};

/// How often `logs --follow` asks for the run between events.
const RECHECK: Duration = Duration::from_secs(5);

/// A run's final statuses (the API's `queued` and `running` are the only others).
fn is_final(status: &str) -> bool {
    !matches!(status, "queued" | "running" | "")
}

/// Exit 0 for a run that succeeded, 1 for any other end.
fn outcome_of(run: &Value) -> ExitCode {
    if run["status"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How much of a run's result `show` prints (`--json` has all of it).
const RESULT_WIDTH: usize = 160;

/// `text` cut to `width` characters, saying so.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let cut: String = text.chars().take(width).collect();
    format!("{cut}… (--json shows all)")
}

/// `2026-12-01T03:00:00.123Z` as `2026-12-01 03:00:00`.
pub fn when(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.len() >= 19 => t[..19].replace('T', " "),
        Some(t) => t.to_string(),
        None => "-".into(),
    }
}

/// How long a run took (or has been running, without its end): `1.2s`, `3m04s`.
fn took(run: &Value) -> String {
    let at = |k: &str| {
        run[k]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let (Some(start), Some(end)) = (at("started_at"), at("finished_at")) else {
        return "-".into();
    };
    let ms = (end - start).num_milliseconds().max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn trigger_of(run: &Value) -> String {
    let t = &run["trigger"];
    format!("{} {}", text(t, "kind"), text(t, "actor"))
}

/// `runbookd runs [--playbook P] [--status S] [--limit N]`.
pub async fn list(
    c: &Client,
    playbook: Option<String>,
    status: Option<String>,
    limit: u32,
) -> Outcome {
    let mut query = vec![("limit", limit.to_string())];
    query.extend(playbook.map(|p| ("playbook", p)));
    query.extend(status.map(|s| ("status", s)));
    let req = c
        .request(reqwest::Method::GET, "/api/v1/runs")
        .query(&query);
    let body = ok(c.send(req, false).await?)?;
    if c.json_out(&body) {
        return done();
    }
    let mut t = Table::new(&[
        "ID", "PLAYBOOK", "STATUS", "DRY", "TRIGGER", "QUEUED", "TOOK",
    ]);
    for r in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(r, "id").into(),
            text(r, "playbook").into(),
            text(r, "status").into(),
            if r["dry_run"] == true { "yes" } else { "-" }.into(),
            trigger_of(r),
            when(&r["queued_at"]),
            took(r),
        ]);
    }
    t.print("no runs");
    done()
}

async fn get_run(c: &Client, id: &str) -> Result<Value, Failure> {
    c.get(&format!("/api/v1/runs/{id}")).await
}

/// Prints the log lines of `run` from the `from`-th on; returns how many it has.
fn print_logs(run: &Value, from: usize, as_json: bool) -> usize {
    let lines = run["logs"].as_array().cloned().unwrap_or_default();
    for l in lines.iter().skip(from) {
        if as_json {
            out!("{l}");
        } else {
            out!(
                "{}  {:<5}  {}",
                text(l, "at"),
                text(l, "level"),
                text(l, "message")
            );
        }
    }
    lines.len()
}

/// `runbookd show RUN`: the record, its attempts, actions and log.
pub async fn show(c: &Client, id: &str) -> Outcome {
    let id = uuid_arg(id, "a run", "runbookd runs")?;
    let run = get_run(c, &id).await?;
    if c.json_out(&run) {
        return done();
    }
    print_run(&run);
    done()
}

/// The run as `show` and `trigger --wait` print it.
fn print_run(run: &Value) {
    let t = &run["trigger"];
    let mut fields = vec![
        ("id", text(run, "id").to_string()),
        ("playbook", text(run, "playbook").to_string()),
        ("version", text(run, "version").to_string()),
        ("status", text(run, "status").to_string()),
        ("dry run", (run["dry_run"] == true).to_string()),
        (
            "trigger",
            format!(
                "{} {} (by {})",
                text(t, "kind"),
                text(t, "name"),
                text(t, "actor")
            ),
        ),
        ("queued", when(&run["queued_at"])),
        ("started", when(&run["started_at"])),
        ("finished", when(&run["finished_at"])),
        ("took", took(run)),
        ("attempt", run["attempt"].to_string()),
        ("replica", text(run, "replica").to_string()),
    ];
    if let Some(incident) = run["event"]["incident"].as_str() {
        fields.push(("incident", incident.to_string()));
    }
    if !run["result"].is_null() {
        fields.push(("result", clip(&run["result"].to_string(), RESULT_WIDTH)));
    }
    if let Some(e) = run["error"].as_object() {
        let at = match (e.get("line"), e.get("column")) {
            (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
            (Some(l), None) => format!(" at line {l}"),
            _ => String::new(),
        };
        fields.push((
            "error",
            format!(
                "{} ({}){at}",
                e.get("message").and_then(Value::as_str).unwrap_or("-"),
                e.get("reason").and_then(Value::as_str).unwrap_or("-")
            ),
        ));
    }
    for (k, v) in fields {
        out!("{:<9} {v}", format!("{k}:"));
    }
    let attempts = run["attempts"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        out!("\nattempts:");
        let mut t = Table::new(&["ATTEMPT", "REPLICA", "STARTED", "ENDED", "OUTCOME"]);
        for a in &attempts {
            t.row(vec![
                a["attempt"].to_string(),
                text(a, "replica").into(),
                when(&a["started_at"]),
                when(&a["ended_at"]),
                text(a, "outcome").into(),
            ]);
        }
        out_raw!("{}", t.render());
    }
    let actions = run["actions"].as_array().cloned().unwrap_or_default();
    out!(
        "\nactions{}:",
        if run["dry_run"] == true {
            " (planned: dry run)"
        } else {
            ""
        }
    );
    if actions.is_empty() {
        out!("  none");
    } else {
        let mut t = Table::new(&["AT", "ACTION", "TARGET", "OUTCOME"]);
        for a in &actions {
            let outcome = match a["error"].as_str() {
                Some(e) => format!("{}: {e}", text(a, "outcome")),
                None => text(a, "outcome").to_string(),
            };
            t.row(vec![
                // `2026-12-01T03:00:00.123Z`: the time of day is what tells actions apart.
                text(a, "at").get(11..23).unwrap_or("-").to_string(),
                text(a, "action").into(),
                text(a, "target").into(),
                outcome,
            ]);
        }
        out_raw!("{}", t.render());
    }
    out!("\nlog:");
    if print_logs(run, 0, false) == 0 {
        out!("  none");
    }
}

/// `runbookd logs RUN [--follow]`.
pub async fn logs(c: &Client, id: &str, follow: bool) -> Outcome {
    let id = uuid_arg(id, "a run", "runbookd runs")?;
    let run = get_run(c, &id).await?;
    if !follow {
        if c.json_out(&run["logs"]) {
            return done();
        }
        print_logs(&run, 0, false);
        return done();
    }
    let mut printed = print_logs(&run, 0, c.json);
    let mut status = text(&run, "status").to_string();
    if is_final(&status) {
        return Ok(outcome_of(&run));
    }
    eprintln!("run {id}: {status}");
    follow_run(c, &id, &mut printed, &mut status).await
}

/// Watches the daemon's event stream until run `id` ends, printing its new log lines and
/// status changes (on standard error); exits with the run's outcome. A stream that ends
/// (its lifetime, a daemon restarting) is opened again; a daemon gone for good is exit 3.
async fn follow_run(c: &Client, id: &str, printed: &mut usize, status: &mut String) -> Outcome {
    let mut failures = 0;
    loop {
        let req = c
            .request(reqwest::Method::GET, "/api/v1/events")
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                if failures >= 10 {
                    return Err(c.unreachable(&e));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if resp.status().as_u16() != 200 {
            let code = resp.status().as_u16();
            let body = resp.json().await.unwrap_or(Value::Null);
            return Err(Failure::refused(code, &body));
        }
        let mut sse = Sse {
            resp,
            buf: String::new(),
        };
        loop {
            // The feed watches the newest runs; an older one's end is seen by asking.
            let (event, data) = match tokio::time::timeout(RECHECK, sse.next()).await {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(_) => ("recheck".to_string(), String::new()),
            };
            let ours = match event.as_str() {
                // What changed before the stream watched is read from the API.
                "ready" | "resync" | "recheck" => true,
                "run" => {
                    serde_json::from_str::<Value>(&data).is_ok_and(|v| v["id"].as_str() == Some(id))
                }
                _ => false,
            };
            if !ours {
                continue;
            }
            failures = 0;
            let run = get_run(c, id).await?;
            *printed = print_logs(&run, *printed, c.json).max(*printed);
            let now = text(&run, "status");
            if now != status.as_str() {
                eprintln!("run {id}: {now}");
                *status = now.to_string();
            }
            if is_final(now) {
                return Ok(outcome_of(&run));
            }
        }
        failures += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A server-sent-events reader over a response body.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// The next event's name and data; none when the stream ends.
    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if data.is_empty() {
                    // A comment (keep-alive) or a bare `retry:`.
                    continue;
                }
                return Some((event, data.join("\n")));
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self
                    .buf
                    .push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n")),
                _ => return None,
            }
        }
    }
}

/// `runbookd trigger PLAYBOOK [--param k=v]… [--dry-run] [--wait]`.
pub async fn trigger(
    c: &Client,
    playbook: &str,
    params: &[String],
    dry_run: bool,
    wait: bool,
) -> Outcome {
    let params = crate::cli::params::parse_params(params)
        .map_err(|e| Failure::new(Failure::USAGE, e.to_string()))?;
    let path = format!(
        "/api/v1/playbooks/{}/runs{}",
        segment(playbook),
        if wait { "?wait=true" } else { "" }
    );
    let req = c
        .request(reqwest::Method::POST, &path)
        .json(&json!({ "params": params, "dry_run": dry_run }));
    let body = ok(c.send(req, wait).await?)?;
    if wait {
        if !c.json_out(&body) {
            print_run(&body);
        }
        return Ok(outcome_of(&body));
    }
    if !c.json_out(&body) {
        out!("{}", text(&body, "id"));
        eprintln!(
            "run {} {}: follow it with `runbookd logs {} --follow`",
            text(&body, "id"),
            text(&body, "status"),
            text(&body, "id")
        );
    }
    done()
}
