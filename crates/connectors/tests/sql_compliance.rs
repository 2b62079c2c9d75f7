//! The compliance suite every SQL sink passes, against the real PostgreSQL, MariaDB and
//! SQLite: every record delivered; a redelivered batch writes nothing twice; an oversized
//! batch is split and fully delivered; one bad row is rejected and the others delivered;
//! hostile identifiers are stored verbatim; upserts, group writes, schema evolution, replace, two
//! writers creating one table at once (workers helping a run), health.
//!
//! (The database restarted mid-load is `sql_restart.rs`: it stops the shared servers.)

mod sql_common;

use sluice_connectors::sql::{SchemaPolicy, SqlSinkConfig, WriteMode, build_sink};
use sluice_core::{ErrorClass, RunInfo, WriteReport};
use sluice_testkit::batches::page_batch;
use sql_common::{Target, names, records};
use std::time::Instant;

/// `t`'s sink config for `table` in `upsert` on `id`.
fn upsert_on_id(t: &Target, table: &str) -> SqlSinkConfig {
    let mut config = t.config(table);
    config.mode = WriteMode::Upsert;
    config.key = vec!["id".into()];
    config
}

/// The transactions that wrote `table`'s ledger rows (their distinct `xmin`s): PostgreSQL
/// only, `None` elsewhere.
async fn ledger_transactions(t: &Target, table: &str) -> Option<i64> {
    if t.name != "postgres" {
        return None;
    }
    let sql = format!(
        "SELECT COUNT(DISTINCT xmin::text) FROM {} WHERE {} LIKE '%{table}%'",
        t.q("_sluice_ledger"),
        t.q("target")
    );
    Some(t.ints(&sql).await[0])
}

/// Whether a group write wrote every batch, `rows` rows each.
fn all_written(reports: &[Option<WriteReport>], rows: usize) -> bool {
    reports
        .iter()
        .all(|r| r.as_ref().is_some_and(|r| r.written == rows))
}

async fn suite(t: Target) {
    let started = Instant::now();
    let step = |what: &str| {
        println!(
            "[{}] {:>6.2}s {what}",
            t.name,
            started.elapsed().as_secs_f64()
        )
    };
    step("every record delivered");
    every_record_is_delivered(&t).await;
    step("redelivery");
    a_redelivered_batch_writes_nothing_twice(&t).await;
    step("oversized batch");
    an_oversized_batch_is_split_and_fully_delivered(&t).await;
    step("one bad row");
    one_bad_row_is_rejected_and_the_others_delivered(&t).await;
    step("duplicate key on append");
    a_duplicate_key_on_append_is_rejected_alone(&t).await;
    step("hostile identifiers");
    hostile_identifiers_are_stored_verbatim(&t).await;
    step("upsert");
    upsert_updates_by_key(&t).await;
    step("large upserts");
    large_upserts_of_new_and_existing_keys(&t).await;
    step("upsert without a unique key");
    an_upsert_without_a_unique_index_on_the_key_writes_nothing(&t).await;
    step("group writes");
    a_group_is_written_whole_or_not_at_all(&t).await;
    step("group writes on two connections");
    a_large_group_is_written_on_two_connections(&t).await;
    step("null keys");
    rows_with_a_null_key_are_rejected_and_the_others_written(&t).await;
    step("schema evolution");
    new_columns_evolve_or_fail_by_policy(&t).await;
    step("replace");
    replace_starts_over_once_per_sink(&t).await;
    step("replace once per load");
    replace_empties_the_table_once_per_load(&t).await;
    step("two writers create one table");
    two_writers_create_one_table_at_once(&t).await;
    step("health");
    health_reports_latency_and_outages(&t).await;
    step("done");
}

#[tokio::test]
async fn postgres_sink_passes_the_compliance_suite() {
    suite(sql_common::postgres().await).await;
}

#[tokio::test]
async fn mariadb_sink_passes_the_compliance_suite() {
    suite(sql_common::mariadb().await).await;
}

#[tokio::test]
async fn sqlite_sink_passes_the_compliance_suite() {
    suite(sql_common::sqlite().await).await;
}

