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
    /// The source cannot go on before this time (a quota that resets later than the
    /// node may wait): the engine parks the node, keeping its checkpoint, and the run
    /// ends `rate_limited` instead of failing.
    pub resume_at: Option<std::time::SystemTime>,
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
            resume_at: None,
        }
    }

    /// Adds the delay the other side asked for.
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Says the source can go on no earlier than `at`: the node parks until then.
    pub fn with_resume_at(mut self, at: std::time::SystemTime) -> Self {
        self.resume_at = Some(at);
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
    /// Whether the connector tried a failed request again: the engine counts these as
    /// the node's retries. Set by [`ConnectorEvent::retried`].
    pub retry: bool,
    /// Whether records drifted from the schema and `schema_policy: warn` let them
    /// through (the schema evolved): the engine raises a `schema_drift` alert. Set by
    /// [`ConnectorEvent::schema_evolved`].
    pub drift_warned: bool,
    /// A circuit breaker of the connector is open (since when) or closed again: the
    /// engine alerts one open longer than the pipeline's `alerts.breaker_open_for`. Set by
    /// [`ConnectorEvent::breaker`].
    pub breaker: Option<BreakerNote>,
}

/// The state of one of a connector's circuit breakers, told with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerNote {
    /// The breaker of `host` holds requests back; it first opened at `since` (a failed
    /// probe that opens it again keeps that time).
    Open {
        /// `host:port`.
        host: String,
        /// When it first opened, in this episode.
        since: std::time::SystemTime,
    },
    /// The breaker of `host` closed: its probes succeeded.
    Closed {
        /// `host:port`.
        host: String,
    },
}

impl ConnectorEvent {
    /// Something handled that is not a retry: a token refresh, a smaller page, a skip.
    pub fn new(class: Option<ErrorClass>, message: impl Into<String>) -> Self {
        ConnectorEvent {
            class,
            message: message.into(),
            retry: false,
            drift_warned: false,
            breaker: None,
        }
    }

    /// A circuit breaker opened, held a request back, or closed (the failures it tells
    /// of are `dependency`).
    pub fn breaker(note: BreakerNote, message: impl Into<String>) -> Self {
        ConnectorEvent {
            class: Some(ErrorClass::Dependency),
            message: message.into(),
            retry: false,
            drift_warned: false,
            breaker: Some(note),
        }
    }

    /// The schema evolved to fit drifted records, under `schema_policy: evolve` (`warn`
    /// false: a note) or `warn` (`warn` true: a `contract_changed` event and an alert).
    pub fn schema_evolved(warn: bool, message: impl Into<String>) -> Self {
        ConnectorEvent {
            class: warn.then_some(ErrorClass::ContractChanged),
            message: message.into(),
            retry: false,
            drift_warned: warn,
            breaker: None,
        }
    }

    /// A failure of `class` the connector handled by trying again.
    pub fn retried(class: ErrorClass, message: impl Into<String>) -> Self {
        ConnectorEvent {
            class: Some(class),
            message: message.into(),
            retry: true,
            drift_warned: false,
            breaker: None,
        }
    }
}

/// Records a source read but could not deliver (malformed, or of a shape that broke the
/// contract), kept for replay instead of failing the run. The source went on after them.
#[derive(Debug, Clone)]
pub struct QuarantinedRecords {
    /// The records as the source saw them: a batch with the columns `_index` (their place
    /// in what was read) and `_raw` (their text, cut), for people to inspect. Its id is
    /// deterministic, so the same records quarantined twice (after a crash) are kept once.
    pub batch: Batch,
    /// Why they were kept.
    pub error: ConnectorError,
    /// Where to read them again (connector-specific JSON: the page and the records'
    /// places in it), for [`Source::reread`] at replay time.
    pub reread: serde_json::Value,
}

/// Called with each connector event as it happens (a live display), besides the event
/// being kept for `drain_events`.
pub type EventListener = std::sync::Arc<dyn Fn(&ConnectorEvent) + Send + Sync>;

/// Reads batches from somewhere: an HTTP API, a database, a file.
#[async_trait]
pub trait Source: Send {
    /// The next batch, or `None` when the source has nothing more for this run. A source
    /// that [retries inside](Source::retries_inside) returns an error once its retry
    /// policy gave up (or for a failure it does not retry); any other source's errors are
    /// retried by the engine.
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError>;

    /// Whether the source spends the node's retry budget itself (an HTTP source: it knows
    /// `Retry-After`, token refreshes and page shrinking). The engine then retries none of
    /// its errors again, so `max_attempts: 3` means three requests, not three times three.
    fn retries_inside(&self) -> bool {
        false
    }

