//! The executor end to end over the embedded buffer and a SQLite state store, with
//! in-memory sources and sinks that fail on cue.

use arrow::array::{Array, Int64Array, RecordBatch};
use async_trait::async_trait;
use futures::FutureExt;
use sluice_buffer::{EmbeddedLog, EmbeddedOptions};
use sluice_core::{
    Batch, ConnectorError, Disposition, ErrorClass, RejectedRows, RetryPolicy, Sink, Source,
    SourceBatch, SourcePosition, WriteReport,
};
use sluice_engine::{
    Dispositions, Executor, NodeDef, NodeRunner, Pipeline, Task, Transform, replay,
};
use sluice_state::{FailedBatchFilter, RunStatus, StateStore, Trigger};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Pages of consecutive ids; the checkpoint is the next page.
struct Pages {
    next: u64,
    pages: u64,
    rows: i64,
}

#[async_trait]
impl Source for Pages {
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError> {
        if self.next >= self.pages {
            return Ok(None);
        }
        let start = self.next as i64 * self.rows;
        let ids: Vec<i64> = (start..start + self.rows).collect();
        let records =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(ids)) as _)]).unwrap();
        let batch = Batch::new("p", "src", SourcePosition::page(self.next), records);
        self.next += 1;
        Ok(Some(SourceBatch {
            batch,
            checkpoint: Some(serde_json::json!({ "next": self.next })),
        }))
    }
}

fn pages(name: &'static str, pages: u64, rows: i64) -> NodeDef {
    pages_as(name, pages, rows, |p| Box::new(p))
}

/// `pages`, resuming from its checkpoint, as the source `wrap` makes of it.
fn pages_as(
    name: &'static str,
    pages: u64,
    rows: i64,
    wrap: impl Fn(Pages) -> Box<dyn Source> + Send + Sync + 'static,
) -> NodeDef {
    let wrap = Arc::new(wrap);
    node(
        name,
        &[],
        NodeRunner::Source(Box::new(move |checkpoint: Option<serde_json::Value>| {
            let next = checkpoint.and_then(|c| c["next"].as_u64()).unwrap_or(0);
            let wrap = wrap.clone();
            async move { Ok(wrap(Pages { next, pages, rows })) }.boxed()
        })),
    )
}

fn node(id: &str, inputs: &[&str], runner: NodeRunner) -> NodeDef {
    NodeDef {
        id: id.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        after: Vec::new(),
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
        dispositions: Dispositions::default(),
        runner,
        compensate: None,
    }
}

/// What the fake target database holds and how it misbehaves.
#[derive(Default)]
struct Db {
    ledger: HashSet<String>,
    rows: Vec<i64>,
    /// Fail this many writes with `dependency` first.
    outages: u32,
    /// Refuse batches of more rows than this with `payload_too_large`.
    max_rows: Option<usize>,
    /// Ids refused as bad data (until healed).
    bad: HashSet<i64>,
}

struct MemSink(Arc<Mutex<Db>>);

/// The `id` column of the test batches.
fn id_column(records: &RecordBatch) -> &Int64Array {
    records
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
}

#[async_trait]
impl Sink for MemSink {
    async fn write(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        let mut db = self.0.lock().unwrap();
        if db.outages > 0 {
            db.outages -= 1;
            return Err(ConnectorError::new(
                ErrorClass::Dependency,
                "database refused the connection",
            ));
        }
        if db.max_rows.is_some_and(|max| batch.num_rows() > max) {
            return Err(ConnectorError::new(
                ErrorClass::PayloadTooLarge,
                "too many bind parameters",
            ));
        }
        if !db.ledger.insert(batch.ledger_key().to_string()) {
            return Ok(WriteReport {
                duplicate: true,
                ..WriteReport::default()
            });
        }
        let ids = id_column(&batch.records);
        let mut report = WriteReport::default();
        for i in 0..ids.len() {
            let id = ids.value(i);
            if db.bad.contains(&id) {
                report.rejected.push(RejectedRows {
                    rows: batch.slice(i, 1),
                    error: ConnectorError::new(
                        ErrorClass::InvalidRequest,
                        format!("row {id} violates a check constraint"),
                    ),
                });
            } else {
                db.rows.push(id);
                report.written += 1;
            }
        }
        Ok(report)
    }

