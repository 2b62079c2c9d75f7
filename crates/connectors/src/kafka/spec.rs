//! `type: kafka`: its fields, as read from the pipeline file.

use crate::spec::{NestedMode, SchemaSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_config::Spanned;
use sluice_config::spec::{SchemaPolicy, TimeoutsSpec};
use sluice_config::values::{ByteSize, RedactedMap};

/// `type: kafka`: JSON records from a topic of an external Kafka cluster (one JSON object
/// per message). Each run reads what the topic holds when the run starts, from where the
/// last run stopped: the offsets are kept in Sluice's checkpoint with the batches they
/// produced (not in a consumer group), so a batch is read into the pipeline once.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// The cluster's bootstrap servers, `host:port`.
    #[schemars(example = &serde_json::json!(["127.0.0.1:9092"]))]
    pub brokers: Spanned<Vec<Spanned<String>>>,
    /// The topic to read.
    #[schemars(example = &"orders.events")]
    pub topic: Spanned<String>,
    /// Where the first run starts: `earliest` (all the topic holds) or `latest` (only
    /// messages written after it).
    #[serde(default)]
    pub start: StartAt,
    /// librdkafka properties (`security.protocol`, `sasl.*`, ...). Secret-looking values
    /// never print.
    #[serde(default)]
    #[schemars(example = &serde_json::json!({"security.protocol": "SASL_SSL", "sasl.password": "${KAFKA_PASSWORD}"}))]
    pub properties: RedactedMap,
    /// The columns of the records: `infer` (from the first messages) or declared.
    #[serde(default)]
    pub schema: SchemaSpec,
    /// How nested objects and lists become columns.
    #[serde(default)]
    pub nested: NestedMode,
    /// What to do when records' fields differ from the schema: `evolve`, `warn` or
    /// `fail` (the read stops at that message; `quarantine` is not available here).
    #[serde(default)]
    pub schema_policy: Spanned<SchemaPolicy>,
    /// What to do with a message that is not a JSON object or does not fit its column:
    /// `fail` (the node fails, naming the partition and offset) or `skip` (left out,
    /// with an event in the run record).
    #[serde(default)]
    pub bad_records: SkipOrFail,
    /// The largest message read; a larger one is a bad record.
    #[schemars(extend("default" = "1MiB"), example = &"4MiB")]
    pub max_message_bytes: Option<Spanned<ByteSize>>,
    /// Timeouts (else `defaults.timeouts`): `connect` bounds setting up a connection to a
    /// broker (librdkafka's `socket.connection.setup.timeout.ms`, at least 1 s), `request` how long a
    /// partition known to hold more messages may send none before the read fails as
    /// `dependency`.
    pub timeouts: Option<TimeoutsSpec>,
}

/// Where a first run starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The oldest message the topic keeps.
    #[default]
    Earliest,
    /// The end of the topic when the first run starts.
    Latest,
}

/// What a Kafka source does with a bad message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkipOrFail {
    /// Fail the node, naming the message.
    #[default]
    Fail,
    /// Leave the message out, with an event in the run record.
    Skip,
}
