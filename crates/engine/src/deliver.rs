//! Handling one batch at a consuming node, by the class of each failure: retry, split,
//! quarantine, skip or fail. Shared by runs and replays.

use async_trait::async_trait;
use sluice_buffer::wire::{self, WireFormat};
use sluice_core::{
    Batch, ConnectorError, ConnectorEvent, Disposition, ErrorClass, RetryPolicy, WriteReport,
};
use sluice_state::{NewFailedBatch, NodeCounts, NodeRunRow, RunStatus, StateStore};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Dispositions;
use crate::retry::{Attempt, GaveUp, retrying};
use crate::{Event, EventKind};

/// Where a consuming node sends a batch: a sink's write, or a transform and a publish.
#[async_trait]
pub(crate) trait Target: Send {
    async fn handle(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError>;
    fn drain_events(&mut self) -> Vec<sluice_core::ConnectorEvent> {
        Vec::new()
    }
    /// See [`sluice_core::Sink::group_rows`]: 0, batches are handled one at a time.
    fn group_rows(&self) -> usize {
        0
    }
    /// See [`sluice_core::Sink::write_group`].
    async fn handle_group(
        &mut self,
        batches: &[Batch],
    ) -> Result<Vec<Option<WriteReport>>, ConnectorError> {
        let _ = batches;
        Err(ConnectorError::new(
            ErrorClass::Internal,
            "this target handles one batch at a time",
        ))
    }
}

/// The node's row of a run: its status, its counts, and the error that failed it.
pub(crate) fn node_row(
    node: &str,
    status: RunStatus,
    counts: NodeCounts,
    error: Option<&ConnectorError>,
) -> NodeRunRow {
    NodeRunRow {
        node: node.to_owned(),
        status,
        counts,
        error_class: error.map(|e| e.class),
        error: error.map(|e| e.message.clone()),
    }
}

/// Everything a node needs to handle failures.
pub(crate) struct NodeCtx {
    pub pipeline: String,
    /// Start of topic and group names (see `Pipeline::namespace`).
    pub namespace: String,
    pub node: String,
    pub run_id: String,
    /// The load the run's writes belong to (`None`: a replay); see `crate::load`.
    pub load: Option<String>,
    pub retry: RetryPolicy,
    pub dispositions: Dispositions,
    pub store: StateStore,
    pub events: Option<UnboundedSender<Event>>,
    pub cancel: CancellationToken,
    pub stats: NodeCounts,
    /// Set after the retries of a transient failure ran out: further batches get one
    /// attempt each until one succeeds (a circuit breaker on the node's link), so an
    /// outage fills the failed-batch store quickly instead of waiting out every budget.
    pub link_down: bool,
    /// Ledger keys kept in the failed-batch store by this node, in order.
    pub quarantined_ids: Vec<String>,
    /// What drifted from the schema and went through under `schema_policy: warn`.
    pub schema_drift: Vec<String>,
    /// The run's gate (health-gated flow), when the pipeline has one.
    pub gate: Option<std::sync::Arc<crate::gate::Gate>>,
    /// The target took a batch in this run: its link was up, so a failure of it now is
    /// an outage to wait out (under `when_link_down: pause`), not a target that cannot
    /// work at all (a wrong path, a database that never answered), which fails as before.
    pub wrote: bool,
    /// A worker helping another's run (see `crate::assist`): a batch that would stop the
    /// node, or be kept after an outage, is handed back to the run's owner instead.
    pub hand_back: bool,
    /// An undecodable message was kept (its records cannot be counted).
    pub poisoned: bool,
}

impl NodeCtx {
    /// What a sink is told in `begin_run`.
    pub(crate) fn run_info(&self) -> sluice_core::RunInfo {
        sluice_core::RunInfo {
            run_id: self.run_id.clone(),
            load: self.load.clone(),
        }
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        if let Some(tx) = &self.events {
            let _ = tx.send(Event {
                node: self.node.clone(),
                kind,
            });
        }
    }

    /// Records a failed attempt in the run record and logs it.
    pub(crate) async fn record_attempt(&self, error: &ConnectorError) {
        let detail = match &error.evidence {
            Some(evidence) => format!("{}\n{evidence}", error.message),
            None => error.message.clone(),
        };
        tracing::debug!(pipeline = %self.pipeline, node = %self.node, class = %error.class, error = %error.message, "attempt failed");
        if let Err(e) = self
            .store
            .record_attempt(&self.run_id, &self.node, error.class, &detail)
            .await
        {
            tracing::error!(error = %e, "could not record an attempt in the state store");
        }
    }

