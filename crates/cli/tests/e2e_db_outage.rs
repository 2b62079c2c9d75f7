//! The sink's database stops in the middle of a run (`scripts/services.sh down postgres`).
//!
//! - With a retry budget longer than the outage, batches wait in Kafka: the source reads
//!   to the end meanwhile, and once the database is back the sink catches up; every record
//!   lands once, nothing goes to the failed-batch store.
//! - With a short one, the sink's batches land in the failed-batch store (the run fails,
//!   exit 1); once the database is back `sluice replay` delivers them all, a second replay
//!   and a second run write nothing twice (primary keys and `_sluice_ledger` agree).
//!
//! This binary stops and starts the shared PostgreSQL server, so it holds one test, and
//! nothing else runs beside it (cargo runs test binaries one after another). It can only
//! stop a server this checkout started; to run it beside servers another checkout owns,
//! give it a private one:
//!
//! ```text
//! export SLUICE_SERVICES_DIR=/tmp/e2e-outage SLUICE_PG_PORT=55432
//! scripts/services.sh up postgres && eval "$(scripts/services.sh env)"
//! cargo test -p sluice --test e2e_db_outage
//! scripts/services.sh down postgres
//! ```

mod e2e_common;

use e2e_common::{Sandbox, address, assert_exactly_once, count, node};
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, MockHandle};
use sluice_testkit::services_script;
use std::time::Duration;
use tokio::time::Instant;

const RECORDS: i64 = 1_000;

/// Brings PostgreSQL back when dropped, so that a failing assertion during the outage
/// does not leave the server down for the test binaries that follow.
struct Outage {
    up: bool,
}

impl Outage {
    fn start(server: &str) -> Outage {
        services_script("down", "postgres");
        let outage = Outage { up: false };
        assert!(
            std::net::TcpStream::connect(server).is_err(),
            "{server} still answers after `scripts/services.sh down postgres`: the server was started by \
             another checkout; stop it there and run `scripts/services.sh up` here (or run this test from that checkout)"
        );
        outage
    }

    fn end(mut self) {
        services_script("up", "postgres");
        self.up = true;
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.up {
            services_script("up", "postgres");
        }
    }
}

