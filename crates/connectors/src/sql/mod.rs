//! SQL sinks (PostgreSQL, MySQL/MariaDB, SQLite) with idempotent writes, and the
//! incremental SQL source.
//!
//! A sink writes every batch in one transaction together with a row of its ledger table
//! (`_sluice_ledger`), so a redelivered batch is skipped: effectively-once into the
//! database. Modes: `append`, `upsert` (by key columns), `replace`. Tables are created
//! from the Arrow schema when missing and extended when the schema policy says `evolve`.
//! PostgreSQL loads with binary `COPY`; MySQL and SQLite with multi-row `INSERT`s cut
//! under the engine's limits. A batch too large for a statement is split; rows the
//! database refuses are isolated by bisection and returned as rejected, the rest written.
//!
//! ```no_run
//! # async fn demo(batch: sluice_core::Batch) -> Result<(), sluice_core::ConnectorError> {
//! use sluice_connectors::sql::{build_sink, SqlSinkConfig, WriteMode};
//! let mut config = SqlSinkConfig::new("postgres://sluice:sluice@127.0.0.1:5432/sluice", "orders");
//! config.mode = WriteMode::Upsert;
//! config.key = vec!["id".into()];
//! let mut sink = build_sink(config).await?;
//! let report = sink.write(&batch).await?;
//! assert!(!report.duplicate);
//! # Ok(()) }
//! ```
//!
//! The source runs a query with a `:watermark` parameter and streams the result into
//! Arrow batches; its checkpoint is the watermark column's value on the last row.

mod config;
mod db;
pub(crate) mod doctor;
mod error;
mod ident;
mod kind;
pub(crate) mod ledger;
mod multirow;
mod mysql;
mod postgres;
mod reconcile;
mod sink;
mod source;
pub mod spec;
mod sqlite;
mod types;

#[cfg(test)]
mod tests;

pub(crate) use config::Dialect;
pub use config::{SchemaPolicy, SqlSinkConfig, SqlSourceConfig, WatermarkConfig, WriteMode};
pub(crate) use error::statement_class;
pub(crate) use kind::database_link;
pub use kind::{MYSQL, POSTGRES, SQLITE, SqlKind};

use sluice_core::{ConnectorError, Sink, Source};

/// Builds the sink a config describes: PostgreSQL, MySQL/MariaDB or SQLite by the URL's
/// scheme. Validates the config first; opens no connection (the first write or health
/// check does), so a database that is down shows as a `dependency` error on write.
/// Must be called inside a tokio runtime.
pub async fn build_sink(config: SqlSinkConfig) -> Result<Box<dyn Sink>, ConnectorError> {
    config.validate()?;
    let dialect = Dialect::from_url(config.url.expose())
        .map_err(|e| ConnectorError::new(sluice_core::ErrorClass::InvalidRequest, e))?;
    Ok(match dialect {
        Dialect::Postgres => Box::new(sink::SqlSink::new(
            postgres::PgBackend::new(&config)?,
            &config,
        )),
        Dialect::Mysql => Box::new(sink::SqlSink::new(
            mysql::MysqlBackend::new(&config)?,
            &config,
        )),
        Dialect::Sqlite => Box::new(sink::SqlSink::new(
            sqlite::SqliteBackend::new(&config)?,
            &config,
        )),
    })
}

/// Builds the source a config describes, for node `node` of `pipeline` (they go into the
/// batch ids). `checkpoint` is the last one the engine stored (`{"watermark": …}`), or
/// `None` on the first run. Opens no connection until the first `next_batch`.
pub async fn build_source(
    config: SqlSourceConfig,
    pipeline: &str,
    node: &str,
    checkpoint: Option<serde_json::Value>,
) -> Result<Box<dyn Source>, ConnectorError> {
    config.validate()?;
    Ok(Box::new(source::SqlSource::new(
        config, pipeline, node, checkpoint,
    )?))
}
