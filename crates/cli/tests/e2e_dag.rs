//! The DAG executor end to end, through the `sluice` binary, against PostgreSQL, Kafka and
//! the flaky mock API: a fan-out and a join deliver every record once; a failed node
//! compensates the completed ones in reverse order and skips what comes after it;
//! malformed records are quarantined and delivered by `sluice replay` once the API serves
//! them well.

mod e2e_common;

use e2e_common::{Sandbox, assert_exactly_once, check_table, node};
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig};

/// Two sources on two routes of the flaky mock (503s and a reset connection on the way),
/// each tagged by a transform of its own; a transform joins both branches into one table,
/// and a second sink reads the first source directly (a fan-out: one topic, two groups).
///
/// ```text
/// orders_a ──┬──> tag_a ──┐
///            │            ├──> combine ──> combined_orders (append)
/// orders_b ──┼──> tag_b ──┘
///            └──────────────────────────> raw_orders (append)
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_and_a_join_over_kafka_deliver_every_record_once() {
    const RECORDS: u64 = 600;
    let mock = MockApi::start(MockConfig {
        records: RECORDS,
        faults: vec![
            Fault::new(3, 2, FaultKind::ServerError { status: 503 }),
            Fault::new(9, 1, FaultKind::Reset),
        ],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new("e2e_dag").await.with_kafka();
    sb.set("MOCK", mock.base_url());
    let file = sb.write(
        "dag.yaml",
        r#"
pipeline: e2e_dag
buffer:
  kafka:
    brokers: ["${KAFKA}"]
    topic_prefix: ${PREFIX}
    partitions: 2
defaults:
  retry: { max_attempts: 6, initial_backoff: 20ms, max_backoff: 200ms }
  # Pages of 50 and 30 records are cut into batches of at most 40: parts of a page too.
  batching: { max_rows: 40 }
nodes:
  orders_a:
    type: http
    url: ${MOCK}/page/items
    pagination:
      page_number: { param: page, size_param: per_page, size: 50 }
    stop:
      has_more: $.meta.has_more
    records: { path: $.data.items }
  orders_b:
    type: http
    url: ${MOCK}/cursor/items
    query: { limit: "30" }
    pagination:
      cursor: { path: $.meta.next_cursor, param: cursor }
    records: { path: $.data.items }
  tag_a:
    type: transform
    inputs: [orders_a]
    ops:
      - add: { column: origin, value: a }
  tag_b:
    type: transform
    inputs: [orders_b]
    ops:
      - add: { column: origin, value: b }
  combine:
    type: transform
    inputs: [tag_a, tag_b]
    ops:
      - flatten: { column: customer, separator: _ }
      - drop: [items, tags]
  combined_orders:
    type: postgres
    inputs: [combine]
    url: ${PG_URL}
    table: combined_orders
    mode: append
  raw_orders:
    type: postgres
    inputs: [orders_a]
    url: ${PG_URL}
    table: raw_orders
    mode: append
"#,
    );
    let file = file.to_str().unwrap();
    let out = sb.sluice(&["run", file, "--once", "--plain"]).await;
    out.expect_code(0);

    let pool = sb.pool().await;
    let n = RECORDS as i64;
    assert_eq!(mock.len() as i64, n);
    assert_exactly_once(&pool, "raw_orders", "id", n).await;
    assert_exactly_once(&pool, "combined_orders", "id, origin", 2 * n).await;
    let per_origin: Vec<(String, i64)> = sqlx::query_as(
        "SELECT origin, count(DISTINCT id) FROM combined_orders GROUP BY origin ORDER BY origin",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_origin, [("a".to_owned(), n), ("b".to_owned(), n)]);
    // The join flattened the customer and dropped the lists.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'combined_orders'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        columns.iter().any(|c| c == "customer_email") && !columns.iter().any(|c| c == "items"),
        "{columns:?}"
    );
    // The mock's faults were met and retried, not passed on.
    assert!(
        mock.data_requests().iter().any(|r| r.status == 503),
        "the 503s were served"
    );

    let runs = sb.runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");
    assert_eq!(runs[0]["trigger"], "manual");
    let show = sb.run_show(runs[0]["id"].as_str().unwrap()).await;
    let counts = |id: &str| {
        let nd = node(&show, id);
        assert_eq!(nd["status"], "succeeded", "{id}: {nd}");
        (
            nd["records_in"].as_i64().unwrap(),
            nd["records_out"].as_i64().unwrap(),
        )
    };
    assert_eq!(counts("orders_a"), (n, n));
    assert_eq!(counts("orders_b"), (n, n));
    assert_eq!(counts("tag_a"), (n, n));
    assert_eq!(counts("tag_b"), (n, n));
    assert_eq!(counts("combine"), (2 * n, 2 * n));
    assert_eq!(counts("combined_orders"), (2 * n, 2 * n));
    assert_eq!(counts("raw_orders"), (n, n));
    let source_retries: i64 = ["orders_a", "orders_b"]
        .iter()
        .map(|id| node(&show, id)["retries"].as_i64().unwrap())
        .sum();
    // (The source's own retries are counted, but not yet listed as attempts: see the
    // report of issue #7 about `run_source` and connector events.)
    assert!(source_retries >= 3, "503, 503, reset: {show:#}");

    // A second run re-reads the API (no incremental cursor) and writes nothing twice.
    let again = sb.sluice(&["run", file, "--once", "--plain"]).await;
    again.expect_code(0);
    assert_exactly_once(&pool, "raw_orders", "id", n).await;
    assert_exactly_once(&pool, "combined_orders", "id, origin", 2 * n).await;
    mock.shutdown().await;
}

/// A chain `prepare ··> api ──> db ··> boom ··> notify` beside an independent slow
/// branch. `boom` fails: `db`, `api` and `prepare` are compensated in that order (each
/// compensation appends its name to a file), `notify` is skipped, the slow branch is
/// cancelled, nothing of `boom`, `notify` or the slow branch is compensated, and
/// `sluice run` exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_compensates_in_reverse_order_and_skips_downstream() {
    let mock = MockApi::start(MockConfig {
        records: 120,
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    // Every page of this one takes 200 ms: its branch is still running when `boom` fails.
    let slow = MockApi::start(MockConfig {
        records: 2_000,
        faults: vec![Fault::new(1, 0, FaultKind::Slow { delay_ms: 200 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new("e2e_saga").await;
    sb.set("MOCK", mock.base_url());
    sb.set("SLOW", slow.base_url());
    let log = sb.path("compensations.log");
    sb.set("LOG", log.to_str().unwrap());
    let compensate = |name: &str| {
        format!(
            r#"
    compensate:
      command: {{ program: sh, args: ["-c", "echo {name} >> \"$LOG\""], env: {{ LOG: "${{LOG}}" }} }}"#
        )
    };
    let yaml = format!(
        r#"
pipeline: e2e_saga
defaults:
  retry: {{ max_attempts: 2, initial_backoff: 10ms, max_backoff: 50ms }}
nodes:
  prepare:
    type: command
    program: sh
    args: ["-c", "echo prepare-ran >> \"$LOG\""]
    env: {{ LOG: "${{LOG}}" }}{prepare}
  api:
    type: http
    after: [prepare]
    url: ${{MOCK}}/page/items
    pagination:
      page_number: {{ param: page, size_param: per_page, size: 40 }}
    stop:
      has_more: $.meta.has_more
    records: {{ path: $.data.items }}{api}
  db:
    type: postgres
    inputs: [api]
    url: ${{PG_URL}}
    table: saga_orders
    mode: upsert
    key: [id]{db}
  boom:
    type: command
    after: [db]
    program: sh
    args: ["-c", "echo 'the report service said no' >&2; exit 7"]{boom}
  notify:
    type: command
    after: [boom]
    program: sh
    args: ["-c", "echo notify-ran >> \"$LOG\""]
    env: {{ LOG: "${{LOG}}" }}{notify}
  slow_api:
    type: http
    url: ${{SLOW}}/page/items
    pagination:
      page_number: {{ param: page, size_param: per_page, size: 10 }}
    stop:
      has_more: $.meta.has_more
    records: {{ path: $.data.items }}{slow_api}
  slow_db:
    type: postgres
    inputs: [slow_api]
    url: ${{PG_URL}}
    table: slow_orders{slow_db}
"#,
        prepare = compensate("prepare"),
        api = compensate("api"),
        db = compensate("db"),
        boom = compensate("boom"),
        notify = compensate("notify"),
        slow_api = compensate("slow_api"),
        slow_db = compensate("slow_db"),
    );
    let file = sb.write("saga.yaml", &yaml);
    let out = sb
        .sluice(&["run", file.to_str().unwrap(), "--once", "--plain"])
        .await;
    out.expect_code(1);
    let written = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(
        lines,
        ["prepare-ran", "db", "api", "prepare"],
        "compensations in reverse order, only of the nodes that completed\n{out}"
    );

    let runs = sb.runs().await;
    assert_eq!(runs[0]["status"], "failed", "{runs:?}");
    let error = runs[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("boom") && error.contains("the report service said no"),
        "the run says which node failed and why: {error}"
    );
    let show = sb.run_show(runs[0]["id"].as_str().unwrap()).await;
    let status = |id: &str| node(&show, id)["status"].as_str().unwrap().to_owned();
    assert_eq!(status("prepare"), "succeeded");
    assert_eq!(status("api"), "succeeded");
    assert_eq!(status("db"), "succeeded");
    assert_eq!(status("boom"), "failed");
    assert_eq!(node(&show, "boom")["error_class"], "internal");
    assert_eq!(status("notify"), "skipped");
    assert_eq!(status("slow_api"), "cancelled", "{show:#}");
    assert_eq!(status("slow_db"), "cancelled", "{show:#}");
    assert_eq!(node(&show, "db")["records_out"], 120);
    let attempts = show["attempts"].as_array().unwrap();
    let compensated: Vec<&str> = attempts
        .iter()
        .filter(|a| {
            a["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("compensated"))
        })
        .map(|a| a["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        compensated,
        ["db", "api", "prepare"],
        "the run record lists each compensation: {attempts:?}"
    );
    // The slow branch stopped early instead of reading its 200 pages.
    assert!(
        slow.data_requests().len() < 100,
        "{} pages read",
        slow.data_requests().len()
    );
    let pool = sb.pool().await;
    let db = check_table(&pool, "saga_orders", "id").await;
    assert_eq!((db.rows, db.distinct_keys), (120, 120));
    mock.shutdown().await;
    slow.shutdown().await;
}

/// A page with malformed records, under `bad_records: quarantine`: the good records are
/// delivered, the bad ones kept (the run partially succeeds, exit 3) and listed by
/// `sluice failed list`; once the API serves them well, `sluice replay` reads them again
/// and delivers them, and a second replay has nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_quarantined_then_replayed_once_the_api_is_fixed() {
    const RECORDS: u64 = 300;
    let malformed = vec![7, 150, 151, 299];
    let mock = MockApi::start(MockConfig {
        records: RECORDS,
        malformed_records: malformed.clone(),
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new("e2e_bad").await;
    sb.set("MOCK", mock.base_url());
    let file = sb.write(
        "bad.yaml",
        r#"
pipeline: e2e_bad
nodes:
  api:
    type: http
    url: ${MOCK}/page/items
    pagination:
      page_number: { param: page, size_param: per_page, size: 25 }
    stop:
      has_more: $.meta.has_more
    records: { path: $.data.items }
    bad_records: quarantine
  db:
    type: postgres
    inputs: [api]
    url: ${PG_URL}
    table: bad_orders
    mode: upsert
    key: [id]
"#,
    );
    let file = file.to_str().unwrap();
    let out = sb.sluice(&["run", file, "--once", "--plain"]).await;
    out.expect_code(3);
    let pool = sb.pool().await;
    let good = RECORDS as i64 - malformed.len() as i64;
    assert_exactly_once(&pool, "bad_orders", "id", good).await;
    let runs = sb.runs().await;
    assert_eq!(runs[0]["status"], "partially_succeeded", "{runs:?}");
    let show = sb.run_show(runs[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        node(&show, "api")["quarantined"].as_i64(),
        Some(malformed.len() as i64),
        "{show:#}"
    );

    let failed = sb.failed("e2e_bad").await;
    assert!(!failed.is_empty(), "{out}");
    assert!(
        failed
            .iter()
            .all(|f| f["node"] == "api" && f["class"] == "invalid_request"),
        "{failed:?}"
    );
    let kept: i64 = failed.iter().map(|f| f["rows"].as_i64().unwrap()).sum();
    assert_eq!(kept, malformed.len() as i64, "{failed:?}");
    let listed = sb
        .sluice(&["failed", "list", "--pipeline", "e2e_bad"])
        .await;
    listed.expect_code(0);
    assert!(
        listed.stdout.contains("sluice replay --pipeline e2e_bad"),
        "{listed}"
    );

    // Still malformed: the replay fails again and keeps them.
    let early = sb.sluice(&["replay", "--pipeline", "e2e_bad"]).await;
    early.expect_code(3);
    assert_eq!(sb.failed("e2e_bad").await.len(), failed.len(), "{early}");

    mock.repair();
    let replay = sb.sluice(&["replay", "--pipeline", "e2e_bad"]).await;
    replay.expect_code(0);
    assert_exactly_once(&pool, "bad_orders", "id", RECORDS as i64).await;
    assert!(sb.failed("e2e_bad").await.is_empty(), "{replay}");
    let runs = sb.runs().await;
    assert_eq!(runs[0]["trigger"], "replay", "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");

    // Idempotent: nothing left to replay, nothing written twice.
    let twice = sb.sluice(&["replay", "--pipeline", "e2e_bad"]).await;
    twice.expect_code(0);
    assert_exactly_once(&pool, "bad_orders", "id", RECORDS as i64).await;
    mock.shutdown().await;
}
