//! PostgreSQL: binary `COPY` of the batch — straight into the table for `append` and
//! `replace` when the column types match the encoding, else into a temporary staging table
//! followed by one `INSERT … SELECT … [ON CONFLICT (key) DO UPDATE]` — in one transaction
//! with the ledger row. An `upsert` whose rows all have new keys is copied straight into
//! the table as well (see [`Direct`]).

use super::config::{Dialect, SqlSinkConfig, WriteMode};
use super::db::{self, Conn, ConnOps};
use super::error::{Endpoint, Failure};
use super::ident::{quote, quote_list};
use super::multirow::{self, InsertSql, Limits};
use super::sink::{Backend, Job, Settings, TableColumn};
use super::types::{self, Column, Kind, PG_EPOCH_DAYS, PG_EPOCH_MICROS, Typed, Value};
use async_trait::async_trait;
use sluice_core::ConnectorError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgConnection};
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::time::Duration;

/// Jobs with fewer rows are written with multi-row `INSERT … VALUES` instead of `COPY`:
/// sqlx does not set `TCP_NODELAY`, so the small `CopyDone` message after the data waits
/// for the server's delayed ACK (up to 40 ms) — more than a small job's whole write. On
/// loopback the wait shows while the data fits one segment (64 KiB): a `COPY` of 500 rows
/// took 42 ms, of 1,000 rows (69 KB) 6 ms (`bench/sql_sink.sh`, `SLUICE_BENCH_BATCH`).
/// Jobs estimated under this many bytes, or with statements capped below it (or below
/// [`COPY_MIN_ROWS`] rows), are written with multi-row `INSERT … VALUES` instead.
const COPY_MIN_BYTES: usize = 64 * 1024;
/// See [`COPY_MIN_BYTES`].
const COPY_MIN_ROWS: usize = 1_000;
/// Rows per `INSERT … VALUES` statement unless configured.
const VALUES_ROWS: usize = 1_000;
/// The most parameters one PostgreSQL statement may carry.
const MAX_PARAMETERS: usize = 65_535;

/// The binary `COPY` signature, flags and header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Bytes buffered before they are sent to the server.
const SEND_CHUNK: usize = 1 << 20;

pub(crate) struct PgBackend {
    conn: Conn<sqlx::Postgres>,
    direct: Direct,
}

/// Whether an `upsert` tries its rows straight into the table first.
///
/// An upsert costs PostgreSQL about twice what a `COPY` into the table does (the staging
/// table, then `INSERT … SELECT … ON CONFLICT`). Where the rows' keys are all new (a first
/// load, a source of new records, a backlog of them) the result of both is the same rows,
/// so the job is first copied straight into the table, under a savepoint, when the table
/// has a unique index on exactly the key columns (the one `ON CONFLICT` uses: without it a
/// straight copy could not tell an existing key). A row whose key is there already fails
/// that copy with a unique violation: the job goes back to the savepoint and is written the
/// staging way. Each such miss makes the next jobs skip the attempt — 1, 2, 4, … up to
/// [`DIRECT_SKIP_MAX`] of them — so a table whose rows are mostly updated pays a failed
/// attempt on at most one job in 65; a job copied straight resets it.
#[derive(Default)]
struct Direct {
    /// Jobs left to write the staging way before the next attempt.
    skip: std::sync::atomic::AtomicU32,
    /// How many jobs the next miss skips (0: none missed since the last success, so one).
    backoff: std::sync::atomic::AtomicU32,
}

/// The most jobs a missed straight copy makes the next ones skip (see [`Direct`]).
const DIRECT_SKIP_MAX: u32 = 64;

impl Direct {
    /// Whether this job tries the straight copy (counting down a skip).
    fn attempt(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.skip
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_err()
    }

    /// A straight copy met a key that is there already: the next `backoff` jobs (at
    /// least one) skip the attempt, and the next miss skips twice as many.
    fn missed(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let skip = self.backoff.load(Relaxed).max(1);
        self.skip.store(skip, Relaxed);
        self.backoff.store((skip * 2).min(DIRECT_SKIP_MAX), Relaxed);
    }

