//! The chat robots: Slack incoming webhooks, DingTalk and WeCom group robots, Feishu/Lark
//! bots. Each gets the alert in its own message format, signed the way the service
//! documents where it has a secret. A robot's URL holds the token that lets anyone post,
//! so it is a secret: no error, log line or record repeats it.

use super::message::{Message, colour};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sluice_config::spec::{DingtalkChannel, FeishuChannel, SlackChannel, WecomChannel};
use sluice_core::Secret;
use sluice_state::AlertSeverity;
use std::time::Duration;

/// Posts to a Slack incoming webhook: a `text` fallback and blocks (a header, the facts,
/// what happened and what Sluice did, the next command). Slack answers `200 ok`.
pub(super) async fn slack(c: &SlackChannel, m: &Message) -> Result<(), String> {
    let body = slack_body(m);
    post(
        "Slack webhook",
        &c.url.value,
        None,
        &body,
        c.timeout.value.get(),
        &[],
    )
    .await?;
    Ok(())
}

/// The JSON a Slack incoming webhook gets.
pub fn slack_body(m: &Message) -> Value {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let fields: Vec<Value> = m
        .facts
        .iter()
        .map(|(label, value)| json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", esc(value))}))
        .collect();
    json!({
        "text": m.title,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": m.title}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!(
                "*What happened*\n{}\n*What Sluice did*\n{}", esc(&m.what), esc(&m.did)
            )}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("Next: `{}`", esc(&m.next))}
            ]},
        ],
    })
}

/// Posts markdown to a DingTalk robot; with a secret, `timestamp` and `sign` go in the
/// query. DingTalk answers 200 with `{"errcode": 0}`; any other code is a failure.
pub(super) async fn dingtalk(c: &DingtalkChannel, m: &Message) -> Result<(), String> {
    let body = dingtalk_body(m);
    let extra = c.secret.as_ref().map(|secret| {
        let timestamp = sluice_state::now_ms();
        let sign = dingtalk_sign(secret.value.expose(), timestamp);
        let sign: String = url::form_urlencoded::byte_serialize(sign.as_bytes()).collect();
        format!("timestamp={timestamp}&sign={sign}")
    });
    let hide: Vec<&Secret> = c.secret.iter().map(|s| &s.value).collect();
    let answer = post(
        "DingTalk robot",
        &c.url.value,
        extra.as_deref(),
        &body,
        c.timeout.value.get(),
        &hide,
    )
    .await?;
    answer_code("DingTalk robot", &answer, &["errcode"], "errmsg")
}

/// The JSON a DingTalk robot gets: a markdown message.
pub fn dingtalk_body(m: &Message) -> Value {
    json!({
        "msgtype": "markdown",
        "markdown": {
            "title": m.title,
            "text": format!("#### {}\n\n{}", m.title, m.markdown("\n\n")),
        },
    })
}

/// DingTalk's `sign`: the base64 HMAC-SHA256 of `timestamp + "\n" + secret`, keyed with
/// the secret (before URL encoding).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts a message card to a Feishu/Lark bot; with a secret, `timestamp` and `sign` go in
/// the body. Feishu answers with `{"code": 0}` (older bots `{"StatusCode": 0}`).
pub(super) async fn feishu(
    c: &FeishuChannel,
    m: &Message,
    severity: AlertSeverity,
) -> Result<(), String> {
    let signed = c.secret.as_ref().map(|secret| {
        let timestamp = sluice_state::now_ms() / 1000;
        (timestamp, feishu_sign(secret.value.expose(), timestamp))
    });
    let body = feishu_body(m, severity, signed);
    let hide: Vec<&Secret> = c.secret.iter().map(|s| &s.value).collect();
    let answer = post(
        "Feishu bot",
        &c.url.value,
        None,
        &body,
        c.timeout.value.get(),
        &hide,
    )
    .await?;
    answer_code("Feishu bot", &answer, &["code", "StatusCode"], "msg")
}

