//! The typed pipeline spec: what a pipeline file says, as written, with positions.
//!
//! Every struct denies unknown fields and documents every field; the doc comments become
//! the JSON Schema (`sluice schema`) and `docs/pipeline-reference.md`.

pub mod nodes;
pub mod policy;

use crate::de::Spanned;
use crate::values::{
    ByteSize, CronExpr, DatabaseUrl, Duration, HttpUrl, Name, RedactedMap, SecretMap, SecretValue,
    SpannedMap, Timezone, secret_schema,
};
use nodes::Nodes;
use policy::ErrorClassName;
pub use policy::{BatchingSpec, DefaultsSpec, OnErrorSpec, RetrySpec, SchemaPolicy, TimeoutsSpec};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use sluice_core::ErrorClass;
use std::borrow::Cow;
use std::fmt;

/// A pipeline: where data comes from, how it is reshaped, where it goes, and what to do
/// when something fails.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Sluice pipeline", example = &serde_json::json!({
    "pipeline": "orders",
    "nodes": {
        "api": {"type": "http", "url": "https://api.example.com/v1/orders"},
        "db": {"type": "sqlite", "inputs": ["api"], "url": "sqlite://orders.db", "table": "orders"}
    }
}))]
pub struct PipelineSpec {
    /// The pipeline's name: lowercase letters, digits, `_` and `-`. It names the pipeline's
    /// runs, checkpoints and buffer topics, so renaming a pipeline starts it afresh.
    #[schemars(example = &"orders_sync")]
    pub pipeline: Spanned<Name>,
    /// What the pipeline is for.
    #[schemars(example = &"Orders from the shop API into the warehouse")]
    pub description: Option<String>,
    /// When the pipeline runs: `manual` (the default: only `sluice run`), a `cron`
    /// expression, or `realtime`.
    #[serde(default)]
    pub schedule: Schedule,
    /// Where batches wait between nodes: `embedded` (the default, an on-disk log needing
    /// no setup) or `kafka`.
    #[serde(default)]
    pub buffer: BufferSpec,
    /// The state store (runs, checkpoints, failed batches): a SQLite file or a PostgreSQL
    /// database (needed to run many workers). May hold a password: it is a secret.
    #[serde(default = "default_state")]
    #[schemars(example = &"postgres://sluice:${SLUICE_STATE_PASSWORD}@127.0.0.1:5432/sluice")]
    pub state: Spanned<DatabaseUrl>,
    /// Settings every node inherits unless it sets its own.
    #[serde(default)]
    pub defaults: DefaultsSpec,
    /// Where alerts go.
    #[serde(default)]
    pub alerts: AlertsSpec,
    /// How long the pipeline may go without a successful run (`2h`, `1d`). `sluice
    /// health` (once, or under `--watch`) raises a `stale` alert past it, and a recovery
    /// once a run succeeds again. Unset: no bound.
    #[schemars(example = &"2h")]
    pub freshness: Option<Spanned<Duration>>,
    /// What the sources do while a link the pipeline needs is down (the database of a
    /// sink, or the Kafka buffer): `pause` (they read nothing until the link answers
    /// again, then go on by themselves; the default with the embedded buffer) or
    /// `buffer` (they keep reading into Kafka, up to the buffer's `max_lag`; the default
    /// with a Kafka buffer, and allowed only there). Under `pause`, a sink whose database
    /// is down waits for it without spending its retries; the run records each pause
    /// with its cause and length.
    pub when_link_down: Option<Spanned<WhenLinkDown>>,
    /// The nodes, by id. An id is lowercase letters, digits, `_` and `-`.
    #[serde(default, deserialize_with = "nodes::read_later")]
    pub nodes: Nodes,
}

fn default_state() -> Spanned<DatabaseUrl> {
    Spanned::new(DatabaseUrl::default_state(), crate::diag::Pos::START)
}

// ---------------------------------------------------------------------------------------
// Schedule

