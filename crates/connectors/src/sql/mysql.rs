//! MySQL and MariaDB: multi-row `INSERT … [ON DUPLICATE KEY UPDATE]` statements, cut
//! under the server's `max_allowed_packet` and the 65,535-placeholder limit, in one
//! transaction with the ledger row. Sessions run in strict SQL mode, so a bad value is an
//! error rather than a silent truncation.

use super::config::{Dialect, SqlSinkConfig, WriteMode};
use super::db::{Conn, ConnOps};
use super::error::{Endpoint, Failure};
use super::ident::{quote, quote_list};
use super::multirow::{self, InsertSql, Limits, Plan};
use super::sink::{Backend, Job, Settings, TableColumn};
use super::types::{Column, Kind, Value};
use async_trait::async_trait;
use sluice_core::{ConnectorError, ErrorClass};
use sqlx::mysql::{MySqlArguments, MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Arguments, AssertSqlSafe, Executor};
use std::str::FromStr;
use std::time::Duration;

/// The most placeholders one prepared statement may hold.
const MAX_PLACEHOLDERS: usize = 65_535;
/// Rows per statement unless configured.
const DEFAULT_ROWS: usize = 1_000;
/// Statement text and protocol headers around the values, kept free in each packet.
const PACKET_MARGIN: usize = 4_096;

const STRICT: &str =
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')";

/// Asks the server to end a session left idle inside a transaction (a writer paused
/// mid-transaction holds its batch's ledger rows, which another process writing the same
/// batch waits on) after [`sluice_core::IDLE_IN_TRANSACTION`]: MariaDB's
/// `idle_transaction_timeout`. MySQL has no such variable (error 1193); there the other
/// writer's wait ends at `innodb_lock_wait_timeout` and its write is retried.
async fn end_idle_transactions(conn: &mut sqlx::MySqlConnection) -> Result<(), sqlx::Error> {
    let seconds = sluice_core::IDLE_IN_TRANSACTION.as_secs();
    let set = format!("SET SESSION idle_transaction_timeout = {seconds}");
    match conn.execute(AssertSqlSafe(set)).await {
        Err(sqlx::Error::Database(e))
            if super::error::mysql_number(e.as_ref()) == Some(UNKNOWN_SYSTEM_VARIABLE) =>
        {
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

/// MySQL's error number for `SET` of a variable the server does not have.
const UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

pub(crate) struct MysqlBackend {
    conn: Conn<sqlx::MySql>,
}

/// Connection options and the endpoint of a MySQL URL (`mariadb://` is accepted too).
pub(crate) fn options(
    url: &sluice_core::Secret,
    connect_timeout: Duration,
) -> Result<(MySqlConnectOptions, Endpoint), ConnectorError> {
    let provisional = Endpoint::new(Dialect::Mysql, "?".into(), url, connect_timeout);
    let text = url.expose();
    let text = match text.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => text.to_owned(),
    };
    let options = MySqlConnectOptions::from_str(&text)
        .map_err(|e| provisional.fatal(e, "reading the url"))?;
    let address = format!("{}:{}", options.get_host(), options.get_port());
    Ok((
        options,
        Endpoint::new(Dialect::Mysql, address, url, connect_timeout),
    ))
}

impl MysqlBackend {
    /// The sink's connections (tests take one to play a paused writer).
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &sqlx::MySqlPool {
        &self.conn.pool
    }

    pub(crate) fn new(config: &SqlSinkConfig) -> Result<MysqlBackend, ConnectorError> {
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let (options, endpoint) = options(&config.url, timeout)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(STRICT).await?;
                    end_idle_transactions(conn).await
                })
            })
            .connect_lazy_with(options.clone());
        Ok(MysqlBackend {
            conn: Conn {
                pool,
                options,
                endpoint,
                settings: Settings::from_config(config, Dialect::Mysql),
            },
        })
    }

    fn schema(&self) -> Option<String> {
        self.conn.settings.table.schema.clone()
    }
}

#[async_trait]
impl Backend for MysqlBackend {
    fn conn(&self) -> &dyn ConnOps {
        &self.conn
    }

    fn conn_mut(&mut self) -> &mut dyn ConnOps {
        &mut self.conn
    }

    type Plan = Plan;