    /// A straight copy wrote its job.
    fn landed(&self) {
        self.backoff.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Connection options and the endpoint of a PostgreSQL URL.
pub(crate) fn options(
    url: &sluice_core::Secret,
    connect_timeout: Duration,
) -> Result<(PgConnectOptions, Endpoint), ConnectorError> {
    let provisional = Endpoint::new(Dialect::Postgres, "?".into(), url, connect_timeout);
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(|e| provisional.fatal(e, "reading the url"))?
        .options([("client_min_messages", "warning")]);
    let address = format!("{}:{}", options.get_host(), options.get_port());
    Ok((
        options,
        Endpoint::new(Dialect::Postgres, address, url, connect_timeout),
    ))
}

impl PgBackend {
    /// The sink's connections (tests take one to play a paused writer).
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &sqlx::PgPool {
        &self.conn.pool
    }

    pub(crate) fn new(config: &SqlSinkConfig) -> Result<PgBackend, ConnectorError> {
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let (options, endpoint) = options(&config.url, timeout)?;
        // A writer paused mid-transaction holds its batch's ledger rows, which another
        // process writing the same batch waits on: the server ends such a session.
        let idle = sluice_core::IDLE_IN_TRANSACTION.as_millis().to_string();
        let options = options.options([("idle_in_transaction_session_timeout", idle.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(timeout)
            .connect_lazy_with(options.clone());
        Ok(PgBackend {
            conn: Conn {
                pool,
                options,
                endpoint,
                settings: Settings::from_config(config, Dialect::Postgres),
            },
            direct: Direct::default(),
        })
    }

    /// Whether the table has a valid unique index on exactly the key columns, in any
    /// order, none partial and none with included columns: the one `ON CONFLICT (key)`
    /// infers, which makes a straight copy of an existing key fail (see [`Direct`]).
    async fn key_is_unique(&self) -> Result<bool, ConnectorError> {
        let key = &self.conn.settings.key;
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_index i, LATERAL \
             (SELECT array_agg(a.attname::text) AS names FROM pg_attribute a \
              WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])) k \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid \
             AND i.indpred IS NULL AND i.indexprs IS NULL \
             AND i.indnatts = cardinality($2::text[]) AND i.indnkeyatts = i.indnatts \
             AND k.names @> $2::text[] AND k.names <@ $2::text[])",
        )
        .bind(self.conn.table())
        .bind(key)
        .fetch_one(&self.conn.pool)
        .await
        .map_err(|e| {
            self.conn
                .endpoint
                .fatal(e, "reading the table's unique indexes")
        })
    }

    /// Whether the job is large enough for `COPY` (see [`COPY_MIN_BYTES`]).
    fn worth_a_copy(&self, parts: &[Vec<Column>]) -> bool {
        let capped = self
            .conn
            .settings
            .max_rows
            .is_some_and(|m| m < COPY_MIN_ROWS)
            || self
                .conn
                .settings
                .max_bytes
                .is_some_and(|b| b < COPY_MIN_BYTES);
        if capped {
            return false;
        }
        let mut bytes = 0;
        for columns in parts {
            let typed: Vec<Typed<'_>> = columns.iter().map(Column::typed).collect();
            let rows = columns.first().map_or(0, |c| c.array.len());
            for row in 0..rows {
                bytes += 2 + typed.iter().map(|t| copy_size(t, row)).sum::<usize>();
                if bytes >= COPY_MIN_BYTES {
                    return true;
                }
            }
        }
        false
    }
}

/// How one layout of columns is written.
pub(crate) struct PgPlan {
    /// Small jobs: multi-row `INSERT … VALUES` (see [`COPY_MIN_BYTES`]).
    values: multirow::Plan,
    kinds: Vec<Kind>,
    /// `COPY … FROM STDIN (FORMAT binary)`, into the table or the staging table.
    copy: String,
    /// With staging: the `CREATE TEMP TABLE` and the `INSERT … SELECT`.
    stage: Option<(String, String)>,
    /// An upsert's `COPY` straight into the table, tried first (see [`Direct`]).
    direct: Option<String>,
    truncate: String,
}

#[async_trait]
impl Backend for PgBackend {
    fn conn(&self) -> &dyn ConnOps {
        &self.conn
    }

    fn conn_mut(&mut self) -> &mut dyn ConnOps {
        &mut self.conn
    }