/// When the pipeline runs.
///
/// ```yaml
/// schedule: manual
/// schedule: { cron: "*/15 * * * *", timezone: Europe/Paris }
/// schedule: { cron: "0 * * * *", catch_up: all, overlap: queue }
/// schedule: { realtime: { poll_interval: 10s } }
/// ```
// Built once per load; boxing the cron variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Schedule {
    /// Only when started by hand (`sluice run`).
    #[default]
    Manual,
    /// On a cron schedule.
    Cron {
        /// The expression.
        cron: Spanned<CronExpr>,
        /// The time zone it is read in (UTC when unset).
        timezone: Option<Spanned<Timezone>>,
        /// What `sluice serve` does with the ticks it missed while it was down.
        catch_up: CatchUp,
        /// What `sluice serve` does at a tick while the previous run still runs.
        overlap: Overlap,
    },
    /// Continuously: sources poll, sinks consume as batches arrive.
    Realtime(RealtimeSpec),
}

/// Options of a realtime pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RealtimeSpec {
    /// How often sources ask for new records when the last poll found none.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Spanned<Duration>,
}

impl Default for RealtimeSpec {
    fn default() -> Self {
        RealtimeSpec {
            poll_interval: default_poll_interval(),
        }
    }
}

fn default_poll_interval() -> Spanned<Duration> {
    Spanned::new(Duration::secs(5), crate::diag::Pos::START)
}

/// What `sluice serve` does, when it starts, with the ticks of a cron schedule that passed
/// while it was down (the last tick it ran is kept in the state store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Skip them: the next run is at the next tick.
    None,
    /// One run for all of them, at once (the default): the sources go on from their
    /// checkpoints, so one run fetches what the missed ones would have.
    #[default]
    Last,
    /// One run per missed tick, one after another (for pipelines whose runs depend on
    /// their tick, such as a daily export).
    All,
}

impl CatchUp {
    /// The name as written in a pipeline.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Last => "last",
            CatchUp::All => "all",
        }
    }
}

/// What `sluice serve` does at a tick while the pipeline's previous run still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip the tick, and say so (the default).
    #[default]
    Skip,
    /// Run once the previous run ended (ticks that pile up meanwhile make one run).
    Queue,
}

impl Overlap {
    /// The name as written in a pipeline.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        }
    }
}

/// The mapping form of `schedule`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ScheduleFields {
    /// A cron expression: five fields (`minute hour day-of-month month day-of-week`,
    /// standard Unix cron), or six/seven with seconds first (and a year last).
    #[schemars(example = &"*/15 * * * *")]
    cron: Option<Spanned<CronExpr>>,
    /// The IANA time zone the cron expression is read in (only with `cron`).
    #[schemars(extend("default" = "UTC"), example = &"Europe/Paris")]
    timezone: Option<Spanned<Timezone>>,
    /// With `cron`, under `sluice serve`: the ticks missed while the service was down make
    /// `none` (no run), `last` (one run) or `all` (one run each).
    #[schemars(extend("default" = "last"))]
    catch_up: Option<CatchUp>,
    /// With `cron`, under `sluice serve`: a tick that comes while the previous run still
    /// runs is skipped (`skip`) or run after it (`queue`).
    #[schemars(extend("default" = "skip"))]
    overlap: Option<Overlap>,
    /// Run continuously (instead of `cron`).
    realtime: Option<RealtimeSpec>,
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Schedule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`manual`, `realtime`, or a mapping with `cron` or `realtime`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Schedule, E> {
                match v {
                    "manual" => Ok(Schedule::Manual),
                    "realtime" => Ok(Schedule::Realtime(RealtimeSpec::default())),
                    other if other.split_whitespace().count() >= 5 || other.starts_with('@') => {
                        Err(crate::de::error_with_help(
                            format!("`schedule: {other}` looks like a cron expression"),
                            format!("write `schedule: {{ cron: \"{other}\" }}`"),
                        ))
                    }
                    other => Err(crate::de::error_with_help(
                        format!("unknown schedule `{other}`"),
                        "write `manual`, `realtime`, `{ cron: \"*/15 * * * *\" }` or `{ realtime: { poll_interval: 10s } }`",
                    )),
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Schedule, E> {
                Ok(Schedule::Manual)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Schedule, A::Error> {
                let fields =
                    ScheduleFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if fields.cron.is_none() && (fields.catch_up.is_some() || fields.overlap.is_some())
                {
                    return Err(crate::de::error_with_help(
                        "`catch_up` and `overlap` apply to a `cron` schedule, and there is none",
                        "add `cron: \"...\"`, or remove them (a realtime pipeline runs back to back)",
                    ));
                }
                match (fields.cron, fields.realtime, fields.timezone) {
                    (Some(_), Some(_), _) => Err(crate::de::error_with_help(
                        "a schedule is either `cron` or `realtime`, not both",
                        "keep one of them",
                    )),
                    (Some(cron), None, timezone) => Ok(Schedule::Cron {
                        cron,
                        timezone,
                        catch_up: fields.catch_up.unwrap_or_default(),
                        overlap: fields.overlap.unwrap_or_default(),
                    }),
                    (None, _, Some(_)) => Err(crate::de::error_with_help(
                        "`timezone` applies to a `cron` schedule, and there is none",
                        "add `cron: \"...\"` or remove `timezone`",
                    )),
                    (None, Some(realtime), None) => Ok(Schedule::Realtime(realtime)),
                    (None, None, None) => Ok(Schedule::Manual),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Schedule::Manual => s.serialize_str("manual"),
            Schedule::Cron {
                cron,
                timezone,
                catch_up,
                overlap,
            } => {
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("cron", cron)?;
                if let Some(tz) = timezone {
                    map.serialize_entry("timezone", tz)?;
                }
                if *catch_up != CatchUp::default() {
                    map.serialize_entry("catch_up", catch_up)?;
                }
                if *overlap != Overlap::default() {
                    map.serialize_entry("overlap", overlap)?;
                }
                map.end()
            }
            Schedule::Realtime(r) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("realtime", r)?;
                map.end()
            }
        }
    }
}

impl JsonSchema for Schedule {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Schedule")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let fields = generator.subschema_for::<ScheduleFields>();
        json_schema!({
            "description": "When the pipeline runs: `manual`, `realtime`, `{ cron: \"...\", timezone: ... }` or `{ realtime: { poll_interval: ... } }`.",
            "default": "manual",
            "oneOf": [
                {"type": "string", "enum": ["manual", "realtime"]},
                fields,
            ],
        })
    }
}

