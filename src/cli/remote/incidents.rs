//! `runbookd incidents [--all]`, `incident ID`, `ack ID`, `resolve ID [--comment]`.

use serde_json::{json, Value};

use super::{args::done, runs::when, table::Table, text, uuid_arg, Client, Outcome};

fn id_arg(id: &str) -> Result<String, super::Failure> {
    uuid_arg(id, "an incident", "runbookd incidents")
}

/// `runbookd incidents [--all]`: open and acknowledged incidents, newest first (every
/// incident with `--all`).
pub async fn list(c: &Client, all: bool, limit: u32) -> Outcome {
    let limit = limit.clamp(1, 1000);
    let mut incidents: Vec<Value> = Vec::new();
    let statuses: &[&str] = if all {
        &[""]
    } else {
        &["open", "acknowledged"]
    };
    for status in statuses {
        let page = c
            .get(&format!("/api/v1/incidents?status={status}&limit={limit}"))
            .await?;
        incidents.extend(page.as_array().cloned().unwrap_or_default());
    }
    // Newest first across the two lists (ids are time-ordered UUIDv7s, as `opened_at`).
    incidents.sort_by(|a, b| text(b, "opened_at").cmp(text(a, "opened_at")));
    let body = Value::Array(incidents);
    if c.json_out(&body) {
        return done();
    }
    let mut t = Table::new(&["ID", "STATUS", "LEVEL", "OPENED", "SOURCE", "TITLE"]);
    for i in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(i, "id").into(),
            text(i, "status").into(),
            text(i, "level").into(),
            when(&i["opened_at"]),
            text(i, "source").into(),
            text(i, "title").into(),
        ]);
    }
    t.print(if all {
        "no incidents"
    } else {
        "no open incidents (--all shows resolved ones too)"
    });
    done()
}

/// `runbookd incident ID`: the incident, its facts and timeline.
pub async fn show(c: &Client, id: &str) -> Outcome {
    let id = id_arg(id)?;
    let i = c.get(&format!("/api/v1/incidents/{id}")).await?;
    if c.json_out(&i) {
        return done();
    }
    print_incident(&i);
    let mut t = Table::new(&["AT", "KIND", "BY", "WHAT"]);
    for line in i["timeline"].as_array().into_iter().flatten() {
        t.row(vec![
            when(&line["at"]),
            text(line, "kind").into(),
            text(line, "actor").into(),
            text(line, "message").into(),
        ]);
    }
    out!("\ntimeline:");
    out_raw!("{}", t.render());
    done()
}

fn print_incident(i: &Value) {
    let by = |at: &str, who: &str| match i[at].as_str() {
        Some(_) => format!("{} by {}", when(&i[at]), text(i, who)),
        None => "-".into(),
    };
    for (k, v) in [
        ("id", text(i, "id").to_string()),
        ("title", text(i, "title").to_string()),
        ("status", text(i, "status").to_string()),
        ("level", text(i, "level").to_string()),
        ("source", text(i, "source").to_string()),
        ("labels", i["labels"].to_string()),
        ("facts", i["facts"].to_string()),
        ("opened", when(&i["opened_at"])),
        ("acked", by("acked_at", "acked_by")),
        ("resolved", by("resolved_at", "resolved_by")),
    ] {
        out!("{:<9} {v}", format!("{k}:"));
    }
}

/// `runbookd ack ID`.
pub async fn ack(c: &Client, id: &str) -> Outcome {
    let id = id_arg(id)?;
    let i = c
        .post(&format!("/api/v1/incidents/{id}/ack"), &json!({}))
        .await?;
    if !c.json_out(&i) {
        out!("incident {id}: acknowledged by {}", text(&i, "acked_by"));
    }
    done()
}

/// `runbookd resolve ID [--comment TEXT]`.
pub async fn resolve(c: &Client, id: &str, comment: Option<&str>) -> Outcome {
    let id = id_arg(id)?;
    let i = c
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            &json!({ "comment": comment.unwrap_or_default() }),
        )
        .await?;
    if !c.json_out(&i) {
        out!("incident {id}: resolved by {}", text(&i, "resolved_by"));
    }
    done()
}