    type Plan = PgPlan;

    async fn table_columns(&self) -> Result<Option<Vec<TableColumn>>, ConnectorError> {
        let doing = "reading the table's columns";
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(self.conn.table())
            .fetch_one(&self.conn.pool)
            .await
            .map_err(|e| self.conn.endpoint.fatal(e, doing))?;
        if !exists {
            return Ok(None);
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT attname::text, format_type(atttypid, NULL) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
        .bind(self.conn.table())
        .fetch_all(&self.conn.pool)
        .await
        .map_err(|e| self.conn.endpoint.fatal(e, doing))?;
        Ok(Some(
            rows.into_iter()
                .map(|(name, sql_type)| TableColumn { name, sql_type })
                .collect(),
        ))
    }

    async fn plan(
        &self,
        columns: &[Column],
        table: &[TableColumn],
    ) -> Result<PgPlan, ConnectorError> {
        let d = Dialect::Postgres;
        let t = self.conn.table();
        let names = quote_list(d, columns.iter().map(|c| c.name.as_str()));
        let target_type = |c: &Column| {
            table
                .iter()
                .find(|tc| tc.name == c.name)
                .map(|tc| tc.sql_type.clone())
                .unwrap_or_default()
        };
        let matches = columns
            .iter()
            .all(|c| target_type(c) == types::pg_type(c.kind, false));
        let upsert = self.conn.settings.mode == WriteMode::Upsert;
        let truncate = format!("TRUNCATE TABLE {t}");
        let conflict = if upsert {
            let keys = quote_list(d, self.conn.settings.key.iter().map(String::as_str));
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| !self.conn.settings.is_key(&c.name))
                .map(|c| format!("{0} = EXCLUDED.{0}", quote(d, &c.name)))
                .collect();
            if updates.is_empty() {
                format!(" ON CONFLICT ({keys}) DO NOTHING")
            } else {
                format!(" ON CONFLICT ({keys}) DO UPDATE SET {}", updates.join(", "))
            }
        } else {
            String::new()
        };
        // A value whose type differs from the table's is cast to it: the server's own
        // spelling of the type (format_type), never data.
        let cast = |c: &Column, expr: String, encoded: &str| {
            let target = target_type(c);
            if target.is_empty() || target == encoded {
                (String::new(), String::new(), expr)
            } else {
                ("CAST(".to_owned(), format!(" AS {target})"), expr)
            }
        };
        let values = multirow::Plan {
            insert: InsertSql {
                prefix: format!("INSERT INTO {t} ({names}) VALUES "),
                wraps: columns
                    .iter()
                    .map(|c| {
                        let (before, after, _) = cast(c, String::new(), value_type(c.kind));
                        (before, after)
                    })
                    .collect(),
                numbered: true,
                suffix: conflict.clone(),
            },
            kinds: columns.iter().map(|c| c.kind).collect(),
            limits: Limits {
                max_rows: self.conn.settings.max_rows.unwrap_or(VALUES_ROWS),
                max_params: MAX_PARAMETERS,
                max_bytes: self.conn.settings.max_bytes.unwrap_or(usize::MAX),
            },
            truncate: truncate.clone(),
        };
        let copy_into_table = format!("COPY {t} ({names}) FROM STDIN (FORMAT binary)");
        if matches && !upsert {
            return Ok(PgPlan {
                values,
                kinds: columns.iter().map(|c| c.kind).collect(),
                copy: copy_into_table,
                stage: None,
                direct: None,
                truncate,
            });
        }
        let direct = (matches && upsert && self.key_is_unique().await?).then_some(copy_into_table);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        t.hash(&mut hasher);
        for c in columns {
            c.name.hash(&mut hasher);
            types::pg_type(c.kind, false).hash(&mut hasher);
        }
        let stage = quote(d, &format!("_sluice_stage_{:016x}", hasher.finish()));
        let stage_cols: Vec<String> = columns
            .iter()
            .map(|c| format!("{} {}", quote(d, &c.name), types::pg_type(c.kind, false)))
            .collect();
        let create = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ({}) ON COMMIT DELETE ROWS",
            stage_cols.join(", ")
        );
        let exprs: Vec<String> = columns
            .iter()
            .map(|c| {
                let (before, after, expr) =
                    cast(c, quote(d, &c.name), &types::pg_type(c.kind, false));
                format!("{before}{expr}{after}")
            })
            .collect();
        let insert = format!(
            "INSERT INTO {t} ({names}) SELECT {} FROM {stage}{conflict}",
            exprs.join(", ")
        );
        Ok(PgPlan {
            values,
            kinds: columns.iter().map(|c| c.kind).collect(),
            copy: format!("COPY {stage} ({names}) FROM STDIN (FORMAT binary)"),
            stage: Some((create, insert)),
            direct,
            truncate,
        })
    }

