//! `sluice health` through the binary: every link of a pipeline checked the way a run
//! uses it, each broken one named with its class and kept as an alert.

use sluice_testkit::mock_api::{MockApi, MockAuth, MockConfig};
use std::path::Path;
use std::process::{Command, Output};

fn sluice(dir: &Path, args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("sluice runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn pipeline(api: &str, token: &str, db: &str, buffer: &str) -> String {
    format!(
        r#"pipeline: health_check
{buffer}
nodes:
  api:
    type: http
    url: {api}/page/items
    auth: {{ bearer: {{ token: "{token}" }} }}
    pagination: {{ page_number: {{ param: page, size_param: per_page, size: 50 }} }}
    records: {{ path: $.data.items }}
  db:
    type: {kind}
    inputs: [api]
    url: {db}
    table: items
"#,
        kind = db.split(':').next().unwrap(),
    )
}

/// The `--json` checks (stdout).
fn checks(out: &Output) -> Vec<serde_json::Value> {
    serde_json::from_slice(&out.stdout).expect("a JSON array on stdout")
}

fn check<'a>(all: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    all.iter()
        .find(|c| c["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} check in {all:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn health_names_each_broken_link_with_its_class_and_alerts() {
    let mock = MockApi::start(MockConfig {
        auth: MockAuth::Bearer {
            token: "good-token".into(),
        },
        records: 100,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = dir.join("p.yaml");

    // Everything up.
    std::fs::write(
        &file,
        pipeline(mock.base_url(), "good-token", "sqlite://out.db", ""),
    )
    .unwrap();
    let (out, text) = sluice(dir, &["health", "p.yaml"]);
    assert!(out.status.success(), "{text}");
    for kind in ["api", "database", "buffer", "state"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(kind) && l.contains(" up ")),
            "{kind} is not up:\n{text}"
        );
    }
    assert_eq!(mock.data_requests().len(), 1, "one request, no paging on");

    // A revoked token and a database nobody listens for: each down, with its class; the
    // token never printed.
    std::fs::write(
        &file,
        pipeline(
            mock.base_url(),
            "revoked-S3cret",
            "postgres://u:pw-S3cret@127.0.0.1:1/db",
            "",
        ),
    )
    .unwrap();
    let (out, text) = sluice(dir, &["health", "p.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("S3cret"), "a secret leaked:\n{text}");
    let all = checks(&out);
    assert_eq!(check(&all, "api")["class"], "auth", "{text}");
    assert_eq!(check(&all, "database")["up"], false, "{text}");
    assert!(
        ["dependency", "network"].contains(&check(&all, "database")["class"].as_str().unwrap()),
        "{text}"
    );
    assert_eq!(check(&all, "buffer")["up"], true);

    // The broken links are alerts now.
    let (out, text) = sluice(dir, &["alerts", "--pipeline", "health_check"]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("critical") && text.contains("auth"), "{text}");
    assert!(!text.contains("S3cret"), "a secret leaked:\n{text}");

    // A Kafka buffer whose broker is gone.
    std::fs::write(
        &file,
        pipeline(
            mock.base_url(),
            "good-token",
            "sqlite://out.db",
            "buffer: { kafka: { brokers: [\"127.0.0.1:1\"] } }",
        ),
    )
    .unwrap();
    let (out, text) = sluice(dir, &["health", "p.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let all = checks(&out);
    assert_eq!(check(&all, "buffer")["up"], false, "{text}");
    assert_eq!(check(&all, "api")["up"], true, "{text}");

    // Two brokers named, one of them gone: the cluster answers through the other, and
    // the gone one is named on its own; the pipeline's partitions all have a leader.
    let live = sluice_testkit::kafka_bootstrap();
    std::fs::write(
        &file,
        pipeline(
            mock.base_url(),
            "good-token",
            "sqlite://out.db",
            &format!("buffer: {{ kafka: {{ brokers: [\"{live}\", \"127.0.0.1:1\"] }} }}"),
        ),
    )
    .unwrap();
    let (out, text) = sluice(dir, &["health", "p.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let all = checks(&out);
    let link = |name: &str| {
        all.iter()
            .find(|c| c["link"] == name)
            .unwrap_or_else(|| panic!("no link {name} in {text}"))
    };
    assert_eq!(
        link(&format!("kafka {live},127.0.0.1:1"))["up"],
        true,
        "{text}"
    );
    assert_eq!(link(&format!("kafka broker {live}"))["up"], true, "{text}");
    let gone = link("kafka broker 127.0.0.1:1");
    assert_eq!(gone["up"], false, "{text}");
    assert!(
        ["dependency", "network"].contains(&gone["class"].as_str().unwrap()),
        "{text}"
    );
    assert_eq!(
        link("kafka partitions sluice.health_check.*")["up"],
        true,
        "{text}"
    );
    mock.shutdown().await;
}
