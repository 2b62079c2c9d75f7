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
                format: match e.compression {
                    spec::LogCompression::None => WireFormat::Arrow,
                    spec::LogCompression::Lz4 => WireFormat::ArrowLz4,
                    spec::LogCompression::Zstd => WireFormat::ArrowZstd,
                },
            };
            Ok(Arc::new(EmbeddedLog::open_for(
                ctx.base_dir.join(&e.path),
                &plan.pipeline,
                options,
            )?))
        }
        BufferSpec::Kafka(k) => Ok(Arc::new(KafkaBuffer::new(kafka_options(k))?)),
    }
}

/// The parts of a Kafka buffer's cluster the monitor checks one by one (each broker, the
/// pipeline's partitions: see [`KafkaBuffer::parts`]); none for the embedded log.
pub fn buffer_parts(plan: &Plan) -> Result<Vec<sluice_buffer::KafkaPart>, BuildError> {
    match &plan.buffer {
        BufferSpec::Embedded(_) => Ok(Vec::new()),
        BufferSpec::Kafka(k) => {
            let prefix = format!("{}.{}.", k.topic_prefix.value, plan.pipeline);
            Ok(KafkaBuffer::new(kafka_options(k))?.parts(&prefix))
        }
    }
}

/// The Kafka buffer's settings from its spec.
fn kafka_options(k: &spec::KafkaBuffer) -> KafkaOptions {
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
    KafkaOptions {
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
        gate: Some(gate_spec(plan, ctx)),
    })
}

/// How often a link found down is checked again while the flow waits for it: every 5 s,
/// or `SLUICE_LINK_PROBE_INTERVAL` (`2s`, `1m`).
pub fn probe_interval() -> std::time::Duration {
    std::env::var("SLUICE_LINK_PROBE_INTERVAL")
        .ok()
        .and_then(|v| v.parse::<sluice_config::values::Duration>().ok())
        .map(|d| d.get())
        .filter(|d| !d.is_zero())
        .unwrap_or(std::time::Duration::from_secs(5))
}

/// The plan's health gate: `when_link_down`, `max_lag`, and each sink's database checks
/// (its kind's `links` of kind `database`, made anew at each probe).
pub fn gate_spec(plan: &Plan, ctx: &BuildContext) -> crate::gate::GateSpec {
    let ctx = ctx.for_pipeline(&plan.pipeline);
    let mut probes: std::collections::HashMap<String, crate::gate::LinkProbe> =
        std::collections::HashMap::new();
    for node in &plan.nodes {
        if node.role != sluice_config::spec::nodes::Role::Sink {
            continue;
        }
        let (node, ctx) = (node.clone(), ctx.clone());
        // The databases it writes to: an API down is not gated (its sink retries, then
        // keeps the batches for replay, as before).
        probes.insert(
            node.id.clone(),
            Arc::new(move || {
                node.config
                    .links(&node, &ctx)
                    .into_iter()
                    .filter(|l| l.kind == sluice_config::LinkKind::Database)
                    .collect()
            }),
        );
    }
    crate::gate::GateSpec {
        when_link_down: plan.when_link_down,
        max_lag: plan.buffer.max_lag(),
        max_lag_age: plan.buffer.max_lag_age(),
        probe_every: probe_interval(),
        buffer_link: crate::health::buffer_link(&plan.buffer, &ctx),
        probes,
        file: None,
    }
}

