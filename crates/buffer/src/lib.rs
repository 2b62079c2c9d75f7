//! # sluice-buffer
//!
//! The durable buffer between sources and sinks, so that an outage on one side neither
//! stops nor loses the other. One trait, [`Buffer`], two implementations:
//!
//! - [`EmbeddedLog`] (`buffer: embedded`, the default): append-only segment files with a
//!   length and CRC per entry, committed offsets per consumer group, retention of fully
//!   consumed segments, torn-tail recovery. Needs no setup.
//! - [`KafkaBuffer`] (`buffer: kafka`): an idempotent rdkafka producer with `acks=all`,
//!   topics created on first use, consumer groups with manual commits.
//!
//! Both carry batches in the same [wire format](wire): Arrow IPC (lz4 by default) or
//! JSON lines, with headers for the batch id, pipeline, node, source position, schema
//! fingerprint and creation time. A batch larger than the buffer's message limit is split
//! into ordered parts sharing the batch id; a subscriber reassembles them, so a sink never
//! sees half a batch as whole. A message that does not decode is handed out as
//! [`Delivery::Poison`] (to be quarantined), never as an error that stops the stream.
//!
//! ```no_run
//! # async fn demo(batch: sluice_core::Batch) -> Result<(), sluice_buffer::BufferError> {
//! use sluice_buffer::{Buffer, Delivery, EmbeddedLog, EmbeddedOptions};
//! let log = EmbeddedLog::open("/tmp/sluice-buffer", EmbeddedOptions::default())?;
//! log.publish("orders.api.db", &batch).await?;            // returns once durable
//! let mut sub = log.subscribe("orders.api.db", "db-sink").await?;
//! if let Some(Delivery::Batch { batch, ack }) = sub.next().await? {
//!     // ... write the batch ...
//!     sub.commit(&ack).await?;                              // only after success
//! }
//! # Ok(()) }
//! ```

mod embedded;
mod error;
mod kafka;
pub mod wire;

pub use embedded::{EmbeddedLog, EmbeddedOptions, FsyncPolicy};
pub use error::BufferError;
pub use kafka::{KafkaBuffer, KafkaOptions, KafkaPart};
pub use wire::WireFormat;

use async_trait::async_trait;
use sluice_core::Batch;

/// Runs blocking file or librdkafka work off the async runtime, re-raising its panics.
pub(crate) async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BufferError> + Send + 'static,
) -> Result<T, BufferError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

/// Where a delivered message sits in its log: what a commit acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckToken {
    /// The log (topic) it came from.
    pub topic: String,
    /// Partition (always 0 in the embedded log).
    pub partition: i32,
    /// The offset to commit: one past the last message of the delivery.
    pub next_offset: i64,
}

/// A message that could not be decoded: written by another producer, truncated, or of an
/// unknown format version. It is to be quarantined; consumption goes on after it.
#[derive(Debug, Clone)]
pub struct PoisonMessage {
    /// Topic of the message.
    pub topic: String,
    /// Partition of the message.
    pub partition: i32,
    /// Offset of the message.
    pub offset: i64,
    /// Its raw payload, kept for inspection.
    pub payload: Vec<u8>,
    /// Why it did not decode.
    pub error: String,
}

/// What a subscription hands out.
#[derive(Debug)]
pub enum Delivery {
    /// A whole batch (reassembled if it travelled in parts).
    Batch {
        /// The batch.
        batch: Batch,
        /// Commit it once the batch was handled downstream.
        ack: AckToken,
    },
    /// A message that did not decode: quarantine it, then commit it.
    Poison {
        /// The message.
        poison: PoisonMessage,
        /// Commit it once it was quarantined.
        ack: AckToken,
    },
}

impl Delivery {
    /// The token to commit once this delivery was handled.
    pub fn ack(&self) -> &AckToken {
        match self {
            Delivery::Batch { ack, .. } | Delivery::Poison { ack, .. } => ack,
        }
    }
}

/// A publish under way: resolves once the batch is durable.
pub type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BufferError>> + Send>>;

/// A durable buffer of batches, organised in topics (one per DAG edge).
#[async_trait]
pub trait Buffer: Send + Sync {
    /// Appends a batch to a topic and returns once it is durable (acked). A batch larger
    /// than the message limit travels as several parts.
    async fn publish(&self, topic: &str, batch: &Batch) -> Result<(), BufferError>;

    /// Starts publishing a batch: when this returns, the batch's place in the topic is
    /// fixed (after every batch started before it); the future it returns resolves once
    /// the batch is durable. Lets a caller keep several batches in flight and still take
    /// their acks in order. By default the whole publish happens here.
    async fn start_publish(&self, topic: &str, batch: &Batch) -> Result<Pending, BufferError> {
        self.publish(topic, batch).await?;
        Ok(Box::pin(async { Ok(()) }))
    }

    /// Subscribes to a topic as a member of the named consumer group, from the group's
    /// committed offset (or the beginning).
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BufferError>;

    /// How many messages of the topic the group has not committed yet.
    async fn lag(&self, topic: &str, group: &str) -> Result<u64, BufferError>;

    /// About how many bytes of the topic the group has not committed yet, where the
    /// buffer can tell cheaply (the embedded log: from its segment files); `None` where it
    /// cannot (Kafka: its lag is in messages).
    async fn backlog_bytes(&self, topic: &str, group: &str) -> Result<Option<u64>, BufferError> {
        let _ = (topic, group);
        Ok(None)
    }

    /// When the oldest message of the topic the group has not committed yet was created
    /// (its `sluice.created_at` header, milliseconds since the Unix epoch); `None` when
    /// the group has taken everything, or the buffer cannot tell.
    async fn oldest_uncommitted(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Option<i64>, BufferError> {
        let _ = (topic, group);
        Ok(None)
    }

    /// Checks the buffer can be used: Kafka's brokers answer a metadata request, the
    /// embedded log's folder takes a file. Returns how long it took.
    async fn health(&self) -> Result<std::time::Duration, BufferError>;
}

/// A consumer-group member's view of a topic.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `Ok(None)` when the topic holds nothing more right now and
    /// `wait` elapsed without a new message.
    async fn next_within(
        &mut self,
        wait: std::time::Duration,
    ) -> Result<Option<Delivery>, BufferError>;

    /// A delivery already at hand (received, or in the log before its end), without
    /// waiting for one and without the confirming `next_within` does when it finds
    /// nothing: `Ok(None)` when there is none right now. A sink that writes several
    /// batches in one transaction gathers them with it. By default nothing is at hand.
    async fn next_ready(&mut self) -> Result<Option<Delivery>, BufferError> {
        Ok(None)
    }

    /// The next delivery, waiting up to a second for one to arrive.
    async fn next(&mut self) -> Result<Option<Delivery>, BufferError> {
        self.next_within(std::time::Duration::from_secs(1)).await
    }

    /// Commits everything up to and including the delivery the token belongs to. The
    /// commit may complete in the background (Kafka), in order after earlier ones; by the
    /// time [`next_within`](Subscription::next_within) returns `Ok(None)` every commit made
    /// before it is confirmed, so a lag read then counts only what was not handled.
    async fn commit(&mut self, ack: &AckToken) -> Result<(), BufferError>;
}
