//! The buffer's `max_lag` through the `sluice` binary, with the embedded log: a sink that
//! takes nothing (its endpoint answers 503 until the test lets it through) while a slow
//! source reads on, so batches wait in the buffer.
//!
//! - `max_lag: 2s` (an age): one `backlog` alert once the oldest batch waiting is older
//!   than 2 s, saying so; with `max_lag: 1h`, none, though batches waited longer than 2 s;
//! - `max_lag: 3` (batches, the form from before): one `backlog` alert once more than 3
//!   batches wait.
//!
//! - with a Kafka buffer, `max_lag: 2s` the same (the age read from the first message
//!   not committed of each partition).
//!
//! Each time, once let through, the sink gets every record exactly once.

mod e2e_common;

use e2e_common::{Sandbox, Seen, alerts_of, hook};
use serde_json::Value;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, MockHandle};
use sluice_testkit::receiver::{Answer, Request, receive};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const RECORDS: u64 = 1_000;

/// The records the sink's endpoint accepted, by idempotency key.
type Taken = Arc<Mutex<BTreeMap<String, Vec<i64>>>>;

/// An endpoint that answers 503 until `open`, then takes each batch (a JSON array).
async fn endpoint() -> (String, Arc<AtomicBool>, Taken) {
    let open = Arc::new(AtomicBool::new(false));
    let taken: Taken = Arc::default();
    let (gate, kept) = (open.clone(), taken.clone());
    let addr = receive(move |r: &Request| {
        if !gate.load(Ordering::SeqCst) {
            return Answer::status(503);
        }
        let key = r.header("idempotency-key").unwrap_or_default();
        let ids: Vec<i64> = serde_json::from_slice::<Vec<Value>>(&r.body)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v["id"].as_i64())
            .collect();
        kept.lock().unwrap().insert(key, ids);
        Answer::status(200)
    })
    .await;
    (format!("http://{addr}/ingest"), open, taken)
}

/// A mock whose every page (of 50) takes 500 ms: the source reads for about 10 s.
async fn slow_mock() -> MockHandle {
    MockApi::start(MockConfig {
        records: RECORDS,
        page_size: 50,
        faults: vec![Fault::new(1, 0, FaultKind::Slow { delay_ms: 500 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts")
}

struct Backlog {
    sb: Sandbox,
    mock: MockHandle,
    seen: Seen,
    open: Arc<AtomicBool>,
    taken: Taken,
    child: tokio::process::Child,
}

/// Starts `sluice run --once` of a pipeline with `buffer: { embedded: { max_lag: ... } }`.
async fn start(name: &str, max_lag: &str) -> Backlog {
    start_with(name, &format!("{{ embedded: {{ max_lag: {max_lag} }} }}")).await
}

/// The same with `buffer: <buffer>`.
async fn start_with(name: &str, buffer: &str) -> Backlog {
    let mock = slow_mock().await;
    let (hook_url, seen) = hook().await;
    let (sink_url, open, taken) = endpoint().await;
    let mut sb = Sandbox::new(name).await;
    if buffer.contains("kafka") {
        sb = sb.with_kafka();
    }
    sb.set("MOCK", mock.base_url());
    sb.set("HOOK", hook_url);
    sb.set("SINK", sink_url);
    let file = sb.write(
        "p.yaml",
        &format!(
            r#"
pipeline: {name}
buffer: {buffer}
alerts:
  channels:
    hook: {{ webhook: {{ url: "${{HOOK}}", timeout: 2s }} }}
nodes:
  api:
    type: http
    url: ${{MOCK}}/offset/items
    pagination:
      offset_limit: {{ limit: 50 }}
    stop:
      total: $.meta.total
    records: {{ path: $.data.items }}
    nested: json_text
  out:
    type: http_sink
    inputs: [api]
    url: ${{SINK}}
    retry: {{ max_attempts: 10000, initial_backoff: 20ms, max_backoff: 100ms }}
"#
        ),
    );
    let child = sb.spawn("run", &["run", file.to_str().unwrap(), "--once", "--plain"]);
    Backlog {
        sb,
        mock,
        seen,
        open,
        taken,
        child,
    }
}

impl Backlog {
    /// Waits until `done` holds, failing after a minute or if the run ended.
    async fn until(&mut self, what: &str, done: impl Fn(&Backlog) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the run ended before {what}\n{}",
                self.sb.logs("run")
            );
            assert!(
                Instant::now() < deadline,
                "{what}: not within a minute\n{:#?}\n{}",
                self.seen.lock().unwrap(),
                self.sb.logs("run")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lets the sink through, waits for the run, checks every record arrived once.
    async fn finish(mut self) -> Seen {
        self.open.store(true, Ordering::SeqCst);
        let code = self.sb.wait(&mut self.child, "run").await;
        assert_eq!(code, Some(0), "{}", self.sb.logs("run"));
        let mut ids: Vec<i64> = self
            .taken
            .lock()
            .unwrap()
            .values()
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        let expected: Vec<i64> = (1..=RECORDS as i64).collect();
        assert_eq!(ids, expected, "every record once");
        self.mock.shutdown().await;
        self.seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_age_bound_alerts_once_when_the_oldest_batch_waiting_passes_it() {
    let mut run = start("backlog_age", "2s").await;
    run.until("a backlog alert", |r| {
        !alerts_of(&r.seen, "backlog").is_empty()
    })
    .await;
    let seen = run.finish().await;
    let backlog = alerts_of(&seen, "backlog");
    assert_eq!(backlog.len(), 1, "{backlog:#?}");
    assert_eq!(backlog[0]["node"], "api");
    assert_eq!(backlog[0]["severity"], "warning");
    let text = backlog[0]["message"].as_str().unwrap();
    assert!(
        text.contains("the oldest batch waiting was created") && text.contains("`max_lag` (2s)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_age_bound_not_reached_raises_nothing() {
    let mut run = start("backlog_young", "1h").await;
    // Batches wait well past 2 s (8 pages of 500 ms read since the first), under 1 h.
    run.until("the source read on", |r| r.mock.data_requests().len() >= 9)
        .await;
    let seen = run.finish().await;
    assert!(
        alerts_of(&seen, "backlog").is_empty(),
        "{:#?}",
        seen.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_in_batches_still_alerts_above_it() {
    let mut run = start("backlog_batches", "3").await;
    run.until("a backlog alert", |r| {
        !alerts_of(&r.seen, "backlog").is_empty()
    })
    .await;
    let seen = run.finish().await;
    let backlog = alerts_of(&seen, "backlog");
    assert_eq!(backlog.len(), 1, "{backlog:#?}");
    let text = backlog[0]["message"].as_str().unwrap();
    assert!(
        text.contains("batch(es) wait, above `max_lag` (3 batches)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_age_bound_on_kafka_alerts_once_when_the_oldest_batch_waiting_passes_it() {
    let mut run = start_with(
        "backlog_kafka",
        r#"{ kafka: { brokers: ["${KAFKA}"], topic_prefix: "${PREFIX}", partitions: 2, max_lag: 2s } }"#,
    )
    .await;
    run.until("a backlog alert", |r| {
        !alerts_of(&r.seen, "backlog").is_empty()
    })
    .await;
    let seen = run.finish().await;
    let backlog = alerts_of(&seen, "backlog");
    assert_eq!(backlog.len(), 1, "{backlog:#?}");
    let text = backlog[0]["message"].as_str().unwrap();
    assert!(
        text.contains("the oldest batch waiting was created") && text.contains("`max_lag` (2s)"),
        "{text}"
    );
}