    async fn health(&self) -> Result<Duration, ConnectorError> {
        Ok(Duration::ZERO)
    }
}

struct Double;

impl Transform for Double {
    fn apply(&mut self, records: RecordBatch) -> Result<RecordBatch, ConnectorError> {
        let ids = id_column(&records);
        let doubled: Int64Array = ids.iter().map(|v| v.map(|v| v * 2 + 1000)).collect();
        Ok(RecordBatch::try_from_iter([("id", Arc::new(doubled) as _)]).unwrap())
    }
}

struct Note(Arc<Mutex<Vec<String>>>, &'static str, bool);

#[async_trait]
impl Task for Note {
    async fn run(&self, _: &sluice_engine::TaskContext) -> Result<(), ConnectorError> {
        self.0.lock().unwrap().push(self.1.to_owned());
        if self.2 {
            Err(ConnectorError::new(
                ErrorClass::Permission,
                format!("{} is not allowed", self.1),
            ))
        } else {
            Ok(())
        }
    }
    fn describe(&self) -> String {
        self.1.to_owned()
    }
}

async fn executor(dir: &tempfile::TempDir) -> Executor {
    executor_over(dir, |log| Arc::new(log)).await
}

/// An executor in `dir` whose buffer is `wrap` of the embedded log.
async fn executor_over(
    dir: &tempfile::TempDir,
    wrap: impl FnOnce(EmbeddedLog) -> Arc<dyn sluice_buffer::Buffer>,
) -> Executor {
    let store = StateStore::open(&format!("sqlite://{}/state.db", dir.path().display()))
        .await
        .unwrap();
    let log = EmbeddedLog::open(dir.path().join("buffer"), EmbeddedOptions::default()).unwrap();
    Executor::new(store, wrap(log))
}

fn ids(db: &Arc<Mutex<Db>>) -> BTreeSet<i64> {
    let db = db.lock().unwrap();
    let set: BTreeSet<i64> = db.rows.iter().copied().collect();
    assert_eq!(set.len(), db.rows.len(), "duplicate rows written");
    set
}

#[tokio::test]
async fn fan_out_and_join_deliver_every_record_once_and_resume_from_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir).await;
    let direct = Arc::new(Mutex::new(Db::default()));
    let joined = Arc::new(Mutex::new(Db::default()));
    let build = |extra_pages: u64| {
        Pipeline::new(
            "p",
            vec![
                pages("a", 5 + extra_pages, 10),
                pages("b", 3, 10),
                node("double", &["a"], NodeRunner::Transform(Box::new(Double))),
                node(
                    "direct",
                    &["a"],
                    NodeRunner::Sink(Box::new(MemSink(direct.clone()))),
                ),
                node(
                    "join",
                    &["double", "b"],
                    NodeRunner::Sink(Box::new(MemSink(joined.clone()))),
                ),
            ],
        )
    };
    let summary = exec.run(build(0), Trigger::Manual).await.unwrap();
    assert_eq!(summary.status, RunStatus::Succeeded, "{summary:#?}");
    assert_eq!(ids(&direct), (0..50).collect());
    let expected: BTreeSet<i64> = (0..50).map(|i| i * 2 + 1000).chain(0..30).collect();
    assert_eq!(ids(&joined), expected);

    // The next run resumes from the checkpoints: only the new pages flow.
    let summary = exec.run(build(2), Trigger::Manual).await.unwrap();
    assert_eq!(summary.status, RunStatus::Succeeded);
    let a = summary.nodes.iter().find(|n| n.id == "a").unwrap();
    assert_eq!(a.counts.records_out, 20);
    assert_eq!(ids(&direct), (0..70).collect());
}

