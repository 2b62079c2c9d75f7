//! Health-gated flow over the embedded buffer: a sink whose link is down waits for it
//! while the source reads nothing, then every batch is delivered once without spending
//! retries; a backlog above `max_lag` raises `backlog` and, under `when_link_down:
//! buffer`, pauses the source until the sink caught up; a buffer down after the sources
//! ended is waited for by the sink checking it caught up.

use arrow::array::{Array, Int64Array, RecordBatch};
use async_trait::async_trait;
use futures::FutureExt;
use sluice_buffer::{EmbeddedLog, EmbeddedOptions};
use sluice_config::spec::WhenLinkDown;
use sluice_config::{Link, LinkKind};
use sluice_core::{
    Batch, ConnectorError, ErrorClass, RetryPolicy, Sink, Source, SourceBatch, SourcePosition,
    WriteReport,
};
use sluice_engine::gate::LinkProbe;
use sluice_engine::{Dispositions, EventKind, Executor, GateSpec, NodeDef, NodeRunner, Pipeline};
use sluice_state::{AlertKind, RunStatus, StateStore, Trigger};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Pages of 5 ids; counts its reads; at page `hold_at` waits for `hold` once.
struct Pages {
    next: u64,
    pages: u64,
    reads: Arc<AtomicU64>,
    hold_at: Option<(u64, Arc<Notify>)>,
    pace: Duration,
}

