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

impl EventKind {
    /// The event as one line for people (`sluice run`'s log, the service's log), or `None`
    /// for the ones counted rather than told (batches read and written, a node started).
    pub fn describe(&self) -> Option<String> {
        Some(match self {
            EventKind::Retried {
                class,
                wait,
                message,
            } => {
                format!("[{class}] retry in {:.1}s: {message}", wait.as_secs_f64())
            }
            EventKind::Split { class, rows } => {
                format!("[{class}] split a batch of {rows} records in halves")
            }
            EventKind::Quarantined {
                class,
                rows,
                message,
            } => {
                format!("[{class}] quarantined {rows} record(s): {message}")
            }
            EventKind::Skipped { class, rows } => format!("[{class}] skipped {rows} record(s)"),
            EventKind::Connector {
                class: Some(class),
                message,
                ..
            } => format!("[{class}] {message}"),
            EventKind::Connector {
                class: None,
                message,
                ..
            } => message.clone(),
            EventKind::LinkWentDown {
                link,
                class,
                message,
            } => format!(
                "[{class}] {link} is down: {message}; waiting for it (when_link_down: pause)"
            ),
            EventKind::LinkCameBack { link, down_for } => {
                format!(
                    "{link} is up again after {:.1}s down: going on",
                    down_for.as_secs_f64()
                )
            }
            EventKind::Paused { cause, class } => format!("[{class}] paused: {cause}"),
            EventKind::Resumed { paused } => {
                format!("resumed after {:.1}s paused", paused.as_secs_f64())
            }
            EventKind::Compensated { message, .. } => message.clone(),
            EventKind::NodeFinished { status, error } => match error {
                Some(e) => format!("{status}: {e}"),
                None => status.clone(),
            },
            _ => return None,
        })
    }
}
