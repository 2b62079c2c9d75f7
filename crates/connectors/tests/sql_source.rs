//! The SQL source against the real PostgreSQL, MariaDB and SQLite: batches of the asked
//! size, a watermark checkpoint that resumes where it stopped, types that survive a trip
//! through a sink and back, and classified errors.

mod sql_common;

use arrow::datatypes::DataType;
use sluice_connectors::sql::{SqlSourceConfig, WatermarkConfig, build_sink, build_source};
use sluice_core::{ErrorClass, Source};
use sluice_testkit::batches::page_batch;
use sql_common::{Target, records};

async fn read_all(source: &mut Box<dyn Source>) -> (Vec<sluice_core::SourceBatch>, usize) {
    let mut out = Vec::new();
    let mut rows = 0;
    while let Some(b) = source.next_batch().await.unwrap() {
        rows += b.batch.num_rows();
        out.push(b);
    }
    (out, rows)
}

fn incremental(t: &Target, table: &str) -> SqlSourceConfig {
    let mut c = SqlSourceConfig::new(
        t.url.clone(),
        format!(
            "SELECT {id}, {name}, {amount}, {at}, {doc} FROM {table} WHERE {at} > :watermark ORDER BY {at}",
            id = t.q("id"),
            name = t.q("name"),
            amount = t.q("amount"),
            at = t.q("at"),
            doc = t.q("doc"),
            table = t.q(table)
        ),
    );
    c.watermark = Some(WatermarkConfig {
        column: "at".into(),
        initial: serde_json::json!("1970-01-01T00:00:00Z"),
        future_tolerance: std::time::Duration::from_secs(3600),
    });
    c.batch_rows = 300;
    c
}

async fn source_suite(t: Target) {
    let mut sink = build_sink(t.config("src")).await.unwrap();
    sink.write(&page_batch(1, records(0, 1_000))).await.unwrap();

    // Batches of the asked size, in watermark order, with a checkpoint each.
    let mut source = build_source(incremental(&t, "src"), "p", "src", None)
        .await
        .unwrap();
    let (batches, rows) = read_all(&mut source).await;
    assert_eq!(rows, 1_000, "{}", t.name);
    let sizes: Vec<usize> = batches.iter().map(|b| b.batch.num_rows()).collect();
    assert_eq!(sizes, vec![300, 300, 300, 100], "{}", t.name);
    let last = batches.last().unwrap().checkpoint.clone().unwrap();
    let watermark = last["watermark"].as_str().unwrap().to_owned();
    assert!(
        watermark.starts_with("2023-11-14T22:29:59.000999"),
        "{}: {watermark}",
        t.name
    );
    let schema = batches[0].batch.records.schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Int64, "{}", t.name);
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8, "{}", t.name);
    // The same rows read again are the same batches (deterministic ids).
    let mut again = build_source(incremental(&t, "src"), "p", "src", None)
        .await
        .unwrap();
    let (batches2, _) = read_all(&mut again).await;
    assert_eq!(batches2[2].batch.id, batches[2].batch.id, "{}", t.name);

    // Resumed from the checkpoint: nothing new, then only the new rows.
    let mut resumed = build_source(incremental(&t, "src"), "p", "src", Some(last.clone()))
        .await
        .unwrap();
    assert!(resumed.next_batch().await.unwrap().is_none(), "{}", t.name);
    sink.write(&page_batch(2, records(1_000, 50)))
        .await
        .unwrap();
    let mut resumed = build_source(incremental(&t, "src"), "p", "src", Some(last))
        .await
        .unwrap();
    let (_, rows) = read_all(&mut resumed).await;
    assert_eq!(rows, 50, "{}", t.name);

    // Through a sink and back: every row, exact decimals, JSON kept as JSON.
    let mut whole = SqlSourceConfig::new(t.url.clone(), format!("SELECT * FROM {}", t.q("src")));
    whole.batch_rows = 256;
    let mut source = build_source(whole, "p", "copy", None).await.unwrap();
    let mut copy = build_sink(t.config("copied")).await.unwrap();
    while let Some(b) = source.next_batch().await.unwrap() {
        assert!(b.checkpoint.is_none());
        let r = copy.write(&b.batch).await.unwrap();
        assert_eq!(r.written, b.batch.num_rows());
    }
    assert_eq!(t.count("copied").await, 1_050, "{}", t.name);
    let amount = t
        .strings(&format!(
            "SELECT CAST({} AS {}) FROM {} WHERE {} = 7",
            t.q("amount"),
            t.text_type(),
            t.q("copied"),
            t.q("id")
        ))
        .await;
    assert_eq!(amount, vec![Some("7.02".to_owned())], "{}", t.name);

    // A query on a table that is not there: a classified error naming the server.
    let bad = SqlSourceConfig::new(t.url.clone(), "SELECT * FROM no_such_table");
    let mut source = build_source(bad, "p", "bad", None).await.unwrap();
    let e = source.next_batch().await.unwrap_err();
    assert!(
        matches!(e.class, ErrorClass::ContractChanged | ErrorClass::Internal),
        "{}: {e}",
        t.name
    );
    assert!(e.message.contains("no_such_table"), "{e}");
}

#[tokio::test]
async fn postgres_source_reads_incrementally() {
    source_suite(sql_common::postgres().await).await;
}

#[tokio::test]
async fn mariadb_source_reads_incrementally() {
    source_suite(sql_common::mariadb().await).await;
}

#[tokio::test]
async fn sqlite_source_reads_incrementally() {
    source_suite(sql_common::sqlite().await).await;
}

/// A file another program made, in SQLite's default rollback journal, and read-only to
/// us: the source reads it as it is (it must not try to switch it to WAL).
#[tokio::test]
async fn a_sqlite_file_in_rollback_journal_mode_is_read_as_it_is() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("made-elsewhere.db");
    let url = format!("sqlite://{}", path.display());
    {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let mut conn = sqlx::SqliteConnection::connect_with(
            &options
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete),
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).unwrap();
    let config = SqlSourceConfig::new(url, "SELECT id, name FROM t ORDER BY id");
    let mut source = build_source(config, "p", "n", None).await.unwrap();
    let batch = source.next_batch().await.unwrap().expect("a batch");
    assert_eq!(batch.batch.num_rows(), 2);
    assert!(!dir.path().join("made-elsewhere.db-wal").exists());
}

#[tokio::test]
async fn a_query_with_a_watermark_but_no_setting_is_refused_before_any_io() {
    let c = SqlSourceConfig::new(
        "postgres://u:secret@127.0.0.1:1/db",
        "SELECT 1 WHERE 1 > :watermark",
    );
    let e = build_source(c, "p", "n", None).await.err().unwrap();
    assert_eq!(e.class, ErrorClass::InvalidRequest);
    assert!(e.message.contains("`watermark` is not set"), "{e}");
    assert!(!e.message.contains("secret"));
}