#[tokio::test]
async fn outages_are_retried_oversized_batches_split_and_bad_rows_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir).await;
    let db = Arc::new(Mutex::new(Db {
        outages: 2,
        max_rows: Some(3),
        bad: [7, 23].into(),
        ..Db::default()
    }));
    let build = || {
        Pipeline::new(
            "p",
            vec![
                pages("src", 4, 10),
                node(
                    "db",
                    &["src"],
                    NodeRunner::Sink(Box::new(MemSink(db.clone()))),
                ),
            ],
        )
    };
    let summary = exec.run(build(), Trigger::Manual).await.unwrap();
    assert_eq!(
        summary.status,
        RunStatus::PartiallySucceeded,
        "{summary:#?}"
    );
    let sink = &summary.nodes[1];
    assert_eq!((sink.counts.retries, sink.counts.quarantined), (2, 2));
    let expected: BTreeSet<i64> = (0..40).filter(|i| ![7, 23].contains(i)).collect();
    assert_eq!(ids(&db), expected);
    let failed = exec
        .store()
        .failed_batches(&FailedBatchFilter::default(), false)
        .await
        .unwrap();
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .all(|f| f.class == ErrorClass::InvalidRequest && f.rows == 1)
    );

    // Heal the target, replay: the two rows arrive; replaying again writes nothing.
    db.lock().unwrap().bad.clear();
    let report = replay(&exec, build(), FailedBatchFilter::default())
        .await
        .unwrap();
    assert_eq!(report.delivered.len(), 2, "{report:#?}");
    assert_eq!(ids(&db), (0..40).collect());
    let again = replay(&exec, build(), FailedBatchFilter::default())
        .await
        .unwrap();
    assert!(again.delivered.is_empty() && again.failed_again.is_empty());
    assert_eq!(ids(&db), (0..40).collect());
}

#[tokio::test]
async fn a_long_outage_fills_the_failed_store_and_replay_delivers_all() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir).await;
    let db = Arc::new(Mutex::new(Db {
        outages: 1000,
        ..Db::default()
    }));
    let build = || {
        Pipeline::new(
            "p",
            vec![
                pages("src", 6, 5),
                node(
                    "db",
                    &["src"],
                    NodeRunner::Sink(Box::new(MemSink(db.clone()))),
                ),
            ],
        )
    };
    let summary = exec.run(build(), Trigger::Manual).await.unwrap();
    assert_eq!(summary.status, RunStatus::Failed);
    assert_eq!(summary.nodes[1].counts.quarantined, 30);
    assert!(
        summary.nodes[1]
            .error
            .as_deref()
            .unwrap()
            .contains("sluice replay"),
        "{summary:#?}"
    );
    assert!(ids(&db).is_empty());

    db.lock().unwrap().outages = 0;
    let report = replay(&exec, build(), FailedBatchFilter::default())
        .await
        .unwrap();
    assert_eq!(report.delivered.len(), 6);
    assert_eq!(ids(&db), (0..30).collect());
}

#[tokio::test]
async fn a_failed_node_compensates_completed_nodes_in_reverse_order_and_skips_downstream() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let task = |id: &str, after: &[&str], fails: bool, comp: Option<&'static str>| {
        let mut n = node(
            id,
            &[],
            NodeRunner::Task(Box::new(Note(
                log.clone(),
                Box::leak(id.to_owned().into_boxed_str()),
                fails,
            ))),
        );
        n.after = after.iter().map(|s| s.to_string()).collect();
        n.compensate = comp.map(|c| Box::new(Note(log.clone(), c, false)) as Box<dyn Task>);
        n
    };
    let pipeline = Pipeline::new(
        "p",
        vec![
            task("prepare", &[], false, Some("undo prepare")),
            task("load", &["prepare"], false, Some("undo load")),
            task("publish", &["load"], true, Some("undo publish")),
            task("notify", &["publish"], false, None),
        ],
    );
    let summary = exec.run(pipeline, Trigger::Manual).await.unwrap();
    assert_eq!(summary.status, RunStatus::Failed);
    let status: Vec<_> = summary
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.status))
        .collect();
    assert_eq!(
        status,
        [
            ("prepare", RunStatus::Succeeded),
            ("load", RunStatus::Succeeded),
            ("publish", RunStatus::Failed),
            ("notify", RunStatus::Skipped)
        ]
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["prepare", "load", "publish", "undo load", "undo prepare"]
    );
    let (run, _, attempts) = exec.store().run(&summary.run_id).await.unwrap();
    assert!(run.error.unwrap().contains("publish is not allowed"));
    assert!(
        attempts
            .iter()
            .any(|a| a.detail.contains("compensated: undo load"))
    );
}

