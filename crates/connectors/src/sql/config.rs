//! The typed configuration of the SQL sink and source, and its validation (no I/O).

pub use super::spec::WriteMode;

pub use sluice_config::spec::SchemaPolicy;
use sluice_core::{ConnectorError, ErrorClass, Secret};

pub(crate) use sluice_config::values::Dialect;

fn default_max_connections() -> u32 {
    4
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

fn default_write_timeout_ms() -> u64 {
    300_000
}

fn default_ledger_table() -> String {
    "_sluice_ledger".to_owned()
}

fn default_lock_retries() -> u32 {
    3
}

fn default_max_isolation_statements() -> u32 {
    256
}

fn default_batch_rows() -> usize {
    1000
}

fn default_batch_bytes() -> usize {
    4 << 20
}

fn default_max_wait() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

/// A table written by `type: postgres | mysql | sqlite` with `table`.
///
/// Every batch is written together with a row of the ledger table in one transaction, so
/// a batch delivered again is recognised and written only once.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlSinkConfig {
    /// The connection URL; its scheme picks the engine: `postgres://user:pass@host:5432/db`,
    /// `mysql://user:pass@host:3306/db` (MariaDB too), `sqlite://path/to/file.db`. A secret:
    /// it never appears in errors or logs.
    pub url: Secret,
    /// The schema (PostgreSQL), database (MySQL) or attached database (SQLite) of the
    /// table. Unset: the table is looked up as `schema.table` when it holds a dot, else in
    /// the connection's default (`search_path`, the URL's database, `main`).
    pub schema: Option<String>,
    /// The table. Quoted as an identifier, never spliced into SQL.
    pub table: String,
    /// `append`, `upsert` (by `key`) or `replace`.
    pub mode: WriteMode,
    /// The key columns: required by `upsert`; when the sink creates the table they become
    /// its primary key (in every mode).
    pub key: Vec<String>,
    /// Create the table from the first batch's Arrow schema when it is missing.
    pub create_table: bool,
    /// Batches with columns the table lacks: `evolve` adds them, `warn` adds them and
    /// reports it, `fail` fails the batch with `contract_changed`.
    pub schema_policy: SchemaPolicy,
    /// How record fields become column names: `verbatim` (as they are; a name the
    /// engine cannot store fails the batch) or `snake_case` (normalised, recorded and
    /// reused; `key` names fields and is mapped the same way).
    pub naming: sluice_core::naming::Naming,
    /// Connections in the pool. At least 1.
    pub max_connections: u32,
    /// Rows per statement (one multi-row `INSERT`, or one `COPY` on PostgreSQL). Unset:
    /// 1,000 for MySQL and SQLite, no limit for PostgreSQL's `COPY`. The engines' own
    /// limits (65,535 placeholders on MySQL, 32,766 variables on SQLite) always apply.
    pub max_rows_per_statement: Option<usize>,
    /// Bytes per statement. Unset: MySQL reads the server's `max_allowed_packet`, the
    /// others have no limit. A single row larger than this is rejected with
    /// `payload_too_large`.
    pub max_statement_bytes: Option<usize>,
    /// Time to open a connection (and to wait for a free one in the pool), in
    /// milliseconds. More than zero.
    pub connect_timeout_ms: u64,
    /// Time for one transaction (ledger row and data), in milliseconds, before the write
    /// fails with `dependency`. More than zero.
    pub write_timeout_ms: u64,
    /// The ledger table, created next to the target table when missing.
    pub ledger_table: String,
    /// Retries of a transaction that hit a deadlock, a serialization failure or a busy
    /// database, before the write fails with `dependency`.
    pub lock_retries: u32,
    /// How many failed statements one batch may spend isolating rows the database
    /// refuses (by bisection). When spent, the rest of the failing part is rejected whole
    /// (kept for replay, not lost).
    pub max_isolation_statements: u32,
}

impl SqlSinkConfig {
    /// A config with the defaults for everything but the URL and the table.
    pub fn new(url: impl Into<String>, table: impl Into<String>) -> Self {
        SqlSinkConfig {
            url: Secret::new(url),
            schema: None,
            table: table.into(),
            mode: WriteMode::default(),
            key: Vec::new(),
            create_table: true,
            schema_policy: SchemaPolicy::default(),
            naming: sluice_core::naming::Naming::default(),
            max_connections: default_max_connections(),
            max_rows_per_statement: None,
            max_statement_bytes: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            write_timeout_ms: default_write_timeout_ms(),
            ledger_table: default_ledger_table(),
            lock_retries: default_lock_retries(),
            max_isolation_statements: default_max_isolation_statements(),
        }
    }

