//! What the three backends do alike, generic over the sqlx database: plain statements,
//! the ledger's reads and writes, the start of a write transaction, health checks.

use super::config::Dialect;
use super::error::{Endpoint, Failure, ledger_failure};
use super::ledger::{Entry, LEDGER_ROWS_PER_STATEMENT, LOAD_PARENT};
use super::sink::Settings;
use async_trait::async_trait;
use sluice_core::ConnectorError;
use sqlx::{AssertSqlSafe, Connection, Database, Encode, Executor, IntoArguments, Pool, Type};
use std::time::{Duration, Instant};

/// Runs one statement without parameters (DDL).
pub(crate) async fn execute<DB>(
    pool: &Pool<DB>,
    ep: &Endpoint,
    sql: String,
    doing: &str,
) -> Result<(), ConnectorError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    pool.execute(AssertSqlSafe(sql))
        .await
        .map(|_| ())
        .map_err(|e| ep.fatal(e, doing))
}

/// The `(first_row, rows)` ranges the ledger holds for each batch of `parents` (in their
/// order), in one statement per [`LEDGER_ROWS_PER_STATEMENT`] of them: a group's batches
/// are looked up at once.
pub(crate) async fn covered_all<DB>(
    pool: &Pool<DB>,
    ep: &Endpoint,
    settings: &Settings,
    parents: &[&str],
) -> Result<Vec<Vec<(i64, i64)>>, Failure>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'r> (String, i64, i64): sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut ranges: std::collections::HashMap<&str, Vec<(i64, i64)>> =
        parents.iter().map(|p| (*p, Vec::new())).collect();
    let mut distinct: Vec<&str> = ranges.keys().copied().collect();
    distinct.sort_unstable();
    for chunk in distinct.chunks(LEDGER_ROWS_PER_STATEMENT) {
        let sql = settings.ledger.covered_of(chunk.len());
        let mut query =
            sqlx::query_as::<DB, (String, i64, i64)>(AssertSqlSafe(sql)).bind(settings.target());
        for parent in chunk {
            query = query.bind((*parent).to_owned());
        }
        let rows = query
            .fetch_all(pool)
            .await
            .map_err(|e| ep.classify(e, "reading the ledger"))?;
        for (parent, first_row, rows) in rows {
            if let Some(r) = ranges.get_mut(parent.as_str()) {
                r.push((first_row, rows));
            }
        }
    }
    Ok(parents
        .iter()
        .map(|p| ranges.get(p).cloned().unwrap_or_default())
        .collect())
}

/// The load whose `replace` last emptied the table (its ledger's load row), if any.
pub(crate) async fn current_load<DB>(
    pool: &Pool<DB>,
    ep: &Endpoint,
    settings: &Settings,
) -> Result<Option<String>, Failure>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
    DB::Arguments: IntoArguments<DB>,
{
    let rows: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(settings.ledger.load.clone()))
        .bind(settings.target())
        .bind(LOAD_PARENT.to_owned())
        .fetch_all(pool)
        .await
        .map_err(|e| ep.classify(e, "reading the ledger"))?;
    Ok(rows.into_iter().next().map(|(load,)| load))
}

/// The start of every write transaction: for the first batch of a load in `replace`
/// (`truncate`: the statement that empties the table, and the load), empty the table and
/// this target's ledger rows and record the load, so that the load empties it only once
/// whatever happens after the commit; then insert the ledger rows (first, so that a
/// concurrent writer of the same batch waits on them and then finds them).
pub(crate) async fn begin_write<DB>(
    conn: &mut DB::Connection,
    ep: &Endpoint,
    settings: &Settings,
    entries: &[Entry],
    truncate: Option<(&str, &str)>,
) -> Result<(), Failure>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let Some(first) = entries.first() else {
        return Ok(());
    };
    if let Some((truncate, load)) = truncate {
        sqlx::query(AssertSqlSafe(settings.ledger.clear.clone()))
            .bind(settings.target())
            .execute(&mut *conn)
            .await
            .map_err(|e| ep.classify(e, "clearing the ledger for replace"))?;
        conn.execute(AssertSqlSafe(truncate.to_owned()))
            .await
            .map_err(|e| ep.classify(e, "emptying the table for replace"))?;
        sqlx::query(AssertSqlSafe(settings.ledger.insert_of(1)))
            .bind(settings.target())
            .bind(load.to_owned())
            .bind(LOAD_PARENT.to_owned())
            .bind(0i64)
            .bind(0i64)
            .bind(first.pipeline.clone())
            .bind(first.node.clone())
            .execute(&mut *conn)
            .await
            .map_err(|e| ep.classify(e, "recording the load for replace"))?;
    }
    // One statement for a group's ledger rows (a round trip each would add up).
    for chunk in entries.chunks(LEDGER_ROWS_PER_STATEMENT) {
        let mut query = sqlx::query(AssertSqlSafe(settings.ledger.insert_of(chunk.len())));
        for entry in chunk {
            query = query
                .bind(settings.target())
                .bind(entry.key.clone())
                .bind(entry.parent.clone())
                .bind(entry.first_row)
                .bind(entry.rows)
                .bind(entry.pipeline.clone())
                .bind(entry.node.clone());
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(|e| ledger_failure(ep, e))?;
    }
    Ok(())
}