/// What the sources do while a link the pipeline needs is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenLinkDown {
    /// The sources stop reading until the link answers again; the sink waits for it.
    Pause,
    /// The sources keep reading into the Kafka buffer, up to its `max_lag`.
    Buffer,
}

impl WhenLinkDown {
    /// As written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            WhenLinkDown::Pause => "pause",
            WhenLinkDown::Buffer => "buffer",
        }
    }
}

impl PipelineSpec {
    /// The effective `when_link_down`: as written, else `pause` with the embedded buffer
    /// and `buffer` with Kafka.
    pub fn when_link_down(&self) -> WhenLinkDown {
        match (&self.when_link_down, &self.buffer) {
            (Some(w), _) => w.value,
            (None, BufferSpec::Embedded(_)) => WhenLinkDown::Pause,
            (None, BufferSpec::Kafka(_)) => WhenLinkDown::Buffer,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Buffer

/// Where batches wait between nodes.
///
/// ```yaml
/// buffer: embedded
/// buffer: { kafka: { brokers: ["127.0.0.1:9092"] } }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BufferSpec {
    /// An append-only log on local disk: needs no setup; one machine.
    Embedded(EmbeddedBuffer),
    /// Apache Kafka: survives the machine, shares work between many workers.
    Kafka(KafkaBuffer),
}

impl BufferSpec {
    /// The buffer's `max_lag` in batches, if set.
    pub fn max_lag(&self) -> Option<u64> {
        self.max_lag_spec().and_then(|m| m.batches)
    }

    /// The buffer's `max_lag` as an age of the oldest batch waiting, if set.
    pub fn max_lag_age(&self) -> Option<std::time::Duration> {
        self.max_lag_spec().and_then(|m| m.age).map(Duration::get)
    }

    /// The buffer's `max_lag` as written.
    pub fn max_lag_spec(&self) -> Option<MaxLag> {
        match self {
            BufferSpec::Embedded(e) => e.max_lag.as_ref().map(|m| m.value),
            BufferSpec::Kafka(k) => k.max_lag.as_ref().map(|m| m.value),
        }
    }
}

/// A bound on a node's backlog in the buffer: batches waiting (`10000`), the age of the
/// oldest batch waiting (`10m`), or both (`{ batches: 10000, age: 10m }`); past either,
/// the backlog is above it.
///
/// ```yaml
/// max_lag: 10000
/// max_lag: 10m
/// max_lag: { batches: 10000, age: 10m }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaxLag {
    /// Batches published to a topic and not yet taken by a node reading it.
    pub batches: Option<u64>,
    /// How long the oldest of them has waited (from its creation, the `sluice.created_at`
    /// header of the wire format).
    pub age: Option<Duration>,
}

/// The mapping form of `max_lag`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MaxLagFields {
    /// Batches waiting. At least 1.
    #[schemars(example = 10000)]
    batches: Option<u64>,
    /// Age of the oldest batch waiting. More than zero.
    #[schemars(example = &"10m")]
    age: Option<Duration>,
}

