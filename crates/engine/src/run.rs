//! The executor: one tokio task per node, data through the buffer, statuses through
//! watch channels, compensation in reverse order when the run fails.

use futures::future::join_all;
use serde::Serialize;
use sluice_buffer::{Buffer, Delivery, PoisonMessage, Subscription};
use sluice_core::{Batch, ConnectorError, ErrorClass, RunInfo, WriteReport};
use sluice_state::{
    AlertKind, AlertRow, AlertSeverity, NodeCounts, RunStatus, StateStore, Trigger, now_ms,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::deliver::{NodeCtx, Target, deliver, deliver_group, node_row};
use crate::pipeline::{NodeDef, NodeRunner, Pipeline, Task, Transform, group_name, topic_name};
use crate::retry::{Attempt, GaveUp, Stop, retrying};
use crate::{EngineError, Event, EventKind};

/// How a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Pending,
    /// Ended, with the records it handed on (a source's or a transform's `records_out`).
    Done(RunStatus, i64),
}

/// A node's part of a run summary.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    /// Node id.
    pub id: String,
    /// `source`, `transform`, `sink` or `task`.
    pub role: &'static str,
    /// Final status.
    pub status: RunStatus,
    /// What it did.
    #[serde(flatten)]
    pub counts: NodeCounts,
    /// Why it failed.
    pub error: Option<String>,
    /// The class of that failure.
    pub error_class: Option<ErrorClass>,
    /// A parked node (`rate_limited`): when it may go on, milliseconds since the epoch.
    pub resume_at: Option<i64>,
    /// What drifted from the schema and went through under `schema_policy: warn`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_drift: Vec<String>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Run id (see `sluice runs show`).
    pub run_id: String,
    /// Pipeline.
    pub pipeline: String,
    /// Final status.
    pub status: RunStatus,
    /// Per node, in pipeline order.
    pub nodes: Vec<NodeSummary>,
    /// A `rate_limited` run: when its parked nodes may go on (the latest of their resume
    /// times), milliseconds since the epoch. The next run should not start before.
    pub resume_at: Option<i64>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs pipelines.
#[derive(Clone)]
pub struct Executor {
    store: StateStore,
    buffer: Arc<dyn Buffer>,
    events: Option<UnboundedSender<Event>>,
    shutdown: CancellationToken,
    idle_poll: Duration,
    alert_queue: Option<crate::alerts::AlertQueue>,
}

struct NodeOutcome {
    summary: NodeSummary,
    compensate: Option<Box<dyn Task>>,
}

impl Executor {
    /// An executor over a state store and a buffer.
    pub fn new(store: StateStore, buffer: Arc<dyn Buffer>) -> Self {
        Executor {
            store,
            buffer,
            events: None,
            shutdown: CancellationToken::new(),
            idle_poll: Duration::from_millis(200),
            alert_queue: None,
        }
    }

    /// Hands the alerts of each run's end to `queue` (delivered in order, off the run's
    /// path) instead of delivering them before `run` returns. The caller waits for them
    /// with [`crate::alerts::AlertQueue::finish`] before it exits.
    pub fn with_alert_queue(mut self, queue: crate::alerts::AlertQueue) -> Self {
        self.alert_queue = Some(queue);
        self
    }

    /// Sends progress events to `tx`.
    pub fn with_events(mut self, tx: UnboundedSender<Event>) -> Self {
        self.events = Some(tx);
        self
    }

