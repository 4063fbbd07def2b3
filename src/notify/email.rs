//! The email channel: plain-text mail over SMTP (lettre), STARTTLS by default.

use lettre::{
    message::{header::ContentType, Mailbox},
    transport::smtp::authentication::Credentials,
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
};
use secrecy::ExposeSecret;

use super::{DeliveryError, Message};
use crate::config::{resolve_secret, ChannelConfig, ConfigError};

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    pub fn from_config(name: &str, c: &ChannelConfig) -> Result<Email, ConfigError> {
        let key = |k: &str| format!("channels.{name}.{k}");
        let bad = |k: &str, m: String| ConfigError::Key {
            key: key(k),
            message: m,
        };
        let host = c.smtp_host.clone().unwrap_or_default();
        let port = c.smtp_port.unwrap_or(587);
        let builder = match c.smtp_tls.as_deref().unwrap_or("starttls") {
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                .map_err(|e| bad("smtp_host", e.to_string()))?,
            _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                .map_err(|e| bad("smtp_host", e.to_string()))?,
        };
        let mut builder = builder.port(port);
        if let Some(user_env) = &c.username_env {
            let user = std::env::var(user_env).map_err(|_| ConfigError::Env {
                var: user_env.clone(),
                message: format!("{}: not set", key("username_env")),
            })?;
            let password = resolve_secret(
                &key("password"),
                c.password_env.as_deref(),
                c.password_file.as_deref(),
            )?;
            builder =
                builder.credentials(Credentials::new(user, password.expose_secret().to_string()));
        }
        let from = c
            .from
            .as_deref()
            .unwrap_or_default()
            .parse::<Mailbox>()
            .map_err(|e| bad("from", e.to_string()))?;
        let to =
            c.to.iter()
                .map(|t| {
                    t.parse::<Mailbox>()
                        .map_err(|e| bad("to", format!("`{t}`: {e}")))
                })
                .collect::<Result<_, _>>()?;
        Ok(Email {
            transport: builder.build(),
            from,
            to,
        })
    }

    /// Sends `m` dated `now_ms` (the notifier's clock decides the `Date` header).
    pub async fn send(&self, m: &Message, now_ms: i64) -> Result<(), DeliveryError> {
        let date = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now_ms.max(0) as u64);
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .date(date)
            .subject(match m.kind.as_str() {
                "resolve" => format!("RESOLVED: {}", m.title),
                "acknowledge" => format!("ACKNOWLEDGED: {}", m.title),
                _ => m.title.clone(),
            })
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let mut body = m.text.clone();
        if let Some(i) = &m.incident {
            body.push_str(&format!("\n\nincident: {i}"));
        }
        let mail = builder.body(body).map_err(|e| DeliveryError {
            message: format!("cannot build the mail: {e}"),
            retryable: false,
            retry_after: None,
        })?;
        self.transport
            .send(mail)
            .await
            .map(|_| ())
            .map_err(|e| DeliveryError {
                retryable: !e.is_permanent(),
                message: format!("SMTP: {e}"),
                retry_after: None,
            })
    }
}
