//! The compliance suite every connector passes, through the `Sink` and `Source` interfaces
//! alone, each connector built by its public constructor and run against the real
//! services (PostgreSQL, MariaDB, SQLite, files, a local HTTP receiver, the mock API).
//!
//! Every sink:
//! - delivers every record of every batch;
//! - writes a batch written twice once (its ledger), also from a new sink (a restarted
//!   worker), in a resumed run of the same load, and in a replay;
//! - takes an empty batch without writing or failing;
//! - writes a batch after a failed write, once the target works again, and the failed
//!   write left nothing behind;
//! - answers `health()`.
//!
//! Every source:
//! - reads every record once, then returns `None`, and `None` again;
//! - resumes from the checkpoint of any batch it gave, reading what follows that batch and
//!   nothing before it;
//! - answers `health()` with the latency of its link.
//!
//! Connector-specific behaviour (splitting, bisection, pagination, auth, ...) has suites
//! of its own: `sql_compliance.rs`, `file_connectors.rs`, `http_source.rs`, ...

mod sql_common;

use serde_json::{Value, json};
use sluice_connectors::file::{FileFormat, FileSink, FileSinkConfig, FileSource, FileSourceConfig};
use sluice_connectors::http::{HttpSource, HttpSourceConfig, HttpSourceContext};
use sluice_connectors::http_sink::{HttpSink, HttpSinkConfig};
use sluice_connectors::sql::{SqlSourceConfig, WatermarkConfig, build_sink, build_source};
use sluice_core::{Batch, ConnectorError, RunInfo, Sink, Source, SourceBatch};
use sluice_testkit::batches::{ids_of, named, named_batch, page_batch, page_ids};
use sluice_testkit::mock_api::{MockApi, MockConfig, MockHandle};
use sluice_testkit::receiver::{Answer, Request, receive};
use sql_common::Target;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(15);

/// Page `page` of ten records, ids from `page * 10`.
fn ten(page: u64) -> Batch {
    named_batch(page, &page_ids(page, 10, 10), |i| format!("record {i}"))
}

// ----------------------------------------------------------------------------- sinks --

/// A sink under test and the target it writes, seen from outside.
trait SinkCase {
    /// Shown in failures.
    fn name(&self) -> &str;

    /// A new sink writing `target` (a table, a file, an endpoint), which no other check
    /// of the case uses.
    async fn sink(&self, target: &str) -> Box<dyn Sink>;

    /// The ids of the records `target` holds, sorted; none when it does not exist.
    async fn ids(&self, target: &str) -> Vec<i64>;

    /// Breaks `target` the way this kind of target fails, writes `batch` with `sink`
    /// (which must fail), then repairs the target as an operator would. Returns the error.
    async fn failed_write(
        &self,
        sink: &mut dyn Sink,
        target: &str,
        batch: &Batch,
    ) -> ConnectorError;
}

async fn sink_suite(case: &impl SinkCase) {
    every_record_is_delivered(case).await;
    a_batch_written_twice_is_written_once(case).await;
    an_empty_batch_writes_nothing(case).await;
    a_batch_after_a_failed_write_is_written(case).await;
    runs_of_a_load_and_replays_write_a_batch_once(case).await;
    sink_health_answers(case).await;
}

async fn every_record_is_delivered(case: &impl SinkCase) {
    let mut sink = case.sink("delivered").await;
    for page in 0..3 {
        let r = sink.write(&ten(page)).await.unwrap();
        assert_eq!(
            (r.written, r.duplicate, r.rejected.len()),
            (10, false, 0),
            "{}: page {page}",
            case.name()
        );
    }
    assert_eq!(
        case.ids("delivered").await,
        (0..30).collect::<Vec<_>>(),
        "{}",
        case.name()
    );
}

async fn a_batch_written_twice_is_written_once(case: &impl SinkCase) {
    let mut sink = case.sink("twice").await;
    let b = ten(1);
    assert_eq!(sink.write(&b).await.unwrap().written, 10, "{}", case.name());
    let again = sink.write(&b).await.unwrap();
    assert!(
        again.duplicate && again.written == 0,
        "{}: {again:?}",
        case.name()
    );
    // A restarted worker sends it once more: the target still holds it once.
    let mut restarted = case.sink("twice").await;
    restarted.write(&b).await.unwrap();
    // The same page with other records is another batch, and is written.
    let changed = named_batch(1, &[100, 101], |i| format!("record {i}"));
    assert_eq!(
        restarted.write(&changed).await.unwrap().written,
        2,
        "{}",
        case.name()
    );
    let mut want: Vec<i64> = (10..20).collect();
    want.extend([100, 101]);
    assert_eq!(case.ids("twice").await, want, "{}", case.name());
}