    /// Cancel this token to stop gracefully: sources stop pulling, batches in flight are
    /// finished and committed, the run ends as `cancelled`.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops with `token` instead of a token of its own (an executor per run, sharing
    /// the process's Ctrl-C).
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Fails unless this process still owns the pipeline (its run lease, when the state
    /// store is fenced): checked before every buffer offset commit.
    fn check_owner(&self) -> Result<(), ConnectorError> {
        self.store.check_owner().map_err(ConnectorError::from)
    }

    /// The state store.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// The buffer.
    pub fn buffer(&self) -> &Arc<dyn Buffer> {
        &self.buffer
    }

    /// Runs the pipeline once, to the end of its sources.
    pub async fn run(
        &self,
        pipeline: Pipeline,
        trigger: Trigger,
    ) -> Result<RunSummary, EngineError> {
        check(&pipeline)?;
        let (name, sources) = crate::load::names_of(&pipeline);
        let run = crate::load::start_run(&self.store, &name, &sources, trigger).await?;
        tracing::info!(pipeline = %pipeline.name, run = %run.run_id, %trigger, "run started");
        self.run_as(pipeline, run).await
    }

    /// Runs the pipeline under a run the caller started (a replay), and finishes it.
    pub(crate) async fn run_as(
        &self,
        mut pipeline: Pipeline,
        run: RunInfo,
    ) -> Result<RunSummary, EngineError> {
        let RunInfo { run_id, load } = run;
        check(&pipeline)?;
        let started = Instant::now();
        let run_cancel = self.shutdown.child_token();
        let mut senders = HashMap::new();
        let mut receivers = HashMap::new();
        for node in &pipeline.nodes {
            let (tx, rx) = watch::channel(NodeState::Pending);
            senders.insert(node.id.clone(), tx);
            receivers.insert(node.id.clone(), rx);
        }
        let order: Vec<String> = pipeline.nodes.iter().map(|n| n.id.clone()).collect();
        let name = pipeline.name.clone();
        let namespace = pipeline.namespace();
        let alerts = std::mem::take(&mut pipeline.alerts);
        // The gate's alerts go through the executor's queue, or one of this run's.
        let own_queue = self.alert_queue.is_none() && pipeline.gate.is_some();
        let gate_queue = self.alert_queue.clone().unwrap_or_default();
        let gate = pipeline.gate.take().map(|spec| {
            let mut consumers: HashMap<String, Vec<String>> = HashMap::new();
            for node in &pipeline.nodes {
                for input in &node.inputs {
                    consumers
                        .entry(input.clone())
                        .or_default()
                        .push(group_name(&namespace, &node.id));
                }
            }
            Arc::new(crate::gate::Gate::new(
                spec,
                alerts.clone(),
                self.store.clone(),
                name.clone(),
                gate_queue.clone(),
                self.buffer.clone(),
                consumers,
            ))
        });
        let mut tasks = Vec::new();
        for node in pipeline.nodes {
            let ctx = NodeCtx {
                pipeline: name.clone(),
                namespace: namespace.clone(),
                node: node.id.clone(),
                run_id: run_id.clone(),
                load: load.clone(),
                retry: node.retry.clone(),
                dispositions: node.dispositions.clone(),
                store: self.store.clone(),
                events: self.events.clone(),
                cancel: run_cancel.clone(),
                stats: sluice_state::NodeCounts::default(),
                link_down: false,
                quarantined_ids: Vec::new(),
                schema_drift: Vec::new(),
                gate: gate.clone(),
                wrote: false,
                hand_back: false,
                poisoned: false,
            };
            let status_tx = senders.remove(&node.id).expect("sender per node");
            let watched: HashMap<String, watch::Receiver<NodeState>> = node
                .inputs
                .iter()
                .chain(&node.after)
                .map(|id| (id.clone(), receivers[id].clone()))
                .collect();
            let exec = self.clone();
            let fail_run = run_cancel.clone();
            let (store, run) = (self.store.clone(), run_id.clone());
            tasks.push(tokio::spawn(async move {
                let (id, role) = (node.id.clone(), node.runner.role());
                // A panic in a node (a bug, or a value from outside that slipped through)
                // fails the node like any error: its consumers are told it ended and the
                // run stops, instead of waiting for it forever.
                let run_node = std::panic::AssertUnwindSafe(exec.run_node(ctx, node, watched));
                let outcome = match futures::FutureExt::catch_unwind(run_node).await {
                    Ok(outcome) => outcome,
                    Err(panic) => {
                        panicked(&store, &run, id, role, sluice_core::panic_message(&*panic)).await
                    }
                };
                let _ = status_tx.send(NodeState::Done(
                    outcome.summary.status,
                    outcome.summary.counts.records_out,
                ));
                if outcome.summary.status == RunStatus::Failed {
                    fail_run.cancel();
                }
                outcome
            }));
        }
        let mut outcomes: Vec<NodeOutcome> = Vec::new();
        for (task, id) in join_all(tasks).await.into_iter().zip(&order) {
            match task {
                Ok(outcome) => outcomes.push(outcome),
                // The node's task was cancelled or panicked outside `catch_unwind`.
                Err(join) => {
                    let error = ConnectorError::new(
                        ErrorClass::Internal,
                        format!("node `{id}` ended abnormally: {join}"),
                    );
                    tracing::error!(%error);
                    outcomes.push(failed_outcome(id.clone(), "unknown", error));
                }
            }
        }

        if own_queue {
            // The gate's alerts (a link down, back up) go out before the run's own.
            gate_queue.finish().await;
        }
        let failed = outcomes
            .iter()
            .any(|o| o.summary.status == RunStatus::Failed);
        if failed {
            self.compensate(&name, &run_id, &mut outcomes).await;
        }
        let resume_at = outcomes.iter().filter_map(|o| o.summary.resume_at).max();
        let status = if failed {
            RunStatus::Failed
        } else if self.shutdown.is_cancelled() {
            RunStatus::Cancelled
        } else if resume_at.is_some() {
            RunStatus::RateLimited
        } else if outcomes.iter().any(|o| o.summary.counts.quarantined > 0) {
            RunStatus::PartiallySucceeded
        } else {
            RunStatus::Succeeded
        };
        let cause = outcomes
            .iter()
            .find(|o| o.summary.status == status && o.summary.error.is_some());
        let error = cause.and_then(|o| {
            o.summary
                .error
                .as_ref()
                .map(|e| format!("node `{}`: {e}", o.summary.id))
        });
        let alert = run_alert(&name, status, error.as_deref(), cause, &outcomes);
        self.store
            .finish_run(&run_id, status, error.as_deref())
            .await?;
        // Delivered once the run is recorded, so that `next` shows it finished: here, or
        // off the run's path when the caller gave a queue.
        let drift: Vec<(String, Vec<String>)> = outcomes
            .iter()
            .filter(|o| !o.summary.schema_drift.is_empty())
            .map(|o| (o.summary.id.clone(), o.summary.schema_drift.clone()))
            .collect();
        let parked: Vec<(String, String)> = outcomes
            .iter()
            .filter(|o| o.summary.status == RunStatus::RateLimited)
            .map(|o| {
                let why = o.summary.error.clone().unwrap_or_default();
                (o.summary.id.clone(), why)
            })
            .collect();
        let end = RunEnd {
            alerts,
            store: self.store.clone(),
            name: name.clone(),
            run_id: run_id.clone(),
            status,
            alert,
            drift,
            parked,
            replay: load.is_none(),
        };
        match &self.alert_queue {
            Some(queue) => queue.push(end.raise()),
            None => end.raise().await,
        }
        if let Some(at) = resume_at.filter(|_| status == RunStatus::RateLimited) {
            self.store.set_resume_at(&run_id, at).await?;
        }
        tracing::info!(pipeline = %name, run = %run_id, %status, "run finished");
        Ok(RunSummary {
            run_id,
            pipeline: name,
            status,
            nodes: outcomes.into_iter().map(|o| o.summary).collect(),
            resume_at: resume_at.filter(|_| status == RunStatus::RateLimited),
            elapsed: started.elapsed(),
        })
    }

    /// Runs the `compensate` tasks of the nodes that succeeded, in reverse order.
    async fn compensate(&self, pipeline: &str, run_id: &str, outcomes: &mut [NodeOutcome]) {
        // Compensations are recorded under the class of the failure that caused them.
        let cause = outcomes
            .iter()
            .find_map(|o| o.summary.error_class)
            .unwrap_or(ErrorClass::Internal);
        for outcome in outcomes.iter_mut().rev() {
            if outcome.summary.status != RunStatus::Succeeded {
                continue;
            }
            let Some(task) = outcome.compensate.take() else {
                continue;
            };
            let node = &outcome.summary.id;
            let task_ctx = crate::TaskContext {
                pipeline: pipeline.to_owned(),
                run_id: run_id.to_owned(),
            };
            let result = task.run(&task_ctx).await;
            let (ok, message) = match &result {
                Ok(()) => (true, format!("compensated: {}", task.describe())),
                Err(e) => (
                    false,
                    format!("compensation failed: {}: {e}", task.describe()),
                ),
            };
            tracing::info!(pipeline, node = %node, ok, %message, "compensation");
            let class = result.as_ref().err().map_or(cause, |e| e.class);
            let _ = self
                .store
                .record_attempt(run_id, node, class, &message)
                .await;
            if let Some(tx) = &self.events {
                let _ = tx.send(Event {
                    node: node.clone(),
                    kind: EventKind::Compensated { ok, message },
                });
            }
        }
    }

    async fn run_node(
        &self,
        mut ctx: NodeCtx,
        node: NodeDef,
        mut watched: HashMap<String, watch::Receiver<NodeState>>,
    ) -> NodeOutcome {
        let role = node.runner.role();
        // Ordering-only edges: wait for those nodes to end; run only if they succeeded.
        let mut blocked = None;
        for id in &node.after {
            let rx = watched.get_mut(id).expect("watched after node");
            let state = wait_done(rx).await;
            if !matches!(state, RunStatus::Succeeded | RunStatus::PartiallySucceeded) {
                blocked = Some(format!("skipped: `{id}` ended {state}"));
                break;
            }
        }
        if blocked.is_none() && ctx.cancel.is_cancelled() {
            blocked = Some("skipped: the run was stopped before this node started".into());
        }
        if let Some(reason) = blocked {
            ctx.emit(EventKind::NodeFinished {
                status: RunStatus::Skipped.to_string(),
                error: Some(reason.clone()),
            });
            let summary = summary(&ctx, role, RunStatus::Skipped, None);
            self.record(&ctx, RunStatus::Skipped, None).await;
            return NodeOutcome {
                summary,
                compensate: node.compensate,
            };
        }
        ctx.emit(EventKind::NodeStarted);
        let inputs = node.inputs.clone();
        let result = match node.runner {
            NodeRunner::Source(factory) => self.run_source(&mut ctx, factory).await,
            NodeRunner::Transform(transform) => {
                let mut target = TransformTarget {
                    transform,
                    buffer: self.buffer.clone(),
                    topic: topic_name(&ctx.namespace, &ctx.node),
                    pipeline: ctx.pipeline.clone(),
                    node: ctx.node.clone(),
                };
                self.run_consumer(&mut ctx, &inputs, &watched, &mut target)
                    .await
            }
            NodeRunner::Sink(mut sink) => match crate::names::begin_sink(&ctx, sink.as_mut()) {
                Err(e) => Err(e),
                Ok(()) => {
                    let mut target = SinkTarget { sink };
                    self.run_consumer(&mut ctx, &inputs, &watched, &mut target)
                        .await
                }
            },
            NodeRunner::Task(task) => run_task(&mut ctx, task.as_ref()).await,
        };
        if role == "sink" {
            add_shares(&mut ctx).await;
        }
        let result = match result {
            Ok(RunStatus::Succeeded) => match lost_on_the_way(&ctx, &inputs, &watched) {
                Some(e) => Err(e),
                None => Ok(RunStatus::Succeeded),
            },
            other => other,
        };
        let (status, error) = match result {
            Ok(status) => (status, None),
            // Parked: the API's quota resets later than the node may wait.
            Err(e) if e.resume_at.is_some() => (RunStatus::RateLimited, Some(e)),
            Err(e) => (RunStatus::Failed, Some(e)),
        };
        self.record(&ctx, status, error.as_ref()).await;
        ctx.emit(EventKind::NodeFinished {
            status: status.to_string(),
            error: error.as_ref().map(ToString::to_string),
        });
        NodeOutcome {
            summary: summary(&ctx, role, status, error.as_ref()),
            compensate: node.compensate,
        }
    }

    async fn record(&self, ctx: &NodeCtx, status: RunStatus, error: Option<&ConnectorError>) {
        let row = node_row(&ctx.node, status, ctx.stats, error);
        if let Err(e) = self.store.record_node(&ctx.run_id, &row).await {
            tracing::error!(error = %e, node = %ctx.node, "could not record the node in the state store");
        }
    }

    async fn run_source(
        &self,
        ctx: &mut NodeCtx,
        factory: crate::pipeline::SourceFactory,
    ) -> Result<RunStatus, ConnectorError> {
        let checkpoint = self.store.checkpoint(&ctx.pipeline, &ctx.node).await?;
        let mut source = factory(checkpoint).await?;
        // Events as they happen (a retry wait of a minute shows at once), when the source
        // can tell them; else when `next_batch` returns.
        // A circuit breaker open too long is alerted while the source waits on it.
        let live = if ctx.events.is_some() || ctx.gate.is_some() {
            let (tx, gate, node) = (ctx.events.clone(), ctx.gate.clone(), ctx.node.clone());
            source.listen(std::sync::Arc::new(
                move |e: &sluice_core::ConnectorEvent| {
                    if let Some(gate) = &gate {
                        gate.connector_event(&node, e);
                    }
                    if let Some(tx) = &tx {
                        let _ = tx.send(crate::Event {
                            node: node.clone(),
                            kind: EventKind::from(e.clone()),
                        });
                    }
                },
            ))
        } else {
            false
        };
        let retries_inside = source.retries_inside();
        let topic = topic_name(&ctx.namespace, &ctx.node);
        // Batches published but not acked yet, in the order read: their checkpoints are
        // saved in that order, each once its batch (and every one before it) is durable.
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        // The checkpoint of the last batch acked, until it is saved.
        let mut unsaved = Unsaved::default();
        // The schema of the batches read, kept once per change (`sluice doctor` compares
        // a fresh sample with the last one): the last one and its fingerprint. A batch of
        // the same schema (most of them; compared as values, cheaper than hashing its
        // text) is not fingerprinted.
        let mut schema_seen: Option<(arrow::datatypes::SchemaRef, String)> = None;
        let mut lag_checked = Instant::now();
        loop {
            if ctx.cancel.is_cancelled() {
                self.save_unsaved(ctx, &mut in_flight, &mut unsaved).await;
                return Ok(RunStatus::Cancelled);
            }
            if let Some(gate) = ctx.gate.clone() {
                if gate.is_closed() {
                    // What was read before the pause is delivered and checkpointed first.
                    if let Err(gave_up) = self
                        .settle(ctx, &topic, &mut in_flight, &mut unsaved, 0)
                        .await
                    {
                        return cancelled(gave_up);
                    }
                }
                if !gate.before_read(ctx, &mut lag_checked).await {
                    self.save_unsaved(ctx, &mut in_flight, &mut unsaved).await;
                    return Ok(RunStatus::Cancelled);
                }
            }
            let mut read = Read {
                source: source.as_mut(),
                retries_inside,
                live,
            };
            let held =
                unsaved.checkpoint.is_some() || in_flight.iter().any(|f| f.checkpoint.is_some());
            let next = if !held {
                retrying(ctx, &mut read).await
            } else {
                // A checkpoint held back for [`CHECKPOINT_EVERY`] (or waiting for its batch's
                // ack) is saved while a slow read (a source waiting for new data) goes on.
                let (pipeline, node) = (ctx.pipeline.clone(), ctx.node.clone());
                let reading = retrying(ctx, &mut read);
                tokio::pin!(reading);
                tokio::select! {
                    next = &mut reading => next,
                    () = tokio::time::sleep(CHECKPOINT_EVERY) => {
                        take_acked(&mut in_flight, &mut unsaved).await;
                        if let Err(e) = unsaved.save(&self.store, &pipeline, &node).await {
                            tracing::warn!(%node, error = %e, "could not save the checkpoint (tried again after the next batch)");
                        }
                        reading.await
                    }
                }
            };
            let read = match next {
                Ok(Ok(Some(read))) => read,
                Ok(Ok(None)) => {
                    return self
                        .settle(ctx, &topic, &mut in_flight, &mut unsaved, 0)
                        .await
                        .map(|()| RunStatus::Succeeded)
                        .or_else(cancelled);
                }
                Ok(Err(error)) => {
                    if let Err(gave_up) = self
                        .settle(ctx, &topic, &mut in_flight, &mut unsaved, 0)
                        .await
                    {
                        return cancelled(gave_up);
                    }
                    return Err(error);
                }
                Err(GaveUp {
                    stop: Stop::Cancelled,
                    ..
                }) => {
                    self.save_unsaved(ctx, &mut in_flight, &mut unsaved).await;
                    return Ok(RunStatus::Cancelled);
                }
                Err(GaveUp { mut error, .. }) => {
                    // What was read before the failure is still delivered and checkpointed.
                    if let Err(gave_up) = self
                        .settle(ctx, &topic, &mut in_flight, &mut unsaved, 0)
                        .await
                    {
                        return cancelled(gave_up);
                    }
                    if let Some(at) = error.resume_at {
                        // The quota resets later than the node may wait: park it (its
                        // checkpoint is the last acked batch's); with a disposition other
                        // than `retry`, fail instead.
                        if ctx.retries(&error) {
                            tracing::info!(node = %ctx.node, resume_at = ?at, "source parked");
                        } else {
                            error.resume_at = None;
                        }
                    }
                    return Err(error);
                }
            };
            let schema = read.batch.records.schema();
            let same = schema_seen
                .as_ref()
                .is_some_and(|(seen, _)| Arc::ptr_eq(seen, &schema) || **seen == *schema);
            if !same {
                let (fingerprint, text) = crate::doctor::schema_fingerprint(&schema);
                if schema_seen.as_ref().map(|(_, f)| f) != Some(&fingerprint) {
                    // A schema not kept costs doctor a comparison, never the run its batch.
                    if let Err(e) = self
                        .store
                        .record_schema(&ctx.pipeline, &ctx.node, &fingerprint, &text)
                        .await
                    {
                        tracing::warn!(node = %ctx.node, "could not keep the batch's schema: {e}");
                    }
                }
                schema_seen = Some((schema, fingerprint));
            }
            // Its place in the topic is fixed now, after every batch before it. A publish
            // that cannot start is retried at once, before any later batch starts.
            let ack = self.buffer.start_publish(&topic, &read.batch).await.ok();
            let keep = if ack.is_some() { MAX_IN_FLIGHT - 1 } else { 0 };
            in_flight.push_back(InFlight {
                ack,
                acked: false,
                batch: read.batch,
                checkpoint: read.checkpoint,
            });
            match self
                .settle(ctx, &topic, &mut in_flight, &mut unsaved, keep)
                .await
            {
                Ok(()) => {}
                Err(GaveUp {
                    stop: Stop::Cancelled,
                    ..
                }) => return Ok(RunStatus::Cancelled),
                Err(gave_up) => return Err(gave_up.error),
            }
        }
    }

    /// Takes the acks of the oldest batches in flight until at most `keep` remain (and
    /// any whose ack has already come), saving their checkpoints in order: the last
    /// acked batch's checkpoint supersedes the ones before it, so it is saved once, at
    /// once when the reading stops here (`keep` 0: the source ended, failed or pauses)
    /// or the loop failed, else the first of the run at once and then at most every
    /// [`CHECKPOINT_EVERY`] (a crash in between only makes the next run read those pages
    /// again, and the sinks' ledgers skip them). A publish that failed is published
    /// again, with retries, before any later checkpoint: a batch not acked is never
    /// passed.
    async fn settle(
        &self,
        ctx: &mut NodeCtx,
        topic: &str,
        in_flight: &mut VecDeque<InFlight>,
        unsaved: &mut Unsaved,
        keep: usize,
    ) -> Result<(), GaveUp> {
        let outcome = self
            .settle_acked(ctx, topic, in_flight, keep, &mut unsaved.checkpoint)
            .await;
        // Whatever stopped the loop, what was acked before it is checkpointed.
        if keep == 0 || outcome.is_err() || unsaved.due() {
            let saved = unsaved.save(&self.store, &ctx.pipeline, &ctx.node).await;
            saved.map_err(|e| GaveUp {
                error: e,
                attempts: 1,
                stop: Stop::NotRetried,
            })?;
        }
        outcome
    }

    /// On a stop, the checkpoint of what was acked (or is within a moment, see
    /// [`take_acked`]) is saved if it can be (else the next run reads those pages again).
    async fn save_unsaved(
        &self,
        ctx: &mut NodeCtx,
        in_flight: &mut VecDeque<InFlight>,
        unsaved: &mut Unsaved,
    ) {
        take_acked(in_flight, unsaved).await;
        // Counted here: the run stops before their turn to be settled.
        while in_flight.front().is_some_and(|f| f.acked) {
            let front = in_flight.pop_front().expect("a batch in flight");
            read_and_acked(ctx, &front.batch);
        }
        if let Err(e) = unsaved.save(&self.store, &ctx.pipeline, &ctx.node).await {
            tracing::warn!(node = %ctx.node, error = %e, "could not save the checkpoint on stopping: the next run reads the last pages again");
        }
    }

    /// The loop of [`Self::settle`]: leaves the checkpoint to save in `unsaved`.
    async fn settle_acked(
        &self,
        ctx: &mut NodeCtx,
        topic: &str,
        in_flight: &mut VecDeque<InFlight>,
        keep: usize,
        unsaved: &mut Option<serde_json::Value>,
    ) -> Result<(), GaveUp> {
        while let Some(mut front) = in_flight.pop_front() {
            let acked = match front.ack.as_mut() {
                None if front.acked => true,
                None => false,
                Some(ack) if in_flight.len() >= keep => await_ack(ctx, ack).await,
                Some(ack) => match futures::poll!(ack.as_mut()) {
                    std::task::Poll::Ready(r) => r.is_ok(),
                    std::task::Poll::Pending => {
                        in_flight.push_front(front);
                        return Ok(());
                    }
                },
            };
            if !acked {
                self.publish_with_retry(ctx, topic, &front.batch).await?;
            }
            crate::killpoint::reached("before_checkpoint", &ctx.node).await;
            // The buffer acknowledged the batch: only now may the source move on.
            if let Some(checkpoint) = front.checkpoint.take() {
                *unsaved = Some(checkpoint);
            }
            read_and_acked(ctx, &front.batch);
        }
        Ok(())
    }

    /// Publishes a source's batch, retrying the buffer's transient failures (the buffer
    /// is not the node's connector: its dispositions do not apply).
    async fn publish_with_retry(
        &self,
        ctx: &mut NodeCtx,
        topic: &str,
        batch: &Batch,
    ) -> Result<(), GaveUp> {
        let mut publish = Publish {
            buffer: self.buffer.as_ref(),
            topic,
            batch,
        };
        retrying(ctx, &mut publish).await
    }

    async fn run_consumer(
        &self,
        ctx: &mut NodeCtx,
        inputs: &[String],
        watched: &HashMap<String, watch::Receiver<NodeState>>,
        target: &mut dyn Target,
    ) -> Result<RunStatus, ConnectorError> {
        let group = group_name(&ctx.namespace, &ctx.node);
        let mut subs: Vec<(String, Box<dyn Subscription>)> = Vec::new();
        for input in inputs {
            let topic = topic_name(&ctx.namespace, input);
            let sub = self.buffer.subscribe(&topic, &group).await?;
            subs.push((topic, sub));
        }
        let mut finished: HashSet<usize> = HashSet::new();
        loop {
            if ctx.cancel.is_cancelled() {
                return Ok(RunStatus::Cancelled);
            }
            // Inputs that ended before this round: once caught up with them, we are done.
            let ended: Vec<bool> = inputs
                .iter()
                .map(|id| matches!(*watched[id].borrow(), NodeState::Done(..)))
                .collect();
            let mut idle = true;
            for (i, (topic, sub)) in subs.iter_mut().enumerate() {
                if finished.contains(&i) {
                    continue;
                }
                let mut consume = Consume {
                    sub: sub.as_mut(),
                    wait: self.idle_poll,
                };
                let delivery = match retrying(ctx, &mut consume).await {
                    Ok(delivery) => delivery,
                    Err(GaveUp {
                        stop: Stop::Cancelled,
                        ..
                    }) => return Ok(RunStatus::Cancelled),
                    Err(gave_up) => return Err(gave_up.error),
                };
                match delivery {
                    Some(Delivery::Batch { batch, ack }) if target.group_rows() > 0 => {
                        idle = false;
                        let (batches, acks, poison) =
                            gather(sub.as_mut(), batch, ack, target.group_rows()).await;
                        deliver_group(ctx, target, batches).await?;
                        self.check_owner()?;
                        for ack in &acks {
                            commit(ctx, sub.as_mut(), ack).await?;
                        }
                        if let Some((poison, ack)) = poison {
                            keep_poison(ctx, &poison).await?;
                            self.check_owner()?;
                            commit(ctx, sub.as_mut(), &ack).await?;
                        }
                    }
                    Some(Delivery::Batch { batch, ack }) => {
                        idle = false;
                        deliver(ctx, target, batch).await?;
                        self.check_owner()?;
                        commit(ctx, sub.as_mut(), &ack).await?;
                    }
                    Some(Delivery::Poison { poison, ack }) => {
                        idle = false;
                        keep_poison(ctx, &poison).await?;
                        self.check_owner()?;
                        commit(ctx, sub.as_mut(), &ack).await?;
                    }
                    None if ended[i] => {
                        // Under `when_link_down: pause`, a buffer down now is waited for
                        // like one down during a read.
                        let lag = match self.buffer.lag(topic, &group).await {
                            Ok(lag) => lag,
                            Err(e) => {
                                wait_for_buffer(ctx, e.into()).await?;
                                continue;
                            }
                        };
                        if lag == 0 {
                            finished.insert(i);
                        }
                    }
                    None => {}
                }
            }
            if finished.len() == subs.len() {
                break;
            }
            if idle {
                tokio::task::yield_now().await;
            }
        }
        if ctx.link_down {
            return Err(ConnectorError::new(
                ErrorClass::Dependency,
                format!(
                    "the target stayed unreachable after every retry; {} records are in the failed-batch store (`sluice failed list --node {}`), replay them with `sluice replay --node {}` once it is back",
                    ctx.stats.quarantined, ctx.node, ctx.node
                ),
            ));
        }
        Ok(RunStatus::Succeeded)
    }
}

/// A consumer that read its inputs to the end in this run took at least every record
/// they handed on in it (more when a batch came twice, or was left by a run before).
/// Fewer means records went missing between the buffer and this node — a bug, or a
/// buffer that dropped messages (Kafka's retention shorter than the backlog): the node
/// fails, so that the loss is seen rather than a run that "succeeded". Not checked when
/// an undecodable message was kept (its records cannot be counted).
fn lost_on_the_way(
    ctx: &NodeCtx,
    inputs: &[String],
    watched: &HashMap<String, watch::Receiver<NodeState>>,
) -> Option<ConnectorError> {
    if inputs.is_empty() || ctx.poisoned {
        return None;
    }
    let mut handed_on = 0i64;
    for input in inputs {
        match *watched.get(input)?.borrow() {
            NodeState::Done(_, out) => handed_on += out,
            NodeState::Pending => return None,
        }
    }
    let took = ctx.stats.records_in;
    (took < handed_on).then(|| {
        tracing::error!(node = %ctx.node, took, handed_on, "records lost between the buffer and the node");
        ConnectorError::new(
            ErrorClass::Internal,
            format!(
                "{} took {took} records from its inputs in this run, but they handed on {handed_on}: {} records went missing between the buffer and the node (a bug, or messages the buffer dropped, such as Kafka's retention shorter than the backlog). The run fails so that this is seen; the sources' checkpoints are past those records: reset them to read again",
                ctx.node,
                handed_on - took
            ),
        )
    })
}

/// Adds what other workers wrote for this sink in this run (see `crate::assist`): once
/// the node ended, its group had nothing left, so every helper's share is recorded.
async fn add_shares(ctx: &mut NodeCtx) {
    match ctx.store.shares(&ctx.run_id, &ctx.node).await {
        Ok(shares) => {
            for (worker, counts) in shares {
                tracing::info!(node = %ctx.node, run = %ctx.run_id, %worker, records = counts.records_out, "written by a helping worker");
                let stats = &mut ctx.stats;
                stats.records_in += counts.records_in;
                stats.records_out += counts.records_out;
                stats.batches += counts.batches;
                stats.retries += counts.retries;
                stats.quarantined += counts.quarantined;
                stats.duplicates += counts.duplicates;
            }
        }
        Err(e) => {
            tracing::warn!(node = %ctx.node, run = %ctx.run_id, error = %e, "cannot read what helping workers wrote (the node's counts may miss it)")
        }
    }
}

/// Waits for a publish's ack. Under `when_link_down: pause`, an ack slower than the
/// gate's probe interval makes the source check the buffer, and pause while it is down
/// (a Kafka producer queues while its brokers are down, and says nothing before its
/// delivery timeout); the ack is then awaited again.
async fn await_ack(ctx: &mut NodeCtx, ack: &mut sluice_buffer::Pending) -> bool {
    let gate = ctx.gate.clone();
    let Some((gate, patience)) = gate.and_then(|g| g.ack_patience().map(|p| (g, p))) else {
        return ack.await.is_ok();
    };
    loop {
        tokio::select! {
            acked = ack.as_mut() => return acked.is_ok(),
            _ = tokio::time::sleep(patience) => {}
        }
        if let crate::gate::Held::Cancelled = gate.hold_unacked(ctx).await {
            return false;
        }
    }
}

/// Commits a delivery; under `when_link_down: pause`, a buffer down meanwhile is
/// waited for and the commit made again.
async fn commit(
    ctx: &mut NodeCtx,
    sub: &mut dyn Subscription,
    ack: &sluice_buffer::AckToken,
) -> Result<(), ConnectorError> {
    loop {
        match sub.commit(ack).await {
            Ok(()) => return Ok(()),
            Err(e) => wait_for_buffer(ctx, e.into()).await?,
        }
    }
}

/// The batches a subscription has at hand after `first`, up to about `rows` rows in all
/// (see [`sluice_core::Sink::group_rows`]), with their acks in order; a poison message
/// met on the way ends the group and comes back last, to be kept after it. A failure to
/// read more ends the group too: the next read meets it again and deals with it.
async fn gather(
    sub: &mut dyn Subscription,
    first: Batch,
    ack: sluice_buffer::AckToken,
    rows: usize,
) -> (
    Vec<Batch>,
    Vec<sluice_buffer::AckToken>,
    Option<(sluice_buffer::PoisonMessage, sluice_buffer::AckToken)>,
) {
    let mut held = first.num_rows();
    let mut batches = vec![first];
    let mut acks = vec![ack];
    while held < rows {
        match sub.next_ready().await {
            Ok(Some(Delivery::Batch { batch, ack })) => {
                held += batch.num_rows();
                batches.push(batch);
                acks.push(ack);
            }
            Ok(Some(Delivery::Poison { poison, ack })) => {
                return (batches, acks, Some((poison, ack)));
            }
            Ok(None) | Err(_) => break,
        }
    }
    (batches, acks, None)
}

/// Batches a source keeps published but not yet acked (Kafka's acks overlap the next
/// reads; the embedded log acks at once).
const MAX_IN_FLIGHT: usize = 8;

/// How often a source reading on saves its checkpoint at most (see [`Executor::settle`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The checkpoint of the last batch a source had acked and not saved yet, and when the
/// last one was saved (none yet: the first is saved at once).
#[derive(Default)]
struct Unsaved {
    checkpoint: Option<serde_json::Value>,
    saved: Option<Instant>,
}

impl Unsaved {
    /// Whether a checkpoint waits and is due: none saved yet, or the last one
    /// [`CHECKPOINT_EVERY`] ago.
    fn due(&self) -> bool {
        self.checkpoint.is_some() && self.saved.is_none_or(|at| at.elapsed() >= CHECKPOINT_EVERY)
    }