    /// Keeps a batch in the failed-batch store. If even that fails, the node must fail:
    /// the batch is then neither delivered nor kept, so its offset must not be committed.
    pub(crate) async fn quarantine(
        &mut self,
        batch: &Batch,
        error: &ConnectorError,
        attempts: i64,
    ) -> Result<(), ConnectorError> {
        let frame = wire::encode(batch, WireFormat::ArrowZstd, usize::MAX)
            .map_err(|e| {
                ConnectorError::new(
                    ErrorClass::Internal,
                    format!(
                        "cannot encode batch {} for the failed-batch store: {e}",
                        batch.id
                    ),
                )
            })?
            .remove(0)
            .to_frame();
        let id = batch.ledger_key();
        self.store
            .quarantine(&NewFailedBatch {
                id: id.as_str(),
                pipeline: &self.pipeline,
                node: &self.node,
                run_id: &self.run_id,
                class: error.class,
                error: &error.message,
                evidence: error.evidence.as_deref(),
                attempts,
                rows: batch.num_rows() as i64,
                payload: &frame,
            })
            .await
            .map_err(|e| {
                ConnectorError::new(
                    e.class(),
                    format!("cannot keep batch {id} in the failed-batch store: {e}"),
                )
            })?;
        self.stats.quarantined += batch.num_rows() as i64;
        self.quarantined_ids.push(id.to_string());
        self.emit(EventKind::Quarantined {
            class: error.class,
            rows: batch.num_rows(),
            message: error.message.clone(),
        });
        Ok(())
    }

    /// Whether the node's disposition for the error's class is `retry`.
    pub(crate) fn retries(&self, error: &ConnectorError) -> bool {
        self.dispositions.get(error.class) == Disposition::Retry
    }

    /// Counts a batch the target took, and keeps the rows it refused.
    async fn written(&mut self, batch: &Batch, report: WriteReport) -> Result<(), ConnectorError> {
        self.link_down = false;
        self.wrote = true;
        if report.duplicate {
            self.stats.duplicates += 1;
            self.emit(EventKind::DuplicateSkipped {
                rows: batch.num_rows(),
            });
        } else {
            self.stats.records_out += report.written as i64;
            self.emit(EventKind::BatchWritten {
                rows: report.written,
            });
        }
        for rejected in report.rejected {
            self.record_attempt(&rejected.error).await;
            self.quarantine(&rejected.rows, &rejected.error, 1).await?;
        }
        Ok(())
    }

    fn forward_events(&mut self, target: &mut dyn Target) -> Vec<ConnectorEvent> {
        let events = target.drain_events();
        self.connector_events(events.clone(), true);
        events
    }

    /// Shows a connector's events, counts its retries; the caller records the failures
    /// among them as attempts ([`NodeCtx::record_events`]).
    /// With `show` false, the events were shown live already (a listener).
    pub(crate) fn connector_events(&mut self, events: Vec<ConnectorEvent>, show: bool) {
        for e in events {
            if e.retry {
                self.stats.retries += 1;
            }
            if e.drift_warned {
                self.schema_drift.push(e.message.clone());
            }
            if show && let Some(gate) = &self.gate {
                // Not live: the breaker is weighed now (a live listener did it already).
                gate.connector_event(&self.node, &e);
            }
            if show {
                self.emit(EventKind::from(e));
            }
        }
    }

    /// Records the failures a connector handled inside (a retried request, a refreshed
    /// token, a smaller page) as attempts, so `sluice runs show` lists them with their class.
    pub(crate) async fn record_events(&self, events: &[ConnectorEvent]) {
        for e in events {
            if let Some(class) = e.class {
                self.record_attempt(&ConnectorError::new(class, e.message.clone()))
                    .await;
            }
        }
    }
}

/// One attempt of a target at a batch, the connector's events passed on.
struct Handle<'a> {
    target: &'a mut dyn Target,
    batch: &'a Batch,
}

#[async_trait]
impl Attempt for Handle<'_> {
    type Output = WriteReport;

    /// Under `when_link_down: pause`, a failure because the target's link is down waits
    /// for the link, inside this attempt, then writes again: an outage spends no retries.
    async fn attempt(&mut self, ctx: &mut NodeCtx) -> Result<WriteReport, ConnectorError> {
        loop {
            let result = self.target.handle(self.batch).await;
            let events = ctx.forward_events(self.target);
            ctx.record_events(&events).await;
            let (Err(error), Some(gate), true) = (&result, ctx.gate.clone(), ctx.wrote) else {
                return result;
            };
            match gate.hold_sink(ctx, error).await {
                crate::gate::Held::Recovered => continue,
                crate::gate::Held::Up | crate::gate::Held::Cancelled => return result,
            }
        }
    }

    /// Once the link is down, a batch gets one attempt until one succeeds.
    fn retry_on(&self, ctx: &NodeCtx, error: &ConnectorError) -> bool {
        !ctx.link_down && ctx.retries(error)
    }
}

