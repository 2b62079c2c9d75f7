//! `sluice replay`: re-delivers failed batches from the node where they failed, then
//! lets the nodes downstream of it read them from the buffer, so that they reach the sinks.

use serde::Serialize;
use sluice_buffer::wire;
use sluice_state::{FailedBatchFilter, RunStatus, Trigger};

use crate::EngineError;
use crate::deliver::{NodeCtx, Stats, Target, deliver};
use crate::pipeline::{NodeRunner, Pipeline, topic_name};
use crate::run::{Executor, REREAD_KEY, TransformTarget};
use futures::FutureExt;

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
    let namespace = pipeline.namespace();
    let mut report = ReplayReport {
        run_id: run_id.clone(),
        ..ReplayReport::default()
    };
    let mut published = false;
    let mut sources: std::collections::HashMap<String, Box<dyn sluice_core::Source>> =
        std::collections::HashMap::new();
    for row in failed {
        let Some(node) = pipeline.nodes.iter_mut().find(|n| n.id == row.node) else {
            report.not_replayable.push((
                row.id,
                format!("node `{}` is no longer in the pipeline", row.node),
            ));
            continue;
        };
        let decoded = wire::Message::from_frame(&row.payload).and_then(|m| wire::decode(&m));
        let batch = match decoded {
            // An orphaned part (its batch never arrived whole): delivering it under the
            // batch's id would let the ledger skip the whole batch once it does arrive.
            Ok(d) if d.split.is_some() => {
                report.not_replayable.push((
                    row.id,
                    "an orphaned part of a split batch (the rest of the batch never reached the buffer): inspect it with `sluice failed show`; run the pipeline again to read its page again, then `sluice failed drop` it".into(),
                ));
                continue;
            }
            Ok(d) => d.batch,
            Err(e) => {
                report.not_replayable.push((
                    row.id,
                    format!("the kept payload does not decode ({e}); inspect it with `sluice failed show`, then `sluice failed drop` it"),
                ));
                continue;
            }
        };
        let mut ctx = NodeCtx {
            pipeline: pipeline.name.clone(),
            namespace: namespace.clone(),
            node: node.id.clone(),
            run_id: run_id.clone(),
            load: None,
            retry: node.retry.clone(),
            dispositions: node.dispositions.clone(),
            store: store.clone(),
            events: None,
            cancel: executor.shutdown_token(),
            stats: Stats::default(),
            link_down: false,
            quarantined_ids: Vec::new(),
        };
        let topic = topic_name(&namespace, &node.id);
        let result = match &mut node.runner {
            NodeRunner::Source(_) => {
                let Some(reread) = batch
                    .records
                    .schema()
                    .metadata()
                    .get(REREAD_KEY)
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                else {
                    report.not_replayable.push((
                        row.id,
                        "the kept batch does not say where its source can read it again; run the pipeline again".into(),
                    ));
                    continue;
                };
                // One source per node, opened at its first batch, reads them all.
                if !sources.contains_key(&node.id) {
                    let NodeRunner::Source(factory) =
                        std::mem::replace(&mut node.runner, empty_source())
                    else {
                        unreachable!("matched a source")
                    };
                    match factory(None).await {
                        Ok(source) => {
                            sources.insert(node.id.clone(), source);
                        }
                        Err(e) => {
                            report.failed_again.push((row.id, e.to_string()));
                            continue;
                        }
                    }
                }
                let source = sources.get_mut(&node.id).expect("opened above");
                let result =
                    reread_and_publish(executor, &mut ctx, source.as_mut(), &reread, &topic).await;
                if result.is_ok() {
                    published = true;
                }
                result
            }
            NodeRunner::Sink(sink) => match crate::names::begin_sink(&ctx, sink.as_mut()) {
                Err(e) => Err(e),
                Ok(()) => {
                    let mut target = BorrowedSink {
                        sink: sink.as_mut(),
                    };
                    deliver(&mut ctx, &mut target, batch).await
                }
            },
            NodeRunner::Transform(_) => {
                let NodeRunner::Transform(transform) =
                    std::mem::replace(&mut node.runner, NodeRunner::Task(Box::new(Noop)))
                else {
                    unreachable!("matched a transform")
                };
                let mut target = TransformTarget {
                    transform,
                    buffer: executor.buffer().clone(),
                    topic,
                    pipeline: pipeline.name.clone(),
                    node: node.id.clone(),
                };
                let result = deliver(&mut ctx, &mut target, batch).await;
                node.runner = NodeRunner::Transform(target.transform);
                published |= result.is_ok();
                result
            }
            other => {
                report.not_replayable.push((
                    row.id,
                    format!(
                        "batches failed at a {} node cannot be replayed; run the pipeline again",
                        other.role()
                    ),
                ));
                continue;
            }
        };
        let again = ctx.quarantined_ids.contains(&row.id);
        match result {
            Ok(()) if !again => {
                store
                    .resolve_failed(&row.pipeline, &row.node, &row.id)
                    .await?;
                report.delivered.push((row.id, row.rows));
            }
            Ok(()) => report.failed_again.push((
                row.id,
                "failed again; it stays in the failed-batch store".into(),
            )),
            Err(e) => report.failed_again.push((row.id, e.to_string())),
        }
    }
    if published {
        // Carry what was published to the sinks: the consumers read their topics to the
        // end; sources read nothing new, tasks and compensations do not run.
        for node in &mut pipeline.nodes {
            node.compensate = None;
            match node.runner {
                NodeRunner::Source(_) => node.runner = empty_source(),
                NodeRunner::Task(_) => node.runner = NodeRunner::Task(Box::new(Noop)),
                _ => {}
            }
        }
        let summary = executor
            .run_as(pipeline, sluice_core::RunInfo::replay(run_id.clone()))
            .await?;
        if summary.status != RunStatus::Succeeded || !report.failed_again.is_empty() {
            let status = match summary.status {
                RunStatus::Succeeded => RunStatus::PartiallySucceeded,
                other => other,
            };
            store.finish_run(&run_id, status, None).await?;
        }
        report.downstream = Some(summary);
        return Ok(report);
    }
    let status = if report.failed_again.is_empty() {
        RunStatus::Succeeded
    } else {
        RunStatus::PartiallySucceeded
    };
    store.finish_run(&run_id, status, None).await?;
    Ok(report)
}

