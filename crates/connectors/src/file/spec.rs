//! `type: file` (records read from files) and `type: file_sink` (batches written to a
//! file).

use crate::spec::{BadRecordPolicy, NestedMode, SchemaSpec, default_true};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_config::Spanned;
use sluice_config::spec::SchemaPolicy;
use sluice_config::values::ByteSize;

/// `type: file`: records from local files.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceSpec {
    /// A file, or a glob (`data/*.ndjson`) read in name order. Relative to the working
    /// directory.
    #[schemars(example = &"data/orders-*.ndjson")]
    pub path: Spanned<String>,
    /// The files' format.
    pub format: FileFormat,
    /// CSV options (only with `format: csv`).
    pub csv: Option<Spanned<CsvOptions>>,
    /// The columns: `infer` or declared.
    #[serde(default)]
    pub schema: SchemaSpec,
    /// How nested objects and lists become columns.
    #[serde(default)]
    pub nested: NestedMode,
    /// What to do when records' fields differ from the schema.
    #[serde(default)]
    pub schema_policy: Spanned<SchemaPolicy>,
    /// The longest record: an NDJSON line or a JSON-array element longer than this is a
    /// bad record (see `bad_records`). It is read past in bounded chunks, never held
    /// whole, so one huge line cannot take the memory.
    #[schemars(extend("default" = "16MiB"), example = &"1MiB")]
    pub max_record_bytes: Option<Spanned<ByteSize>>,
    /// What to do with a record longer than `max_record_bytes`: `fail` the read (naming
    /// the file and line), `skip` it (an event says so), or `quarantine` it (its first
    /// KiB, its file, line and byte offset go to the failed-batch store). Other malformed
    /// records fail the read.
    #[serde(default)]
    pub bad_records: BadRecordPolicy,
}

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One JSON record per line.
    Ndjson,
    /// Comma-separated values (see `csv`).
    Csv,
    /// One JSON array of records per file.
    Json,
}

impl FileFormat {
    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Ndjson => "ndjson",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
        }
    }
}

/// CSV options.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// The field separator.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Whether the first line names the columns.
    #[serde(default = "default_true")]
    pub header: bool,
    /// The quote character.
    #[serde(default = "default_quote")]
    pub quote: char,
}

fn default_delimiter() -> char {
    ','
}
fn default_quote() -> char {
    '"'
}

/// `type: file_sink`: batches written to a local file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSpec {
    /// The file. `{{run_id}}` and `{{date}}` are filled in per run.
    #[schemars(example = &"out/orders-{{date}}.ndjson")]
    pub path: Spanned<String>,
    /// The format written (`ndjson` or `csv`; `json` writes one array per run).
    pub format: FileFormat,
    /// `append` to the file or `overwrite` it once per load (not in a resumed run or a replay).
    #[serde(default)]
    pub mode: FileWriteMode,
    /// CSV options (only with `format: csv`).
    pub csv: Option<Spanned<CsvOptions>>,
}

/// How a file sink treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileWriteMode {
    /// Add to it.
    #[default]
    Append,
    /// Start it afresh once per load: never in a resumed run or a replay.
    Overwrite,
}