async fn every_record_is_delivered(t: &Target) {
    let mut sink = build_sink(t.config("delivered")).await.unwrap();
    // Sizes on both sides of PostgreSQL's COPY threshold.
    let mut total = 0;
    for (page, rows) in [500usize, 1_500, 500].into_iter().enumerate() {
        let b = page_batch(page as u64, records(total, rows));
        let r = sink.write(&b).await.unwrap();
        assert_eq!(
            (r.written, r.duplicate, r.rejected.len()),
            (rows, false, 0),
            "{}",
            t.name
        );
        total += rows as i64;
    }
    assert_eq!(
        t.ids("delivered").await,
        (0..total).collect::<Vec<i64>>(),
        "{}",
        t.name
    );
    // Values survive the trip exactly.
    let row = t
        .strings(&format!(
            "SELECT CAST({} AS {}) FROM {} WHERE {} = 7",
            t.q("amount"),
            t.text_type(),
            t.q("delivered"),
            t.q("id")
        ))
        .await;
    assert_eq!(row, vec![Some("7.02".to_owned())], "{}", t.name);
    let name = t
        .strings(&format!(
            "SELECT {} FROM {} WHERE {} = 1499",
            t.q("name"),
            t.q("delivered"),
            t.q("id")
        ))
        .await;
    assert_eq!(name, vec![Some("name 1499 ✓".to_owned())], "{}", t.name);
    // One ledger row per batch.
    let ledger = t.count("_sluice_ledger").await;
    assert!(ledger >= 3, "{}: {ledger} ledger rows", t.name);
}

async fn a_redelivered_batch_writes_nothing_twice(t: &Target) {
    let mut sink = build_sink(t.config("redelivered")).await.unwrap();
    let b = page_batch(1, records(0, 300));
    assert_eq!(sink.write(&b).await.unwrap().written, 300);
    let again = sink.write(&b).await.unwrap();
    assert!(
        again.duplicate && again.written == 0,
        "{}: {again:?}",
        t.name
    );
    // A new sink (a restarted worker) and a part of the batch: still nothing twice.
    let mut fresh = build_sink(t.config("redelivered")).await.unwrap();
    assert!(fresh.write(&b).await.unwrap().duplicate, "{}", t.name);
    let (_, right) = b.split().unwrap();
    assert!(fresh.write(&right).await.unwrap().duplicate, "{}", t.name);
    // The same page with changed content is a new batch, and is written.
    let changed = page_batch(1, records(300, 10));
    assert_eq!(fresh.write(&changed).await.unwrap().written, 10);
    assert_eq!(t.count("redelivered").await, 310, "{}", t.name);
}

async fn an_oversized_batch_is_split_and_fully_delivered(t: &Target) {
    // Small statements (INSERTs everywhere), then larger ones cut by bytes (COPY commands
    // on PostgreSQL, INSERTs elsewhere).
    for (rows, max_rows, max_bytes) in [(500, 7, 2_000), (5_000, 1_000, 100_000)] {
        for mode in [WriteMode::Append, WriteMode::Upsert] {
            let table = format!("oversized_{mode:?}_{max_rows}").to_lowercase();
            let mut config = t.config(&table);
            config.mode = mode;
            config.key = vec!["id".into()];
            config.max_rows_per_statement = Some(max_rows);
            config.max_statement_bytes = Some(max_bytes);
            let mut sink = build_sink(config).await.unwrap();
            let b = page_batch(1, records(0, rows));
            let r = sink.write(&b).await.unwrap();
            let what = format!("{} {mode:?} {rows} rows by {max_rows}", t.name);
            assert_eq!((r.written, r.rejected.len()), (rows, 0), "{what}");
            let want: Vec<i64> = (0..rows as i64).collect();
            assert_eq!(t.ids(&table).await, want, "{what}");
            assert!(sink.write(&b).await.unwrap().duplicate, "{what}");
        }
    }
    // A row larger than a statement may hold is rejected as payload_too_large, alone.
    let mut config = t.config("oversized_row");
    config.max_statement_bytes = Some(300);
    let mut sink = build_sink(config).await.unwrap();
    let big = "x".repeat(1_000);
    let b = page_batch(1, names(&[1, 2, 3], &[Some("a"), Some(&big), Some("c")]));
    let r = sink.write(&b).await.unwrap();
    assert_eq!(r.written, 2, "{}", t.name);
    assert_eq!(r.rejected.len(), 1, "{}", t.name);
    assert_eq!(r.rejected[0].error.class, ErrorClass::PayloadTooLarge);
    assert_eq!(r.rejected[0].rows.part.as_ref().unwrap().first_row, 1);
    assert_eq!(t.ids("oversized_row").await, vec![1, 3]);
}