/// A mock whose pages after the third take 300 ms until it is healed: the run is still
/// reading when the database goes down.
async fn slowing_mock() -> MockHandle {
    MockApi::start(MockConfig {
        records: RECORDS as u64,
        page_size: 50,
        faults: vec![Fault::new(4, 0, FaultKind::Slow { delay_ms: 300 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts")
}

fn pipeline(name: &str, table: &str, sink_retry: &str) -> String {
    format!(
        r#"
pipeline: {name}
buffer:
  kafka:
    brokers: ["${{KAFKA}}"]
    topic_prefix: ${{PREFIX}}
    partitions: 2
nodes:
  api:
    type: http
    url: ${{MOCK}}/page/items
    pagination:
      page_number: {{ param: page, size_param: per_page, size: 50 }}
    stop:
      has_more: $.meta.has_more
    records: {{ path: $.data.items }}
  db:
    type: postgres
    inputs: [api]
    url: ${{PG_URL}}
    table: {table}
    mode: append
    timeouts: {{ connect: 1s, request: 5s }}
    retry: {sink_retry}
"#
    )
}

/// The status of node `node` in the latest run of `pipeline`, once the node ended.
async fn node_status(state: &std::path::Path, pipeline: &str, node: &str) -> Option<String> {
    let url = format!("sqlite://{}?mode=ro", state.display());
    let pool = sqlx::SqlitePool::connect(&url).await.ok()?;
    let status = sqlx::query_scalar(
        "SELECT n.status FROM node_runs n JOIN runs r ON r.id = n.run_id
         WHERE r.pipeline = $1 AND n.node = $2 ORDER BY r.started_at DESC LIMIT 1",
    )
    .bind(pipeline)
    .bind(node)
    .fetch_optional(&pool)
    .await
    .ok()
    .flatten();
    pool.close().await;
    status
}

/// Failed attempts of `node` in the latest run of `pipeline` so far.
async fn failed_attempts(state: &std::path::Path, pipeline: &str, node: &str) -> i64 {
    let url = format!("sqlite://{}?mode=ro", state.display());
    let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
        return 0;
    };
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE node = $2 AND run_id =
         (SELECT id FROM runs WHERE pipeline = $1 ORDER BY started_at DESC LIMIT 1)",
    )
    .bind(pipeline)
    .bind(node)
    .fetch_one(&pool)
    .await
    .unwrap_or(0);
    pool.close().await;
    n
}

/// Waits until `table` has rows (the run is delivering), failing if the run ended first.
async fn wait_for_rows(sb: &Sandbox, child: &mut tokio::process::Child, log: &str, table: &str) {
    let pool = sb.pool().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pool, table).await == 0 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the run ended ({status}) before writing anything\n{}",
                sb.logs(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "nothing written within a minute\n{}",
            sb.logs(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_database_stopped_mid_run_loses_and_duplicates_nothing() {
    let mut sb = Sandbox::new("e2e_outage").await.with_kafka();
    let server = address(&sb.pg.server_url);
    let state = sb.path(".sluice/state.db");

    // 1. A retry budget longer than the outage: batches wait in Kafka.
    let mock = slowing_mock().await;
    sb.set("MOCK", mock.base_url());
    let file = sb.write(
        "wait.yaml",
        &pipeline(
            "e2e_outage_wait",
            "wait_orders",
            "{ max_attempts: 1000, initial_backoff: 50ms, max_backoff: 250ms, max_elapsed: 2m }",
        ),
    );
    let mut child = sb.spawn(
        "wait",
        &["run", file.to_str().unwrap(), "--once", "--plain"],
    );
    wait_for_rows(&sb, &mut child, "wait", "wait_orders").await;
    let outage = Outage::start(&server);
    mock.heal();
    // The source reads to the end while the database is down: its batches are in Kafka.
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_status(&state, "e2e_outage_wait", "api")
        .await
        .as_deref()
        != Some("succeeded")
    {
        assert!(
            Instant::now() < deadline,
            "the source did not finish while the database was down\n{}",
            sb.logs("wait")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the sink met the outage (more than once: it keeps retrying).
    while failed_attempts(&state, "e2e_outage_wait", "db").await < 2 {
        assert!(
            Instant::now() < deadline,
            "the sink did not retry while the database was down\n{}",
            sb.logs("wait")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run must wait for the database, not end\n{}",
        sb.logs("wait")
    );
    outage.end();
    let code = sb.wait(&mut child, "wait").await;
    assert_eq!(code, Some(0), "{}", sb.logs("wait"));
    let pool = sb.pool().await;
    assert_exactly_once(&pool, "wait_orders", "id", RECORDS).await;
    assert!(sb.failed("e2e_outage_wait").await.is_empty());
    let runs = sb.runs().await;
    let show = sb.run_show(runs[0]["id"].as_str().unwrap()).await;
    let db = node(&show, "db");
    assert_eq!(db["status"], "succeeded", "{show:#}");
    assert!(db["retries"].as_i64().unwrap() > 0, "{show:#}");
    assert!(
        show["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["node"] == "db" && a["class"] == "dependency"),
        "the failed writes are in the run record, class dependency: {show:#}"
    );
    mock.shutdown().await;

    // 2. A short retry budget: batches land in the failed-batch store; replay delivers.
    let mock = slowing_mock().await;
    sb.set("MOCK", mock.base_url());
    let file = sb.write(
        "store.yaml",
        &pipeline(
            "e2e_outage_store",
            "store_orders",
            "{ max_attempts: 3, initial_backoff: 20ms, max_backoff: 50ms, max_elapsed: 1s }",
        ),
    );
    let file = file.to_str().unwrap();
    let mut child = sb.spawn("store", &["run", file, "--once", "--plain"]);
    wait_for_rows(&sb, &mut child, "store", "store_orders").await;
    let outage = Outage::start(&server);
    mock.heal();
    let code = sb.wait(&mut child, "store").await;
    assert_eq!(code, Some(1), "the sink failed\n{}", sb.logs("store"));
    let logs = sb.logs("store");
    assert!(
        logs.contains("sluice replay"),
        "the run says how to replay: {logs}"
    );
    let failed = sb.failed("e2e_outage_store").await;
    assert!(!failed.is_empty(), "{logs}");
    assert!(
        failed
            .iter()
            .all(|f| f["node"] == "db" && f["class"] == "dependency"),
        "{failed:?}"
    );
    let kept: i64 = failed.iter().map(|f| f["rows"].as_i64().unwrap()).sum();
    let runs = sb.runs().await;
    assert_eq!(runs[0]["status"], "failed", "{runs:?}");
    let show = sb.run_show(runs[0]["id"].as_str().unwrap()).await;
    assert_eq!(node(&show, "api")["status"], "succeeded", "{show:#}");
    assert_eq!(node(&show, "api")["records_out"], RECORDS, "{show:#}");
    assert_eq!(node(&show, "db")["status"], "failed", "{show:#}");
    assert_eq!(node(&show, "db")["error_class"], "dependency", "{show:#}");
    outage.end();

    let pool = sb.pool().await;
    let before = count(&pool, "store_orders").await;
    assert!(
        before + kept >= RECORDS,
        "every record is in the table or in the store: {before} + {kept}"
    );
    let replay = sb
        .sluice(&["replay", "--pipeline", "e2e_outage_store"])
        .await;
    replay.expect_code(0);
    assert!(
        replay
            .stdout
            .contains(&format!("{} batch(es)", failed.len())),
        "{replay}"
    );
    assert_exactly_once(&pool, "store_orders", "id", RECORDS).await;
    assert!(sb.failed("e2e_outage_store").await.is_empty(), "{replay}");
    let runs = sb.runs().await;
    assert_eq!(runs[0]["trigger"], "replay", "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");

    // Idempotent: a second replay has nothing to do, a second run re-reads the API and
    // finds every batch in the ledger.
    let twice = sb
        .sluice(&["replay", "--pipeline", "e2e_outage_store"])
        .await;
    twice.expect_code(0);
    assert!(twice.stdout.contains("0 batch(es)"), "{twice}");
    let again = sb.sluice(&["run", file, "--once", "--plain"]).await;
    again.expect_code(0);
    assert_exactly_once(&pool, "store_orders", "id", RECORDS).await;
    assert_exactly_once(&pool, "wait_orders", "id", RECORDS).await;
    mock.shutdown().await;
}