#[tokio::test]
async fn dispositions_can_be_overridden_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir).await;
    let db = Arc::new(Mutex::new(Db {
        max_rows: Some(3),
        ..Db::default()
    }));
    let mut sink = node(
        "db",
        &["src"],
        NodeRunner::Sink(Box::new(MemSink(db.clone()))),
    );
    sink.dispositions
        .set(ErrorClass::PayloadTooLarge, Disposition::Fail);
    let summary = exec
        .run(
            Pipeline::new("p", vec![pages("src", 2, 10), sink]),
            Trigger::Manual,
        )
        .await
        .unwrap();
    assert_eq!(summary.status, RunStatus::Failed);
    assert!(
        summary.nodes[1]
            .error
            .as_deref()
            .unwrap()
            .contains("payload_too_large")
    );
    // The failing batch is kept for replay, not lost.
    let failed = exec
        .store()
        .failed_batches(&FailedBatchFilter::default(), false)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].rows, 10);
}

/// A source that panics on its second page (as an overflow on a value from outside did).
struct Panics(u64);

#[async_trait]
impl Source for Panics {
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError> {
        self.0 += 1;
        if self.0 > 1 {
            let far = std::time::Instant::now();
            let _ = far + Duration::from_secs(u64::MAX); // overflows: panics
        }
        let records =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1i64])) as _)])
                .unwrap();
        Ok(Some(SourceBatch {
            batch: Batch::new("p", "src", SourcePosition::page(self.0), records),
            checkpoint: None,
        }))
    }
}

/// A sink that panics on its first batch.
struct PanicSink;

#[async_trait]
impl Sink for PanicSink {
    async fn write(&mut self, _: &Batch) -> Result<WriteReport, ConnectorError> {
        let ids: Vec<u64> = Vec::new();
        let _ = ids[0]; // out of bounds: panics
        Ok(WriteReport::default())
    }

    async fn health(&self) -> Result<Duration, ConnectorError> {
        Ok(Duration::ZERO)
    }
}

/// A transform that panics on its first batch.
struct PanicTransform;

impl Transform for PanicTransform {
    fn apply(&mut self, records: RecordBatch) -> Result<RecordBatch, ConnectorError> {
        let rows = records.num_rows() as u32;
        let _ = rows - (rows + 1); // overflows: panics
        Ok(records)
    }
}

/// Runs `pipeline`, where node `panics` panics: the run ends (within 10 s, a bound for a
/// loaded machine, not a speed: before, it never ended), failed, that node
/// `internal` with the panic told, in the store too.
async fn fails_for_the_panic_of(pipeline: Pipeline, panics: &str) {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir).await;
    // A bound that tells a hang (forever) from a busy machine: these runs take under a
    // second alone, yet went past 10 s twice within the whole suite.
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        exec.run(pipeline, Trigger::Manual),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("the run ends (a panicked {panics} used to leave its neighbours waiting forever)")
    })
    .unwrap();
    assert_eq!(summary.status, RunStatus::Failed);
    let node = summary.nodes.iter().find(|n| n.id == panics).unwrap();
    assert_eq!(node.error_class, Some(ErrorClass::Internal), "{node:?}");
    assert!(
        node.error
            .as_deref()
            .unwrap_or_default()
            .contains("panicked"),
        "{node:?}"
    );
    let (run, nodes, attempts) = exec.store().run(&summary.run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        nodes
            .iter()
            .any(|n| n.node == panics && n.status == RunStatus::Failed),
        "{nodes:?}"
    );
    assert!(attempts.iter().any(|a| a.class == ErrorClass::Internal));
}