    async fn write(&self, plan: &PgPlan, job: &Job<'_>) -> Result<usize, Failure> {
        let ep = &self.conn.endpoint;
        let mut tx = self
            .conn
            .pool
            .begin()
            .await
            .map_err(|e| ep.classify(e, "starting a transaction"))?;
        if !self.worth_a_copy(job.parts) {
            return multirow::write::<sqlx::Postgres>(
                tx,
                ep,
                &self.conn.settings,
                &plan.values,
                job,
                bind,
            )
            .await;
        }
        let truncate = job.truncate.map(|load| (plan.truncate.as_str(), load));
        db::begin_write::<sqlx::Postgres>(&mut tx, ep, &self.conn.settings, job.entries, truncate)
            .await?;
        if let Some(direct) = plan.direct.as_deref().filter(|_| self.direct.attempt()) {
            tx.execute("SAVEPOINT sluice_direct")
                .await
                .map_err(|e| ep.classify(e, "starting a savepoint"))?;
            let existing = std::sync::atomic::AtomicBool::new(false);
            let classify = |e: sqlx::Error, doing: &str| {
                if unique_violation(&e) {
                    existing.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                ep.classify(e, doing)
            };
            let settings = &self.conn.settings;
            match copy_rows(&mut tx, direct, plan, job.parts, settings, ep, &classify).await {
                Ok(rows) => {
                    tx.commit()
                        .await
                        .map_err(|e| ep.classify(e, "committing"))?;
                    self.direct.landed();
                    return Ok(rows);
                }
                Err(_) if existing.load(std::sync::atomic::Ordering::Relaxed) => {
                    tracing::debug!(target: "sluice::sql", "a key is in the table already: the job is written the staging way");
                    self.direct.missed();
                    tx.execute("ROLLBACK TO SAVEPOINT sluice_direct")
                        .await
                        .map_err(|e| ep.classify(e, "going back to the savepoint"))?;
                }
                Err(failure) => return Err(failure),
            }
        }
        if let Some((create, _)) = &plan.stage {
            tx.execute(AssertSqlSafe(create.clone()))
                .await
                .map_err(|e| ep.classify(e, "creating the staging table"))?;
        }
        let classify = |e: sqlx::Error, doing: &str| ep.classify(e, doing);
        let rows = copy_rows(
            &mut tx,
            &plan.copy,
            plan,
            job.parts,
            &self.conn.settings,
            ep,
            &classify,
        )
        .await?;
        if let Some((_, insert)) = &plan.stage {
            tx.execute(AssertSqlSafe(insert.clone()))
                .await
                .map_err(|e| ep.classify(e, "moving rows from staging into the table"))?;
        }
        tx.commit()
            .await
            .map_err(|e| ep.classify(e, "committing"))?;
        Ok(rows)
    }
}

/// Whether the server refused a row for a unique index (SQLSTATE 23505).
fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Sends the job's rows, part after part, with one or more binary `COPY` commands
/// (`copy_sql`, each within the statement limits). Returns the rows sent. A database's error is
/// `classify`'s to describe; a value that cannot be encoded, or a row too large, is the
/// endpoint's.
async fn copy_rows(
    conn: &mut PgConnection,
    copy_sql: &str,
    plan: &PgPlan,
    parts: &[Vec<Column>],
    settings: &Settings,
    ep: &Endpoint,
    classify: &(dyn Fn(sqlx::Error, &str) -> Failure + Sync),
) -> Result<usize, Failure> {
    let rows = super::sink::rows_of(parts);
    let typed: Vec<Vec<Typed<'_>>> = parts
        .iter()
        .map(|columns| columns.iter().map(Column::typed).collect())
        .collect();
    let lens: Vec<usize> = parts
        .iter()
        .map(|p| p.first().map_or(0, |c| c.array.len()))
        .collect();
    // Row `row` of the job is row `at.1` of part `at.0`.
    let mut at = (0usize, 0usize);
    let max_rows = settings.max_rows.unwrap_or(usize::MAX);
    let max_bytes = settings.max_bytes.unwrap_or(usize::MAX);
    let mut row = 0;
    let mut carry: Vec<u8> = Vec::new();
    while row < rows {
        let mut copy = conn
            .copy_in_raw(copy_sql)
            .await
            .map_err(|e| classify(e, "starting COPY"))?;
        let mut buf = Vec::with_capacity(SEND_CHUNK + 1024);
        buf.extend_from_slice(COPY_HEADER);
        let mut in_copy = 0usize;
        let mut copy_bytes = 0usize;
        if !carry.is_empty() {
            copy_bytes += carry.len();
            buf.append(&mut carry);
            in_copy += 1;
            row += 1;
        }
        while row < rows && in_copy < max_rows {
            while at.1 >= lens[at.0] {
                at = (at.0 + 1, 0);
            }
            let start = buf.len();
            if let Err(problem) = encode_row(&mut buf, &typed[at.0], &plan.kinds, at.1) {
                let _ = copy.abort(problem.clone()).await;
                return Err(ep.bad_value(problem));
            }
            let size = buf.len() - start;
            if size > max_bytes {
                let _ = copy.abort("row too large").await;
                return Err(ep.too_large(size, max_bytes));
            }
            if copy_bytes + size > max_bytes && in_copy > 0 {
                carry = buf.split_off(start);
                at.1 += 1;
                break;
            }
            copy_bytes += size;
            in_copy += 1;
            row += 1;
            at.1 += 1;
            if buf.len() >= SEND_CHUNK {
                copy.send(std::mem::take(&mut buf))
                    .await
                    .map_err(|e| classify(e, "sending COPY data"))?;
                buf.reserve(SEND_CHUNK + 1024);
            }
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        copy.send(buf)
            .await
            .map_err(|e| classify(e, "sending COPY data"))?;
        copy.finish()
            .await
            .map_err(|e| classify(e, "finishing COPY"))?;
    }
    Ok(rows)
}

/// The bytes a value takes in the binary `COPY` format (numerics: about).
fn copy_size(t: &Typed<'_>, row: usize) -> usize {
    if t.is_null(row) {
        return 4;
    }
    4 + match t {
        Typed::Bool(_) => 1,
        Typed::Int16(_) => 2,
        Typed::Int32(_) | Typed::Date(_) | Typed::Float32(_) => 4,
        Typed::Int64(_) | Typed::Float64(_) | Typed::Timestamp(..) | Typed::Time(_) => 8,
        Typed::UInt64(_) | Typed::Decimal(..) => 16,
        Typed::Text(a) => a.value(row).len() + 1,
        Typed::Binary(a) => a.value(row).len(),
    }
}

/// The type PostgreSQL is told a bound value has (see [`bind`]); where the table's column
/// has another, the placeholder is cast.
fn value_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "boolean",
        Kind::Int16 | Kind::Int32 | Kind::Int64 => "bigint",
        Kind::UInt64 | Kind::Decimal { .. } | Kind::Text | Kind::Json => "text",
        Kind::Float32 => "real",
        Kind::Float64 => "double precision",
        Kind::Binary => "bytea",
        Kind::Date => "date",
        Kind::Timestamp { tz: true, .. } => "timestamp with time zone",
        Kind::Timestamp { tz: false, .. } => "timestamp without time zone",
        Kind::Time => "time without time zone",
    }
}

