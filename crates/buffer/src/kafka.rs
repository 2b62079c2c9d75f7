//! Kafka as the buffer (`buffer: kafka`).
//!
//! - Producer: `enable.idempotence=true`, `acks=all`; a publish returns once every part of
//!   the batch was acknowledged by the broker. The message key is the batch id, so all
//!   parts of a split batch land in one partition, in order.
//! - Topics are created on first use with the configured partitions, replication and
//!   retention.
//! - Consumers: one consumer group per downstream node, `enable.auto.commit=false`; the
//!   engine commits a delivery's offset only after the node handled it. Commits are sent
//!   in the background, coalesced (at most every 100 ms) and in order, and confirmed with
//!   a synchronous commit of the latest offsets whenever the topic runs dry (a commit lost
//!   in a crash is late, never early: the sink's ledger skips what is delivered again).
//!   Sessions time out after 6 s (not librdkafka's 45 s), so a run started after a crash
//!   gets the partitions of the dead process quickly.
//! - Several members of a group (`sluice serve` workers helping a run's sinks) split the
//!   partitions. A partition taken away in a rebalance is dropped at once: the parts of
//!   split batches held for it are forgotten, deliveries of it not yet handed out are
//!   discarded, and its offsets are no longer committed by this member (a commit the
//!   broker refuses for a rebalance is not an error). Its new owner reads on from the
//!   committed offset; a batch both wrote is skipped by the sink's ledger.
//! - A broker that is down makes publishes fail after `message.timeout.ms` with class
//!   `dependency`; when it is back, flow resumes by itself (librdkafka reconnects).

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use sluice_core::{Batch, ErrorClass};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::check_name;
use crate::wire::{self, Message, Reassembler, WireFormat};
use crate::{AckToken, Buffer, BufferError, Delivery, PoisonMessage, Subscription, run_blocking};

/// Settings of the Kafka buffer.
#[derive(Clone)]
pub struct KafkaOptions {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Partitions of topics Sluice creates.
    pub partitions: i32,
    /// Replication factor of topics Sluice creates.
    pub replication: i32,
    /// `retention.ms` of topics Sluice creates (`None`: the broker's default).
    pub retention: Option<Duration>,
    /// Largest message Sluice sends; larger batches are split into parts. Keep it at or
    /// below the broker's `message.max.bytes`.
    pub message_max_bytes: usize,
    /// How long the producer retries a message before the publish fails.
    pub delivery_timeout: Duration,
    /// Encoding of batches.
    pub format: WireFormat,
    /// Extra librdkafka properties (SASL, SSL, ...), passed through to every client.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            brokers: "127.0.0.1:9092".into(),
            partitions: 3,
            replication: 1,
            retention: None,
            message_max_bytes: 1_000_000,
            delivery_timeout: Duration::from_secs(30),
            format: WireFormat::default(),
            properties: BTreeMap::new(),
        }
    }
}

/// Whether a librdkafka property holds a secret and must not be printed.
fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "credential", "jaas"]
        .iter()
        .any(|s| key.contains(s))
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_property(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("retention", &self.retention)
            .field("message_max_bytes", &self.message_max_bytes)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("format", &self.format)
            .field("properties", &properties)
            .finish()
    }
}

impl KafkaOptions {
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// The client's config with `defaults` for the keys `properties` does not name.
    fn client_config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.client_config();
        for (key, value) in defaults {
            if !self.properties.contains_key(*key) {
                config.set(*key, *value);
            }
        }
        config
    }

    fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config_with(&PRODUCER_DEFAULTS);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "none")
            .set(
                "message.max.bytes",
                (self.message_max_bytes + 64 * 1024).to_string(),
            )
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            );
        config
    }
}

/// Maps a Kafka error to its class.
fn classify(error: &KafkaError) -> ErrorClass {
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return match error {
            KafkaError::ClientCreation(_) | KafkaError::Subscription(_) => {
                ErrorClass::InvalidRequest
            }
            _ => ErrorClass::Dependency,
        };
    };
    match code {
        C::MessageSizeTooLarge | C::InvalidMessageSize => ErrorClass::PayloadTooLarge,
        C::SaslAuthenticationFailed | C::Authentication => ErrorClass::Auth,
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed => ErrorClass::Permission,
        C::InvalidConfig
        | C::InvalidArgument
        | C::InvalidTopic
        | C::InvalidReplicationFactor
        | C::InvalidPartitions => ErrorClass::InvalidRequest,
        _ => ErrorClass::Dependency,
    }
}

