//! The shared write algorithm against a fake backend: ledger coverage, splitting,
//! bisection, retries, schema policy, upsert de-duplication. The real engines are
//! exercised by `tests/sql_*.rs`; here only their sessions' limit on an idle transaction.

use super::config::{Dialect, SchemaPolicy, SqlSinkConfig, WriteMode};
use super::db::ConnOps;
use super::error::{Endpoint, Failure};
use super::ledger::Entry;
use super::sink::{Backend, Job, Settings, SqlSink, TableColumn};
use super::types::{Column, Typed};
use arrow::array::{Int64Array, RecordBatch, StringArray};
use async_trait::async_trait;
use sluice_core::{Batch, ConnectorError, ErrorClass, Secret, Sink, SourcePosition};
use sluice_testkit::batches::named_batch;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    table: Option<Vec<String>>,
    rows: Vec<(i64, String)>,
    ledger: Vec<Entry>,
    load: Option<String>,
    transactions: usize,
    conflicts_left: usize,
    added: Vec<String>,
    /// Statements that read the ledger.
    lookups: usize,
}

struct Fake {
    state: Arc<Mutex<State>>,
    settings: Settings,
    endpoint: Endpoint,
    bad_ids: HashSet<i64>,
    max_rows: usize,
}

fn fake(config: &SqlSinkConfig, bad_ids: &[i64], max_rows: usize) -> (Fake, Arc<Mutex<State>>) {
    let state = Arc::new(Mutex::new(State::default()));
    let fake = Fake {
        state: state.clone(),
        settings: Settings::from_config(config, Dialect::Sqlite),
        endpoint: Endpoint::new(
            Dialect::Sqlite,
            "fake.db".into(),
            &config.url,
            Duration::from_secs(1),
        ),
        bad_ids: bad_ids.iter().copied().collect(),
        max_rows,
    };
    (fake, state)
}

fn err(class: ErrorClass, m: &str) -> ConnectorError {
    ConnectorError::new(class, m)
}

#[async_trait]
impl ConnOps for Fake {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn settings(&self) -> &Settings {
        &self.settings
    }
    fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }
    /// Understands the DDL the sink sends for table `t` (plain names only).
    async fn execute(&self, sql: String, _doing: &str) -> Result<(), ConnectorError> {
        let mut s = self.state.lock().unwrap();
        let names = |text: &str| -> Vec<String> {
            text.split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        if let Some(rest) = sql.strip_prefix("CREATE TABLE IF NOT EXISTS \"t\" (") {
            let defs = rest.split("PRIMARY KEY").next().unwrap_or_default();
            s.table = Some(names(defs));
        } else if let Some(rest) = sql.strip_prefix("ALTER TABLE \"t\" ADD COLUMN ") {
            let name = names(rest).remove(0);
            s.added.push(name.clone());
            s.table.get_or_insert_with(Vec::new).push(name);
        }
        Ok(())
    }
    async fn covered_all(&self, parents: &[&str]) -> Result<Vec<Vec<(i64, i64)>>, Failure> {
        let mut s = self.state.lock().unwrap();
        s.lookups += 1;
        Ok(parents
            .iter()
            .map(|parent| {
                s.ledger
                    .iter()
                    .filter(|e| e.parent == *parent)
                    .map(|e| (e.first_row, e.rows))
                    .collect()
            })
            .collect())
    }
    async fn current_load(&self) -> Result<Option<String>, Failure> {
        Ok(self.state.lock().unwrap().load.clone())
    }
    async fn health(&self) -> Result<Duration, ConnectorError> {
        Ok(Duration::ZERO)
    }
}

#[async_trait]
impl Backend for Fake {
    type Plan = ();

    fn conn(&self) -> &dyn ConnOps {
        self
    }
    fn conn_mut(&mut self) -> &mut dyn ConnOps {
        self
    }

