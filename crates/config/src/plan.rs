//! The validated plan: nodes in execution order with their effective policies (defaults
//! merged with each node's overrides), the edges and the buffer topics they go through.
//!
//! # Topics
//!
//! Each node that produces data writes its batches once, to one topic:
//! `<topic_prefix>.<pipeline>.<node>` on Kafka, `<pipeline>.<node>` (a folder under the
//! log's `path`) on the embedded buffer. Each node that reads data reads its inputs'
//! topics as the consumer group `<topic_prefix>.<pipeline>.<node>` (Kafka) or
//! `<pipeline>.<node>` (embedded). A fan-out therefore writes a batch once and every
//! reader commits its own offsets; a join reads several topics under one group.

use crate::diag::Diagnostic;
use crate::kind::NodeConfig;
use crate::spec::nodes::{Role, TaskSpec};
use crate::spec::{AlertsSpec, BufferSpec, CatchUp, FsyncPolicy, Overlap, PipelineSpec, Schedule};
use crate::values::{ByteSize, DatabaseUrl, Duration};
use serde::Serialize;
use sluice_core::{Disposition, ErrorClass, RetryPolicy};
use std::fmt::Write as _;
use std::sync::Arc;

fn shown_config<S: serde::Serializer>(
    config: &Arc<dyn NodeConfig>,
    s: S,
) -> Result<S::Ok, S::Error> {
    config.shown().serialize(s)
}

/// A validated pipeline, ready to be built and run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The pipeline's name.
    pub pipeline: String,
    /// Its description.
    pub description: Option<String>,
    /// When it runs.
    pub schedule: Schedule,
    /// The buffer between nodes.
    pub buffer: BufferSpec,
    /// The state store (its password, if any, prints as `***`).
    pub state: DatabaseUrl,
    /// Alert channels and routes.
    pub alerts: AlertsSpec,
    /// How long the pipeline may go without a successful run (`freshness:`).
    pub freshness: Option<Duration>,
    /// What the sources do while a link is down (`when_link_down:`, or its default).
    pub when_link_down: crate::spec::WhenLinkDown,
    /// The nodes in execution order (a topological order; file order among equals).
    pub nodes: Vec<PlannedNode>,
    /// Every edge.
    pub edges: Vec<PlannedEdge>,
    /// Warnings found while validating.
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
    /// The spec as written.
    #[serde(skip)]
    pub spec: PipelineSpec,
}

/// A node with its effective settings.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedNode {
    /// The id.
    pub id: String,
    /// The type.
    #[serde(rename = "type")]
    pub node_type: &'static str,
    /// What it does with data.
    pub role: Role,
    /// 1 for nodes that wait for nothing, else one more than the latest node it waits for.
    pub stage: usize,
    /// Its description.
    pub description: Option<String>,
    /// Data inputs.
    pub inputs: Vec<String>,
    /// Ordering-only predecessors.
    pub after: Vec<String>,
    /// Effective retry policy.
    pub retry: EffectiveRetry,
    /// Effective batch limits (none for tasks).
    pub batching: Option<EffectiveBatching>,
    /// Effective timeouts (connectors only).
    pub timeouts: Option<EffectiveTimeouts>,
    /// Effective disposition of every error class.
    pub on_error: Vec<EffectiveDisposition>,
    /// The compensation step.
    pub compensate: Option<TaskSpec>,
    /// The type's configuration.
    #[serde(serialize_with = "shown_config")]
    pub config: Arc<dyn NodeConfig>,
}

impl PlannedNode {
    /// `http source`, `postgres sink`, `file_sink`, `transform`, `sql_task`, `command task`.
    pub fn kind_label(&self) -> String {
        let ty = self.node_type;
        let role = self.role.as_str();
        if ty == role || ty.ends_with(&format!("_{role}")) || (ty == "sql_task" && role == "task") {
            ty.to_owned()
        } else {
            format!("{ty} {role}")
        }
    }
}

/// A retry policy with every value decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveRetry {
    /// Attempts in all.
    pub max_attempts: u32,
    /// The cap of the first backoff.
    pub initial_backoff: Duration,
    /// The cap of any backoff.
    pub max_backoff: Duration,
    /// Growth of the cap.
    pub multiplier: f64,
    /// Give up after this long.
    pub max_elapsed: Duration,
    /// Who spends the budget.
    pub by: RetryOwner,
}

/// Who spends a node's retry budget: one of the two, never both, so that `max_attempts: 3`
/// means three attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOwner {
    /// The engine retries the node's failed attempts: a read, a batch, a task.
    #[default]
    Engine,
    /// The connector retries each request itself (an HTTP source: it knows `Retry-After`,
    /// token refreshes and page shrinking); the engine does not retry it again.
    Connector,
}

impl EffectiveRetry {
    /// The policy in `sluice-core` terms.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff.get(),
            max_backoff: self.max_backoff.get(),
            multiplier: self.multiplier,
            max_elapsed: Some(self.max_elapsed.get()),
        }
    }
}

