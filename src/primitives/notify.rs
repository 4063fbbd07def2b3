//! `notify(channel, text)`: tell humans. Queued in the persistent outbox, delivered by the
//! daemon with retries; an action, so a dry run only plans it.

use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult};

use super::{act, block_on, script_error, with_run};
use crate::notify::Message;

/// Longest notification text kept; longer texts are cut with a marker.
const MAX_TEXT_BYTES: usize = 32 * 1024;

fn notify(channel: &str, text: &str) -> Result<Dynamic, Box<EvalAltResult>> {
    let (notifier, playbook, incident) = with_run("notify", |ctx| {
        Ok((
            ctx.services.notifier.clone(),
            ctx.playbook.clone(),
            ctx.incident.clone(),
        ))
    })?;
    let notifier =
        notifier.ok_or_else(|| script_error("notify: notifications need the state store"))?;
    if !notifier.channel_names().iter().any(|c| c == channel) {
        return Err(script_error(format!(
            "notify: no channel named `{channel}` (configured: {}); add [channels.{channel}]",
            notifier.channel_names().join(", ")
        )));
    }
    // Chat and pager APIs refuse far less than this; the outbox row stays bounded.
    let text = crate::redact::mask_cards(text);
    let text = crate::text::truncate(&text, MAX_TEXT_BYTES);
    let text = text.as_ref();
    let message = Message {
        kind: "message".into(),
        title: format!("runbookd: {playbook}"),
        text: text.to_string(),
        incident: incident.clone(),
        level: None,
        approval: None,
    };
    let channel = channel.to_string();
    let details = serde_json::json!({ "text": text, "incident": incident });
    let out = act("notify", &format!("channel:{channel}"), details, || {
        let id = block_on("notify", Duration::from_secs(10), async move {
            notifier.enqueue(&channel, &message).await
        })?;
        Ok(serde_json::json!({ "notification": id }))
    })?;
    Ok(out
        .and_then(|o| {
            o["notification"]
                .as_str()
                .map(|s| Dynamic::from(s.to_string()))
        })
        .unwrap_or(Dynamic::UNIT))
}

pub fn register(engine: &mut Engine) {
    engine.register_fn("notify", notify);
}
