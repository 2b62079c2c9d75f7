//! `sluice replay`: re-delivers failed batches from the node where they failed, then
//! lets the nodes downstream of it read them from the buffer, so that they reach the sinks.

use futures::FutureExt;
use serde::Serialize;
use sluice_buffer::wire;
use sluice_core::{Batch, ConnectorError, RunInfo, Sink, Source};
use sluice_state::{FailedBatchFilter, FailedBatchRow, RunStatus, Trigger};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::EngineError;
use crate::deliver::{NodeCtx, Target, deliver};
use crate::pipeline::{NodeDef, NodeRunner, Pipeline, topic_name};
use crate::run::{Executor, REREAD_KEY, TransformTarget};

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// The replay's run id.
    pub run_id: String,
    /// Failed batches delivered (and marked resolved), with their record counts.
    pub delivered: Vec<(String, i64)>,
    /// Failed batches that failed again (still in the store), with the error.
    pub failed_again: Vec<(String, String)>,
    /// Failed batches that cannot be replayed this way, with why.
    pub not_replayable: Vec<(String, String)>,
    /// How the nodes downstream of the re-delivered batches ended, when they had to run
    /// (batches replayed at a source or a transform go on through the buffer).
    pub downstream: Option<crate::RunSummary>,
}

/// Re-delivers the failed batches of `pipeline` that match `filter`, each from the node
/// where it failed onwards: a sink writes it; a transform reshapes and publishes it; a
/// source reads the quarantined records again from where it found them and publishes
/// them. Then the pipeline's consumers run (its sources reading nothing new, its tasks
/// not run) to carry what was published to the sinks. Idempotent: a batch delivered
/// before is recognised by the sink's ledger and not written twice, and resolved batches
/// are not selected again.
pub async fn replay(
    executor: &Executor,
    mut pipeline: Pipeline,
    mut filter: FailedBatchFilter,
) -> Result<ReplayReport, EngineError> {
    filter.pipeline = Some(pipeline.name.clone());
    filter.include_resolved = false;
    let store = executor.store().clone();
    let failed = store.failed_batches(&filter, true).await?;
    let run_id = store.start_run(&pipeline.name, Trigger::Replay).await?;
    let mut replay = Replay {
        executor,
        pipeline: pipeline.name.clone(),
        namespace: pipeline.namespace(),
        run_id: run_id.clone(),
        sources: HashMap::new(),
        published: false,
        report: ReplayReport {
            run_id,
            ..ReplayReport::default()
        },
    };
    let selected = failed.len();
    let alerts = pipeline.alerts.clone();
    let name = pipeline.name.clone();
    for row in failed {
        let result = replay.redeliver(&mut pipeline.nodes, &row).await;
        replay.settle(row, result).await?;
    }
    let report = replay.finish(pipeline).await?;
    if selected > 0 {
        let (alert, next) = replay_alert(&name, &report);
        crate::alerts::raise(&alerts, &alert, &next, &store).await;
    }
    Ok(report)
}

/// The alert of a finished replay: `info` when everything went through, `warning` when
/// batches still fail (with the command that lists them).
fn replay_alert(pipeline: &str, report: &ReplayReport) -> (sluice_state::AlertRow, String) {
    use sluice_state::{AlertKind, AlertRow, AlertSeverity};
    let records: i64 = report.delivered.iter().map(|(_, n)| n).sum();
    let downstream_failed = report
        .downstream
        .as_ref()
        .is_some_and(|d| d.status != sluice_state::RunStatus::Succeeded);
    let still = report.failed_again.len() + report.not_replayable.len();
    let mut message = format!(
        "replay {}: {} batch(es) / {records} record(s) delivered, {} still failing, {} not replayable",
        report.run_id,
        report.delivered.len(),
        report.failed_again.len(),
        report.not_replayable.len()
    );
    if let Some(d) = report.downstream.as_ref().filter(|_| downstream_failed) {
        message.push_str(&format!("; the nodes downstream ended {}", d.status));
    }
    let ok = still == 0 && !downstream_failed;
    let alert = AlertRow {
        pipeline: pipeline.to_owned(),
        node: None,
        kind: AlertKind::ReplayFinished,
        class: None,
        severity: if ok {
            AlertSeverity::Info
        } else {
            AlertSeverity::Warning
        },
        message,
        at: sluice_state::now_ms(),
    };
    let next = if ok {
        format!("sluice runs show {}", report.run_id)
    } else {
        format!("sluice failed list --pipeline {pipeline}")
    };
    (alert, next)
}

