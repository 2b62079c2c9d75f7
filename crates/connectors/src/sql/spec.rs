//! `type: postgres | mysql | sqlite`: a query read as a source, or a table written as a
//! sink. The field `query` makes a source, `table` a sink.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_config::Spanned;
use sluice_config::spec::SchemaPolicy;
use sluice_config::spec::TimeoutsSpec;
use sluice_config::values::{DatabaseUrl, Dialect};

/// A database read with a query, in chunks, optionally incrementally.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlSourceSpec {
    /// The engine, from the node's `type`.
    #[serde(skip)]
    pub dialect: Dialect,
    /// The connection URL (a secret: it may hold a password). Its scheme must match the
    /// node's type.
    #[schemars(example = &"postgres://reader:${PGPASSWORD}@127.0.0.1:5432/shop")]
    pub url: Spanned<DatabaseUrl>,
    /// The query. With `watermark`, it uses `:watermark` where the last run's maximum goes
    /// (bound as a parameter, never spliced into the text).
    #[schemars(example = &"SELECT * FROM orders WHERE updated_at > :watermark ORDER BY updated_at")]
    pub query: Spanned<String>,
    /// Incremental reading by a column.
    pub watermark: Option<WatermarkSpec>,
    /// Accepted for older pipelines, and warned of: it has no effect. The rows stream
    /// from the server as the source reads them (the drivers have no round-trip size),
    /// and batches are cut by `batching`. At least 1.
    #[serde(default = "default_fetch_size")]
    pub fetch_size: Spanned<u32>,
    /// Timeouts (else `defaults.timeouts`).
    pub timeouts: Option<TimeoutsSpec>,
}

fn default_fetch_size() -> Spanned<u32> {
    Spanned::new(1000, sluice_config::Pos::START)
}

/// The watermark of an incremental SQL source.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    /// The column whose maximum is kept as the checkpoint.
    #[schemars(example = &"updated_at")]
    pub column: Spanned<String>,
    /// The value of `:watermark` on the first run.
    #[schemars(example = &"1970-01-01T00:00:00Z")]
    pub initial: Option<String>,
    /// How far past the run's start a timestamp may be and still become the watermark. A
    /// later one (an upstream clock gone wrong, `2999-01-01`) and a value of another type
    /// than the column's are delivered, left out of the checkpoint and reported as
    /// `contract_changed`. Times without a zone get 14 hours more (they may be local).
    #[serde(default = "crate::spec::default_future_tolerance")]
    pub future_tolerance: Spanned<sluice_config::values::Duration>,
}

/// A table written with append, upsert or replace. Every batch is written with a ledger
/// row in one transaction, so a redelivered batch is never written twice.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlSinkSpec {
    /// The engine, from the node's `type`.
    #[serde(skip)]
    pub dialect: Dialect,
    /// The connection URL (a secret: it may hold a password). Its scheme must match the
    /// node's type.
    #[schemars(example = &"postgres://writer:${PGPASSWORD}@127.0.0.1:5432/warehouse")]
    pub url: Spanned<DatabaseUrl>,
    /// The table, optionally `schema.table`. Quoted as an identifier, never spliced.
    #[schemars(example = &"analytics.orders")]
    pub table: Spanned<String>,
    /// `append`, `upsert` (by `key`) or `replace` (empty the table once per load, in the transaction of its first rows).
    #[serde(default)]
    pub mode: Spanned<WriteMode>,
    /// The key columns of `upsert`, named as the records' fields (with `naming:
    /// snake_case`, mapped to their columns like every field).
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["id"]))]
    pub key: Vec<Spanned<String>>,
    /// Create the table from the batches' schema when it is missing.
    #[serde(default = "crate::spec::default_true")]
    pub create_table: bool,
    /// What to do when batches bring columns the table lacks: `evolve` adds them.
    #[serde(default)]
    pub schema_policy: Spanned<SchemaPolicy>,
    /// How record fields become column names: `verbatim` (as they are) or `snake_case`
    /// (normalised; the mapping is recorded and reused by every run, and `key` is mapped
    /// too). See [Column names](sinks.md#column-names).
    #[serde(default)]
    pub naming: Spanned<Naming>,
    /// Connections in the pool. At least 1.
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<u32>,
    /// Timeouts (else `defaults.timeouts`).
    pub timeouts: Option<TimeoutsSpec>,
}

fn default_max_connections() -> Spanned<u32> {
    Spanned::new(4, sluice_config::Pos::START)
}

/// How a sink writes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Insert every row.
    #[default]
    Append,
    /// Insert, or update the row with the same `key`.
    Upsert,
    /// Replace the table's contents once per load: never in a resumed run or a replay.
    Replace,
}

/// How a SQL sink names its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// Each field's name as it is. A name the database cannot store (empty, longer than
    /// PostgreSQL's 63 bytes or MySQL's 64 characters, two names equal but for case where
    /// the database ignores case) fails the batch with `contract_changed`.
    #[default]
    Verbatim,
    /// Lower case, every run of non-alphanumerics one `_` (none at the ends), an empty
    /// name `unnamed`; a name too long is cut and ends in `_` and 8 hex digits of a hash;
    /// a name already taken gets that hash suffix too. Recorded in the state store, so a
    /// field always goes to the same column; `sluice runs show` lists the mapping.
    SnakeCase,
}