#[tokio::test]
async fn a_panic_in_a_node_fails_the_run_instead_of_hanging_it() {
    let db = Arc::new(Mutex::new(Db::default()));
    let source = node(
        "src",
        &[],
        NodeRunner::Source(Box::new(|_| {
            async { Ok(Box::new(Panics(0)) as Box<dyn Source>) }.boxed()
        })),
    );
    let sink = node("db", &["src"], NodeRunner::Sink(Box::new(MemSink(db))));
    fails_for_the_panic_of(Pipeline::new("p", vec![source, sink]), "src").await;
}

#[tokio::test]
async fn a_panic_in_a_sink_fails_the_run_instead_of_hanging_it() {
    let sink = node("db", &["src"], NodeRunner::Sink(Box::new(PanicSink)));
    fails_for_the_panic_of(Pipeline::new("p", vec![pages("src", 3, 10), sink]), "db").await;
}

#[tokio::test]
async fn a_panic_in_a_transform_fails_the_run_instead_of_hanging_it() {
    let db = Arc::new(Mutex::new(Db::default()));
    let pipeline = Pipeline::new(
        "p",
        vec![
            pages("src", 3, 10),
            node(
                "double",
                &["src"],
                NodeRunner::Transform(Box::new(PanicTransform)),
            ),
            node("db", &["double"], NodeRunner::Sink(Box::new(MemSink(db)))),
        ],
    );
    fails_for_the_panic_of(pipeline, "double").await;
}

/// `pages` that says when it has read its last page.
fn pages_announced(name: &'static str, pages: u64, rows: i64, done: Arc<Notify>) -> NodeDef {
    struct Announced(Pages, Arc<Notify>);

    #[async_trait]
    impl Source for Announced {
        async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError> {
            let next = self.0.next_batch().await?;
            if next.is_none() {
                self.1.notify_one();
            }
            Ok(next)
        }
    }

    pages_as(name, pages, rows, move |p| {
        Box::new(Announced(p, done.clone()))
    })
}

/// A sink that takes several batches at once (`group_rows`), all or nothing, over the
/// same fake database; its first write waits for the source's last page, so the
/// batches wait in the buffer, as after an outage.
struct GroupSink {
    db: Arc<Mutex<Db>>,
    first_waits_for: Option<Arc<Notify>>,
    /// The batches of each group written, in order.
    groups: Arc<Mutex<Vec<usize>>>,
    /// Fail this many group writes (the batches are then written one by one).
    group_failures: u32,
    /// In this many group writes, write only the last batch and hand the others back
    /// (as a sink whose first half failed does).
    hand_backs: u32,
}

#[async_trait]
impl Sink for GroupSink {
    async fn write(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        if let Some(source_done) = self.first_waits_for.take() {
            source_done.notified().await;
        }
        MemSink(self.db.clone()).write(batch).await
    }

    fn group_rows(&self) -> usize {
        25
    }

    async fn write_group(
        &mut self,
        batches: &[Batch],
    ) -> Result<Vec<Option<WriteReport>>, ConnectorError> {
        if self.group_failures > 0 {
            self.group_failures -= 1;
            return Err(ConnectorError::new(
                ErrorClass::Dependency,
                "the group's transaction was rolled back",
            ));
        }
        let mut db = self.db.lock().unwrap();
        if batches
            .iter()
            .any(|b| db.ledger.contains(b.ledger_key().as_str()))
        {
            return Err(ConnectorError::new(
                ErrorClass::Internal,
                "a batch written before",
            ));
        }
        let hand_back = if self.hand_backs > 0 {
            self.hand_backs -= 1;
            batches.len() - 1
        } else {
            0
        };
        let mut reports = vec![None; hand_back];
        for batch in &batches[hand_back..] {
            db.ledger.insert(batch.ledger_key().to_string());
            let ids = id_column(&batch.records);
            db.rows.extend(ids.values().iter().copied());
            reports.push(Some(WriteReport {
                written: ids.len(),
                ..WriteReport::default()
            }));
        }
        self.groups.lock().unwrap().push(batches.len());
        Ok(reports)
    }

    async fn health(&self) -> Result<Duration, ConnectorError> {
        Ok(Duration::ZERO)
    }
}