/// A replay under way: what it opened and what it did so far.
struct Replay<'a> {
    executor: &'a Executor,
    pipeline: String,
    /// Start of topic and group names (see `Pipeline::namespace`).
    namespace: String,
    run_id: String,
    /// One source per node, opened at its first batch, reads all of that node's batches.
    sources: HashMap<String, Box<dyn Source>>,
    /// Whether batches went to the buffer, for the nodes downstream to carry on.
    published: bool,
    report: ReplayReport,
}

/// Why a kept batch was not delivered.
enum Refused {
    /// It cannot be replayed this way; the reason says what to do instead.
    NotReplayable(String),
    /// Its node failed it again: it stays in the failed-batch store.
    FailedAgain(String),
}

impl From<ConnectorError> for Refused {
    fn from(e: ConnectorError) -> Self {
        Refused::FailedAgain(e.to_string())
    }
}

impl Replay<'_> {
    /// Delivers one kept batch again from the node where it failed.
    async fn redeliver(
        &mut self,
        nodes: &mut [NodeDef],
        row: &FailedBatchRow,
    ) -> Result<(), Refused> {
        let Some(node) = nodes.iter_mut().find(|n| n.id == row.node) else {
            return Err(Refused::NotReplayable(format!(
                "node `{}` is no longer in the pipeline",
                row.node
            )));
        };
        let batch = kept_batch(&row.payload).map_err(Refused::NotReplayable)?;
        let mut ctx = self.node_ctx(node);
        match node.runner {
            NodeRunner::Source(_) => self.at_source(node, &mut ctx, &batch).await?,
            NodeRunner::Sink(ref mut sink) => at_sink(&mut ctx, sink.as_mut(), batch).await?,
            NodeRunner::Transform(_) => self.at_transform(node, &mut ctx, batch).await?,
            ref other => {
                return Err(Refused::NotReplayable(format!(
                    "batches failed at a {} node cannot be replayed; run the pipeline again",
                    other.role()
                )));
            }
        }
        // Handled, but by keeping it in the failed-batch store again.
        if ctx.quarantined_ids.contains(&row.id) {
            return Err(Refused::FailedAgain(
                "failed again; it stays in the failed-batch store".into(),
            ));
        }
        Ok(())
    }

    /// What a node needs to handle the batch's failures, in the replay's run.
    fn node_ctx(&self, node: &NodeDef) -> NodeCtx {
        NodeCtx {
            pipeline: self.pipeline.clone(),
            namespace: self.namespace.clone(),
            node: node.id.clone(),
            run_id: self.run_id.clone(),
            load: None,
            retry: node.retry.clone(),
            dispositions: node.dispositions.clone(),
            store: self.executor.store().clone(),
            events: None,
            cancel: self.executor.shutdown_token(),
            stats: sluice_state::NodeCounts::default(),
            link_down: false,
            quarantined_ids: Vec::new(),
            schema_drift: Vec::new(),
            gate: None,
            wrote: false,
            hand_back: false,
            poisoned: false,
        }
    }

    /// Records quarantined by a source: read again from where the source found them, and
    /// published to its topic.
    async fn at_source(
        &mut self,
        node: &mut NodeDef,
        ctx: &mut NodeCtx,
        batch: &Batch,
    ) -> Result<(), Refused> {
        let Some(reread) = batch
            .records
            .schema()
            .metadata()
            .get(REREAD_KEY)
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        else {
            return Err(Refused::NotReplayable(
                "the kept batch does not say where its source can read it again; run the pipeline again".into(),
            ));
        };
        let (executor, topic) = (self.executor, topic_name(&self.namespace, &node.id));
        let source = self.open_source(node).await?;
        reread_and_publish(executor, ctx, source, &reread, &topic).await?;
        self.published = true;
        Ok(())
    }

    /// The node's source, opened (from no checkpoint) at its first batch; its runner is
    /// then a source that reads nothing, for the run downstream.
    async fn open_source(&mut self, node: &mut NodeDef) -> Result<&mut dyn Source, ConnectorError> {
        let source = match self.sources.entry(node.id.clone()) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(slot) => {
                let NodeRunner::Source(factory) =
                    std::mem::replace(&mut node.runner, empty_source())
                else {
                    unreachable!("a source node's runner is a source")
                };
                slot.insert(factory(None).await?)
            }
        };
        Ok(source.as_mut())
    }

    /// A batch that failed at a transform: transformed again and published to its topic.
    async fn at_transform(
        &mut self,
        node: &mut NodeDef,
        ctx: &mut NodeCtx,
        batch: Batch,
    ) -> Result<(), ConnectorError> {
        let NodeRunner::Transform(transform) =
            std::mem::replace(&mut node.runner, NodeRunner::Task(Box::new(Noop)))
        else {
            unreachable!("a transform node's runner is a transform")
        };
        let mut target = TransformTarget {
            transform,
            buffer: self.executor.buffer().clone(),
            topic: topic_name(&self.namespace, &node.id),
            pipeline: self.pipeline.clone(),
            node: node.id.clone(),
        };
        let result = deliver(ctx, &mut target, batch).await;
        node.runner = NodeRunner::Transform(target.transform);
        self.published |= result.is_ok();
        result
    }

    /// Marks a delivered batch resolved, or tells why it was not.
    async fn settle(
        &mut self,
        row: FailedBatchRow,
        result: Result<(), Refused>,
    ) -> Result<(), EngineError> {
        match result {
            Ok(()) => {
                self.executor
                    .store()
                    .resolve_failed(&row.pipeline, &row.node, &row.id)
                    .await?;
                self.report.delivered.push((row.id, row.rows));
            }
            Err(Refused::FailedAgain(why)) => self.report.failed_again.push((row.id, why)),
            Err(Refused::NotReplayable(why)) => self.report.not_replayable.push((row.id, why)),
        }
        Ok(())
    }

    /// Carries what was published to the sinks, if anything, and finishes the run.
    async fn finish(mut self, pipeline: Pipeline) -> Result<ReplayReport, EngineError> {
        let store = self.executor.store();
        let run_id = &self.report.run_id;
        if !self.published {
            let status = if self.report.failed_again.is_empty() {
                RunStatus::Succeeded
            } else {
                RunStatus::PartiallySucceeded
            };
            store.finish_run(run_id, status, None).await?;
            return Ok(self.report);
        }
        let summary = self
            .executor
            .run_as(downstream_only(pipeline), RunInfo::replay(run_id.clone()))
            .await?;
        if summary.status != RunStatus::Succeeded || !self.report.failed_again.is_empty() {
            let status = match summary.status {
                RunStatus::Succeeded => RunStatus::PartiallySucceeded,
                other => other,
            };
            store.finish_run(run_id, status, None).await?;
        }
        self.report.downstream = Some(summary);
        Ok(self.report)
    }
}

