//! The write algorithm every SQL sink shares; the engines differ only in their
//! [`Backend`]: how a table is inspected, created and extended, and how one transaction
//! (ledger row + rows) is written.
//!
//! `write(batch)`:
//! 1. bring the columns to their kinds; make sure the table fits them (create it, add
//!    columns per the schema policy) — once per column layout;
//! 2. read the ledger entries of the batch's original batch; write only the rows no entry
//!    covers (a redelivered batch writes nothing and reports `duplicate`);
//! 3. write each uncovered range in one transaction with its own ledger row. A deadlock is
//!    retried; a range too large is halved (down to one row); a range whose rows the
//!    database refuses is bisected until the bad rows are isolated: the good parts are
//!    written, each with the ledger key of its slice, and the bad rows are returned in
//!    [`WriteReport::rejected`].
//!
//! `write_group(batches)` (a sink catching up): the batches' rows in one transaction, one
//! ledger row each, when that is plain (all new, one layout, whole keys); else nothing,
//! and the engine calls `write` for each.

use super::config::{Dialect, SchemaPolicy, SqlSinkConfig, WriteMode};
use super::db;
use super::db::ConnOps;
use super::error::{Endpoint, Failure};
use super::ident::{TableName, quote, quote_list};
use super::ledger::{self, Entry, LedgerSql};
use super::types::{self, Column, Kind};
use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::row::{Row, RowConverter, Rows, SortField};
use async_trait::async_trait;
use sluice_core::naming::{self, NameBook, NameLimit, Naming};
use sluice_core::{
    Batch, ConnectorError, ConnectorEvent, ErrorClass, RejectedRows, RunInfo, Sink, WriteReport,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// What every backend needs to know about the sink's target.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) dialect: Dialect,
    pub(crate) table: TableName,
    pub(crate) ledger: LedgerSql,
    pub(crate) mode: WriteMode,
    pub(crate) key: Vec<String>,
    pub(crate) max_rows: Option<usize>,
    pub(crate) max_bytes: Option<usize>,
}

impl Settings {
    pub(crate) fn from_config(config: &SqlSinkConfig, dialect: Dialect) -> Settings {
        let table = TableName::parse(config.schema.as_deref(), &config.table);
        let ledger = LedgerSql::new(dialect, &table.sibling(&config.ledger_table));
        Settings {
            dialect,
            table,
            ledger,
            mode: config.mode,
            key: config.key.clone(),
            max_rows: config.max_rows_per_statement,
            max_bytes: config.max_statement_bytes,
        }
    }

    /// The ledger's `target` value.
    pub(crate) fn target(&self) -> String {
        self.table.display()
    }

    /// The longest column name `naming: snake_case` makes.
    fn name_limit(&self) -> NameLimit {
        match self.dialect {
            Dialect::Postgres => NameLimit::Bytes(63),
            Dialect::Mysql => NameLimit::Chars(64),
            Dialect::Sqlite => NameLimit::None,
        }
    }

    /// Whether two column names denote the same column in this engine.
    pub(crate) fn same_name(&self, a: &str, b: &str) -> bool {
        match self.dialect {
            Dialect::Postgres => a == b,
            Dialect::Mysql | Dialect::Sqlite => a.to_lowercase() == b.to_lowercase(),
        }
    }

    /// The quoted, qualified target table.
    pub(crate) fn table_sql(&self) -> String {
        self.table.sql(self.dialect)
    }

    /// A column's definition: quoted name and type.
    fn column_ddl(&self, c: &Column) -> String {
        format!(
            "{} {}",
            quote(self.dialect, &c.name),
            types::sql_type(self.dialect, c.kind, self.is_key(&c.name))
        )
    }

    /// `CREATE TABLE IF NOT EXISTS` for the columns, with the key as primary key.
    pub(crate) fn create_table_sql(&self, columns: &[Column]) -> String {
        let mut defs: Vec<String> = columns.iter().map(|c| self.column_ddl(c)).collect();
        if !self.key.is_empty() {
            defs.push(format!(
                "PRIMARY KEY ({})",
                quote_list(self.dialect, self.key.iter().map(String::as_str))
            ));
        }
        let tail = match self.dialect {
            Dialect::Mysql => " DEFAULT CHARSET=utf8mb4",
            Dialect::Postgres | Dialect::Sqlite => "",
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}){tail}",
            self.table_sql(),
            defs.join(", ")
        )
    }

    /// `ALTER TABLE … ADD COLUMN` for a new, nullable column.
    pub(crate) fn add_column_sql(&self, c: &Column) -> String {
        let if_missing = match self.dialect {
            Dialect::Postgres => "IF NOT EXISTS ",
            Dialect::Mysql | Dialect::Sqlite => "",
        };
        format!(
            "ALTER TABLE {} ADD COLUMN {if_missing}{}",
            self.table_sql(),
            self.column_ddl(c)
        )
    }

    /// Whether `name` is one of the key columns.
    pub(crate) fn is_key(&self, name: &str) -> bool {
        self.key.iter().any(|k| self.same_name(k, name))
    }
}