fn kafka_error(operation: impl Into<String>, source: KafkaError) -> BufferError {
    BufferError::Kafka {
        operation: operation.into(),
        class: classify(&source),
        source,
    }
}

/// What the producer sets unless `properties` names the key (its guarantees, `acks=all`
/// and idempotence, are set whatever `properties` says):
/// - `linger.ms`: librdkafka waits 5 ms by default for more messages to fill a request.
///   Sluice's messages are whole batches, and a source keeps at most 8 of them unacked,
///   so the wait capped a source at 8 batches per 5 ms and delayed every checkpoint:
///   `cargo bench -p sluice-buffer --bench buffers` publishes 2–3.5× as fast without it
///   (docs/benchmarks.md, "The consumer's fetch no longer backs off").
const PRODUCER_DEFAULTS: [(&str, &str); 1] = [("linger.ms", "0")];

/// What a subscription's consumer sets unless `properties` names the key:
/// - `session.timeout.ms`, `heartbeat.interval.ms`: a consumer that died without leaving its
///   group (`kill -9`, a lost machine) holds its partitions until its session times out,
///   and the next member to join waits for that: librdkafka's 45 s would stall every
///   restart after a crash. Heartbeats come from librdkafka's own thread, so a short
///   session is safe.
/// - `queued.max.messages.kbytes`: the consumer fetches ahead into a local queue; librdkafka
///   lets it grow to 64 MiB, which a backlog (a sink catching up after an outage) fills:
///   16 MiB is still hundreds of batches ahead of the sink, and keeps the process's memory
///   flat.
/// - `fetch.queue.backoff.ms`: once that queue is full, librdkafka waits this long before it
///   looks again whether to fetch (1 s by default). A sink draining a backlog empties 16 MiB
///   in well under a second, and then waited for the fetcher: the catch-up stalled for up
///   to 0.4 s every few hundred batches (docs/benchmarks.md, "The consumer's fetch no
///   longer backs off"). 20 ms costs a look at the queue 50 times a second while it is full.
const CONSUMER_DEFAULTS: [(&str, &str); 4] = [
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1500"),
    ("queued.max.messages.kbytes", "16384"),
    ("fetch.queue.backoff.ms", "20"),
];

/// Kafka as a [`Buffer`].
pub struct KafkaBuffer {
    options: KafkaOptions,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    created: Mutex<HashSet<String>>,
}

impl fmt::Debug for KafkaBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBuffer")
            .field("options", &self.options)
            .finish()
    }
}

impl KafkaBuffer {
    /// Creates the producer and admin clients. No connection is made until first use.
    pub fn new(options: KafkaOptions) -> Result<Self, BufferError> {
        let producer: FutureProducer = options
            .producer_config()
            .create()
            .map_err(|e| kafka_error("creating the producer", e))?;
        let admin = options
            .client_config()
            .create()
            .map_err(|e| kafka_error("creating the admin client", e))?;
        Ok(KafkaBuffer {
            options,
            producer,
            admin,
            created: Mutex::default(),
        })
    }

    /// Creates the topic unless this process already did (or it exists).
    pub async fn ensure_topic(&self, topic: &str) -> Result<(), BufferError> {
        check_name("topic", topic)?;
        if self.created.lock().expect("topic set lock").contains(topic) {
            return Ok(());
        }
        let retention = self.options.retention.map(|r| r.as_millis().to_string());
        let mut new = NewTopic::new(
            topic,
            self.options.partitions,
            TopicReplication::Fixed(self.options.replication),
        );
        if let Some(ms) = &retention {
            new = new.set("retention.ms", ms);
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .admin
            .create_topics(&[new], &opts)
            .await
            .map_err(|e| kafka_error(format!("creating topic {topic}"), e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(kafka_error(
                        format!("creating topic {topic}"),
                        KafkaError::AdminOp(code),
                    ));
                }
            }
        }
        self.wait_for_metadata(topic).await?;
        self.created
            .lock()
            .expect("topic set lock")
            .insert(topic.to_owned());
        Ok(())
    }

