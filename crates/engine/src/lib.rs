//! # sluice-engine
//!
//! Turns a pipeline into a run that either delivers every batch or keeps each failed one,
//! visibly, for replay.
//!
//! - A [`Pipeline`] is a list of [`NodeDef`]s in execution order: sources, transforms,
//!   sinks and tasks, each with its retry policy and its disposition per error class.
//!   [`build::build_pipeline`] makes one from a validated plan, each node built by its
//!   kind (`sluice_connectors::registry()`); the engine runs whatever implements
//!   [`Source`](sluice_core::Source), [`Sink`](sluice_core::Sink), [`Transform`] and
//!   [`Task`].
//! - [`Executor::run`] runs every node as a tokio task. Data flows through the durable
//!   buffer: each producing node publishes to its own topic, each consuming node reads
//!   its inputs' topics as its own consumer group and commits only after it handled a
//!   batch. A source's checkpoint is saved only after the buffer acknowledged the batch.
//! - Every failure is handled by its class: retried with full-jitter backoff (honouring
//!   `Retry-After`), split in halves, quarantined in the failed-batch store, skipped, or
//!   failing the node. A failed node fails the run: the others stop, nodes not started are
//!   skipped, and the `compensate` tasks of completed nodes run in reverse order.
//! - [`replay`] re-delivers failed batches from the node where they failed; the sinks'
//!   ledgers make it idempotent.
//! - [`doctor::diagnose`] walks the troubleshooting flow for each link of a pipeline
//!   (symptom, network, auth, parameters, dependencies, logic, upstream change) and names
//!   the cause; [`reconcile::reconcile`] compares what each source holds with what its
//!   sinks hold, by count and key-range checksum.

pub mod alerts;
mod assist;
pub mod build;
mod deliver;
pub mod doctor;
mod doctor_tls;
mod events;
pub mod gate;
pub mod health;
mod killpoint;
mod load;
mod names;
mod pipeline;
pub mod reconcile;
mod replay;
mod retry;
mod run;

pub use assist::{Assist, running_elsewhere};
pub use events::{Event, EventKind};
pub use gate::GateSpec;
pub use pipeline::{
    Dispositions, NodeDef, NodeRunner, Pipeline, SourceFactory, Task, TaskContext, Transform,
    group_name, topic_name,
};
pub use replay::{ReplayReport, replay};
pub use run::{Executor, NodeSummary, RunSummary};
pub use sluice_connectors::task::{CommandTask, SqlTask};
pub use sluice_connectors::transform::CompiledTransform;

use sluice_core::{ConnectorError, ErrorClass};

/// Errors of the engine itself (not of a node: those are recorded in the run).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] sluice_state::StateError),
    /// The buffer failed outside of a node.
    #[error(transparent)]
    Buffer(#[from] sluice_buffer::BufferError),
    /// The pipeline cannot run as given (class `invalid_request`).
    #[error("{}", .0.message)]
    Pipeline(ConnectorError),
}

impl EngineError {
    /// A pipeline that cannot run as given: a node refers to one that is not before it,
    /// an id used twice, a consumer without inputs.
    pub(crate) fn pipeline(message: impl Into<String>) -> Self {
        EngineError::Pipeline(ConnectorError::new(ErrorClass::InvalidRequest, message))
    }

    /// The failure's class.
    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::State(e) => e.class(),
            EngineError::Buffer(e) => e.class(),
            EngineError::Pipeline(e) => e.class,
        }
    }
}