    /// Saves the checkpoint held back, if any.
    async fn save(
        &mut self,
        store: &StateStore,
        pipeline: &str,
        node: &str,
    ) -> Result<(), ConnectorError> {
        if let Some(checkpoint) = &self.checkpoint {
            store.save_checkpoint(pipeline, node, checkpoint).await?;
            self.checkpoint = None;
            self.saved = Some(Instant::now());
        }
        Ok(())
    }
}

/// A source's batch published but not yet checkpointed.
struct InFlight {
    /// The wait for its ack; `None` when the publish could not start (it is published
    /// again, with retries, in its turn).
    ack: Option<sluice_buffer::Pending>,
    /// Acknowledged already, its checkpoint taken ([`take_acked`]): only counted in its
    /// turn.
    acked: bool,
    batch: Batch,
    checkpoint: Option<serde_json::Value>,
}

/// While a read holds the node's context, takes the checkpoints of the batches in flight
/// that the buffer acknowledges within a moment, in order, so that a source waiting for
/// new data has them saved (the embedded log flushes a source's last batches only when
/// their acknowledgement is waited for). What else settling does is left to
/// [`Executor::settle`], in its turn.
async fn take_acked(in_flight: &mut VecDeque<InFlight>, unsaved: &mut Unsaved) {
    let until = tokio::time::Instant::now() + ACK_WAIT;
    for front in in_flight.iter_mut().filter(|f| !f.acked) {
        let Some(ack) = front.ack.as_mut() else {
            return;
        };
        match tokio::time::timeout_at(until, ack.as_mut()).await {
            Ok(Ok(())) => {
                front.ack = None;
                front.acked = true;
                if let Some(checkpoint) = front.checkpoint.take() {
                    unsaved.checkpoint = Some(checkpoint);
                }
            }
            // Published again in its turn.
            Ok(Err(_)) => {
                front.ack = None;
                return;
            }
            Err(_) => return,
        }
    }
}

/// Counts a source's batch the buffer acknowledged.
fn read_and_acked(ctx: &mut NodeCtx, batch: &Batch) {
    let rows = batch.num_rows();
    ctx.stats.records_in += rows as i64;
    ctx.stats.records_out += rows as i64;
    ctx.stats.batches += 1;
    ctx.emit(EventKind::BatchRead { rows });
}

/// How long a source waiting for data waits for its batches' acks before saving the
/// checkpoint of those acked (see [`take_acked`]).
const ACK_WAIT: Duration = Duration::from_millis(100);

/// A cancelled settle is a cancelled run, any other failure the node's.
fn cancelled(gave_up: GaveUp) -> Result<RunStatus, ConnectorError> {
    match gave_up.stop {
        Stop::Cancelled => Ok(RunStatus::Cancelled),
        _ => Err(gave_up.error),
    }
}

/// The key of a quarantined batch's schema metadata that says where its source can read
/// it again.
pub(crate) const REREAD_KEY: &str = "sluice.reread";

/// One read of a source, its events passed on and its quarantined records kept.
struct Read<'a> {
    source: &'a mut dyn sluice_core::Source,
    /// The source spends the node's retry budget itself.
    retries_inside: bool,
    /// Its events were shown as they happened (a listener).
    live: bool,
}

