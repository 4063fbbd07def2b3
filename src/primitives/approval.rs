//! `approved(#{ action, target, params, reason, expires })`: true only when humans approved
//! this exact request and the grant was not used yet — and then it is used up. Otherwise
//! the request is recorded (once; asking again while it waits asks nothing new), the
//! `[approvals] channel` is told, the run ends `awaiting_approval` and a decision starts a
//! new run (see `crate::approvals`). That run asks on behalf of the original requester, and
//! when it was started by a denial or an expiry, asking for that same request again is
//! false without asking. A dry run says what it would ask and returns false.

use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Map};

use super::{block_on, core::append_log, push_action, script_error, with_run, ActionRecord};
use crate::{
    primitives::ActionOutcome,
    store::{Asked, NewApproval},
};

const LIMIT: Duration = Duration::from_secs(10);

/// The request as the script wrote it.
struct Request {
    action: String,
    target: String,
    params: serde_json::Value,
    reason: String,
    expires: Duration,
}

fn text(request: &Map, key: &str, required: bool) -> Result<String, Box<EvalAltResult>> {
    match request.get(key) {
        None if !required => Ok(String::new()),
        None => Err(script_error(format!(
            "approved: the request needs `{key}` (#{{ action, target, reason }})"
        ))),
        Some(v) => match v.clone().into_immutable_string() {
            Ok(s) if required && s.trim().is_empty() => {
                Err(script_error(format!("approved: `{key}` is empty")))
            }
            Ok(s) => Ok(s.to_string()),
            Err(t) => Err(script_error(format!("approved: `{key}` is text, not {t}"))),
        },
    }
}

fn parse(request: &Map, default: Duration, max: Duration) -> Result<Request, Box<EvalAltResult>> {
    for key in request.keys() {
        if !["action", "target", "params", "reason", "expires"].contains(&key.as_str()) {
            return Err(script_error(format!(
                "approved: unknown key `{key}` (action, target, params, reason, expires)"
            )));
        }
    }
    let params = match request.get("params") {
        None => serde_json::json!({}),
        Some(p) if p.is_map() => rhai::serde::from_dynamic(p)?,
        Some(p) => {
            return Err(script_error(format!(
                "approved: `params` is a map, not {}",
                p.type_name()
            )))
        }
    };
    let expires = match request.get("expires") {
        None => default,
        Some(v) => {
            let d = if let Ok(secs) = v.as_int() {
                Duration::from_secs(secs.max(0) as u64)
            } else {
                let t = text(request, "expires", true)?;
                humantime::parse_duration(t.trim()).map_err(|e| {
                    script_error(format!("approved: `expires` `{t}` is not a duration: {e}"))
                })?
            };
            if d.is_zero() || d > max {
                return Err(script_error(format!(
                    "approved: `expires` must be longer than zero and at most {} ([approvals] max_expires)",
                    humantime::format_duration(max)
                )));
            }
            d
        }
    };
    // What humans are asked is stored, announced and audited: card numbers masked.
    let mask = |s: String| crate::redact::mask_cards(&s).into_owned();
    Ok(Request {
        action: mask(text(request, "action", true)?),
        target: mask(text(request, "target", true)?),
        params: crate::redact::mask_cards_json(&params),
        reason: mask(text(request, "reason", false)?),
        expires,
    })
}

/// What humans are told when asked.
fn announcement(a: &NewApproval) -> serde_json::Value {
    let expires = crate::store::ms_to_rfc3339(a.expires_at);
    let mut text = format!(
        "{} asks to {} {}{}\nincident: {}, expires {expires}, {} approver(s) needed\n\
         approve: runbookd approve {id}   (POST /api/v1/approvals/{id}/approve)\n\
         deny:    runbookd deny {id}      (POST /api/v1/approvals/{id}/deny)",
        a.playbook,
        a.action,
        a.target,
        if a.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", a.reason)
        },
        a.incident.as_deref().unwrap_or("none"),
        a.required,
        id = a.id,
    );
    if a.params.as_object().is_some_and(|m| !m.is_empty()) {
        text.push_str(&format!("\nparams: {}", a.params));
    }
    serde_json::json!({
        "kind": "approval",
        "title": format!("runbookd: approve {} {}?", a.action, a.target),
        "text": text,
        "incident": a.incident,
        "level": null,
        "approval": a.id,
    })
}

/// What `approved()` needs of the run asking, read once.
struct Asker {
    now: i64,
    dry_run: bool,
    run_id: String,
    playbook: String,
    incident: Option<String>,
    requested_by: String,
    /// The decision that started this run, when a decision did.
    answer: Option<crate::approvals::Answer>,
    store: Option<crate::store::Store>,
    cfg: std::sync::Arc<crate::config::ApprovalsConfig>,
    channels: Vec<String>,
}

fn asker() -> Result<Asker, Box<EvalAltResult>> {
    with_run("approved", |ctx| {
        Ok(Asker {
            now: ctx.services.clock.now_ms(),
            dry_run: ctx.dry_run,
            run_id: ctx.run_id.clone(),
            playbook: ctx.playbook.clone(),
            incident: ctx.incident.clone(),
            requested_by: ctx.requested_by.clone(),
            answer: ctx.answer.clone(),
            store: ctx.services.store.clone(),
            cfg: ctx.services.approvals.clone(),
            channels: ctx
                .services
                .notifier
                .as_ref()
                .map(|n| n.channel_names())
                .unwrap_or_default(),
        })
    })
}

