//! Rows per second into PostgreSQL and MariaDB through the SQL sinks, beside the ceiling
//! measured in the same run on the same rows and the same kind of table:
//!
//! - PostgreSQL: a plain binary `COPY` per batch (no ledger, no staging) — the fastest way in;
//! - MariaDB: plain multi-row `INSERT`s (1,000 rows per statement, one transaction per batch).
//!
//! Upserts are also compared with the same statements run by hand without a ledger
//! (PostgreSQL: `COPY` into a temporary table + `INSERT … ON CONFLICT`; MariaDB:
//! `INSERT … ON DUPLICATE KEY UPDATE`), into a table with a primary key: the ceiling of
//! upsert semantics.
//!
//! Each figure is the median of `SLUICE_BENCH_RUNS` runs (default 3), each into a fresh
//! table. Run with `bench/sql_sink.sh` (it loads the services' addresses), or
//! `cargo bench -p sluice-connectors --bench sql_sink`. Sizes: `SLUICE_BENCH_ROWS`
//! (default 200,000) in batches of `SLUICE_BENCH_BATCH` (default 10,000) rows.

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use sluice_connectors::sql::{SqlSinkConfig, WriteMode, build_sink};
use sluice_core::{Batch, SourcePosition};
use sqlx::{AssertSqlSafe, Executor, MySqlPool, PgPool};
use std::sync::Arc;
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn data(rows: usize, batch_rows: usize, generation: i64) -> Vec<Batch> {
    (0..rows)
        .step_by(batch_rows)
        .enumerate()
        .map(|(page, start)| {
            let n = batch_rows.min(rows - start);
            let ids: Vec<i64> = (start as i64..(start + n) as i64).collect();
            let records = RecordBatch::try_from_iter([
                ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
                (
                    "name",
                    Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| format!("customer {i} gen {generation}")),
                    )),
                ),
                (
                    "amount",
                    Arc::new(Float64Array::from_iter_values(
                        ids.iter().map(|i| *i as f64 * 1.25),
                    )),
                ),
                (
                    "at",
                    Arc::new(
                        TimestampMicrosecondArray::from_iter_values(
                            ids.iter().map(|i| 1_700_000_000_000_000 + i),
                        )
                        .with_timezone("UTC"),
                    ),
                ),
                (
                    "flag",
                    Arc::new(BooleanArray::from_iter(
                        ids.iter().map(|i| Some(i % 3 == 0)),
                    )),
                ),
            ])
            .unwrap();
            Batch::new(
                "bench",
                "gen",
                SourcePosition::Page(page as u64 + generation as u64 * 1_000_000),
                records,
            )
        })
        .collect()
}