async fn one_bad_row_is_rejected_and_the_others_delivered(t: &Target) {
    t.exec(&format!(
        "CREATE TABLE {} ({} BIGINT NOT NULL, {} VARCHAR(200) NOT NULL)",
        t.q("strict"),
        t.q("id"),
        t.q("name")
    ))
    .await;
    let mut sink = build_sink(t.config("strict")).await.unwrap();
    // Large enough for PostgreSQL's COPY path (through staging: the column is a varchar);
    // the smaller bisected parts use INSERTs.
    let ids: Vec<i64> = (0..1_200).collect();
    let long = "ok ".repeat(40);
    let mut values: Vec<Option<&str>> = vec![Some(&long); 1_200];
    values[137] = None;
    let b = page_batch(1, names(&ids, &values));
    let r = sink.write(&b).await.unwrap();
    assert_eq!(r.written, 1_199, "{}", t.name);
    assert_eq!(r.rejected.len(), 1, "{}", t.name);
    let rejected = &r.rejected[0];
    assert_eq!(rejected.rows.num_rows(), 1);
    assert_eq!(rejected.rows.part.as_ref().unwrap().first_row, 137);
    assert_eq!(
        rejected.error.class,
        ErrorClass::InvalidRequest,
        "{}",
        rejected.error
    );
    assert!(
        !rejected.error.message.contains("sluice:sluice"),
        "no password in {}",
        rejected.error
    );
    let mut want = ids.clone();
    want.remove(137);
    assert_eq!(t.ids("strict").await, want, "{}", t.name);
    // Delivered again: the good rows stay written once, the bad row is refused again.
    let again = sink.write(&b).await.unwrap();
    assert_eq!((again.written, again.rejected.len()), (0, 1), "{}", t.name);
    assert_eq!(t.count("strict").await, 1_199);
}

async fn a_duplicate_key_on_append_is_rejected_alone(t: &Target) {
    let mut config = t.config("keyed");
    config.key = vec!["id".into()];
    let mut sink = build_sink(config).await.unwrap();
    sink.write(&page_batch(1, names(&[5], &[Some("first")])))
        .await
        .unwrap();
    let r = sink
        .write(&page_batch(
            2,
            names(
                &[1, 2, 5, 8],
                &[Some("a"), Some("b"), Some("again"), Some("d")],
            ),
        ))
        .await
        .unwrap();
    assert_eq!(r.written, 3, "{}", t.name);
    assert_eq!(r.rejected.len(), 1, "{}", t.name);
    assert_eq!(r.rejected[0].rows.part.as_ref().unwrap().first_row, 2);
    assert_eq!(t.ids("keyed").await, vec![1, 2, 5, 8]);
}

async fn hostile_identifiers_are_stored_verbatim(t: &Target) {
    let hostile = [
        "a\"; DROP TABLE x; --",
        "b`c`; DROP TABLE y; #",
        "first name",
        "名前",
        "Ωmega 'quoted'",
    ];
    let mut fields: Vec<(&str, arrow::array::ArrayRef)> = vec![(
        "id",
        std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2])),
    )];
    for h in hostile {
        fields.push((
            h,
            std::sync::Arc::new(arrow::array::StringArray::from(vec![h, "v"])),
        ));
    }
    let records = arrow::array::RecordBatch::try_from_iter(fields).unwrap();
    let table = "weird \"table\" name";
    let mut sink = build_sink(t.config(table)).await.unwrap();
    let r = sink.write(&page_batch(1, records)).await.unwrap();
    assert_eq!(r.written, 2, "{}", t.name);
    let mut want = vec!["id".to_owned()];
    want.extend(hostile.iter().map(|h| h.to_string()));
    assert_eq!(t.columns(table).await, want, "{}", t.name);
    let stored = t
        .strings(&format!(
            "SELECT {} FROM {} WHERE {} = 1",
            t.q(hostile[0]),
            t.q(table),
            t.q("id")
        ))
        .await;
    assert_eq!(stored, vec![Some(hostile[0].to_owned())]);
}