#[async_trait]
impl Source for Pages {
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError> {
        if self.next >= self.pages {
            return Ok(None);
        }
        if let Some((at, hold)) = &self.hold_at
            && *at == self.next
        {
            hold.notified().await;
        }
        if !self.pace.is_zero() {
            tokio::time::sleep(self.pace).await;
        }
        self.reads.fetch_add(1, Ordering::SeqCst);
        let start = self.next as i64 * 5;
        let ids: Vec<i64> = (start..start + 5).collect();
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

/// A sink that fails with `dependency` while `down`, waits for `open` (if any) before
/// its first write, and goes down after its first write when `then_down`.
struct Flaky {
    down: Arc<AtomicBool>,
    rows: Arc<Mutex<Vec<i64>>>,
    open: Option<Arc<Notify>>,
    then_down: bool,
}

#[async_trait]
impl Sink for Flaky {
    async fn write(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        if let Some(open) = self.open.take() {
            open.notified().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(ConnectorError::new(
                ErrorClass::Dependency,
                "connection refused",
            ));
        }
        let ids = batch
            .records
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let mut rows = self.rows.lock().unwrap();
        rows.extend(ids.iter().flatten());
        if std::mem::take(&mut self.then_down) {
            self.down.store(true, Ordering::SeqCst);
        }
        Ok(WriteReport {
            written: ids.len(),
            ..WriteReport::default()
        })
    }

    async fn health(&self) -> Result<Duration, ConnectorError> {
        Ok(Duration::ZERO)
    }
}

fn node(id: &str, inputs: &[&str], runner: NodeRunner) -> NodeDef {
    NodeDef {
        id: id.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        after: Vec::new(),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryPolicy::default()
        },
        dispositions: Dispositions::default(),
        runner,
        compensate: None,
    }
}

fn source(
    pages: u64,
    reads: Arc<AtomicU64>,
    hold_at: Option<(u64, Arc<Notify>)>,
    pace: Duration,
) -> NodeDef {
    let hold_at = Arc::new(Mutex::new(hold_at));
    node(
        "src",
        &[],
        NodeRunner::Source(Box::new(move |_| {
            let (reads, hold_at) = (reads.clone(), hold_at.lock().unwrap().take());
            async move {
                Ok(Box::new(Pages {
                    next: 0,
                    pages,
                    reads,
                    hold_at,
                    pace,
                }) as Box<dyn Source>)
            }
            .boxed()
        })),
    )
}

async fn store(dir: &tempfile::TempDir) -> StateStore {
    StateStore::open(&format!("sqlite://{}/state.db", dir.path().display()))
        .await
        .unwrap()
}

fn gate(when: WhenLinkDown, max_lag: Option<u64>, probes: HashMap<String, LinkProbe>) -> GateSpec {
    GateSpec {
        when_link_down: when,
        max_lag,
        max_lag_age: None,
        probe_every: Duration::from_millis(10),
        buffer_link: "embedded test".into(),
        probes,
        file: None,
    }
}

#[tokio::test]
async fn a_sink_link_down_pauses_the_source_and_the_flow_resumes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let log = EmbeddedLog::open(dir.path().join("buffer"), EmbeddedOptions::default()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let exec = Executor::new(store.clone(), Arc::new(log)).with_events(tx);

    // Up for the first write, then down: an outage in the middle of the run.
    let down = Arc::new(AtomicBool::new(false));
    let rows = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicU64::new(0));
    // The source waits at its third page until the probe found the link down.
    let found_down = Arc::new(Notify::new());
    let probe: LinkProbe = {
        let (down, found_down) = (down.clone(), found_down.clone());
        Arc::new(move || {
            let (down, found_down) = (down.clone(), found_down.clone());
            vec![Link {
                kind: LinkKind::Database,
                name: "127.0.0.1:1/test (PostgreSQL)".into(),
                check: Box::pin(async move {
                    if down.load(Ordering::SeqCst) {
                        found_down.notify_one();
                        Err(ConnectorError::new(
                            ErrorClass::Dependency,
                            "connection refused",
                        ))
                    } else {
                        Ok(Duration::ZERO)
                    }
                }),
            }]
        })
    };
    let mut pipeline = Pipeline::new(
        "gated",
        vec![
            source(
                20,
                reads.clone(),
                Some((2, found_down.clone())),
                Duration::ZERO,
            ),
            node(
                "db",
                &["src"],
                NodeRunner::Sink(Box::new(Flaky {
                    down: down.clone(),
                    rows: rows.clone(),
                    open: None,
                    then_down: true,
                })),
            ),
        ],
    );
    pipeline.gate = Some(gate(
        WhenLinkDown::Pause,
        None,
        HashMap::from([("db".to_owned(), probe)]),
    ));
    // The test's side: once the source says it paused, note its reads and bring the
    // link back.
    let watcher = {
        let (down, reads) = (down.clone(), reads.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut reads_when_paused = None;
            while let Some(event) = rx.recv().await {
                if let EventKind::Paused { .. } = event.kind {
                    reads_when_paused = Some(reads.load(Ordering::SeqCst));
                    down.store(false, Ordering::SeqCst);
                }
                if let EventKind::Resumed { .. } = event.kind {
                    seen.push(("resumed".to_owned(), reads.load(Ordering::SeqCst)));
                }
                seen.push((format!("{:?}", event.kind).chars().take(14).collect(), 0));
            }
            (seen, reads_when_paused)
        })
    };
    let summary = exec.run(pipeline, Trigger::Manual).await.unwrap();
    drop(exec);
    let (seen, reads_when_paused) = watcher.await.unwrap();
    assert_eq!(summary.status, RunStatus::Succeeded, "{summary:#?}");
    let written: BTreeSet<i64> = rows.lock().unwrap().iter().copied().collect();
    assert_eq!(written.len(), rows.lock().unwrap().len(), "written twice");
    assert_eq!(written, (0..100).collect());
    let db = &summary.nodes[1];
    assert_eq!(db.counts.quarantined, 0);
    assert_eq!(db.counts.retries, 0, "an outage spends no retries");
    // The source read nothing while paused: its reads when it resumed are those when it
    // paused.
    let reads_when_paused = reads_when_paused.expect("the source paused");
    let resumed = seen.iter().find(|(k, _)| k == "resumed").expect("resumed");
    assert_eq!(resumed.1, reads_when_paused, "{seen:?}");
    assert!(
        seen.iter().any(|(k, _)| k.starts_with("LinkWentDown")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(k, _)| k.starts_with("LinkCameBack")),
        "{seen:?}"
    );
    // The alerts (to the log: no channels), one each.
    let alerts = store.alerts(50).await.unwrap();
    let kinds: Vec<AlertKind> = alerts.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == AlertKind::LinkDown).count(),
        1,
        "{alerts:#?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == AlertKind::LinkRecovered)
            .count(),
        1,
        "{alerts:#?}"
    );
    // The pause is in the run record, at the source.
    let (_, _, attempts) = store.run(&summary.run_id).await.unwrap();
    let at_src: Vec<&str> = attempts
        .iter()
        .filter(|a| a.node == "src")
        .map(|a| a.detail.as_str())
        .collect();
    assert!(
        at_src.iter().any(|d| d.starts_with("paused: node `db`")),
        "{at_src:?}"
    );
    assert!(
        at_src.iter().any(|d| d.starts_with("resumed after")),
        "{at_src:?}"
    );
}

