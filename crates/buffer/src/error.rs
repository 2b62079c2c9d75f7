//! Buffer errors, each with its error class.

use sluice_core::{ConnectorError, ErrorClass};
use std::path::PathBuf;

/// What went wrong in a buffer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// Reading or writing the embedded log's files failed.
    #[error("embedded buffer I/O on {path}: {source} (is the disk full or the folder read-only?)")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Kafka refused or did not answer.
    #[error("Kafka {operation} failed: {source}{hint}", hint = kafka_hint(*.class))]
    Kafka {
        /// What we were doing (produce to topic x, commit, ...).
        operation: String,
        /// The error class derived from the Kafka error code.
        class: ErrorClass,
        /// rdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// One record alone is larger than the buffer's message limit.
    #[error(
        "a single record of {bytes} bytes exceeds the buffer's message limit of {limit} bytes (raise `message_max_bytes`, or quarantine the record)"
    )]
    RecordTooLarge {
        /// Encoded size of the record.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Encoding a batch failed (a bug, or a type the wire format cannot carry).
    #[error("cannot encode batch {batch_id}: {message}")]
    Encode {
        /// The batch.
        batch_id: String,
        /// What failed.
        message: String,
    },
    /// A message that does not decode: written by another producer, truncated, of an
    /// unknown format version, or a part that disagrees with its batch's other parts. It
    /// is poison: to be quarantined, consumption goes on after it.
    #[error("{message}")]
    Undecodable {
        /// What is wrong with it.
        message: String,
    },
    /// Another process has the embedded log (or this pipeline's part of it) open.
    #[error(
        "the embedded buffer at {root} is in use by {holder}: one process at a time owns a pipeline's buffer (lock file {lock}); wait for it to finish or stop it, then try again"
    )]
    Locked {
        /// The log's folder.
        root: PathBuf,
        /// The lock file held.
        lock: PathBuf,
        /// Who holds it, as its lock file says (pid, host, since, command).
        holder: String,
    },
    /// A topic outside the namespace this process opened the log for.
    #[error(
        "topic `{topic}` is not in namespace `{namespace}` this process opened the embedded buffer for"
    )]
    NotOwned {
        /// The topic asked for.
        topic: String,
        /// The namespace owned.
        namespace: String,
    },
    /// A part of the buffer's cluster is not well: a broker unreachable, a partition
    /// without a leader.
    #[error(
        "{what} (is every broker running and reachable? `kafka-topics --describe` shows the partitions' leaders)"
    )]
    Unhealthy {
        /// What is wrong.
        what: String,
    },
    /// A topic or group name that cannot be used.
    #[error("invalid {what} name `{name}`: use letters, digits, `.`, `_` and `-` only")]
    InvalidName {
        /// `topic` or `group`.
        what: &'static str,
        /// The name.
        name: String,
    },
}

fn kafka_hint(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Dependency | ErrorClass::Network => {
            " (is the broker running and reachable? `scripts/services.sh status`)"
        }
        ErrorClass::PayloadTooLarge => {
            " (the message exceeds the broker's `message.max.bytes`; lower the buffer's `message_max_bytes` so batches are split)"
        }
        ErrorClass::Auth | ErrorClass::Permission => {
            " (check the SASL/SSL properties and the ACLs of the principal)"
        }
        _ => "",
    }
}

impl BufferError {
    /// The error class, which decides retry, split or fail.
    pub fn class(&self) -> ErrorClass {
        match self {
            BufferError::Io { .. } => ErrorClass::Dependency,
            BufferError::Kafka { class, .. } => *class,
            BufferError::RecordTooLarge { .. } => ErrorClass::PayloadTooLarge,
            BufferError::Encode { .. } => ErrorClass::Internal,
            BufferError::InvalidName { .. }
            | BufferError::NotOwned { .. }
            | BufferError::Undecodable { .. } => ErrorClass::InvalidRequest,
            BufferError::Locked { .. } | BufferError::Unhealthy { .. } => ErrorClass::Dependency,
        }
    }

    pub(crate) fn undecodable(message: impl Into<String>) -> Self {
        BufferError::Undecodable {
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BufferError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A buffer failure met by a node: the node's error of the same class, its message
/// starting with `buffer:` so that the run record says where it happened.
impl From<BufferError> for ConnectorError {
    fn from(e: BufferError) -> Self {
        ConnectorError::new(e.class(), format!("buffer: {e}"))
    }
}

/// Checks a topic or group name: it becomes a folder or file name in the embedded log
/// and a topic name in Kafka.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), BufferError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BufferError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}
