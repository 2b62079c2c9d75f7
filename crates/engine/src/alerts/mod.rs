//! Delivers alerts to a pipeline's `alerts.channels`: a log line, a signed webhook POST,
//! a program fed the alert as JSON, the chat robots (Slack, DingTalk, Feishu/Lark, WeCom)
//! and email. The routes pick the channels; the channels are tried at once, each retried
//! a few times within a bound, and each outcome is kept in the state store
//! (`alert_deliveries`), where `sluice alerts` shows it.
//!
//! ```no_run
//! # async fn f(plan: &sluice_config::plan::Plan, store: &sluice_state::StateStore, alert: sluice_state::AlertRow) {
//! sluice_engine::alerts::raise(&plan.alerts, &alert, "sluice alerts", store).await;
//! # }
//! ```

pub mod message;
pub mod robots;

mod email;

use hmac::{Hmac, Mac};
use message::Message;
use sluice_config::spec::{
    AlertSeverity as RouteSeverity, AlertsSpec, ChannelSpec, CommandChannel, LogChannel, LogLevel,
    RouteSpec, WebhookChannel,
};
use sluice_state::{AlertRow, AlertSeverity, DeliveryRow, DeliveryStatus, StateStore, now_ms};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Attempts per channel and alert. With the backoff below, a delivery holds its caller at
/// most `ATTEMPTS` × the channel's timeout plus about a second.
pub const ATTEMPTS: u32 = 3;

/// The pause before the second attempt; it doubles after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The header that carries the HMAC-SHA256 of a webhook's body, when the channel has a
/// `secret`.
pub const SIGNATURE_HEADER: &str = "X-Sluice-Signature";

/// Records `alert` and delivers it to the channels its routes pick. Failures to record or
/// deliver are logged and kept, never returned: an alert must not change the outcome of
/// what raised it.
pub async fn raise(spec: &AlertsSpec, alert: &AlertRow, next: &str, store: &StateStore) {
    match store.record_alert(alert).await {
        Ok(id) => deliver(spec, &id, alert, next, store).await,
        Err(e) => {
            tracing::warn!(pipeline = %alert.pipeline, error = %e, "could not record an alert");
            deliver_unrecorded(spec, alert, next).await;
        }
    }
}

/// Delivers the alert recorded under `alert_id` to the channels its routes pick, and
/// records each delivery's outcome. `next` is the command that shows more (`sluice runs
/// show ID`), sent with the alert. Without channels the alert becomes a log line.
pub async fn deliver(
    spec: &AlertsSpec,
    alert_id: &str,
    alert: &AlertRow,
    next: &str,
    store: &StateStore,
) {
    for (name, outcome) in send_all(spec, alert, next).await {
        let row = DeliveryRow {
            alert_id: alert_id.to_owned(),
            channel: name,
            status: if outcome.error.is_none() {
                DeliveryStatus::Sent
            } else {
                DeliveryStatus::Failed
            },
            attempts: i64::from(outcome.attempts),
            error: outcome.error,
            at: now_ms(),
        };
        if let Err(e) = store.record_delivery(&row).await {
            tracing::warn!(channel = %row.channel, error = %e, "could not record an alert delivery");
        }
    }
}

/// Delivers without recording the outcome: for when the state store is out of reach or
/// refused the alert itself.
pub async fn deliver_unrecorded(spec: &AlertsSpec, alert: &AlertRow, next: &str) {
    send_all(spec, alert, next).await;
}

/// How one channel's delivery ended.
struct Outcome {
    attempts: u32,
    error: Option<String>,
}

async fn send_all(spec: &AlertsSpec, alert: &AlertRow, next: &str) -> Vec<(String, Outcome)> {
    if spec.channels.is_empty() {
        log_line(&LogChannel::default(), "log", alert);
        return Vec::new();
    }
    let body = payload(alert, next);
    let message = Message::of(alert, next);
    // Every channel at once: a slow one holds the caller no longer than its own bound.
    let sends = channels_for(spec, alert).into_iter().filter_map(|name| {
        let channel = spec.channels.get(&name)?;
        let (body, message) = (&body, &message);
        Some(async move {
            let outcome = send_with_retries(&name, channel, alert, body, message).await;
            if let Some(error) = &outcome.error {
                tracing::warn!(
                    pipeline = %alert.pipeline,
                    channel = %name,
                    attempts = outcome.attempts,
                    %error,
                    "alert delivery failed"
                );
            }
            (name, outcome)
        })
    });
    futures::future::join_all(sends).await
}