impl Default for EffectiveRetry {
    fn default() -> Self {
        let core = RetryPolicy::default();
        EffectiveRetry {
            max_attempts: core.max_attempts,
            initial_backoff: Duration(core.initial_backoff),
            max_backoff: Duration(core.max_backoff),
            multiplier: core.multiplier,
            max_elapsed: Duration(
                core.max_elapsed
                    .unwrap_or(std::time::Duration::from_secs(300)),
            ),
            by: RetryOwner::Engine,
        }
    }
}

/// Batch limits with every value decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveBatching {
    /// Records per batch.
    pub max_rows: u64,
    /// Bytes per batch.
    pub max_bytes: ByteSize,
    /// Wait for a partly filled batch.
    pub max_wait: Duration,
}

impl Default for EffectiveBatching {
    fn default() -> Self {
        EffectiveBatching {
            max_rows: 10_000,
            max_bytes: ByteSize::mib(4),
            max_wait: Duration::secs(1),
        }
    }
}

/// Timeouts with every value decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveTimeouts {
    /// Connection timeout.
    pub connect: Duration,
    /// Whole-request timeout.
    pub request: Duration,
}

impl Default for EffectiveTimeouts {
    fn default() -> Self {
        EffectiveTimeouts {
            connect: Duration::secs(10),
            request: Duration::secs(30),
        }
    }
}

/// Where an effective disposition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// Sluice's default for the class.
    Sluice,
    /// `defaults.on_error`.
    Defaults,
    /// The node's `on_error`.
    Node,
    /// The node's `schema_policy` (for `contract_changed`).
    SchemaPolicy,
    /// An inherited disposition the node cannot apply (a source or a task has no batch to
    /// split, quarantine or skip: it retries or fails), replaced by `fail`.
    Role,
}

/// The disposition of one error class on one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveDisposition {
    /// The class.
    pub class: ErrorClass,
    /// What happens.
    pub disposition: Disposition,
    /// Where that comes from.
    pub from: PolicySource,
}

/// What an edge carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// Batches, through the buffer.
    Data,
    /// Ordering only: the target starts after the source succeeded.
    Order,
}

/// An edge of the DAG.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedEdge {
    /// The upstream node.
    pub from: String,
    /// The downstream node.
    pub to: String,
    /// Data or ordering.
    pub kind: EdgeKind,
    /// The buffer topic a data edge goes through.
    pub topic: Option<String>,
    /// The consumer group the downstream node reads it as.
    pub consumer_group: Option<String>,
}

/// The YAML name of a unit enum value.
fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The topic `node`'s batches are written to.
pub fn topic_name(buffer: &BufferSpec, pipeline: &str, node: &str) -> String {
    match buffer {
        BufferSpec::Kafka(k) => format!("{}.{pipeline}.{node}", k.topic_prefix.value),
        BufferSpec::Embedded(_) => format!("{pipeline}.{node}"),
    }
}