    /// Waits until the broker's metadata lists the topic with its partitions, each with a
    /// leader that answers for it (its offsets). A topic the controller just created takes
    /// a moment to reach the brokers' metadata, and its partitions' logs a moment more
    /// (100–200 ms here); a consumer subscribing in between gets `UnknownTopicOrPartition`
    /// instead of its batches, and is assigned partitions whose start it cannot look up
    /// yet.
    async fn wait_for_metadata(&self, topic: &str) -> Result<(), BufferError> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        run_blocking(move || {
            let started = std::time::Instant::now();
            loop {
                let client = producer.client();
                let metadata = client
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))
                    .map_err(|e| kafka_error(format!("reading metadata of {topic}"), e))?;
                let Some(listed) = metadata.topics().iter().find(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                }) else {
                    if started.elapsed() >= TOPIC_LISTED_WITHIN {
                        return Err(kafka_error(
                            format!("waiting for topic {topic} to appear in the metadata"),
                            KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let ready = listed.partitions().iter().all(|p| {
                    p.error().is_none()
                        && p.leader() >= 0
                        && client
                            .fetch_watermarks(&topic, p.id(), Duration::from_secs(5))
                            .is_ok()
                });
                if ready {
                    return Ok(());
                }
                // A partition without a leader for longer than a new topic's takes is an
                // outage of part of the cluster: go on with the others (the monitor says
                // which), as before this wait.
                if started.elapsed() >= PARTITIONS_READY_WITHIN {
                    tracing::warn!(%topic, "some partitions have no leader answering for them; going on with the others");
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.options.client_config_with(&CONSUMER_DEFAULTS);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "fetch.message.max.bytes",
                (self.options.message_max_bytes + 64 * 1024).to_string(),
            );
        config
    }

    /// Publishes one raw message (tests use this to plant garbage on a topic).
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<(), BufferError> {
        self.ensure_topic(topic).await?;
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                self.options.delivery_timeout,
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| kafka_error(format!("producing to {topic}"), e))
    }
}

impl KafkaBuffer {
    /// Publishes one wire message as it is, headers and all (tests use this to plant
    /// crafted headers or half a split batch on a topic).
    pub async fn publish_message(
        &self,
        topic: &str,
        key: &str,
        message: &Message,
    ) -> Result<(), BufferError> {
        self.ensure_topic(topic).await?;
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (k, v) in &message.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        self.producer
            .send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(&message.payload)
                    .headers(headers),
                self.options.delivery_timeout,
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| kafka_error(format!("producing to {topic}"), e))
    }
}

#[async_trait]
impl Buffer for KafkaBuffer {
    async fn publish(&self, topic: &str, batch: &Batch) -> Result<(), BufferError> {
        self.start_publish(topic, batch).await?.await
    }