/// The names of the channels an alert goes to, each once, in the order of the routes (or
/// of the channels, when there are no routes).
pub fn channels_for(spec: &AlertsSpec, alert: &AlertRow) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if spec.routes.is_empty() {
        names.extend(spec.channels.iter().map(|(k, _)| k.value.clone()));
    } else {
        for route in spec.routes.iter().filter(|r| route_matches(r, alert)) {
            if !names.contains(&route.channel.value) {
                names.push(route.channel.value.clone());
            }
        }
    }
    names
}

/// Whether each non-empty filter of the route matches the alert. An alert without a class
/// (a recovery) or without a node fails a filter on classes or nodes.
fn route_matches(route: &RouteSpec, alert: &AlertRow) -> bool {
    let class_ok = route.classes.is_empty()
        || alert
            .class
            .is_some_and(|c| route.classes.iter().any(|r| r.value == c));
    let severity_ok = route.severities.is_empty()
        || route
            .severities
            .iter()
            .any(|s| severity(*s) == alert.severity);
    let node_ok = route.nodes.is_empty()
        || alert
            .node
            .as_ref()
            .is_some_and(|n| route.nodes.iter().any(|r| r.value == *n));
    class_ok && severity_ok && node_ok
}

/// A route's severity as the state store names it.
fn severity(s: RouteSeverity) -> AlertSeverity {
    match s {
        RouteSeverity::Info => AlertSeverity::Info,
        RouteSeverity::Warning => AlertSeverity::Warning,
        RouteSeverity::Critical => AlertSeverity::Critical,
    }
}

/// The JSON sent to webhooks and programs.
pub fn payload(alert: &AlertRow, next: &str) -> Vec<u8> {
    let value = serde_json::json!({
        "pipeline": alert.pipeline,
        "node": alert.node,
        "kind": alert.kind.as_str(),
        "class": alert.class.map(|c| c.as_str()),
        "severity": alert.severity.as_str(),
        "message": alert.message,
        "at": alert.at,
        "next": next,
    });
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `key`, as sent in [`SIGNATURE_HEADER`].
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn send_with_retries(
    name: &str,
    channel: &ChannelSpec,
    alert: &AlertRow,
    body: &[u8],
    message: &Message,
) -> Outcome {
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = match channel {
            ChannelSpec::Log(log) => {
                log_line(log, name, alert);
                Ok(())
            }
            ChannelSpec::Webhook(hook) => post(hook, body).await,
            ChannelSpec::Command(command) => run_program(command, body).await,
            ChannelSpec::Slack(c) => robots::slack(c, message).await,
            ChannelSpec::Dingtalk(c) => robots::dingtalk(c, message).await,
            ChannelSpec::Feishu(c) => robots::feishu(c, message, alert.severity).await,
            ChannelSpec::Wecom(c) => robots::wecom(c, message).await,
            ChannelSpec::Email(c) => email::send(c, message).await,
        };
        match result {
            Ok(()) => {
                return Outcome {
                    attempts,
                    error: None,
                };
            }
            Err(error) if attempts >= ATTEMPTS => {
                return Outcome {
                    attempts,
                    error: Some(error),
                };
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}

fn log_line(log: &LogChannel, channel: &str, a: &AlertRow) {
    let node = a.node.as_deref().unwrap_or("-");
    let class = a.class.map_or("-", |c| c.as_str());
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                channel,
                pipeline = %a.pipeline,
                node,
                kind = %a.kind,
                class,
                severity = %a.severity,
                at = a.at,
                "alert: {}",
                a.message
            )
        };
    }
    match log.level {
        LogLevel::Info => line!(info),
        LogLevel::Warn => line!(warn),
        LogLevel::Error => line!(error),
    }
}

/// One POST of the alert. The error names the status or the failure, never the URL's
/// query, a header value or the secret.
async fn post(hook: &WebhookChannel, body: &[u8]) -> Result<(), String> {
    let timeout = hook.timeout.value.get();
    // No redirects: the headers and the signature go to the address the pipeline names,
    // never to one an answer points at.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let url = hook.url.value.to_string();
    let mut request = client
        .post(url.as_str())
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in hook.headers.entries() {
        request = request.header(name.value.as_str(), value.value.as_str());
    }
    if let Some(secret) = &hook.secret {
        request = request.header(
            SIGNATURE_HEADER,
            signature(secret.value.expose().as_bytes(), body),
        );
    }
    let shown = sluice_core::redact::redact_url(&url);
    match request.send().await {
        Ok(answer) if answer.status().is_success() => Ok(()),
        Ok(answer) if answer.status().is_redirection() => Err(format!(
            "{shown} answered HTTP {} (a redirect, not followed: point the webhook at the final address)",
            answer.status()
        )),
        Ok(answer) => Err(format!("{shown} answered HTTP {}", answer.status())),
        Err(e) if e.is_timeout() => Err(format!("{shown} did not answer within {timeout:?}")),
        Err(e) => Err(format!("POST {shown}: {}", error_chain(&e.without_url()))),
    }
}