/// Binary COPY bytes for the benchmark's five columns, written by hand: the ceiling's encoder.
fn copy_bytes(records: &RecordBatch) -> Vec<u8> {
    let id = records.column(0).as_primitive::<Int64Type>();
    let name = records.column(1).as_string::<i32>();
    let amount = records.column(2).as_primitive::<Float64Type>();
    let at = records.column(3).as_primitive::<TimestampMicrosecondType>();
    let flag = records.column(4).as_boolean();
    let mut buf = Vec::with_capacity(records.num_rows() * 64);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
    for i in 0..records.num_rows() {
        buf.extend_from_slice(&5i16.to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&id.value(i).to_be_bytes());
        let s = name.value(i).as_bytes();
        buf.extend_from_slice(&(s.len() as i32).to_be_bytes());
        buf.extend_from_slice(s);
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&amount.value(i).to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&(at.value(i) - 946_684_800_000_000).to_be_bytes());
        buf.extend_from_slice(&1i32.to_be_bytes());
        buf.push(u8::from(flag.value(i)));
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

const PG_COLUMNS: &str =
    "id bigint, name text, amount double precision, at timestamptz, flag boolean";
const MY_COLUMNS: &str = "id BIGINT, name LONGTEXT, amount DOUBLE, at DATETIME(6), flag BOOLEAN";
const PG_UPSERT: &str = " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, amount = EXCLUDED.amount, \
                         at = EXCLUDED.at, flag = EXCLUDED.flag";
const MY_UPSERT: &str = " ON DUPLICATE KEY UPDATE name = VALUES(name), amount = VALUES(amount), \
                         at = VALUES(at), flag = VALUES(flag)";

/// The hand-written PostgreSQL paths, no ledger: how a batch is loaded.
#[derive(Clone, Copy, PartialEq)]
enum PgBy {
    /// `COPY` straight into the table.
    Copy,
    /// `COPY` into a temporary table, then `INSERT … SELECT … ON CONFLICT DO UPDATE`,
    /// in one transaction: the same statements the sink's upsert runs.
    StagedUpsert,
}

/// Seconds to load `batches` by hand into a fresh `bench` table (with a primary key when
/// `keyed`); with `then`, the time of loading `then` after `batches`.
async fn pg_by_hand(by: PgBy, keyed: bool, batches: &[Batch], then: Option<&[Batch]>) -> f64 {
    let schema = sluice_testkit::postgres_schema("bench").await;
    let pool = PgPool::connect(&schema.url).await.unwrap();
    let key = if keyed { ", PRIMARY KEY (id)" } else { "" };
    pool.execute(AssertSqlSafe(format!(
        "CREATE TABLE bench ({PG_COLUMNS}{key})"
    )))
    .await
    .unwrap();
    let mut timed = 0.0;
    for (round, set) in [Some(batches), then].into_iter().flatten().enumerate() {
        let started = Instant::now();
        for b in set {
            let mut conn = pool.acquire().await.unwrap();
            let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
            let target = if by == PgBy::Copy { "bench" } else { "stage" };
            if by == PgBy::StagedUpsert {
                tx.execute(AssertSqlSafe(format!(
                    "CREATE TEMP TABLE IF NOT EXISTS stage ({PG_COLUMNS}) ON COMMIT DELETE ROWS"
                )))
                .await
                .unwrap();
            }
            let mut copy = tx
                .copy_in_raw(&format!(
                    "COPY {target} (id, name, amount, at, flag) FROM STDIN (FORMAT binary)"
                ))
                .await
                .unwrap();
            copy.send(copy_bytes(&b.records)).await.unwrap();
            copy.finish().await.unwrap();
            if by == PgBy::StagedUpsert {
                tx.execute(AssertSqlSafe(format!(
                    "INSERT INTO bench SELECT * FROM stage{PG_UPSERT}"
                )))
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }
        if then.is_none() || round == 1 {
            timed = started.elapsed().as_secs_f64();
        }
    }
    timed
}

/// Seconds to load `batches` by hand into a fresh MariaDB `bench` table with multi-row
/// `INSERT`s of 1,000 rows, one transaction per batch; `upsert`: with a primary key and
/// `ON DUPLICATE KEY UPDATE`. With `then`, the time of loading `then` after `batches`.
async fn my_by_hand(upsert: bool, batches: &[Batch], then: Option<&[Batch]>) -> f64 {
    let db = sluice_testkit::mysql_database("bench").await;
    let pool = MySqlPool::connect(&db.url).await.unwrap();
    let key = if upsert { ", PRIMARY KEY (id)" } else { "" };
    pool.execute(AssertSqlSafe(format!(
        "CREATE TABLE bench ({MY_COLUMNS}{key}) DEFAULT CHARSET=utf8mb4"
    )))
    .await
    .unwrap();
    let suffix = if upsert { MY_UPSERT } else { "" };
    let mut timed = 0.0;
    for (round, set) in [Some(batches), then].into_iter().flatten().enumerate() {
        let started = Instant::now();
        for b in set {
            let r = &b.records;
            let mut tx = pool.begin().await.unwrap();
            for start in (0..r.num_rows()).step_by(1_000) {
                let n = 1_000.min(r.num_rows() - start);
                let sql = format!(
                    "INSERT INTO bench (id, name, amount, at, flag) VALUES {}{suffix}",
                    vec!["(?, ?, ?, ?, ?)"; n].join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                let id = r.column(0).as_primitive::<Int64Type>();
                let name = r.column(1).as_string::<i32>();
                let amount = r.column(2).as_primitive::<Float64Type>();
                let at = r.column(3).as_primitive::<TimestampMicrosecondType>();
                let flag = r.column(4).as_boolean();
                for i in start..start + n {
                    let ts = sqlx::types::chrono::DateTime::from_timestamp_micros(at.value(i))
                        .unwrap()
                        .naive_utc();
                    q = q
                        .bind(id.value(i))
                        .bind(name.value(i))
                        .bind(amount.value(i))
                        .bind(ts)
                        .bind(flag.value(i));
                }
                q.execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
        if then.is_none() || round == 1 {
            timed = started.elapsed().as_secs_f64();
        }
    }
    timed
}

/// Seconds to write `batches` through a fresh sink into a fresh table; with `then`, the
/// time of writing `then` after `batches` (the update path of upsert).
async fn through_sink(
    url: &str,
    mode: WriteMode,
    batches: &[Batch],
    then: Option<&[Batch]>,
) -> f64 {
    let mut config = SqlSinkConfig::new(url, "bench");
    config.mode = mode;
    if mode == WriteMode::Upsert {
        config.key = vec!["id".into()];
    }
    let mut sink = build_sink(config).await.unwrap();
    let mut timed = 0.0;
    for (round, set) in [Some(batches), then].into_iter().flatten().enumerate() {
        let started = Instant::now();
        for b in set {
            let r = sink.write(b).await.unwrap();
            assert_eq!(r.written, b.num_rows());
        }
        if then.is_none() || round == 1 {
            timed = started.elapsed().as_secs_f64();
        }
    }
    timed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One measured path: its runs, and the paths it is compared with.
struct Line {
    target: &'static str,
    what: &'static str,
    seconds: Vec<f64>,
    ceiling: &'static str,
    reference: Option<&'static str>,
}

const PG_COPY: &str = "ceiling: binary COPY";
const PG_COPY_KEYED: &str = "binary COPY into a keyed table";
const PG_STAGED_NEW: &str = "by hand: COPY to temp + INSERT ON CONFLICT (new keys)";
const PG_STAGED_OLD: &str = "by hand: COPY to temp + INSERT ON CONFLICT (existing keys)";
const MY_INSERT: &str = "ceiling: multi-row INSERT";
const MY_UPSERT_NEW: &str = "by hand: INSERT ON DUPLICATE KEY UPDATE (new keys)";
const MY_UPSERT_OLD: &str = "by hand: INSERT ON DUPLICATE KEY UPDATE (existing keys)";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects `postgres` or `mariadb`.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |t: &str| filter.as_deref().is_none_or(|f| t.contains(f));
    let rows = env_usize("SLUICE_BENCH_ROWS", 200_000);
    let batch_rows = env_usize("SLUICE_BENCH_BATCH", 10_000);
    let runs = env_usize("SLUICE_BENCH_RUNS", 3).max(1);
    let first = data(rows, batch_rows, 0);
    let second = data(rows, batch_rows, 1);
    let mut lines: Vec<Line> = Vec::new();
    let mut add = |target, what, ceiling, reference, s: f64| match lines
        .iter_mut()
        .find(|l| l.target == target && l.what == what)
    {
        Some(l) => l.seconds.push(s),
        None => lines.push(Line {
            target,
            what,
            seconds: vec![s],
            ceiling,
            reference,
        }),
    };
    let (new, old) = (None, Some(&second[..]));
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        if wants("postgres") {
            let pg = "postgres";
            add(
                pg,
                PG_COPY,
                PG_COPY,
                None,
                pg_by_hand(PgBy::Copy, false, &first, new).await,
            );
            add(
                pg,
                PG_COPY_KEYED,
                PG_COPY,
                None,
                pg_by_hand(PgBy::Copy, true, &first, new).await,
            );
            add(
                pg,
                PG_STAGED_NEW,
                PG_COPY,
                None,
                pg_by_hand(PgBy::StagedUpsert, true, &first, new).await,
            );
            add(
                pg,
                PG_STAGED_OLD,
                PG_COPY,
                None,
                pg_by_hand(PgBy::StagedUpsert, true, &first, old).await,
            );
            let s = sluice_testkit::postgres_schema("bench").await;
            add(
                pg,
                "sink append",
                PG_COPY,
                None,
                through_sink(&s.url, WriteMode::Append, &first, new).await,
            );
            let s = sluice_testkit::postgres_schema("bench").await;
            let t = through_sink(&s.url, WriteMode::Upsert, &first, new).await;
            add(
                pg,
                "sink upsert (new keys)",
                PG_COPY,
                Some(PG_STAGED_NEW),
                t,
            );
            let s = sluice_testkit::postgres_schema("bench").await;
            let t = through_sink(&s.url, WriteMode::Upsert, &first, old).await;
            add(
                pg,
                "sink upsert (existing keys)",
                PG_COPY,
                Some(PG_STAGED_OLD),
                t,
            );
        }
        if wants("mariadb") {
            let my = "mariadb";
            add(
                my,
                MY_INSERT,
                MY_INSERT,
                None,
                my_by_hand(false, &first, new).await,
            );
            add(
                my,
                MY_UPSERT_NEW,
                MY_INSERT,
                None,
                my_by_hand(true, &first, new).await,
            );
            add(
                my,
                MY_UPSERT_OLD,
                MY_INSERT,
                None,
                my_by_hand(true, &first, old).await,
            );
            let d = sluice_testkit::mysql_database("bench").await;
            add(
                my,
                "sink append",
                MY_INSERT,
                None,
                through_sink(&d.url, WriteMode::Append, &first, new).await,
            );
            let d = sluice_testkit::mysql_database("bench").await;
            let t = through_sink(&d.url, WriteMode::Upsert, &first, new).await;
            add(
                my,
                "sink upsert (new keys)",
                MY_INSERT,
                Some(MY_UPSERT_NEW),
                t,
            );
            let d = sluice_testkit::mysql_database("bench").await;
            let t = through_sink(&d.url, WriteMode::Upsert, &first, old).await;
            add(
                my,
                "sink upsert (existing keys)",
                MY_INSERT,
                Some(MY_UPSERT_OLD),
                t,
            );
        }
    }
    println!("{rows} rows in batches of {batch_rows}, median of {runs} runs\n");
    println!(
        "| target | path | rows/s (median) | runs (s) | vs ceiling | vs same statements by hand |"
    );
    println!("|---|---|---:|---|---:|---:|");
    let rate = |what: &str, target: &str| {
        lines
            .iter()
            .find(|l| l.target == target && l.what == what)
            .map(|l| rows as f64 / median(l.seconds.clone()))
    };
    for l in &lines {
        let r = rows as f64 / median(l.seconds.clone());
        let vs = |other: Option<&str>| {
            other
                .and_then(|o| rate(o, l.target))
                .map_or(String::new(), |o| format!("{:.2}", r / o))
        };
        let runs: Vec<String> = l.seconds.iter().map(|s| format!("{s:.2}")).collect();
        println!(
            "| {} | {} | {:.0} | {} | {} | {} |",
            l.target,
            l.what,
            r,
            runs.join(" "),
            vs(Some(l.ceiling)),
            vs(l.reference)
        );
    }
}
