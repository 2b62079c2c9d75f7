//! What the executor runs: nodes with their runners and policies.

pub use sluice_core::node::{NodeRunner, SourceFactory, Task, TaskContext, Transform};
use sluice_core::{Disposition, ErrorClass, RetryPolicy};
use std::collections::HashMap;

/// The disposition per error class: the class's default unless the node overrides it.
#[derive(Debug, Clone, Default)]
pub struct Dispositions {
    overrides: HashMap<ErrorClass, Disposition>,
}

impl Dispositions {
    /// Sets the disposition of a class.
    pub fn set(&mut self, class: ErrorClass, disposition: Disposition) -> &mut Self {
        self.overrides.insert(class, disposition);
        self
    }

    /// What to do with a failure of this class.
    pub fn get(&self, class: ErrorClass) -> Disposition {
        self.overrides
            .get(&class)
            .copied()
            .unwrap_or_else(|| class.default_disposition())
    }
}

/// One node of a pipeline.
pub struct NodeDef {
    /// Node id.
    pub id: String,
    /// Nodes whose batches it reads.
    pub inputs: Vec<String>,
    /// Nodes that must succeed before it starts.
    pub after: Vec<String>,
    /// Retry policy for `retry` dispositions.
    pub retry: RetryPolicy,
    /// Disposition per error class.
    pub dispositions: Dispositions,
    /// What it does.
    pub runner: NodeRunner,
    /// Run in reverse order if a later node fails the run.
    pub compensate: Option<Box<dyn Task>>,
}

/// A runnable pipeline: its name and its nodes in execution (topological) order.
pub struct Pipeline {
    /// Pipeline name.
    pub name: String,
    /// Put before the pipeline name in topic and consumer-group names (Kafka's
    /// `topic_prefix`), so that several deployments can share a cluster.
    pub topic_prefix: Option<String>,
    /// Nodes, upstream before downstream.
    pub nodes: Vec<NodeDef>,
    /// Where the run's alerts go (the pipeline's `alerts:`).
    pub alerts: sluice_config::spec::AlertsSpec,
    /// How the flow is gated on the health of its links (`when_link_down`, `max_lag`);
    /// `None`: not gated.
    pub gate: Option<crate::gate::GateSpec>,
}

impl Pipeline {
    /// A pipeline without a topic prefix.
    pub fn new(name: impl Into<String>, nodes: Vec<NodeDef>) -> Self {
        Pipeline {
            name: name.into(),
            topic_prefix: None,
            nodes,
            alerts: Default::default(),
            gate: None,
        }
    }

    /// `<prefix>.<pipeline>`, or the pipeline name: what topic and group names start with.
    pub fn namespace(&self) -> String {
        match &self.topic_prefix {
            Some(prefix) => format!("{prefix}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The buffer topic a producing node publishes to: `<namespace>.<node>`.
pub fn topic_name(namespace: &str, node: &str) -> String {
    format!("{namespace}.{node}")
}

/// The consumer group of a consuming node: `<namespace>.<node>`.
pub fn group_name(namespace: &str, node: &str) -> String {
    format!("{namespace}.{node}")
}