    /// Enqueues every part of the batch with the producer (whose idempotence keeps them
    /// in order within the partition, after every batch enqueued before), and returns the
    /// wait for their acks.
    async fn start_publish(
        &self,
        topic: &str,
        batch: &Batch,
    ) -> Result<crate::Pending, BufferError> {
        self.ensure_topic(topic).await?;
        let messages = wire::encode(batch, self.options.format, self.options.message_max_bytes)?;
        let key = batch.id.to_string();
        let mut pending = Vec::with_capacity(messages.len());
        for message in &messages {
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
            for (k, v) in &message.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&message.payload)
                .headers(headers);
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| kafka_error(format!("producing to {topic}"), e))?;
            pending.push(delivery);
        }
        let topic = topic.to_owned();
        Ok(Box::pin(async move {
            for delivery in pending {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        return Err(kafka_error(format!("producing to {topic}"), e));
                    }
                    Err(_canceled) => {
                        return Err(kafka_error(
                            format!("producing to {topic}"),
                            KafkaError::Canceled,
                        ));
                    }
                }
            }
            Ok(())
        }))
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BufferError> {
        check_name("group", group)?;
        self.ensure_topic(topic).await?;
        let revoked = Arc::new(Mutex::new(HashSet::new()));
        let consumer: StreamConsumer<Members> = self
            .consumer_config(group)
            .create_with_context(Members {
                revoked: revoked.clone(),
            })
            .map_err(|e| kafka_error("creating a consumer", e))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| kafka_error(format!("subscribing to {topic}"), e))?;
        Ok(Box::new(KafkaSubscription {
            topic: topic.to_owned(),
            consumer: Arc::new(consumer),
            reassembler: Reassembler::default(),
            ready: VecDeque::new(),
            revoked,
            unsent: BTreeMap::new(),
            unconfirmed: BTreeMap::new(),
            sent_at: None,
        }))
    }

    async fn health(&self) -> Result<Duration, BufferError> {
        let config = self.consumer_config("sluice-health");
        run_blocking(move || -> Result<Duration, BufferError> {
            let started = std::time::Instant::now();
            let consumer: BaseConsumer = config
                .create()
                .map_err(|e| kafka_error("creating a client", e))?;
            consumer
                .fetch_metadata(None, Duration::from_secs(5))
                .map_err(|e| kafka_error("reading the cluster's metadata", e))?;
            Ok(started.elapsed())
        })
        .await
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<u64, BufferError> {
        check_name("group", group)?;
        let config = self.consumer_config(group);
        let topic = topic.to_owned();
        run_blocking(move || -> Result<u64, BufferError> {
            let consumer: BaseConsumer = config
                .create()
                .map_err(|e| kafka_error("creating a consumer", e))?;
            let behind = positions(&consumer, &topic)?;
            Ok(behind.iter().map(|p| (p.high - p.from).max(0) as u64).sum())
        })
        .await
    }

    /// Reads the first uncommitted message of each partition behind (a client of its
    /// own, assigned, never committing) for its `sluice.created_at` header, or its
    /// timestamp without one.
    async fn oldest_uncommitted(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Option<i64>, BufferError> {
        check_name("group", group)?;
        let committed_config = self.consumer_config(group);
        let reader_config = self.consumer_config("sluice-lag-probe");
        let topic = topic.to_owned();
        run_blocking(move || -> Result<Option<i64>, BufferError> {
            let consumer: BaseConsumer = committed_config
                .create()
                .map_err(|e| kafka_error("creating a consumer", e))?;
            let timeout = Duration::from_secs(10);
            let mut behind = TopicPartitionList::new();
            for p in positions(&consumer, &topic)? {
                if p.from < p.high {
                    behind
                        .add_partition_offset(&topic, p.partition, Offset::Offset(p.from))
                        .map_err(|e| kafka_error("assigning partitions", e))?;
                }
            }
            if behind.count() == 0 {
                return Ok(None);
            }
            let reader: BaseConsumer = reader_config
                .create()
                .map_err(|e| kafka_error("creating a consumer", e))?;
            reader
                .assign(&behind)
                .map_err(|e| kafka_error(format!("assigning partitions of {topic}"), e))?;
            let mut pending: HashSet<i32> =
                behind.elements().iter().map(|e| e.partition()).collect();
            let mut oldest: Option<i64> = None;
            let deadline = std::time::Instant::now() + timeout;
            while !pending.is_empty() && std::time::Instant::now() < deadline {
                let Some(received) = reader.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let Ok(msg) = received else { continue };
                if !pending.remove(&msg.partition()) {
                    continue;
                }
                let created = sluice_headers(&msg)
                    .get("sluice.created_at")
                    .and_then(|v| v.parse::<i64>().ok())
                    .or_else(|| msg.timestamp().to_millis());
                if let Some(created) = created {
                    oldest = Some(oldest.map_or(created, |o| o.min(created)));
                }
            }
            Ok(oldest)
        })
        .await
    }
}

/// Where a group stands in one partition of a topic.
struct Position {
    partition: i32,
    /// The group's next offset to read (its commit, or the log's start).
    from: i64,
    /// The log's end.
    high: i64,
}

/// Where the group of `consumer` stands in each partition of `topic` (a blocking call).
fn positions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<Position>, BufferError> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_error(format!("reading metadata of {topic}"), e))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(|e| kafka_error(format!("reading committed offsets of {topic}"), e))?;
    committed
        .elements()
        .iter()
        .map(|elem| {
            let (low, high) = consumer
                .fetch_watermarks(topic, elem.partition(), timeout)
                .map_err(|e| kafka_error(format!("reading watermarks of {topic}"), e))?;
            let from = match elem.offset() {
                Offset::Offset(o) => o.max(low),
                _ => low,
            };
            Ok(Position {
                partition: elem.partition(),
                from,
                high,
            })
        })
        .collect()
}