/// A pipeline of one source and one sink with `buffer: { <buffer> }`, validated (the
/// error as its debug text), for the tests of the buffer's settings.
#[cfg(test)]
pub(crate) fn plan_with_buffer(buffer: &str) -> Result<Plan, String> {
    let text = format!(
        "pipeline: p\nbuffer: {{ {buffer} }}\nnodes:\n  api: {{ type: http, url: \"https://x.example/a\" }}\n  sink: {{ type: sqlite, inputs: [api], url: \"sqlite://o.db\", table: t }}\n"
    );
    sluice_config::validate(
        &text,
        &sluice_config::Env::new(),
        sluice_connectors::registry(),
    )
    .map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, StringArray};
    use sluice_core::{Batch, SourcePosition};

    /// The bytes the embedded log holds after one batch of repetitive text, written with
    /// `compression: <compression>` (`""`: as the default).
    async fn log_bytes(compression: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let embedded = match compression {
            "" => "{}".to_owned(),
            c => format!("{{ compression: {c} }}"),
        };
        let plan = plan_with_buffer(&format!("embedded: {embedded}")).unwrap();
        let mut ctx = BuildContext::default();
        ctx.base_dir = dir.path().to_owned();
        let buffer = open_buffer(&plan, &ctx).unwrap();
        let names: Vec<String> = (0..2_000)
            .map(|i| format!("order {} of many", i % 7))
            .collect();
        let records = RecordBatch::try_from_iter([(
            "name",
            std::sync::Arc::new(StringArray::from(names)) as _,
        )])
        .unwrap();
        let batch = Batch::new("p", "api", SourcePosition::page(0), records);
        buffer.publish("p.api", &batch).await.unwrap();
        drop(buffer);
        let mut bytes = Vec::new();
        for entry in walkdir(dir.path()) {
            bytes.extend(std::fs::read(entry).unwrap());
        }
        bytes
    }

    fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walkdir(&path));
            } else if path.extension().is_some_and(|e| e == "log") {
                out.push(path);
            }
        }
        out
    }

    fn holds(bytes: &[u8], text: &str) -> bool {
        bytes.windows(text.len()).any(|w| w == text.as_bytes())
    }

    #[tokio::test]
    async fn the_embedded_logs_compression_is_the_one_configured() {
        let zstd = log_bytes("zstd").await;
        let lz4 = log_bytes("lz4").await;
        let none = log_bytes("none").await;
        assert!(holds(&zstd, "arrow+zstd") && !holds(&zstd, "arrow+lz4"));
        assert!(holds(&lz4, "arrow+lz4") && !holds(&lz4, "arrow+zstd"));
        assert!(!holds(&none, "arrow+zstd") && !holds(&none, "arrow+lz4"));
        let default = log_bytes("").await;
        assert!(holds(&default, "arrow+lz4"), "lz4 by default");
        assert!(
            none.len() > 2 * zstd.len() && none.len() > 2 * lz4.len(),
            "none {} bytes, zstd {}, lz4 {}",
            none.len(),
            zstd.len(),
            lz4.len()
        );
    }

    /// The Kafka buffer's settings for `compression: <compression>` (`""`: the default).
    fn kafka_settings(compression: &str) -> KafkaOptions {
        let kafka = match compression {
            "" => "brokers: [\"127.0.0.1:9092\"]".to_owned(),
            c => format!("brokers: [\"127.0.0.1:9092\"], compression: {c}"),
        };
        let plan = plan_with_buffer(&format!("kafka: {{ {kafka} }}")).unwrap();
        let BufferSpec::Kafka(k) = &plan.buffer else {
            panic!("a Kafka buffer")
        };
        kafka_options(k)
    }

    #[test]
    fn kafka_messages_are_arrow_with_lz4_by_default_and_compressed_once() {
        let default = kafka_settings("");
        assert_eq!(default.format, WireFormat::ArrowLz4);
        assert_eq!(default.properties.get("compression.type"), None);
        let zstd = kafka_settings("zstd");
        assert_eq!(zstd.format, WireFormat::ArrowZstd);
        assert_eq!(zstd.properties.get("compression.type"), None);
        // A codec Arrow has not: the buffers travel plain, librdkafka compresses.
        let snappy = kafka_settings("snappy");
        assert_eq!(snappy.format, WireFormat::Arrow);
        assert_eq!(
            snappy
                .properties
                .get("compression.type")
                .map(String::as_str),
            Some("snappy")
        );
    }
}
