//! The monitor inside `sluice serve`, through the binary: the service's default alert
//! channels (`--alerts FILE`) get a `pipeline_invalid` alert for a file that does not
//! validate, and, for a pipeline without channels of its own, one `link_down` alert while
//! its sink's PostgreSQL (a private server this test owns) stays down for at least five
//! checks, then a `link_recovered` with the downtime; the sink's backlog is measured
//! between runs.
//!
//! No timed assertion: every wait is for a condition, with a generous deadline.

mod e2e_common;

use e2e_common::{Sandbox, Seen, alerts_of, poll};
use serde_json::Value;
use sluice_testkit::PrivatePostgres;
use sluice_testkit::mock_api::{MockApi, MockConfig};
use sluice_testkit::receiver::{Answer, Request, receive};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);
const EVERY: Duration = Duration::from_millis(100);

/// The database link of `mon` in the last check: when it was made and whether it was up.
async fn db_link(http: &reqwest::Client, base: &str) -> Option<(String, bool)> {
    let text = http
        .get(format!("{base}/pipelines/mon"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let body: Value = serde_json::from_str(&text).ok()?;
    let links = &body["links"];
    let at = links["checked_at"].as_str()?.to_owned();
    let db = links["links"]
        .as_array()?
        .iter()
        .find(|l| l["kind"] == "database")?;
    Some((at, db["up"].as_bool()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_monitor_alerts_a_link_down_once_and_its_recovery() {
    let pg = PrivatePostgres::start();
    let mut sb = Sandbox::new("e2e_monitor").await;
    let mock = MockApi::start(MockConfig {
        records: 10,
        page_size: 10,
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let seen: Seen = Arc::default();
    let kept = seen.clone();
    let addr = receive(move |r: &Request| {
        if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
            kept.lock().unwrap().push(v);
        }
        Answer::status(200)
    })
    .await;
    sb.set("MOCK", mock.base_url());
    sb.set("DB", pg.url());
    sb.set("HOOK", format!("http://{addr}/hook"));
    std::fs::create_dir_all(sb.path("pipelines")).unwrap();
    sb.write(
        "pipelines/mon.yaml",
        r#"
pipeline: mon
nodes:
  api:
    type: http
    url: ${MOCK}/page/items
    records: { path: $.data.items }
  db:
    type: postgres
    inputs: [api]
    url: ${DB}
    table: mon_orders
    timeouts: { connect: 1s, request: 5s }
"#,
    );
    sb.write("pipelines/broken.yaml", "pipeline: broken\nnodes: {}\n");
    sb.write(
        "alerts.yaml",
        "alerts:\n  channels:\n    hook: { webhook: { url: \"${HOOK}\", timeout: 2s } }\n  routes:\n    - { channel: hook, severities: [info, warning, critical] }\n",
    );
    let mut child = sb.spawn(
        "serve",
        &[
            "serve",
            "pipelines",
            "--alerts",
            "alerts.yaml",
            "--health-interval",
            "1s",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let base = sb.listening("serve").await;
    let base = if base.starts_with("http") {
        base
    } else {
        format!("http://{base}")
    };
    let http = reqwest::Client::new();

    // The file that does not validate, to the default channel.
    let invalid = poll(
        "a pipeline_invalid alert",
        WAIT,
        EVERY,
        || {
            let found = alerts_of(&seen, "pipeline_invalid");
            async move { found.into_iter().next() }
        },
        || sb.logs("serve"),
    )
    .await;
    assert_eq!(invalid["pipeline"], "broken", "{invalid:#}");
    assert!(
        invalid["message"].as_str().unwrap().contains("broken.yaml"),
        "{invalid:#}"
    );

    // The monitor measures each sink's backlog between runs (none has run: nothing waits).
    poll(
        "the sink's backlog measured by the monitor",
        WAIT,
        EVERY,
        || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let text = http
                    .get(format!("{base}/metrics"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                text.lines()
                    .any(|l| {
                        l.starts_with("sluice_buffer_backlog_batches{")
                            && l.contains("pipeline=\"mon\"")
                            && l.contains("node=\"db\"")
                            && l.ends_with(" 0")
                    })
                    .then_some(())
            }
        },
        || sb.logs("serve"),
    )
    .await;

    // The database up, then down for at least five checks: one alert.
    poll(
        "a check with the database up",
        WAIT,
        EVERY,
        || {
            let (http, base) = (http.clone(), base.clone());
            async move { db_link(&http, &base).await.filter(|(_, up)| *up) }
        },
        || sb.logs("serve"),
    )
    .await;
    pg.stop();
    let checks_down: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    poll(
        "five checks with the database down",
        WAIT,
        EVERY,
        || {
            let found = db_link_down(http.clone(), base.clone());
            let checks = checks_down.clone();
            async move {
                if let Some(at) = found.await {
                    checks.lock().unwrap().insert(at);
                }
                (checks.lock().unwrap().len() >= 6).then_some(())
            }
        },
        || sb.logs("serve"),
    )
    .await;
    let checks_down = checks_down.lock().unwrap().len();
    let down = alerts_of(&seen, "link_down");
    assert_eq!(
        down.len(),
        1,
        "one alert for {checks_down} checks: {down:#?}"
    );
    assert_eq!(down[0]["pipeline"], "mon");
    assert_eq!(down[0]["node"], "db");
    assert!(
        down[0]["message"].as_str().unwrap().contains("is down"),
        "{down:#?}"
    );

    pg.start_again();
    let up = poll(
        "a link_recovered alert",
        WAIT,
        EVERY,
        || {
            let found = alerts_of(&seen, "link_recovered");
            async move { found.into_iter().next() }
        },
        || sb.logs("serve"),
    )
    .await;
    assert_eq!(up["pipeline"], "mon");
    assert!(
        up["message"].as_str().unwrap().contains("up again after"),
        "{up:#}"
    );
    assert_eq!(alerts_of(&seen, "link_down").len(), 1);
    let _ = child.kill().await;
    mock.shutdown().await;
}

/// The time of the last check, when it found the database down.
async fn db_link_down(http: reqwest::Client, base: String) -> Option<String> {
    db_link(&http, &base)
        .await
        .filter(|(_, up)| !*up)
        .map(|(at, _)| at)
}