struct KafkaSubscription {
    topic: String,
    consumer: Arc<StreamConsumer<Members>>,
    reassembler: Reassembler,
    /// Deliveries decided but not handed out yet (orphaned parts, then a batch).
    ready: VecDeque<Delivery>,
    /// Partitions a rebalance took from this member since the last read.
    revoked: Arc<Mutex<HashSet<i32>>>,
    /// Per partition, the latest offset committed and not sent yet (see `commit`).
    unsent: BTreeMap<i32, i64>,
    /// Per partition, the latest offset sent asynchronously and not confirmed yet.
    unconfirmed: BTreeMap<i32, i64>,
    /// When offsets were last sent.
    sent_at: Option<std::time::Instant>,
}

/// A subscription's consumer context: notes the partitions a rebalance takes away.
struct Members {
    revoked: Arc<Mutex<HashSet<i32>>>,
}

impl ClientContext for Members {}

impl ConsumerContext for Members {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut revoked = self.revoked.lock().expect("revoked partitions");
            for elem in list.elements() {
                revoked.insert(elem.partition());
            }
        }
    }
}

impl KafkaSubscription {
    /// Whether `partition` of the topic is this member's now (when librdkafka cannot
    /// tell, it is taken to be).
    fn assigned(&self, partition: i32) -> bool {
        match self.consumer.assignment() {
            Ok(list) => list.find_partition(&self.topic, partition).is_some(),
            Err(_) => true,
        }
    }

    /// Forgets what was read of the partitions a rebalance took away.
    fn drop_revoked(&mut self) {
        let revoked: Vec<i32> = self
            .revoked
            .lock()
            .expect("revoked partitions")
            .drain()
            .collect();
        for partition in revoked {
            tracing::debug!(topic = %self.topic, partition, "partition given to another member of the group");
            self.reassembler.forget(partition);
            self.ready.retain(|d| d.ack().partition != partition);
            // Its offsets are its new owner's to commit: one of ours sent later could
            // move the group back behind what the new owner committed.
            self.unsent.remove(&partition);
            self.unconfirmed.remove(&partition);
        }
    }
}

/// Whether a commit was refused because the group is rebalancing or this member left
/// it: the offset stays where it was, and the partition's next owner reads on from there.
fn rebalancing(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::State
        )
    )
}

fn sluice_headers(msg: &rdkafka::message::BorrowedMessage<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(headers) = msg.headers() {
        for h in headers.iter() {
            if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                out.insert(h.key.to_owned(), v.to_owned());
            }
        }
    }
    out
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next_within(&mut self, wait: Duration) -> Result<Option<Delivery>, BufferError> {
        self.next_until(tokio::time::Instant::now() + wait, true)
            .await
    }

    async fn next_ready(&mut self) -> Result<Option<Delivery>, BufferError> {
        // A deadline already past: the consumer's queue is polled once (a message
        // received already is returned), and nothing is confirmed when it is empty.
        self.next_until(tokio::time::Instant::now(), false).await
    }

    /// Commits in the background, coalesced: the offset is noted, and sent (asynchronously:
    /// librdkafka orders it after every commit before it) with the others noted since, at
    /// most every [`COMMIT_EVERY`]; the caller goes on with the next delivery at once. The
    /// broker takes one offset commit at a time (a few ms each), so one per batch would
    /// make the commits the consumer's pace. An offset is only ever noted after its
    /// delivery was handled, so a commit is never early; one not sent yet at a crash is
    /// late, and the next run's ledger skips what is re-delivered. When the topic runs dry
    /// the latest offsets are committed synchronously ([`KafkaSubscription::confirm_commits`]),
    /// so that `lag` reads them.
    async fn commit(&mut self, ack: &AckToken) -> Result<(), BufferError> {
        if !self.assigned(ack.partition) {
            tracing::debug!(topic = %self.topic, partition = ack.partition, "not committed: the partition went to another member of the group");
            return Ok(());
        }
        self.unsent.insert(ack.partition, ack.next_offset);
        if self.sent_at.is_none_or(|at| at.elapsed() >= COMMIT_EVERY) {
            self.send_commits()?;
        }
        Ok(())
    }
}