async fn upsert_updates_by_key(t: &Target) {
    let mut sink = build_sink(upsert_on_id(t, "upserted")).await.unwrap();
    sink.write(&page_batch(
        1,
        names(&[1, 2, 3], &[Some("a"), Some("b"), Some("c")]),
    ))
    .await
    .unwrap();
    // Key 2 twice in one batch: the last row wins.
    let r = sink
        .write(&page_batch(
            2,
            names(&[2, 4, 2], &[Some("b1"), Some("d"), Some("b2")]),
        ))
        .await
        .unwrap();
    assert_eq!(r.written, 2, "{}", t.name);
    let got = t
        .strings(&format!(
            "SELECT {} FROM {} ORDER BY {}",
            t.q("name"),
            t.q("upserted"),
            t.q("id")
        ))
        .await;
    let want: Vec<Option<String>> = ["a", "b2", "c", "d"]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect();
    assert_eq!(got, want, "{}", t.name);
}

/// `rows` rows of keys `start..`, named `"{version} {id}"` and padded, so that a batch is
/// large enough for PostgreSQL's `COPY`.
fn versioned(version: &str, start: i64, rows: i64) -> sluice_core::Batch {
    let ids: Vec<i64> = (start..start + rows).collect();
    let texts: Vec<String> = ids.iter().map(|i| format!("{version} {i:<40}")).collect();
    let texts: Vec<Option<&str>> = texts.iter().map(|n| Some(n.as_str())).collect();
    page_batch(start as u64 * 7 + version.len() as u64, names(&ids, &texts))
}

/// Upserts large enough for `COPY` (on PostgreSQL, tried straight into the table while
/// their keys are new): all-new keys, half existing, all new again, all existing — each
/// row there once, with its last version.
async fn large_upserts_of_new_and_existing_keys(t: &Target) {
    let mut sink = build_sink(upsert_on_id(t, "bulk")).await.unwrap();
    let mut want = std::collections::BTreeMap::new();
    for (version, start, rows) in [
        ("first", 0, 3_000),
        ("second", 1_500, 3_000),
        ("third", 4_500, 3_000),
        ("fourth", 0, 3_000),
        ("fifth", 7_000, 3_000),
    ] {
        let r = sink.write(&versioned(version, start, rows)).await.unwrap();
        assert_eq!(r.written, rows as usize, "{}: {version}", t.name);
        for id in start..start + rows {
            want.insert(id, format!("{version} {id:<40}"));
        }
    }
    let got = t
        .strings(&format!(
            "SELECT {} FROM {} ORDER BY {}",
            t.q("name"),
            t.q("bulk"),
            t.q("id")
        ))
        .await;
    assert_eq!(got.len(), want.len(), "{}: one row per key", t.name);
    let want: Vec<Option<String>> = want.into_values().map(Some).collect();
    assert!(got == want, "{}: every key has its last version", t.name);
    // Each batch written whole, in one piece: none of them was cut up to find a bad row.
    let pieces = t
        .ints(&format!(
            "SELECT COUNT(*) FROM {} WHERE {} LIKE '%bulk%'",
            t.q("_sluice_ledger"),
            t.q("target")
        ))
        .await;
    assert_eq!(pieces, [5], "{}: one ledger row per batch", t.name);
}

/// An upsert into a table without a unique index on its key (made by hand) cannot tell an
/// existing key: on PostgreSQL it fails as `ON CONFLICT` does, and writes nothing, even
/// where a straight `COPY` of its new keys would have gone through.
async fn an_upsert_without_a_unique_index_on_the_key_writes_nothing(t: &Target) {
    if t.name != "postgres" {
        return;
    }
    t.exec(&format!(
        "CREATE TABLE {} ({} BIGINT, {} TEXT)",
        t.q("nokey"),
        t.q("id"),
        t.q("name")
    ))
    .await;
    let mut sink = build_sink(upsert_on_id(t, "nokey")).await.unwrap();
    let e = sink
        .write(&versioned("first", 0, 3_000))
        .await
        .expect_err("an upsert without a unique key");
    assert_eq!(e.class, ErrorClass::ContractChanged, "{}: {e}", t.name);
    assert_eq!(t.count("nokey").await, 0, "{}", t.name);
}

