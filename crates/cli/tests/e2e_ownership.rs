//! One owner per pipeline, through the `sluice` binary: a realtime `sluice run` left open
//! while the user runs `sluice run --once` and `sluice replay` on the same pipeline loses
//! and duplicates nothing (the embedded log with small segments, and Kafka with a
//! PostgreSQL state store); a second process is refused naming the holder; a process
//! paused past its lease cannot move a checkpoint when it wakes up.
//!
//! `SLUICE_E2E_ROUNDS` raises the number of rounds (200 for a long soak).

mod e2e_common;

use e2e_common::{Sandbox, assert_exactly_once, poll};
use serde_json::Value;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, MockHandle};
use sqlx::Row;
use std::time::Duration;

fn rounds(default: usize) -> usize {
    std::env::var("SLUICE_E2E_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

/// Drops `in/fNNNN.ndjson` of 100 records (ids `round * 100 ..`), atomically.
fn drop_file(sb: &Sandbox, round: usize) {
    let text: String = (0..100)
        .map(|i| {
            format!(
                "{{\"id\": {}, \"round\": {round}, \"note\": \"x\"}}\n",
                round * 100 + i
            )
        })
        .collect();
    let tmp = sb.write(&format!("in/f{round:04}.tmp"), &text);
    std::fs::rename(&tmp, sb.path(&format!("in/f{round:04}.ndjson"))).unwrap();
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("the process runs").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// A realtime process plus `run --once --wait` and `replay --wait` from a second process,
/// round after round, while files arrive: every record in the table exactly once, every
/// run succeeded.
async fn two_processes(sb: &Sandbox, file: &str, rounds: usize, total_wait: Duration) {
    std::fs::create_dir_all(sb.path("in")).unwrap();
    let mut realtime = sb.spawn("realtime", &["run", file, "--plain"]);
    for round in 0..rounds {
        drop_file(sb, round);
        let out = if round % 4 == 3 {
            sb.sluice(&["replay", "-f", file, "--wait"]).await
        } else {
            sb.sluice(&["run", file, "--once", "--wait", "--plain"])
                .await
        };
        out.expect_code(0);
    }
    let pool = sb.pool().await;
    let expected = (rounds * 100) as i64;
    poll(
        "every record in the table",
        total_wait,
        Duration::from_millis(200),
        || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query("SELECT count(*) FROM \"rows\"")
                    .fetch_one(&pool)
                    .await
                    .ok()?
                    .get(0);
                (n >= expected).then_some(())
            }
        },
        || sb.logs("realtime"),
    )
    .await;
    signal(&realtime, "-TERM");
    let code = sb.wait(&mut realtime, "realtime").await;
    assert!(
        matches!(code, Some(0) | Some(130)),
        "{code:?}\n{}",
        sb.logs("realtime")
    );
    assert_exactly_once(&pool, "rows", "id", expected).await;
    let runs = sb
        .sluice(&["runs", "--json", "-f", file, "--limit", "100000"])
        .await;
    runs.expect_code(0);
    let Value::Array(runs) = runs.json() else {
        panic!("runs --json is a list")
    };
    let bad: Vec<&Value> = runs
        .iter()
        .filter(|r| !matches!(r["status"].as_str(), Some("succeeded" | "cancelled")))
        .collect();
    assert!(bad.is_empty(), "runs that did not succeed: {bad:#?}");
}

/// A realtime pipeline of NDJSON files into PostgreSQL (`append`: a duplicate would show),
/// with `frame` (its buffer and state lines).
fn owners(frame: &str) -> String {
    format!(
        r#"
pipeline: owners
schedule: {{ realtime: {{ poll_interval: 100ms }} }}
{frame}
nodes:
  files:
    type: file
    path: in/*.ndjson
    format: ndjson
    batching: {{ max_rows: 30 }}
  db:
    type: postgres
    inputs: [files]
    url: ${{PG_URL}}
    table: rows
    mode: append
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_run_beside_run_once_and_replay_on_the_embedded_log() {
    let sb = Sandbox::new("e2e_own_embedded").await;
    let file = "owners.yaml";
    sb.write(
        file,
        &owners(
            "# Small segments: retention deletes them as soon as they are consumed.\n\
             buffer: { embedded: { segment_size: 64KiB, max_message_size: 16KiB } }",
        ),
    );
    two_processes(&sb, file, rounds(24), Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_run_beside_run_once_and_replay_on_kafka_with_postgres_state() {
    let sb = Sandbox::new("e2e_own_kafka").await.with_kafka();
    let file = "owners.yaml";
    sb.write(
        file,
        &owners(
            "state: ${PG_URL}\nbuffer: { kafka: { brokers: [\"${KAFKA}\"], topic_prefix: \"${PREFIX}\" } }",
        ),
    );
    two_processes(&sb, file, rounds(4), Duration::from_secs(120)).await;
}

/// The slow API pipeline: pages of 50, each `delay_ms` late.
async fn slow_mock(records: u64, delay_ms: u64) -> MockHandle {
    MockApi::start(MockConfig {
        records,
        page_size: 50,
        faults: vec![Fault::new(1, 0, FaultKind::Slow { delay_ms })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts")
}

const SLOW_PIPELINE: &str = r#"
pipeline: slow
nodes:
  api:
    type: http
    url: ${MOCK}/page/items
    pagination:
      page_number: { param: page, size_param: per_page, size: 50 }
    stop:
      has_more: $.meta.has_more
    records: { path: $.data.items }
  db:
    type: postgres
    inputs: [api]
    url: ${PG_URL}
    table: rows
    mode: append
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_is_refused_naming_the_holder() {
    let mock = slow_mock(400, 600).await;
    let mut sb = Sandbox::new("e2e_own_refused").await;
    sb.set("MOCK", mock.base_url());
    let file = "slow.yaml";
    sb.write(file, SLOW_PIPELINE);
    let mut first = sb.spawn("first", &["run", file, "--once", "--plain"]);
    let pid = first.id().expect("running");
    // Once its run is under way, a second process is refused, naming it.
    poll(
        "the first run started",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let out = sb.sluice(&["runs", "--json"]).await;
            (out.code == Some(0) && out.stdout.contains("\"running\"")).then_some(())
        },
        || sb.logs("first"),
    )
    .await;
    let second = sb.sluice(&["run", file, "--once", "--plain"]).await;
    second.expect_code(75);
    assert!(
        second
            .stderr
            .contains(&format!("is being run by pid {pid} ")),
        "{second}"
    );
    let replay = sb.sluice(&["replay", "-f", file]).await;
    replay.expect_code(75);
    assert!(replay.stderr.contains(&format!("pid {pid}")), "{replay}");
    // The buffer in use by its owner is up, not broken.
    let health = sb.sluice(&["health", file]).await;
    health.expect_code(0);
    assert_eq!(
        sb.wait(&mut first, "first").await,
        Some(0),
        "{}",
        sb.logs("first")
    );
    assert_exactly_once(&sb.pool().await, "rows", "id", 400).await;
    mock.shutdown().await;
}

/// A process paused (SIGSTOP) past its lease loses it to another, which finishes the
/// work; resumed, the first cannot move the checkpoint back and its run fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_cannot_write_a_checkpoint_after_losing_its_lease() {
    let mock = slow_mock(600, 250).await;
    let mut sb = Sandbox::new("e2e_own_paused").await.with_kafka();
    sb.set("MOCK", mock.base_url());
    sb.set("SLUICE_LEASE_TTL", "1s");
    let file = "paused.yaml";
    let yaml = SLOW_PIPELINE.replace(
        "pipeline: slow\n",
        "pipeline: slow\nstate: ${PG_URL}\nbuffer:\n  kafka:\n    brokers: [\"${KAFKA}\"]\n    topic_prefix: ${PREFIX}\n",
    );
    sb.write(file, &yaml);
    let pool = sb.pool().await;
    let checkpoint = || {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT value FROM checkpoints WHERE pipeline = 'slow' AND node = 'api'")
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
                .map(|r| r.get::<String, _>(0))
        }
    };
    let mut first = sb.spawn("first", &["run", file, "--once", "--plain"]);
    poll(
        "the first process saved a checkpoint",
        Duration::from_secs(60),
        Duration::from_millis(50),
        checkpoint,
        || sb.logs("first"),
    )
    .await;
    signal(&first, "-STOP");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut second = sb.spawn("second", &["run", file, "--once", "--plain"]);
    let code2 = sb.wait(&mut second, "second").await;
    assert_eq!(code2, Some(0), "{}", sb.logs("second"));
    let done = checkpoint().await.expect("a checkpoint");
    signal(&first, "-CONT");
    let code = sb.wait(&mut first, "first").await;
    let logs = sb.logs("first");
    assert_eq!(code, Some(1), "{logs}");
    assert!(logs.contains("lost its run lease"), "{logs}");
    assert_eq!(
        checkpoint().await.as_deref(),
        Some(done.as_str()),
        "the paused process moved the checkpoint after losing its lease\n{logs}"
    );
    assert_exactly_once(&pool, "rows", "id", 600).await;
    mock.shutdown().await;
}
