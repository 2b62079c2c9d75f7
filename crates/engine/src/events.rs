//! What a run reports as it goes: the progress display and the logs are built from these.

use sluice_core::{ConnectorEvent, ErrorClass};
use std::time::Duration;

/// Something that happened at a node.
#[derive(Debug, Clone)]
pub struct Event {
    /// The node.
    pub node: String,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of events, named for what happened.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// The node started.
    NodeStarted,
    /// A source read a batch and the buffer acknowledged it.
    BatchRead {
        /// Records in it.
        rows: usize,
    },
    /// A batch was written (or transformed and passed on).
    BatchWritten {
        /// Records written.
        rows: usize,
    },
    /// A redelivered batch was recognised by the ledger and skipped.
    DuplicateSkipped {
        /// Records in it.
        rows: usize,
    },
    /// A failure was retried.
    Retried {
        /// Its class.
        class: ErrorClass,
        /// The wait before the next attempt.
        wait: Duration,
        /// The error, redacted.
        message: String,
    },
    /// A batch was split in halves after a failure.
    Split {
        /// Its class.
        class: ErrorClass,
        /// Records in the batch that was split.
        rows: usize,
    },
    /// Records were kept in the failed-batch store.
    Quarantined {
        /// Their class.
        class: ErrorClass,
        /// How many.
        rows: usize,
        /// Why, redacted.
        message: String,
    },
    /// Records were dropped because the node's policy says `skip`.
    Skipped {
        /// Their class.
        class: ErrorClass,
        /// How many.
        rows: usize,
    },
    /// A connector handled something inside (a token refresh, a wait, ...).
    Connector {
        /// The class of what was handled, if a failure.
        class: Option<ErrorClass>,
        /// What happened.
        message: String,
        /// Whether the connector tried a failed request again (one of the node's retries).
        retry: bool,
    },
    /// A compensation task ran.
    Compensated {
        /// Whether it succeeded.
        ok: bool,
        /// What ran, or why it failed.
        message: String,
    },
    /// A link the node needs went down; under `when_link_down: pause` the node waits for
    /// it and the sources pause.
    LinkWentDown {
        /// The link (`database 127.0.0.1:5432/shop (PostgreSQL)`).
        link: String,
        /// Why it is down.
        class: ErrorClass,
        /// What its check said.
        message: String,
    },
    /// The link answers again: the node goes on.
    LinkCameBack {
        /// The link.
        link: String,
        /// How long it was down.
        down_for: Duration,
    },
    /// A source stopped reading: a link is down, or the backlog is above `max_lag`.
    Paused {
        /// Why.
        cause: String,
        /// The class of the cause.
        class: ErrorClass,
    },
    /// A paused source reads again.
    Resumed {
        /// How long it was paused.
        paused: Duration,
    },
    /// The node finished.
    NodeFinished {
        /// Its final status (`succeeded`, `failed`, `skipped`, `cancelled`).
        status: String,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

impl From<ConnectorEvent> for EventKind {
    fn from(event: ConnectorEvent) -> Self {
        EventKind::Connector {
            class: event.class,
            message: event.message,
            retry: event.retry,
        }
    }
}