/// Records what `approved()` did as the run's action and says it in the run's log.
fn record(
    action: &str,
    req: &Request,
    details: serde_json::Value,
    done: Option<&serde_json::Value>,
    at: i64,
    line: &str,
) -> Result<(), Box<EvalAltResult>> {
    let record = ActionRecord {
        action,
        target: &req.target,
        dry_run: done.is_none(),
        outcome: match done {
            Some(_) => ActionOutcome::Done,
            None => ActionOutcome::Planned,
        },
        details,
        result: done,
        error: None,
    }
    .at(at);
    push_action("approved", record)?;
    append_log("info", line);
    Ok(())
}

fn approved(request: Map) -> Result<bool, Box<EvalAltResult>> {
    let asker = asker()?;
    let req = parse(&request, asker.cfg.expires, asker.cfg.max_expires)?;
    let what = format!("{} {}", req.action, req.target);
    let details = serde_json::json!({
        "action": req.action, "target": req.target, "params": req.params, "reason": req.reason,
    });
    if asker.dry_run {
        let line = format!("dry run: would ask for approval of {what}; not approved");
        record("approval.request", &req, details, None, asker.now, &line)?;
        return Ok(false);
    }
    let request_hash = crate::store::request_hash(
        &asker.playbook,
        asker.incident.as_deref(),
        &req.action,
        &req.target,
        &req.params,
    );
    // The run a denial or an expiry started asks for that same request again: the answer
    // stands. Not approved, nothing asked, nobody notified; the run is not awaiting.
    if let Some(answer) = asker
        .answer
        .as_ref()
        .filter(|a| a.decision != "approved" && a.request_hash == request_hash)
    {
        let result = serde_json::json!({ "approval": answer.id, "status": answer.decision });
        let line = format!(
            "approval of {what} was {} (approval {}); not asked again",
            answer.decision, answer.id
        );
        record(
            "approval.answered",
            &req,
            details,
            Some(&result),
            asker.now,
            &line,
        )?;
        return Ok(false);
    }
    // What the store answered is recorded: a replay answers it as it was decided, asking
    // nobody and writing nothing.
    let args = vec![
        serde_json::json!(req.action),
        serde_json::json!(req.target),
        req.params.clone(),
    ];
    let Answered {
        granted,
        action,
        result,
        line,
    } = super::recorder::read_json("approved", args, || {
        let asked = ask(asker.now, &asker, &req, request_hash)?;
        let (granted, action, result, line) = answer(&asked, &what);
        Ok(Answered {
            granted,
            action: action.to_string(),
            result,
            line,
        })
    })?;
    if !granted {
        with_run("approved", |ctx| {
            ctx.awaiting_approval.set(true);
            Ok(())
        })?;
    }
    record(&action, &req, details, Some(&result), asker.now, &line)?;
    Ok(granted)
}

/// What asking the store came to, as the run records and a replay answers it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Answered {
    granted: bool,
    action: String,
    result: serde_json::Value,
    line: String,
}

/// Asks the store: the grant is used, the request found still waiting, or recorded anew (and
/// then the `[approvals] channel` told, in the same transaction).
fn ask(
    now: i64,
    asker: &Asker,
    req: &Request,
    request_hash: String,
) -> Result<Asked, Box<EvalAltResult>> {
    let store = asker
        .store
        .clone()
        .ok_or_else(|| script_error("approved: approvals need the state store"))?;
    let cfg = &asker.cfg;
    let mut new = NewApproval {
        id: uuid::Uuid::now_v7().to_string(),
        request_hash,
        playbook: asker.playbook.clone(),
        incident: asker.incident.clone(),
        run_id: asker.run_id.clone(),
        action: req.action.clone(),
        target: req.target.clone(),
        params: req.params.clone(),
        reason: req.reason.clone(),
        required: i64::from(cfg.required),
        requested_by: asker.requested_by.clone(),
        expires_at: now + req.expires.as_millis() as i64,
        notify: None,
    };
    if let Some(channel) = cfg.channel.clone().filter(|c| asker.channels.contains(c)) {
        new.notify = Some((channel, announcement(&new)));
    }
    block_on(
        "approved",
        LIMIT,
        async move { store.ask_approval(&new).await },
    )
}

/// What the store's answer means for the script: granted or not, the action recorded, its
/// result and the log line.
fn answer(asked: &Asked, what: &str) -> (bool, &'static str, serde_json::Value, String) {
    match asked {
        Asked::Granted(a) => {
            let by: Vec<&str> = a.decisions.iter().map(|d| d.by.as_str()).collect();
            (
                true,
                "approval.use",
                serde_json::json!({ "approval": a.id, "approvers": by }),
                format!("approved by {}: {what} (approval {})", by.join(", "), a.id),
            )
        }
        Asked::Pending(a) => (
            false,
            "approval.request",
            serde_json::json!({ "approval": a.id, "status": "pending" }),
            format!(
                "approval of {what} already asked for (approval {}), still pending until {}",
                a.id,
                crate::store::ms_to_rfc3339(a.expires_at)
            ),
        ),
        Asked::Requested(a) => (
            false,
            "approval.request",
            serde_json::json!({ "approval": a.id, "status": "pending" }),
            format!(
                "asked for approval of {what} (approval {}, expires {})",
                a.id,
                crate::store::ms_to_rfc3339(a.expires_at)
            ),
        ),
    }
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("approved", approved);
    // A script may hold the request in a variable of any type; only maps are requests.
    engine.register_fn(
        "approved",
        |v: Dynamic| -> Result<bool, Box<EvalAltResult>> {
            Err(script_error(format!(
                "approved: takes a map #{{ action, target, reason }}, not {}",
                v.type_name()
            )))
        },
    );
}