#[async_trait::async_trait]
impl Attempt for Read<'_> {
    /// The inner `Err` is a failure to keep the quarantined records: not retried, it
    /// fails the node at once.
    type Output = Result<Option<sluice_core::SourceBatch>, ConnectorError>;

    async fn attempt(&mut self, ctx: &mut NodeCtx) -> Result<Self::Output, ConnectorError> {
        let next = self.source.next_batch().await;
        let events = self.source.drain_events();
        ctx.record_events(&events).await;
        ctx.connector_events(events, !self.live);
        match keep_quarantined(ctx, self.source).await {
            Ok(()) => next.map(Ok),
            Err(error) => Ok(Err(error)),
        }
    }

    /// A source has no batch to split, keep or skip: it is retried or fails. Not when it
    /// retries inside (it spent the node's budget already), nor when it is parked until
    /// its quota resets.
    fn retry_on(&self, ctx: &NodeCtx, error: &ConnectorError) -> bool {
        error.resume_at.is_none() && !self.retries_inside && ctx.retries(error)
    }
}

/// A publish of a source's batch to its topic. The buffer is not the node's connector,
/// so its dispositions do not apply: transient failures are retried.
struct Publish<'a> {
    buffer: &'a dyn Buffer,
    topic: &'a str,
    batch: &'a Batch,
}

