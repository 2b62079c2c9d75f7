//! Alerts as email over SMTP (the `lettre` crate, TLS by rustls): STARTTLS by default,
//! several recipients, an optional login whose password never prints.

use super::message::Message;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sluice_config::spec::EmailChannel;

/// Sends the message as one email to every recipient of the channel.
pub(super) async fn send(c: &EmailChannel, m: &Message) -> Result<(), String> {
    let hide = |text: String| {
        let mut text = text;
        for secret in c.username.iter().chain(&c.password) {
            text = secret.value.redact(&text);
        }
        text
    };
    let (host, port) = c.host_port()?;
    let from: Mailbox = c
        .from
        .value
        .parse()
        .map_err(|e| format!("`from` `{}`: {e}", c.from.value))?;
    let mut email = lettre::Message::builder()
        .from(from)
        .subject(m.title.clone())
        .header(ContentType::TEXT_PLAIN);
    for to in &c.to.value {
        let to: Mailbox = to
            .value
            .parse()
            .map_err(|e| format!("`to` `{}`: {e}", to.value))?;
        email = email.to(to);
    }
    let email = email
        .body(m.plain())
        .map_err(|e| format!("cannot build the email: {e}"))?;
    let mut transport = if c.starttls.value {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
            .map_err(|e| format!("SMTP server {host}: {e}"))?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
    }
    .port(port)
    .hello_name(hello_name())
    .timeout(Some(c.timeout.value.get()));
    if let (Some(user), Some(password)) = (&c.username, &c.password) {
        transport = transport.credentials(Credentials::new(
            user.value.expose().to_owned(),
            password.value.expose().to_owned(),
        ));
    }
    transport
        .build()
        .send(email)
        .await
        .map(|_| ())
        .map_err(|e| {
            hide(format!(
                "SMTP server {host}:{port}: {}",
                super::error_chain(&e)
            ))
        })
}

/// The name this machine gives in `EHLO`: its host name, or `localhost`.
fn hello_name() -> ClientId {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
        })
        .map_or_else(
            || ClientId::Domain("localhost".to_owned()),
            ClientId::Domain,
        )
}
