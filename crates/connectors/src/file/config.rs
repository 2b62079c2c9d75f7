//! The file source's and file sink's run-time configs: what their specs (`spec.rs`) say,
//! resolved (paths from the pipeline's folder) and joined with the node's effective
//! batching, as `kind.rs` builds them.

pub use super::spec::{FileFormat, FileWriteMode};
use crate::http::{BadRecordPolicy, NestedMode, SchemaConfig, SchemaPolicy};
use std::path::PathBuf;

/// CSV options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// The field separator (one ASCII character).
    pub delimiter: char,
    /// Whether the first line names the columns.
    pub header: bool,
    /// The quote character (one ASCII character).
    pub quote: char,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: ',',
            header: true,
            quote: '"',
        }
    }
}

impl CsvOptions {
    pub(crate) fn bytes(&self) -> Result<(u8, u8), String> {
        let one = |c: char, what: &str| {
            u8::try_from(c)
                .ok()
                .filter(u8::is_ascii)
                .ok_or_else(|| format!("csv.{what} `{c}` must be one ASCII character"))
        };
        Ok((one(self.delimiter, "delimiter")?, one(self.quote, "quote")?))
    }
}

/// A `type: file` source.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// A file, or a glob whose last part holds `*`, `?` or `[...]` (`data/*.ndjson`),
    /// read in name order. Relative paths are resolved by the caller.
    pub path: PathBuf,
    /// The files' format.
    pub format: FileFormat,
    /// CSV options (with `format: csv`).
    pub csv: CsvOptions,
    /// The columns: inferred from the first records, or declared.
    pub schema: SchemaConfig,
    /// Nested objects and lists as struct/list columns or as JSON text (NDJSON, JSON).
    pub nested: NestedMode,
    /// Records with fields the schema lacks: `evolve`/`warn` add the columns, `fail` and
    /// `quarantine` fail the read with `contract_changed`.
    pub schema_policy: SchemaPolicy,
    /// Records per batch.
    pub max_rows: usize,
    /// Bytes of file text per batch (the batch ends at the record crossing it).
    pub max_bytes: usize,
    /// How long a partly filled batch waits for more records, from its first one. Files
    /// are read as fast as the disk gives them: the age is checked as each record (CSV:
    /// each buffer of records) is added.
    pub max_wait: std::time::Duration,
    /// Records read to infer the schema.
    pub infer_rows: usize,
    /// The longest record (an NDJSON line, a JSON-array element), in bytes; a longer one
    /// is read past in bounded chunks and handled by `bad_records`.
    pub max_record_bytes: usize,
    /// What to do with a record longer than `max_record_bytes`.
    pub bad_records: BadRecordPolicy,
}

impl FileSourceConfig {
    /// A source of `path` in `format` with the defaults.
    pub fn new(path: impl Into<PathBuf>, format: FileFormat) -> Self {
        FileSourceConfig {
            path: path.into(),
            format,
            csv: CsvOptions::default(),
            schema: SchemaConfig::Infer,
            nested: NestedMode::Struct,
            schema_policy: SchemaPolicy::Fail,
            max_rows: 10_000,
            max_bytes: 4 << 20,
            max_wait: std::time::Duration::from_secs(1),
            infer_rows: 1_000,
            max_record_bytes: 16 << 20,
            bad_records: BadRecordPolicy::Fail,
        }
    }
}

/// A `type: file_sink`.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// The file; `{{date}}` (the run's start date, UTC, `YYYY-MM-DD`) is filled in.
    /// Relative paths are resolved by the caller.
    pub path: PathBuf,
    /// The format written.
    pub format: FileFormat,
    /// Append to the file, or replace it once per load.
    pub mode: FileWriteMode,
    /// CSV options (with `format: csv`).
    pub csv: CsvOptions,
}

impl FileSinkConfig {
    /// A sink appending `format` records to `path`.
    pub fn new(path: impl Into<PathBuf>, format: FileFormat) -> Self {
        FileSinkConfig {
            path: path.into(),
            format,
            mode: FileWriteMode::Append,
            csv: CsvOptions::default(),
        }
    }
}