/// The JSON a Feishu/Lark bot gets: an interactive card coloured by severity, with the
/// signature fields when the bot has a secret.
pub fn feishu_body(m: &Message, severity: AlertSeverity, signed: Option<(i64, String)>) -> Value {
    // Card templates are named by colour.
    let template = colour(severity);
    let mut body = json!({
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": true},
            "header": {
                "title": {"tag": "plain_text", "content": m.title},
                "template": template,
            },
            "elements": [
                {"tag": "div", "text": {"tag": "lark_md", "content": m.markdown("\n")}},
            ],
        },
    });
    if let Some((timestamp, sign)) = signed {
        body["timestamp"] = Value::String(timestamp.to_string());
        body["sign"] = Value::String(sign);
    }
    body
}

/// Feishu's `sign`: the base64 HMAC-SHA256 keyed with `timestamp + "\n" + secret` over an
/// empty message (timestamp in seconds).
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    let key = format!("{timestamp_s}\n{secret}");
    let mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts markdown to a WeCom group robot. WeCom answers `{"errcode": 0}`.
pub(super) async fn wecom(
    c: &WecomChannel,
    m: &Message,
    severity: AlertSeverity,
) -> Result<(), String> {
    let body = wecom_body(m, severity);
    let answer = post(
        "WeCom robot",
        &c.url.value,
        None,
        &body,
        c.timeout.value.get(),
        &[],
    )
    .await?;
    answer_code("WeCom robot", &answer, &["errcode"], "errmsg")
}

/// The JSON a WeCom robot gets: a markdown message, its title in the colour WeCom's
/// markdown has for the severity (`warning` is its orange-red, `comment` its grey,
/// `info` its green).
pub fn wecom_body(m: &Message, severity: AlertSeverity) -> Value {
    let colour = match severity {
        AlertSeverity::Critical => "warning",
        AlertSeverity::Warning => "comment",
        AlertSeverity::Info => "info",
    };
    json!({
        "msgtype": "markdown",
        "markdown": {
            "content": format!(
                "**<font color=\"{colour}\">{}</font>**\n{}",
                m.title,
                m.markdown("\n")
            ),
        },
    })
}

/// One POST of `body` as JSON to the robot at `url` (plus `query`, appended), without
/// following redirects. Returns the answer's body on a 2xx. Errors name the service and
/// the status, never the URL or a secret.
async fn post(
    service: &str,
    url: &Secret,
    query: Option<&str>,
    body: &Value,
    timeout: Duration,
    hide: &[&Secret],
) -> Result<String, String> {
    let hidden = |text: String| {
        let mut text = url.redact(&text);
        for secret in hide {
            text = secret.redact(&text);
        }
        text
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let mut target = url.expose().to_owned();
    if let Some(query) = query {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(query);
    }
    let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
    let sent = client
        .post(target.as_str())
        .header("content-type", "application/json; charset=utf-8")
        .body(bytes)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) if e.is_timeout() => {
            return Err(format!("the {service} did not answer within {timeout:?}"));
        }
        Err(e) => {
            return Err(hidden(format!(
                "POST to the {service}: {}",
                super::error_chain(&e.without_url())
            )));
        }
    };
    let status = answer.status();
    let (bytes, too_long) = match sluice_connectors::http::read_capped(answer, ANSWER_CAP).await {
        Ok(body) => (body.bytes, body.over_limit),
        Err(_) => (Vec::new(), false),
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let snippet = hidden(text.chars().take(200).collect());
    if status.is_success() && too_long {
        Err(format!(
            "the {service} answered HTTP {status} with more than {} KiB (reading stopped there): a robot answers with a short JSON, so this URL is not the robot's webhook or something in front of it answers instead; check the URL",
            ANSWER_CAP >> 10
        ))
    } else if status.is_success() {
        Ok(text)
    } else if status.is_redirection() {
        Err(format!(
            "the {service} answered HTTP {status} (a redirect, not followed: use the robot's final URL)"
        ))
    } else {
        Err(format!("the {service} answered HTTP {status}: {snippet}"))
    }
}

/// The most of a robot's answer that is read, counted decoded (reqwest undoes `gzip`): a
/// robot answers with a line of JSON, and a URL answering a gzip bomb must not cost
/// `sluice serve` gigabytes. The bound of the other answers Sluice reads only for a message.
const ANSWER_CAP: usize = 64 * 1024;

