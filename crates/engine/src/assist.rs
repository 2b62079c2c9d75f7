//! Helping another process's run: with a Kafka buffer, a `sluice serve` worker that does
//! not own a run joins the consumer group of each of its sinks that can be written from
//! several places at once, and writes the batches of the partitions Kafka gives it. The
//! run's owner keeps the rest, and ends the node once the group has nothing left, so the
//! run waits for what its helpers hold.
//!
//! What keeps this exact: a helper commits an offset only after its batch was written
//! (the sink's ledger skips a batch two members wrote); it records what it wrote in the
//! state store ([`StateStore::record_share`]), which the owner adds to the node's counts;
//! and it hands back anything that would pause or stop the node (an outage past its
//! retries, a failure the node's policy fails on) by leaving the group without
//! committing, so the owner meets it with the whole policy (quarantine, gate, failing
//! the run). A batch a helper quarantines (records the sink refuses) is kept under the
//! run, as the owner would.

use std::time::Duration;

use sluice_buffer::{Delivery, Subscription};
use sluice_core::{ConnectorError, ErrorClass, RetryPolicy};
use sluice_state::NodeCounts;
use tokio_util::sync::CancellationToken;

use crate::deliver::{NodeCtx, deliver};
use crate::pipeline::{NodeRunner, Pipeline, group_name, topic_name};
use crate::run::{Executor, SinkTarget, keep_poison};

/// The run a worker helps.
#[derive(Debug, Clone)]
pub struct Assist {
    /// The run (started by its owner).
    pub run_id: String,
    /// Its load (see `RunInfo::load`).
    pub load: Option<String>,
    /// This worker, as its shares are recorded ([`sluice_state::worker_id`]).
    pub worker: String,
}

/// How long a helper tries a batch before handing it back: the owner has the node's
/// whole policy (and budget) for it.
fn helper_retry(policy: &RetryPolicy) -> RetryPolicy {
    RetryPolicy {
        max_attempts: policy.max_attempts.min(3),
        max_elapsed: Some(
            policy
                .max_elapsed
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(30)),
        ),
        ..policy.clone()
    }
}

impl Executor {
    /// Writes batches of sink `node` of run `assist`, owned by another process, as one
    /// more member of the node's consumer group, until `stop` (the run ended, or this
    /// worker stops). Returns what this worker wrote; an error means it handed its
    /// partitions back (the batch in hand uncommitted), which the caller logs.
    pub async fn assist(
        &self,
        pipeline: Pipeline,
        node: &str,
        assist: &Assist,
        stop: CancellationToken,
    ) -> Result<NodeCounts, ConnectorError> {
        let namespace = pipeline.namespace();
        let name = pipeline.name.clone();
        let Some(def) = pipeline.nodes.into_iter().find(|n| n.id == node) else {
            return Err(ConnectorError::new(
                ErrorClass::InvalidRequest,
                format!("pipeline `{name}` has no node `{node}`"),
            ));
        };
        let NodeRunner::Sink(mut sink) = def.runner else {
            return Err(ConnectorError::new(
                ErrorClass::InvalidRequest,
                format!("node `{node}` of `{name}` is not a sink"),
            ));
        };
        let mut ctx = NodeCtx {
            pipeline: name,
            namespace: namespace.clone(),
            node: node.to_owned(),
            run_id: assist.run_id.clone(),
            load: assist.load.clone(),
            retry: helper_retry(&def.retry),
            dispositions: def.dispositions,
            store: self.store().clone(),
            events: None,
            cancel: stop.clone(),
            stats: NodeCounts::default(),
            link_down: false,
            quarantined_ids: Vec::new(),
            schema_drift: Vec::new(),
            gate: None,
            wrote: false,
            hand_back: true,
            poisoned: false,
        };
        crate::names::begin_sink(&ctx, sink.as_mut())?;
        let mut target = SinkTarget { sink };
        let group = group_name(&namespace, node);
        let mut subs: Vec<Box<dyn Subscription>> = Vec::new();
        for input in &def.inputs {
            let topic = topic_name(&namespace, input);
            subs.push(self.buffer().subscribe(&topic, &group).await?);
        }
        tracing::info!(pipeline = %ctx.pipeline, node, run = %assist.run_id, "helping the run's sink");
        while !stop.is_cancelled() {
            for sub in &mut subs {
                let delivery = tokio::select! {
                    d = sub.next_within(Duration::from_millis(200)) => d?,
                    _ = stop.cancelled() => break,
                };
                let before = ctx.stats;
                let handled = match &delivery {
                    Some(Delivery::Batch { batch, .. }) => {
                        deliver(&mut ctx, &mut target, batch.clone()).await
                    }
                    Some(Delivery::Poison { poison, .. }) => keep_poison(&mut ctx, poison).await,
                    None => continue,
                };
                if let Err(e) = handled {
                    // Not committed: the partition's next owner writes it.
                    ctx.stats = before;
                    self.share(&ctx, assist).await;
                    return Err(e);
                }
                self.share(&ctx, assist).await;
                if let Some(d) = &delivery {
                    sub.commit(d.ack()).await?;
                }
            }
        }
        // Leaving the group hands the partitions back before the caller goes on.
        drop(subs);
        Ok(ctx.stats)
    }

    /// Records what this worker wrote so far for the run, before it commits.
    async fn share(&self, ctx: &NodeCtx, assist: &Assist) {
        if let Err(e) = self
            .store()
            .record_share(&ctx.run_id, &ctx.node, &assist.worker, &ctx.stats)
            .await
        {
            tracing::warn!(node = %ctx.node, run = %ctx.run_id, error = %e, "could not record what this worker wrote for the run (its counts may miss it)");
        }
    }
}

/// The run of `pipeline` another process owns and runs now, if any: its lease is live
/// and held by someone other than `worker`, and its latest run (not a replay) runs.
pub async fn running_elsewhere(
    store: &sluice_state::StateStore,
    pipeline: &str,
    worker: &str,
) -> Result<Option<Assist>, sluice_state::StateError> {
    let Some((holder, true)) = store.lease_holder(pipeline).await? else {
        return Ok(None);
    };
    if format!("{}:{}", holder.host, holder.pid) == worker {
        return Ok(None);
    }
    let latest = store.runs(Some(pipeline), 1).await?.into_iter().next();
    let Some(run) = latest.filter(|r| {
        r.status == sluice_state::RunStatus::Running && r.trigger != sluice_state::Trigger::Replay
    }) else {
        return Ok(None);
    };
    let load = store
        .checkpoint(pipeline, crate::load::LOAD_ENTRY)
        .await?
        .and_then(|v| v["load"].as_str().map(str::to_owned));
    Ok(Some(Assist {
        run_id: run.id,
        load,
        worker: worker.to_owned(),
    }))
}
