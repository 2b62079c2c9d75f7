//! From a validated plan to a runnable [`Pipeline`], its buffer and its state store. Each
//! node is built by its kind (`NodeConfig::build`, see `sluice_connectors::registry`): no
//! kind is named here.

use sluice_buffer::{
    Buffer, EmbeddedLog, EmbeddedOptions, FsyncPolicy, KafkaBuffer, KafkaOptions, WireFormat,
};
use sluice_config::plan::{Plan, PlannedNode};
use sluice_config::spec::nodes::TaskSpec;
use sluice_config::spec::{self, BufferSpec};
use sluice_core::{ConnectorError, Disposition, ErrorClass};
use sluice_state::StateStore;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use sluice_config::kind::{BuildContext, resolve_sqlite};

use crate::pipeline::{Dispositions, NodeDef, NodeRunner, Pipeline, Task};

/// A node or the pipeline cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The buffer could not be opened.
    #[error("cannot open the buffer: {0}")]
    Buffer(#[from] sluice_buffer::BufferError),
    /// The state store could not be opened.
    #[error(transparent)]
    State(#[from] sluice_state::StateError),
    /// A node could not be built (its class kept: a database that is down is
    /// `dependency`, a bad setting `invalid_request`).
    #[error("node `{node}`: {error}")]
    Node {
        /// The node.
        node: String,
        /// What is wrong and what to do.
        error: ConnectorError,
    },
}

/// Opens the plan's state store.
pub async fn open_state(plan: &Plan, ctx: &BuildContext) -> Result<StateStore, BuildError> {
    Ok(StateStore::open(&ctx.database_url(plan.state.expose())).await?)
}

/// Opens the plan's buffer. The embedded log is opened for the pipeline's topics only
/// and locked while open: a second process running the same pipeline on the same folder
/// gets [`BufferError::Locked`](sluice_buffer::BufferError::Locked), naming the holder.
pub fn open_buffer(plan: &Plan, ctx: &BuildContext) -> Result<Arc<dyn Buffer>, BuildError> {
    match &plan.buffer {
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
            Ok(Arc::new(EmbeddedLog::open_for(
                ctx.base_dir.join(&e.path),
                &plan.pipeline,
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

impl BuildError {
    /// The failure's class.
    pub fn class(&self) -> ErrorClass {
        match self {
            BuildError::Buffer(b) => b.class(),
            BuildError::State(s) => s.class(),
            BuildError::Node { error, .. } => error.class,
        }
    }
}

/// A build failure where a node's error is expected (a health check), class kept.
impl From<BuildError> for ConnectorError {
    fn from(e: BuildError) -> Self {
        ConnectorError::new(e.class(), e.to_string())
    }
}

fn node_error(node: &PlannedNode, error: ConnectorError) -> BuildError {
    BuildError::Node {
        node: node.id.clone(),
        error,
    }
}

/// Builds a `compensate` task of `node`.
pub async fn build_task(
    task: &TaskSpec,
    node: &PlannedNode,
    ctx: &BuildContext,
) -> Result<Box<dyn Task>, BuildError> {
    match task.config.build(node, ctx).await {
        Ok(NodeRunner::Task(t)) => Ok(t),
        Ok(other) => Err(node_error(
            node,
            ConnectorError::new(
                ErrorClass::Internal,
                format!("`compensate` built a {} instead of a task", other.role()),
            ),
        )),
        Err(e) => Err(node_error(node, e)),
    }
}

/// Builds the runnable pipeline: every node with its runner, retry policy, dispositions
/// and compensation, in the plan's execution order.
pub async fn build_pipeline(plan: &Plan, ctx: &BuildContext) -> Result<Pipeline, BuildError> {
    let ctx = &ctx.for_pipeline(&plan.pipeline);
    let mut nodes = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        let mut dispositions = Dispositions::default();
        for d in &node.on_error {
            dispositions.set(d.class, d.disposition);
        }
        if node.config.schema_policy() == Some(spec::SchemaPolicy::Quarantine)
            && !node
                .on_error
                .iter()
                .any(|d| d.class == ErrorClass::ContractChanged)
        {
            dispositions.set(ErrorClass::ContractChanged, Disposition::Quarantine);
        }
        nodes.push(NodeDef {
            id: node.id.clone(),
            inputs: node.inputs.clone(),
            after: node.after.clone(),
            retry: node.retry.policy(),
            dispositions,
            runner: node
                .config
                .build(node, ctx)
                .await
                .map_err(|e| node_error(node, e))?,
            compensate: match &node.compensate {
                Some(t) => Some(build_task(t, node, ctx).await?),
                None => None,
            },
        });
    }
    Ok(Pipeline {
        name: plan.pipeline.clone(),
        topic_prefix: topic_prefix(&plan.buffer),
        nodes,
        alerts: plan.alerts.clone(),
    })
}