async fn an_empty_batch_writes_nothing(case: &impl SinkCase) {
    let mut sink = case.sink("empty").await;
    let empty = page_batch(0, named(&[], |i| format!("record {i}")));
    let r = sink
        .write(&empty)
        .await
        .unwrap_or_else(|e| panic!("{}: an empty batch failed: {e}", case.name()));
    assert_eq!((r.written, r.rejected.len()), (0, 0), "{}", case.name());
    assert!(case.ids("empty").await.is_empty(), "{}", case.name());
    // It covers nothing: the next batch, on the same page, is written whole.
    let b = ten(0);
    assert_eq!(sink.write(&b).await.unwrap().written, 10, "{}", case.name());
    assert_eq!(case.ids("empty").await, ids_of(&b), "{}", case.name());
}

async fn a_batch_after_a_failed_write_is_written(case: &impl SinkCase) {
    let mut sink = case.sink("after_failure").await;
    let b = ten(2);
    let e = case.failed_write(sink.as_mut(), "after_failure", &b).await;
    assert!(!e.message.is_empty(), "{}: {e:?}", case.name());
    assert!(
        case.ids("after_failure").await.is_empty(),
        "{}: the failed write left records behind ({e})",
        case.name()
    );
    // The engine writes the batch again: the failed write recorded nothing in the ledger.
    let r = sink
        .write(&b)
        .await
        .unwrap_or_else(|e| panic!("{}: the write after a failed one failed: {e}", case.name()));
    assert_eq!((r.written, r.duplicate), (10, false), "{}", case.name());
    assert!(sink.write(&b).await.unwrap().duplicate, "{}", case.name());
    assert_eq!(
        sink.write(&ten(3)).await.unwrap().written,
        10,
        "{}",
        case.name()
    );
    assert_eq!(
        case.ids("after_failure").await,
        (20..40).collect::<Vec<_>>(),
        "{}",
        case.name()
    );
}

async fn runs_of_a_load_and_replays_write_a_batch_once(case: &impl SinkCase) {
    let mut sink = case.sink("runs").await;
    let (b, c) = (ten(4), ten(5));
    sink.begin_run(&RunInfo::new("run-1", "run-1")).unwrap();
    assert_eq!(sink.write(&b).await.unwrap().written, 10, "{}", case.name());
    // A run resuming the load (after a crash) redelivers it, with a sink of its own; so
    // does a replay. The target keeps it once.
    for run in [RunInfo::new("run-2", "run-1"), RunInfo::replay("run-3")] {
        let mut next = case.sink("runs").await;
        next.begin_run(&run).unwrap();
        next.write(&b)
            .await
            .unwrap_or_else(|e| panic!("{}: {run:?}: {e}", case.name()));
        assert_eq!(
            case.ids("runs").await,
            ids_of(&b),
            "{}: {run:?}",
            case.name()
        );
    }
    // The next load goes on writing.
    sink.begin_run(&RunInfo::new("run-4", "run-4")).unwrap();
    assert_eq!(sink.write(&c).await.unwrap().written, 10, "{}", case.name());
    assert_eq!(
        case.ids("runs").await,
        (40..60).collect::<Vec<_>>(),
        "{}",
        case.name()
    );
}

async fn sink_health_answers(case: &impl SinkCase) {
    let sink = case.sink("health").await;
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, sink.health()).await;
    match answer {
        Ok(Ok(_latency)) => {}
        Ok(Err(e)) => panic!("{}: health failed: {e}", case.name()),
        Err(_) => panic!(
            "{}: health did not answer within {HEALTH_TIMEOUT:?}",
            case.name()
        ),
    }
}

/// A SQL sink (`build_sink`) on a fresh PostgreSQL schema, MariaDB database or SQLite
/// file.
struct SqlSinkCase(Target);

impl SinkCase for SqlSinkCase {
    fn name(&self) -> &str {
        self.0.name
    }

    async fn sink(&self, target: &str) -> Box<dyn Sink> {
        build_sink(self.0.config(target)).await.unwrap()
    }

    async fn ids(&self, target: &str) -> Vec<i64> {
        if self.0.columns(target).await.is_empty() {
            return Vec::new();
        }
        self.0.ids(target).await
    }