#[async_trait::async_trait]
impl Attempt for Publish<'_> {
    type Output = ();

    /// Under `when_link_down: pause`, a buffer that is down is waited for (the source
    /// reads nothing meanwhile), then the batch is published again.
    async fn attempt(&mut self, ctx: &mut NodeCtx) -> Result<(), ConnectorError> {
        loop {
            match self.buffer.publish(self.topic, self.batch).await {
                Ok(()) => return Ok(()),
                Err(e) => wait_for_buffer(ctx, e.into()).await?,
            }
        }
    }

    fn retry_on(&self, _: &NodeCtx, error: &ConnectorError) -> bool {
        error.class.is_transient()
    }
}

/// Under `when_link_down: pause`, waits out the buffer that failed with `error`: `Ok`
/// once it answers again (the caller tries again), else the error.
async fn wait_for_buffer(ctx: &mut NodeCtx, error: ConnectorError) -> Result<(), ConnectorError> {
    match ctx.gate.clone() {
        Some(gate) => match gate.hold_buffer(ctx, &error).await {
            crate::gate::Held::Recovered => Ok(()),
            _ => Err(error),
        },
        None => Err(error),
    }
}

/// A read of a consumer's subscription. The buffer is not the node's connector, so its
/// dispositions do not apply: transient failures (a broker that went away a moment ago,
/// a client still reconnecting) are retried by the node's policy.
struct Consume<'a> {
    sub: &'a mut dyn Subscription,
    wait: Duration,
}

