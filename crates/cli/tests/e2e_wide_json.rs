//! End to end through the `sluice` binary: JSON an API sends that `schema: infer` must
//! take whole. 20-digit ids, decimals longer than `float64`, numbers beyond any type,
//! arrays of mixed items and fields that are an object in one record and a string in
//! another land in PostgreSQL, MariaDB and SQLite with their exact values, as `numeric`
//! and `jsonb` (PostgreSQL), `BIGINT UNSIGNED`, `DECIMAL` and `JSON` (MariaDB), exact text
//! (SQLite, which quarantines ids beyond its 64-bit INTEGER with the reason).

mod e2e_common;

use e2e_common::Sandbox;
use sluice_testkit::mock_api::{MockApi, MockConfig};
use sqlx::{AssertSqlSafe, Row};

const PAGE_1: &str = r#"[
  {"id": 1, "big_id": 12345678901234567890, "amount": 1234567890123456789012.345,
   "tags": [1, 2, {"d": "x"}], "meta": {"a": 1}, "huge": 123456789012345678901234567890123456789012},
  {"id": 2, "big_id": 7, "amount": 0.5, "tags": [], "meta": "plain", "huge": 1}
]"#;
const PAGE_2: &str = r#"[
  {"id": 3, "big_id": 18446744073709551615, "amount": -7.25, "tags": ["z"], "meta": {"b": [true]}, "huge": 2}
]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_numbers_and_mixed_shapes_land_exactly_in_every_database() {
    let mock = MockApi::start(MockConfig {
        pages: vec![PAGE_1.to_owned(), PAGE_2.to_owned()],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let my = sluice_testkit::mysql_database("e2e_wide").await;
    let mut sb = Sandbox::new("e2e_wide").await;
    sb.set("MOCK", mock.base_url());
    sb.set("MY_URL", my.url.clone());
    let lite = format!("sqlite://{}", sb.path("wide.db").display());
    sb.set("LITE_URL", lite.clone());
    let file = sb.write(
        "wide.yaml",
        r#"
pipeline: e2e_wide
nodes:
  api:
    type: http
    url: ${MOCK}/fixed/items
    pagination:
      page_number: { param: page }
    records: root
  pg:
    type: postgres
    inputs: [api]
    url: ${PG_URL}
    table: wide
  my:
    type: mysql
    inputs: [api]
    url: ${MY_URL}
    table: wide
  lite:
    type: sqlite
    inputs: [api]
    url: ${LITE_URL}
    table: wide
"#,
    );
    let out = sb
        .sluice(&["run", file.to_str().unwrap(), "--once", "--plain"])
        .await;

    // PostgreSQL: numeric and jsonb columns, exact values.
    let pool = sb.pool().await;
    let types: Vec<(String, String)> = sqlx::query(AssertSqlSafe(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = 'wide' ORDER BY column_name"
            .to_owned(),
    ))
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let pg_type = |c: &str| {
        types
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no column {c}: {types:?}\n{out}"))
    };
    assert_eq!(pg_type("big_id"), "numeric");
    assert_eq!(pg_type("amount"), "numeric");
    assert_eq!(pg_type("tags"), "jsonb");
    assert_eq!(pg_type("meta"), "jsonb");
    assert_eq!(pg_type("huge"), "text");
    let rows: Vec<(i64, String, String, String, String, String)> = sqlx::query(AssertSqlSafe(
        "SELECT id, big_id::text, amount::text, tags::text, meta::text, huge FROM wide ORDER BY id"
            .to_owned(),
    ))
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect();
    let expected = [
        (
            1,
            "12345678901234567890",
            "1234567890123456789012.345",
            r#"[1, 2, {"d": "x"}]"#,
            r#"{"a": 1}"#,
            "123456789012345678901234567890123456789012",
        ),
        (2, "7", "0.500", "[]", r#""plain""#, "1"),
        (
            3,
            "18446744073709551615",
            "-7.250",
            r#"["z"]"#,
            r#"{"b": [true]}"#,
            "2",
        ),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(i, a, b, c, d, e)| {
            (
                *i,
                a.to_string(),
                b.to_string(),
                c.to_string(),
                d.to_string(),
                e.to_string(),
            )
        })
        .collect();
    assert_eq!(rows, expected, "{out}");

    // MariaDB: BIGINT UNSIGNED, DECIMAL(25,3), JSON (a LONGTEXT that checks JSON there).
    let my_pool = sqlx::MySqlPool::connect(&my.url).await.unwrap();
    let my_types: Vec<(String, String)> = sqlx::query(AssertSqlSafe(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'wide' ORDER BY COLUMN_NAME"
            .to_owned(),
    ))
    .fetch_all(&my_pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let my_type = |c: &str| {
        my_types
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, t)| t.to_lowercase())
            .unwrap_or_else(|| panic!("no column {c}: {my_types:?}\n{out}"))
    };
    assert_eq!(my_type("big_id"), "bigint(20) unsigned");
    assert_eq!(my_type("amount"), "decimal(25,3)");
    assert_eq!(my_type("huge"), "longtext");
    let my_rows: Vec<(String, String, String)> = sqlx::query(AssertSqlSafe(
        "SELECT CAST(big_id AS CHAR), CAST(amount AS CHAR), CAST(meta AS CHAR) FROM wide ORDER BY id"
            .to_owned(),
    ))
    .fetch_all(&my_pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    assert_eq!(
        my_rows,
        vec![
            (
                "12345678901234567890".to_owned(),
                "1234567890123456789012.345".to_owned(),
                r#"{"a":1}"#.to_owned()
            ),
            ("7".to_owned(), "0.500".to_owned(), r#""plain""#.to_owned()),
            (
                "18446744073709551615".to_owned(),
                "-7.250".to_owned(),
                r#"{"b":[true]}"#.to_owned()
            ),
        ],
        "{out}"
    );
    let valid: i64 = sqlx::query(AssertSqlSafe(
        "SELECT COUNT(*) FROM wide WHERE JSON_VALID(tags) AND JSON_VALID(meta)".to_owned(),
    ))
    .fetch_one(&my_pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(valid, 3);

    // SQLite: decimals and JSON as exact text; the ids beyond its INTEGER are quarantined
    // with the reason, the others land.
    let lite_pool = sqlx::SqlitePool::connect(&lite).await.unwrap();
    let lite_rows: Vec<(i64, String, String, String)> = sqlx::query(AssertSqlSafe(
        "SELECT id, amount, tags, huge FROM wide ORDER BY id".to_owned(),
    ))
    .fetch_all(&lite_pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect();
    assert_eq!(
        lite_rows,
        vec![(2, "0.500".to_owned(), "[]".to_owned(), "1".to_owned())],
        "{out}"
    );
    let failed = sb.failed("e2e_wide").await;
    let text = serde_json::to_string(&failed).unwrap();
    assert!(
        text.contains("does not fit SQLite's 64-bit INTEGER"),
        "{text}\n{out}"
    );
    mock.shutdown().await;
}
