//! `sluice reconcile` through the binary: rows deleted by hand from a sink are found by
//! their key ranges and keys; a row the sink refused is found in the failed-batch store.

use serde_json::Value;
use sluice_testkit::mock_api::{MockApi, MockConfig};
use sqlx::{AssertSqlSafe, Connection, Executor};
use std::path::Path;

mod e2e_common;

use e2e_common::sluice_in as sluice;

fn reconcile(dir: &Path, env: &[(&str, &str)]) -> (Value, Option<i32>, String) {
    let (_, text) = sluice(dir, &["reconcile", "p.yaml"], env);
    let (out, json) = sluice(dir, &["reconcile", "p.yaml", "--json"], env);
    let pairs: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}):\n{json}"));
    (pairs[0].clone(), out.status.code(), text)
}

fn keys(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_rows_deleted_from_a_100k_row_sink_are_named_with_their_ranges() {
    let pg = sluice_testkit::postgres_schema("reconcile").await;
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    conn.execute(
        "CREATE TABLE src AS SELECT g::bigint AS id, 'name ' || g AS name FROM generate_series(1, 100000) g",
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("p.yaml"),
        r#"pipeline: reconcile_pg
nodes:
  src:
    type: postgres
    url: "${PG_URL}"
    query: SELECT id, name FROM src
  dst:
    type: postgres
    inputs: [src]
    url: "${PG_URL}"
    table: dst
    mode: upsert
    key: [id]
    create_table: true
"#,
    )
    .unwrap();
    let env = [("PG_URL", pg.url.as_str())];
    let (out, text) = sluice(dir, &["run", "p.yaml", "--once"], &env);
    assert!(out.status.success(), "{text}");

    let (pair, code, text) = reconcile(dir, &env);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(pair["matches"], true, "{pair:#}");
    assert_eq!(pair["source"]["count"], 100_000);
    assert!(text.contains("matching"), "{text}");

    conn.execute("DELETE FROM dst WHERE id IN (17, 50000, 99999)")
        .await
        .unwrap();
    let (pair, code, text) = reconcile(dir, &env);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(pair["sink"]["count"], 99_997, "{pair:#}");
    assert_eq!(pair["missing_total"], 3, "{pair:#}");
    assert_eq!(keys(&pair["missing"]), [17, 50000, 99999]);
    assert_eq!(pair["extra_total"], 0);
    // Each missing key is in one of the ranges that differ, and only those differ.
    let ranges = pair["differing_ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 3, "{pair:#}");
    for (k, r) in [17, 50000, 99999].iter().zip(ranges) {
        assert!(
            r["from"].as_i64().unwrap() <= *k && *k <= r["to"].as_i64().unwrap(),
            "{k} not in {r}"
        );
        assert_eq!(
            r["source"].as_i64().unwrap() - r["sink"].as_i64().unwrap(),
            1,
            "{r}"
        );
    }
    assert!(
        pair["missing"][0]["failed_batch"].is_null(),
        "deleted by hand, not kept: {pair:#}"
    );
    assert!(text.contains("17: not in the failed-batch store"), "{text}");
    assert!(
        !text.contains("sluice:sluice@"),
        "a password printed:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_the_sink_refused_is_found_in_the_failed_batch_store() {
    let mock = MockApi::start(MockConfig {
        records: 120,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The table refuses record 42 (a constraint): the sink keeps it for replay.
    let db = dir.join("out.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let mut lite = sqlx::SqliteConnection::connect(&url).await.unwrap();
    lite.execute(AssertSqlSafe(
        "CREATE TABLE items (id INTEGER CHECK (id <> 42), amount REAL, created_at TEXT,
            currency TEXT, customer TEXT, items TEXT, notes TEXT, status TEXT, tags TEXT,
            updated_at TEXT)",
    ))
    .await
    .unwrap();
    drop(lite);
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            r#"pipeline: reconcile_api
nodes:
  api:
    type: http
    url: {url}
    pagination: {{ page_number: {{ param: page, size_param: per_page, size: 50 }} }}
    records: {{ path: $.data.items }}
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: items
"#,
            url = mock.url("/page/items")
        ),
    )
    .unwrap();
    let (out, text) = sluice(dir, &["run", "p.yaml", "--once"], &[]);
    assert_eq!(out.status.code(), Some(3), "partially succeeded:\n{text}");

    let (pair, code, text) = reconcile(dir, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(pair["source"]["count"], 120, "{pair:#}");
    assert_eq!(pair["sink"]["count"], 119, "{pair:#}");
    assert_eq!(keys(&pair["missing"]), [42]);
    let kept = &pair["missing"][0]["failed_batch"];
    assert_eq!(kept["node"], "db", "{pair:#}");
    assert_eq!(kept["class"], "invalid_request", "{pair:#}");
    assert!(text.contains("42: in failed batch"), "{text}");
    mock.shutdown().await;
}

/// A sink whose key a transform renamed (`rename: { id: order_id }`, as in the quickstart)
/// is compared with the source's `id`; a key the sink's table has not is an error, not
/// every record missing (SQLite reads an unknown quoted name as a string).
#[tokio::test(flavor = "multi_thread")]
async fn a_key_renamed_by_a_transform_is_followed_back_to_the_source() {
    let mock = MockApi::start(MockConfig {
        records: 90,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            r#"pipeline: reconcile_renamed
nodes:
  api:
    type: http
    url: {url}
    pagination: {{ page_number: {{ param: page, size_param: per_page, size: 50 }} }}
    records: {{ path: $.data.items }}
  shape:
    type: transform
    inputs: [api]
    ops:
      - rename: {{ id: order_id }}
      - add: {{ column: origin, value: 7 }}
  db:
    type: sqlite
    inputs: [shape]
    url: sqlite://out.db
    table: orders
    mode: upsert
    key: [order_id]
    create_table: true
"#,
            url = mock.url("/page/items")
        ),
    )
    .unwrap();
    let (out, text) = sluice(dir, &["run", "p.yaml", "--once"], &[]);
    assert!(out.status.success(), "{text}");

    let (pair, code, text) = reconcile(dir, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(pair["matches"], true, "{pair:#}");
    assert_eq!(pair["key"], "order_id", "{pair:#}");
    assert_eq!(pair["sink"]["count"], 90, "{pair:#}");

    let url = format!("sqlite://{}", dir.join("out.db").display());
    let mut lite = sqlx::SqliteConnection::connect(&url).await.unwrap();
    lite.execute("DELETE FROM orders WHERE order_id = 33")
        .await
        .unwrap();
    drop(lite);
    let (pair, code, text) = reconcile(dir, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(keys(&pair["missing"]), [33], "{pair:#}");

    // A key the sink's table has not.
    let (out, text) = sluice(dir, &["reconcile", "p.yaml", "--key", "id"], &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no such column"), "{text}");
    assert!(!text.contains("only in the sink"), "{text}");
    // A key a transform makes cannot be followed to the source.
    let (out, text) = sluice(dir, &["reconcile", "p.yaml", "--key", "origin"], &[]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("made by a transform"), "{text}");
    mock.shutdown().await;
}