/// A sink that falls behind takes what waits in the buffer several batches at a time,
/// up to its `group_rows`, and every record is written once, counted once; a group that
/// fails is written one batch at a time, recording no failed attempt; batches a group
/// write hands back are written one by one after it; a run after it writes nothing twice.
#[tokio::test]
async fn a_sink_behind_takes_batches_in_groups_and_a_failed_group_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(&dir).await;
    let db = Arc::new(Mutex::new(Db::default()));
    let groups = Arc::new(Mutex::new(Vec::new()));
    let build = |extra: u64, group_failures: u32, hand_backs: u32| {
        let source_done = Arc::new(Notify::new());
        Pipeline::new(
            "p",
            vec![
                pages_announced("src", 40 + extra, 10, source_done.clone()),
                node(
                    "db",
                    &["src"],
                    NodeRunner::Sink(Box::new(GroupSink {
                        db: db.clone(),
                        first_waits_for: Some(source_done),
                        groups: groups.clone(),
                        group_failures,
                        hand_backs,
                    })),
                ),
            ],
        )
    };
    let summary = exec.run(build(0, 0, 0), Trigger::Manual).await.unwrap();
    assert_eq!(summary.status, RunStatus::Succeeded, "{summary:#?}");
    assert_eq!(ids(&db), (0..400).collect());
    let sink = summary.nodes.iter().find(|n| n.id == "db").unwrap();
    assert_eq!(sink.counts.records_in, 400);
    assert_eq!(sink.counts.records_out, 400);
    assert_eq!(sink.counts.batches, 40);
    let seen = groups.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|&n| (2..=3).contains(&n)),
        "groups of 2 or 3 batches of 10 rows (25 rows asked): {seen:?}"
    );
    assert!(
        seen.iter().sum::<usize>() >= 30,
        "the batches that waited went in groups: {seen:?}"
    );

    // Every group fails once: the batches are written one by one, each once, and the
    // failed group is no failed attempt of the node.
    groups.lock().unwrap().clear();
    let summary = exec.run(build(20, 100, 0), Trigger::Manual).await.unwrap();
    assert_eq!(summary.status, RunStatus::Succeeded, "{summary:#?}");
    assert_eq!(ids(&db), (0..600).collect());
    assert!(groups.lock().unwrap().is_empty());
    let sink = summary.nodes.iter().find(|n| n.id == "db").unwrap();
    assert_eq!(sink.counts.records_out, 200);
    assert_eq!(sink.counts.retries, 0);
    let (_, _, attempts) = exec.store().run(&summary.run_id).await.unwrap();
    assert!(attempts.is_empty(), "{attempts:?}");

    // Every group writes its last batch and hands the others back: they are written one
    // by one after it, each once, counted once, no duplicate.
    groups.lock().unwrap().clear();
    let summary = exec.run(build(40, 0, 100), Trigger::Manual).await.unwrap();
    assert_eq!(summary.status, RunStatus::Succeeded, "{summary:#?}");
    assert_eq!(ids(&db), (0..800).collect());
    assert!(!groups.lock().unwrap().is_empty());
    let sink = summary.nodes.iter().find(|n| n.id == "db").unwrap();
    assert_eq!(
        (sink.counts.records_in, sink.counts.records_out),
        (200, 200)
    );
    assert_eq!((sink.counts.batches, sink.counts.duplicates), (20, 0));
}

/// The embedded log, but its subscriptions lose the third batch they read and hand out
/// the ones after it, whose commits pass it: a buffer that drops a message.
struct Lossy(EmbeddedLog);

