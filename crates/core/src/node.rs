//! What a built node is, as the engine runs it: a source factory, a transform, a sink or
//! a task. Connectors build these from their spec (`sluice-connectors`' registry); the
//! engine drives them.

use crate::{ConnectorError, Sink, Source};
use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;

/// A boxed future that can be sent across threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
    /// A source, opened by `open` with the node's last checkpoint when the node starts.
    pub fn source<F, Fut>(open: F) -> NodeRunner
    where
        F: FnOnce(Option<serde_json::Value>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Box<dyn Source>, ConnectorError>> + Send + 'static,
    {
        NodeRunner::Source(Box::new(move |checkpoint| Box::pin(open(checkpoint))))
    }

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