    async fn table_columns(&self) -> Result<Option<Vec<TableColumn>>, ConnectorError> {
        Ok(self.state.lock().unwrap().table.as_ref().map(|cols| {
            cols.iter()
                .map(|n| TableColumn {
                    name: n.clone(),
                    sql_type: "TEXT".into(),
                })
                .collect()
        }))
    }
    async fn plan(&self, _: &[Column], _: &[TableColumn]) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn write(&self, _: &(), job: &Job<'_>) -> Result<usize, Failure> {
        let mut s = self.state.lock().unwrap();
        s.transactions += 1;
        if s.conflicts_left > 0 {
            s.conflicts_left -= 1;
            return Err(Failure::Conflict(err(ErrorClass::Dependency, "deadlock")));
        }
        if let Some(load) = job.truncate {
            s.rows.clear();
            s.ledger.clear();
            s.load = Some(load.to_owned());
        }
        if s.ledger
            .iter()
            .any(|e| job.entries.iter().any(|j| j.key == e.key))
        {
            return Err(Failure::AlreadyWritten);
        }
        let mut rows = Vec::new();
        for part in job.parts {
            let Typed::Int64(ids) = part[0].typed() else {
                panic!("id is not int64")
            };
            let Typed::Text(names) = part[1].typed() else {
                panic!("name is not text")
            };
            rows.extend((0..ids.len()).map(|i| (ids.value(i), names.value(i).to_owned())));
        }
        if rows.len() > self.max_rows {
            return Err(Failure::TooLarge(err(
                ErrorClass::PayloadTooLarge,
                "too many rows",
            )));
        }
        if rows.iter().any(|(id, _)| self.bad_ids.contains(id)) {
            return Err(Failure::Rows(err(ErrorClass::InvalidRequest, "bad value")));
        }
        let upsert = self.settings.mode == WriteMode::Upsert;
        let written = rows.len();
        for row in rows {
            match s.rows.iter_mut().find(|r| upsert && r.0 == row.0) {
                Some(existing) => *existing = row,
                None => s.rows.push(row),
            }
        }
        s.ledger.extend(job.entries.iter().cloned());
        Ok(written)
    }
}

fn config() -> SqlSinkConfig {
    let mut c = SqlSinkConfig::new("sqlite://fake.db", "t");
    c.lock_retries = 2;
    c
}

/// Page 1 with the records `ids`, named `n{id}`.
fn batch(ids: &[i64]) -> Batch {
    named_batch(1, ids, |i| format!("n{i}"))
}

fn sink(
    config: &SqlSinkConfig,
    bad: &[i64],
    max_rows: usize,
) -> (SqlSink<Fake>, Arc<Mutex<State>>) {
    let (f, state) = fake(config, bad, max_rows);
    (SqlSink::new(f, config), state)
}

#[tokio::test]
async fn every_row_is_written_once_with_one_ledger_entry() {
    let (mut s, state) = sink(&config(), &[], usize::MAX);
    let b = batch(&[1, 2, 3]);
    let r = s.write(&b).await.unwrap();
    assert_eq!((r.written, r.duplicate, r.rejected.len()), (3, false, 0));
    let again = s.write(&b).await.unwrap();
    assert_eq!((again.written, again.duplicate), (0, true));
    let st = state.lock().unwrap();
    assert_eq!(st.rows.len(), 3);
    assert_eq!(st.ledger.len(), 1);
    assert_eq!(st.ledger[0].key, b.id.as_str());
    assert!(
        s.drain_events()
            .iter()
            .any(|e| e.message.contains("created table"))
    );
}

/// A group's batches are looked up in the ledger in one statement, not one each; parts of
/// one batch (one parent) each find the ranges written of it.
#[tokio::test]
async fn a_group_reads_the_ledger_once() {
    let (mut s, state) = sink(&config(), &[], usize::MAX);
    let (left, right) = batch(&[10, 11, 12, 13]).split().unwrap();
    s.write(&left).await.unwrap();
    state.lock().unwrap().lookups = 0;
    let reports = s
        .write_group(&[batch(&[1, 2]), batch(&[3]), right])
        .await
        .unwrap();
    assert!(reports.iter().all(Option::is_some), "{reports:?}");
    assert_eq!(state.lock().unwrap().lookups, 1);
    assert_eq!(state.lock().unwrap().rows.len(), 7);
    // The part written before is found in that one lookup: not written as one group.
    state.lock().unwrap().lookups = 0;
    assert!(s.write_group(&[batch(&[4]), left]).await.is_err());
    assert_eq!(state.lock().unwrap().lookups, 1);
    assert_eq!(state.lock().unwrap().rows.len(), 7);
}

#[tokio::test]
async fn a_part_of_a_batch_written_whole_is_a_duplicate() {
    let (mut s, state) = sink(&config(), &[], usize::MAX);
    let b = batch(&[1, 2, 3, 4]);
    s.write(&b).await.unwrap();
    let (_, right) = b.split().unwrap();
    let r = s.write(&right).await.unwrap();
    assert!(r.duplicate);
    assert_eq!(state.lock().unwrap().rows.len(), 4);
}