/// How long a topic may take to appear in the brokers' metadata after it was created.
const TOPIC_LISTED_WITHIN: Duration = Duration::from_secs(30);

/// How long the partitions of a topic just listed may take to have a leader answering
/// for them (their logs created: 100–200 ms here) before the subscription goes on
/// without the ones that do not.
const PARTITIONS_READY_WITHIN: Duration = Duration::from_secs(5);

/// How often a subscription sends the offsets committed meanwhile (see
/// [`KafkaSubscription::commit`](Subscription::commit)).
const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// A commit of the given offsets (one past the last handled message) of a topic.
fn commit_list(
    topic: &str,
    offsets: impl IntoIterator<Item = (i32, i64)>,
) -> Result<TopicPartitionList, BufferError> {
    let mut tpl = TopicPartitionList::new();
    for (partition, next_offset) in offsets {
        tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset))
            .map_err(|e| kafka_error("building a commit", e))?;
    }
    Ok(tpl)
}

impl KafkaSubscription {
    /// Sends the offsets noted since the last commit, asynchronously.
    fn send_commits(&mut self) -> Result<(), BufferError> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let tpl = commit_list(&self.topic, self.unsent.iter().map(|(p, o)| (*p, *o)))?;
        match self.consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) => {}
            Err(e) if rebalancing(&e) => {
                tracing::info!(topic = %self.topic, error = %e, "offsets not committed: the group is rebalancing (each partition's next owner reads on from its last commit)");
                self.unsent.clear();
                return Ok(());
            }
            Err(e) => {
                return Err(kafka_error(
                    format!("committing offsets of {}", self.topic),
                    e,
                ));
            }
        }
        self.unconfirmed.append(&mut self.unsent);
        self.sent_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Commits the latest offsets committed since the last call, and waits for the
    /// broker's answer: once the topic runs dry, the group's committed offsets are the
    /// handled ones (what `lag` reads, and where another member would start).
    async fn confirm_commits(&mut self) -> Result<(), BufferError> {
        self.drop_revoked();
        self.unconfirmed.append(&mut self.unsent);
        if self.unconfirmed.is_empty() {
            return Ok(());
        }
        let tpl = commit_list(&self.topic, self.unconfirmed.iter().map(|(p, o)| (*p, *o)))?;
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        run_blocking(move || match consumer.commit(&tpl, CommitMode::Sync) {
            Err(e) if rebalancing(&e) => {
                tracing::info!(%topic, error = %e, "offsets not committed: the group is rebalancing (each partition's next owner reads on from its last commit)");
                Ok(())
            }
            result => result.map_err(|e| kafka_error(format!("committing offsets of {topic}"), e)),
        })
        .await?;
        self.unconfirmed.clear();
        self.sent_at = Some(std::time::Instant::now());
        Ok(())
    }
}

impl Drop for KafkaSubscription {
    /// Sends what was noted and not sent (best effort: closing the consumer waits for
    /// commits under way; a commit lost here is late, never early).
    fn drop(&mut self) {
        if let Err(e) = self.send_commits() {
            tracing::debug!(topic = %self.topic, error = %e, "could not send the last offsets");
        }
    }
}

/// A part of the Kafka cluster the monitor checks on its own (see
/// [`KafkaBuffer::parts`]).
pub struct KafkaPart {
    /// What it is, without secrets: `kafka broker 10.0.0.7:9092`.
    pub name: String,
    /// Its check: how long it took, or why it failed.
    pub check:
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Duration, BufferError>> + Send>>,
}

