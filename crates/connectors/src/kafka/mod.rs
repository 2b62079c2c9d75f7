//! `type: kafka`: JSON records from a topic of an external Kafka cluster.
//!
//! A run reads what each partition holds when the run starts (its high watermark then),
//! from the offsets of the last checkpoint, one partition at a time: a batch is a
//! contiguous range of one partition, so the same messages re-read after a crash make the
//! same batch (the same id), and sinks skip it. The offsets live in Sluice's checkpoint,
//! saved with the batch they produced, never in a consumer group: committing them to
//! Kafka first could lose a batch, committing them after could read it twice.

mod kind;
pub mod spec;

pub use kind::KAFKA;

use crate::http::records::{Converter, RecordsAt, extract, json_text};
use crate::spec::schema_config;
use arrow::array::RecordBatch;
use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use sluice_config::spec::SchemaPolicy;
use sluice_core::{
    Batch, ConnectorError, ConnectorEvent, ErrorClass, Source, SourceBatch, SourcePosition,
};
use spec::{KafkaSourceSpec, SkipOrFail, StartAt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a metadata or watermark request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a Kafka source needs beside its spec.
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    /// The node's spec.
    pub spec: KafkaSourceSpec,
    /// Most records in a batch.
    pub max_rows: usize,
    /// Most bytes of messages in a batch.
    pub max_bytes: usize,
    /// How long a partly filled batch waits for more messages, from its first one.
    pub max_wait: Duration,
    /// The longest wait for a message the partition is known to hold.
    pub request_timeout: Duration,
    /// The longest a connection to a broker takes to set up (unless `properties` says).
    pub connect_timeout: Duration,
}

/// What [`KafkaSource::receive`] got.
enum Received<'a> {
    /// The next message.
    Message(rdkafka::message::BorrowedMessage<'a>),
    /// The partition's end for this run, without a message there.
    End,
    /// The batch's `max_wait` passed first.
    Due,
}

/// Reads a topic's messages as JSON records, in batches of one partition's range.
pub struct KafkaSource {
    config: KafkaSourceConfig,
    pipeline: String,
    node: String,
    consumer: StreamConsumer,
    /// The end of each partition for this run (its high watermark at open).
    ends: BTreeMap<i32, i64>,
    /// The next offset to read of each partition.
    next: BTreeMap<i32, i64>,
    /// The partition assigned now, if any.
    assigned: Option<i32>,
    /// The offsets of the last checkpoint handed out (or given at open): when a run moves
    /// them without a batch (a first run at `latest`, messages all skipped), it ends with
    /// an empty batch carrying them, so the next run starts there.
    saved: Option<BTreeMap<i32, i64>>,
    converter: Converter,
    events: Vec<ConnectorEvent>,
}

