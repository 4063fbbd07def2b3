//! One function per channel kind: how a [`Message`] becomes an HTTP request.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::{email, DeliveryError, Message};
use crate::config::{resolve_secret, ChannelConfig, ChannelKind, ConfigError};

/// A configured channel with its secrets resolved.
pub enum Channel {
    Log,
    Email(Box<email::Email>),
    Slack {
        url: SecretString,
    },
    Webhook {
        url: String,
        secret: Option<SecretString>,
    },
    PagerDuty {
        url: String,
        routing_key: SecretString,
        severity: String,
    },
}

/// The channels of a simulation (`runbookd test`, `simulate`, `serve --world`): the
/// configured names, every one capturing (a `log` channel) instead of sending, so a
/// simulation never pages anyone and needs none of the channels' secrets.
pub fn captured_channels(
    config: &crate::config::Config,
) -> std::collections::BTreeMap<String, ChannelConfig> {
    config
        .channels
        .keys()
        .filter_map(|name| {
            toml::from_str::<ChannelConfig>("type = \"log\"")
                .ok()
                .map(|c| (name.clone(), c))
        })
        .collect()
}

const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

impl Channel {
    pub fn from_config(name: &str, c: &ChannelConfig) -> Result<Channel, ConfigError> {
        let url = || -> Result<SecretString, ConfigError> {
            match &c.url {
                Some(u) => Ok(SecretString::from(u.clone())),
                None => resolve_secret(
                    &format!("channels.{name}.url"),
                    c.url_env.as_deref(),
                    c.url_file.as_deref(),
                ),
            }
        };
        Ok(match c.kind {
            ChannelKind::Log => Channel::Log,
            ChannelKind::Email => Channel::Email(Box::new(email::Email::from_config(name, c)?)),
            ChannelKind::Slack => Channel::Slack { url: url()? },
            ChannelKind::Webhook => Channel::Webhook {
                url: url()?.expose_secret().to_string(),
                secret: if c.secret_env.is_some() || c.secret_file.is_some() {
                    Some(resolve_secret(
                        &format!("channels.{name}.secret"),
                        c.secret_env.as_deref(),
                        c.secret_file.as_deref(),
                    )?)
                } else {
                    None
                },
            },
            ChannelKind::Pagerduty => Channel::PagerDuty {
                url: c.url.clone().unwrap_or_else(|| PAGERDUTY_URL.into()),
                routing_key: resolve_secret(
                    &format!("channels.{name}.routing_key"),
                    c.routing_key_env.as_deref(),
                    c.routing_key_file.as_deref(),
                )?,
                severity: c.severity.clone().unwrap_or_else(|| "critical".into()),
            },
        })
    }

    /// Sends one message. `id` (the outbox row's) is the same on every attempt, so a
    /// receiver can recognise a redelivery: delivery is at least once (a replica killed
    /// between a channel's answer and the "sent" mark has its claim resent by another).
    /// `now_ms` is the sending time by the notifier's clock (a webhook's signature
    /// timestamp, a mail's `Date`).
    pub async fn send(
        &self,
        http: &reqwest::Client,
        m: &Message,
        id: &str,
        now_ms: i64,
    ) -> Result<(), DeliveryError> {
        match self {
            Channel::Log => {
                tracing::warn!(
                    kind = %m.kind,
                    incident = m.incident.as_deref().unwrap_or("-"),
                    level = m.level.as_deref().unwrap_or("-"),
                    "NOTIFY {}: {}",
                    m.title,
                    m.text
                );
                Ok(())
            }
            Channel::Email(e) => e.send(m, now_ms).await,
            Channel::Slack { url } => {
                let prefix = match m.kind.as_str() {
                    "resolve" => ":white_check_mark: RESOLVED",
                    "acknowledge" => ":eyes: ACKNOWLEDGED",
                    "trigger" | "repeat" => ":rotating_light:",
                    "approval" => ":raised_hand: APPROVAL NEEDED",
                    _ => ":information_source:",
                };
                let level = m
                    .level
                    .as_deref()
                    .map(|l| format!(" [{l}]"))
                    .unwrap_or_default();
                // Slack reads `<…>` as mentions and links: a playbook's reason must not
                // become `<!channel>` or a link with a text of its choosing.
                let text = format!(
                    "{prefix}{level} *{}*\n{}",
                    slack_escape(&m.title),
                    slack_escape(&m.text)
                );
                let body = match &m.approval {
                    // Block Kit: the request and its two buttons (their value is the
                    // approval id; Slack posts presses to /api/v1/slack/interactions).
                    Some(id) if m.kind == "approval" => serde_json::json!({
                        "text": text,
                        "blocks": [
                            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
                            { "type": "actions", "block_id": format!("approval:{id}"), "elements": [
                                { "type": "button", "action_id": "approve", "value": id, "style": "primary",
                                  "text": { "type": "plain_text", "text": "Approve" } },
                                { "type": "button", "action_id": "deny", "value": id, "style": "danger",
                                  "text": { "type": "plain_text", "text": "Deny" } },
                            ] },
                        ],
                    }),
                    _ => serde_json::json!({ "text": text }),
                };
                post(http.post(url.expose_secret()).json(&body)).await
            }
            Channel::Webhook { url, secret } => {
                let mut v = serde_json::to_value(m).unwrap_or_default();
                v["id"] = id.into();
                let body = serde_json::to_vec(&v).unwrap_or_default();
                let mut req = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", id);
                if let Some(secret) = secret {
                    let t = now_ms / 1000;
                    if let Ok(mut mac) =
                        Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
                    {
                        mac.update(format!("{t}.").as_bytes());
                        mac.update(&body);
                        let sig = hex::encode(mac.finalize().into_bytes());
                        req = req.header("Runbookd-Signature", format!("t={t},v1={sig}"));
                    }
                }
                post(req.body(body)).await
            }
            Channel::PagerDuty {
                url,
                routing_key,
                severity,
            } => {
                let action = match m.kind.as_str() {
                    "resolve" => "resolve",
                    "acknowledge" => "acknowledge",
                    _ => "trigger",
                };
                let body = serde_json::json!({
                    "routing_key": routing_key.expose_secret(),
                    "event_action": action,
                    "dedup_key": m.incident.clone().unwrap_or_else(|| m.title.clone()),
                    "payload": {
                        "summary": format!("{}: {}", m.title, m.text).chars().take(1024).collect::<String>(),
                        "source": "runbookd",
                        "severity": severity,
                        "custom_details": { "level": m.level, "incident": m.incident },
                    }
                });
                post(http.post(url).json(&body)).await
            }
        }
    }
}

/// Sends and classifies: 2xx ok; 429/5xx/network retryable (with Retry-After); other 4xx final.
async fn post(req: reqwest::RequestBuilder) -> Result<(), DeliveryError> {
    match req.send().await {
        Err(e) => Err(DeliveryError {
            message: format!("cannot reach the channel: {}", e.without_url()),
            retryable: true,
            retry_after: None,
        }),
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Err(DeliveryError {
                message: format!("channel answered {status}"),
                retryable: status.as_u16() == 429 || status.is_server_error(),
                retry_after,
            })
        }
    }
}

/// `text` as Slack's `mrkdwn` reads it literally: `&`, `<` and `>` escaped (Slack's rule;
/// nothing else is). Without it, text a playbook or an alert wrote — `<!channel>`,
/// `<https://evil.example|Approve here>` — would be a mention or a link in Slack. For every
/// text runbookd sends to Slack.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}