#[tokio::test]
async fn a_bad_row_is_isolated_and_the_rest_written() {
    let ids: Vec<i64> = (0..100).collect();
    let (mut s, state) = sink(&config(), &[37], usize::MAX);
    let b = batch(&ids);
    let r = s.write(&b).await.unwrap();
    assert_eq!(r.written, 99);
    assert_eq!(r.rejected.len(), 1);
    let rejected = &r.rejected[0];
    assert_eq!(rejected.rows.num_rows(), 1);
    assert_eq!(rejected.rows.part.as_ref().unwrap().first_row, 37);
    assert_eq!(rejected.error.class, ErrorClass::InvalidRequest);
    {
        let st = state.lock().unwrap();
        assert_eq!(st.rows.len(), 99);
        assert!(!st.rows.iter().any(|r| r.0 == 37));
        let keys: HashSet<&str> = st.ledger.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys.len(),
            st.ledger.len(),
            "every part has its own ledger key"
        );
    }
    // Redelivered: the good rows are not written again; the bad one is refused again.
    let again = s.write(&b).await.unwrap();
    assert_eq!(again.written, 0);
    assert_eq!(again.rejected.len(), 1);
    assert_eq!(state.lock().unwrap().rows.len(), 99);
}

#[tokio::test]
async fn the_isolation_budget_bounds_the_statements() {
    let ids: Vec<i64> = (0..64).collect();
    let mut c = config();
    c.max_isolation_statements = 3;
    let (mut s, state) = sink(&c, &ids, usize::MAX);
    let r = s.write(&batch(&ids)).await.unwrap();
    assert_eq!(r.written, 0);
    assert_eq!(
        r.rejected.iter().map(|x| x.rows.num_rows()).sum::<usize>(),
        64
    );
    assert!(state.lock().unwrap().transactions <= 1 + 2 * 3);
}

#[tokio::test]
async fn too_large_parts_are_halved_down_to_the_limit() {
    let ids: Vec<i64> = (0..50).collect();
    let (mut s, state) = sink(&config(), &[], 8);
    let r = s.write(&batch(&ids)).await.unwrap();
    assert_eq!((r.written, r.rejected.len()), (50, 0));
    let st = state.lock().unwrap();
    assert!(st.ledger.iter().all(|e| e.rows <= 8));
    let mut got: Vec<i64> = st.rows.iter().map(|r| r.0).collect();
    got.sort();
    assert_eq!(got, ids);
}

#[tokio::test]
async fn a_single_row_too_large_is_rejected_as_payload_too_large() {
    let (mut s, _) = sink(&config(), &[], 0);
    let r = s.write(&batch(&[1, 2])).await.unwrap();
    assert_eq!(r.rejected.len(), 2);
    assert!(
        r.rejected
            .iter()
            .all(|x| x.error.class == ErrorClass::PayloadTooLarge)
    );
}

#[tokio::test]
async fn deadlocks_are_retried_then_reported_as_dependency() {
    let (mut s, state) = sink(&config(), &[], usize::MAX);
    state.lock().unwrap().conflicts_left = 2;
    let r = s.write(&batch(&[1])).await.unwrap();
    assert_eq!(r.written, 1);
    assert_eq!(
        s.drain_events()
            .iter()
            .filter(|e| e.retry && e.message.starts_with("retried"))
            .count(),
        2
    );
    state.lock().unwrap().conflicts_left = 10;
    let e = s.write(&batch(&[2])).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Dependency);
    assert!(e.message.contains("after 3 attempts"), "{}", e.message);
}

#[tokio::test]
async fn upsert_keeps_the_last_row_of_each_key() {
    let mut c = config();
    c.mode = WriteMode::Upsert;
    c.key = vec!["id".into()];
    let (mut s, state) = sink(&c, &[], usize::MAX);
    let records = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1, 2, 1])) as _),
        (
            "name",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as _,
        ),
    ])
    .unwrap();
    let r = s
        .write(&Batch::new("p", "n", SourcePosition::Whole, records))
        .await
        .unwrap();
    assert_eq!(r.written, 2);
    let mut rows = state.lock().unwrap().rows.clone();
    rows.sort();
    assert_eq!(rows, vec![(1, "c".to_owned()), (2, "b".to_owned())]);
}

#[tokio::test]
async fn new_columns_fail_or_evolve_by_policy() {
    let (mut s, state) = sink(&config(), &[], usize::MAX);
    state.lock().unwrap().table = Some(vec!["id".into()]);
    let e = s.write(&batch(&[1])).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::ContractChanged);
    assert!(
        e.message.contains("name") && e.message.contains("schema_policy"),
        "{}",
        e.message
    );

    let mut c = config();
    c.schema_policy = SchemaPolicy::Evolve;
    let (mut s, state) = sink(&c, &[], usize::MAX);
    state.lock().unwrap().table = Some(vec!["id".into()]);
    s.write(&batch(&[1])).await.unwrap();
    assert_eq!(state.lock().unwrap().added, vec!["name".to_owned()]);
}