impl<'de> Deserialize<'de> for MaxLag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaxLag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of batches (`10000`), an age (`10m`), or `{ batches: ..., age: ... }`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MaxLag, E> {
                Ok(MaxLag {
                    batches: Some(v),
                    age: None,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MaxLag, E> {
                Err(crate::de::error_with_help(
                    format!("`max_lag` cannot be negative ({v})"),
                    "write a number of batches (`10000`) or an age (`10m`)",
                ))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MaxLag, E> {
                Err(crate::de::error_with_help(
                    format!("`max_lag` is a whole number of batches, not {v}"),
                    "write a number of batches (`10000`) or an age (`10m`)",
                ))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaxLag, E> {
                match v.parse::<Duration>() {
                    Ok(age) => Ok(MaxLag {
                        batches: None,
                        age: Some(age),
                    }),
                    Err(e) => Err(crate::de::error_with_help(
                        format!("`max_lag: {v}` is neither a number of batches nor an age: {e}"),
                        "write a number of batches (`10000`), an age (`10m`), or `{ batches: 10000, age: 10m }`",
                    )),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MaxLag, A::Error> {
                let fields = MaxLagFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(MaxLag {
                    batches: fields.batches,
                    age: fields.age,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for MaxLag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.batches, self.age) {
            (Some(batches), None) => s.serialize_u64(batches),
            (None, Some(age)) => age.serialize(s),
            _ => {
                let mut map = s.serialize_map(None)?;
                if let Some(batches) = self.batches {
                    map.serialize_entry("batches", &batches)?;
                }
                if let Some(age) = &self.age {
                    map.serialize_entry("age", age)?;
                }
                map.end()
            }
        }
    }
}

impl JsonSchema for MaxLag {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("MaxLag")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let fields = generator.subschema_for::<MaxLagFields>();
        let mut age = generator.subschema_for::<Duration>();
        age.insert(
            "description".into(),
            "The age of the oldest batch waiting (`10m`).".into(),
        );
        json_schema!({
            "description": "Batches waiting (`10000`), the age of the oldest batch waiting (`10m`), or both (`{ batches: 10000, age: 10m }`).",
            "oneOf": [
                {"type": "integer", "minimum": 1, "description": "Batches waiting (`10000`)."},
                age,
                fields,
            ],
        })
    }
}

impl Default for BufferSpec {
    fn default() -> Self {
        BufferSpec::Embedded(EmbeddedBuffer::default())
    }
}

/// The embedded on-disk log.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBuffer {
    /// The folder of the log's segment files (relative to the working directory).
    #[serde(default = "default_buffer_path")]
    pub path: String,
    /// Size at which a segment file is closed and a new one started. Segments are deleted
    /// once every consumer has committed past them.
    #[serde(default = "default_segment_size")]
    pub segment_size: Spanned<ByteSize>,
    /// When appended batches are flushed to disk: `every_batch` (no acknowledged batch is
    /// ever lost) or `{ interval: 1s }` (faster; a power cut may lose the last interval).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// The largest entry written to the log: larger batches are split into parts.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: Spanned<ByteSize>,
    /// How batches are compressed in the log: `lz4` (the default: little CPU), `zstd`
    /// (smallest on disk) or `none`. On the benchmark's orders, against `lz4`: `zstd` takes
    /// 0.6 times the disk and about 13% more of Sluice's CPU per record, `none` 3.3 times
    /// the disk and about 5% less CPU. The disk counts while a reader is behind (an
    /// outage): segments are deleted once read.
    #[serde(default)]
    pub compression: LogCompression,
    /// The backlog a node may have: a number of batches published to a topic and not
    /// yet taken by a node reading it (`10000`), the age of the oldest of them (`10m`),
    /// or both (`{ batches: 10000, age: 10m }`). Above it, a `backlog` alert (once while
    /// it holds). Unset: no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &10000)]
    pub max_lag: Option<Spanned<MaxLag>>,
}

impl Default for EmbeddedBuffer {
    fn default() -> Self {
        EmbeddedBuffer {
            path: default_buffer_path(),
            segment_size: default_segment_size(),
            fsync: FsyncPolicy::default(),
            max_message_size: default_max_message_size(),
            compression: LogCompression::default(),
            max_lag: None,
        }
    }
}

fn default_buffer_path() -> String {
    ".sluice/buffer".to_owned()
}

fn default_segment_size() -> Spanned<ByteSize> {
    Spanned::new(ByteSize::mib(64), crate::diag::Pos::START)
}

fn default_max_message_size() -> Spanned<ByteSize> {
    Spanned::new(ByteSize::mib(16), crate::diag::Pos::START)
}

/// When the embedded log flushes to disk.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FsyncPolicy {
    /// Every batch before it is acknowledged (a source's batches a few per flush).
    #[default]
    EveryBatch,
    /// At most this long after a batch was appended.
    Interval(Spanned<Duration>),
}

/// Apache Kafka as the buffer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaBuffer {
    /// Bootstrap brokers, `host:port`.
    #[schemars(example = &serde_json::json!(["127.0.0.1:9092"]))]
    pub brokers: Spanned<Vec<Spanned<String>>>,
    /// First part of every topic and consumer group name (see "Topics" in the
    /// reference). Letters, digits, `.`, `_` and `-`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: Spanned<String>,
    /// Partitions of each topic Sluice creates. At least 1. Each partition is written in
    /// order, partitions in no set order between them (and, with several `sluice serve`
    /// workers, by several writers at once); `1` keeps one run's batches in read order,
    /// for an `upsert` sink whose source can return two versions of a record in one read.
    #[serde(default = "default_partitions")]
    pub partitions: Spanned<u32>,
    /// Replication factor of each topic Sluice creates. At least 1; 3 on a real cluster.
    #[serde(default = "default_replication")]
    pub replication: Spanned<u16>,
    /// How long Kafka keeps a batch (`retention.ms` of the topics Sluice creates). Longer
    /// than the longest outage a sink may have: a batch older than this is gone.
    #[serde(default = "default_retention")]
    pub retention: Spanned<Duration>,
    /// How a batch is encoded in a message: `arrow` (Arrow IPC, compact and typed) or
    /// `json` (JSON lines, for other consumers of the topics).
    #[serde(default)]
    pub format: WireFormat,
    /// Compression of messages. With `format: arrow`, `lz4` and `zstd` compress the
    /// Arrow buffers inside each message; other codecs (and any codec with `format:
    /// json`) are librdkafka's `compression.type`. `lz4` (the default) spends little CPU;
    /// `zstd` takes 0.6 times the broker's bytes and 10–15% more of Sluice's CPU per
    /// record on the benchmark's orders.
    #[serde(default)]
    pub compression: Compression,
    /// The largest message Sluice produces; larger batches are split into parts. Must not
    /// exceed the broker's `message.max.bytes`.
    #[serde(default = "default_message_max_bytes")]
    pub message_max_bytes: Spanned<ByteSize>,
    /// Extra librdkafka properties (e.g. SASL/SSL for a real cluster); a key named here
    /// overrides what Sluice sets itself (its consumers' session and fetch settings:
    /// docs/operations.md). Values of secret-looking keys (`sasl.password`, ...) never print.
    #[serde(default)]
    #[schemars(example = &serde_json::json!({"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "sasl.username": "sluice", "sasl.password": "${KAFKA_PASSWORD}"}))]
    pub properties: RedactedMap,
    /// The backlog a node may have: a number of batches (Kafka messages) published to a
    /// topic and not yet committed by a node reading it (`10000`), the age of the oldest
    /// of them (`10m`), or both (`{ batches: 10000, age: 10m }`). Above it, a `backlog`
    /// alert (once while it holds); under `when_link_down: buffer`, the sources also
    /// pause until the backlog is back under it. Unset: no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &10000)]
    pub max_lag: Option<Spanned<MaxLag>>,
}

fn default_topic_prefix() -> Spanned<String> {
    Spanned::new("sluice".to_owned(), crate::diag::Pos::START)
}
fn default_partitions() -> Spanned<u32> {
    Spanned::new(3, crate::diag::Pos::START)
}
fn default_replication() -> Spanned<u16> {
    Spanned::new(1, crate::diag::Pos::START)
}
fn default_retention() -> Spanned<Duration> {
    Spanned::new(Duration::secs(7 * 86_400), crate::diag::Pos::START)
}
fn default_message_max_bytes() -> Spanned<ByteSize> {
    Spanned::new(ByteSize::mib(1), crate::diag::Pos::START)
}

/// How a batch is encoded on the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// Arrow IPC stream: typed and compact.
    #[default]
    Arrow,
    /// JSON lines: one record per line, readable by any consumer.
    Json,
}

/// How the embedded log compresses a batch (its Arrow buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogCompression {
    /// Uncompressed Arrow IPC.
    None,
    /// LZ4 frames (the default).
    #[default]
    Lz4,
    /// Zstandard, level 1.
    Zstd,
}

/// Message compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    #[default]
    Lz4,
    /// Zstandard.
    Zstd,
}