    async fn table_columns(&self) -> Result<Option<Vec<TableColumn>>, ConnectorError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(self.schema())
        .bind(&self.conn.settings.table.table)
        .fetch_all(&self.conn.pool)
        .await
        .map_err(|e| self.conn.endpoint.fatal(e, "reading the table's columns"))?;
        Ok((!rows.is_empty()).then(|| {
            rows.into_iter()
                .map(|(name, sql_type)| TableColumn { name, sql_type })
                .collect()
        }))
    }

    async fn check_upsert_key(&self) -> Result<(), ConnectorError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0",
        )
        .bind(self.schema())
        .bind(&self.conn.settings.table.table)
        .fetch_all(&self.conn.pool)
        .await
        .map_err(|e| self.conn.endpoint.fatal(e, "reading the table's unique keys"))?;
        let mut indexes: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (index, column) in &rows {
            indexes
                .entry(index)
                .or_default()
                .push(column.to_lowercase());
        }
        let mut want: Vec<String> = self
            .conn
            .settings
            .key
            .iter()
            .map(|k| k.to_lowercase())
            .collect();
        want.sort();
        let found = indexes.values_mut().any(|cols| {
            cols.sort();
            *cols == want
        });
        if found {
            return Ok(());
        }
        Err(self.conn.endpoint.error(
            ErrorClass::ContractChanged,
            format!(
                "table {} has no primary key or unique index on exactly ({}), so upserts would add duplicates: \
                 add one (`ALTER TABLE … ADD UNIQUE (…)`) or fix `key`",
                self.conn.settings.target(),
                self.conn.settings.key.join(", ")
            ),
        ))
    }

    async fn plan(
        &self,
        columns: &[Column],
        _table: &[TableColumn],
    ) -> Result<Plan, ConnectorError> {
        let d = Dialect::Mysql;
        let packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(&self.conn.pool)
            .await
            .map_err(|e| self.conn.endpoint.fatal(e, "reading max_allowed_packet"))?;
        let server_budget = usize::try_from(packet)
            .unwrap_or(usize::MAX)
            .saturating_sub(PACKET_MARGIN)
            .max(1024);
        let names = quote_list(d, columns.iter().map(|c| c.name.as_str()));
        let suffix = if self.conn.settings.mode == WriteMode::Upsert {
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !self.conn.settings.is_key(&c.name))
                .map(|c| format!("{0} = VALUES({0})", quote(d, &c.name)))
                .collect();
            if updates.is_empty() {
                let k = quote(d, &self.conn.settings.key[0]);
                format!(" ON DUPLICATE KEY UPDATE {k} = {k}")
            } else {
                format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "))
            }
        } else {
            String::new()
        };
        Ok(Plan {
            kinds: columns.iter().map(|c| c.kind).collect(),
            insert: InsertSql::new(
                format!("INSERT INTO {} ({names}) VALUES ", self.conn.table()),
                columns.len(),
                suffix,
            ),
            limits: Limits {
                max_rows: self.conn.settings.max_rows.unwrap_or(DEFAULT_ROWS),
                max_params: MAX_PLACEHOLDERS,
                max_bytes: self
                    .conn
                    .settings
                    .max_bytes
                    .unwrap_or(usize::MAX)
                    .min(server_budget),
            },
            truncate: format!("DELETE FROM {}", self.conn.table()),
        })
    }

    async fn write(&self, plan: &Plan, job: &Job<'_>) -> Result<usize, Failure> {
        let tx = self
            .conn
            .pool
            .begin()
            .await
            .map_err(|e| self.conn.endpoint.classify(e, "starting a transaction"))?;
        multirow::write::<sqlx::MySql>(
            tx,
            &self.conn.endpoint,
            &self.conn.settings,
            plan,
            job,
            bind,
        )
        .await
    }
}

fn bind(args: &mut MySqlArguments, value: Value<'_>, _kind: Kind) -> Result<(), String> {
    let r = match value {
        Value::Null => args.add(None::<i64>),
        Value::Bool(v) => args.add(v),
        Value::Int(v) => args.add(v),
        Value::UInt(v) => args.add(v),
        Value::F32(v) => args.add(v),
        Value::F64(v) => args.add(v),
        Value::Str(v) => args.add(v),
        Value::String(v) => args.add(v),
        Value::Bytes(v) => args.add(v),
        Value::Date(v) => args.add(v),
        Value::DateTime(v) => args.add(v),
        Value::Time(v) => args.add(v),
    };
    r.map_err(|e| e.to_string())
}