/// An error and its sources, `: `-separated (reqwest's own message is only "error
/// sending request").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Runs the program with the alert on its standard input; killed after the timeout.
async fn run_program(command: &CommandChannel, body: &[u8]) -> Result<(), String> {
    let program = &command.program.value;
    let timeout = command.timeout.value.get();
    let mut child = tokio::process::Command::new(program)
        .args(&command.args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let body = body.to_vec();
    let run = async move {
        // A program that exits without reading its input is not an error of the delivery.
        let _ = stdin.write_all(&body).await;
        drop(stdin);
        child.wait_with_output().await
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(format!(
            "`{program}` did not finish within {timeout:?}; killed"
        )),
        Ok(Err(e)) => Err(format!("`{program}`: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(match last {
                Some(line) => format!("`{program}` exited with {}: {}", out.status, line.trim()),
                None => format!("`{program}` exited with {}", out.status),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::ErrorClass;
    use sluice_state::AlertKind;

    fn spec(yaml: &str) -> AlertsSpec {
        let text = format!(
            "pipeline: p\nalerts:\n{yaml}\nnodes:\n  api: {{ type: http, url: \"https://x.example/a\" }}\n  sink: {{ type: sqlite, inputs: [api], url: \"sqlite://o.db\", table: t }}\n"
        );
        let registry = sluice_connectors::registry();
        sluice_config::validate(&text, &sluice_config::Env::new(), registry)
            .unwrap()
            .alerts
    }

    fn alert(class: Option<ErrorClass>, severity: AlertSeverity, node: Option<&str>) -> AlertRow {
        AlertRow {
            pipeline: "p".into(),
            node: node.map(Into::into),
            kind: AlertKind::RunFailed,
            class,
            severity,
            message: "boom".into(),
            at: 1,
        }
    }

    #[test]
    fn routes_pick_channels_by_class_severity_and_node() {
        let s = spec(
            "  channels:\n    ops: { log: {} }\n    pager: { log: {} }\n    db: { log: {} }\n  routes:\n    - { channel: pager, classes: [auth], severities: [critical] }\n    - { channel: ops }\n    - { channel: db, nodes: [sink] }\n    - { channel: ops, severities: [info] }",
        );
        let critical_auth = alert(
            Some(ErrorClass::Auth),
            AlertSeverity::Critical,
            Some("sink"),
        );
        assert_eq!(channels_for(&s, &critical_auth), ["pager", "ops", "db"]);
        let warning_auth = alert(Some(ErrorClass::Auth), AlertSeverity::Warning, None);
        assert_eq!(channels_for(&s, &warning_auth), ["ops"]);
        let no_class = alert(None, AlertSeverity::Critical, Some("api"));
        assert_eq!(channels_for(&s, &no_class), ["ops"]);
    }

    #[test]
    fn without_routes_every_channel_gets_every_alert() {
        let s = spec("  channels:\n    a: { log: {} }\n    b: { log: {} }");
        let any = alert(None, AlertSeverity::Info, None);
        assert_eq!(channels_for(&s, &any), ["a", "b"]);
    }

    #[test]
    fn signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_so_the_headers_go_nowhere_else() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere_at = elsewhere.local_addr().unwrap();
        let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_at = hook.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = hook.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{elsewhere_at}/steal\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        });
        let spec = spec(&format!(
            "  channels:\n    hook:\n      webhook: {{ url: \"http://{hook_at}/in\", headers: {{ X-Token: abc }} }}"
        ));
        let Some(sluice_config::spec::ChannelSpec::Webhook(hook)) = spec.channels.get("hook")
        else {
            panic!("a webhook")
        };
        let e = post(hook, b"{}").await.unwrap_err();
        assert!(e.contains("not followed"), "{e}");
        let reached =
            tokio::time::timeout(std::time::Duration::from_millis(300), elsewhere.accept()).await;
        assert!(reached.is_err(), "the redirect target was contacted");
    }
}