/// Reads a robot's JSON answer: the first of `codes` present must be 0; otherwise its
/// `message` field says why.
fn answer_code(service: &str, answer: &str, codes: &[&str], message: &str) -> Result<(), String> {
    let Ok(value) = serde_json::from_str::<Value>(answer) else {
        return Ok(());
    };
    let Some((name, code)) = codes
        .iter()
        .find_map(|c| value.get(*c).map(|v| (*c, v.as_i64())))
    else {
        return Ok(());
    };
    match code {
        Some(0) => Ok(()),
        _ => {
            let why = value
                .get(message)
                .or_else(|| value.get("StatusMessage"))
                .and_then(Value::as_str)
                .unwrap_or("no message");
            Err(format!(
                "the {service} refused the message: {name} {}: {}",
                value.get(name).map(ToString::to_string).unwrap_or_default(),
                why.chars().take(200).collect::<String>()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value DingTalk's Python example computes for this secret and timestamp.
    #[test]
    fn dingtalk_sign_is_the_base64_hmac_of_timestamp_and_secret() {
        let sign = dingtalk_sign("SEC000", 1_577_836_800_000);
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b"SEC000",b"1577836800000\nSEC000",hashlib.sha256).digest()).decode())'
        assert_eq!(sign, "sLtiQUMv1vBmuenplUukSZ+QlhX/gyh/F0ARoP5z+TM=");
    }

    #[test]
    fn feishu_sign_keys_the_hmac_with_timestamp_and_secret() {
        let sign = feishu_sign("demo", 1_599_360_473);
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b"1599360473\ndemo",b"",hashlib.sha256).digest()).decode())'
        assert_eq!(sign, "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8=");
    }

    /// A robot URL whose answer never ends (as a gzip bomb decodes) is read up to
    /// [`ANSWER_CAP`] and no further: the channel fails, saying why, and the server sees the
    /// connection go.
    #[tokio::test]
    async fn an_endless_answer_is_read_up_to_the_cap_and_fails_the_channel() {
        let (addr, server) = sluice_testkit::receiver::endless_answer().await;
        let url = Secret::new(format!("http://{addr}/robot/send?access_token=t0ken"));
        let e = post(
            "DingTalk robot",
            &url,
            None,
            &json!({"msgtype": "text"}),
            Duration::from_secs(30),
            &[],
        )
        .await
        .unwrap_err();
        assert!(
            e.contains("DingTalk robot") && e.contains("more than 64 KiB"),
            "{e}"
        );
        assert!(!e.contains("t0ken"), "{e}");
        let sent = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the connection is closed once the cap is reached")
            .unwrap();
        assert!(sent < 64 << 20, "{sent} bytes were sent");
    }

    /// A short answer is read whole.
    #[tokio::test]
    async fn a_short_answer_is_read_whole() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 8192];
            let _ = sock.read(&mut request).await;
            let body = r#"{"errcode":0,"errmsg":"ok"}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).await.unwrap();
            sock.write_all(body.as_bytes()).await.unwrap();
        });
        let url = Secret::new(format!("http://{addr}/robot/send"));
        let answer = post(
            "DingTalk robot",
            &url,
            None,
            &json!({}),
            Duration::from_secs(30),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(answer, r#"{"errcode":0,"errmsg":"ok"}"#);
    }

    #[test]
    fn a_robot_code_other_than_zero_is_a_failure() {
        assert!(
            answer_code(
                "x",
                r#"{"errcode":0,"errmsg":"ok"}"#,
                &["errcode"],
                "errmsg"
            )
            .is_ok()
        );
        let e = answer_code(
            "DingTalk robot",
            r#"{"errcode":310000,"errmsg":"sign not match"}"#,
            &["errcode"],
            "errmsg",
        )
        .unwrap_err();
        assert!(e.contains("310000") && e.contains("sign not match"), "{e}");
        assert!(answer_code("x", r#"{"StatusCode":0}"#, &["code", "StatusCode"], "msg").is_ok());
        assert!(answer_code("x", "ok", &["code"], "msg").is_ok());
    }
}
