//! The interfaces between the engine and the connectors: [`Source`], [`Sink`], and the
//! classified [`ConnectorError`] they fail with.

use crate::{Batch, ErrorClass};
use async_trait::async_trait;
use std::fmt;
use std::time::Duration;

/// A failure of a connector, with its class and the evidence a user needs to see why.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConnectorError {
    /// The class decides what happens next (retry, split, quarantine, fail).
    pub class: ErrorClass,
    /// What went wrong and what to check, in one sentence. Never holds a secret.
    pub message: String,
    /// How long the other side asked us to wait (`Retry-After`, rate-limit reset).
    pub retry_after: Option<Duration>,
    /// A redacted snippet of the request and response (method, URL without secrets,
    /// status, headers of interest, first bytes of the body), kept in the run record.
    pub evidence: Option<String>,
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.class, self.message)
    }
}

impl ConnectorError {
    /// A new error of the given class.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        ConnectorError {
            class,
            message: message.into(),
            retry_after: None,
            evidence: None,
        }
    }

    /// Adds the delay the other side asked for.
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Adds a redacted request/response snippet.
    pub fn with_evidence(mut self, evidence: impl Into<String>) -> Self {
        self.evidence = Some(evidence.into());
        self
    }
}

/// A batch read by a source, with the checkpoint to persist once the batch is durable
/// downstream (in the buffer, or in the sink when there is no buffer).
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// The records and their deterministic id.
    pub batch: Batch,
    /// The source's state after this batch (cursor, page, watermark), as JSON. The engine
    /// stores it only after the next durable hop acknowledged the batch, and hands the
    /// last stored one back when the source is opened again.
    pub checkpoint: Option<serde_json::Value>,
}

/// Something that happened inside a connector that the run's progress display and record
/// should show, although it was handled (a retry, a token refresh, a split, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorEvent {
    /// The class of the failure that was handled, if any.
    pub class: Option<ErrorClass>,
    /// What happened, past tense: "retried after 429 (waited 2s)".
    pub message: String,
}

/// Reads batches from somewhere: an HTTP API, a database, a file.
#[async_trait]
pub trait Source: Send {
    /// The next batch, or `None` when the source has nothing more for this run. Transient
    /// failures are retried inside by the connector's policy; an error returned here has
    /// exhausted them (or was not transient).
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError>;

    /// Events since the last call (retries, refreshes, ...), for progress and the run record.
    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        Vec::new()
    }
}

/// Rows a sink refused, with why. A sink isolates bad rows (by bisecting the batch) and
/// writes the rest; the refused rows go to the failed-batch store.
#[derive(Debug, Clone)]
pub struct RejectedRows {
    /// The refused rows, as a part of the original batch (see [`Batch::slice`]).
    pub rows: Batch,
    /// Why they were refused.
    pub error: ConnectorError,
}

/// What a write did.
#[derive(Debug, Clone, Default)]
pub struct WriteReport {
    /// Rows written (inserted or updated).
    pub written: usize,
    /// The batch's ledger row was already there: a redelivery, nothing written.
    pub duplicate: bool,
    /// Rows refused by the target for their content (constraint or data errors).
    pub rejected: Vec<RejectedRows>,
}

/// Writes batches somewhere: a database table, a file, an HTTP endpoint.
#[async_trait]
pub trait Sink: Send {
    /// Writes the batch idempotently: a batch whose ledger key was written before writes
    /// nothing and reports `duplicate`. A batch too large for the target fails with
    /// [`ErrorClass::PayloadTooLarge`] and the engine splits it.
    async fn write(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError>;

    /// Checks the link: connects and runs a trivial request, returns its latency.
    async fn health(&self) -> Result<Duration, ConnectorError>;

    /// Events since the last call (retries, splits, ...), for progress and the run record.
    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        Vec::new()
    }
}