/// A source that reads nothing: stands in for the sources while a replay drains.
fn empty_source() -> NodeRunner {
    NodeRunner::Source(Box::new(|_| {
        async { Ok(Box::new(EmptySource) as Box<dyn sluice_core::Source>) }.boxed()
    }))
}

struct EmptySource;

#[async_trait::async_trait]
impl sluice_core::Source for EmptySource {
    async fn next_batch(
        &mut self,
    ) -> Result<Option<sluice_core::SourceBatch>, sluice_core::ConnectorError> {
        Ok(None)
    }
}

/// Opens the source, reads the quarantined records again and publishes them to its topic.
async fn reread_and_publish(
    executor: &Executor,
    ctx: &mut NodeCtx,
    source: &mut dyn sluice_core::Source,
    reread: &serde_json::Value,
    topic: &str,
) -> Result<(), sluice_core::ConnectorError> {
    let batches = source.reread(reread).await;
    let events = source.drain_events();
    ctx.record_events(&events).await;
    ctx.connector_events(events, true);
    let batches = batches?;
    for batch in batches {
        executor
            .buffer()
            .publish(topic, &batch)
            .await
            .map_err(|e| sluice_core::ConnectorError::new(e.class(), format!("buffer: {e}")))?;
        ctx.stats.records_out += batch.num_rows() as i64;
        ctx.stats.batches += 1;
    }
    Ok(())
}

struct BorrowedSink<'a> {
    sink: &'a mut dyn sluice_core::Sink,
}

#[async_trait::async_trait]
impl Target for BorrowedSink<'_> {
    async fn handle(
        &mut self,
        batch: &sluice_core::Batch,
    ) -> Result<sluice_core::WriteReport, sluice_core::ConnectorError> {
        self.sink.write(batch).await
    }
}

struct Noop;

#[async_trait::async_trait]
impl crate::Task for Noop {
    async fn run(&self, _: &crate::TaskContext) -> Result<(), sluice_core::ConnectorError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "nothing".into()
    }
}