/// Several batches in one `write_group` (a sink catching up): one transaction (on
/// PostgreSQL, their ledger rows share one `xmin`), a report per batch, the last version of
/// a key repeated across them wins as if written one by one; a group holding a batch
/// written before, or a row without its key, writes nothing (the engine then writes
/// the batches one by one).
async fn a_group_is_written_whole_or_not_at_all(t: &Target) {
    let mut sink = build_sink(upsert_on_id(t, "grouped")).await.unwrap();
    assert!(sink.group_rows() > 1, "{}", t.name);
    let first = [
        page_batch(1, names(&[1, 2, 3], &[Some("a"), Some("b"), Some("c")])),
        page_batch(2, names(&[2, 4, 2], &[Some("b1"), Some("d"), Some("b2")])),
        page_batch(3, names(&[5, 1], &[Some("e"), Some("a1")])),
    ];
    let reports = sink.write_group(&first).await.unwrap();
    let written: Vec<usize> = reports
        .iter()
        .map(|r| r.as_ref().unwrap().written)
        .collect();
    assert_eq!(written, [3, 2, 2], "{}: as each batch alone writes", t.name);
    let got = t
        .strings(&format!(
            "SELECT {} FROM {} ORDER BY {}",
            t.q("name"),
            t.q("grouped"),
            t.q("id")
        ))
        .await;
    let want: Vec<Option<String>> = ["a1", "b2", "c", "d", "e"]
        .iter()
        .map(|s| Some(s.to_string()))
        .collect();
    assert_eq!(got, want, "{}", t.name);
    let ledger = format!(
        "FROM {} WHERE {} LIKE '%grouped%'",
        t.q("_sluice_ledger"),
        t.q("target")
    );
    assert_eq!(
        t.ints(&format!("SELECT COUNT(*) {ledger}")).await,
        [3],
        "{}: a ledger row per batch",
        t.name
    );
    if t.name == "postgres" {
        assert_eq!(
            ledger_transactions(t, "grouped").await,
            Some(1),
            "one transaction"
        );
    }
    // Each batch again: a duplicate, nothing written twice.
    for b in &first {
        assert!(sink.write(b).await.unwrap().duplicate, "{}", t.name);
    }
    // A group holding a batch written before writes nothing, not even the new one.
    let new = page_batch(4, names(&[6], &[Some("f")]));
    assert!(
        sink.write_group(&[new.clone(), first[1].clone()])
            .await
            .is_err(),
        "{}",
        t.name
    );
    assert_eq!(t.count("grouped").await, 5, "{}", t.name);
    assert_eq!(sink.write(&new).await.unwrap().written, 1, "{}", t.name);
    // A row without its key: nothing of the group either.
    let keyless = page_batch(
        5,
        arrow::array::RecordBatch::try_from_iter([
            (
                "id",
                std::sync::Arc::new(arrow::array::Int64Array::from(vec![None, Some(8)]))
                    as arrow::array::ArrayRef,
            ),
            (
                "name",
                std::sync::Arc::new(arrow::array::StringArray::from(vec![Some("x"), Some("h")]))
                    as arrow::array::ArrayRef,
            ),
        ])
        .unwrap(),
    );
    let fine = page_batch(6, names(&[7], &[Some("g")]));
    assert!(
        sink.write_group(&[fine, keyless]).await.is_err(),
        "{}",
        t.name
    );
    assert_eq!(t.count("grouped").await, 6, "{}", t.name);

    // Wide batches (binary COPY on PostgreSQL), statements cut by bytes across the
    // batches' boundaries: every row once, in both modes.
    for mode in [WriteMode::Append, WriteMode::Upsert] {
        let table = format!("grouped_wide_{mode:?}").to_lowercase();
        let mut config = t.config(&table);
        config.mode = mode;
        if mode == WriteMode::Upsert {
            config.key = vec!["id".into()];
        }
        config.max_statement_bytes = Some(100_000);
        let mut sink = build_sink(config).await.unwrap();
        let batches: Vec<_> = (0..3)
            .map(|i| page_batch(10 + i, records(i as i64 * 1_500, 1_500)))
            .collect();
        let reports = sink.write_group(&batches).await.unwrap();
        assert!(all_written(&reports, 1_500), "{}: {reports:?}", t.name);
        assert_eq!(
            t.ids(&table).await,
            (0..4_500).collect::<Vec<i64>>(),
            "{} {mode:?}",
            t.name
        );
    }
}

