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
use sluice_state::{
    AlertKind, AlertRow, AlertSeverity, ClearedCondition, ConditionKey, Dedup, DeliveryRow,
    DeliveryStatus, StateStore, new_alert_id, now_ms,
};
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

/// Alerts delivered one after another, off the path of what raised them: a run hands its
/// alerts over and returns (a realtime pipeline's next run does not wait for a slow
/// channel). In order, so that a recovery never overtakes the failure it clears. The
/// process waits for what it handed over with [`AlertQueue::finish`] (each delivery is
/// bounded, see [`ATTEMPTS`]).
#[derive(Debug, Clone, Default)]
pub struct AlertQueue {
    last: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl AlertQueue {
    /// Runs `work` once everything handed over before it is done.
    pub fn push(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let before = last.take();
        *last = Some(tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            work.await;
        }));
    }

    /// Waits until everything handed over so far is delivered.
    pub async fn finish(&self) {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(last) = last {
            let _ = last.await;
        }
    }
}

/// Raises an alert about a condition that holds until something clears it: a link down
/// (`subject`: the link), a pipeline failing (the node), late (`""`: the pipeline). The
/// first alert of the condition goes out; while it holds, a repeat goes out as a reminder
/// once `repeat_every` has passed since the last one, and the repeats in between are held
/// back and counted on that last one (`sluice alerts` shows the count). The state store
/// decides, so this holds across processes (`sluice run`, `sluice health --watch`).
pub async fn raise_condition(
    spec: &AlertsSpec,
    alert: &AlertRow,
    subject: &str,
    next: &str,
    store: &StateStore,
) {
    let key = ConditionKey {
        pipeline: alert.pipeline.clone(),
        subject: subject.to_owned(),
        kind: alert.kind,
        class: alert.class,
    };
    let id = new_alert_id();
    let repeat = spec.repeat_every.value.get();
    let repeat_ms = i64::try_from(repeat.as_millis()).unwrap_or(i64::MAX);
    match store.open_condition(&key, &id, alert.at, repeat_ms).await {
        Ok(Dedup::First) => record_and_deliver(spec, &id, alert, next, store).await,
        Ok(Dedup::Reminder { since }) => {
            let reminder = AlertRow {
                message: format!(
                    "{} (reminder: so for {}, since {}; repeated every {})",
                    alert.message,
                    message::span(alert.at - since),
                    message::time(since),
                    spec.repeat_every.value
                ),
                ..alert.clone()
            };
            record_and_deliver(spec, &id, &reminder, next, store).await;
        }
        Ok(Dedup::Suppressed { since, .. }) => tracing::info!(
            pipeline = %alert.pipeline,
            kind = %alert.kind,
            subject,
            since = %message::time(since),
            "alert held back: the same condition was alerted less than `repeat_every` ago"
        ),
        Err(e) => {
            tracing::warn!(pipeline = %alert.pipeline, error = %e, "could not look up an alert's condition; sending it");
            raise(spec, alert, next, store).await;
        }
    }
}

/// Clears the open conditions of `kind` for the pipeline (those about `subject`, if
/// given). For each one cleared, `recovery` may give an alert to raise (it is told the
/// condition and how long it held, in ms) with its `next` command.
pub async fn clear<F>(
    spec: &AlertsSpec,
    store: &StateStore,
    pipeline: &str,
    subject: Option<&str>,
    kind: AlertKind,
    recovery: F,
) where
    F: Fn(&ClearedCondition, i64) -> Option<(AlertRow, String)>,
{
    let cleared = match store.close_conditions(pipeline, subject, kind).await {
        Ok(cleared) => cleared,
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "could not clear an alert's condition");
            return;
        }
    };
    for condition in cleared {
        if let Some((alert, next)) = recovery(&condition, now_ms() - condition.since) {
            raise(spec, &alert, &next, store).await;
        }
    }
}

async fn record_and_deliver(
    spec: &AlertsSpec,
    id: &str,
    alert: &AlertRow,
    next: &str,
    store: &StateStore,
) {
    match store.record_alert_as(id, alert).await {
        Ok(()) => deliver(spec, id, alert, next, store).await,
        Err(e) => {
            tracing::warn!(pipeline = %alert.pipeline, error = %e, "could not record an alert");
            deliver_unrecorded(spec, alert, next).await;
        }
    }
}