fn client(config: &KafkaSourceConfig, pipeline: &str, node: &str) -> ClientConfig {
    let spec = &config.spec;
    let mut c = ClientConfig::new();
    let brokers: Vec<&str> = spec
        .brokers
        .value
        .iter()
        .map(|b| b.value.as_str())
        .collect();
    c.set("bootstrap.servers", brokers.join(","))
        .set("group.id", format!("sluice.{pipeline}.{node}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("socket.timeout.ms", "10000")
        .set(
            "socket.connection.setup.timeout.ms",
            // librdkafka's range: 1 s to i32::MAX ms.
            config
                .connect_timeout
                .as_millis()
                .clamp(1000, i32::MAX as u128)
                .to_string(),
        );
    let limits = FetchLimits::of(spec);
    c.set("fetch.message.max.bytes", limits.per_partition.to_string())
        .set("fetch.max.bytes", limits.fetch.to_string())
        .set("receive.message.max.bytes", limits.receive.to_string())
        .set(
            "queued.max.messages.kbytes",
            limits.queued_kbytes.to_string(),
        );
    for (k, v) in spec.properties.iter_exposed() {
        c.set(k, v);
    }
    c
}

/// The room beside the message in a fetch: a record batch's header and its records'
/// headers, keys and framing.
const FETCH_SLACK: usize = 64 * 1024;

/// The least a fetch holds: one record batch of small messages as large as a broker
/// accepts by default (`message.max.bytes`, 1 MiB and its header), so that a batch the
/// producer filled with small messages never wedges the source.
const MIN_FETCH: usize = 1024 * 1024 + FETCH_SLACK;

/// How much the consumer reads and holds, in relation to `max_message_bytes` (librdkafka's
/// defaults hold up to 64 MiB queued and accept a 100 MB answer, whatever the messages'
/// size, and it raises `fetch.message.max.bytes` by itself for a larger message): at most
/// about three fetches of the larger of `max_message_bytes` and 1 MiB, plus the slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FetchLimits {
    /// `fetch.message.max.bytes`: asked of each partition.
    per_partition: usize,
    /// `fetch.max.bytes`: the most a broker's answer carries (the broker still sends a
    /// first record batch larger than that, which `receive` then refuses).
    fetch: usize,
    /// `receive.message.max.bytes`: the largest answer read off the wire (at least
    /// `fetch` + 512, as librdkafka requires, for the protocol's framing).
    receive: usize,
    /// `queued.max.messages.kbytes`: the messages fetched ahead of the source (overshot
    /// by at most `fetch.message.max.bytes`).
    queued_kbytes: usize,
}

impl FetchLimits {
    /// The limits for `spec`: each one the user sets in `properties` is kept, and the
    /// others follow from it so that librdkafka accepts them together.
    fn of(spec: &KafkaSourceSpec) -> FetchLimits {
        let set = |key: &str| -> Option<usize> {
            spec.properties
                .get_exposed(key)
                .and_then(|v| v.trim().parse().ok())
        };
        let max = max_message_bytes(spec).max(1024);
        let per_partition = set("fetch.message.max.bytes")
            .or_else(|| set("max.partition.fetch.bytes"))
            .unwrap_or(max);
        // librdkafka refuses a `fetch.max.bytes` below `message.max.bytes`.
        let fetch = set("fetch.max.bytes").unwrap_or(
            max.saturating_add(FETCH_SLACK)
                .max(MIN_FETCH)
                .max(set("message.max.bytes").unwrap_or(0)),
        );
        let receive = set("receive.message.max.bytes").unwrap_or(fetch.saturating_add(512));
        let queued_kbytes = set("queued.max.messages.kbytes")
            // librdkafka's range is 1..=2097151 KiB.
            .unwrap_or_else(|| fetch.div_ceil(1024).clamp(1, 2_097_151));
        FetchLimits {
            per_partition,
            fetch,
            receive,
            queued_kbytes,
        }
    }
}

/// A message's payload, copied out of librdkafka's buffer only once its size is known to
/// be within `max`: an oversized message is refused before it costs a copy.
fn checked_payload(payload: Option<&[u8]>, max: usize) -> Result<Vec<u8>, String> {
    let Some(payload) = payload else {
        return Err("it has no value (a tombstone)".to_owned());
    };
    if payload.len() > max {
        return Err(format!(
            "it is {} bytes, more than `max_message_bytes` ({max})",
            payload.len()
        ));
    }
    Ok(payload.to_vec())
}

fn max_message_bytes(spec: &KafkaSourceSpec) -> usize {
    spec.max_message_bytes
        .as_ref()
        .map_or(1024 * 1024, |m| {
            usize::try_from(m.value.bytes()).unwrap_or(usize::MAX)
        })
        .max(1)
}

fn kafka_error(what: &str, e: rdkafka::error::KafkaError) -> ConnectorError {
    use rdkafka::types::RDKafkaErrorCode as C;
    let class = match e.rdkafka_error_code() {
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition) => {
            ErrorClass::InvalidRequest
        }
        Some(
            C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed,
        ) => ErrorClass::Permission,
        Some(C::SaslAuthenticationFailed | C::Authentication) => ErrorClass::Auth,
        Some(C::MessageSizeTooLarge) => ErrorClass::PayloadTooLarge,
        _ => ErrorClass::Dependency,
    };
    ConnectorError::new(class, format!("kafka: {what}: {e}"))
}