/// A group of 2,000 rows or more is cut at a batch boundary and written on two
/// connections at once, a transaction each (on PostgreSQL, two `xmin`s; SQLite writes one
/// at a time: one transaction); halves with a key in common are written as one. A half
/// the database refuses is handed back (`None`) while the other is written; its batches
/// then written alone write their good rows and reject the bad one.
async fn a_large_group_is_written_on_two_connections(t: &Target) {
    let two = t.name != "sqlite";
    let batch = |page: u64, from: i64, name: &str| {
        let ids: Vec<i64> = (from..from + 1_000).collect();
        page_batch(page, names(&ids, &vec![Some(name); 1_000]))
    };
    // Four batches of distinct keys: two transactions of two batches each.
    let mut sink = build_sink(upsert_on_id(t, "halves")).await.unwrap();
    let group: Vec<_> = (0..4).map(|i| batch(i, i as i64 * 1_000, "a")).collect();
    let reports = sink.write_group(&group).await.unwrap();
    assert!(all_written(&reports, 1_000), "{}: {reports:?}", t.name);
    assert_eq!(t.ids("halves").await, (0..4_000).collect::<Vec<i64>>());
    assert_eq!(
        ledger_transactions(t, "halves").await,
        (t.name == "postgres").then_some(2)
    );
    // The last batch repeats the first's keys: one transaction, the last version wins.
    let mut sink = build_sink(upsert_on_id(t, "shared")).await.unwrap();
    let mut group: Vec<_> = (0..3).map(|i| batch(i, i as i64 * 1_000, "a")).collect();
    group.push(batch(3, 0, "b"));
    let reports = sink.write_group(&group).await.unwrap();
    let written: Vec<usize> = reports
        .iter()
        .map(|r| r.as_ref().unwrap().written)
        .collect();
    assert_eq!(written, [1_000; 4], "{}", t.name);
    assert_eq!(t.count("shared").await, 3_000, "{}", t.name);
    let renamed = t
        .ints(&format!(
            "SELECT COUNT(*) FROM {} WHERE {} = 'b'",
            t.q("shared"),
            t.q("name")
        ))
        .await;
    assert_eq!(renamed, [1_000], "{}", t.name);
    assert_eq!(
        ledger_transactions(t, "shared").await,
        (t.name == "postgres").then_some(1)
    );
    // A row the database refuses (NULL in a NOT NULL column), in one half, then the other.
    for (table, bad) in [("refused_second", 3usize), ("refused_first", 0)] {
        t.exec(&format!(
            "CREATE TABLE {} ({} BIGINT NOT NULL PRIMARY KEY, {} VARCHAR(200) NOT NULL)",
            t.q(table),
            t.q("id"),
            t.q("name")
        ))
        .await;
        let mut sink = build_sink(upsert_on_id(t, table)).await.unwrap();
        let mut group: Vec<_> = (0..4).map(|i| batch(i, i as i64 * 1_000, "a")).collect();
        let ids: Vec<i64> = (bad as i64 * 1_000..(bad as i64 + 1) * 1_000).collect();
        let mut values = vec![Some("a"); 1_000];
        values[10] = None;
        group[bad] = page_batch(bad as u64, names(&ids, &values));
        match sink.write_group(&group).await {
            Ok(reports) => {
                assert!(two, "{}: one transaction fails whole: {reports:?}", t.name);
                let handed_back: Vec<bool> = reports.iter().map(Option::is_none).collect();
                let half = bad / 2;
                let want: Vec<bool> = (0..4).map(|i| i / 2 == half).collect();
                assert_eq!(handed_back, want, "{} {table}", t.name);
                assert_eq!(t.count(table).await, 2_000, "{} {table}", t.name);
            }
            Err(e) => {
                assert!(!two, "{} {table}: {e}", t.name);
                assert_eq!(t.count(table).await, 0, "{} {table}", t.name);
            }
        }
        // Each batch alone: the good rows of what was handed back, the bad row rejected.
        let mut rejected = 0;
        for b in &group {
            rejected += sink.write(b).await.unwrap().rejected.len();
        }
        assert_eq!(rejected, 1, "{} {table}", t.name);
        assert_eq!(t.count(table).await, 3_999, "{} {table}", t.name);
    }
}