#[tokio::test]
async fn a_backlog_above_max_lag_alerts_and_pauses_the_source_under_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let log = EmbeddedLog::open(dir.path().join("buffer"), EmbeddedOptions::default()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let exec = Executor::new(store.clone(), Arc::new(log)).with_events(tx);
    let rows = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicU64::new(0));
    // The sink takes nothing until the source paused on the backlog.
    let open = Arc::new(Notify::new());
    let mut pipeline = Pipeline::new(
        "lagging",
        vec![
            source(80, reads.clone(), None, Duration::from_millis(20)),
            node(
                "db",
                &["src"],
                NodeRunner::Sink(Box::new(Flaky {
                    down: Arc::new(AtomicBool::new(false)),
                    rows: rows.clone(),
                    open: Some(open.clone()),
                    then_down: false,
                })),
            ),
        ],
    );
    pipeline.gate = Some(gate(WhenLinkDown::Buffer, Some(3), HashMap::new()));
    let watcher = tokio::spawn(async move {
        let mut paused = Vec::new();
        while let Some(event) = rx.recv().await {
            if let EventKind::Paused { cause, .. } = &event.kind {
                paused.push(cause.clone());
                open.notify_one();
            }
        }
        paused
    });
    let summary = exec.run(pipeline, Trigger::Manual).await.unwrap();
    drop(exec);
    let paused = watcher.await.unwrap();
    assert_eq!(summary.status, RunStatus::Succeeded, "{summary:#?}");
    assert!(!paused.is_empty());
    assert!(
        paused[0].contains("above `max_lag` (3 batches)"),
        "{paused:?}"
    );
    let written: BTreeSet<i64> = rows.lock().unwrap().iter().copied().collect();
    assert_eq!(written, (0..400).collect());
    let alerts = store.alerts(50).await.unwrap();
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a.kind == AlertKind::Backlog)
            .count(),
        1,
        "{alerts:#?}"
    );
}

/// The embedded log, unreachable from the first `lag` asked of it for `outage`: the
/// buffer going down after the source ended, while the sink checks it caught up.
struct LateOutage {
    inner: EmbeddedLog,
    down: Arc<AtomicBool>,
    started: AtomicBool,
    outage: Duration,
}

impl LateOutage {
    fn refused(&self) -> sluice_buffer::BufferError {
        sluice_buffer::BufferError::Io {
            path: "buffer".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotConnected, "buffer down"),
        }
    }
}

#[async_trait]
impl sluice_buffer::Buffer for LateOutage {
    async fn publish(&self, topic: &str, batch: &Batch) -> Result<(), sluice_buffer::BufferError> {
        self.inner.publish(topic, batch).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn sluice_buffer::Subscription>, sluice_buffer::BufferError> {
        self.inner.subscribe(topic, group).await
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<u64, sluice_buffer::BufferError> {
        if !self.started.swap(true, Ordering::SeqCst) {
            self.down.store(true, Ordering::SeqCst);
            let (down, outage) = (self.down.clone(), self.outage);
            tokio::spawn(async move {
                tokio::time::sleep(outage).await;
                down.store(false, Ordering::SeqCst);
            });
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(self.refused());
        }
        self.inner.lag(topic, group).await
    }

    async fn health(&self) -> Result<Duration, sluice_buffer::BufferError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(self.refused());
        }
        self.inner.health().await
    }
}

#[tokio::test]
async fn a_buffer_down_after_the_sources_ended_is_waited_for_under_pause() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let log = EmbeddedLog::open(dir.path().join("buffer"), EmbeddedOptions::default()).unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let buffer = LateOutage {
        inner: log,
        down: down.clone(),
        started: AtomicBool::new(false),
        outage: Duration::from_millis(300),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let exec = Executor::new(store.clone(), Arc::new(buffer)).with_events(tx);
    let rows = Arc::new(Mutex::new(Vec::new()));
    let mut pipeline = Pipeline::new(
        "late",
        vec![
            source(4, Arc::new(AtomicU64::new(0)), None, Duration::ZERO),
            node(
                "db",
                &["src"],
                NodeRunner::Sink(Box::new(Flaky {
                    down: Arc::new(AtomicBool::new(false)),
                    rows: rows.clone(),
                    open: None,
                    then_down: false,
                })),
            ),
        ],
    );
    pipeline.gate = Some(gate(WhenLinkDown::Pause, None, HashMap::new()));
    let summary = exec.run(pipeline, Trigger::Manual).await.unwrap();
    drop(exec);
    let mut kinds = Vec::new();
    while let Ok(event) = rx.try_recv() {
        kinds.push(format!("{:?}", event.kind));
    }
    assert_eq!(summary.status, RunStatus::Succeeded, "{summary:#?}");
    assert!(!down.load(Ordering::SeqCst), "the outage ended");
    let written: BTreeSet<i64> = rows.lock().unwrap().iter().copied().collect();
    assert_eq!(written, (0..20).collect());
    assert!(
        kinds.iter().any(|k| k.starts_with("LinkWentDown")),
        "{kinds:?}"
    );
}