    /// Events since the last call (retries, refreshes, ...), for progress and the run record.
    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        Vec::new()
    }

    /// Asks the source to call `listener` with each event as it happens (during a long
    /// retry wait, say), not only when [`Source::next_batch`] returns. Returns whether it
    /// will; the events are still handed over by [`Source::drain_events`] as well.
    fn listen(&mut self, listener: EventListener) -> bool {
        let _ = listener;
        false
    }

    /// Checks the link without reading on: for an API, its first request (with auth) is
    /// sent once; returns its latency, or `None` when the source has no link to check.
    async fn health(&mut self) -> Result<Option<Duration>, ConnectorError> {
        Ok(None)
    }

    /// Records quarantined since the last call. The engine takes them after every
    /// [`Source::next_batch`], before it saves that batch's checkpoint, and keeps them in
    /// the failed-batch store.
    fn take_quarantined(&mut self) -> Vec<QuarantinedRecords> {
        Vec::new()
    }

    /// Reads quarantined records again, from a [`QuarantinedRecords::reread`] position
    /// (`sluice replay`, once the upstream is fixed). Returns their batches; an error when
    /// they are still bad. Called on a fresh source; it neither reads on nor checkpoints.
    async fn reread(&mut self, at: &serde_json::Value) -> Result<Vec<Batch>, ConnectorError> {
        let _ = at;
        Err(ConnectorError::new(
            ErrorClass::InvalidRequest,
            "this source cannot read records again: run the pipeline again instead",
        ))
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

/// The run a sink is about to write in, told by [`Sink::begin_run`].
///
/// A **load** is what a sink in `replace` (or `overwrite`) mode replaces its target with:
/// it begins with a normal run whose sources start afresh (the pipeline's previous run,
/// replays not counted, completed, or none of its sources has a checkpoint) and takes
/// that run's id; a run that resumes after a failed, cancelled or killed one (its sources
/// continue from their checkpoints) continues the same load. A replay belongs to no load:
/// it adds what it delivers and never replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInfo {
    /// The run's id (`{{run_id}}` in a file sink's path).
    pub run_id: String,
    /// The load the run's writes belong to: the id of the run that began it; `None` for
    /// a replay.
    pub load: Option<String>,
}

impl RunInfo {
    /// A normal run, in load `load`.
    pub fn new(run_id: impl Into<String>, load: impl Into<String>) -> Self {
        RunInfo {
            run_id: run_id.into(),
            load: Some(load.into()),
        }
    }

    /// A replay: no load, nothing is replaced.
    pub fn replay(run_id: impl Into<String>) -> Self {
        RunInfo {
            run_id: run_id.into(),
            load: None,
        }
    }
}

/// Writes batches somewhere: a database table, a file, an HTTP endpoint.
#[async_trait]
pub trait Sink: Send {
    /// Writes the batch idempotently: a batch whose ledger key was written before writes
    /// nothing and reports `duplicate`. A batch too large for the target fails with
    /// [`ErrorClass::PayloadTooLarge`] and the engine splits it.
    async fn write(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError>;

    /// How many rows the sink takes in one [`Sink::write_group`] (0: it writes one batch
    /// at a time). The engine gathers the batches its buffer has at hand, up to about
    /// this many rows, when a sink falls behind (a catch-up after an outage).
    fn group_rows(&self) -> usize {
        0
    }

    /// Writes several batches at once: `Ok` with one entry per batch, in order —
    /// `Some(report)` for a batch written, `None` for one the caller then writes alone
    /// with [`Sink::write`] (which deals with its failures by class); `Err` when none was
    /// written (a batch already written, a row the target refuses, a target down). A sink
    /// that writes a batch after one it hands back (`None`) has made sure their order
    /// does not matter (no key in common). Never called when [`Sink::group_rows`] is 0.
    async fn write_group(
        &mut self,
        batches: &[Batch],
    ) -> Result<Vec<Option<WriteReport>>, ConnectorError> {
        let _ = batches;
        Err(ConnectorError::new(
            ErrorClass::Internal,
            "this sink writes one batch at a time",
        ))
    }

    /// Checks the link: connects and runs a trivial request, returns its latency.
    async fn health(&self) -> Result<Duration, ConnectorError>;

    /// Tells the sink the run it writes in, before its first write of that run (a file
    /// name with `{{run_id}}`, say), and the load the run belongs to (see [`RunInfo`]).
    /// A sink never told its run writes as one load of its own.
    fn begin_run(&mut self, run: &RunInfo) -> Result<(), ConnectorError> {
        let _ = run;
        Ok(())
    }

    /// Events since the last call (retries, splits, ...), for progress and the run record.
    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        Vec::new()
    }

    /// Gives the sink the book where its column names are kept between runs (see
    /// [`crate::naming`]), before [`Sink::begin_run`]. A sink that renames nothing
    /// ignores it.
    fn use_name_book(&mut self, book: std::sync::Arc<dyn crate::naming::NameBook>) {
        let _ = book;
    }
}