/// `{id:1},{id:null}×3,{id:2}`: the NULL-key rows are rejected with `invalid_request` (the
/// engine quarantines them), the others written; in `upsert` (NULLs are not one key) and
/// in `append` (SQLite would make a NULL `INTEGER PRIMARY KEY` a rowid).
async fn rows_with_a_null_key_are_rejected_and_the_others_written(t: &Target) {
    for (table, mode) in [
        ("nullkey_up", WriteMode::Upsert),
        ("nullkey_app", WriteMode::Append),
    ] {
        let mut config = t.config(table);
        config.mode = mode;
        config.key = vec!["id".into()];
        let mut sink = build_sink(config).await.unwrap();
        let records = arrow::array::RecordBatch::try_from_iter([
            (
                "id",
                std::sync::Arc::new(arrow::array::Int64Array::from(vec![
                    Some(1),
                    None,
                    None,
                    None,
                    Some(2),
                ])) as arrow::array::ArrayRef,
            ),
            (
                "name",
                std::sync::Arc::new(arrow::array::StringArray::from(vec![
                    "a", "n1", "n2", "n3", "b",
                ])) as arrow::array::ArrayRef,
            ),
        ])
        .unwrap();
        let b = page_batch(1, records);
        let r = sink.write(&b).await.unwrap();
        let rejected: usize = r.rejected.iter().map(|x| x.rows.num_rows()).sum();
        assert_eq!((r.written, rejected), (2, 3), "{} {table}: {r:?}", t.name);
        for x in &r.rejected {
            assert_eq!(x.error.class, ErrorClass::InvalidRequest, "{}", t.name);
            assert!(x.error.message.contains("id"), "{}", x.error.message);
        }
        assert_eq!(t.ids(table).await, vec![1, 2], "{} {table}", t.name);
        // Redelivered: the good rows are not written twice, the bad ones refused again.
        let again = sink.write(&b).await.unwrap();
        let rejected: usize = again.rejected.iter().map(|x| x.rows.num_rows()).sum();
        assert_eq!((again.written, rejected), (0, 3), "{} {table}", t.name);
        assert_eq!(t.count(table).await, 2, "{} {table}", t.name);
    }
}

async fn new_columns_evolve_or_fail_by_policy(t: &Target) {
    let mut sink = build_sink(t.config("evolving")).await.unwrap();
    sink.write(&page_batch(1, names(&[1], &[Some("a")])))
        .await
        .unwrap();
    let wider = arrow::array::RecordBatch::try_from_iter([
        (
            "id",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![2])) as arrow::array::ArrayRef,
        ),
        (
            "name",
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["b"])),
        ),
        (
            "extra",
            std::sync::Arc::new(arrow::array::Float64Array::from(vec![1.5])),
        ),
    ])
    .unwrap();
    let e = sink.write(&page_batch(2, wider.clone())).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::ContractChanged, "{}: {e}", t.name);
    assert!(
        e.message.contains("extra") && e.message.contains("schema_policy"),
        "{e}"
    );
    let mut config = t.config("evolving");
    config.schema_policy = SchemaPolicy::Evolve;
    let mut sink = build_sink(config).await.unwrap();
    assert_eq!(sink.write(&page_batch(2, wider)).await.unwrap().written, 1);
    assert!(
        sink.drain_events()
            .iter()
            .any(|e| e.message.contains("added columns"))
    );
    assert_eq!(t.columns("evolving").await, vec!["id", "name", "extra"]);
    assert_eq!(t.count("evolving").await, 2);
}

async fn replace_starts_over_once_per_sink(t: &Target) {
    let mut config = t.config("replaced");
    config.mode = WriteMode::Replace;
    let mut sink = build_sink(config.clone()).await.unwrap();
    sink.write(&page_batch(1, names(&[1, 2], &[Some("a"), Some("b")])))
        .await
        .unwrap();
    sink.write(&page_batch(2, names(&[3], &[Some("c")])))
        .await
        .unwrap();
    assert_eq!(t.ids("replaced").await, vec![1, 2, 3]);
    let mut next_run = build_sink(config).await.unwrap();
    next_run
        .write(&page_batch(1, names(&[1, 2], &[Some("a"), Some("b")])))
        .await
        .unwrap();
    assert_eq!(t.ids("replaced").await, vec![1, 2], "{}", t.name);
}