#[async_trait]
impl sluice_buffer::Buffer for Lossy {
    async fn publish(&self, topic: &str, batch: &Batch) -> Result<(), sluice_buffer::BufferError> {
        self.0.publish(topic, batch).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn sluice_buffer::Subscription>, sluice_buffer::BufferError> {
        Ok(Box::new(LossySubscription {
            inner: self.0.subscribe(topic, group).await?,
            read: 0,
        }))
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<u64, sluice_buffer::BufferError> {
        self.0.lag(topic, group).await
    }

    async fn health(&self) -> Result<Duration, sluice_buffer::BufferError> {
        self.0.health().await
    }
}

struct LossySubscription {
    inner: Box<dyn sluice_buffer::Subscription>,
    read: usize,
}

#[async_trait]
impl sluice_buffer::Subscription for LossySubscription {
    async fn next_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<sluice_buffer::Delivery>, sluice_buffer::BufferError> {
        loop {
            let delivery = self.inner.next_within(wait).await?;
            if let Some(sluice_buffer::Delivery::Batch { .. }) = &delivery {
                self.read += 1;
                if self.read == 3 {
                    continue;
                }
            }
            return Ok(delivery);
        }
    }

    async fn commit(
        &mut self,
        ack: &sluice_buffer::AckToken,
    ) -> Result<(), sluice_buffer::BufferError> {
        self.inner.commit(ack).await
    }
}

/// Records lost between the buffer and a sink fail the run, loudly, instead of a run
/// that succeeded with fewer rows (before: `succeeded`, 90 of 100 rows).
#[tokio::test]
async fn records_lost_between_the_buffer_and_a_sink_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor_over(&dir, |log| Arc::new(Lossy(log))).await;
    let db = Arc::new(Mutex::new(Db::default()));
    let pipeline = Pipeline::new(
        "p",
        vec![
            pages("src", 10, 10),
            node(
                "db",
                &["src"],
                NodeRunner::Sink(Box::new(MemSink(db.clone()))),
            ),
        ],
    );
    let summary = exec.run(pipeline, Trigger::Manual).await.unwrap();
    assert_eq!(summary.status, RunStatus::Failed, "{summary:#?}");
    let sink = summary.nodes.iter().find(|n| n.id == "db").unwrap();
    assert_eq!(sink.error_class, Some(ErrorClass::Internal));
    let error = sink.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("took 90 records") && error.contains("handed on 100"),
        "{error}"
    );
    assert_eq!(ids(&db).len(), 90);
}

/// `pages`, but after every `quick` pages it waits for `more` (new data that is not there
/// yet) before reading on.
struct Waits {
    pages: Pages,
    quick: u64,
    more: Arc<Notify>,
}

#[async_trait]
impl Source for Waits {
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError> {
        if self.pages.next > 0 && self.pages.next % self.quick == 0 {
            self.more.notified().await;
        }
        self.pages.next_batch().await
    }
}

/// A source's checkpoint may be held back a moment while pages come fast, but never left
/// behind: a source waiting for new data has it saved within that moment, and a run
/// stopped saves the checkpoint of every page acked before the stop.
#[tokio::test]
async fn a_checkpoint_held_back_is_saved_while_the_source_waits_and_on_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let exec = executor(&dir).await.with_shutdown(shutdown.clone());
    let more = Arc::new(Notify::new());
    let db = Arc::new(Mutex::new(Db::default()));
    let waits = more.clone();
    let source = pages_as("src", 20, 10, move |pages| {
        Box::new(Waits {
            pages,
            quick: 6,
            more: waits.clone(),
        })
    });
    let sink = node("db", &["src"], NodeRunner::Sink(Box::new(MemSink(db))));
    let store = exec.store().clone();
    let run = tokio::spawn(async move {
        exec.run(Pipeline::new("p", vec![source, sink]), Trigger::Manual)
            .await
    });
    let checkpoint = || async { store.checkpoint("p", "src").await.unwrap() };
    let saved = |next: u64| {
        let checkpoint = &checkpoint;
        async move {
            let waited = std::time::Instant::now();
            while checkpoint().await != Some(serde_json::json!({ "next": next })) {
                assert!(
                    waited.elapsed() < Duration::from_secs(30),
                    "the checkpoint of the pages read before the wait is saved during it: {:?}",
                    checkpoint().await
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    saved(6).await;
    more.notify_one();
    saved(12).await;
    // Stopped as soon as that checkpoint is saved: the next page's, read after the stop
    // was asked for, is too recent to be due, and is saved on the way out.
    shutdown.cancel();
    more.notify_one();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.status, RunStatus::Cancelled, "{summary:#?}");
    assert_eq!(checkpoint().await, Some(serde_json::json!({ "next": 13 })));
}