// ---------------------------------------------------------------------------------------
// Alerts

/// Where alerts go. Without channels, alerts go to the log.
///
/// ```yaml
/// alerts:
///   channels:
///     ops: { webhook: { url: "https://hooks.example.com/sluice" } }
///     log: log
///   routes:
///     - { channel: ops, classes: [auth, permission], severities: [critical] }
///     - { channel: log }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    /// Alert channels, by name.
    #[serde(default)]
    pub channels: SpannedMap<ChannelSpec>,
    /// Which alerts go to which channel. An alert goes to every route it matches; with no
    /// routes, every alert goes to every channel.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// While the same condition holds (a link down, the pipeline failing at the same node
    /// with the same class, the pipeline late), its alert is sent once, then again as a
    /// reminder every `repeat_every`; the repeats in between are counted as suppressed.
    /// When the condition clears, a recovery alert says how long it lasted.
    #[serde(default = "default_repeat_every")]
    pub repeat_every: Spanned<Duration>,
    /// How long a circuit breaker of an HTTP node (see its `breaker`) may stay open
    /// before a `breaker_open` alert: the API's host has kept failing that long, through
    /// every probe. Once a condition; a `recovered` alert when the breaker closes (or a
    /// run of the pipeline succeeds).
    #[serde(default = "default_breaker_open_for")]
    #[schemars(example = &"5m")]
    pub breaker_open_for: Spanned<Duration>,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        AlertsSpec {
            channels: SpannedMap::default(),
            routes: Vec::new(),
            repeat_every: default_repeat_every(),
            breaker_open_for: default_breaker_open_for(),
        }
    }
}