impl KafkaBuffer {
    /// The parts of the cluster checked one by one beyond [`Buffer::health`]: each broker
    /// of `brokers:` answering a metadata request on its own (the others may hide one
    /// that is down), and, as one more part, the topics named `prefix*`: every broker
    /// the cluster lists reachable, and every partition of those topics with a leader.
    pub fn parts(&self, prefix: &str) -> Vec<KafkaPart> {
        let mut parts: Vec<KafkaPart> = self
            .options
            .brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(|broker| {
                let mut config = self.options.client_config();
                config.set("bootstrap.servers", broker);
                let what = format!("broker {broker}");
                KafkaPart {
                    name: format!("kafka broker {broker}"),
                    check: Box::pin(run_blocking(move || {
                        let started = std::time::Instant::now();
                        let client: BaseConsumer = config
                            .create()
                            .map_err(|e| kafka_error("creating a client", e))?;
                        client
                            .fetch_metadata(None, Duration::from_secs(5))
                            .map_err(|e| kafka_error(format!("asking {what} for metadata"), e))?;
                        Ok(started.elapsed())
                    })),
                }
            })
            .collect();
        let config = self.options.client_config();
        let prefix = prefix.to_owned();
        parts.push(KafkaPart {
            name: format!("kafka partitions {prefix}*"),
            check: Box::pin(run_blocking(move || {
                let started = std::time::Instant::now();
                let client: BaseConsumer = config
                    .create()
                    .map_err(|e| kafka_error("creating a client", e))?;
                let metadata = client
                    .fetch_metadata(None, Duration::from_secs(5))
                    .map_err(|e| kafka_error("reading the cluster's metadata", e))?;
                let mut problems = Vec::new();
                for broker in metadata.brokers() {
                    let address = format!("{}:{}", broker.host(), broker.port());
                    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&address)
                        .ok()
                        .and_then(|mut a| a.next())
                        .is_some_and(|a| {
                            std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok()
                        });
                    if !reachable {
                        problems.push(format!(
                            "broker {} at {address} is unreachable",
                            broker.id()
                        ));
                    }
                }
                for topic in metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name().starts_with(&prefix))
                {
                    for partition in topic.partitions() {
                        if partition.leader() < 0 || partition.error().is_some() {
                            problems.push(format!(
                                "partition {} of {} has no leader",
                                partition.id(),
                                topic.name()
                            ));
                        }
                    }
                }
                if problems.is_empty() {
                    Ok(started.elapsed())
                } else {
                    Err(BufferError::Unhealthy {
                        what: problems.join("; "),
                    })
                }
            })),
        });
        parts
    }
}

