//! End to end through the `sluice` binary: hostile answers and inputs that once crashed
//! the process or grew its memory without bound. Each run must end with a classified
//! outcome, never a panic or an abort: a token server saying its token lives
//! `u64::MAX` seconds, a gzip bomb, one 50 MB line in an NDJSON file.
//!
//! No external service is needed: the mock API runs in the test, the pipelines write
//! files, the state store is SQLite in a temporary folder.

use serde_json::Value;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockAuth, MockConfig};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `sluice run pipeline.yaml --once` in `dir` with `vars` (off the runtime's threads).
async fn run(dir: &Path, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = dir.to_path_buf();
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["run", "pipeline.yaml", "--once", "--plain"])
            .current_dir(&dir)
            .env_clear();
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sluice binary runs");
        // A run that hangs fails the test instead of holding it forever.
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().expect("waiting for sluice").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("sluice's output");
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

/// The `id`s of an NDJSON file.
fn ids(path: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_lives_u64_max_seconds_does_not_crash_the_source() {
    let mock = MockApi::start(MockConfig {
        records: 120,
        auth: MockAuth::Oauth2 {
            client_id: "c".into(),
            client_secret: "s3cret".into(),
            // `expires_in: 18446744073709551615`: once overflowed `Instant + Duration`.
            token_ttl_secs: u64::MAX,
        },
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        r#"
pipeline: hostile_token
nodes:
  orders:
    type: http
    url: ${MOCK}/page/items
    auth:
      oauth2_client_credentials:
        token_url: ${MOCK}/oauth/token
        client_id: c
        client_secret: ${SECRET}
    pagination:
      page_number: { param: page, size_param: per_page, size: 50 }
    stop:
      has_more: $.meta.has_more
    records: { path: $.data.items }
    nested: json_text
  out:
    type: file_sink
    inputs: [orders]
    path: out/orders.ndjson
    format: ndjson
"#,
    )
    .unwrap();
    let (code, out) = run(
        dir.path(),
        &[("MOCK", mock.base_url()), ("SECRET", "s3cret")],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let mut got = ids(&dir.path().join("out/orders.ndjson"));
    got.sort();
    assert_eq!(got, (1..=120).collect::<Vec<_>>());
    assert_eq!(
        mock.tokens_issued(),
        1,
        "the token is cached, not re-fetched"
    );
    mock.shutdown().await;
}

const PAGED: &str = r#"
pipeline: hostile_bomb
nodes:
  orders:
    type: http
    url: ${MOCK}/offset/items
    pagination:
      offset_limit: { offset_param: offset, limit_param: limit, limit: 40 }
    stop:
      total: $.meta.total
    records: { path: $.data.items }
    nested: json_text
    max_response_bytes: 1MiB
    retry: { max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms }
  out:
    type: file_sink
    inputs: [orders]
    path: out/orders.ndjson
    format: ndjson
"#;

/// 64 MiB of JSON once decoded, about 64 KB gzipped on the wire.
const BOMB: FaultKind = FaultKind::LargeBody {
    bytes: 64 << 20,
    gzip: true,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_page_is_payload_too_large_and_a_smaller_page_is_asked_for() {
    let mock = MockApi::start(MockConfig {
        records: 100,
        faults: vec![Fault::new(1, 1, BOMB)],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), PAGED).unwrap();
    let (code, out) = run(dir.path(), &[("MOCK", mock.base_url())]).await;
    assert_eq!(code, Some(0), "{out}");
    let mut got = ids(&dir.path().join("out/orders.ndjson"));
    got.sort();
    assert_eq!(got, (1..=100).collect::<Vec<_>>(), "{out}");
    // The first answer was cut at the limit, then the page shrank.
    let limits: Vec<String> = mock
        .data_requests()
        .iter()
        .filter_map(|r| {
            r.query
                .split('&')
                .find_map(|p| p.strip_prefix("limit=").map(str::to_owned))
        })
        .collect();
    assert_eq!(limits.first().map(String::as_str), Some("40"), "{limits:?}");
    assert_eq!(limits.get(1).map(String::as_str), Some("20"), "{limits:?}");
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_on_every_page_fails_the_run_with_payload_too_large() {
    let mock = MockApi::start(MockConfig {
        records: 100,
        faults: vec![Fault::new(1, 0, BOMB)],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = PAGED.replace(
        "    pagination:\n      offset_limit: { offset_param: offset, limit_param: limit, limit: 40 }\n    stop:\n      total: $.meta.total\n",
        "",
    );
    assert_ne!(pipeline, PAGED);
    std::fs::write(dir.path().join("pipeline.yaml"), pipeline).unwrap();
    let (code, out) = run(dir.path(), &[("MOCK", mock.base_url())]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("payload_too_large"), "{out}");
    assert!(out.contains("max_response_bytes"), "{out}");
    mock.shutdown().await;
}

/// `in/orders.ndjson`: 20 good lines, one 50 MB line, 20 good lines.
fn write_long_line_input(dir: &Path, policy: &str) {
    use std::io::Write as _;
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(dir.join("in/orders.ndjson")).unwrap());
    for id in 1..=20 {
        writeln!(f, "{{\"id\":{id},\"note\":\"ok\"}}").unwrap();
    }
    let pad = "x".repeat(1 << 20);
    write!(f, "{{\"id\":999,\"note\":\"").unwrap();
    for _ in 0..50 {
        f.write_all(pad.as_bytes()).unwrap();
    }
    writeln!(f, "\"}}").unwrap();
    for id in 21..=40 {
        writeln!(f, "{{\"id\":{id},\"note\":\"ok\"}}").unwrap();
    }
    f.flush().unwrap();
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!(
            r#"
pipeline: hostile_line
nodes:
  orders:
    type: file
    path: in/orders.ndjson
    format: ndjson
    batching: {{ max_bytes: 1MiB }}
    max_record_bytes: 1MiB
    bad_records: {policy}
  out:
    type: file_sink
    inputs: [orders]
    path: out/orders.ndjson
    format: ndjson
"#
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_line_is_a_bad_record_skipped_quarantined_or_failing_per_policy() {
    // A quarantined record makes the run `partially_succeeded` (exit 3).
    for (policy, exit) in [("skip", 0), ("quarantine", 3)] {
        let dir = tempfile::tempdir().unwrap();
        write_long_line_input(dir.path(), policy);
        let (code, out) = run(dir.path(), &[]).await;
        assert_eq!(code, Some(exit), "{policy}: {out}");
        let got = ids(&dir.path().join("out/orders.ndjson"));
        assert_eq!(got, (1..=40).collect::<Vec<_>>(), "{policy}: {out}");
        assert!(
            out.contains("longer than max_record_bytes"),
            "{policy}: {out}"
        );
        if policy == "quarantine" {
            let listed = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["failed", "list"])
                .current_dir(dir.path())
                .env_clear()
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&listed.stdout);
            assert!(text.contains("hostile_line"), "{text}");
            assert!(text.contains("invalid_request"), "{text}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    write_long_line_input(dir.path(), "fail");
    let (code, out) = run(dir.path(), &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("[invalid_request]"), "{out}");
    assert!(out.contains("orders.ndjson line 21"), "{out}");
}
