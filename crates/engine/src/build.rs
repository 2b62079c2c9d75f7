//! From a validated plan to a runnable [`Pipeline`], its buffer and its state store:
//! the connector registry lives here, as one `match` on the node's kind.

use sluice_buffer::{
    Buffer, EmbeddedLog, EmbeddedOptions, FsyncPolicy, KafkaBuffer, KafkaOptions, WireFormat,
};
use sluice_config::plan::{Plan, PlannedNode};
use sluice_config::spec::nodes::{NodeKind, TaskSpec};
use sluice_config::spec::{self, BufferSpec};
use sluice_core::Secret;
use sluice_state::StateStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::pipeline::{Dispositions, NodeDef, NodeRunner, Pipeline, Task};
use crate::tasks::{CommandTask, SqlTask};

/// A node or the pipeline cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The buffer could not be opened.
    #[error("cannot open the buffer: {0}")]
    Buffer(#[from] sluice_buffer::BufferError),
    /// The state store could not be opened.
    #[error(transparent)]
    State(#[from] sluice_state::StateError),
    /// A node could not be built.
    #[error("node `{node}`: {message}")]
    Node {
        /// The node.
        node: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Where relative paths in the pipeline (the embedded buffer, SQLite files) are resolved.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The folder relative paths start from (the working directory by default).
    pub base_dir: PathBuf,
}

impl Default for BuildContext {
    fn default() -> Self {
        BuildContext {
            base_dir: PathBuf::from("."),
        }
    }
}

/// Opens the plan's state store.
pub async fn open_state(plan: &Plan, ctx: &BuildContext) -> Result<StateStore, BuildError> {
    Ok(StateStore::open(&resolve_sqlite(plan.state.expose(), &ctx.base_dir)).await?)
}

/// Makes a relative `sqlite://` path relative to `base`.
pub fn resolve_sqlite(url: &str, base: &Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') && !path.starts_with(":memory:") => {
            format!("sqlite://{}", base.join(path).display())
        }
        _ => url.to_owned(),
    }
}