/// A table column as the database describes it: its name and its type's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableColumn {
    pub(crate) name: String,
    pub(crate) sql_type: String,
}

/// One transaction's worth of work.
pub(crate) struct Job<'a> {
    /// The ledger rows of what the rows are: one batch's, or several batches' written
    /// together (their rows one after the other in `columns`).
    pub(crate) entries: &'a [Entry],
    /// The rows, in parts of one column layout (one batch's, or a group's batches' one
    /// after the other, not copied into one).
    pub(crate) parts: &'a [Vec<Column>],
    /// Empty the table (and its ledger entries) first and record this load (its id): the
    /// first write of a load in `replace`.
    pub(crate) truncate: Option<&'a str>,
}

/// How one engine inspects and writes tables.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// What a backend prepares once per column layout (statements, encoders).
    type Plan: Send + Sync + 'static;

    /// Its connection pool, options, endpoint and settings (what every engine has alike).
    fn conn(&self) -> &dyn ConnOps;
    fn conn_mut(&mut self) -> &mut dyn ConnOps;
    fn endpoint(&self) -> &Endpoint {
        self.conn().endpoint()
    }
    fn settings(&self) -> &Settings {
        self.conn().settings()
    }
    fn settings_mut(&mut self) -> &mut Settings {
        self.conn_mut().settings_mut()
    }
    /// Runs one statement without parameters (DDL).
    async fn execute(&self, sql: String, doing: &str) -> Result<(), ConnectorError> {
        self.conn().execute(sql, doing).await
    }
    /// The target's columns, or `None` when the table does not exist.
    async fn table_columns(&self) -> Result<Option<Vec<TableColumn>>, ConnectorError>;
    /// Checks that an existing table can take upserts on the key (a unique index).
    async fn check_upsert_key(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn plan(
        &self,
        columns: &[Column],
        table: &[TableColumn],
    ) -> Result<Self::Plan, ConnectorError>;
    /// The `(first_row, rows)` ledger ranges already written of the batch `parent`.
    async fn covered(&self, parent: &str) -> Result<Vec<(i64, i64)>, Failure> {
        self.conn().covered(parent).await
    }
    /// [`Backend::covered`] of several parents (a group's batches), in their order.
    async fn covered_all(&self, parents: &[&str]) -> Result<Vec<Vec<(i64, i64)>>, Failure> {
        self.conn().covered_all(parents).await
    }
    /// The load whose `replace` last emptied the table (the ledger's load row).
    async fn current_load(&self) -> Result<Option<String>, Failure> {
        self.conn().current_load().await
    }
    /// Writes the job in one transaction: ledger row first, then the rows. Returns the
    /// rows written.
    async fn write(&self, plan: &Self::Plan, job: &Job<'_>) -> Result<usize, Failure>;
    /// Connects, runs `SELECT 1`, returns the time it took.
    async fn health(&self) -> Result<Duration, ConnectorError> {
        self.conn().health().await
    }
}

/// A SQL sink: the shared algorithm around one backend.
pub(crate) struct SqlSink<B: Backend> {
    backend: B,
    policy: SchemaPolicy,
    create_table: bool,
    lock_retries: u32,
    isolation_budget: u32,
    write_timeout: Duration,
    plans: HashMap<String, Arc<B::Plan>>,
    ledger_ready: bool,
    /// The load this sink writes in (see [`RunInfo`]): a sink never told its run is a
    /// load of its own; `None` in a replay, which never replaces.
    load: Option<String>,
    /// `replace`: the table holds this load already (emptied by it, in this run or in the
    /// run it resumes), so no write empties it again.
    replaced: bool,
    /// The last write failed with `dependency`: check that the server accepts connections
    /// before the next one, so that a database that is down fails it at once.
    suspect: bool,
    events: Vec<ConnectorEvent>,
    /// How fields become column names.
    naming: Naming,
    /// `key` as configured: field names (mapped to columns with `naming: snake_case`).
    key_fields: Vec<String>,
    /// Where the mapping is kept between runs; none: in memory only.
    book: Option<Arc<dyn NameBook>>,
    /// `snake_case`: the mapping (field → column), once read from the book.
    names: Option<BTreeMap<String, String>>,
    /// Fields whose mapping was recorded for this run's record.
    reported: HashSet<String>,
    /// Connections a group write may use at once (see [`TWO_WRITERS_ROWS`]): 2, or 1 for
    /// SQLite (one writer at a time) and `max_connections: 1`.
    writers: usize,
}

impl<B: Backend> SqlSink<B> {
    pub(crate) fn new(backend: B, config: &SqlSinkConfig) -> Self {
        let writers = match backend.settings().dialect {
            Dialect::Sqlite => 1,
            Dialect::Postgres | Dialect::Mysql => (config.max_connections as usize).min(2),
        };
        SqlSink {
            backend,
            policy: config.schema_policy,
            create_table: config.create_table,
            lock_retries: config.lock_retries,
            isolation_budget: config.max_isolation_statements,
            write_timeout: Duration::from_millis(config.write_timeout_ms),
            plans: HashMap::new(),
            ledger_ready: false,
            load: Some(crate::own_load()),
            replaced: false,
            suspect: false,
            events: Vec::new(),
            naming: config.naming,
            key_fields: config.key.clone(),
            book: None,
            names: None,
            reported: HashSet::new(),
            writers,
        }
    }

    /// `naming: snake_case`: renames the batch's columns (and the key) to the recorded
    /// mapping, extended for new fields; new mappings are recorded before any column is
    /// created for them. `verbatim`: nothing changes.
    async fn map_names(&mut self, columns: &mut [Column]) -> Result<(), ConnectorError> {
        if self.naming != Naming::SnakeCase {
            return Ok(());
        }
        let known = match self.names.take() {
            Some(known) => known,
            None => match &self.book {
                Some(book) => book.recorded().await?,
                None => BTreeMap::new(),
            },
        };
        let fields = columns
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.key_fields.iter().map(String::as_str));
        let mapping = naming::resolve(&known, fields, self.settings().name_limit());
        let unreported: BTreeMap<String, String> = mapping
            .iter()
            .filter(|(f, _)| !self.reported.contains(*f) || !known.contains_key(*f))
            .map(|(f, c)| (f.clone(), c.clone()))
            .collect();
        let mut known = known;
        if !unreported.is_empty() {
            if let Some(book) = &self.book {
                if let Err(e) = book.record(&unreported).await {
                    self.names = Some(known);
                    return Err(e);
                }
            }
            let renamed: Vec<String> = unreported
                .iter()
                .filter(|(f, c)| f != c && !known.contains_key(*f))
                .map(|(f, c)| format!("`{f}` -> `{c}`"))
                .collect();
            self.reported.extend(unreported.keys().cloned());
            known.extend(unreported);
            if !renamed.is_empty() {
                self.event(
                    None,
                    format!(
                        "named new columns (naming: snake_case): {}",
                        renamed.join(", ")
                    ),
                );
            }
        }
        for c in columns.iter_mut() {
            if let Some(column) = known.get(&c.name) {
                c.name = column.clone();
            }
        }
        let key: Vec<String> = self
            .key_fields
            .iter()
            .map(|k| known.get(k).cloned().unwrap_or_else(|| k.clone()))
            .collect();
        self.backend.settings_mut().key = key;
        self.names = Some(known);
        Ok(())
    }

    fn settings(&self) -> &Settings {
        self.backend.settings()
    }

    fn contract(&self, message: String) -> ConnectorError {
        self.backend
            .endpoint()
            .error(ErrorClass::ContractChanged, message)
    }

    fn event(&mut self, class: Option<ErrorClass>, message: String) {
        self.push_event(ConnectorEvent::new(class, message));
    }

    fn push_event(&mut self, event: ConnectorEvent) {
        tracing::info!(target: "sluice::sql", table = %self.settings().target(), "{}", event.message);
        self.events.push(event);
    }

    /// Checks the batch's column names against the engine's rules and the key.
    fn check_names(&self, columns: &[Column]) -> Result<(), ConnectorError> {
        let s = self.settings();
        if columns.is_empty() {
            return Err(self.contract(format!(
                "the batch has rows but no columns (records without fields, such as `{{}}`): {} cannot store such rows; leave them out in a transform, or check the source",
                s.dialect.name()
            )));
        }
        let mut seen: HashSet<String> = HashSet::new();
        for c in columns {
            if c.name.is_empty() || c.name.contains('\0') {
                return Err(self.contract(format!(
                    "a column of the batch has an empty name or one with a NUL character, which {} cannot store: rename it in a transform, or set `naming: snake_case` on the sink",
                    s.dialect.name()
                )));
            }
            // The longest name each engine keeps whole: PostgreSQL cuts longer ones
            // silently, MySQL refuses them.
            let too_long = match s.name_limit() {
                NameLimit::Bytes(max) => (c.name.len() > max).then(|| format!("{max} bytes")),
                NameLimit::Chars(max) => {
                    (c.name.chars().count() > max).then(|| format!("{max} characters"))
                }
                NameLimit::None => None,
            };
            if let Some(max) = too_long {
                return Err(self.contract(format!(
                    "column name `{}` is longer than {} accepts ({max}): rename it in a transform, or set `naming: snake_case` on the sink",
                    c.name,
                    s.dialect.name()
                )));
            }
            let folded = match s.dialect {
                Dialect::Postgres => c.name.clone(),
                _ => c.name.to_lowercase(),
            };
            if !seen.insert(folded) {
                return Err(self.contract(format!(
                    "the batch has two columns named `{}` (as {} compares names): rename one, or set `naming: snake_case` on the sink",
                    c.name,
                    s.dialect.name()
                )));
            }
        }
        if s.mode == WriteMode::Upsert {
            for k in &s.key {
                if !columns.iter().any(|c| s.same_name(&c.name, k)) {
                    let have: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                    return Err(self.contract(format!(
                        "key column `{k}` is not in the batch (it has: {}); fix `key` or the source",
                        have.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// Makes sure the table fits the columns; returns the backend's plan for them.
    /// Runs a `CREATE ... IF NOT EXISTS`. Two writers creating the same table at once (a
    /// `sluice serve` worker helping a run, a second pipeline into the table) can make
    /// PostgreSQL fail one of them on its catalog's unique index, `IF NOT EXISTS`
    /// notwithstanding: run again, it finds the other's table and does nothing.
    async fn create_once(&mut self, sql: String, doing: &str) -> Result<(), ConnectorError> {
        match self.backend.execute(sql.clone(), doing).await {
            Ok(()) => Ok(()),
            Err(first) => {
                tracing::debug!(error = %first, "{doing} failed; once more, in case another writer created it meanwhile");
                self.backend.execute(sql, doing).await
            }
        }
    }

    async fn prepare(&mut self, columns: &[Column]) -> Result<Arc<B::Plan>, ConnectorError> {
        let layout = layout_key(columns);
        if let Some(plan) = self.plans.get(&layout) {
            return Ok(plan.clone());
        }
        self.check_names(columns)?;
        if !self.ledger_ready {
            for sql in self.settings().ledger.create.clone() {
                self.create_once(sql, "creating the ledger table").await?;
            }
            self.ledger_ready = true;
        }
        let target = self.settings().target();
        let mut existing = self.backend.table_columns().await?;
        if existing.is_none() {
            if !self.create_table {
                return Err(self.contract(format!(
                    "table {target} does not exist in {}: create it, or set `create_table: true`",
                    self.backend.endpoint().describe()
                )));
            }
            let sql = self.settings().create_table_sql(columns);
            self.create_once(sql, "creating the table").await?;
            self.event(
                None,
                format!("created table {target} with {} columns", columns.len()),
            );
            existing = self.backend.table_columns().await?;
        }
        let Some(mut existing) = existing else {
            return Err(self.contract(format!(
                "table {target} was created but cannot be found: check the schema in the url"
            )));
        };
        let missing: Vec<&Column> = columns
            .iter()
            .filter(|c| {
                !existing
                    .iter()
                    .any(|t| self.settings().same_name(&t.name, &c.name))
            })
            .collect();
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|c| c.name.as_str()).collect();
            if self.policy == SchemaPolicy::Fail {
                return Err(self.contract(format!(
                    "the batch has columns that table {target} lacks: {}; set `schema_policy: evolve` or add them to the table",
                    names.join(", ")
                )));
            }
            for c in &missing {
                let sql = self.settings().add_column_sql(c);
                match self.backend.execute(sql, "adding a column").await {
                    // Another writer added it first (MySQL 1060, SQLite).
                    Err(e)
                        if e.message.contains("(error 1060)")
                            || e.message.contains("duplicate column name") => {}
                    other => other?,
                }
            }
            self.push_event(ConnectorEvent::schema_evolved(
                self.policy == SchemaPolicy::Warn,
                format!("added columns to {target}: {}", names.join(", ")),
            ));
            existing = self.backend.table_columns().await?.unwrap_or_default();
        }
        if self.settings().mode == WriteMode::Upsert {
            self.backend.check_upsert_key().await?;
        }
        let plan = Arc::new(self.backend.plan(columns, &existing).await?);
        self.plans.insert(layout, plan.clone());
        Ok(plan)
    }

    /// One transaction, bounded in time (the node's `timeouts.request`).
    async fn write_timed(&self, plan: &B::Plan, job: &Job<'_>) -> Result<usize, Failure> {
        match tokio::time::timeout(self.write_timeout, self.backend.write(plan, job)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Fatal(self.backend.endpoint().error(
                ErrorClass::Dependency,
                format!(
                    "writing {} rows to {} took longer than {:?} (the node's `timeouts.request`: raise it if writes need longer); the write can be retried: the ledger keeps it from being applied twice",
                    job.entries.iter().map(|e| e.rows).sum::<i64>(),
                    self.backend.endpoint().describe(),
                    self.write_timeout
                ),
            ))),
        }
    }

    /// One transaction, retried on deadlocks and busy databases, bounded in time.
    async fn write_once(&mut self, plan: &B::Plan, job: &Job<'_>) -> Result<usize, Failure> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.write_timed(plan, job).await {
                Err(Failure::Conflict(e)) if attempt <= self.lock_retries => {
                    let wait = conflict_backoff(attempt);
                    self.push_event(ConnectorEvent::retried(
                        ErrorClass::Dependency,
                        format!("retried a transaction after {wait:?}: {}", e.message),
                    ));
                    tokio::time::sleep(wait).await;
                }
                Err(Failure::Conflict(mut e)) => {
                    e.message = format!("{} (still failing after {attempt} attempts)", e.message);
                    return Err(Failure::Fatal(e));
                }
                other => return other,
            }
        }
    }

    async fn write_batch(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        let mut columns = types::normalize(&batch.records).map_err(|e| self.contract(e))?;
        self.map_names(&mut columns).await?;
        let plan = self.prepare(&columns).await?;
        let mut report = WriteReport::default();
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(report);
        }
        let (parent, base) = ledger::parent_and_base(batch);
        let truncate_first = self.must_replace().await?;
        let gaps = if truncate_first {
            vec![(0, rows)]
        } else {
            let covered = match self.backend.covered(&parent).await {
                Ok(c) => c,
                Err(f) => return Err(f.into_error()),
            };
            ledger::uncovered(base, rows, &covered)
        };
        if gaps.is_empty() {
            report.duplicate = true;
            return Ok(report);
        }
        let gaps = self.reject_null_keys(batch, &columns, gaps, &mut report);
        let mut budget = self.isolation_budget;
        let mut already = 0usize;
        // Parts to write, last first; each with its offset in `batch`.
        let mut stack: Vec<(Batch, usize)> = gaps
            .iter()
            .rev()
            .map(|&(off, len)| {
                let part = if off == 0 && len == rows {
                    batch.clone()
                } else {
                    batch.slice(off, len)
                };
                (part, off)
            })
            .collect();
        while let Some((part, off)) = stack.pop() {
            let part_columns: Vec<Column> = columns
                .iter()
                .map(|c| c.slice(off, part.num_rows()))
                .collect();
            let part_columns = match self.dedupe(vec![part_columns]) {
                Ok(c) => c,
                Err(e) => return Err(e),
            };
            let entry = Entry::of(&part);
            let load = self.load.clone();
            let truncate = match &load {
                Some(load) if truncate_first && !self.replaced => Some(load.as_str()),
                _ => None,
            };
            let job = Job {
                entries: std::slice::from_ref(&entry),
                parts: &part_columns,
                truncate,
            };
            match self.write_once(&plan, &job).await {
                Ok(n) => {
                    report.written += n;
                    if truncate.is_some() {
                        self.replaced = true;
                    }
                }
                Err(Failure::AlreadyWritten) => already += part.num_rows(),
                Err(Failure::TooLarge(e)) => match part.split() {
                    Some((left, right)) => {
                        self.event(
                            Some(ErrorClass::PayloadTooLarge),
                            format!("split {} rows in halves: {}", part.num_rows(), e.message),
                        );
                        let mid = left.num_rows();
                        stack.push((right, off + mid));
                        stack.push((left, off));
                    }
                    None => {
                        self.event(
                            Some(e.class),
                            format!("rejected a row too large to write: {}", e.message),
                        );
                        report.rejected.push(RejectedRows {
                            rows: part,
                            error: e,
                        });
                    }
                },
                Err(Failure::Rows(e)) => match part.split() {
                    Some((left, right)) if budget > 0 => {
                        budget -= 1;
                        let mid = left.num_rows();
                        stack.push((right, off + mid));
                        stack.push((left, off));
                    }
                    _ => {
                        self.event(
                            Some(e.class),
                            format!(
                                "rejected {} row(s) the database refused: {}",
                                part.num_rows(),
                                e.message
                            ),
                        );
                        report.rejected.push(RejectedRows {
                            rows: part,
                            error: e,
                        });
                    }
                },
                Err(Failure::Conflict(e)) | Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        if already > 0 && report.written == 0 && report.rejected.is_empty() {
            report.duplicate = true;
        }
        Ok(report)
    }

    /// Several batches in one transaction (see [`Sink::write_group`]): one COPY or one set
    /// of statements for all their rows, one ledger row each, one commit. Only when it is
    /// plain: every batch new to the ledger, of one column layout, with whole keys;
    /// anything else is `Err`, and the engine writes the batches one by one, which deals
    /// with each case. A failed group rejects nothing: the writes one by one do.
    async fn write_grouped(
        &mut self,
        batches: &[Batch],
    ) -> Result<Vec<Option<WriteReport>>, ConnectorError> {
        let not_now = |why: &str| {
            ConnectorError::new(
                ErrorClass::Internal,
                format!("not written as one group: {why}"),
            )
        };
        let mut parts: Vec<Vec<Column>> = Vec::with_capacity(batches.len());
        for batch in batches {
            if batch.num_rows() == 0 {
                return Err(not_now("an empty batch"));
            }
            let mut columns = types::normalize(&batch.records).map_err(|e| self.contract(e))?;
            self.map_names(&mut columns).await?;
            if parts
                .first()
                .is_some_and(|first| layout_key(first) != layout_key(&columns))
            {
                return Err(not_now("batches of different column layouts"));
            }
            let s = self.settings();
            if columns
                .iter()
                .any(|c| s.is_key(&c.name) && c.array.null_count() > 0)
            {
                return Err(not_now("a row without its key"));
            }
            parts.push(columns);
        }
        let plan = self.prepare(&parts[0]).await?;
        let places: Vec<(String, usize)> = batches.iter().map(ledger::parent_and_base).collect();
        let parents: Vec<&str> = places.iter().map(|(parent, _)| parent.as_str()).collect();
        let covered = self
            .backend
            .covered_all(&parents)
            .await
            .map_err(Failure::into_error)?;
        for ((batch, (_, base)), covered) in batches.iter().zip(&places).zip(&covered) {
            if ledger::uncovered(*base, batch.num_rows(), covered) != [(0, batch.num_rows())] {
                return Err(not_now("a batch written before"));
            }
        }
        let entries: Vec<Entry> = batches.iter().map(Entry::of).collect();
        // One job, or two written at once (each with its batches' ledger rows), their
        // rows less repeated keys (an upsert writes the last of them).
        let n = batches.len();
        // (first batch, end) of each job.
        let cuts: Vec<(usize, usize)> = match self.halves(&parts)? {
            Some(at) => vec![(0, at), (at, n)],
            None => vec![(0, n)],
        };
        let mut kept = Vec::with_capacity(cuts.len());
        for &(from, to) in &cuts {
            kept.push(self.dedupe(parts[from..to].to_vec())?);
        }
        // What each batch alone would write: its rows, less its own repeated keys.
        let rows: usize = batches.iter().map(Batch::num_rows).sum();
        let all_kept = kept.iter().map(|k| rows_of(k)).sum::<usize>() == rows;
        let mut written = Vec::with_capacity(n);
        for part in parts {
            let part = vec![part];
            written.push(rows_of(&if all_kept { part } else { self.dedupe(part)? }));
        }
        let jobs: Vec<Job<'_>> = cuts
            .iter()
            .zip(&kept)
            .map(|(&(from, to), kept)| Job {
                entries: &entries[from..to],
                parts: kept,
                truncate: None,
            })
            .collect();
        let report = |written| {
            Some(WriteReport {
                written,
                ..WriteReport::default()
            })
        };
        if let [a, b] = jobs.as_slice() {
            // No retry of a half here: one that failed is handed back, to be written
            // batch by batch (`write`), which retries, splits and rejects by class.
            let (ra, rb) = tokio::join!(self.write_timed(&plan, a), self.write_timed(&plan, b));
            if let (Err(ea), Err(_)) = (&ra, &rb) {
                tracing::debug!(target: "sluice::sql", error = ?ea, "both halves of a group failed");
                return Err(not_now("both halves of the group failed"));
            }
            let at = cuts[1].0;
            return Ok(written
                .into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let done = if i < at { ra.is_ok() } else { rb.is_ok() };
                    if done { report(n) } else { None }
                })
                .collect());
        }
        match self.write_once(&plan, &jobs[0]).await {
            Ok(_) => Ok(written.into_iter().map(report).collect()),
            Err(Failure::AlreadyWritten) => Err(not_now("a batch written meanwhile")),
            Err(Failure::TooLarge(e) | Failure::Rows(e)) => Err(not_now(&e.message)),
            Err(Failure::Conflict(e) | Failure::Fatal(e)) => Err(e),
        }
    }

    /// Where a group's parts are cut in two to be written on two connections at once
    /// (two transactions), or `None` for one transaction: one writer (SQLite, or
    /// `max_connections: 1`), a group too small to gain by it (under [`TWO_WRITERS_ROWS`]
    /// rows), or, for `upsert`, a key in both halves (their order would then matter). The
    /// cut is the batch boundary nearest the middle row.
    fn halves(&self, parts: &[Vec<Column>]) -> Result<Option<usize>, ConnectorError> {
        let rows = rows_of(parts);
        if self.writers < 2 || parts.len() < 2 || rows < TWO_WRITERS_ROWS {
            return Ok(None);
        }
        let mut at = 0;
        let mut before = 0;
        while at + 1 < parts.len() {
            let next = before + rows_of(&parts[at..=at]);
            if next > rows / 2 {
                break;
            }
            (before, at) = (next, at + 1);
        }
        let at = at.max(1);
        if self.settings().mode == WriteMode::Upsert && self.share_a_key(parts, at)? {
            return Ok(None);
        }
        Ok(Some(at))
    }

    /// Whether a key of the parts before `at` is also a key of a part from `at` on.
    fn share_a_key(&self, parts: &[Vec<Column>], at: usize) -> Result<bool, ConnectorError> {
        let keys = self.key_rows(parts)?;
        let (before, after) = keys.split_at(at);
        let seen: HashSet<Row<'_>> = before.iter().flat_map(|k| k.iter()).collect();
        Ok(after
            .iter()
            .flat_map(|k| k.iter())
            .any(|key| seen.contains(&key)))
    }

    /// The key columns of each part in arrow's row format (keys compared as bytes), by
    /// one converter: rows of different parts compare.
    fn key_rows(&self, parts: &[Vec<Column>]) -> Result<Vec<Rows>, ConnectorError> {
        let s = self.settings();
        let key_arrays = |part: &[Column]| -> Vec<ArrayRef> {
            part.iter()
                .filter(|c| s.is_key(&c.name))
                .map(|c| c.array.clone())
                .collect()
        };
        let Some(first) = parts.first() else {
            return Ok(Vec::new());
        };
        let fields = key_arrays(first)
            .iter()
            .map(|a| SortField::new(a.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(key_error)?;
        parts
            .iter()
            .map(|part| converter.convert_columns(&key_arrays(part)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(key_error)
    }

    /// `replace`: whether this write must empty the table first: the first write of a
    /// load the ledger does not hold yet. Never in a replay (no load), never twice for a
    /// load (its row is committed with the emptying; a resumed run finds it).
    async fn must_replace(&mut self) -> Result<bool, ConnectorError> {
        if self.settings().mode != WriteMode::Replace || self.replaced {
            return Ok(false);
        }
        let Some(load) = self.load.clone() else {
            return Ok(false);
        };
        let current = self
            .backend
            .current_load()
            .await
            .map_err(Failure::into_error)?;
        if current.as_deref() == Some(load.as_str()) {
            self.replaced = true;
            return Ok(false);
        }
        Ok(true)
    }

    /// Rows whose key (a column of `key`) is NULL cannot be keyed: the database would
    /// refuse them, or worse (SQLite makes a NULL `INTEGER PRIMARY KEY` a new rowid, and
    /// an upsert's de-duplication would take NULLs for one key). They are rejected with
    /// `invalid_request`; returns the parts of `gaps` left to write.
    fn reject_null_keys(
        &mut self,
        batch: &Batch,
        columns: &[Column],
        gaps: Vec<(usize, usize)>,
        report: &mut WriteReport,
    ) -> Vec<(usize, usize)> {
        let s = self.settings();
        let keys: Vec<&Column> = columns.iter().filter(|c| s.is_key(&c.name)).collect();
        if keys.iter().all(|c| c.array.null_count() == 0) {
            return gaps;
        }
        let names: Vec<&str> = s.key.iter().map(String::as_str).collect();
        let null_key = |row: usize| keys.iter().any(|c| c.array.is_null(row));
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (off, len) in gaps {
            let mut at = off;
            while at < off + len {
                let is_bad = null_key(at);
                let start = at;
                while at < off + len && null_key(at) == is_bad {
                    at += 1;
                }
                if is_bad {
                    bad.push((start, at - start));
                } else {
                    good.push((start, at - start));
                }
            }
        }
        let rows: usize = bad.iter().map(|(_, n)| n).sum();
        let message = format!(
            "{rows} row(s) have no value in the key column(s) {}: a row needs its whole key to be written (the key is the table's primary key); fill it in the source or a transform, then `sluice replay`",
            names.join(", ")
        );
        for (off, len) in bad {
            report.rejected.push(RejectedRows {
                rows: batch.slice(off, len),
                error: self
                    .backend
                    .endpoint()
                    .error(ErrorClass::InvalidRequest, message.clone()),
            });
        }
        self.event(
            Some(ErrorClass::InvalidRequest),
            format!("rejected {message}"),
        );
        good
    }

    /// `upsert`: keeps the last row of each key across the parts (in their order), so that
    /// one statement never touches a row twice (PostgreSQL refuses that). Other modes:
    /// unchanged. A part that keeps every row is not copied.
    fn dedupe(&self, parts: Vec<Vec<Column>>) -> Result<Vec<Vec<Column>>, ConnectorError> {
        let s = self.settings();
        if s.mode != WriteMode::Upsert || rows_of(&parts) < 2 {
            return Ok(parts);
        }
        let keys = self.key_rows(&parts)?;
        // Sort (part, row) by key (byte comparisons of the row format), then by place, and
        // keep the last of each run of equal keys.
        let row = |&(p, r): &(u32, u32)| keys[p as usize].row(r as usize);
        let mut order: Vec<(u32, u32)> = keys
            .iter()
            .enumerate()
            .flat_map(|(p, k)| (0..k.num_rows() as u32).map(move |r| (p as u32, r)))
            .collect();
        order.sort_unstable_by(|a, b| row(a).cmp(&row(b)).then(a.cmp(b)));
        let mut keep: Vec<Vec<u32>> = vec![Vec::new(); parts.len()];
        for (i, at) in order.iter().enumerate() {
            if order.get(i + 1).is_none_or(|next| row(next) != row(at)) {
                keep[at.0 as usize].push(at.1);
            }
        }
        parts
            .into_iter()
            .zip(keep)
            .map(|(part, mut keep)| {
                if keep.len() == part.first().map_or(0, |c| c.array.len()) {
                    return Ok(part);
                }
                keep.sort_unstable();
                let indices = UInt32Array::from(keep);
                part.into_iter()
                    .map(|c| {
                        let array = arrow::compute::take(c.array.as_ref(), &indices, None)
                            .map_err(key_error)?;
                        Ok(Column { array, ..c })
                    })
                    .collect()
            })
            .collect()
    }
}

/// A failure of arrow's key comparison (a key column of a type it cannot order).
fn key_error(e: arrow::error::ArrowError) -> ConnectorError {
    ConnectorError::new(
        ErrorClass::Internal,
        format!("cannot compare the key columns: {e}"),
    )
}

/// The rows of parts of one column layout.
pub(crate) fn rows_of(parts: &[Vec<Column>]) -> usize {
    parts
        .iter()
        .map(|p| p.first().map_or(0, |c| c.array.len()))
        .sum()
}

/// About how many rows a group write takes (see [`Sink::write_group`]): ten pages of a
/// typical API. Enough to spread a transaction's fixed costs (the ledger lookups, the
/// staging table, the commit's flush) thin; small enough to hold in memory twice.
const GROUP_ROWS: usize = 10_000;

/// Groups of at least this many rows are written on two connections at once (two
/// transactions, each half's batches with their ledger rows): the database does the
/// work of both on two cores. Each half is then worth a `COPY` (PostgreSQL's
/// `COPY_MIN_ROWS`).
const TWO_WRITERS_ROWS: usize = 2_000;

/// A key for a column layout: names and kinds.
fn layout_key(columns: &[Column]) -> String {
    let mut key = String::new();
    for c in columns {
        key.push_str(&c.name);
        key.push('\u{1f}');
        key.push_str(&format!("{:?}", kind_family(c.kind)));
        key.push('\u{1e}');
    }
    key
}

/// The part of a kind that matters for a plan (timestamps of any unit share one).
fn kind_family(kind: Kind) -> Kind {
    match kind {
        Kind::Timestamp { tz, .. } => Kind::Timestamp {
            unit: arrow::datatypes::TimeUnit::Microsecond,
            tz,
        },
        k => k,
    }
}

/// The wait before retrying a transaction that met a deadlock: 50 ms doubling, with jitter.
fn conflict_backoff(attempt: u32) -> Duration {
    let cap = 50u64 << attempt.min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(cap / 2 + nanos % (cap / 2 + 1))
}

#[async_trait]
impl<B: Backend> Sink for SqlSink<B> {
    async fn write(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        if self.suspect
            && let Some(e) = db::refused(self.backend.endpoint()).await
        {
            return Err(e);
        }
        let result = match self.write_batch(batch).await {
            Err(e) if e.class == ErrorClass::ContractChanged && !self.plans.is_empty() => {
                // The table may have changed under us (dropped, altered): look again once.
                self.plans.clear();
                self.ledger_ready = false;
                self.write_batch(batch).await
            }
            other => other,
        };
        self.suspect = matches!(&result, Err(e) if e.class == ErrorClass::Dependency);
        result
    }

    fn group_rows(&self) -> usize {
        match self.settings().mode {
            // Its first write empties the table, once per load: one batch at a time.
            WriteMode::Replace => 0,
            WriteMode::Append | WriteMode::Upsert => GROUP_ROWS,
        }
    }

    async fn write_group(
        &mut self,
        batches: &[Batch],
    ) -> Result<Vec<Option<WriteReport>>, ConnectorError> {
        if self.suspect {
            return Err(ConnectorError::new(
                ErrorClass::Dependency,
                "the database failed the last write: one batch at a time until one succeeds",
            ));
        }
        self.write_grouped(batches).await
    }

    async fn health(&self) -> Result<Duration, ConnectorError> {
        self.backend.health().await
    }

    fn begin_run(&mut self, run: &RunInfo) -> Result<(), ConnectorError> {
        self.load = run.load.clone();
        self.replaced = false;
        self.reported.clear();
        Ok(())
    }

    fn use_name_book(&mut self, book: Arc<dyn NameBook>) {
        self.book = Some(book);
        self.names = None;
        self.reported.clear();
    }

    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        std::mem::take(&mut self.events)
    }
}
