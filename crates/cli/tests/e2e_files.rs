//! End to end through the `sluice` binary: NDJSON files → transform → `file_sink` and
//! `http_sink`, the receiver failing with 503, then 429, then 413 for large bodies.
//! Every record arrives exactly once; a second run reads and writes nothing; a receiver
//! that refuses the batches makes the run fail with its class.

use serde_json::Value;
use sluice_testkit::receiver::{Answer, Request, receive};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// What the receiver does and saw.
#[derive(Default)]
struct Receiver {
    /// Requests so far (any answer).
    requests: usize,
    /// Bodies larger than this are refused with 413.
    max_body: usize,
    /// Answer every request with this status (a broken endpoint).
    always: Option<u16>,
    /// Statuses answered, in order.
    answers: Vec<u16>,
    /// Accepted batches by Idempotency-Key: their record ids.
    accepted: BTreeMap<String, Vec<i64>>,
    /// Keys accepted more than once (the receiver would have dropped them).
    repeated: Vec<String>,
    /// The Authorization header of the last request.
    authorization: Option<String>,
}

impl Receiver {
    fn answer(&mut self, key: Option<String>, body: &[u8]) -> Answer {
        self.requests += 1;
        let status = if let Some(s) = self.always {
            s
        } else if self.requests == 1 {
            503
        } else if self.requests == 2 {
            429
        } else if body.len() > self.max_body {
            413
        } else {
            let v: Value = serde_json::from_slice(body).expect("a JSON body");
            let ids: Vec<i64> = v["records"]
                .as_array()
                .expect("records wrapped under `records`")
                .iter()
                .map(|r| r["order_id"].as_i64().expect("order_id"))
                .collect();
            let key = key.expect("an Idempotency-Key header");
            if self.accepted.insert(key.clone(), ids).is_some() {
                self.repeated.push(key);
            }
            200
        };
        self.answers.push(status);
        if status == 429 {
            Answer::status(status).with_header("Retry-After", "1")
        } else {
            Answer::status(status)
        }
    }
}

/// Starts a receiver; returns its URL and state.
async fn receiver(max_body: usize, always: Option<u16>) -> (String, Arc<Mutex<Receiver>>) {
    let state = Arc::new(Mutex::new(Receiver {
        max_body,
        always,
        ..Receiver::default()
    }));
    let kept = state.clone();
    let addr = receive(move |r: &Request| {
        let mut s = kept.lock().unwrap();
        s.authorization = r.header("authorization");
        s.answer(r.header("idempotency-key"), &r.body)
    })
    .await;
    (format!("http://{addr}/v1/events"), state)
}

const PIPELINE: &str = r#"
pipeline: files_e2e
nodes:
  orders:
    type: file
    path: in/orders-*.ndjson
    format: ndjson
    batching: { max_rows: 20 }
  shape:
    type: transform
    inputs: [orders]
    ops:
      - rename: { id: order_id }
  archive:
    type: file_sink
    inputs: [shape]
    path: out/orders-{{date}}.ndjson
    format: ndjson
  export:
    type: file_sink
    inputs: [shape]
    path: out/orders.csv
    format: csv
  api:
    type: http_sink
    inputs: [shape]
    url: ${RECEIVER}
    auth: { bearer: { token: "${TOKEN}" } }
    format: json_array
    wrap_key: records
    idempotency_header: Idempotency-Key
    retry: { max_attempts: 8, initial_backoff: 10ms, max_backoff: 100ms }
"#;

fn write_inputs(dir: &Path) {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    for f in 0..2 {
        let mut text = String::new();
        for i in 0..30 {
            let id = f * 100 + i;
            text.push_str(&format!(
                "{{\"id\":{id},\"customer\":\"c{}\",\"amount\":{}.5}}\n",
                i % 7,
                i * 3
            ));
        }
        std::fs::write(dir.join(format!("in/orders-{f}.ndjson")), text).unwrap();
    }
    std::fs::write(dir.join("pipeline.yaml"), PIPELINE).unwrap();
}