/// Handles batches a sink takes at once ([`Target::handle_group`]): all of them in one
/// write when it can, else ([`deliver`]) one by one, each by the class of its failures;
/// the batches a group write hands back are written one by one after it, in order.
/// A group that failed is not the outage or the refusal itself (the writes one by one
/// find those and deal with them): nothing of it is recorded.
pub(crate) async fn deliver_group(
    ctx: &mut NodeCtx,
    target: &mut dyn Target,
    batches: Vec<Batch>,
) -> Result<(), ConnectorError> {
    let mut reports: Vec<Option<WriteReport>> = Vec::new();
    if batches.len() > 1 && !ctx.link_down {
        let result = target.handle_group(&batches).await;
        let events = ctx.forward_events(target);
        match result {
            Ok(got) if got.len() == batches.len() => {
                ctx.record_events(&events).await;
                reports = got;
            }
            Ok(got) => {
                tracing::warn!(node = %ctx.node, batches = batches.len(), reports = got.len(), "a group write reported on the wrong number of batches; writing them one by one");
            }
            Err(e) => {
                tracing::debug!(node = %ctx.node, batches = batches.len(), class = %e.class, error = %e.message, "a group write failed; writing its batches one by one");
            }
        }
    }
    reports.resize_with(batches.len(), || None);
    let handed_back = reports.iter().filter(|r| r.is_none()).count();
    if handed_back > 0 && handed_back < batches.len() {
        tracing::debug!(node = %ctx.node, batches = batches.len(), handed_back, "a group write handed batches back; writing them one by one");
    }
    for (batch, report) in batches.into_iter().zip(reports) {
        match report {
            Some(report) => {
                ctx.stats.records_in += batch.num_rows() as i64;
                ctx.stats.batches += 1;
                ctx.written(&batch, report).await?;
            }
            None => deliver(ctx, target, batch).await?,
        }
    }
    Ok(())
}

/// Handles one batch: on success or after every failure was dealt with by its
/// disposition, returns `Ok`; returns `Err` when the node must fail (the batch was kept
/// in the failed-batch store first whenever possible).
pub(crate) async fn deliver(
    ctx: &mut NodeCtx,
    target: &mut dyn Target,
    batch: Batch,
) -> Result<(), ConnectorError> {
    ctx.stats.records_in += batch.num_rows() as i64;
    ctx.stats.batches += 1;
    // Work stack: halves of split batches are pushed right first, so order is kept.
    let mut stack = vec![batch];
    while let Some(batch) = stack.pop() {
        let handled = retrying(
            ctx,
            &mut Handle {
                target: &mut *target,
                batch: &batch,
            },
        )
        .await;
        let GaveUp {
            error, attempts, ..
        } = match handled {
            Ok(report) => {
                ctx.written(&batch, report).await?;
                continue;
            }
            Err(gave_up) => gave_up,
        };
        let disposition = ctx.dispositions.get(error.class);
        if ctx.hand_back && matches!(disposition, Disposition::Retry | Disposition::Fail) {
            return Err(error);
        }
        match disposition {
            Disposition::Retry => {
                // Out of retries (or shutting down): keep the batch for replay.
                if error.class.is_transient() {
                    ctx.link_down = true;
                }
                ctx.quarantine(&batch, &error, attempts as i64).await?;
                if !error.class.is_transient() {
                    return Err(error);
                }
            }
            Disposition::Split => {
                if let Some((left, right)) = batch.split() {
                    ctx.emit(EventKind::Split {
                        class: error.class,
                        rows: batch.num_rows(),
                    });
                    stack.push(right);
                    stack.push(left);
                } else {
                    // A single record that still fails is quarantined, not lost.
                    ctx.quarantine(&batch, &error, attempts as i64).await?;
                }
            }
            Disposition::Quarantine => {
                ctx.quarantine(&batch, &error, attempts as i64).await?;
            }
            Disposition::Skip => {
                ctx.emit(EventKind::Skipped {
                    class: error.class,
                    rows: batch.num_rows(),
                });
            }
            Disposition::Fail => {
                ctx.quarantine(&batch, &error, attempts as i64).await?;
                return Err(error);
            }
        }
    }
    Ok(())
}
