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
    /// The longest wait for a message the partition is known to hold.
    pub request_timeout: Duration,
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
            "fetch.message.max.bytes",
            max_message_bytes(spec).max(1024).to_string(),
        );
    for (k, v) in spec.properties.iter_exposed() {
        c.set(k, v);
    }
    c
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

    /// The next message of `partition`, or `None` when the consumer's position reached
    /// `end` without one (a transaction's commit marker or a compacted gap holds the last
    /// offsets: no message will come for them). A partition that holds offsets below `end`
    /// and sends nothing for `request_timeout` is `dependency`.
    async fn receive(
        &self,
        partition: i32,
        end: i64,
    ) -> Result<Option<rdkafka::message::BorrowedMessage<'_>>, ConnectorError> {
        let started = Instant::now();
        loop {
            let wait = Duration::from_millis(500).min(self.config.request_timeout);
            match tokio::time::timeout(wait, self.consumer.recv()).await {
                Ok(Ok(message)) => return Ok(Some(message)),
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
                return Ok(None);
            }
            if started.elapsed() >= self.config.request_timeout {
                return Err(ConnectorError::new(
                    ErrorClass::Dependency,
                    format!(
                        "kafka: no message from partition {partition} of `{}` within {:?}, though it holds offsets up to {end}; check the brokers",
                        self.config.spec.topic.value,
                        started.elapsed()
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
        while self.next[&partition] < end
            && records.len() < self.config.max_rows.max(1)
            && bytes < self.config.max_bytes.max(1)
        {
            let Some(message) = self.receive(partition, end).await? else {
                // The consumer's position passed the end without a message there: offsets
                // taken by transaction markers or removed by compaction.
                self.next.insert(partition, end);
                break;
            };
            if message.partition() != partition || message.offset() < self.next[&partition] {
                continue;
            }
            let offset = message.offset();
            if offset >= end {
                break;
            }
            let payload = message.payload().map(<[u8]>::to_vec);
            self.next.insert(partition, offset + 1);
            let Some(mut payload) = payload else {
                self.bad(partition, offset, "it has no value (a tombstone)")?;
                continue;
            };
            if payload.len() > max_message {
                let why = format!(
                    "it is {} bytes, more than `max_message_bytes` ({max_message})",
                    payload.len()
                );
                self.bad(partition, offset, &why)?;
                continue;
            }
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