fn default_repeat_every() -> Spanned<Duration> {
    Spanned::new(Duration::secs(3600), crate::diag::Pos::START)
}

fn default_breaker_open_for() -> Spanned<Duration> {
    Spanned::new(Duration::secs(300), crate::diag::Pos::START)
}

/// An alert channel.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelSpec {
    /// A line in Sluice's log.
    Log(LogChannel),
    /// An HTTP POST of the alert as JSON.
    Webhook(WebhookChannel),
    /// A program run with the alert as JSON on its standard input.
    Command(CommandChannel),
    /// A Slack incoming webhook.
    Slack(SlackChannel),
    /// A DingTalk group robot (钉钉自定义机器人).
    Dingtalk(DingtalkChannel),
    /// A Feishu or Lark group bot (飞书自定义机器人).
    Feishu(FeishuChannel),
    /// A WeCom group robot (企业微信群机器人).
    Wecom(WecomChannel),
    /// An email over SMTP.
    Email(EmailChannel),
}

impl ChannelSpec {
    /// The channel's type as written in YAML (`webhook`, `slack`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelSpec::Log(_) => "log",
            ChannelSpec::Webhook(_) => "webhook",
            ChannelSpec::Command(_) => "command",
            ChannelSpec::Slack(_) => "slack",
            ChannelSpec::Dingtalk(_) => "dingtalk",
            ChannelSpec::Feishu(_) => "feishu",
            ChannelSpec::Wecom(_) => "wecom",
            ChannelSpec::Email(_) => "email",
        }
    }
}

