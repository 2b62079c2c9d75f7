//! Incremental sources survive a watermark value gone wrong upstream: a record stamped
//! `2999-01-01` or `not a date` is delivered, reported as `contract_changed` (shown by the
//! run and recorded as an attempt), and left out of the watermark, so the next run still
//! reads what changed since. Before, the watermark froze at such a value for good.

mod e2e_common;

use e2e_common::Sandbox;
use serde_json::Value;
use sluice_testkit::mock_api::{MockApi, MockConfig};
use sqlx::Connection;

async fn sqlite(path: &std::path::Path) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    sqlx::SqliteConnection::connect(&url)
        .await
        .expect("the SQLite file opens")
}

async fn scalar(path: &std::path::Path, sql: &str) -> Value {
    let mut conn = sqlite(path).await;
    let v: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    v.map(Value::String).unwrap_or(Value::Null)
}

/// The attempts of the newest run recorded with `contract_changed`, by node.
async fn contract_attempts(sb: &Sandbox) -> Vec<String> {
    let runs = sb.runs().await;
    let id = runs[0]["id"].as_str().expect("a run id").to_owned();
    let show = sb.run_show(&id).await;
    show["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|a| a["class"] == "contract_changed")
        .map(|a| format!("{}: {}", a["node"], a["detail"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_watermark_in_the_future_or_not_a_date_does_not_freeze_the_source() {
    let mock = MockApi::start(MockConfig {
        records: 300,
        updated_at_overrides: [
            (150, "2999-01-01T00:00:00Z".to_owned()),
            (200, "not a date".to_owned()),
        ]
        .into_iter()
        .collect(),
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new("wm_http").await;
    sb.set("MOCK", mock.base_url());
    let file = sb.write(
        "p.yaml",
        r#"
pipeline: wm_http
nodes:
  api:
    type: http
    url: ${MOCK}/offset/items
    pagination:
      offset_limit: { limit: 100 }
    stop:
      total: $.meta.total
    records: { path: $.data.items }
    nested: json_text
    incremental: { field: updated_at, param: updated_since }
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: orders
    mode: upsert
    key: [id]
"#,
    );
    let file = file.to_str().unwrap().to_owned();
    let db = sb.path("out.db");

    let first = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    first.expect_code(0);
    assert!(
        first.stderr.contains("2999-01-01T00:00:00Z") && first.stderr.contains("not a date"),
        "the run shows the values it left out of the watermark: {first}"
    );
    let attempts = contract_attempts(&sb).await;
    assert!(
        attempts.iter().any(|a| a.contains("2999-01-01"))
            && attempts.iter().any(|a| a.contains("not a date")),
        "recorded as contract_changed attempts: {attempts:?}"
    );
    assert_eq!(
        scalar(&db, "SELECT CAST(count(*) AS TEXT) FROM orders").await,
        "300",
        "every record delivered, the odd ones too"
    );
    assert_eq!(
        scalar(&db, "SELECT updated_at FROM orders WHERE id = 150").await,
        "2999-01-01T00:00:00Z"
    );

    // A change upstream: the next run must see it.
    mock.touch(&[10]);
    let touched = mock.record(10).unwrap()["updated_at"].clone();
    let second = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    second.expect_code(0);
    assert_eq!(
        scalar(&db, "SELECT updated_at FROM orders WHERE id = 10").await,
        touched,
        "the second run read the record changed since the first: {second}"
    );
    assert_eq!(
        scalar(&db, "SELECT CAST(count(*) AS TEXT) FROM orders").await,
        "300"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_watermark_in_the_future_or_not_a_date_does_not_freeze_the_source() {
    let sb = Sandbox::new("wm_sql").await;
    let src = sb.path("src.db");
    {
        let mut conn = sqlite(&src).await;
        sqlx::query("CREATE TABLE src (id INTEGER PRIMARY KEY, updated_at TEXT NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        for (id, at) in [
            (1, "2024-01-01T00:00:00Z"),
            (2, "2024-01-02T00:00:00Z"),
            (3, "2999-01-01T00:00:00Z"),
            (4, "not a date"),
        ] {
            sqlx::query("INSERT INTO src VALUES (?, ?)")
                .bind(id)
                .bind(at)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    let file = sb.write(
        "p.yaml",
        r#"
pipeline: wm_sql
nodes:
  src:
    type: sqlite
    url: sqlite://src.db
    query: SELECT id, updated_at FROM src WHERE updated_at > :watermark ORDER BY updated_at
    watermark: { column: updated_at, initial: "1970-01-01T00:00:00Z" }
  db:
    type: sqlite
    inputs: [src]
    url: sqlite://out.db
    table: copy
    mode: upsert
    key: [id]
"#,
    );
    let file = file.to_str().unwrap().to_owned();
    let db = sb.path("out.db");

    let first = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    first.expect_code(0);
    assert!(
        first.stderr.contains("2999-01-01T00:00:00Z") && first.stderr.contains("not a date"),
        "the run shows the values it left out of the watermark: {first}"
    );
    let attempts = contract_attempts(&sb).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(
        scalar(
            &db,
            "SELECT group_concat(id) FROM (SELECT id FROM copy ORDER BY id)"
        )
        .await,
        "1,2,3,4"
    );

    {
        let mut conn = sqlite(&src).await;
        sqlx::query("INSERT INTO src VALUES (5, '2024-02-01T00:00:00Z')")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let second = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    second.expect_code(0);
    assert_eq!(
        scalar(
            &db,
            "SELECT group_concat(id) FROM (SELECT id FROM copy ORDER BY id)"
        )
        .await,
        "1,2,3,4,5",
        "the second run read the row added since the first: {second}"
    );
}
