//! End to end through the `sluice` binary: a run whose sink cannot open its database fails,
//! and its alert goes to the pipeline's `alerts.channels`: a signed webhook POST to a
//! local receiver and a program fed the alert on stdin. `sluice alerts` shows where it
//! went; a route can keep a channel out; a webhook that cannot be reached is recorded as
//! failed without changing the run's exit code; a run that quarantined records raises a
//! warning, and a clean run raises nothing.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sluice_testkit::receiver::{Answer, Request, receive};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// A request the receiver got: its header block and its body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A receiver that answers 200 to everything and keeps what it got.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let kept = seen.clone();
    let addr = receive(move |r: &Request| {
        kept.lock().unwrap().push((r.head.clone(), r.body.clone()));
        Answer::status(200)
    })
    .await;
    (format!("http://{addr}/hooks/sluice"), seen)
}

fn header(head: &str, name: &str) -> Option<String> {
    Request {
        head: head.to_owned(),
        body: Vec::new(),
    }
    .header(name)
}

const SECRET: &str = "hook-s3cret-key";

/// A pipeline whose sink cannot open its database (its folder is a file), with a webhook
/// and a command channel; `routes` is put under `alerts:` as given.
fn pipeline(dir: &Path, routes: &str) {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/orders.ndjson"), "{\"id\":1}\n{\"id\":2}\n").unwrap();
    std::fs::write(dir.join("blocker"), "a file, not a folder").unwrap();
    let yaml = format!(
        r#"
pipeline: alerts_e2e
alerts:
  channels:
    hook:
      webhook:
        url: ${{HOOK}}
        secret: ${{HOOK_SECRET}}
        headers: {{ X-Team: data }}
        timeout: 2s
    script:
      command: {{ program: /bin/sh, args: ["-c", "cat > alert.json"], timeout: 5s }}
{routes}
nodes:
  orders:
    type: file
    path: in/*.ndjson
    format: ndjson
  db:
    type: sqlite
    inputs: [orders]
    url: sqlite://blocker/out.db
    table: orders
"#
    );
    std::fs::write(dir.join("pipeline.yaml"), yaml).unwrap();
}

/// Runs `sluice ARGS` in `dir` with the webhook at `hook` signed with [`SECRET`].
async fn sluice(dir: &Path, hook: &str, args: &[&str]) -> (Option<i32>, String) {
    let envs = [
        ("HOOK", hook.to_owned()),
        ("HOOK_SECRET", SECRET.to_owned()),
    ];
    sluice_with(dir, &envs, args).await
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_posted_signed_and_handed_to_a_program() {
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), "");
    let (url, seen) = receiver().await;

    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_ne!(code, Some(0), "the run should fail: {out}");
    assert!(!out.contains(SECRET), "the secret printed: {out}");

    let (head, body) = {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one POST expected: {seen:?}");
        seen[0].clone()
    };
    assert!(head.starts_with("POST /hooks/sluice "), "{head}");
    assert_eq!(header(&head, "x-team").as_deref(), Some("data"), "{head}");
    assert_eq!(
        header(&head, "x-sluice-signature"),
        Some(sign(&body)),
        "{head}"
    );
    assert!(
        !String::from_utf8_lossy(&body).contains(SECRET),
        "the secret was sent in the body"
    );
    let alert: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(alert["pipeline"], "alerts_e2e", "{alert}");
    assert_eq!(alert["node"], "db", "{alert}");
    assert_eq!(alert["kind"], "run_failed", "{alert}");
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert!(alert["class"].is_string(), "{alert}");
    assert!(alert["message"].as_str().unwrap().contains("db"), "{alert}");
    assert!(alert["at"].as_i64().unwrap() > 0, "{alert}");
    assert!(
        alert["next"]
            .as_str()
            .unwrap()
            .starts_with("sluice runs show "),
        "{alert}"
    );

    // The program got the same alert on its standard input.
    let handed: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("alert.json")).unwrap())
            .unwrap();
    assert_eq!(handed, alert);

    let (code, out) = sluice(dir.path(), &url, &["alerts"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("run_failed"), "{out}");
    assert!(out.contains("-> hook: sent"), "{out}");
    assert!(out.contains("-> script: sent"), "{out}");
    assert!(!out.contains(SECRET), "the secret printed: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_keeps_other_classes_from_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    // The sink's failure is not an auth error, so only the program hears of it.
    pipeline(
        dir.path(),
        "  routes:\n    - { channel: hook, classes: [auth] }\n    - { channel: script }",
    );
    let (url, seen) = receiver().await;
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_ne!(code, Some(0), "the run should fail: {out}");
    assert!(seen.lock().unwrap().is_empty(), "the route let it through");
    assert!(dir.path().join("alert.json").exists(), "{out}");
    let (_, out) = sluice(dir.path(), &url, &["alerts"]).await;
    assert!(out.contains("-> script: sent"), "{out}");
    assert!(!out.contains("-> hook"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_webhook_is_recorded_as_failed_and_the_exit_code_holds() {
    // The same run with a webhook that answers, for its exit code.
    let answered = tempfile::tempdir().unwrap();
    pipeline(answered.path(), "");
    let (reachable, _seen) = receiver().await;
    let (expected, out) = sluice(
        answered.path(),
        &reachable,
        &["run", "pipeline.yaml", "--once"],
    )
    .await;
    assert_ne!(expected, Some(0), "{out}");

    // Nothing listens on port 1.
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), "");
    let closed = "http://127.0.0.1:1/hooks/sluice";
    let (code, out) = sluice(dir.path(), closed, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, expected, "{out}");
    let (_, out) = sluice(dir.path(), closed, &["alerts"]).await;
    let newest = out
        .split("run_failed")
        .nth(1)
        .expect("the newest alert is listed");
    assert!(newest.contains("-> hook: failed after 3 attempts"), "{out}");
    assert!(newest.contains("-> script: sent"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_quarantined_records_raises_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(
        dir.path().join("in/orders.ndjson"),
        format!(
            "{{\"id\":1}}\n{{\"id\":2,\"note\":\"{}\"}}\n{{\"id\":3}}\n",
            "x".repeat(400)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        r#"
pipeline: alerts_partial
alerts:
  channels:
    hook:
      webhook: { url: "${HOOK}", secret: "${HOOK_SECRET}" }
nodes:
  orders:
    type: file
    path: in/*.ndjson
    format: ndjson
    max_record_bytes: 200B
    bad_records: quarantine
  db:
    type: sqlite
    inputs: [orders]
    url: sqlite://out.db
    table: orders
"#,
    )
    .unwrap();
    let (url, seen) = receiver().await;
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(3), "partially succeeded: {out}");
    let body = {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one POST expected: {seen:?}");
        seen[0].1.clone()
    };
    let alert: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(alert["kind"], "run_partially_succeeded", "{alert}");
    assert_eq!(alert["severity"], "warning", "{alert}");
    assert!(
        alert["next"]
            .as_str()
            .unwrap()
            .contains("sluice failed list --pipeline alerts_partial"),
        "{alert}"
    );
    // A run that delivers everything raises nothing.
    std::fs::write(dir.path().join("in/more.ndjson"), "{\"id\":4}\n").unwrap();
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(seen.lock().unwrap().len(), 1, "a clean run raised an alert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_found_down_by_health_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.ndjson"), "{\"id\":1}\n").unwrap();
    // Port 1 on the loopback interface: nothing listens there.
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        r#"
pipeline: alerts_link
alerts:
  channels:
    hook:
      webhook: { url: "${HOOK}" }
nodes:
  orders:
    type: file
    path: in/*.ndjson
    format: ndjson
  db:
    type: postgres
    inputs: [orders]
    url: postgres://sluice@127.0.0.1:1/nowhere
    table: orders
"#,
    )
    .unwrap();
    let (url, seen) = receiver().await;
    let (code, out) = sluice(dir.path(), &url, &["health", "pipeline.yaml"]).await;
    assert_eq!(code, Some(1), "a link is down: {out}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one POST for the one link down: {seen:?}");
    let alert: Value = serde_json::from_slice(&seen[0].1).unwrap();
    assert_eq!(alert["kind"], "link_down", "{alert}");
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert!(
        alert["message"].as_str().unwrap().contains("127.0.0.1:1"),
        "{alert}"
    );
}

// ---------------------------------------------------------------------------------------
// The chat robots and email

/// Runs `sluice ARGS` in `dir` with `envs` (blocking, off the runtime's threads).
async fn sluice_with(dir: &Path, envs: &[(&str, String)], args: &[&str]) -> (Option<i32>, String) {
    let dir = dir.to_path_buf();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(envs)
            .output()
            .expect("the sluice binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    })
    .await
    .unwrap()
}

fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    use base64::Engine as _;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The query parameters of a request's path, decoded.
fn query(path: &str) -> Vec<(String, String)> {
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Every file under `dir`, as one lossy string (the state store, its WAL, the buffer).
fn every_byte_under(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&every_byte_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

const SLACK_TOKEN: &str = "T0SLACK/B0SLACK/slacktoken123";
const DINGTALK_TOKEN: &str = "dingtoken456";
const DINGTALK_SECRET: &str = "SECding789secret";
const FEISHU_HOOK: &str = "feishuhook-0ab1";
const FEISHU_SECRET: &str = "feishusecret-cd2";
const WECOM_KEY: &str = "wecomkey-ef3";
const SMTP_PASSWORD: &str = "smtp-pa55word";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_chat_robot_and_email_get_the_alert_in_their_own_format() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/orders.ndjson"), "{\"id\":1}\n").unwrap();
    std::fs::write(dir.path().join("blocker"), "a file, not a folder").unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        r#"
pipeline: alerts_robots
alerts:
  channels:
    slack: { slack: { url: "${SLACK_URL}" } }
    dingtalk: { dingtalk: { url: "${DINGTALK_URL}", secret: "${DINGTALK_SECRET}" } }
    feishu: { feishu: { url: "${FEISHU_URL}", secret: "${FEISHU_SECRET}" } }
    wecom: { wecom: { url: "${WECOM_URL}" } }
    mail:
      email:
        smtp: "${SMTP_AT}"
        starttls: false
        from: "Sluice <sluice@example.com>"
        to: [oncall@example.com, data-team@example.com]
        username: alerts
        password: "${SMTP_PASSWORD}"
nodes:
  orders:
    type: file
    path: in/*.ndjson
    format: ndjson
  db:
    type: sqlite
    inputs: [orders]
    url: sqlite://blocker/out.db
    table: orders
"#,
    )
    .unwrap();
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let kept = seen.clone();
    let addr = receive(move |r: &Request| {
        kept.lock().unwrap().push(r.clone());
        let body = if r.path().starts_with("/robot/send") || r.path().starts_with("/cgi-bin") {
            r#"{"errcode":0,"errmsg":"ok"}"#
        } else if r.path().starts_with("/open-apis") {
            r#"{"code":0,"msg":"success","data":{}}"#
        } else {
            "ok"
        };
        Answer {
            status: 200,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    })
    .await;
    let smtp = sluice_testkit::smtp::SmtpServer::start().await;
    let envs = [
        ("SLACK_URL", format!("http://{addr}/services/{SLACK_TOKEN}")),
        (
            "DINGTALK_URL",
            format!("http://{addr}/robot/send?access_token={DINGTALK_TOKEN}"),
        ),
        ("DINGTALK_SECRET", DINGTALK_SECRET.to_owned()),
        (
            "FEISHU_URL",
            format!("http://{addr}/open-apis/bot/v2/hook/{FEISHU_HOOK}"),
        ),
        ("FEISHU_SECRET", FEISHU_SECRET.to_owned()),
        (
            "WECOM_URL",
            format!("http://{addr}/cgi-bin/webhook/send?key={WECOM_KEY}"),
        ),
        ("SMTP_AT", smtp.addr.to_string()),
        ("SMTP_PASSWORD", SMTP_PASSWORD.to_owned()),
    ];
    let secrets = [
        SLACK_TOKEN,
        "slacktoken123",
        DINGTALK_TOKEN,
        DINGTALK_SECRET,
        FEISHU_HOOK,
        FEISHU_SECRET,
        WECOM_KEY,
        SMTP_PASSWORD,
    ];
    let mut printed = String::new();
    let (code, out) = sluice_with(dir.path(), &envs, &["validate", "pipeline.yaml"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("`starttls: false` sends the SMTP password in clear"),
        "{out}"
    );
    printed.push_str(&out);
    let (code, out) = sluice_with(dir.path(), &envs, &["plan", "pipeline.yaml"]).await;
    assert_eq!(code, Some(0), "{out}");
    printed.push_str(&out);
    let (_, out) = sluice_with(dir.path(), &envs, &["plan", "pipeline.yaml", "--json"]).await;
    printed.push_str(&out);

    let (code, out) = sluice_with(dir.path(), &envs, &["run", "pipeline.yaml", "--once"]).await;
    assert_ne!(code, Some(0), "the run should fail: {out}");
    printed.push_str(&out);

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 4, "one request per robot: {requests:?}");
    let find = |prefix: &str| {
        requests
            .iter()
            .find(|r| r.path().starts_with(prefix))
            .unwrap_or_else(|| panic!("no request to {prefix}: {requests:?}"))
            .clone()
    };
    for r in &requests {
        assert!(r.head.starts_with("POST "), "{}", r.head);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json; charset=utf-8"),
            "{}",
            r.head
        );
    }
    let json = |r: &Request| -> Value { serde_json::from_slice(&r.body).unwrap() };
    let title = "[critical] alerts_robots: run failed";

    // Slack: a fallback text and blocks.
    let slack = find("/services/");
    assert_eq!(slack.path(), format!("/services/{SLACK_TOKEN}"));
    assert!(slack.head.starts_with("POST "), "{}", slack.head);
    let body = json(&slack);
    assert_eq!(body["text"], title, "{body}");
    assert_eq!(body["blocks"][0]["type"], "header", "{body}");
    assert_eq!(body["blocks"][0]["text"]["text"], title, "{body}");
    let fields: Vec<&str> = body["blocks"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"*Pipeline*\nalerts_robots"), "{body}");
    assert!(fields.contains(&"*Node*\ndb"), "{body}");
    assert!(fields.iter().any(|f| f.starts_with("*Class*\n")), "{body}");
    let said = body["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(said.contains("*What happened*\nnode `db`"), "{body}");
    assert!(
        said.contains("*What Sluice did*\nstopped the run"),
        "{body}"
    );
    let next = body["blocks"][3]["elements"][0]["text"].as_str().unwrap();
    assert!(next.starts_with("Next: `sluice runs show "), "{body}");

    // DingTalk: markdown, signed in the query as DingTalk documents.
    let ding = find("/robot/send");
    let q = query(ding.path());
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("access_token").as_deref(), Some(DINGTALK_TOKEN));
    let timestamp = get("timestamp").expect("a timestamp");
    assert!(
        timestamp.parse::<i64>().unwrap() > 1_600_000_000_000,
        "in ms"
    );
    assert_eq!(
        get("sign").expect("a sign"),
        hmac_base64(
            DINGTALK_SECRET.as_bytes(),
            format!("{timestamp}\n{DINGTALK_SECRET}").as_bytes()
        )
    );
    let body = json(&ding);
    assert_eq!(body["msgtype"], "markdown", "{body}");
    assert_eq!(body["markdown"]["title"], title, "{body}");
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("#### {title}\n\n")), "{text}");
    assert!(
        text.contains("**Pipeline**: alerts_robots\n\n**Node**: db"),
        "{text}"
    );
    assert!(text.contains("**Next**: `sluice runs show "), "{text}");

    // Feishu: an interactive card, signed in the body.
    let feishu = find("/open-apis/bot/v2/hook/");
    assert_eq!(
        feishu.path(),
        format!("/open-apis/bot/v2/hook/{FEISHU_HOOK}")
    );
    let body = json(&feishu);
    let timestamp = body["timestamp"].as_str().expect("timestamp as a string");
    assert!(
        timestamp.parse::<i64>().unwrap() < 100_000_000_000,
        "in seconds"
    );
    assert_eq!(
        body["sign"].as_str().unwrap(),
        hmac_base64(format!("{timestamp}\n{FEISHU_SECRET}").as_bytes(), b"")
    );
    assert_eq!(body["msg_type"], "interactive", "{body}");
    assert_eq!(body["card"]["header"]["title"]["content"], title, "{body}");
    assert_eq!(body["card"]["header"]["template"], "red", "{body}");
    let content = body["card"]["elements"][0]["text"]["content"]
        .as_str()
        .unwrap();
    assert_eq!(
        body["card"]["elements"][0]["text"]["tag"], "lark_md",
        "{body}"
    );
    assert!(
        content.contains("**Pipeline**: alerts_robots\n**Node**: db"),
        "{content}"
    );

    // WeCom: markdown.
    let wecom = find("/cgi-bin/webhook/send");
    assert_eq!(
        query(wecom.path()),
        [("key".to_owned(), WECOM_KEY.to_owned())]
    );
    let body = json(&wecom);
    assert_eq!(body["msgtype"], "markdown", "{body}");
    let content = body["markdown"]["content"].as_str().unwrap();
    assert!(
        content.starts_with(&format!("**<font color=\"warning\">{title}</font>**\n")),
        "{content}"
    );
    assert!(
        content.contains("**What Sluice did**: stopped the run"),
        "{content}"
    );

    // Email: one mail to both recipients, logged in.
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.from, "sluice@example.com");
    assert_eq!(mail.to, ["oncall@example.com", "data-team@example.com"]);
    assert_eq!(
        mail.auth.as_deref(),
        Some(&*format!("alerts\0{SMTP_PASSWORD}"))
    );
    assert!(
        mail.data.contains(&format!("Subject: {title}\r\n")),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("Pipeline: alerts_robots\r\n"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("Next: sluice runs show "),
        "{}",
        mail.data
    );

    for args in [
        &["runs", "-f", "pipeline.yaml"][..],
        &["runs", "-f", "pipeline.yaml", "--json"],
        &["health", "pipeline.yaml"],
    ] {
        printed.push_str(&sluice_with(dir.path(), &envs, args).await.1);
    }
    let (code, out) = sluice_with(dir.path(), &envs, &["alerts"]).await;
    assert_eq!(code, Some(0), "{out}");
    for channel in ["slack", "dingtalk", "feishu", "wecom", "mail"] {
        assert!(out.contains(&format!("-> {channel}: sent")), "{out}");
    }
    printed.push_str(&out);

    // No token, signing secret or password printed, or kept in the state store.
    let kept = every_byte_under(&dir.path().join(".sluice"));
    assert!(!kept.is_empty());
    for secret in secrets {
        assert!(!printed.contains(secret), "`{secret}` printed: {printed}");
        assert!(!kept.contains(secret), "`{secret}` kept in the state store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_that_refuses_the_message_is_a_failed_delivery_without_its_token() {
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), "");
    // The same failing pipeline, its alert to a DingTalk robot that refuses the sign.
    let yaml = std::fs::read_to_string(dir.path().join("pipeline.yaml"))
        .unwrap()
        .replace(
            "    hook:\n      webhook:\n        url: ${HOOK}\n        secret: ${HOOK_SECRET}\n        headers: { X-Team: data }\n        timeout: 2s\n",
            "    hook:\n      dingtalk: { url: \"${HOOK}\", secret: \"${HOOK_SECRET}\", timeout: 2s }\n",
        );
    assert!(yaml.contains("dingtalk"), "{yaml}");
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
    let addr = receive(|_: &Request| Answer {
        status: 200,
        headers: Vec::new(),
        body: r#"{"errcode":310000,"errmsg":"sign not match"}"#.to_owned(),
    })
    .await;
    let url = format!("http://{addr}/robot/send?access_token={DINGTALK_TOKEN}");
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(!out.contains(DINGTALK_TOKEN), "the token printed: {out}");
    let (_, out) = sluice(dir.path(), &url, &["alerts"]).await;
    assert!(
        out.contains("-> hook: failed after 3 attempts: the DingTalk robot refused the message: errcode 310000: sign not match"),
        "{out}"
    );
    assert!(!out.contains(DINGTALK_TOKEN), "the token printed: {out}");
    assert!(!out.contains(SECRET), "the secret printed: {out}");
}

// ---------------------------------------------------------------------------------------
// One alert per condition, reminders, recoveries

/// The bodies the receiver got, as JSON.
fn bodies(seen: &Seen) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, body)| serde_json::from_slice(body).unwrap())
        .collect()
}

/// A free port of 127.0.0.1 with nothing on it.
fn closed_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A pipeline reading the API at `api` (one attempt per request), with a webhook and
/// `alerts_extra` under `alerts:`, `top` at the top level.
fn api_pipeline(dir: &Path, name: &str, api: std::net::SocketAddr, alerts_extra: &str, top: &str) {
    let yaml = format!(
        r#"
pipeline: {name}
{top}
alerts:
  channels:
    hook: {{ webhook: {{ url: "${{HOOK}}" }} }}
{alerts_extra}
nodes:
  orders:
    type: http
    url: http://{api}/orders
    retry: {{ max_attempts: 1 }}
  db:
    type: sqlite
    inputs: [orders]
    url: sqlite://out.db
    table: orders
"#
    );
    std::fs::write(dir.join("pipeline.yaml"), yaml).unwrap();
}

/// Answers `[{"id": 1}]` at `api` from now on.
async fn api_up(api: std::net::SocketAddr) {
    sluice_testkit::receiver::receive_at(api, |_: &Request| Answer {
        status: 200,
        headers: Vec::new(),
        body: r#"[{"id":1}]"#.to_owned(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_failing_run_after_run_alerts_once_then_recovers_with_its_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let api = closed_port();
    api_pipeline(dir.path(), "alerts_again", api, "", "");
    let (url, seen) = receiver().await;
    for _ in 0..3 {
        let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
        assert_ne!(code, Some(0), "the run should fail: {out}");
    }
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 1, "one alert for three failed runs: {sent:?}");
    assert_eq!(sent[0]["kind"], "run_failed");
    assert_eq!(sent[0]["node"], "orders");
    let (_, out) = sluice(dir.path(), &url, &["alerts"]).await;
    assert_eq!(out.matches("run_failed").count(), 1, "{out}");
    assert!(
        out.contains("-> suppressed: 2 repeat(s) while the condition held"),
        "{out}"
    );

    // The API is back: the next run delivers, and says the failure cleared.
    api_up(api).await;
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(0), "{out}");
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let recovered = &sent[1];
    assert_eq!(recovered["kind"], "recovered", "{recovered}");
    assert_eq!(recovered["severity"], "info", "{recovered}");
    assert_eq!(recovered["node"], "orders", "{recovered}");
    let message = recovered["message"].as_str().unwrap();
    assert!(
        message.contains("it had been failing at node `orders` for "),
        "{message}"
    );
    // A clean run after that raises nothing.
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(bodies(&seen).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_down_for_several_checks_alerts_once_reminds_past_repeat_every_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let api = closed_port();
    api_pipeline(dir.path(), "alerts_dedup", api, "  repeat_every: 1h", "");
    let (url, seen) = receiver().await;
    for _ in 0..5 {
        let (code, out) = sluice(dir.path(), &url, &["health", "pipeline.yaml"]).await;
        assert_eq!(code, Some(1), "the API is down: {out}");
    }
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 1, "one alert for five checks: {sent:?}");
    assert_eq!(sent[0]["kind"], "link_down");
    let (_, out) = sluice(dir.path(), &url, &["alerts"]).await;
    assert!(out.contains("-> hook: sent"), "{out}");
    assert!(out.contains("-> suppressed: 4 repeat(s)"), "{out}");

    // Past `repeat_every` (made short here), the next check reminds.
    api_pipeline(dir.path(), "alerts_dedup", api, "  repeat_every: 1ms", "");
    let (code, out) = sluice(dir.path(), &url, &["health", "pipeline.yaml"]).await;
    assert_eq!(code, Some(1), "{out}");
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1]["kind"], "link_down");
    let message = sent[1]["message"].as_str().unwrap();
    assert!(message.contains("(reminder: so for "), "{message}");

    // The API answers again: one recovery with the downtime, then nothing.
    api_up(api).await;
    for _ in 0..2 {
        let (code, out) = sluice(dir.path(), &url, &["health", "pipeline.yaml"]).await;
        assert_eq!(code, Some(0), "the API is up: {out}");
    }
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[2]["kind"], "link_recovered", "{}", sent[2]);
    let message = sent[2]["message"].as_str().unwrap();
    assert!(message.contains(" is up again after "), "{message}");
    assert!(message.contains(&api.to_string()), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_keeps_failing_raises_one_log_alert() {
    let dir = tempfile::tempdir().unwrap();
    let api = closed_port();
    api_pipeline(dir.path(), "alerts_channel", api, "", "");
    let closed = "http://127.0.0.1:1/hooks/sluice";
    let (code, out) = sluice(dir.path(), closed, &["run", "pipeline.yaml", "--once"]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("alert channel `hook` failed every attempt"),
        "{out}"
    );
    // A second alert (the recovery of a delivering run) fails on the same channel.
    api_up(api).await;
    let (code, out) = sluice(dir.path(), closed, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(0), "{out}");
    let (_, out) = sluice(dir.path(), closed, &["alerts"]).await;
    assert!(out.contains("recovered"), "{out}");
    assert_eq!(
        out.matches("-> hook: failed after 3 attempts").count(),
        2,
        "{out}"
    );
    assert_eq!(out.matches("channel_failed").count(), 1, "{out}");
    assert!(out.contains("-> suppressed: 1 repeat(s)"), "{out}");
}

// ---------------------------------------------------------------------------------------
// More causes: schema drift under `warn`, a finished replay, a missed freshness bound

/// A file source into SQLite, with a webhook; `sink_extra` goes under the sink, `top` at
/// the top level, `source_extra` under the source.
fn file_pipeline(dir: &Path, name: &str, top: &str, source_extra: &str, sink_extra: &str) {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let yaml = format!(
        r#"
pipeline: {name}
{top}
alerts:
  channels:
    hook: {{ webhook: {{ url: "${{HOOK}}" }} }}
nodes:
  orders:
    type: file
    path: in/*.ndjson
    format: ndjson
{source_extra}
  db:
    type: sqlite
    inputs: [orders]
    url: sqlite://out.db
    table: orders
{sink_extra}
"#
    );
    std::fs::write(dir.join("pipeline.yaml"), yaml).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_let_through_by_warn_raises_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    file_pipeline(
        dir.path(),
        "alerts_drift",
        "",
        "",
        "    schema_policy: warn",
    );
    std::fs::write(dir.path().join("in/a.ndjson"), "{\"id\":1}\n").unwrap();
    let (url, seen) = receiver().await;
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(bodies(&seen).is_empty(), "no drift yet");
    // A new field: the sink adds its column (warn lets it through) and says so.
    std::fs::write(
        dir.path().join("in/b.ndjson"),
        "{\"id\":2,\"note\":\"new\"}\n{\"id\":3,\"note\":\"also\"}\n",
    )
    .unwrap();
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(0), "warn lets it through: {out}");
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 1, "one drift alert: {sent:?}");
    let alert = &sent[0];
    assert_eq!(alert["kind"], "schema_drift", "{alert}");
    assert_eq!(alert["severity"], "warning", "{alert}");
    assert_eq!(alert["class"], "contract_changed", "{alert}");
    assert_eq!(alert["node"], "db", "{alert}");
    let message = alert["message"].as_str().unwrap();
    assert!(message.contains("note"), "{message}");
    assert!(message.contains("`schema_policy: warn`"), "{message}");
    assert!(
        alert["next"]
            .as_str()
            .unwrap()
            .starts_with("sluice runs show "),
        "{alert}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_replay_raises_one_alert_saying_what_still_fails() {
    let dir = tempfile::tempdir().unwrap();
    let source = "    max_record_bytes: 200B\n    bad_records: quarantine";
    file_pipeline(dir.path(), "alerts_replay", "", source, "");
    std::fs::write(
        dir.path().join("in/orders.ndjson"),
        format!(
            "{{\"id\":1}}\n{{\"id\":2,\"note\":\"{}\"}}\n",
            "x".repeat(400)
        ),
    )
    .unwrap();
    let (url, seen) = receiver().await;
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(3), "partially succeeded: {out}");
    assert_eq!(bodies(&seen).len(), 1, "the quarantine's alert");

    // A file source cannot read its records again: the replay ends with the batch still
    // failing, and says so with the command that lists it.
    let (code, out) = sluice(dir.path(), &url, &["replay", "-f", "pipeline.yaml"]).await;
    assert_eq!(code, Some(3), "{out}");
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 2, "one replay alert: {sent:?}");
    let alert = &sent[1];
    assert_eq!(alert["kind"], "replay_finished", "{alert}");
    assert_eq!(alert["severity"], "warning", "{alert}");
    let message = alert["message"].as_str().unwrap();
    assert!(
        message.contains("0 batch(es) / 0 record(s) delivered, 1 still failing"),
        "{message}"
    );
    assert_eq!(
        alert["next"], "sluice failed list --pipeline alerts_replay",
        "{alert}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_delivers_everything_raises_one_info_alert() {
    let dir = tempfile::tempdir().unwrap();
    // The sink cannot open its database: the run fails and keeps the batch for replay.
    pipeline(dir.path(), "");
    let (url, seen) = receiver().await;
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_ne!(code, Some(0), "{out}");
    assert_eq!(bodies(&seen).len(), 1, "the failure's alert");
    // The folder is back: the replay delivers the kept batch.
    std::fs::remove_file(dir.path().join("blocker")).unwrap();
    std::fs::create_dir(dir.path().join("blocker")).unwrap();
    let (code, out) = sluice(dir.path(), &url, &["replay", "-f", "pipeline.yaml"]).await;
    assert_eq!(code, Some(0), "{out}");
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 2, "one replay alert: {sent:?}");
    let alert = &sent[1];
    assert_eq!(alert["kind"], "replay_finished", "{alert}");
    assert_eq!(alert["severity"], "info", "{alert}");
    let message = alert["message"].as_str().unwrap();
    assert!(
        message.contains("1 batch(es) / 2 record(s) delivered, 0 still failing, 0 not replayable"),
        "{message}"
    );
    assert!(
        alert["next"]
            .as_str()
            .unwrap()
            .starts_with("sluice runs show "),
        "{alert}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_past_its_freshness_bound_raises_one_alert_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    file_pipeline(dir.path(), "alerts_fresh", "freshness: 2h", "", "");
    std::fs::write(dir.path().join("in/a.ndjson"), "{\"id\":1}\n").unwrap();
    let (url, seen) = receiver().await;
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = sluice(dir.path(), &url, &["health", "pipeline.yaml"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(bodies(&seen).is_empty(), "fresh: {out}");

    // The last success three hours ago, as the state store will say.
    let state = dir.path().join(".sluice/state.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", state.display()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE runs SET started_at = started_at - 10800000, finished_at = finished_at - 10800000",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    for _ in 0..2 {
        let (code, out) = sluice(dir.path(), &url, &["health", "pipeline.yaml"]).await;
        assert_eq!(code, Some(0), "every link is up: {out}");
        assert!(out.contains("LATE: no successful run for 3h"), "{out}");
    }
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 1, "one stale alert for two checks: {sent:?}");
    let alert = &sent[0];
    assert_eq!(alert["kind"], "stale", "{alert}");
    assert_eq!(alert["severity"], "warning", "{alert}");
    let message = alert["message"].as_str().unwrap();
    assert!(message.contains("the freshness bound is 2h"), "{message}");
    assert_eq!(alert["next"], "sluice runs -f pipeline.yaml", "{alert}");

    // A successful run clears it, with a recovery.
    let (code, out) = sluice(dir.path(), &url, &["run", "pipeline.yaml", "--once"]).await;
    assert_eq!(code, Some(0), "{out}");
    let sent = bodies(&seen);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1]["kind"], "recovered", "{}", sent[1]);
    let (code, out) = sluice(dir.path(), &url, &["health", "pipeline.yaml"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(bodies(&seen).len(), 2, "fresh again: nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_and_other_processes_share_one_alert_per_condition() {
    let dir = tempfile::tempdir().unwrap();
    let api = closed_port();
    api_pipeline(dir.path(), "alerts_watch", api, "", "");
    let (url, seen) = receiver().await;
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["health", "pipeline.yaml", "--watch", "200ms"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOOK", &url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The watch alerts the link (a deadline only so that a broken build fails, not hangs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while bodies(&seen).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch sent nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Other processes see the same condition: a probe does not alert it again.
    for _ in 0..3 {
        let (code, out) = sluice(dir.path(), &url, &["health", "pipeline.yaml"]).await;
        assert_eq!(code, Some(1), "{out}");
    }
    let (_, out) = sluice(dir.path(), &url, &["alerts"]).await;
    watch.kill().await.unwrap();
    let sent = bodies(&seen);
    assert_eq!(
        sent.iter().filter(|a| a["kind"] == "link_down").count(),
        1,
        "{sent:?}"
    );
    assert_eq!(out.matches("critical  alerts_watch").count(), 1, "{out}");
    assert!(out.contains("-> suppressed: "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_with_starttls_never_falls_back_to_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    let api = closed_port();
    api_pipeline(dir.path(), "alerts_starttls", api, "", "");
    // The test server offers no STARTTLS: the mail must not go out in clear.
    let smtp = sluice_testkit::smtp::SmtpServer::start().await;
    let yaml = std::fs::read_to_string(dir.path().join("pipeline.yaml"))
        .unwrap()
        .replace(
            "    hook: { webhook: { url: \"${HOOK}\" } }\n",
            &format!(
                "    mail:\n      email: {{ smtp: \"{}\", from: sluice@example.com, to: [oncall@example.com], username: alerts, password: \"${{HOOK}}\", timeout: 5s }}\n",
                smtp.addr
            ),
        );
    assert!(yaml.contains("email:"), "{yaml}");
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
    let password = "smtp-never-in-clear";
    let (code, out) = sluice(dir.path(), password, &["run", "pipeline.yaml", "--once"]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(smtp.mails().is_empty(), "a mail went out in clear");
    let (_, listed) = sluice(dir.path(), password, &["alerts"]).await;
    assert!(
        listed.contains("-> mail: failed after 3 attempts"),
        "{listed}"
    );
    assert!(
        !out.contains(password) && !listed.contains(password),
        "{out}{listed}"
    );
}