/// Alerts posted to a Slack incoming webhook.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackChannel {
    /// The incoming webhook's URL (`https://hooks.slack.com/services/...`). Its path is
    /// the token that lets anyone post to the channel, so the whole URL is a secret: it
    /// never prints.
    #[schemars(schema_with = "secret_schema", example = &"${SLACK_WEBHOOK_URL}")]
    pub url: SecretValue,
    /// Time for the whole request.
    #[serde(default = "default_channel_timeout")]
    pub timeout: Spanned<Duration>,
}

/// Alerts posted to a DingTalk group robot, as markdown.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DingtalkChannel {
    /// The robot's webhook URL (`https://oapi.dingtalk.com/robot/send?access_token=...`).
    /// The access token makes the whole URL a secret: it never prints.
    #[schemars(schema_with = "secret_schema", example = &"${DINGTALK_WEBHOOK_URL}")]
    pub url: SecretValue,
    /// The robot's signing secret (`SEC...`), when its security setting is "sign": each
    /// request then carries `timestamp` (ms) and `sign` (the base64 HMAC-SHA256 of
    /// `timestamp + "\n" + secret` keyed with the secret, URL-encoded) in its query, as
    /// DingTalk documents.
    #[serde(default)]
    #[schemars(schema_with = "secret_schema", example = &"${DINGTALK_SECRET}")]
    pub secret: Option<SecretValue>,
    /// Time for the whole request.
    #[serde(default = "default_channel_timeout")]
    pub timeout: Spanned<Duration>,
}

/// Alerts posted to a Feishu or Lark group bot, as a message card.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeishuChannel {
    /// The bot's webhook URL (`https://open.feishu.cn/open-apis/bot/v2/hook/...`, or
    /// `open.larksuite.com` for Lark). The hook id makes the whole URL a secret: it never
    /// prints.
    #[schemars(schema_with = "secret_schema", example = &"${FEISHU_WEBHOOK_URL}")]
    pub url: SecretValue,
    /// The bot's signature secret, when "signature verification" is on: each message then
    /// carries `timestamp` and `sign` (base64 of the HMAC-SHA256 keyed with
    /// `timestamp + "\n" + secret` over an empty message), as Feishu documents.
    #[serde(default)]
    #[schemars(schema_with = "secret_schema", example = &"${FEISHU_SECRET}")]
    pub secret: Option<SecretValue>,
    /// Time for the whole request.
    #[serde(default = "default_channel_timeout")]
    pub timeout: Spanned<Duration>,
}

/// Alerts posted to a WeCom group robot, as markdown.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WecomChannel {
    /// The robot's webhook URL (`https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...`).
    /// The key makes the whole URL a secret: it never prints.
    #[schemars(schema_with = "secret_schema", example = &"${WECOM_WEBHOOK_URL}")]
    pub url: SecretValue,
    /// Time for the whole request.
    #[serde(default = "default_channel_timeout")]
    pub timeout: Spanned<Duration>,
}

/// Alerts sent as email over SMTP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    /// The SMTP server: `host`, `host:port` or `smtp://host:port`. The port defaults to
    /// 587 with `starttls`, 25 without.
    #[schemars(example = &"smtp.example.com:587")]
    pub smtp: Spanned<String>,
    /// Upgrade the connection with STARTTLS before anything is sent (the server's
    /// certificate is checked); `false` sends in clear, for a relay on the same host.
    #[serde(default = "default_true")]
    pub starttls: Spanned<bool>,
    /// The sender: `alerts@example.com` or `Sluice <alerts@example.com>`.
    #[schemars(example = &"Sluice <sluice@example.com>")]
    pub from: Spanned<String>,
    /// The recipients (at least one).
    #[schemars(example = &serde_json::json!(["oncall@example.com", "data-team@example.com"]))]
    pub to: Spanned<Vec<Spanned<String>>>,
    /// The user to log in as, if the server wants a login (a secret: it never prints).
    #[serde(default)]
    #[schemars(schema_with = "secret_schema", example = &"${SMTP_USER}")]
    pub username: Option<SecretValue>,
    /// The password of `username` (a secret: it never prints).
    #[serde(default)]
    #[schemars(schema_with = "secret_schema", example = &"${SMTP_PASSWORD}")]
    pub password: Option<SecretValue>,
    /// Time for the whole conversation with the server.
    #[serde(default = "default_channel_timeout")]
    pub timeout: Spanned<Duration>,
}