/// Binds a value as [`value_type`] says; a null gets the same type.
fn bind(
    args: &mut sqlx::postgres::PgArguments,
    value: Value<'_>,
    kind: Kind,
) -> Result<(), String> {
    use sqlx::Arguments;
    use sqlx::types::chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
    let tz = matches!(kind, Kind::Timestamp { tz: true, .. });
    let r = match value {
        Value::Null => match value_type(kind) {
            "boolean" => args.add(None::<bool>),
            "bigint" => args.add(None::<i64>),
            "real" => args.add(None::<f32>),
            "double precision" => args.add(None::<f64>),
            "bytea" => args.add(None::<Vec<u8>>),
            "date" => args.add(None::<NaiveDate>),
            "timestamp with time zone" => args.add(None::<DateTime<Utc>>),
            "timestamp without time zone" => args.add(None::<NaiveDateTime>),
            "time without time zone" => args.add(None::<NaiveTime>),
            _ => args.add(None::<String>),
        },
        Value::Bool(v) => args.add(v),
        Value::Int(v) => args.add(v),
        Value::UInt(v) => args.add(v.to_string()),
        Value::F32(v) => args.add(v),
        Value::F64(v) => args.add(v),
        Value::Str(v) => args.add(v),
        Value::String(v) => args.add(v),
        Value::Bytes(v) => args.add(v),
        Value::Date(v) => args.add(v),
        Value::DateTime(v) if tz => args.add(DateTime::<Utc>::from_naive_utc_and_offset(v, Utc)),
        Value::DateTime(v) => args.add(v),
        Value::Time(v) => args.add(v),
    };
    r.map_err(|e| e.to_string())
}