#[tokio::test]
async fn a_missing_table_without_create_table_is_a_contract_error() {
    let mut c = config();
    c.create_table = false;
    let (mut s, _) = sink(&c, &[], usize::MAX);
    let e = s.write(&batch(&[1])).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::ContractChanged);
    assert!(e.message.contains("create_table"), "{}", e.message);
}

#[tokio::test]
async fn replace_empties_the_table_once_per_sink() {
    let mut c = config();
    c.mode = WriteMode::Replace;
    let (f, state) = fake(&c, &[], usize::MAX);
    let mut s = SqlSink::new(f, &c);
    let b = batch(&[1, 2]);
    assert_eq!(s.write(&b).await.unwrap().written, 2);
    assert_eq!(s.write(&batch(&[3])).await.unwrap().written, 1);
    assert!(s.write(&b).await.unwrap().duplicate);
    assert_eq!(state.lock().unwrap().rows.len(), 3);
    // The next run (a new sink) starts over, even with the same first batch.
    let next = Fake {
        state: state.clone(),
        ..fake(&c, &[], usize::MAX).0
    };
    let mut s = SqlSink::new(next, &c);
    assert_eq!(s.write(&b).await.unwrap().written, 2);
    assert_eq!(state.lock().unwrap().rows.len(), 2);
}

#[test]
fn validation_lists_every_problem() {
    // What a pipeline's spec checks (an empty table, upsert without key) is checked
    // there, with positions; the connector checks what the spec cannot.
    let mut c = SqlSinkConfig::new("ftp://x", "t\0");
    c.max_rows_per_statement = Some(0);
    c.write_timeout_ms = 0;
    let e = c.validate().unwrap_err();
    assert_eq!(e.class, ErrorClass::InvalidRequest);
    for needle in [
        "postgres://",
        "`table` holds a NUL",
        "max_rows_per_statement",
        "write_timeout_ms",
    ] {
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
    }
    assert!(config().validate().is_ok());
    let _ = Secret::new("x");
}

/// A sink's session left idle inside a transaction (its process paused mid-write) is ended
/// by the server, so that another writer of the same rows goes on: without it the other
/// insert waits for as long as the first process sleeps (MariaDB: `innodb_lock_wait_timeout`,
/// 50 s, then fails, again and again).
async fn a_paused_session_does_not_stop_another_writer<DB>(
    sink: &sqlx::Pool<DB>,
    other: &sqlx::Pool<DB>,
    insert_again: &'static str,
    rows_affected: fn(&DB::QueryResult) -> u64,
) where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
{
    use sqlx::Executor;
    other
        .execute("CREATE TABLE held (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    let mut paused = sink.begin().await.unwrap();
    (&mut *paused)
        .execute("INSERT INTO held VALUES (1)")
        .await
        .unwrap();
    let bound = sluice_core::IDLE_IN_TRANSACTION + Duration::from_secs(20);
    let written = tokio::time::timeout(bound, other.execute(insert_again)).await;
    // Its session still open (the check failed), the paused transaction would hold the
    // table past the test, and the cleanup of its schema would wait on it.
    let ended = paused.commit().await.is_err();
    let written = written
        .expect("the other writer waited on the paused session's row lock")
        .unwrap();
    assert_eq!(
        rows_affected(&written),
        1,
        "the paused transaction was rolled back"
    );
    assert!(ended, "the paused session was ended");
}

#[tokio::test]
async fn a_postgres_session_paused_mid_transaction_does_not_stop_another_writer() {
    let schema = sluice_testkit::postgres_schema("sqlidle").await;
    let backend =
        super::postgres::PgBackend::new(&SqlSinkConfig::new(schema.url.clone(), "held")).unwrap();
    let other = sqlx::PgPool::connect(&schema.url).await.unwrap();
    a_paused_session_does_not_stop_another_writer(
        backend.pool(),
        &other,
        "INSERT INTO held VALUES (1) ON CONFLICT DO NOTHING",
        sqlx::postgres::PgQueryResult::rows_affected,
    )
    .await;
}

#[tokio::test]
async fn a_mariadb_session_paused_mid_transaction_does_not_stop_another_writer() {
    let db = sluice_testkit::mysql_database("sqlidle").await;
    let backend =
        super::mysql::MysqlBackend::new(&SqlSinkConfig::new(db.url.clone(), "held")).unwrap();
    let other = sqlx::MySqlPool::connect(&db.url).await.unwrap();
    a_paused_session_does_not_stop_another_writer(
        backend.pool(),
        &other,
        "INSERT IGNORE INTO held VALUES (1)",
        sqlx::mysql::MySqlQueryResult::rows_affected,
    )
    .await;
}