fn default_true() -> Spanned<bool> {
    Spanned::new(true, crate::diag::Pos::START)
}

impl EmailChannel {
    /// The server's host and port, or why they cannot be read.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        let text = self.smtp.value.trim();
        let rest = text
            .strip_prefix("smtp://")
            .unwrap_or(text)
            .trim_end_matches('/');
        if rest.contains("://") {
            return Err(format!(
                "`{text}` is not an SMTP server: write `host`, `host:port` or `smtp://host:port`"
            ));
        }
        let default_port = if self.starttls.value { 587 } else { 25 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.starts_with('[') => (
                host.trim_start_matches('[').trim_end_matches(']'),
                port.parse::<u16>()
                    .map_err(|_| format!("the port of `{text}` is not a number from 1 to 65535"))?,
            ),
            _ => (rest, default_port),
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(format!(
                "`{text}` names no host: write `host`, `host:port` or `smtp://host:port`"
            ));
        }
        if port == 0 {
            return Err(format!("the port of `{text}` is 0"));
        }
        Ok((host.to_owned(), port))
    }
}

/// Alerts as log lines.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogChannel {
    /// The log level of alert lines.
    #[serde(default)]
    pub level: LogLevel,
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// `info`.
    Info,
    /// `warn`.
    #[default]
    Warn,
    /// `error`.
    Error,
}

/// Alerts as HTTP POSTs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// Where to POST.
    #[schemars(example = &"https://hooks.example.com/sluice")]
    pub url: Spanned<HttpUrl>,
    /// Extra headers (their values never print).
    #[serde(default)]
    pub headers: SecretMap,
    /// Time for the whole request.
    #[serde(default = "default_channel_timeout")]
    pub timeout: Spanned<Duration>,
    /// A key (a secret) to sign each POST with: the header `X-Sluice-Signature:
    /// sha256=<hex>` carries the HMAC-SHA256 of the body, so the receiver can check that
    /// the alert came from this pipeline. The key itself is never sent.
    #[serde(default)]
    #[schemars(schema_with = "secret_schema", example = &"${ALERT_WEBHOOK_SECRET}")]
    pub secret: Option<SecretValue>,
}

fn default_channel_timeout() -> Spanned<Duration> {
    Spanned::new(Duration::secs(10), crate::diag::Pos::START)
}

/// Alerts handed to a program.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandChannel {
    /// The program (a path, or a name looked up in `PATH`).
    #[schemars(example = &"./scripts/page-oncall.sh")]
    pub program: Spanned<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Time after which the program is killed.
    #[serde(default = "default_channel_timeout")]
    pub timeout: Spanned<Duration>,
}

/// Which alerts go to a channel. Empty filters match everything.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The channel's name (a key of `channels`).
    #[schemars(example = &"ops")]
    pub channel: Spanned<String>,
    /// Only alerts about these error classes.
    #[serde(default)]
    #[schemars(with = "Vec<ErrorClassName>", example = &serde_json::json!(["auth", "permission"]))]
    pub classes: Vec<Spanned<ErrorClass>>,
    /// Only alerts of these severities.
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["critical"]))]
    pub severities: Vec<AlertSeverity>,
    /// Only alerts about these nodes.
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["orders_api"]))]
    pub nodes: Vec<Spanned<String>>,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    /// For the record: a recovered link, a finished replay.
    Info,
    /// Handled, but someone should look: quarantined records, schema drift.
    Warning,
    /// A run failed or a link is down: act now.
    Critical,
}