impl Plan {
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&PlannedNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// A human-readable description: nodes in execution order with their effective
    /// policies, then the edges and their topics.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "pipeline `{}`", self.pipeline);
        if let Some(d) = &self.description {
            let _ = writeln!(out, "  {d}");
        }
        let schedule = match &self.schedule {
            Schedule::Manual => "manual (`sluice run`)".to_owned(),
            Schedule::Cron {
                cron,
                timezone,
                catch_up,
                overlap,
            } => {
                let mut text = format!(
                    "cron `{}` ({}), as `{}` for the cron crate",
                    cron.value,
                    timezone
                        .as_ref()
                        .map_or("UTC".to_owned(), |t| t.value.to_string()),
                    cron.value.normalized()
                );
                if *catch_up != CatchUp::default() || *overlap != Overlap::default() {
                    let _ = write!(
                        text,
                        "; under `sluice serve`: catch_up {}, overlap {}",
                        catch_up.as_str(),
                        overlap.as_str()
                    );
                }
                text
            }
            Schedule::Realtime(r) => format!("realtime, polling every {}", r.poll_interval.value),
        };
        let _ = writeln!(out, "  schedule: {schedule}");
        let buffer = match &self.buffer {
            BufferSpec::Embedded(e) => format!(
                "embedded log in `{}` (segments of {}, fsync {}, messages up to {})",
                e.path,
                e.segment_size.value,
                match &e.fsync {
                    FsyncPolicy::EveryBatch => "after every batch".to_owned(),
                    FsyncPolicy::Interval(d) => format!("every {}", d.value),
                },
                e.max_message_size.value
            ),
            BufferSpec::Kafka(k) => format!(
                "kafka at {} ({} partitions, replication {}, retention {}, {} messages compressed with {}, up to {})",
                k.brokers
                    .value
                    .iter()
                    .map(|b| b.value.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                k.partitions.value,
                k.replication.value,
                k.retention.value,
                name_of(&k.format),
                name_of(&k.compression),
                k.message_max_bytes.value
            ),
        };
        let _ = writeln!(out, "  buffer:   {buffer}");
        let _ = writeln!(out, "  state:    {}", self.state);
        let _ = writeln!(out, "\nexecution order:");
        for (i, n) in self.nodes.iter().enumerate() {
            let mut head = format!(
                "{:>3}. {} ({}, stage {})",
                i + 1,
                n.id,
                n.kind_label(),
                n.stage
            );
            if !n.inputs.is_empty() {
                let _ = write!(head, " <- {}", n.inputs.join(", "));
            }
            if !n.after.is_empty() {
                let _ = write!(head, " after {}", n.after.join(", "));
            }
            let _ = writeln!(out, "{head}");
            if let Some(d) = &n.description {
                let _ = writeln!(out, "       {d}");
            }
            let r = &n.retry;
            let by = match r.by {
                RetryOwner::Engine => "",
                RetryOwner::Connector => " per request (by the connector; the engine adds none)",
            };
            let _ = writeln!(
                out,
                "       retry:    {} attempts{by}, backoff {}..{} x{}, give up after {}",
                r.max_attempts, r.initial_backoff, r.max_backoff, r.multiplier, r.max_elapsed
            );
            if let Some(b) = &n.batching {
                let _ = writeln!(
                    out,
                    "       batching: {} rows, {}, wait {}",
                    b.max_rows, b.max_bytes, b.max_wait
                );
            }
            if let Some(t) = &n.timeouts {
                let _ = writeln!(
                    out,
                    "       timeouts: connect {}, request {}",
                    t.connect, t.request
                );
            }
            let dispositions: Vec<String> = n
                .on_error
                .iter()
                .map(|d| match d.from {
                    PolicySource::Sluice => format!("{}={}", d.class, d.disposition),
                    PolicySource::Defaults => format!("{}={} (defaults)", d.class, d.disposition),
                    PolicySource::Node => format!("{}={} (node)", d.class, d.disposition),
                    PolicySource::SchemaPolicy => {
                        format!("{}={} (schema_policy)", d.class, d.disposition)
                    }
                    PolicySource::Role => {
                        format!(
                            "{}={} (a {} only retries or fails)",
                            d.class,
                            d.disposition,
                            n.role.as_str()
                        )
                    }
                })
                .collect();
            let _ = writeln!(out, "       on_error: {}", dispositions.join(", "));
            self.naming_text(n, &mut out);
            if let Some(c) = &n.compensate {
                let _ = writeln!(out, "       compensate: {}", c.config.summary());
            }
        }
        let _ = writeln!(out, "\nedges:");
        for e in &self.edges {
            match (e.kind, &e.topic, &e.consumer_group) {
                (EdgeKind::Data, Some(topic), Some(group)) => {
                    let _ = writeln!(
                        out,
                        "  {} -> {}  data via topic `{topic}`, read as group `{group}`",
                        e.from, e.to
                    );
                }
                _ => {
                    let _ = writeln!(out, "  {} -> {}  order only", e.from, e.to);
                }
            }
        }
        out
    }

    /// What the node's kind adds (a SQL sink's `naming: snake_case`, say), given its
    /// inputs' declared columns.
    fn naming_text(&self, n: &PlannedNode, out: &mut String) {
        let inputs: Vec<(&str, Option<Vec<String>>)> = n
            .inputs
            .iter()
            .map(|i| {
                let declared = self.node(i).and_then(|i| i.config.declared_columns());
                (i.as_str(), declared)
            })
            .collect();
        for line in n.config.plan_notes(&inputs) {
            let _ = writeln!(out, "       {line}");
        }
    }

    /// The DAG in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote(&self.pipeline));
        let _ = writeln!(out, "  rankdir=LR;");
        let _ = writeln!(out, "  node [fontname=\"Helvetica\"];");
        let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=10];");
        for n in &self.nodes {
            let shape = match n.role {
                Role::Source => "box, style=rounded",
                Role::Transform => "ellipse",
                Role::Sink => "cylinder",
                Role::Task => "hexagon",
            };
            let label = format!("{}\\n{}", n.id, n.kind_label());
            let _ = writeln!(
                out,
                "  {} [label=\"{label}\", shape={shape}];",
                quote(&n.id)
            );
        }
        for e in &self.edges {
            match (&e.kind, &e.topic) {
                (EdgeKind::Data, Some(topic)) => {
                    let _ = writeln!(
                        out,
                        "  {} -> {} [label={}];",
                        quote(&e.from),
                        quote(&e.to),
                        quote(topic)
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "  {} -> {} [style=dashed, label=\"after\"];",
                        quote(&e.from),
                        quote(&e.to)
                    );
                }
            }
        }
        out.push_str("}\n");
        out
    }
}
