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

/// Runs `sluice ARGS` in `dir` (blocking, off the runtime's threads).
async fn sluice(dir: &Path, hook: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = dir.to_path_buf();
    let hook = hook.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOOK", &hook)
            .env("HOOK_SECRET", SECRET)
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
