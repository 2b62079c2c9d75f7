//! `kill -9` of the `sluice` process at several points of a run, then `sluice run` again to
//! completion: the sink holds every source record exactly once (primary keys and the
//! ledger agree), over the embedded buffer and over Kafka.
//!
//! Kill points, one per run, each later than the one before: as soon as the source saved
//! its first checkpoint (the buffer acknowledged a batch; the sink may have nothing yet),
//! then after a quarter, half (a graceful SIGTERM there: exit 130, run `cancelled`) and
//! four fifths of the records reached the sink. Each run resumes from the checkpoints and
//! offsets the one before left. A sink behind writes what waits in one group, so a point
//! can be passed by all the rest between two polls: the points after it are then skipped
//! (the first, on the source's checkpoint, always comes mid-run).

mod e2e_common;

use e2e_common::{Sandbox, assert_exactly_once, count, node};
use sluice_testkit::mock_api::{MockApi, MockConfig};
use std::time::Duration;

const RECORDS: u64 = 1_500;

/// Whether the state store holds a checkpoint of `pipeline`'s node `api`.
async fn has_checkpoint(state: &std::path::Path, pipeline: &str) -> bool {
    let url = format!("sqlite://{}?mode=ro", state.display());
    let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
        return false;
    };
    let found: Result<i64, _> =
        sqlx::query_scalar("SELECT count(*) FROM checkpoints WHERE pipeline = $1 AND node = 'api'")
            .bind(pipeline)
            .fetch_one(&pool)
            .await;
    pool.close().await;
    found.unwrap_or(0) > 0
}

async fn kill_at_several_points_then_finish(name: &str, buffer: &str, kafka: bool) {
    let mock = MockApi::start(MockConfig {
        records: RECORDS,
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new(name).await;
    if kafka {
        sb = sb.with_kafka();
    }
    sb.set("MOCK", mock.base_url());
    let file = sb.write(
        "kill.yaml",
        &format!(
            r#"
pipeline: {name}
{buffer}
nodes:
  api:
    type: http
    url: ${{MOCK}}/page/items
    pagination:
      page_number: {{ param: page, size_param: per_page, size: 25 }}
    stop:
      has_more: $.meta.has_more
    records: {{ path: $.data.items }}
    # 60 pages at 25 a second: a run takes a few seconds, time enough to kill it.
    rate_limit: {{ requests_per_second: 25, burst: 1 }}
  clean:
    type: transform
    inputs: [api]
    ops:
      - flatten: {{ column: customer, separator: _ }}
      - drop: [items]
  db:
    type: postgres
    inputs: [clean]
    url: ${{PG_URL}}
    table: orders
    mode: append
"#
        ),
    );
    let file = file.to_str().unwrap().to_owned();
    let pool = sb.pool().await;
    let state = sb.path(".sluice/state.db");
    let n = RECORDS as i64;

    // (rows in the sink to wait for, or the first checkpoint; whether to stop gracefully)
    let points = [
        (None, false),
        (Some(n / 4), false),
        (Some(n / 2), true),
        (Some(n * 4 / 5), false),
    ];
    // Runs started (each killed or stopped), and which of them (counted from 0) was stopped
    // gracefully.
    let mut interrupted = 0;
    let mut stopped = None;
    for (i, (at_rows, graceful)) in points.into_iter().enumerate() {
        let before = count(&pool, "orders").await;
        if before >= n {
            // A point passed by all the rest: no later point can be reached mid-run.
            break;
        }
        if at_rows.is_some_and(|rows| before >= rows) {
            // Passed already (a stopped run finished the batches in hand past it): killing
            // now would kill a process that has not yet recorded its run.
            continue;
        }
        if graceful {
            stopped = Some(interrupted);
        }
        interrupted += 1;
        let log = format!("run{i}");
        let started = std::time::Instant::now();
        let mut child = sb.spawn(&log, &["run", &file, "--once", "--plain"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "run {i} ended ({status}) before its kill point {at_rows:?}; sink rows: {}\n{}",
                    count(&pool, "orders").await,
                    sb.logs(&log)
                );
            }
            let reached = match at_rows {
                None => has_checkpoint(&state, name).await,
                Some(rows) => count(&pool, "orders").await >= rows,
            };
            if reached {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "kill point {i} ({at_rows:?} rows) not reached within a minute\n{}",
                sb.logs(&log)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if graceful {
            // SIGTERM: sources stop pulling, batches in hand are finished, the run ends
            // `cancelled` with exit code 130.
            let pid = child.id().expect("a running child").to_string();
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill -TERM");
            assert!(sent.success());
            let code = sb.wait(&mut child, &log).await;
            assert_eq!(code, Some(130), "stopped gracefully\n{}", sb.logs(&log));
        } else {
            child.start_kill().expect("kill -9");
            let code = sb.wait(&mut child, &log).await;
            assert_eq!(code, None, "killed by a signal\n{}", sb.logs(&log));
        }
        let rows = count(&pool, "orders").await;
        println!(
            "{name}: {} run {i} after {:.1}s at {rows} sink rows",
            if graceful { "stopped" } else { "killed" },
            started.elapsed().as_secs_f64()
        );
    }

    let started = std::time::Instant::now();
    let out = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    out.expect_code(0);
    println!(
        "{name}: the last run took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_exactly_once(&pool, "orders", "id", n).await;

    // The last run finished what the killed ones left, and says so.
    // (Newest first: the last run, then the interrupted ones from the latest.)
    let runs = sb.runs().await;
    assert_eq!(runs.len(), interrupted + 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");
    if let Some(i) = stopped {
        assert_eq!(
            runs[interrupted - i]["status"],
            "cancelled",
            "the SIGTERM run: {runs:?}"
        );
    }
    let show = sb.run_show(runs[0]["id"].as_str().unwrap()).await;
    let db = node(&show, "db");
    assert!(db["records_out"].as_i64().unwrap() < n, "{show:#}");

    // And once more from the start: everything is a duplicate, nothing is written twice.
    let again = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    again.expect_code(0);
    assert_exactly_once(&pool, "orders", "id", n).await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_points_loses_and_duplicates_nothing_embedded() {
    kill_at_several_points_then_finish("e2e_kill_embedded", "buffer: embedded", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_points_loses_and_duplicates_nothing_kafka() {
    kill_at_several_points_then_finish(
        "e2e_kill_kafka",
        r#"buffer:
  kafka:
    brokers: ["${KAFKA}"]
    topic_prefix: ${PREFIX}
    partitions: 2"#,
        true,
    )
    .await;
}