/// A load empties the table once, whatever the sinks and runs that write it: a resumed
/// run (same load) and a replay (no load) add to it; the next load starts over.
async fn replace_empties_the_table_once_per_load(t: &Target) {
    let mut config = t.config("per_load");
    config.mode = WriteMode::Replace;
    let write = |run: RunInfo, ids: Vec<i64>, page: u64| {
        let config = config.clone();
        async move {
            let mut sink = build_sink(config).await.unwrap();
            sink.begin_run(&run).unwrap();
            let labels: Vec<Option<&str>> = ids.iter().map(|_| Some("x")).collect();
            sink.write(&page_batch(page, names(&ids, &labels)))
                .await
                .unwrap()
        }
    };
    write(RunInfo::new("r0", "r0"), vec![9], 1).await;
    write(RunInfo::new("r1", "r1"), vec![1, 2], 1).await;
    assert_eq!(t.ids("per_load").await, vec![1, 2], "{}", t.name);
    // The run failed; the next one resumes the load with a new sink.
    write(RunInfo::new("r2", "r1"), vec![3], 2).await;
    assert_eq!(t.ids("per_load").await, vec![1, 2, 3], "{}", t.name);
    // A replay of one row keeps the others.
    write(RunInfo::replay("r3"), vec![4], 3).await;
    assert_eq!(t.ids("per_load").await, vec![1, 2, 3, 4], "{}", t.name);
    // A batch of the load delivered again after the resume is still a duplicate.
    let r = write(RunInfo::new("r4", "r1"), vec![1, 2], 1).await;
    assert!(r.duplicate, "{}: {r:?}", t.name);
    // The next load starts over.
    write(RunInfo::new("r5", "r5"), vec![1, 2], 1).await;
    assert_eq!(t.ids("per_load").await, vec![1, 2], "{}", t.name);
}

/// Two sinks (two `sluice serve` workers writing one run) whose first batches create the
/// same table at the same moment: both write, neither fails on the other's create.
async fn two_writers_create_one_table_at_once(t: &Target) {
    for round in 0..10 {
        let table = format!("raced_{round}");
        let mut one = build_sink(t.config(&table)).await.unwrap();
        let mut two = build_sink(t.config(&table)).await.unwrap();
        let (a, b) = (
            page_batch(1, records(0, 50)),
            page_batch(2, records(50, 50)),
        );
        let (ra, rb) = tokio::join!(one.write(&a), two.write(&b));
        let (ra, rb) = (
            ra.unwrap_or_else(|e| panic!("{} round {round}: {e}", t.name)),
            rb.unwrap_or_else(|e| panic!("{} round {round}: {e}", t.name)),
        );
        assert_eq!((ra.written, rb.written), (50, 50), "{}", t.name);
        assert_eq!(t.count(&table).await, 100, "{} round {round}", t.name);
    }
}

async fn health_reports_latency_and_outages(t: &Target) {
    let sink = build_sink(t.config("health")).await.unwrap();
    let took = sink.health().await.unwrap();
    assert!(took.as_secs() < 5, "{}: {took:?}", t.name);
    if t.name == "sqlite" {
        return;
    }
    // A port nothing listens on: dependency, naming the address, without the password.
    let mut config = t.config("health");
    config.url = sluice_core::Secret::new(sql_common::with_address(&t.url, "127.0.0.1:1"));
    config.connect_timeout_ms = 500;
    let mut sink = build_sink(config).await.unwrap();
    let e = sink.health().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Dependency, "{e}");
    assert!(e.message.contains("127.0.0.1:1"), "{e}");
    let e = sink
        .write(&page_batch(1, names(&[1], &[Some("a")])))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Dependency, "{e}");
    assert!(
        e.message.contains("services.sh status") && !e.message.contains(":sluice@"),
        "{e}"
    );
    // A wrong password: auth, and the password is nowhere in the message.
    let mut config = t.config("health");
    config.url = sluice_core::Secret::new(sql_common::with_password(&t.url, "Wr0ng-S3cret"));
    let mut sink = build_sink(config).await.unwrap();
    let e = sink.health().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
    let e = sink
        .write(&page_batch(1, names(&[1], &[Some("a")])))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
    assert!(!e.message.contains("Wr0ng-S3cret"), "{e}");
    assert!(e.message.contains("password"), "says what to check: {e}");
    println!("[{}] auth: {e}", t.name);
}