impl KafkaSubscription {
    /// The next delivery, waiting until `deadline` for one; when none came, the noted
    /// commits are confirmed first if `confirm_when_dry`.
    async fn next_until(
        &mut self,
        deadline: tokio::time::Instant,
        confirm_when_dry: bool,
    ) -> Result<Option<Delivery>, BufferError> {
        loop {
            self.drop_revoked();
            if let Some(ready) = self.ready.pop_front() {
                return Ok(Some(ready));
            }
            let received = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_) => {
                    if confirm_when_dry {
                        self.confirm_commits().await?;
                    }
                    return Ok(None);
                }
                Ok(r) => r,
            };
            let msg = match received {
                Ok(msg) => msg,
                // The subscription's metadata lags behind a topic created a moment ago:
                // librdkafka reports it and goes on consuming once the topic shows up.
                Err(e)
                    if e.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
                {
                    tracing::debug!(topic = %self.topic, error = %e, "topic not in the consumer's metadata yet");
                    continue;
                }
                // The brokers went away (or are back and these are the errors queued
                // while they were away): librdkafka reconnects and goes on by itself;
                // nothing to hand out meanwhile. A source's publish finds the outage.
                Err(e)
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::AllBrokersDown
                                | RDKafkaErrorCode::BrokerTransportFailure
                        )
                    ) =>
                {
                    tracing::debug!(topic = %self.topic, error = %e, "brokers unreachable; the consumer reconnects");
                    continue;
                }
                Err(e) => return Err(kafka_error(format!("consuming from {}", self.topic), e)),
            };
            let (partition, offset) = (msg.partition(), msg.offset());
            let message = Message {
                headers: sluice_headers(&msg),
                payload: msg.payload().unwrap_or_default().to_vec(),
            };
            drop(msg);
            // Read before a rebalance took the partition away: its new owner reads it.
            self.drop_revoked();
            if !self.assigned(partition) {
                continue;
            }
            let outcome = wire::decode(&message)
                .and_then(|decoded| self.reassembler.add(partition, offset, decoded));
            // Parts of batches that will never be whole go out first, as poison.
            let orphans = self.reassembler.orphans(partition, offset, false);
            let next = self.reassembler.commit_point(partition, offset);
            let ack = |next_offset| AckToken {
                topic: self.topic.clone(),
                partition,
                next_offset,
            };
            for orphan in orphans {
                tracing::warn!(topic = %self.topic, partition, offset = orphan.offset, error = %orphan.error, "orphaned part of a split batch; handing it out for quarantine");
                self.ready.push_back(Delivery::Poison {
                    poison: PoisonMessage {
                        topic: self.topic.clone(),
                        partition,
                        offset: orphan.offset,
                        payload: orphan.payload,
                        error: orphan.error,
                    },
                    ack: ack(next),
                });
            }
            match outcome {
                Ok(Some(batch)) => {
                    self.ready.push_back(Delivery::Batch {
                        batch,
                        ack: ack(next),
                    });
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(topic = %self.topic, partition, offset, %error, "undecodable Kafka message; handing it out for quarantine");
                    self.ready.push_back(Delivery::Poison {
                        poison: PoisonMessage {
                            topic: self.topic.clone(),
                            partition,
                            offset,
                            payload: message.payload,
                            error: error.to_string(),
                        },
                        ack: ack(next),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_properties_are_redacted_in_debug() {
        let mut options = KafkaOptions::default();
        options
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        options
            .properties
            .insert("ssl.key.pem".into(), "PRIVATE".into());
        options
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let shown = format!("{options:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("PRIVATE"),
            "{shown}"
        );
        assert!(shown.contains("SASL_SSL"), "{shown}");
    }

    /// The consumer's queue bound and the fetch backoff go together: without the short
    /// backoff, a catch-up that empties the bounded queue waits up to a second for the
    /// next fetch. A user's `properties` still win.
    #[test]
    fn consumers_fetch_again_soon_after_their_queue_was_full() {
        let buffer = KafkaBuffer::new(KafkaOptions {
            brokers: "127.0.0.1:1".into(),
            ..KafkaOptions::default()
        })
        .expect("clients are created without a connection");
        let config = buffer.consumer_config("g");
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("20"));
        assert_eq!(config.get("group.id"), Some("g"));

        let mut options = KafkaOptions {
            brokers: "127.0.0.1:1".into(),
            ..KafkaOptions::default()
        };
        options
            .properties
            .insert("fetch.queue.backoff.ms".into(), "250".into());
        let buffer = KafkaBuffer::new(options).expect("clients are created");
        assert_eq!(
            buffer.consumer_config("g").get("fetch.queue.backoff.ms"),
            Some("250")
        );
    }

    /// The producer sends a batch at once, and keeps its guarantees whatever `properties`
    /// says; a tuning key named there wins.
    #[test]
    fn producers_send_at_once_and_keep_their_guarantees() {
        let config = KafkaOptions::default().producer_config();
        assert_eq!(config.get("linger.ms"), Some("0"));
        let mut options = KafkaOptions::default();
        for (key, value) in [
            ("linger.ms", "20"),
            ("acks", "1"),
            ("enable.idempotence", "false"),
        ] {
            options.properties.insert(key.into(), value.into());
        }
        let config = options.producer_config();
        assert_eq!(config.get("linger.ms"), Some("20"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
    }

    /// docs/operations.md names every default a producer or consumer sets, with its value.
    #[test]
    fn the_client_defaults_are_documented() {
        let ops = include_str!("../../../docs/operations.md").replace('\n', " ");
        for (key, value) in PRODUCER_DEFAULTS.into_iter().chain(CONSUMER_DEFAULTS) {
            assert!(
                ops.contains(&format!("`{key}` `{value}`")),
                "docs/operations.md does not say `{key}` `{value}`"
            );
        }
    }

    #[test]
    fn errors_are_classified() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(classify(&too_large), ErrorClass::PayloadTooLarge);
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(classify(&timeout), ErrorClass::Dependency);
        let denied = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(classify(&denied), ErrorClass::Permission);
    }
}
