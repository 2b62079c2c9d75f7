//! # sluice-core
//!
//! The vocabulary every other Sluice crate speaks:
//!
//! - [`Batch`]: the unit of work, buffering, failure and replay. Its [`BatchId`] is
//!   deterministic from `(pipeline, node, source position, content hash)`, so a page
//!   re-read after a crash is recognised as the same batch, while a page whose records
//!   changed is a new one.
//! - [`ErrorClass`] and [`Disposition`]: the failure taxonomy. Every error Sluice meets is
//!   mapped to one class; the class picks the default disposition (retry, split,
//!   quarantine, fail, ...), which a pipeline may override per node.
//! - [`RetryPolicy`]: exponential backoff with full jitter, bounded by attempts and time.
//! - [`Source`] and [`Sink`]: what the engine asks of connectors; they fail with a
//!   [`ConnectorError`] that carries its class and redacted evidence.
//! - [`Secret`]: a string that prints as `***`; [`redact`]: what of a URL is secret.
//!
//! ```
//! use sluice_core::{Batch, ErrorClass, Disposition, SourcePosition};
//! use arrow::array::{Int64Array, RecordBatch};
//! use std::sync::Arc;
//!
//! let records = RecordBatch::try_from_iter([(
//!     "id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _,
//! )]).unwrap();
//! let batch = Batch::new("orders", "api", SourcePosition::page(1), records);
//! let again = Batch::new("orders", "api", SourcePosition::page(1), batch.records.clone());
//! assert_eq!(batch.id, again.id);
//! assert_eq!(ErrorClass::RateLimited.default_disposition(), Disposition::Retry);
//! ```

mod batch;
pub mod budget;
mod connector;
mod error;
pub mod flock;
pub mod naming;
pub mod node;
pub mod redact;
mod retry;
mod secret;

pub use batch::{Batch, BatchId, BatchPart, SourcePosition, schema_fingerprint};
pub use budget::RateBudgets;
pub use connector::{
    BreakerNote, ConnectorError, ConnectorEvent, EventListener, QuarantinedRecords, RejectedRows,
    RunInfo, Sink, Source, SourceBatch, WriteReport,
};
pub use error::{Disposition, ErrorClass, panic_message};
pub use retry::RetryPolicy;
pub use secret::Secret;

/// How long a database session of Sluice's (the state store's, a SQL sink's) may sit idle
/// inside a transaction before the server ends it, rolling the transaction back. Sluice's
/// transactions are statements sent back to back; one idle this long belongs to a process
/// paused (`SIGSTOP`, a frozen VM) or cut off mid-write, and its row locks (a lease's, a
/// batch's ledger rows) would otherwise stop every other process that writes the same rows
/// until it wakes up.
pub const IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(10);