#[async_trait::async_trait]
impl Attempt for Consume<'_> {
    type Output = Option<Delivery>;

    /// Under `when_link_down: pause`, a buffer that is down is waited for (the sources
    /// read nothing meanwhile), then read again.
    async fn attempt(&mut self, ctx: &mut NodeCtx) -> Result<Option<Delivery>, ConnectorError> {
        loop {
            match self.sub.next_within(self.wait).await {
                Ok(delivery) => return Ok(delivery),
                Err(e) => wait_for_buffer(ctx, e.into()).await?,
            }
        }
    }

    fn retry_on(&self, _: &NodeCtx, error: &ConnectorError) -> bool {
        error.class.is_transient()
    }
}

/// A run of a task node.
struct RunTask<'a> {
    task: &'a dyn Task,
    ctx: crate::TaskContext,
}

#[async_trait::async_trait]
impl Attempt for RunTask<'_> {
    type Output = ();

    async fn attempt(&mut self, _: &mut NodeCtx) -> Result<(), ConnectorError> {
        self.task.run(&self.ctx).await
    }
}

/// Keeps the records the source quarantined in the failed-batch store: taken after every
/// read, before any later checkpoint passes them, so a crash cannot lose them (kept
/// twice, they are kept once).
async fn keep_quarantined(
    ctx: &mut NodeCtx,
    source: &mut dyn sluice_core::Source,
) -> Result<(), ConnectorError> {
    for q in source.take_quarantined() {
        ctx.record_attempt(&q.error).await;
        ctx.quarantine(&with_reread(q.batch, &q.reread), &q.error, 1)
            .await?;
    }
    Ok(())
}