    /// Checks what the spec of a `postgres`/`mysql`/`sqlite` sink does not (its checks run
    /// at `sluice validate`, with positions): names that can be quoted, and the settings a
    /// library caller may set. Every problem is listed; the class is `invalid_request`.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        let mut problems = Vec::new();
        if let Err(e) = Dialect::from_url(self.url.expose()) {
            problems.push(e);
        }
        check_identifier("table", &self.table, &mut problems);
        if let Some(schema) = &self.schema {
            check_identifier("schema", schema, &mut problems);
        }
        check_identifier("ledger_table", &self.ledger_table, &mut problems);
        for k in &self.key {
            check_identifier("key", k, &mut problems);
        }
        if self.max_rows_per_statement == Some(0) {
            problems.push("`max_rows_per_statement` must be at least 1".to_owned());
        }
        if self.max_statement_bytes == Some(0) {
            problems.push("`max_statement_bytes` must be at least 1".to_owned());
        }
        if self.connect_timeout_ms == 0 || self.write_timeout_ms == 0 {
            problems
                .push("`connect_timeout_ms` and `write_timeout_ms` must be more than 0".to_owned());
        }
        fail_with(problems, "SQL sink")
    }
}

/// The incremental watermark of a SQL source.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkConfig {
    /// The result column whose value, on the last row of each batch, becomes the
    /// checkpoint. The query must `ORDER BY` it.
    pub column: String,
    /// The value bound to `:watermark` on the first run (no checkpoint yet): a string
    /// (`"1970-01-01T00:00:00Z"`) or a number (`0`).
    pub initial: serde_json::Value,
    /// How far past the run's start a timestamp may be and still become the watermark.
    /// A later one (an upstream clock gone wrong) is delivered but left out of the
    /// checkpoint and reported as `contract_changed`. Times without a zone get 14 hours
    /// more (they may be local times).
    pub future_tolerance: std::time::Duration,
}

/// A database read by `type: postgres | mysql | sqlite` with `query`.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlSourceConfig {
    /// The connection URL, as for the sink. A secret.
    pub url: Secret,
    /// The query. With `watermark`, it says `:watermark` where the last checkpoint goes
    /// (bound as a parameter, never spliced into the text), e.g.
    /// `SELECT * FROM orders WHERE updated_at > :watermark ORDER BY updated_at`.
    pub query: String,
    /// Incremental reading by a column.
    pub watermark: Option<WatermarkConfig>,
    /// Rows per batch (`batching.max_rows`). At least 1. The result is streamed: at most
    /// about two batches are in memory at a time.
    pub batch_rows: usize,
    /// Bytes per batch (`batching.max_bytes`), counted as the rows are read: a text or
    /// binary value its length, a number, date or time its width (8 bytes; a date 4, a
    /// boolean 1), a null nothing. A batch ends with the row that reaches it. At least 1.
    pub batch_bytes: usize,
    /// How long a partly filled batch waits for more rows, from its first row
    /// (`batching.max_wait`): a query whose rows come slowly still delivers what it read.
    pub max_wait: std::time::Duration,
    /// Time to open the connection, in milliseconds. More than zero.
    pub connect_timeout_ms: u64,
}

impl SqlSourceConfig {
    /// A config with the defaults for everything but the URL and the query.
    pub fn new(url: impl Into<String>, query: impl Into<String>) -> Self {
        SqlSourceConfig {
            url: Secret::new(url),
            query: query.into(),
            watermark: None,
            batch_rows: default_batch_rows(),
            batch_bytes: default_batch_bytes(),
            max_wait: default_max_wait(),
            connect_timeout_ms: default_connect_timeout_ms(),
        }
    }

    /// Checks what the spec of a SQL source does not (its checks, such as the query's use
    /// of `:watermark`, run at `sluice validate`): the settings a library caller may set.
    /// Every problem is listed; the class is `invalid_request`.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        let mut problems = Vec::new();
        if let Err(e) = Dialect::from_url(self.url.expose()) {
            problems.push(e);
        }
        // The source binds the watermark once per use: a use without a setting would run
        // with an unbound parameter (a pipeline's spec refuses it, with its place).
        let uses = crate::sql::source::count_watermark_uses(&self.query);
        match &self.watermark {
            Some(w) if !(w.initial.is_string() || w.initial.is_number()) => problems.push(
                "`watermark.initial` must be a string or a number, e.g. \
                 \"1970-01-01T00:00:00Z\" or 0"
                    .to_owned(),
            ),
            None if uses > 0 => problems.push(
                "the query says `:watermark` but `watermark` is not set: add \
                 `watermark: {column: ..., initial: ...}`"
                    .to_owned(),
            ),
            _ => {}
        }
        if self.batch_rows == 0 {
            problems.push("`batch_rows` must be at least 1".to_owned());
        }
        if self.batch_bytes == 0 {
            problems.push("`batch_bytes` must be at least 1".to_owned());
        }
        if self.connect_timeout_ms == 0 {
            problems.push("`connect_timeout_ms` must be more than 0".to_owned());
        }
        fail_with(problems, "SQL source")
    }
}

fn check_identifier(field: &str, name: &str, problems: &mut Vec<String>) {
    if name.contains('\0') {
        problems.push(format!(
            "`{field}` holds a NUL character, which no database accepts in a name"
        ));
    }
}

fn fail_with(problems: Vec<String>, what: &str) -> Result<(), ConnectorError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConnectorError::new(
            ErrorClass::InvalidRequest,
            format!("invalid {what} config: {}", problems.join("; ")),
        ))
    }
}