/// Appends one tuple of the binary `COPY` format.
fn encode_row(
    buf: &mut Vec<u8>,
    typed: &[Typed<'_>],
    kinds: &[Kind],
    row: usize,
) -> Result<(), String> {
    buf.extend_from_slice(&(typed.len() as i16).to_be_bytes());
    for (t, kind) in typed.iter().zip(kinds) {
        if t.is_null(row) {
            buf.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        let field = |buf: &mut Vec<u8>, bytes: &[u8]| {
            buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            buf.extend_from_slice(bytes);
        };
        match t {
            Typed::Bool(a) => field(buf, &[u8::from(a.value(row))]),
            Typed::Int16(a) => field(buf, &a.value(row).to_be_bytes()),
            Typed::Int32(a) => field(buf, &a.value(row).to_be_bytes()),
            Typed::Int64(a) => field(buf, &a.value(row).to_be_bytes()),
            Typed::UInt64(a) => encode_numeric(buf, i128::from(a.value(row)), 0),
            Typed::Float32(a) => field(buf, &a.value(row).to_be_bytes()),
            Typed::Float64(a) => field(buf, &a.value(row).to_be_bytes()),
            Typed::Decimal(a, scale) => encode_numeric(buf, a.value(row), *scale),
            Typed::Text(a) if *kind == Kind::Json => {
                let s = a.value(row).as_bytes();
                buf.extend_from_slice(&(s.len() as i32 + 1).to_be_bytes());
                buf.push(1);
                buf.extend_from_slice(s);
            }
            Typed::Text(a) => field(buf, a.value(row).as_bytes()),
            Typed::Binary(a) => field(buf, a.value(row)),
            Typed::Date(a) => {
                let days = a
                    .value(row)
                    .checked_sub(PG_EPOCH_DAYS)
                    .ok_or_else(|| format!("date {} is out of range", a.value(row)))?;
                field(buf, &days.to_be_bytes())
            }
            Typed::Timestamp(a, unit) => {
                let v = a.value(row);
                let micros = types::to_micros(v, *unit)
                    .and_then(|m| m.checked_sub(PG_EPOCH_MICROS))
                    .ok_or_else(|| format!("timestamp {v} ({unit:?}) is out of range"))?;
                field(buf, &micros.to_be_bytes())
            }
            Typed::Time(a) => field(buf, &a.value(row).to_be_bytes()),
        }
    }
    Ok(())
}

/// Appends `mantissa × 10^-scale` in PostgreSQL's binary `numeric` format: base-10000
/// digits with a weight, a sign and a display scale.
pub(crate) fn encode_numeric(buf: &mut Vec<u8>, mantissa: i128, scale: i8) {
    let mut digits = mantissa.unsigned_abs().to_string();
    let dscale = if scale < 0 {
        if mantissa != 0 {
            digits.extend(std::iter::repeat_n('0', usize::from(scale.unsigned_abs())));
        }
        0usize
    } else {
        scale as usize
    };
    let (int_part, frac_part) = if digits.len() > dscale {
        let (i, f) = digits.split_at(digits.len() - dscale);
        (i.to_owned(), f.to_owned())
    } else {
        (
            String::new(),
            format!("{}{digits}", "0".repeat(dscale - digits.len())),
        )
    };
    let int_str = format!("{}{int_part}", "0".repeat((4 - int_part.len() % 4) % 4));
    let frac_str = format!("{frac_part}{}", "0".repeat((4 - frac_part.len() % 4) % 4));
    let mut groups: Vec<i16> = int_str
        .as_bytes()
        .chunks(4)
        .chain(frac_str.as_bytes().chunks(4))
        .map(|g| g.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = (int_str.len() / 4) as i32 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if mantissa < 0 && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    buf.extend_from_slice(&((8 + 2 * groups.len()) as i32).to_be_bytes());
    buf.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    buf.extend_from_slice(&(weight as i16).to_be_bytes());
    buf.extend_from_slice(&sign.to_be_bytes());
    buf.extend_from_slice(&(dscale as i16).to_be_bytes());
    for g in groups {
        buf.extend_from_slice(&g.to_be_bytes());
    }
}

/// PostgreSQL's binary `numeric` as exact decimal text (`NaN`, `Infinity` included).
pub(crate) fn numeric_text(bytes: &[u8]) -> Result<String, String> {
    let word = |i: usize| -> Result<u16, String> {
        bytes
            .get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric value".to_owned())
    };
    let ndigits = word(0)? as usize;
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = word(3)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    let digit = |k: i32| -> u16 {
        usize::try_from(k)
            .ok()
            .and_then(|k| digits.get(k).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for k in 0..=weight {
            if k == 0 {
                out.push_str(&digit(k).to_string());
            } else {
                out.push_str(&format!("{:04}", digit(k)));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut p = 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(weight + p)));
            p += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_straight_copy_skips_1_2_4_up_to_64_jobs_and_a_landed_one_resets() {
        let direct = Direct::default();
        let skipped_after_a_miss = |direct: &Direct| {
            direct.missed();
            let mut skipped = 0;
            while !direct.attempt() {
                skipped += 1;
            }
            skipped
        };
        let skips: Vec<u32> = (0..9).map(|_| skipped_after_a_miss(&direct)).collect();
        assert_eq!(skips, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        direct.landed();
        assert_eq!(skipped_after_a_miss(&direct), 1);
        assert!(direct.attempt(), "no skip without a miss");
    }

    fn round_trip(m: i128, scale: i8) -> String {
        let mut buf = Vec::new();
        encode_numeric(&mut buf, m, scale);
        let len = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        numeric_text(&buf[4..]).unwrap()
    }

    #[test]
    fn numerics_round_trip_exactly() {
        assert_eq!(round_trip(12345678, 3), "12345.678");
        assert_eq!(round_trip(1234, 7), "0.0001234");
        assert_eq!(round_trip(1234, 8), "0.00001234");
        assert_eq!(round_trip(-5, 2), "-0.05");
        assert_eq!(round_trip(0, 2), "0.00");
        assert_eq!(round_trip(100000000, 0), "100000000");
        assert_eq!(round_trip(12, -3), "12000");
        assert_eq!(round_trip(i128::from(u64::MAX), 0), u64::MAX.to_string());
        assert_eq!(round_trip(-10000, 4), "-1.0000");
    }

    #[test]
    fn tuples_have_a_field_count_and_lengths() {
        use arrow::array::{Int64Array, StringArray};
        let ids = Int64Array::from(vec![Some(7), None]);
        let names = StringArray::from(vec!["ab", "c"]);
        let typed = [Typed::Int64(&ids), Typed::Text(&names)];
        let mut buf = Vec::new();
        encode_row(&mut buf, &typed, &[Kind::Int64, Kind::Text], 0).unwrap();
        let mut want = vec![0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2];
        want.extend_from_slice(b"ab");
        assert_eq!(buf, want);
        buf.clear();
        encode_row(&mut buf, &typed, &[Kind::Int64, Kind::Text], 1).unwrap();
        assert_eq!(&buf[2..6], &(-1i32).to_be_bytes());
    }
}