/// Runs `sluice run pipeline.yaml --once` in `dir` (blocking, off the runtime's threads).
async fn run(dir: &Path, url: &str) -> (Option<i32>, String) {
    let dir = dir.to_path_buf();
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "pipeline.yaml", "--once"])
            .current_dir(&dir)
            .env_clear()
            .env("RECEIVER", &url)
            .env("TOKEN", "s3cr3t-token")
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

fn ids_of_ndjson(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["order_id"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

fn expected() -> BTreeSet<i64> {
    (0..2)
        .flat_map(|f| (0..30).map(move |i| f * 100 + i))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_to_a_file_and_a_flaky_endpoint_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    // Batches of 20 records are ~1.1 KB as JSON: refused with 413, their halves pass.
    let (url, state) = receiver(800, None).await;

    let (code, out) = run(dir.path(), &url).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("s3cr3t-token"), "the token printed: {out}");

    let got = {
        let s = state.lock().unwrap();
        assert_eq!(&s.answers[..2], &[503, 429], "{:?}", s.answers);
        assert!(
            s.answers.contains(&413),
            "no batch was too large: {:?}",
            s.answers
        );
        assert!(s.repeated.is_empty(), "keys sent twice: {:?}", s.repeated);
        assert_eq!(s.authorization.as_deref(), Some("Bearer s3cr3t-token"));
        for key in s.accepted.keys() {
            // A batch's id (32 hex), or a split part's: `<parent id>:<first row>+<rows>`.
            let (id, part) = key.split_once(':').unwrap_or((key, "0+0"));
            assert_eq!(id.len(), 32, "{key}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
            assert!(part.contains('+'), "{key}");
        }
        assert!(
            s.accepted.keys().any(|k| k.contains(':')),
            "no part of a split batch arrived: {:?}",
            s.accepted.keys()
        );
        let mut all: Vec<i64> = s.accepted.values().flatten().copied().collect();
        all.sort();
        all
    };
    let want: Vec<i64> = expected().into_iter().collect();
    assert_eq!(got, want, "every record exactly once at the endpoint");

    // The archive (one file per date) and the CSV export hold every record once.
    let archive: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    assert_eq!(archive.len(), 1, "{archive:?}");
    let mut ids = ids_of_ndjson(&archive[0]);
    ids.sort();
    assert_eq!(ids, want);
    let csv = std::fs::read_to_string(dir.path().join("out/orders.csv")).unwrap();
    assert_eq!(csv.lines().next(), Some("order_id,customer,amount"));
    assert_eq!(csv.lines().count(), 61, "{csv}");

    // A second run: the files are done, nothing is read, sent or written again.
    let before = std::fs::read(&archive[0]).unwrap();
    let requests = state.lock().unwrap().requests;
    let (code, out) = run(dir.path(), &url).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(state.lock().unwrap().requests, requests, "{out}");
    assert_eq!(std::fs::read(&archive[0]).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/orders.csv"))
            .unwrap()
            .lines()
            .count(),
        61
    );

    // A new file in the folder: only it is read on the next run.
    std::fs::write(
        dir.path().join("in/orders-2.ndjson"),
        "{\"id\":900,\"customer\":\"c1\",\"amount\":1.5}\n",
    )
    .unwrap();
    let (code, out) = run(dir.path(), &url).await;
    assert_eq!(code, Some(0), "{out}");
    let mut ids = ids_of_ndjson(&archive[0]);
    ids.sort();
    assert_eq!(ids.len(), 61);
    assert_eq!(ids.last(), Some(&900));
    assert!(state.lock().unwrap().repeated.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_refusing_the_credentials_fails_the_run_with_auth() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    let (url, _state) = receiver(usize::MAX, Some(401)).await;
    let (code, out) = run(dir.path(), &url).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("[auth]"), "{out}");
    assert!(!out.contains("s3cr3t-token"), "the token printed: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_fails_the_source_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path());
    std::fs::write(
        dir.path().join("in/orders-0.ndjson"),
        "{\"id\":1,\"customer\":\"a\",\"amount\":1.5}\n{\"id\":2,\"customer\":\n",
    )
    .unwrap();
    let (url, _state) = receiver(usize::MAX, Some(200)).await;
    let (code, out) = run(dir.path(), &url).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("[invalid_request]"), "{out}");
    assert!(out.contains("orders-0.ndjson line 2"), "{out}");
}