    /// The table lacks a column of the batch (and the schema policy is `fail`); the
    /// operator adds it.
    async fn failed_write(
        &self,
        sink: &mut dyn Sink,
        target: &str,
        batch: &Batch,
    ) -> ConnectorError {
        let t = &self.0;
        t.exec(&format!(
            "CREATE TABLE {} ({} BIGINT PRIMARY KEY)",
            t.q(target),
            t.q("id")
        ))
        .await;
        let e = sink.write(batch).await.unwrap_err();
        t.exec(&format!(
            "ALTER TABLE {} ADD COLUMN {} TEXT",
            t.q(target),
            t.q("name")
        ))
        .await;
        e
    }
}

#[tokio::test]
async fn postgres_sink_complies() {
    sink_suite(&SqlSinkCase(sql_common::postgres().await)).await;
}

#[tokio::test]
async fn mariadb_sink_complies() {
    sink_suite(&SqlSinkCase(sql_common::mariadb().await)).await;
}

#[tokio::test]
async fn sqlite_sink_complies() {
    sink_suite(&SqlSinkCase(sql_common::sqlite().await)).await;
}

/// The file sink writing NDJSON to `<dir>/<target>/out.ndjson`.
struct FileSinkCase {
    dir: tempfile::TempDir,
}

impl FileSinkCase {
    fn folder(&self, target: &str) -> PathBuf {
        self.dir.path().join(target)
    }
}

impl SinkCase for FileSinkCase {
    fn name(&self) -> &str {
        "file"
    }

    async fn sink(&self, target: &str) -> Box<dyn Sink> {
        let path = self.folder(target).join("out.ndjson");
        Box::new(FileSink::new(FileSinkConfig::new(path, FileFormat::Ndjson), "p", "out").unwrap())
    }

    async fn ids(&self, target: &str) -> Vec<i64> {
        let Ok(text) = std::fs::read_to_string(self.folder(target).join("out.ndjson")) else {
            return Vec::new();
        };
        let mut ids: Vec<i64> = text
            .lines()
            .map(|line| {
                let record: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {line}"));
                record["id"].as_i64().expect("an id")
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A file stands where the sink's folder goes; the operator moves it away.
    async fn failed_write(
        &self,
        sink: &mut dyn Sink,
        target: &str,
        batch: &Batch,
    ) -> ConnectorError {
        let folder = self.folder(target);
        std::fs::write(&folder, "in the way").unwrap();
        let e = sink.write(batch).await.unwrap_err();
        std::fs::remove_file(&folder).unwrap();
        e
    }
}

#[tokio::test]
async fn file_sink_complies() {
    sink_suite(&FileSinkCase {
        dir: tempfile::tempdir().unwrap(),
    })
    .await;
}

/// The HTTP sink POSTing JSON arrays to `/t/<target>` of a [`Receiver`].
struct HttpSinkCase {
    receiver: Receiver,
}

impl SinkCase for HttpSinkCase {
    fn name(&self) -> &str {
        "http_sink"
    }

    async fn sink(&self, target: &str) -> Box<dyn Sink> {
        let url = format!("{}/t/{target}", self.receiver.base_url);
        Box::new(HttpSink::new(HttpSinkConfig::new(url)).unwrap())
    }

    async fn ids(&self, target: &str) -> Vec<i64> {
        self.receiver.ids(target)
    }

    /// The receiver answers `503 Service Unavailable` once.
    async fn failed_write(
        &self,
        sink: &mut dyn Sink,
        target: &str,
        batch: &Batch,
    ) -> ConnectorError {
        self.receiver.fail_next(target);
        sink.write(batch).await.unwrap_err()
    }
}

#[tokio::test]
async fn http_sink_complies() {
    sink_suite(&HttpSinkCase {
        receiver: Receiver::start().await,
    })
    .await;
}

/// An ingestion endpoint on 127.0.0.1 that behaves as the HTTP sink expects of one: it
/// takes JSON arrays of records at `/t/<target>` and keeps each `Idempotency-Key` once
/// (a batch sent again is acknowledged and dropped). Like many endpoints, it refuses an
/// empty array (`422`).
struct Receiver {
    base_url: String,
    state: Arc<Mutex<Received>>,
}

#[derive(Default)]
struct Received {
    /// Per target, the ids of the records kept, by idempotency key.
    kept: BTreeMap<String, BTreeMap<String, Vec<i64>>>,
    /// Targets whose next request gets `503`.
    failing: HashSet<String>,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(Received::default()));
        let shared = state.clone();
        let addr = receive(move |r: &Request| {
            let status =
                shared
                    .lock()
                    .unwrap()
                    .answer(r.path(), r.header("idempotency-key"), &r.body);
            Answer::status(status)
        })
        .await;
        Receiver {
            base_url: format!("http://{addr}"),
            state,
        }
    }

    fn ids(&self, target: &str) -> Vec<i64> {
        let state = self.state.lock().unwrap();
        let mut ids: Vec<i64> = state
            .kept
            .get(target)
            .into_iter()
            .flat_map(|by_key| by_key.values().flatten().copied())
            .collect();
        ids.sort_unstable();
        ids
    }

    fn fail_next(&self, target: &str) {
        self.state.lock().unwrap().failing.insert(target.to_owned());
    }
}

impl Received {
    /// The status answering a request to `path` with `body`.
    fn answer(&mut self, path: &str, key: Option<String>, body: &[u8]) -> u16 {
        let Some(target) = path.strip_prefix("/t/") else {
            return 404;
        };
        if self.failing.remove(target) {
            return 503;
        }
        let Ok(Value::Array(records)) = serde_json::from_slice::<Value>(body) else {
            return 400;
        };
        if records.is_empty() {
            return 422;
        }
        let Some(key) = key else {
            return 400;
        };
        let ids = records.iter().map(|r| r["id"].as_i64()).collect();
        let Some(ids) = ids else {
            return 400;
        };
        self.kept
            .entry(target.to_owned())
            .or_default()
            .entry(key)
            .or_insert(ids);
        200
    }
}

// --------------------------------------------------------------------------- sources --

/// A source under test, over records it was given.
trait SourceCase {
    /// Shown in failures.
    fn name(&self) -> &str;

