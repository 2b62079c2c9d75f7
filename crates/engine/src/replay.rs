//! `sluice replay`: re-delivers failed batches from the node where they failed.

use serde::Serialize;
use sluice_buffer::wire;
use sluice_state::{FailedBatchFilter, RunStatus};

use crate::EngineError;
use crate::deliver::{NodeCtx, Stats, Target, deliver};
use crate::pipeline::{NodeRunner, Pipeline, topic_name};
use crate::run::{Executor, TransformTarget};

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
}

/// Re-delivers the failed batches of `pipeline` that match `filter`, each from the node
/// where it failed onwards. Idempotent: a batch delivered before is recognised by the
/// sink's ledger and not written twice, and resolved batches are not selected again.
pub async fn replay(
    executor: &Executor,
    mut pipeline: Pipeline,
    mut filter: FailedBatchFilter,
) -> Result<ReplayReport, EngineError> {
    filter.pipeline = Some(pipeline.name.clone());
    filter.include_resolved = false;
    let store = executor.store().clone();
    let failed = store.failed_batches(&filter, true).await?;
    let run_id = store.start_run(&pipeline.name, "replay").await?;
    let namespace = pipeline.namespace();
    let mut report = ReplayReport {
        run_id: run_id.clone(),
        ..ReplayReport::default()
    };
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
            NodeRunner::Sink(sink) => {
                let mut target = BorrowedSink {
                    sink: sink.as_mut(),
                };
                deliver(&mut ctx, &mut target, batch).await
            }
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
    let status = if report.failed_again.is_empty() {
        RunStatus::Succeeded
    } else {
        RunStatus::PartiallySucceeded
    };
    store.finish_run(&run_id, status, None).await?;
    Ok(report)
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
    async fn run(&self) -> Result<(), sluice_core::ConnectorError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "nothing".into()
    }
}
