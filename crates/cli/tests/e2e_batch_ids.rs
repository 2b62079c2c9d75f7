//! A crash between the buffer's acknowledgement of a batch and the source's checkpoint
//! makes the rerun read that page again. Its batch must keep its id, so that the sink's
//! ledger recognises it and a `mode: append` table gets no row twice, even when:
//!
//! - the API wraps every response in an envelope with a new `request_id` and `served_at`
//!   (the records are the same; the body is not), and
//! - a transform adds `now()` (its output differs from run to run; its input does not).
//!
//! The crash is `SLUICE_TEST_KILL=before_checkpoint:api:<n>:<pause>`: the process aborts
//! right after the buffer acknowledged the source's n-th batch, before its checkpoint, after
//! a pause in which the transform and the sink take that batch.

mod e2e_common;

use e2e_common::Sandbox;
use sluice_testkit::mock_api::{MockApi, MockConfig};

const RECORDS: i64 = 300;

/// (rows, distinct ids, sum of ids) of the SQLite table.
async fn table(db: &std::path::Path) -> (i64, i64, i64) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("the sink's SQLite file opens");
    sqlx::query_as("SELECT count(*), count(DISTINCT id), coalesce(sum(id), 0) FROM orders")
        .fetch_one(&mut conn)
        .await
        .expect("the sink's table is there")
}

async fn crash_then_rerun(name: &str, envelope_noise: bool, transform: &str) {
    let mock = MockApi::start(MockConfig {
        records: RECORDS as u64,
        envelope_noise,
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new(name).await;
    sb.set("MOCK", mock.base_url());
    let sink_input = if transform.is_empty() { "api" } else { "shape" };
    let file = sb.write(
        "p.yaml",
        &format!(
            r#"
pipeline: {name}
nodes:
  api:
    type: http
    url: ${{MOCK}}/page/items
    pagination:
      page_number: {{ param: page, size_param: per_page, size: 50 }}
    stop:
      has_more: $.meta.has_more
    records: {{ path: $.data.items }}
    nested: json_text
{transform}
  db:
    type: sqlite
    inputs: [{sink_input}]
    url: sqlite://out.db
    table: orders
    mode: append
"#
        ),
    );
    let file = file.to_str().unwrap().to_owned();

    sb.set("SLUICE_TEST_KILL", "before_checkpoint:api:3:1500");
    let crashed = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    assert!(
        !matches!(crashed.code, Some(0..=2)),
        "the run was to crash at the kill point: {crashed}"
    );
    let db = sb.path("out.db");
    let (rows, _, _) = table(&db).await;
    assert!(
        rows >= 150,
        "the sink was to hold the third page before the crash, it holds {rows} rows: {crashed}"
    );
    let pages_before = mock.data_requests().len();

    sb.set("SLUICE_TEST_KILL", "");
    let rerun = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    rerun.expect_code(0);
    assert!(
        mock.data_requests().len() >= pages_before + 4,
        "the rerun read the third page again and the rest"
    );
    assert_eq!(
        table(&db).await,
        (RECORDS, RECORDS, RECORDS * (RECORDS + 1) / 2),
        "every record exactly once after the rerun: {rerun}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reread_page_in_a_changing_envelope_is_not_written_twice() {
    crash_then_rerun("ids_envelope", true, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_adding_now_does_not_write_a_reread_page_twice() {
    crash_then_rerun(
        "ids_now",
        false,
        r#"  shape:
    type: transform
    inputs: [api]
    ops:
      - add: { column: loaded_at, expr: "now()" }"#,
    )
    .await;
}
