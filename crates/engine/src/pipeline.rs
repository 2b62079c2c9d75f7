//! What the executor runs: nodes with their runners and policies.

use async_trait::async_trait;
use futures::future::BoxFuture;
use sluice_core::{ConnectorError, Disposition, ErrorClass, RetryPolicy, Sink, Source};
use std::collections::HashMap;

/// Opens a source, given the node's last checkpoint.
pub type SourceFactory = Box<
    dyn FnOnce(
            Option<serde_json::Value>,
        ) -> BoxFuture<'static, Result<Box<dyn Source>, ConnectorError>>
        + Send,
>;

/// Reshapes records. Transforms are pure and synchronous.
pub trait Transform: Send {
    /// Applies the transform to one batch's records.
    fn apply(
        &mut self,
        records: arrow::array::RecordBatch,
    ) -> Result<arrow::array::RecordBatch, ConnectorError>;
}

/// The run a task runs in: what `{{run_id}}` and `{{pipeline}}` stand for in its `sql`
/// and `args` (and `SLUICE_RUN_ID`/`SLUICE_PIPELINE` in a command's environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskContext {
    /// The pipeline's name.
    pub pipeline: String,
    /// The run's id.
    pub run_id: String,
}

impl TaskContext {
    /// `text` with `{{run_id}}` and `{{pipeline}}` filled in (spaces inside the braces
    /// allowed).
    pub fn render(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start..].find("}}") else {
                break;
            };
            let name = rest[start + 2..start + len].trim();
            let value = match name {
                "run_id" => Some(self.run_id.as_str()),
                "pipeline" => Some(self.pipeline.as_str()),
                _ => None,
            };
            out.push_str(&rest[..start]);
            match value {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[start..start + len + 2]),
            }
            rest = &rest[start + len + 2..];
        }
        out.push_str(rest);
        out
    }
}

/// A step that runs once: a SQL statement, a command. Used as task nodes and as
/// `compensate` actions.
#[async_trait]
pub trait Task: Send + Sync {
    /// Runs it, in the run `ctx` names.
    async fn run(&self, ctx: &TaskContext) -> Result<(), ConnectorError>;
    /// One line saying what it does (no secrets).
    fn describe(&self) -> String;
}

/// How a node does its work.
pub enum NodeRunner {
    /// Reads batches and publishes them.
    Source(SourceFactory),
    /// Reads its inputs, reshapes, publishes.
    Transform(Box<dyn Transform>),
    /// Reads its inputs and writes them.
    Sink(Box<dyn Sink>),
    /// Runs once when its `after` nodes succeeded.
    Task(Box<dyn Task>),
}

impl NodeRunner {
    /// `source`, `transform`, `sink` or `task`.
    pub fn role(&self) -> &'static str {
        match self {
            NodeRunner::Source(_) => "source",
            NodeRunner::Transform(_) => "transform",
            NodeRunner::Sink(_) => "sink",
            NodeRunner::Task(_) => "task",
        }
    }

    /// Whether the node publishes batches for others to read.
    pub fn produces(&self) -> bool {
        matches!(self, NodeRunner::Source(_) | NodeRunner::Transform(_))
    }
}

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
}

impl Pipeline {
    /// A pipeline without a topic prefix.
    pub fn new(name: impl Into<String>, nodes: Vec<NodeDef>) -> Self {
        Pipeline {
            name: name.into(),
            topic_prefix: None,
            nodes,
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
