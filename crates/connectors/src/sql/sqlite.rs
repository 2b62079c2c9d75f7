//! SQLite: multi-row `INSERT … [ON CONFLICT (key) DO UPDATE]` statements under SQLite's
//! 32,766-variable limit, in one `BEGIN IMMEDIATE` transaction with the ledger row.

use super::config::{Dialect, SqlSinkConfig, WriteMode};
use super::db::{self, Conn, ConnOps};
use super::error::{Endpoint, Failure};
use super::ident::{quote, quote_list};
use super::multirow::{self, InsertSql, Limits, Plan};
use super::sink::{Backend, Job, Settings, TableColumn};
use super::types::{self, Column, Kind, Value};
use async_trait::async_trait;
use sluice_core::ConnectorError;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Arguments, SqliteConnection};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` since 3.32.
const MAX_VARIABLES: usize = 32_766;
/// Rows per statement unless configured.
const DEFAULT_ROWS: usize = 1_000;

pub(crate) struct SqliteBackend {
    conn: Conn<sqlx::Sqlite>,
}

/// Connection options to write (WAL journal) and the endpoint of a SQLite URL; whether
/// it is in memory.
pub(crate) fn options(
    url: &sluice_core::Secret,
    timeout: Duration,
) -> Result<(SqliteConnectOptions, Endpoint, bool), ConnectorError> {
    let (options, endpoint, memory) = read_options(url, timeout)?;
    let options = if memory {
        options.create_if_missing(true)
    } else {
        options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
    };
    Ok((options, endpoint, memory))
}

/// Connection options to read: the file's journal mode is left as it is (switching it
/// needs write access, which a reader may not have), and a missing file is an error.
pub(crate) fn read_options(
    url: &sluice_core::Secret,
    timeout: Duration,
) -> Result<(SqliteConnectOptions, Endpoint, bool), ConnectorError> {
    let provisional = Endpoint::new(Dialect::Sqlite, "?".into(), url, timeout);
    let memory = url.expose().contains(":memory:") || url.expose().contains("mode=memory");
    let options = SqliteConnectOptions::from_str(url.expose())
        .map_err(|e| provisional.fatal(e, "reading the url"))?
        .busy_timeout(Duration::from_secs(5));
    let address = options.get_filename().display().to_string();
    Ok((
        options,
        Endpoint::new(Dialect::Sqlite, address, url, timeout),
        memory,
    ))
}

impl SqliteBackend {
    pub(crate) fn new(config: &SqlSinkConfig) -> Result<SqliteBackend, ConnectorError> {
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let (options, endpoint, memory) = options(&config.url, timeout)?;
        // An in-memory database lives as long as its one connection.
        let pool = if memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(config.max_connections)
        }
        .acquire_timeout(timeout)
        .connect_lazy_with(options.clone());
        Ok(SqliteBackend {
            conn: Conn {
                pool,
                options,
                endpoint,
                settings: Settings::from_config(config, Dialect::Sqlite),
            },
        })
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn conn(&self) -> &dyn ConnOps {
        &self.conn
    }

    fn conn_mut(&mut self) -> &mut dyn ConnOps {
        &mut self.conn
    }

    type Plan = Plan;

    async fn table_columns(&self) -> Result<Option<Vec<TableColumn>>, ConnectorError> {
        let table = &self.conn.settings.table;
        let query = match &table.schema {
            Some(schema) => sqlx::query_as("SELECT name, type FROM pragma_table_info(?, ?)")
                .bind(&table.table)
                .bind(schema),
            None => {
                sqlx::query_as("SELECT name, type FROM pragma_table_info(?)").bind(&table.table)
            }
        };
        let rows: Vec<(String, String)> = query
            .fetch_all(&self.conn.pool)
            .await
            .map_err(|e| self.conn.endpoint.fatal(e, "reading the table's columns"))?;
        Ok((!rows.is_empty()).then(|| {
            rows.into_iter()
                .map(|(name, sql_type)| TableColumn { name, sql_type })
                .collect()
        }))
    }

    async fn plan(
        &self,
        columns: &[Column],
        _table: &[TableColumn],
    ) -> Result<Plan, ConnectorError> {
        let d = Dialect::Sqlite;
        let names = quote_list(d, columns.iter().map(|c| c.name.as_str()));
        let suffix = if self.conn.settings.mode == WriteMode::Upsert {
            let keys = quote_list(d, self.conn.settings.key.iter().map(String::as_str));
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !self.conn.settings.is_key(&c.name))
                .map(|c| format!("{0} = excluded.{0}", quote(d, &c.name)))
                .collect();
            if updates.is_empty() {
                format!(" ON CONFLICT ({keys}) DO NOTHING")
            } else {
                format!(" ON CONFLICT ({keys}) DO UPDATE SET {}", updates.join(", "))
            }
        } else {
            String::new()
        };
        Ok(Plan {
            insert: InsertSql::new(
                format!("INSERT INTO {} ({names}) VALUES ", self.conn.table()),
                columns.len(),
                suffix,
            ),
            kinds: columns.iter().map(|c| c.kind).collect(),
            limits: Limits {
                max_rows: self.conn.settings.max_rows.unwrap_or(DEFAULT_ROWS),
                max_params: MAX_VARIABLES,
                max_bytes: self.conn.settings.max_bytes.unwrap_or(usize::MAX),
            },
            truncate: format!("DELETE FROM {}", self.conn.table()),
        })
    }

    async fn write(&self, plan: &Plan, job: &Job<'_>) -> Result<usize, Failure> {
        let tx = self
            .conn
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.conn.endpoint.classify(e, "starting a transaction"))?;
        multirow::write::<sqlx::Sqlite>(
            tx,
            &self.conn.endpoint,
            &self.conn.settings,
            plan,
            job,
            bind,
        )
        .await
    }

    async fn health(&self) -> Result<Duration, ConnectorError> {
        // An in-memory database exists only in the pool's one connection.
        if self
            .conn
            .options
            .get_filename()
            .to_string_lossy()
            .contains(":memory:")
        {
            let started = Instant::now();
            db::execute(
                &self.conn.pool,
                &self.conn.endpoint,
                "SELECT 1".into(),
                "checking health",
            )
            .await?;
            return Ok(started.elapsed());
        }
        db::health::<SqliteConnection>(&self.conn.options, &self.conn.endpoint).await
    }
}

fn bind(args: &mut SqliteArguments, value: Value<'_>, kind: Kind) -> Result<(), String> {
    let r = match value {
        Value::Null => args.add(None::<i64>),
        Value::Bool(v) => args.add(v),
        Value::Int(v) => args.add(v),
        Value::UInt(v) => {
            let v = i64::try_from(v)
                .map_err(|_| format!("{v} does not fit SQLite's 64-bit INTEGER"))?;
            args.add(v)
        }
        Value::F32(v) => args.add(f64::from(v)),
        Value::F64(v) => args.add(v),
        Value::Str(v) => args.add(v.to_owned()),
        Value::String(v) => args.add(v),
        Value::Bytes(v) => args.add(v.to_vec()),
        Value::Date(v) => args.add(types::sqlite_date(v)),
        Value::DateTime(v) => {
            let tz = matches!(kind, Kind::Timestamp { tz: true, .. });
            args.add(types::sqlite_datetime(v, tz))
        }
        Value::Time(v) => args.add(types::sqlite_time(v)),
    };
    r.map_err(|e| e.to_string())
}