/// The batch kept in the failed-batch store, or why it cannot be delivered again.
fn kept_batch(payload: &[u8]) -> Result<Batch, String> {
    match wire::Message::from_frame(payload).and_then(|m| wire::decode(&m)) {
        // An orphaned part (its batch never arrived whole): delivering it under the
        // batch's id would let the ledger skip the whole batch once it does arrive.
        Ok(d) if d.split.is_some() => Err(
            "an orphaned part of a split batch (the rest of the batch never reached the buffer): inspect it with `sluice failed show`; run the pipeline again to read its page again, then `sluice failed drop` it".into(),
        ),
        Ok(d) => Ok(d.batch),
        Err(e) => Err(format!(
            "the kept payload does not decode ({e}); inspect it with `sluice failed show`, then `sluice failed drop` it"
        )),
    }
}

/// A batch that failed at a sink: written again.
async fn at_sink(
    ctx: &mut NodeCtx,
    sink: &mut dyn Sink,
    batch: Batch,
) -> Result<(), ConnectorError> {
    crate::names::begin_sink(ctx, sink)?;
    deliver(ctx, &mut BorrowedSink { sink }, batch).await
}

/// The pipeline with only its consumers doing anything: the sources read nothing new,
/// tasks and compensations do not run.
fn downstream_only(mut pipeline: Pipeline) -> Pipeline {
    for node in &mut pipeline.nodes {
        node.compensate = None;
        match node.runner {
            NodeRunner::Source(_) => node.runner = empty_source(),
            NodeRunner::Task(_) => node.runner = NodeRunner::Task(Box::new(Noop)),
            _ => {}
        }
    }
    pipeline
}

