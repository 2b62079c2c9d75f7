//! Files: the file source (`type: file`) and the file sink (`type: file_sink`).
//!
//! The source reads NDJSON, CSV or JSON-array files named by a path or a glob, in name
//! order, streaming each into Arrow batches of at most `max_rows` records with arrow's
//! readers (never a whole file in memory). Its checkpoint names the files finished and
//! the byte offset (and line) reached in the current one, so a run after a crash resumes
//! there and a finished file is not read again.
//!
//! The sink writes batches as NDJSON, CSV or one JSON array to a file whose path may hold
//! `{{date}}`. A new file is created by writing a temporary file in the same folder,
//! fsyncing it and renaming it; an existing file is appended to under a write-ahead
//! ledger (`.sluice-ledger` in the path's folder): a `begin` line (the file's length
//! before) is fsynced, then the data, then a `commit` line. A batch whose commit is found
//! writes nothing and reports `duplicate`; a `begin` without its commit (a crash mid-write)
//! is rolled back by cutting the file to the length it recorded.
//!
//! ```no_run
//! # async fn demo(batch: sluice_core::Batch) -> Result<(), sluice_core::ConnectorError> {
//! use sluice_connectors::file::{FileSink, FileSinkConfig, FileFormat};
//! use sluice_core::Sink;
//! let mut sink = FileSink::new(FileSinkConfig::new("out/orders-{{date}}.ndjson", FileFormat::Ndjson), "orders", "archive")?;
//! let report = sink.write(&batch).await?;
//! # Ok(()) }
//! ```

mod config;
mod glob;
mod kind;
mod ledger;
mod sink;
mod source;
pub mod spec;

pub use config::*;
pub use kind::{FILE, FILE_SINK};
pub use sink::FileSink;
pub use source::FileSource;

use sluice_core::{ConnectorError, ErrorClass};
use std::path::Path;

/// A classified error for a failed file operation on `path`.
pub(crate) fn io_error(what: &str, path: &Path, e: &std::io::Error) -> ConnectorError {
    use std::io::ErrorKind as K;
    let shown = path.display();
    match e.kind() {
        K::NotFound => ConnectorError::new(
            ErrorClass::InvalidRequest,
            format!(
                "cannot {what} {shown}: no such file or folder; check `path` and the working directory"
            ),
        ),
        K::PermissionDenied | K::ReadOnlyFilesystem => ConnectorError::new(
            ErrorClass::Permission,
            format!(
                "cannot {what} {shown}: permission denied; check the file's and its folder's owner and mode"
            ),
        ),
        K::StorageFull | K::QuotaExceeded => ConnectorError::new(
            ErrorClass::Dependency,
            format!(
                "cannot {what} {shown}: the disk is full ({e}); free space, the write is retried"
            ),
        ),
        _ => ConnectorError::new(ErrorClass::Internal, format!("cannot {what} {shown}: {e}")),
    }
}