/// Opens the plan's buffer.
pub fn open_buffer(buffer: &BufferSpec, ctx: &BuildContext) -> Result<Arc<dyn Buffer>, BuildError> {
    match buffer {
        BufferSpec::Embedded(e) => {
            let options = EmbeddedOptions {
                segment_bytes: e.segment_size.value.bytes(),
                fsync: match &e.fsync {
                    spec::FsyncPolicy::EveryBatch => FsyncPolicy::EveryBatch,
                    spec::FsyncPolicy::Interval(every) => FsyncPolicy::Interval(every.value.get()),
                },
                max_message_bytes: e.max_message_size.value.bytes() as usize,
                format: WireFormat::ArrowZstd,
            };
            Ok(Arc::new(EmbeddedLog::open(
                ctx.base_dir.join(&e.path),
                options,
            )?))
        }
        BufferSpec::Kafka(k) => {
            let mut properties: BTreeMap<String, String> = k
                .properties
                .iter_exposed()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect();
            let arrow_compression = |c: spec::Compression| match c {
                spec::Compression::Zstd => WireFormat::ArrowZstd,
                spec::Compression::Lz4 => WireFormat::ArrowLz4,
                _ => WireFormat::Arrow,
            };
            let format = match k.format {
                spec::WireFormat::Arrow => arrow_compression(k.compression),
                spec::WireFormat::Json => WireFormat::JsonLines,
            };
            // Arrow compresses its own buffers with zstd/lz4; other codecs (and any codec
            // for JSON lines) are applied by librdkafka to whole messages.
            let kafka_codec = match (k.format, k.compression) {
                (spec::WireFormat::Arrow, spec::Compression::Zstd | spec::Compression::Lz4) => None,
                (_, spec::Compression::None) => None,
                (_, c) => Some(format!("{c:?}").to_lowercase()),
            };
            if let Some(codec) = kafka_codec {
                properties.entry("compression.type".into()).or_insert(codec);
            }
            let options = KafkaOptions {
                brokers: k
                    .brokers
                    .value
                    .iter()
                    .map(|b| b.value.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                partitions: k.partitions.value as i32,
                replication: i32::from(k.replication.value),
                retention: Some(k.retention.value.get()),
                message_max_bytes: k.message_max_bytes.value.bytes() as usize,
                format,
                properties,
                ..KafkaOptions::default()
            };
            Ok(Arc::new(KafkaBuffer::new(options)?))
        }
    }
}

/// The topic prefix of the plan's buffer (Kafka's `topic_prefix`), if any.
pub fn topic_prefix(buffer: &BufferSpec) -> Option<String> {
    match buffer {
        BufferSpec::Kafka(k) => Some(k.topic_prefix.value.clone()),
        BufferSpec::Embedded(_) => None,
    }
}

/// Builds a task (a task node's work or a `compensate` action).
pub fn build_task(task: &TaskSpec, ctx: &BuildContext) -> Box<dyn Task> {
    match task {
        TaskSpec::SqlTask(t) => Box::new(SqlTask::new(
            Secret::new(resolve_sqlite(t.url.value.expose(), &ctx.base_dir)),
            t.sql.value.clone(),
            t.timeout.value.get(),
        )),
        TaskSpec::Command(c) => Box::new(CommandTask::new(
            c.program.value.clone(),
            c.args.clone(),
            c.env
                .iter_exposed()
                .map(|(k, v)| (k.to_owned(), Secret::new(v)))
                .collect(),
            c.cwd.as_ref().map(|d| ctx.base_dir.join(d)),
            c.timeout.value.get(),
        )),
    }
}

fn node_error(node: &PlannedNode, message: impl Into<String>) -> BuildError {
    BuildError::Node {
        node: node.id.clone(),
        message: message.into(),
    }
}

/// The registry: what runs a node of each kind.
fn build_runner(
    node: &PlannedNode,
    plan: &Plan,
    ctx: &BuildContext,
) -> Result<NodeRunner, BuildError> {
    let _ = plan;
    match &node.config {
        NodeKind::SqlTask(t) => Ok(NodeRunner::Task(build_task(
            &TaskSpec::SqlTask(t.clone()),
            ctx,
        ))),
        NodeKind::Command(c) => Ok(NodeRunner::Task(build_task(
            &TaskSpec::Command(c.clone()),
            ctx,
        ))),
        other => Err(node_error(
            node,
            format!(
                "nodes of type `{}` cannot run in this build yet; `sluice validate` accepts them, but `sluice run` needs a connector",
                node_type_name(other)
            ),
        )),
    }
}

fn node_type_name(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::Http(_) => "http",
        NodeKind::HttpSink(_) => "http_sink",
        NodeKind::SqlSource(_) => "sql source",
        NodeKind::SqlSink(_) => "sql sink",
        NodeKind::File(_) => "file",
        NodeKind::FileSink(_) => "file_sink",
        NodeKind::Transform(_) => "transform",
        NodeKind::SqlTask(_) => "sql_task",
        NodeKind::Command(_) => "command",
    }
}

/// Builds the runnable pipeline: every node with its runner, retry policy, dispositions
/// and compensation, in the plan's execution order.
pub fn build_pipeline(plan: &Plan, ctx: &BuildContext) -> Result<Pipeline, BuildError> {
    let mut nodes = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        let mut dispositions = Dispositions::default();
        for d in &node.on_error {
            dispositions.set(d.class, d.disposition);
        }
        nodes.push(NodeDef {
            id: node.id.clone(),
            inputs: node.inputs.clone(),
            after: node.after.clone(),
            retry: node.retry.policy(),
            dispositions,
            runner: build_runner(node, plan, ctx)?,
            compensate: node.compensate.as_ref().map(|t| build_task(t, ctx)),
        });
    }
    Ok(Pipeline {
        name: plan.pipeline.clone(),
        topic_prefix: topic_prefix(&plan.buffer),
        nodes,
    })
}