/// The batch with `reread` in its schema's metadata (it travels with the payload into
/// the failed-batch store).
fn with_reread(mut batch: Batch, reread: &serde_json::Value) -> Batch {
    let mut metadata = batch.records.schema().metadata().clone();
    metadata.insert(REREAD_KEY.to_owned(), reread.to_string());
    let schema = std::sync::Arc::new(
        arrow::datatypes::Schema::clone(&batch.records.schema()).with_metadata(metadata),
    );
    if let Ok(records) = batch.records.clone().with_schema(schema) {
        batch.records = records;
    }
    batch
}

fn check(pipeline: &Pipeline) -> Result<(), EngineError> {
    let mut seen: HashMap<&str, bool> = HashMap::new();
    for node in &pipeline.nodes {
        for id in node.inputs.iter().chain(&node.after) {
            match seen.get(id.as_str()) {
                None => {
                    return Err(EngineError::pipeline(format!(
                        "node `{}` refers to `{id}`, which is not an earlier node of the pipeline",
                        node.id
                    )));
                }
                Some(false) if node.inputs.contains(id) => {
                    return Err(EngineError::pipeline(format!(
                        "node `{}` reads from `{id}`, which produces no batches",
                        node.id
                    )));
                }
                _ => {}
            }
        }
        if seen.insert(&node.id, node.runner.produces()).is_some() {
            return Err(EngineError::pipeline(format!(
                "node id `{}` is used twice",
                node.id
            )));
        }
        if matches!(node.runner, NodeRunner::Transform(_) | NodeRunner::Sink(_))
            && node.inputs.is_empty()
        {
            return Err(EngineError::pipeline(format!(
                "node `{}` has no inputs",
                node.id
            )));
        }
    }
    Ok(())
}

async fn wait_done(rx: &mut watch::Receiver<NodeState>) -> RunStatus {
    loop {
        if let NodeState::Done(status, _) = *rx.borrow_and_update() {
            return status;
        }
        if rx.changed().await.is_err() {
            return RunStatus::Failed;
        }
    }
}

/// The outcome of a node that panicked: failed, class `internal`, with the panic's message.
async fn panicked(
    store: &StateStore,
    run_id: &str,
    id: String,
    role: &'static str,
    what: String,
) -> NodeOutcome {
    let error = ConnectorError::new(
        ErrorClass::Internal,
        format!(
            "node `{id}` panicked: {what} (a bug in Sluice: please report it with this message; the run stopped, checkpoints were kept)"
        ),
    );
    tracing::error!(node = %id, %error, "node panicked");
    let _ = store
        .record_attempt(run_id, &id, error.class, &error.message)
        .await;
    let row = node_row(&id, RunStatus::Failed, Default::default(), Some(&error));
    let _ = store.record_node(run_id, &row).await;
    failed_outcome(id, role, error)
}

/// A node that failed without a context to count in.
fn failed_outcome(id: String, role: &'static str, error: ConnectorError) -> NodeOutcome {
    NodeOutcome {
        summary: NodeSummary {
            id,
            role,
            status: RunStatus::Failed,
            counts: NodeCounts::default(),
            error: Some(error.to_string()),
            error_class: Some(error.class),
            resume_at: None,
            schema_drift: Vec::new(),
        },
        compensate: None,
    }
}

fn summary(
    ctx: &NodeCtx,
    role: &'static str,
    status: RunStatus,
    error: Option<&ConnectorError>,
) -> NodeSummary {
    NodeSummary {
        id: ctx.node.clone(),
        role,
        status,
        counts: ctx.stats,
        error: error.map(ToString::to_string),
        error_class: error.map(|e| e.class),
        resume_at: error.and_then(|e| e.resume_at).map(|at| {
            at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        }),
        schema_drift: ctx.schema_drift.clone(),
    }
}

/// Keeps an undecodable buffer message in the failed-batch store (with its topic,
/// partition and offset), so that consumption goes on.
pub(crate) async fn keep_poison(
    ctx: &mut NodeCtx,
    poison: &PoisonMessage,
) -> Result<(), ConnectorError> {
    let id = format!(
        "poison:{}:{}:{}",
        poison.topic, poison.partition, poison.offset
    );
    let error = format!(
        "undecodable message at {} partition {} offset {}: {}",
        poison.topic, poison.partition, poison.offset, poison.error
    );
    ctx.store
        .quarantine(&sluice_state::NewFailedBatch {
            id: &id,
            pipeline: &ctx.pipeline,
            node: &ctx.node,
            run_id: &ctx.run_id,
            class: ErrorClass::InvalidRequest,
            error: &error,
            evidence: None,
            attempts: 1,
            rows: 0,
            payload: &poison.payload,
        })
        .await?;
    ctx.poisoned = true;
    ctx.emit(EventKind::Quarantined {
        class: ErrorClass::InvalidRequest,
        rows: 0,
        message: error,
    });
    Ok(())
}

async fn run_task(ctx: &mut NodeCtx, task: &dyn Task) -> Result<RunStatus, ConnectorError> {
    let task_ctx = crate::TaskContext {
        pipeline: ctx.pipeline.clone(),
        run_id: ctx.run_id.clone(),
    };
    retrying(
        ctx,
        &mut RunTask {
            task,
            ctx: task_ctx,
        },
    )
    .await
    .map(|()| RunStatus::Succeeded)
    .map_err(|gave_up| gave_up.error)
}

/// A sink as a delivery target.
pub(crate) struct SinkTarget {
    pub sink: Box<dyn sluice_core::Sink>,
}

#[async_trait::async_trait]
impl Target for SinkTarget {
    async fn handle(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        self.sink.write(batch).await
    }

    fn drain_events(&mut self) -> Vec<sluice_core::ConnectorEvent> {
        self.sink.drain_events()
    }

    fn group_rows(&self) -> usize {
        self.sink.group_rows()
    }

    async fn handle_group(
        &mut self,
        batches: &[Batch],
    ) -> Result<Vec<Option<WriteReport>>, ConnectorError> {
        self.sink.write_group(batches).await
    }
}

/// A transform followed by a publish to the node's own topic.
pub(crate) struct TransformTarget {
    pub transform: Box<dyn Transform>,
    pub buffer: Arc<dyn Buffer>,
    pub topic: String,
    pub pipeline: String,
    pub node: String,
}