    /// A new source of the records, resuming after `checkpoint`.
    async fn source(&self, checkpoint: Option<Value>) -> Box<dyn Source>;

    /// The ids of the records, in the order the source reads them.
    fn ids(&self) -> Vec<i64>;
}

async fn source_suite(case: &impl SourceCase) {
    let batches = every_record_is_read_once_then_none(case).await;
    every_checkpoint_resumes_after_its_batch(case, &batches).await;
    source_health_answers(case).await;
}

/// Reads to the end; the source must then say `None`, again and again.
async fn read_to_end(name: &str, source: &mut dyn Source) -> Vec<SourceBatch> {
    let mut batches = Vec::new();
    while let Some(b) = source
        .next_batch()
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
    {
        batches.push(b);
        assert!(batches.len() < 1_000, "{name}: the source never ends");
    }
    for _ in 0..2 {
        let after = source.next_batch().await;
        assert!(
            matches!(after, Ok(None)),
            "{name}: after its end the source gave {after:?}"
        );
    }
    batches
}

fn ids_in(batches: &[SourceBatch]) -> Vec<i64> {
    batches.iter().flat_map(|b| ids_of(&b.batch)).collect()
}

async fn every_record_is_read_once_then_none(case: &impl SourceCase) -> Vec<SourceBatch> {
    let mut source = case.source(None).await;
    let batches = read_to_end(case.name(), source.as_mut()).await;
    assert!(
        batches.len() >= 3,
        "{}: the case should give several batches, it gave {}",
        case.name(),
        batches.len()
    );
    assert_eq!(ids_in(&batches), case.ids(), "{}", case.name());
    for b in &batches {
        assert!(
            b.checkpoint.is_some(),
            "{}: batch {} has no checkpoint",
            case.name(),
            b.batch.id
        );
    }
    batches
}

/// The engine stores a batch's checkpoint once the batch is safe, and opens the source
/// with it after a crash: the new source goes on after that batch.
async fn every_checkpoint_resumes_after_its_batch(case: &impl SourceCase, batches: &[SourceBatch]) {
    for (i, b) in batches.iter().enumerate() {
        let mut resumed = case.source(b.checkpoint.clone()).await;
        let rest = read_to_end(case.name(), resumed.as_mut()).await;
        assert_eq!(
            ids_in(&rest),
            ids_in(&batches[i + 1..]),
            "{}: resumed after batch {i} (checkpoint {})",
            case.name(),
            b.checkpoint.as_ref().unwrap()
        );
    }
}

async fn source_health_answers(case: &impl SourceCase) {
    let mut source = case.source(None).await;
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, source.health()).await;
    match answer {
        Ok(Ok(Some(_latency))) => {}
        Ok(Ok(None)) => panic!("{}: health did not check the source's link", case.name()),
        Ok(Err(e)) => panic!("{}: health failed: {e}", case.name()),
        Err(_) => panic!(
            "{}: health did not answer within {HEALTH_TIMEOUT:?}",
            case.name()
        ),
    }
}