/// Opens a new connection, runs `SELECT 1`, closes it; the time it took.
pub(crate) async fn health<C>(
    options: &C::Options,
    ep: &Endpoint,
) -> Result<Duration, ConnectorError>
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
{
    let started = Instant::now();
    let mut conn = match tokio::time::timeout(ep.connect_timeout, C::connect_with(options)).await {
        Ok(c) => c.map_err(|e| ep.fatal(e, "checking health"))?,
        Err(_) => return Err(ep.fatal(sqlx::Error::PoolTimedOut, "checking health")),
    };
    conn.execute("SELECT 1")
        .await
        .map_err(|e| ep.fatal(e, "checking health"))?;
    let took = started.elapsed();
    let _ = conn.close().await;
    Ok(took)
}

/// The error of a server that refuses TCP connections right now, if it does: a quick look
/// taken before a write that follows a failed one. sqlx's pool retries a refused connect
/// until its acquire timeout (the whole connect timeout, 10 s by default) on every
/// attempt, so without it each batch of a run whose database is down would wait that long
/// before being kept for replay. SQLite files and Unix sockets are not checked.
pub(crate) async fn refused(ep: &Endpoint) -> Option<ConnectorError> {
    if ep.dialect == Dialect::Sqlite || ep.address.starts_with('/') {
        return None;
    }
    let connect = tokio::net::TcpStream::connect(ep.address.as_str());
    match tokio::time::timeout(ep.connect_timeout, connect).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Some(ep.fatal(sqlx::Error::Io(e), "connecting"))
        }
        _ => None,
    }
}

/// What every backend holds: its pool, the options it connects with (health checks open a
/// connection of their own), where it writes (for messages) and the table's settings.
pub(crate) struct Conn<DB: Database> {
    pub(crate) pool: Pool<DB>,
    pub(crate) options: <DB::Connection as Connection>::Options,
    pub(crate) endpoint: Endpoint,
    pub(crate) settings: Settings,
}

impl<DB: Database> Conn<DB> {
    /// The target table, quoted for this engine.
    pub(crate) fn table(&self) -> String {
        self.settings.table.sql(self.endpoint.dialect)
    }
}

/// What the three engines do alike through their [`Conn`], as the sink's `Backend` asks
/// for it (an object, so that the trait's provided methods need no sqlx bounds).
#[async_trait]
pub(crate) trait ConnOps: Send + Sync {
    fn endpoint(&self) -> &Endpoint;
    fn settings(&self) -> &Settings;
    fn settings_mut(&mut self) -> &mut Settings;
    async fn execute(&self, sql: String, doing: &str) -> Result<(), ConnectorError>;
    /// The `(first_row, rows)` ranges the ledger holds for the batch `parent`.
    async fn covered(&self, parent: &str) -> Result<Vec<(i64, i64)>, Failure> {
        Ok(self.covered_all(&[parent]).await?.pop().unwrap_or_default())
    }
    /// [`ConnOps::covered`] of several parents, in their order, in one lookup.
    async fn covered_all(&self, parents: &[&str]) -> Result<Vec<Vec<(i64, i64)>>, Failure>;
    async fn current_load(&self) -> Result<Option<String>, Failure>;
    async fn health(&self) -> Result<Duration, ConnectorError>;
}

#[async_trait]
impl<DB> ConnOps for Conn<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'r> (String, i64, i64): sqlx::FromRow<'r, DB::Row>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
    for<'q> DB::Arguments: IntoArguments<DB>,
{
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    async fn execute(&self, sql: String, doing: &str) -> Result<(), ConnectorError> {
        execute(&self.pool, &self.endpoint, sql, doing).await
    }

    async fn covered_all(&self, parents: &[&str]) -> Result<Vec<Vec<(i64, i64)>>, Failure> {
        covered_all(&self.pool, &self.endpoint, &self.settings, parents).await
    }

    async fn current_load(&self) -> Result<Option<String>, Failure> {
        current_load(&self.pool, &self.endpoint, &self.settings).await
    }

    async fn health(&self) -> Result<Duration, ConnectorError> {
        health::<DB::Connection>(&self.options, &self.endpoint).await
    }
}