/// Delivers the alert recorded under `alert_id` to the channels its routes pick, and
/// records each delivery's outcome. `next` is the command that shows more (`sluice runs
/// show ID`), sent with the alert. Without channels the alert becomes a log line.
///
/// A channel whose every attempt failed raises its own alert, as a log line (never to a
/// channel, which might fail the same way), once while it keeps failing and again every
/// `repeat_every`; its first delivery that succeeds clears that.
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
        if alert.kind == AlertKind::ChannelFailed {
            continue;
        }
        match &row.error {
            Some(error) => channel_failing(spec, &alert.pipeline, &row.channel, error, store).await,
            None => {
                let cleared = store
                    .close_conditions(
                        &alert.pipeline,
                        Some(&row.channel),
                        AlertKind::ChannelFailed,
                    )
                    .await
                    .unwrap_or_default();
                if let Some(c) = cleared.first() {
                    tracing::info!(
                        pipeline = %alert.pipeline,
                        channel = %row.channel,
                        "alert channel delivers again, after failing for {}",
                        message::span(now_ms() - c.since)
                    );
                }
            }
        }
    }
}

/// The log alert of a channel that failed every attempt (see [`deliver`]).
async fn channel_failing(
    spec: &AlertsSpec,
    pipeline: &str,
    channel: &str,
    error: &str,
    store: &StateStore,
) {
    let alert = AlertRow {
        pipeline: pipeline.to_owned(),
        node: None,
        kind: AlertKind::ChannelFailed,
        class: None,
        severity: AlertSeverity::Warning,
        message: format!(
            "alert channel `{channel}` failed every attempt ({ATTEMPTS}): {error}; alerts stay in `sluice alerts`"
        ),
        at: now_ms(),
    };
    let only_log = AlertsSpec {
        channels: sluice_config::values::SpannedMap(vec![(
            sluice_config::Spanned::new("log".to_owned(), sluice_config::diag::Pos::START),
            ChannelSpec::Log(LogChannel {
                level: LogLevel::Error,
            }),
        )]),
        routes: Vec::new(),
        repeat_every: spec.repeat_every.clone(),
        breaker_open_for: spec.breaker_open_for.clone(),
    };
    Box::pin(raise_condition(
        &only_log,
        &alert,
        channel,
        "sluice alerts",
        store,
    ))
    .await;
}

/// Checks the pipeline's `freshness:` bound against its last successful run: past it, a
/// `stale` alert (a condition: once, then reminders); within it, clears a `stale` alert
/// raised before, with a recovery. A pipeline that never ran is not late yet; one that
/// never succeeded is late once its first run is older than the bound. Returns the alert
/// raised, if any (for the caller to print).
pub async fn check_freshness(
    spec: &AlertsSpec,
    pipeline: &str,
    bound: std::time::Duration,
    next: &str,
    store: &StateStore,
) -> Option<String> {
    let (last, first) = match store.last_success(pipeline).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "could not read the last successful run");
            return None;
        }
    };
    let now = now_ms();
    let bound_ms = i64::try_from(bound.as_millis()).unwrap_or(i64::MAX);
    let shown_bound = sluice_config::values::Duration(bound);
    let late = match (last, first) {
        (Some(last), _) if now - last > bound_ms => Some(format!(
            "no successful run for {} (the last one finished at {}); the freshness bound is {shown_bound}",
            message::span(now - last),
            message::time(last)
        )),
        (None, Some(first)) if now - first > bound_ms => Some(format!(
            "no successful run since the first one started, {} ago at {}; the freshness bound is {shown_bound}",
            message::span(now - first),
            message::time(first)
        )),
        _ => None,
    };
    match late {
        Some(text) => {
            let alert = AlertRow {
                pipeline: pipeline.to_owned(),
                node: None,
                kind: AlertKind::Stale,
                class: None,
                severity: AlertSeverity::Warning,
                message: text.clone(),
                at: now,
            };
            raise_condition(spec, &alert, "", next, store).await;
            Some(text)
        }
        None => {
            clear(spec, store, pipeline, None, AlertKind::Stale, |_, held| {
                Some((
                    AlertRow {
                        pipeline: pipeline.to_owned(),
                        node: None,
                        kind: AlertKind::Recovered,
                        class: None,
                        severity: AlertSeverity::Info,
                        message: format!(
                            "the pipeline is within its freshness bound ({shown_bound}) again, after being reported late for {}",
                            message::span(held)
                        ),
                        at: now_ms(),
                    },
                    next.to_owned(),
                ))
            })
            .await;
            None
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
            ChannelSpec::Wecom(c) => robots::wecom(c, message, alert.severity).await,
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
        // Some errors (lettre's) repeat their source in their own message already.
        let said = s.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
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

    #[tokio::test]
    async fn the_queue_delivers_in_order_and_finish_waits_for_all() {
        let queue = AlertQueue::default();
        let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        // The first takes longest: order holds anyway.
        for (i, ms) in [(1, 30u64), (2, 10), (3, 0)] {
            let done = done.clone();
            queue.push(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                done.lock().unwrap().push(i);
            });
        }
        queue.finish().await;
        assert_eq!(*done.lock().unwrap(), [1, 2, 3]);
        queue.finish().await;
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
