//! Health-gated flow through the `sluice` binary: the sink's PostgreSQL (a private server
//! this test owns, never the shared one) stops for ~20 s in the middle of a run with the
//! embedded buffer (`when_link_down: pause`, the default). A `link_down` alert reaches the
//! webhook; the source sends no request to the API while it is paused (the mock's
//! request log, against the pause recorded in the run); once the database is back the
//! run goes on by itself, a `link_recovered` alert says how long it was down, and every
//! record is in the table exactly once.

mod e2e_common;

use e2e_common::{
    Sandbox, alerts_of, assert_exactly_once, assert_no_request_between, hook, the_pause_of,
};
use sluice_testkit::PrivatePostgres;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig};
use std::time::Duration;
use tokio::time::Instant;

const RECORDS: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_database_down_pauses_the_source_and_the_run_resumes_by_itself() {
    let pg = PrivatePostgres::start();
    let mut sb = Sandbox::new("e2e_gate").await;
    let mock = MockApi::start(MockConfig {
        records: RECORDS as u64,
        page_size: 50,
        faults: vec![Fault::new(3, 0, FaultKind::Slow { delay_ms: 300 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let (url, seen) = hook().await;
    sb.set("MOCK", mock.base_url());
    sb.set("DB", pg.url());
    sb.set("HOOK", url);
    sb.set("SLUICE_LINK_PROBE_INTERVAL", "1s");
    let file = sb.write(
        "gate.yaml",
        r#"
pipeline: e2e_gate
alerts:
  channels:
    hook: { webhook: { url: "${HOOK}", timeout: 2s } }
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
    url: ${DB}
    table: gate_orders
    mode: append
    timeouts: { connect: 1s, request: 5s }
"#,
    );
    let mut child = sb.spawn("run", &["run", file.to_str().unwrap(), "--once", "--plain"]);
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while e2e_common::count(&pool, "gate_orders").await == 0 {
        assert!(child.try_wait().unwrap().is_none(), "{}", sb.logs("run"));
        assert!(
            Instant::now() < deadline,
            "nothing written\n{}",
            sb.logs("run")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.close().await;

    // The outage.
    pg.stop();
    let deadline = Instant::now() + Duration::from_secs(60);
    while alerts_of(&seen, "link_down").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no link_down alert\n{}",
            sb.logs("run")
        );
        assert!(child.try_wait().unwrap().is_none(), "{}", sb.logs("run"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run waits for the database, it does not end\n{}",
        sb.logs("run")
    );
    pg.start_again();

    let code = sb.wait(&mut child, "run").await;
    assert_eq!(code, Some(0), "{}", sb.logs("run"));
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    assert_exactly_once(&pool, "gate_orders", "id", RECORDS).await;
    let checksum: i64 = sqlx::query_scalar("SELECT sum(id)::bigint FROM gate_orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    let ids: Vec<i64> = (1..=RECORDS).collect();
    assert_eq!(
        checksum,
        ids.iter().sum::<i64>(),
        "the ids are 1..={RECORDS}"
    );
    pool.close().await;
    assert!(
        sb.failed("e2e_gate").await.is_empty(),
        "nothing quarantined"
    );

    // One link_down alert, then a recovery with the downtime.
    let down = alerts_of(&seen, "link_down");
    assert_eq!(down.len(), 1, "{down:#?}");
    assert_eq!(down[0]["node"], "db");
    assert!(
        down[0]["message"].as_str().unwrap().contains("database"),
        "{down:#?}"
    );
    let up = alerts_of(&seen, "link_recovered");
    assert_eq!(up.len(), 1, "{:#?}", seen.lock().unwrap());
    let text = up[0]["message"].as_str().unwrap();
    assert!(text.contains("up again after"), "{text}");
    assert!(alerts_of(&seen, "run_failed").is_empty());

    // The pause is in the run record, at the source, with its cause and length.
    let (paused, from, to, show) = the_pause_of(&sb, "api").await;
    assert!(paused.contains("`db`"), "{show:#}");
    assert!(to > from);
    // No request to the API while paused.
    assert_no_request_between(&mock, from, to);
    mock.shutdown().await;
}