/// The file source over two NDJSON files (`*.ndjson`), ten records a batch.
struct FileSourceCase {
    dir: tempfile::TempDir,
}

impl FileSourceCase {
    fn new() -> FileSourceCase {
        let dir = tempfile::tempdir().unwrap();
        for (file, ids) in [("a.ndjson", 1..=25), ("b.ndjson", 26..=32)] {
            let text: String = ids
                .map(|i| format!("{}\n", json!({"id": i, "name": format!("record {i}")})))
                .collect();
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        FileSourceCase { dir }
    }
}

impl SourceCase for FileSourceCase {
    fn name(&self) -> &str {
        "file"
    }

    async fn source(&self, checkpoint: Option<Value>) -> Box<dyn Source> {
        let mut config =
            FileSourceConfig::new(self.dir.path().join("*.ndjson"), FileFormat::Ndjson);
        config.max_rows = 10;
        Box::new(FileSource::new(config, "p", "files", checkpoint).unwrap())
    }

    fn ids(&self) -> Vec<i64> {
        (1..=32).collect()
    }
}

#[tokio::test]
async fn file_source_complies() {
    source_suite(&FileSourceCase::new()).await;
}

/// The SQL source (`build_source`) reading a table incrementally by `id`, ten rows a
/// batch.
struct SqlSourceCase(Target);

impl SqlSourceCase {
    /// Writes the rows to read (through the SQL sink).
    async fn new(target: Target) -> SqlSourceCase {
        let mut sink = build_sink(target.config("source_rows")).await.unwrap();
        let ids: Vec<i64> = (1..=25).collect();
        sink.write(&named_batch(0, &ids, |i| format!("record {i}")))
            .await
            .unwrap();
        SqlSourceCase(target)
    }
}

impl SourceCase for SqlSourceCase {
    fn name(&self) -> &str {
        self.0.name
    }

    async fn source(&self, checkpoint: Option<Value>) -> Box<dyn Source> {
        let t = &self.0;
        let mut config = SqlSourceConfig::new(
            t.url.clone(),
            format!(
                "SELECT {id}, {name} FROM {table} WHERE {id} > :watermark ORDER BY {id}",
                id = t.q("id"),
                name = t.q("name"),
                table = t.q("source_rows"),
            ),
        );
        config.watermark = Some(WatermarkConfig {
            column: "id".into(),
            initial: json!(0),
            future_tolerance: Duration::from_secs(3600),
        });
        config.batch_rows = 10;
        build_source(config, "p", "rows", checkpoint).await.unwrap()
    }

    fn ids(&self) -> Vec<i64> {
        (1..=25).collect()
    }
}

#[tokio::test]
async fn postgres_source_complies() {
    source_suite(&SqlSourceCase::new(sql_common::postgres().await).await).await;
}

#[tokio::test]
async fn mariadb_source_complies() {
    source_suite(&SqlSourceCase::new(sql_common::mariadb().await).await).await;
}

#[tokio::test]
async fn sqlite_source_complies() {
    source_suite(&SqlSourceCase::new(sql_common::sqlite().await).await).await;
}

/// The HTTP source reading the mock API incrementally (`updated_since`), a page of 40
/// records a batch.
struct HttpSourceCase {
    mock: MockHandle,
}

impl SourceCase for HttpSourceCase {
    fn name(&self) -> &str {
        "http"
    }

    async fn source(&self, checkpoint: Option<Value>) -> Box<dyn Source> {
        let config = HttpSourceConfig::from_spec(json!({
            "url": self.mock.url("/offset/items"),
            "pagination": {"offset_limit": {"limit": 40}},
            "records": {"path": "$.data.items"},
            "incremental": {"field": "updated_at", "param": "updated_since"},
        }))
        .unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        let context = HttpSourceContext {
            pipeline: "p".into(),
            node: "api".into(),
            checkpoint,
            breakers: None,
            budgets: None,
            metrics: None,
        };
        Box::new(HttpSource::new(config, context).unwrap())
    }

    fn ids(&self) -> Vec<i64> {
        (1..=120).collect()
    }
}

#[tokio::test]
async fn http_source_complies() {
    let mock = MockApi::start(MockConfig {
        records: 120,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    source_suite(&HttpSourceCase { mock }).await;
}