#[async_trait::async_trait]
impl Target for TransformTarget {
    async fn handle(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        let records = self.transform.apply(batch.records.clone())?;
        let rows = records.num_rows();
        let out = Batch::derived(&self.pipeline, &self.node, batch, records);
        self.buffer.publish(&self.topic, &out).await?;
        Ok(WriteReport {
            written: rows,
            ..WriteReport::default()
        })
    }
}

/// What a run's end alerts, held so that it can be raised off the run's path.
struct RunEnd {
    alerts: sluice_config::spec::AlertsSpec,
    store: StateStore,
    name: String,
    run_id: String,
    status: RunStatus,
    /// The run's own alert (failed, or quarantined) with its `next` (`{run}` for the id).
    alert: Option<(AlertRow, String)>,
    /// Per node, what drifted from its schema under `schema_policy: warn`.
    drift: Vec<(String, Vec<String>)>,
    /// The sources parked until their API's quota resets, with why.
    parked: Vec<(String, String)>,
    /// A replay (no load) says nothing of whether the pipeline's own runs work.
    replay: bool,
}

impl RunEnd {
    /// A failing pipeline (or one that keeps quarantining) is a condition: alerted once,
    /// then reminded; a run that delivers clears it, with a recovery for a failure.
    /// Drift let through under `schema_policy: warn` is one alert per node and run.
    async fn raise(self) {
        let RunEnd {
            alerts,
            store,
            name,
            run_id,
            status,
            alert,
            drift,
            parked,
            replay,
        } = self;
        let next = format!("sluice runs show {run_id}");
        if let Some((alert, next)) = alert {
            let next = next.replace("{run}", &run_id);
            let subject = alert.node.clone().unwrap_or_default();
            crate::alerts::raise_condition(&alerts, &alert, &subject, &next, &store).await;
        }
        // A quota used up beyond `max_retry_after`: once per node while it stays parked.
        for (node, why) in &parked {
            let alert = AlertRow {
                pipeline: name.clone(),
                node: Some(node.clone()),
                kind: AlertKind::QuotaExhausted,
                class: Some(ErrorClass::RateLimited),
                severity: AlertSeverity::Warning,
                message: format!("node `{node}`: {why}"),
                at: now_ms(),
            };
            crate::alerts::raise_condition(&alerts, &alert, node, &next, &store).await;
        }
        let recovered = |node: Option<String>, message: String| {
            Some((
                AlertRow {
                    pipeline: name.clone(),
                    node,
                    kind: AlertKind::Recovered,
                    class: None,
                    severity: AlertSeverity::Info,
                    message,
                    at: now_ms(),
                },
                next.clone(),
            ))
        };
        if !replay && matches!(status, RunStatus::Succeeded | RunStatus::PartiallySucceeded) {
            crate::alerts::clear(&alerts, &store, &name, None, AlertKind::RunFailed, |c, held| {
                let at = c.subject.as_str();
                let node = (!at.is_empty()).then(|| at.to_owned());
                let where_ = node
                    .as_ref()
                    .map(|n| format!(" at node `{n}`"))
                    .unwrap_or_default();
                recovered(
                    node,
                    format!(
                        "the pipeline runs again (run {run_id} {status}): it had been failing{where_} for {}",
                        crate::alerts::message::span(held)
                    ),
                )
            })
            .await;
            crate::alerts::clear(
                &alerts,
                &store,
                &name,
                None,
                AlertKind::QuotaExhausted,
                |c, held| {
                    recovered(
                        Some(c.subject.clone()),
                        format!(
                            "node `{}` reads again (run {run_id} {status}): its API quota had been used up for {}",
                            c.subject,
                            crate::alerts::message::span(held)
                        ),
                    )
                },
            )
            .await;
            // A breaker still reported open when a run delivers again (a new process
            // starts with its breakers closed, and never tells of them closing).
            crate::alerts::clear(
                &alerts,
                &store,
                &name,
                None,
                AlertKind::BreakerOpen,
                |c, held| {
                    let host = c.subject.strip_prefix("breaker ").unwrap_or(&c.subject);
                    recovered(
                        None,
                        format!(
                            "the pipeline runs again (run {run_id} {status}): the circuit breaker for {host} had been reported open for {}",
                            crate::alerts::message::span(held)
                        ),
                    )
                },
            )
            .await;
            crate::alerts::clear(&alerts, &store, &name, None, AlertKind::Stale, |_, held| {
                recovered(
                    None,
                    format!(
                        "the pipeline succeeded again (run {run_id}), after being reported late for {}",
                        crate::alerts::message::span(held)
                    ),
                )
            })
            .await;
        }
        for (node, changes) in &drift {
            let more = match changes.len() {
                1 => String::new(),
                n => format!(" (and {} more change(s) in this run)", n - 1),
            };
            let alert = AlertRow {
                pipeline: name.clone(),
                node: Some(node.clone()),
                kind: AlertKind::SchemaDrift,
                class: Some(ErrorClass::ContractChanged),
                severity: AlertSeverity::Warning,
                message: format!(
                    "node `{node}`: {}{more}; `schema_policy: warn` let the records through",
                    changes[0]
                ),
                at: now_ms(),
            };
            crate::alerts::raise(&alerts, &alert, &next, &store).await;
        }
        if !replay && status == RunStatus::Succeeded {
            // Nothing quarantined this time: the next quarantine is news again.
            crate::alerts::clear(
                &alerts,
                &store,
                &name,
                None,
                AlertKind::RunPartiallySucceeded,
                |_, _| None,
            )
            .await;
        }
    }
}

/// The alert a run's end raises, if any, with the command that shows more (`{run}` stands
/// for the run's id): a failed run (critical), or one that quarantined records (warning).
fn run_alert(
    pipeline: &str,
    status: RunStatus,
    error: Option<&str>,
    cause: Option<&NodeOutcome>,
    outcomes: &[NodeOutcome],
) -> Option<(AlertRow, String)> {
    match status {
        RunStatus::Failed => Some((
            AlertRow {
                pipeline: pipeline.to_owned(),
                node: cause.map(|o| o.summary.id.clone()),
                kind: AlertKind::RunFailed,
                class: cause.and_then(|o| o.summary.error_class),
                severity: AlertSeverity::Critical,
                message: error.unwrap_or("the run failed").to_owned(),
                at: now_ms(),
            },
            "sluice runs show {run}".to_owned(),
        )),
        RunStatus::PartiallySucceeded => {
            let quarantined: Vec<&NodeOutcome> = outcomes
                .iter()
                .filter(|o| o.summary.counts.quarantined > 0)
                .collect();
            let total: i64 = quarantined
                .iter()
                .map(|o| o.summary.counts.quarantined)
                .sum();
            let nodes: Vec<String> = quarantined
                .iter()
                .map(|o| format!("`{}`", o.summary.id))
                .collect();
            Some((
                AlertRow {
                    pipeline: pipeline.to_owned(),
                    node: quarantined.first().map(|o| o.summary.id.clone()),
                    kind: AlertKind::RunPartiallySucceeded,
                    class: quarantined.iter().find_map(|o| o.summary.error_class),
                    severity: AlertSeverity::Warning,
                    message: format!(
                        "{total} record(s) quarantined in node {}; the rest was delivered",
                        nodes.join(", ")
                    ),
                    at: now_ms(),
                },
                format!("sluice failed list --pipeline {pipeline}"),
            ))
        }
        _ => None,
    }
}