/// A source that reads nothing: stands in for the sources while a replay drains.
fn empty_source() -> NodeRunner {
    NodeRunner::Source(Box::new(|_| {
        async { Ok(Box::new(EmptySource) as Box<dyn Source>) }.boxed()
    }))
}

struct EmptySource;

#[async_trait::async_trait]
impl Source for EmptySource {
    async fn next_batch(&mut self) -> Result<Option<sluice_core::SourceBatch>, ConnectorError> {
        Ok(None)
    }
}

/// Opens the source, reads the quarantined records again and publishes them to its topic.
async fn reread_and_publish(
    executor: &Executor,
    ctx: &mut NodeCtx,
    source: &mut dyn Source,
    reread: &serde_json::Value,
    topic: &str,
) -> Result<(), ConnectorError> {
    let batches = source.reread(reread).await;
    let events = source.drain_events();
    ctx.record_events(&events).await;
    ctx.connector_events(events, true);
    let batches = batches?;
    for batch in batches {
        executor.buffer().publish(topic, &batch).await?;
        ctx.stats.records_out += batch.num_rows() as i64;
        ctx.stats.batches += 1;
    }
    Ok(())
}

struct BorrowedSink<'a> {
    sink: &'a mut dyn Sink,
}

#[async_trait::async_trait]
impl Target for BorrowedSink<'_> {
    async fn handle(&mut self, batch: &Batch) -> Result<sluice_core::WriteReport, ConnectorError> {
        self.sink.write(batch).await
    }
}

struct Noop;

#[async_trait::async_trait]
impl crate::Task for Noop {
    async fn run(&self, _: &crate::TaskContext) -> Result<(), ConnectorError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "nothing".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_that_delivered_everything_is_info_and_one_that_left_batches_a_warning() {
        let done = ReplayReport {
            run_id: "r1".into(),
            delivered: vec![("b1".into(), 2), ("b2".into(), 3)],
            ..ReplayReport::default()
        };
        let (alert, next) = replay_alert("orders", &done);
        assert_eq!(alert.kind, sluice_state::AlertKind::ReplayFinished);
        assert_eq!(alert.severity, sluice_state::AlertSeverity::Info);
        assert_eq!(
            alert.message,
            "replay r1: 2 batch(es) / 5 record(s) delivered, 0 still failing, 0 not replayable"
        );
        assert_eq!(next, "sluice runs show r1");

        let partly = ReplayReport {
            failed_again: vec![("b3".into(), "still down".into())],
            ..done
        };
        let (alert, next) = replay_alert("orders", &partly);
        assert_eq!(alert.severity, sluice_state::AlertSeverity::Warning);
        assert!(
            alert.message.contains("1 still failing"),
            "{}",
            alert.message
        );
        assert_eq!(next, "sluice failed list --pipeline orders");
    }
}