/// The partitions of `topic` with their (low, high) watermarks.
fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<BTreeMap<i32, (i64, i64)>, ConnectorError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| kafka_error("cannot read the cluster's metadata", e))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(ConnectorError::new(
            ErrorClass::InvalidRequest,
            format!("kafka: the topic `{topic}` does not exist"),
        ));
    };
    if let Some(e) = t.error() {
        let e = rdkafka::error::KafkaError::MetadataFetch(e.into());
        return Err(kafka_error(&format!("the topic `{topic}`"), e));
    }
    let mut out = BTreeMap::new();
    for p in t.partitions() {
        let marks = consumer
            .fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)
            .map_err(|e| kafka_error(&format!("the offsets of `{topic}`/{}", p.id()), e))?;
        out.insert(p.id(), marks);
    }
    Ok(out)
}

impl KafkaSource {
    /// Opens the topic: its partitions and their ends for this run, and where to start
    /// (the checkpoint's offsets, else `start`).
    pub async fn open(
        config: KafkaSourceConfig,
        pipeline: &str,
        node: &str,
        checkpoint: Option<Value>,
    ) -> Result<KafkaSource, ConnectorError> {
        let client_config = client(&config, pipeline, node);
        let topic = config.spec.topic.value.clone();
        let probe = client_config.clone();
        let marks = tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = probe
                .create()
                .map_err(|e| kafka_error("cannot create a consumer", e))?;
            partitions(&consumer, &topic)
        })
        .await
        .map_err(|e| ConnectorError::new(ErrorClass::Internal, e.to_string()))??;
        let saved: BTreeMap<i32, i64> = checkpoint
            .as_ref()
            .and_then(|c| c.get("offsets"))
            .and_then(|o| serde_json::from_value::<BTreeMap<String, i64>>(o.clone()).ok())
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| k.parse().ok().map(|k| (k, v)))
                    .collect()
            })
            .unwrap_or_default();
        let mut events = Vec::new();
        let (mut ends, mut next) = (BTreeMap::new(), BTreeMap::new());
        for (&p, &(low, high)) in &marks {
            let start = match saved.get(&p) {
                Some(&at) if at < low => {
                    events.push(ConnectorEvent::new(
                        Some(ErrorClass::ContractChanged),
                        format!(
                            "partition {p}: {} message(s) from offset {at} were deleted by the topic's retention before they were read; reading on from {low}",
                            low - at
                        ),
                    ));
                    low
                }
                Some(&at) => at,
                None if checkpoint.is_some() => low,
                None => match config.spec.start {
                    StartAt::Earliest => low,
                    StartAt::Latest => high,
                },
            };
            ends.insert(p, high);
            next.insert(p, start.min(high));
        }
        let consumer: StreamConsumer = client_config
            .create()
            .map_err(|e| kafka_error("cannot create a consumer", e))?;
        let converter = Converter::new(&schema_config(&config.spec.schema), config.spec.nested);
        Ok(KafkaSource {
            config,
            pipeline: pipeline.to_owned(),
            node: node.to_owned(),
            consumer,
            ends,
            next,
            assigned: None,
            saved: checkpoint.is_some().then(|| saved.clone()),
            converter,
            events,
        })
    }

    /// At the end of a run: an empty batch with the checkpoint when the offsets moved since
    /// the last one handed out, else nothing.
    fn last_checkpoint(&mut self) -> Option<SourceBatch> {
        if self.saved.as_ref() == Some(&self.next) {
            return None;
        }
        self.saved = Some(self.next.clone());
        let position = SourcePosition::Cursor(
            self.next
                .iter()
                .map(|(p, o)| format!("{p}:{o}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        let empty = RecordBatch::new_empty(std::sync::Arc::new(arrow::datatypes::Schema::empty()));
        Some(SourceBatch {
            batch: Batch::new(self.pipeline.clone(), self.node.clone(), position, empty),
            checkpoint: Some(self.checkpoint()),
        })
    }

    fn checkpoint(&self) -> Value {
        let offsets: serde_json::Map<String, Value> = self
            .next
            .iter()
            .map(|(p, o)| (p.to_string(), Value::from(*o)))
            .collect();
        serde_json::json!({ "offsets": offsets })
    }

    fn assign(&mut self, partition: i32) -> Result<(), ConnectorError> {
        if self.assigned == Some(partition) {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.config.spec.topic.value,
            partition,
            Offset::Offset(self.next[&partition]),
        )
        .map_err(|e| kafka_error("cannot assign the partition", e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| kafka_error("cannot assign the partition", e))?;
        self.assigned = Some(partition);
        Ok(())
    }

    /// A message that cannot become a record: skipped (with an event) or the node fails.
    fn bad(&mut self, partition: i32, offset: i64, why: &str) -> Result<(), ConnectorError> {
        let at = format!(
            "`{}` partition {partition} offset {offset}",
            self.config.spec.topic.value
        );
        match self.config.spec.bad_records {
            SkipOrFail::Skip => {
                self.events.push(ConnectorEvent::new(
                    Some(ErrorClass::InvalidRequest),
                    format!("skipped the message at {at}: {why}"),
                ));
                Ok(())
            }
            SkipOrFail::Fail => Err(ConnectorError::new(
                ErrorClass::InvalidRequest,
                format!(
                    "the message at {at} is not a record: {why}; fix the producer, or set `bad_records: skip`"
                ),
            )),
        }
    }

    /// The next message of `partition`: [`Received::End`] when the consumer's position
    /// reached `end` without one (a transaction's commit marker or a compacted gap holds
    /// the last offsets: no message will come for them), [`Received::Due`] when `due`
    /// passed first (the batch being filled must go). A partition that holds offsets below
    /// `end` and sends nothing for `request_timeout` is `dependency`.
    async fn receive(
        &self,
        partition: i32,
        end: i64,
        due: Option<Instant>,
    ) -> Result<Received<'_>, ConnectorError> {
        let started = Instant::now();
        loop {
            let mut wait = Duration::from_millis(500).min(self.config.request_timeout);
            if let Some(due) = due {
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
            match tokio::time::timeout(wait, self.consumer.recv()).await {
                Ok(Ok(message)) => return Ok(Received::Message(message)),
                Ok(Err(e)) => return Err(kafka_error("cannot read the topic", e)),
                Err(_) => {}
            }
            let position = self.consumer.position().ok().and_then(|tpl| {
                tpl.find_partition(&self.config.spec.topic.value, partition)
                    .map(|e| e.offset())
            });
            if let Some(Offset::Offset(at)) = position
                && at >= end
            {
                return Ok(Received::End);
            }
            if due.is_some_and(|due| Instant::now() >= due) {
                return Ok(Received::Due);
            }
            if started.elapsed() >= self.config.request_timeout {
                let limits = FetchLimits::of(&self.config.spec);
                return Err(ConnectorError::new(
                    ErrorClass::Dependency,
                    format!(
                        "kafka: no message from partition {partition} of `{}` within {:?}, though it holds offsets up to {end}; check the brokers, or whether the next record batch is larger than the consumer reads ({} bytes, from `max_message_bytes`: raise it, or set `receive.message.max.bytes` in `properties`)",
                        self.config.spec.topic.value,
                        started.elapsed(),
                        limits.receive
                    ),
                ));
            }
        }
    }

    /// The records of the next range of `partition`: up to the batch limits or the
    /// partition's end for this run.
    async fn read_range(&mut self, partition: i32) -> Result<(Vec<Value>, bool), ConnectorError> {
        self.assign(partition)?;
        let end = self.ends[&partition];
        let max_message = max_message_bytes(&self.config.spec);
        let (mut records, mut bytes, mut exact) = (Vec::new(), 0usize, false);
        // When the batch's first message came: the batch goes `max_wait` after it.
        let mut oldest: Option<Instant> = None;
        while self.next[&partition] < end
            && records.len() < self.config.max_rows.max(1)
            && bytes < self.config.max_bytes.max(1)
        {
            // From the batch's first record (skipped messages start no batch).
            let due = oldest.and_then(|o| o.checked_add(self.config.max_wait));
            if due.is_some_and(|due| Instant::now() >= due) {
                break;
            }
            let message = match self.receive(partition, end, due).await? {
                Received::Message(message) => message,
                Received::Due => break,
                Received::End => {
                    // The consumer's position passed the end without a message there:
                    // offsets taken by transaction markers or removed by compaction.
                    self.next.insert(partition, end);
                    break;
                }
            };
            if message.partition() != partition || message.offset() < self.next[&partition] {
                continue;
            }
            let offset = message.offset();
            if offset >= end {
                break;
            }
            let payload = checked_payload(message.payload(), max_message);
            drop(message);
            self.next.insert(partition, offset + 1);
            let mut payload = match payload {
                Ok(payload) => payload,
                Err(why) => {
                    self.bad(partition, offset, &why)?;
                    continue;
                }
            };
            bytes += payload.len();
            // A line break outside a JSON string is white space, and a string holds none
            // unescaped: one message is one NDJSON line.
            for b in payload.iter_mut() {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
            match extract(&payload, &RecordsAt::Ndjson) {
                Ok(found) => {
                    if let Some(b) = found.bad.first() {
                        let why = format!("{}: {}", b.reason, b.snippet);
                        self.bad(partition, offset, &why)?;
                    }
                    exact |= found.exact;
                    records.extend(found.records);
                    if oldest.is_none() && !records.is_empty() {
                        oldest = Some(Instant::now());
                    }
                }
                Err(e) => self.bad(partition, offset, &format!("{e:?}"))?,
            }
        }
        Ok((records, exact))
    }

    fn convert(&mut self, records: Vec<Value>, exact: bool) -> Result<RecordBatch, ConnectorError> {
        let topic = self.config.spec.topic.value.clone();
        if let Some(drift) = self.converter.check(&records) {
            let summary = drift.summary();
            match self.config.spec.schema_policy.value {
                SchemaPolicy::Evolve | SchemaPolicy::Warn => {
                    self.converter.evolve(&records);
                    self.events.push(ConnectorEvent::schema_evolved(
                        self.config.spec.schema_policy.value == SchemaPolicy::Warn,
                        format!("schema evolved at `{topic}`: {summary}"),
                    ));
                }
                SchemaPolicy::Quarantine | SchemaPolicy::Fail => {
                    let first = records
                        .first()
                        .map(|r| crate::cut(&json_text(r), 200))
                        .unwrap_or_default();
                    return Err(ConnectorError::new(
                        ErrorClass::ContractChanged,
                        format!(
                            "the records of `{topic}` differ from the schema ({summary}), first: {first}; update the declared schema, or set `schema_policy: evolve` or `warn`"
                        ),
                    ));
                }
            }
        }
        let converted = self.converter.convert(records, exact).map_err(|m| {
            ConnectorError::new(
                ErrorClass::Internal,
                format!("records of `{topic}` could not become an Arrow batch: {m}"),
            )
        })?;
        for b in &converted.bad {
            let why = format!("{}: {}", b.reason, b.snippet);
            match self.config.spec.bad_records {
                SkipOrFail::Skip => self.events.push(ConnectorEvent::new(
                    Some(ErrorClass::InvalidRequest),
                    format!("skipped a record of `{topic}`: {why}"),
                )),
                SkipOrFail::Fail => {
                    return Err(ConnectorError::new(
                        ErrorClass::InvalidRequest,
                        format!(
                            "a record of `{topic}` does not fit its column: {why}; fix the producer, declare the column as `json`, or set `bad_records: skip`"
                        ),
                    ));
                }
            }
        }
        Ok(converted.batch)
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError> {
        loop {
            let Some(partition) = self
                .next
                .iter()
                .find(|(p, o)| **o < self.ends[*p])
                .map(|(p, _)| *p)
            else {
                return Ok(self.last_checkpoint());
            };
            let start = self.next[&partition];
            let (records, exact) = self.read_range(partition).await?;
            if records.is_empty() {
                // Only bad or skipped messages: nothing to deliver, but their offsets are
                // done; the next batch's checkpoint (or the last one) carries them.
                continue;
            }
            let records = self.convert(records, exact)?;
            let batch = Batch::new(
                self.pipeline.clone(),
                self.node.clone(),
                SourcePosition::Log {
                    partition,
                    offset: start,
                },
                records,
            );
            self.saved = Some(self.next.clone());
            return Ok(Some(SourceBatch {
                batch,
                checkpoint: Some(self.checkpoint()),
            }));
        }
    }

    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        std::mem::take(&mut self.events)
    }

    /// The cluster answers and the topic exists (its metadata and offsets are read).
    async fn health(&mut self) -> Result<Option<Duration>, ConnectorError> {
        let started = Instant::now();
        let client_config = client(&self.config, &self.pipeline, &self.node);
        let topic = self.config.spec.topic.value.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = client_config
                .create()
                .map_err(|e| kafka_error("cannot create a consumer", e))?;
            partitions(&consumer, &topic).map(|_| ())
        })
        .await
        .map_err(|e| ConnectorError::new(ErrorClass::Internal, e.to_string()))??;
        Ok(Some(started.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    /// The spec of the `kafka` node of a pipeline reading `topic`, with `extra` YAML lines
    /// in the node.
    fn spec(topic: &str, extra: &str) -> KafkaSourceSpec {
        let text = format!(
            "pipeline: k\nnodes:\n  events:\n    type: kafka\n    brokers: [\"127.0.0.1:9092\"]\n    topic: {topic}\n{extra}  out:\n    type: file_sink\n    inputs: [events]\n    path: o.ndjson\n    format: ndjson\n"
        );
        let plan = sluice_config::validate(&text, &sluice_config::Env::new(), crate::registry())
            .unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        let node = plan.nodes.iter().find(|n| n.id == "events").unwrap();
        node.config
            .downcast_ref::<KafkaSourceSpec>()
            .expect("a kafka spec")
            .clone()
    }

    fn config(spec: KafkaSourceSpec, max_wait: Duration) -> KafkaSourceConfig {
        KafkaSourceConfig {
            spec,
            max_rows: 10_000,
            max_bytes: 4 << 20,
            max_wait,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// An oversized message is refused before its payload is copied; a tombstone is
    /// refused; a message within the limit is copied whole.
    #[test]
    fn a_payload_is_checked_before_it_is_copied() {
        let big = vec![b'x'; 2048];
        let why = checked_payload(Some(&big), 1024).unwrap_err();
        assert!(
            why.contains("2048 bytes") && why.contains("(1024)"),
            "{why}"
        );
        assert!(
            checked_payload(None, 1024)
                .unwrap_err()
                .contains("tombstone")
        );
        assert_eq!(checked_payload(Some(b"{}"), 1024).unwrap(), b"{}");
        assert_eq!(checked_payload(Some(&big), 2048).unwrap().len(), 2048);
    }

    /// The consumer holds an amount in relation to `max_message_bytes`, never librdkafka's
    /// 64 MiB queue and 100 MB answers; each property set in `properties` is kept, and the
    /// others follow so that librdkafka accepts them together.
    #[test]
    fn the_consumer_holds_what_max_message_bytes_allows() {
        let limits = FetchLimits::of(&spec("t", ""));
        assert_eq!(
            limits,
            FetchLimits {
                per_partition: 1 << 20,
                fetch: MIN_FETCH,
                receive: MIN_FETCH + 512,
                queued_kbytes: MIN_FETCH / 1024,
            }
        );
        let large = FetchLimits::of(&spec("t", "    max_message_bytes: 16MiB\n"));
        assert_eq!(large.per_partition, 16 << 20);
        assert_eq!(large.fetch, (16 << 20) + FETCH_SLACK);
        assert_eq!(large.receive, large.fetch + 512);
        assert_eq!(large.queued_kbytes, large.fetch / 1024);
        let small = FetchLimits::of(&spec("t", "    max_message_bytes: 4KiB\n"));
        assert_eq!((small.per_partition, small.fetch), (4096, MIN_FETCH));
        let overridden = FetchLimits::of(&spec(
            "t",
            "    properties: { fetch.max.bytes: \"50000000\", queued.max.messages.kbytes: \"1000\" }\n",
        ));
        assert_eq!(overridden.fetch, 50_000_000);
        assert_eq!(overridden.receive, 50_000_512);
        assert_eq!(overridden.queued_kbytes, 1000);
        let big_messages = FetchLimits::of(&spec(
            "t",
            "    properties: { message.max.bytes: \"5000000\" }\n",
        ));
        assert_eq!(big_messages.fetch, 5_000_000);
        // librdkafka accepts each of these (it checks them when the client is created).
        for extra in [
            "",
            "    max_message_bytes: 16MiB\n",
            "    max_message_bytes: 1KiB\n",
            "    properties: { fetch.max.bytes: \"50000000\" }\n",
            "    properties: { message.max.bytes: \"5000000\" }\n",
            "    properties: { receive.message.max.bytes: \"200000000\" }\n",
        ] {
            let c = config(spec("t", extra), Duration::from_secs(1));
            let created: Result<BaseConsumer, _> = client(&c, "p", "n").create();
            assert!(created.is_ok(), "{extra}: {:?}", created.err());
        }
    }

    async fn produce(topic: &str, payloads: &[Vec<u8>]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", sluice_testkit::kafka_bootstrap())
            .create()
            .expect("a producer");
        for payload in payloads {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic)
                        .partition(0)
                        .payload(payload),
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
        }
    }

    /// The batches of a whole run: the records of each.
    async fn batches(source: &mut KafkaSource) -> Vec<usize> {
        let mut rows = Vec::new();
        while let Some(b) = source.next_batch().await.unwrap() {
            if b.batch.records.num_rows() > 0 {
                rows.push(b.batch.records.num_rows());
            }
        }
        rows
    }

    /// Against the broker: an oversized message is a bad record (skipped here, with an
    /// event), and a partly filled batch goes once its first record waited `max_wait`
    /// (none: one message a batch), else at the partition's end for the run.
    #[tokio::test(flavor = "multi_thread")]
    async fn max_wait_cuts_batches_and_an_oversized_message_is_skipped() {
        let topic = sluice_testkit::kafka_topic("kafka_src_wait", 1).await;
        let mut payloads: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("{{\"id\": {i}}}").into_bytes())
            .collect();
        payloads.insert(
            2,
            format!("{{\"pad\": \"{}\"}}", "x".repeat(4096)).into_bytes(),
        );
        produce(&topic.name, &payloads).await;
        let spec = spec(
            &topic.name,
            "    max_message_bytes: 1KiB\n    bad_records: skip\n",
        );

        let mut waiting = KafkaSource::open(
            config(spec.clone(), Duration::from_secs(3600)),
            "p",
            "n",
            None,
        )
        .await
        .unwrap();
        assert_eq!(batches(&mut waiting).await, vec![5]);
        let events = waiting.drain_events();
        assert!(
            events
                .iter()
                .any(|e| e.message.contains("more than `max_message_bytes` (1024)")),
            "{events:?}"
        );

        let mut eager = KafkaSource::open(config(spec, Duration::ZERO), "p", "n", None)
            .await
            .unwrap();
        assert_eq!(batches(&mut eager).await, vec![1; 5]);
    }
}
