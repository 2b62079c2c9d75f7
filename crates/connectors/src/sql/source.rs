//! The SQL source: one query, optionally incremental by a watermark column, streamed
//! with `fetch` into Arrow batches cut by `batch_rows`, `batch_bytes` and `max_wait`.
//!
//! A task owns the connection and the row stream and hands finished batches over a
//! channel of one: the database is read only as fast as batches are taken, so at most
//! about two batches are in memory. `:watermark` in the query is replaced by the engine's
//! placeholder and bound; the checkpoint after each batch is `{"watermark": <value of the
//! watermark column on its last row>}`.

use super::config::{Dialect, SqlSourceConfig};
use super::error::Endpoint;
use super::{db, mysql, postgres, sqlite};
use crate::watermark::{Guard, Kind as WmKind, parse_time};
use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use sluice_core::{
    Batch, ConnectorError, ConnectorEvent, ErrorClass, Source, SourceBatch, SourcePosition,
};
use sqlx::types::chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use sqlx::{
    AssertSqlSafe, Column as _, Connection, Executor, Row, SqlSafeStr, Statement, TypeInfo,
    ValueRef,
};
use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How many times `:watermark` appears in the query, outside strings, quoted names and
/// comments.
pub(crate) fn count_watermark_uses(query: &str) -> usize {
    let mut n = 0;
    rewrite_watermark(query, |_| {
        n += 1;
        String::new()
    });
    n
}

/// The query with each `:watermark` replaced by `placeholder(i)` (0-based use number).
pub(crate) fn rewrite_watermark(
    query: &str,
    mut placeholder: impl FnMut(usize) -> String,
) -> String {
    const NAME: &str = ":watermark";
    let bytes = query.as_bytes();
    let mut out = String::with_capacity(query.len());
    let mut i = 0;
    let mut uses = 0;
    while i < bytes.len() {
        let rest = &query[i..];
        let skip_to = |close: &str, from: usize| {
            rest[from..]
                .find(close)
                .map_or(rest.len(), |p| p + from + close.len())
        };
        let span = match bytes[i] {
            b'\'' => skip_to("'", 1),
            b'"' => skip_to("\"", 1),
            b'`' => skip_to("`", 1),
            b'-' if rest.starts_with("--") => skip_to("\n", 2),
            b'/' if rest.starts_with("/*") => skip_to("*/", 2),
            b':' if rest.starts_with(NAME)
                && (i == 0 || bytes[i - 1] != b':')
                && !rest[NAME.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_') =>
            {
                out.push_str(&placeholder(uses));
                uses += 1;
                i += NAME.len();
                continue;
            }
            _ => rest.chars().next().map_or(1, char::len_utf8),
        };
        out.push_str(&rest[..span]);
        i += span;
    }
    out
}

pub(crate) struct SqlSource {
    config: SqlSourceConfig,
    dialect: Dialect,
    pipeline: String,
    node: String,
    watermark: Option<serde_json::Value>,
    /// When the run started: watermarks later than this plus the tolerance are refused.
    started: chrono::DateTime<chrono::Utc>,
    /// Events of the reading task, for `drain_events`.
    events: Arc<Mutex<Vec<ConnectorEvent>>>,
    rx: Option<mpsc::Receiver<Result<SourceBatch, ConnectorError>>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// How the reading task ended, once its channel closed: `None` read to the end, an
    /// error (it panicked) is told again by every later call.
    ended: Option<Option<ConnectorError>>,
}

impl SqlSource {
    pub(crate) fn new(
        config: SqlSourceConfig,
        pipeline: &str,
        node: &str,
        checkpoint: Option<serde_json::Value>,
    ) -> Result<SqlSource, ConnectorError> {
        let dialect = Dialect::from_url(config.url.expose())
            .map_err(|e| ConnectorError::new(ErrorClass::InvalidRequest, e))?;
        let started = chrono::Utc::now();
        let mut events = Vec::new();
        let watermark = config.watermark.as_ref().map(|w| {
            let stored = checkpoint
                .as_ref()
                .and_then(|c| c.get("watermark"))
                .filter(|v| !v.is_null())
                .cloned();
            match stored {
                // A stored watermark in the future (as an older version could store)
                // would read nothing ever again: start from `initial` instead.
                Some(v) if Guard::new(&w.column, started, w.future_tolerance).refuse(&v).is_some() => {
                    events.push(ConnectorEvent::new(
                        Some(ErrorClass::ContractChanged),
                        format!(
                            "the stored watermark {v} of `{}` is later than the run's start plus future_tolerance: starting from the initial {} instead",
                            w.column, w.initial
                        ),
                    ));
                    w.initial.clone()
                }
                Some(v) => v,
                None => w.initial.clone(),
            }
        });
        Ok(SqlSource {
            config,
            dialect,
            pipeline: pipeline.to_owned(),
            node: node.to_owned(),
            watermark,
            started,
            events: Arc::new(Mutex::new(events)),
            rx: None,
            task: None,
            ended: None,
        })
    }
}

impl Drop for SqlSource {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[async_trait]
impl Source for SqlSource {
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError> {
        if self.rx.is_none() {
            let (tx, rx) = mpsc::channel(1);
            let ctx = Reader {
                dialect: self.dialect,
                config: self.config.clone(),
                pipeline: self.pipeline.clone(),
                node: self.node.clone(),
                watermark: self.watermark.clone(),
                started: self.started,
                events: self.events.clone(),
                tx,
            };
            self.task = Some(tokio::spawn(ctx.run()));
            self.rx = Some(rx);
        }
        if let Some(ended) = &self.ended {
            return ended.clone().map_or(Ok(None), Err);
        }
        let next = match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => None,
        };
        if let Some(next) = next {
            return next.map(Some);
        }
        // The channel closed: the end of the data only if the task returned. A task that
        // panicked (or was cancelled) closes it too, and its data is not all read.
        let ended = match self.task.take() {
            Some(task) => task.await.err().map(|e| {
                let why = if e.is_panic() {
                    format!("panicked: {}", sluice_core::panic_message(&*e.into_panic()))
                } else {
                    format!("stopped: {e}")
                };
                ConnectorError::new(
                    ErrorClass::Internal,
                    format!(
                        "the SQL source's reading task {why}; the query's result was not read to its end"
                    ),
                )
            }),
            None => None,
        };
        self.ended = Some(ended.clone());
        ended.map_or(Ok(None), Err)
    }

    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Opens a connection of its own and runs `SELECT 1`, as `sluice health` checks the
    /// database; the run's reading is not touched.
    async fn health(&mut self) -> Result<Option<Duration>, ConnectorError> {
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let url = &self.config.url;
        let took = match self.dialect {
            Dialect::Postgres => {
                let (options, ep) = postgres::options(url, timeout)?;
                db::health::<sqlx::PgConnection>(&options, &ep).await?
            }
            Dialect::Mysql => {
                let (options, ep) = mysql::options(url, timeout)?;
                db::health::<sqlx::MySqlConnection>(&options, &ep).await?
            }
            Dialect::Sqlite => {
                let (options, ep, _) = sqlite::read_options(url, timeout)?;
                let options = options.create_if_missing(false).read_only(true);
                db::health::<sqlx::SqliteConnection>(&options, &ep).await?
            }
        };
        Ok(Some(took))
    }
}

/// The reading task's state.
struct Reader {
    dialect: Dialect,
    config: SqlSourceConfig,
    pipeline: String,
    node: String,
    watermark: Option<serde_json::Value>,
    started: chrono::DateTime<chrono::Utc>,
    events: Arc<Mutex<Vec<ConnectorEvent>>>,
    tx: mpsc::Sender<Result<SourceBatch, ConnectorError>>,
}

type Stream<'a, R> = futures_core::stream::BoxStream<'a, Result<R, sqlx::Error>>;

async fn next<R>(stream: &mut Stream<'_, R>) -> Option<Result<R, sqlx::Error>> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

use futures_core::Stream as _;

impl Reader {
    async fn run(self) {
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let result = match self.dialect {
            Dialect::Postgres => self.run_postgres(timeout).await,
            Dialect::Mysql => self.run_mysql(timeout).await,
            Dialect::Sqlite => self.run_sqlite(timeout).await,
        };
        if let Err(e) = result {
            let _ = self.tx.send(Err(e)).await;
        }
    }

    fn json_text(&self) -> String {
        match &self.watermark {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }
    }

    async fn run_postgres(&self, timeout: Duration) -> Result<(), ConnectorError> {
        let (options, ep) = postgres::options(&self.config.url, timeout)?;
        let mut conn = connect(&ep, sqlx::PgConnection::connect_with(&options)).await?;
        let query = if self.watermark.is_some() {
            // Ask the server what type `:watermark` has, then bind it as text cast to that type.
            let probe = rewrite_watermark(&self.config.query, |_| "$1".into());
            let statement = conn
                .prepare(AssertSqlSafe(probe).into_sql_str())
                .await
                .map_err(|e| ep.fatal(e, "preparing the query"))?;
            let ty = match statement.parameters() {
                Some(sqlx::Either::Left(types)) => types.first().map(|t| t.name().to_owned()),
                _ => None,
            }
            .filter(|t| !t.is_empty() && t != "UNKNOWN")
            .unwrap_or_else(|| "TEXT".to_owned());
            let ty = if ty.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                ty
            } else {
                super::ident::quote(Dialect::Postgres, &ty)
            };
            rewrite_watermark(&self.config.query, |_| format!("CAST($1 AS {ty})"))
        } else {
            self.config.query.clone()
        };
        let mut q = sqlx::query(AssertSqlSafe(query));
        if self.watermark.is_some() {
            q = q.bind(self.json_text());
        }
        let mut stream = q.fetch(&mut conn);
        self.drain(&ep, &mut stream, pg_kind, pg_cell).await
    }

    async fn run_mysql(&self, timeout: Duration) -> Result<(), ConnectorError> {
        let (options, ep) = mysql::options(&self.config.url, timeout)?;
        let mut conn = connect(&ep, sqlx::MySqlConnection::connect_with(&options)).await?;
        let query = rewrite_watermark(&self.config.query, |_| "?".into());
        let uses = count_watermark_uses(&self.config.query);
        let mut q = sqlx::query(AssertSqlSafe(query));
        if let Some(w) = &self.watermark {
            for _ in 0..uses {
                q = match w {
                    serde_json::Value::Number(n) if n.is_i64() => q.bind(n.as_i64()),
                    serde_json::Value::Number(n) => q.bind(n.as_f64()),
                    serde_json::Value::String(s) => match parse_datetime(s) {
                        Some(dt) => q.bind(dt),
                        None => match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                            Ok(d) => q.bind(d),
                            Err(_) => q.bind(s.clone()),
                        },
                    },
                    other => q.bind(other.to_string()),
                };
            }
        }
        let mut stream = q.fetch(&mut conn);
        self.drain(&ep, &mut stream, mysql_kind, mysql_cell).await
    }

    async fn run_sqlite(&self, timeout: Duration) -> Result<(), ConnectorError> {
        let (options, ep, _) = sqlite::read_options(&self.config.url, timeout)?;
        let options = options.create_if_missing(false).read_only(true);
        let mut conn = connect(&ep, sqlx::SqliteConnection::connect_with(&options)).await?;
        let query = rewrite_watermark(&self.config.query, |_| "?".into());
        let uses = count_watermark_uses(&self.config.query);
        let mut q = sqlx::query(AssertSqlSafe(query));
        if let Some(w) = &self.watermark {
            for _ in 0..uses {
                q = match w {
                    serde_json::Value::Number(n) if n.is_i64() => q.bind(n.as_i64()),
                    serde_json::Value::Number(n) => q.bind(n.as_f64()),
                    serde_json::Value::String(s) => q.bind(s.clone()),
                    other => q.bind(other.to_string()),
                };
            }
        }
        let mut stream = q.fetch(&mut conn);
        self.drain(&ep, &mut stream, sqlite_kind, sqlite_cell).await
    }

    /// Reads the stream into batches and sends them; stops early when the receiver is gone.
    async fn drain<R: Row>(
        &self,
        ep: &Endpoint,
        stream: &mut Stream<'_, R>,
        kind_of: fn(&str) -> Kind,
        cell: fn(&R, usize, Kind) -> Result<Cell, String>,
    ) -> Result<(), ConnectorError> {
        let mut acc: Option<Accumulator> = None;
        let mut start = self.watermark.clone();
        let mut offset = 0u64;
        let bad = |e: String| {
            ep.error(
                ErrorClass::InvalidRequest,
                format!("{}: cannot read the query's result: {e}", ep.describe()),
            )
        };
        // When the first row of the batch being filled came: it goes `max_wait` after.
        let mut oldest: Option<tokio::time::Instant> = None;
        loop {
            let due = oldest.and_then(|o| o.checked_add(self.config.max_wait));
            let row = match due {
                // Waiting for a row is cancelled, not the stream: it is polled on after.
                Some(due) => match tokio::time::timeout_at(due, next(stream)).await {
                    Ok(row) => row,
                    Err(_) => {
                        oldest = None;
                        if let Some(a) = &mut acc
                            && a.rows > 0
                        {
                            let done = self.emit(a, &mut start, &mut offset).map_err(bad)?;
                            if self.tx.send(Ok(done)).await.is_err() {
                                return Ok(());
                            }
                        }
                        continue;
                    }
                },
                None => next(stream).await,
            };
            let Some(row) = row else { break };
            let row = row.map_err(|e| ep.fatal(e, "reading the query's result"))?;
            let a = match &mut acc {
                Some(a) => a,
                None => {
                    let cols: Vec<(String, Kind)> = row
                        .columns()
                        .iter()
                        .map(|c| (c.name().to_owned(), kind_of(c.type_info().name())))
                        .collect();
                    let wm = match &self.config.watermark {
                        Some(w) => Some(
                            cols.iter()
                                .position(|(n, _)| n == &w.column)
                                .or_else(|| {
                                    cols.iter()
                                        .position(|(n, _)| n.eq_ignore_ascii_case(&w.column))
                                })
                                .ok_or_else(|| {
                                    bad(format!(
                                        "the watermark column `{}` is not in the result",
                                        w.column
                                    ))
                                })?,
                        ),
                        None => None,
                    };
                    let guard = match (&self.config.watermark, wm) {
                        (Some(w), Some(i)) => Some(self.guard(w, cols[i].1)),
                        _ => None,
                    };
                    let mut a = Accumulator::new(cols, wm, self.config.batch_rows);
                    a.guard = guard;
                    acc.insert(a)
                }
            };
            for i in 0..a.kinds.len() {
                let kind = a.kinds[i];
                let value = cell(&row, i, kind)
                    .map_err(|e| bad(format!("column `{}`: {e}", a.names[i])))?;
                a.bytes += value.size();
                a.push(i, value)
                    .map_err(|e| bad(format!("column `{}`: {e}", a.names[i])))?;
            }
            a.rows += 1;
            let first = *oldest.get_or_insert_with(tokio::time::Instant::now);
            if a.rows >= self.config.batch_rows.max(1)
                || a.bytes >= self.config.batch_bytes.max(1)
                || first.elapsed() >= self.config.max_wait
            {
                oldest = None;
                let done = self.emit(a, &mut start, &mut offset).map_err(bad)?;
                if self.tx.send(Ok(done)).await.is_err() {
                    return Ok(());
                }
                #[cfg(test)]
                if self.config.query.contains(tests::PANIC_AFTER_A_BATCH) {
                    panic!("a test's panic in the reader");
                }
            }
        }
        if let Some(a) = &mut acc {
            if a.rows > 0 {
                let done = self.emit(a, &mut start, &mut offset).map_err(bad)?;
                let _ = self.tx.send(Ok(done)).await;
            }
        }
        Ok(())
    }

    /// The guard of the watermark column: its type is the column's, or for text, a
    /// timestamp when the watermark the run starts from is one (else learned as rows come).
    fn guard(&self, w: &super::config::WatermarkConfig, kind: Kind) -> Guard {
        let mut g = Guard::new(&w.column, self.started, w.future_tolerance);
        match kind {
            Kind::Date | Kind::Timestamp { .. } => g.declare(WmKind::Time, false),
            Kind::I16 | Kind::I32 | Kind::I64 | Kind::U64 | Kind::F32 | Kind::F64 => {
                g.declare(WmKind::Number, false)
            }
            _ => {
                let start = self.watermark.as_ref().and_then(|v| v.as_str());
                if start.and_then(parse_time).is_some() {
                    g.declare(WmKind::Time, false);
                }
            }
        }
        g
    }

    fn emit(
        &self,
        a: &mut Accumulator,
        start: &mut Option<serde_json::Value>,
        offset: &mut u64,
    ) -> Result<SourceBatch, String> {
        let last = a.last_watermark.take();
        let records = a.finish()?;
        if let Some(g) = &mut a.guard {
            let at = format!(
                "rows {} to {} of the run",
                *offset + 1,
                *offset + records.num_rows() as u64
            );
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            for message in g.report(&at) {
                events.push(ConnectorEvent::new(
                    Some(ErrorClass::ContractChanged),
                    message,
                ));
            }
        }
        let position = match start {
            Some(w) => SourcePosition::Watermark(match w {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            None => SourcePosition::Offset(*offset),
        };
        *offset += records.num_rows() as u64;
        let checkpoint = match (&last, start.is_some()) {
            (Some(w), _) => {
                *start = Some(w.clone());
                Some(serde_json::json!({ "watermark": w }))
            }
            (None, true) => start.clone().map(|w| serde_json::json!({ "watermark": w })),
            (None, false) => None,
        };
        Ok(SourceBatch {
            batch: Batch::new(&self.pipeline, &self.node, position, records),
            checkpoint,
        })
    }
}

async fn connect<C>(
    ep: &Endpoint,
    fut: impl std::future::Future<Output = Result<C, sqlx::Error>>,
) -> Result<C, ConnectorError> {
    match tokio::time::timeout(ep.connect_timeout, fut).await {
        Ok(c) => c.map_err(|e| ep.fatal(e, "connecting")),
        Err(_) => Err(ep.fatal(sqlx::Error::PoolTimedOut, "connecting")),
    }
}

/// A timestamp in one of the forms a checkpoint holds: RFC 3339, or ISO 8601 without zone.
fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.naive_utc());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

/// The Arrow type a result column is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    I16,
    I32,
    I64,
    U64,
    F32,
    F64,
    Text,
    Json,
    Binary,
    Date,
    Timestamp { tz: bool },
    Time,
}

/// One value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    Time(NaiveTime),
}

impl Cell {
    /// The bytes the value counts for in `batching.max_bytes`: a text or binary value its
    /// length, a number, timestamp or time its 8 bytes, a date 4, a boolean 1, a null 0.
    fn size(&self) -> usize {
        match self {
            Cell::Null => 0,
            Cell::Bool(_) => 1,
            Cell::Date(_) => 4,
            Cell::I64(_) | Cell::U64(_) | Cell::F64(_) | Cell::Timestamp(_) | Cell::Time(_) => 8,
            Cell::Text(t) => t.len(),
            Cell::Bytes(b) => b.len(),
        }
    }

    /// The value as a watermark (JSON).
    fn watermark(&self, kind: Kind) -> Option<serde_json::Value> {
        Some(match self {
            Cell::Null => return None,
            Cell::Bool(b) => (*b).into(),
            Cell::I64(v) => (*v).into(),
            Cell::U64(v) => (*v).into(),
            Cell::F64(v) => serde_json::Number::from_f64(*v)?.into(),
            Cell::Text(s) => s.clone().into(),
            Cell::Bytes(_) => return None,
            Cell::Date(d) => d.format("%Y-%m-%d").to_string().into(),
            Cell::Timestamp(t) => {
                let mut s = t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
                if kind == (Kind::Timestamp { tz: true }) {
                    s.push('Z');
                }
                s.into()
            }
            Cell::Time(t) => t.format("%H:%M:%S%.6f").to_string().into(),
        })
    }
}

/// Arrow builders for the result's columns.
struct Accumulator {
    names: Vec<String>,
    kinds: Vec<Kind>,
    builders: Vec<Box<dyn ArrayBuilder>>,
    rows: usize,
    /// The bytes of the batch's values (see [`Cell::size`]).
    bytes: usize,
    watermark: Option<usize>,
    last_watermark: Option<serde_json::Value>,
    /// Which watermark values may become the checkpoint.
    guard: Option<Guard>,
}

impl Accumulator {
    fn new(columns: Vec<(String, Kind)>, watermark: Option<usize>, capacity: usize) -> Self {
        let cap = capacity.min(8192);
        let builders = columns
            .iter()
            .map(|(_, k)| -> Box<dyn ArrayBuilder> {
                match k {
                    Kind::Bool => Box::new(BooleanBuilder::with_capacity(cap)),
                    Kind::I16 => Box::new(Int16Builder::with_capacity(cap)),
                    Kind::I32 => Box::new(Int32Builder::with_capacity(cap)),
                    Kind::I64 => Box::new(Int64Builder::with_capacity(cap)),
                    Kind::U64 => Box::new(UInt64Builder::with_capacity(cap)),
                    Kind::F32 => Box::new(Float32Builder::with_capacity(cap)),
                    Kind::F64 => Box::new(Float64Builder::with_capacity(cap)),
                    Kind::Text | Kind::Json => {
                        Box::new(StringBuilder::with_capacity(cap, cap * 16))
                    }
                    Kind::Binary => Box::new(BinaryBuilder::with_capacity(cap, cap * 16)),
                    Kind::Date => Box::new(Date32Builder::with_capacity(cap)),
                    Kind::Timestamp { .. } => {
                        Box::new(TimestampMicrosecondBuilder::with_capacity(cap))
                    }
                    Kind::Time => Box::new(Time64MicrosecondBuilder::with_capacity(cap)),
                }
            })
            .collect();
        let (names, kinds) = columns.into_iter().unzip();
        Accumulator {
            names,
            kinds,
            builders,
            rows: 0,
            bytes: 0,
            watermark,
            last_watermark: None,
            guard: None,
        }
    }

    fn push(&mut self, i: usize, cell: Cell) -> Result<(), String> {
        let kind = self.kinds[i];
        if self.watermark == Some(i)
            && let Some(w) = cell.watermark(kind)
            && self.guard.as_mut().is_none_or(|g| g.admit(&w))
        {
            self.last_watermark = Some(w);
        }
        let b = self.builders[i].as_any_mut();
        let mismatch =
            |cell: &Cell| format!("a value {cell:?} does not fit the column's type {kind:?}");
        fn get<T: 'static>(b: &mut dyn std::any::Any) -> Result<&mut T, String> {
            b.downcast_mut::<T>()
                .ok_or_else(|| "internal: builder mismatch".to_owned())
        }
        match (kind, cell) {
            (Kind::Bool, Cell::Null) => get::<BooleanBuilder>(b)?.append_null(),
            (Kind::Bool, Cell::Bool(v)) => get::<BooleanBuilder>(b)?.append_value(v),
            (Kind::Bool, Cell::I64(v)) => get::<BooleanBuilder>(b)?.append_value(v != 0),
            (Kind::I16, Cell::Null) => get::<Int16Builder>(b)?.append_null(),
            (Kind::I16, Cell::I64(v)) => {
                get::<Int16Builder>(b)?.append_value(i16::try_from(v).map_err(|e| e.to_string())?)
            }
            (Kind::I32, Cell::Null) => get::<Int32Builder>(b)?.append_null(),
            (Kind::I32, Cell::I64(v)) => {
                get::<Int32Builder>(b)?.append_value(i32::try_from(v).map_err(|e| e.to_string())?)
            }
            (Kind::I64, Cell::Null) => get::<Int64Builder>(b)?.append_null(),
            (Kind::I64, Cell::I64(v)) => get::<Int64Builder>(b)?.append_value(v),
            (Kind::U64, Cell::Null) => get::<UInt64Builder>(b)?.append_null(),
            (Kind::U64, Cell::U64(v)) => get::<UInt64Builder>(b)?.append_value(v),
            (Kind::F32, Cell::Null) => get::<Float32Builder>(b)?.append_null(),
            (Kind::F32, Cell::F64(v)) => get::<Float32Builder>(b)?.append_value(v as f32),
            (Kind::F64, Cell::Null) => get::<Float64Builder>(b)?.append_null(),
            (Kind::F64, Cell::F64(v)) => get::<Float64Builder>(b)?.append_value(v),
            (Kind::F64, Cell::I64(v)) => get::<Float64Builder>(b)?.append_value(v as f64),
            (Kind::Text | Kind::Json, Cell::Null) => get::<StringBuilder>(b)?.append_null(),
            (Kind::Text | Kind::Json, Cell::Text(v)) => get::<StringBuilder>(b)?.append_value(v),
            (Kind::Text, Cell::I64(v)) => get::<StringBuilder>(b)?.append_value(v.to_string()),
            (Kind::Text, Cell::F64(v)) => get::<StringBuilder>(b)?.append_value(v.to_string()),
            (Kind::Text, Cell::Bytes(v)) => {
                get::<StringBuilder>(b)?.append_value(String::from_utf8_lossy(&v))
            }
            (Kind::Binary, Cell::Null) => get::<BinaryBuilder>(b)?.append_null(),
            (Kind::Binary, Cell::Bytes(v)) => get::<BinaryBuilder>(b)?.append_value(v),
            (Kind::Binary, Cell::Text(v)) => get::<BinaryBuilder>(b)?.append_value(v.as_bytes()),
            (Kind::Date, Cell::Null) => get::<Date32Builder>(b)?.append_null(),
            (Kind::Date, Cell::Date(d)) => {
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("no epoch")?;
                let days = i32::try_from((d - epoch).num_days()).map_err(|e| e.to_string())?;
                get::<Date32Builder>(b)?.append_value(days)
            }
            (Kind::Timestamp { .. }, Cell::Null) => {
                get::<TimestampMicrosecondBuilder>(b)?.append_null()
            }
            (Kind::Timestamp { .. }, Cell::Timestamp(t)) => {
                get::<TimestampMicrosecondBuilder>(b)?.append_value(t.and_utc().timestamp_micros())
            }
            (Kind::Time, Cell::Null) => get::<Time64MicrosecondBuilder>(b)?.append_null(),
            (Kind::Time, Cell::Time(t)) => {
                let micros = (t - NaiveTime::MIN)
                    .num_microseconds()
                    .ok_or("time out of range")?;
                get::<Time64MicrosecondBuilder>(b)?.append_value(micros)
            }
            (_, cell) => return Err(mismatch(&cell)),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordBatch, String> {
        let mut fields = Vec::with_capacity(self.kinds.len());
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.kinds.len());
        for ((name, kind), builder) in self.names.iter().zip(&self.kinds).zip(&mut self.builders) {
            let mut array = builder.finish();
            let data_type = match kind {
                Kind::Bool => DataType::Boolean,
                Kind::I16 => DataType::Int16,
                Kind::I32 => DataType::Int32,
                Kind::I64 => DataType::Int64,
                Kind::U64 => DataType::UInt64,
                Kind::F32 => DataType::Float32,
                Kind::F64 => DataType::Float64,
                Kind::Text | Kind::Json => DataType::Utf8,
                Kind::Binary => DataType::Binary,
                Kind::Date => DataType::Date32,
                Kind::Timestamp { tz } => {
                    let dt =
                        DataType::Timestamp(TimeUnit::Microsecond, tz.then(|| Arc::from("UTC")));
                    array = arrow::compute::cast(&array, &dt).map_err(|e| e.to_string())?;
                    dt
                }
                Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            };
            let mut field = Field::new(name, data_type, true);
            if *kind == Kind::Json {
                field = field.with_metadata(HashMap::from([(
                    "ARROW:extension:name".to_owned(),
                    "arrow.json".to_owned(),
                )]));
            }
            fields.push(field);
            arrays.push(array);
        }
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
    }
}

fn pg_kind(type_name: &str) -> Kind {
    match type_name {
        "BOOL" => Kind::Bool,
        "INT2" => Kind::I16,
        "INT4" => Kind::I32,
        "INT8" | "OID" => Kind::I64,
        "FLOAT4" => Kind::F32,
        "FLOAT8" => Kind::F64,
        "JSON" | "JSONB" => Kind::Json,
        "BYTEA" => Kind::Binary,
        "DATE" => Kind::Date,
        "TIMESTAMP" => Kind::Timestamp { tz: false },
        "TIMESTAMPTZ" => Kind::Timestamp { tz: true },
        "TIME" => Kind::Time,
        _ => Kind::Text,
    }
}

fn pg_cell(row: &sqlx::postgres::PgRow, i: usize, kind: Kind) -> Result<Cell, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let type_name = raw.type_info().name().to_owned();
    let e = |e: sqlx::Error| e.to_string();
    Ok(match kind {
        Kind::Bool => Cell::Bool(row.try_get(i).map_err(e)?),
        Kind::I16 => Cell::I64(row.try_get::<i16, _>(i).map_err(e)?.into()),
        Kind::I32 => Cell::I64(row.try_get::<i32, _>(i).map_err(e)?.into()),
        Kind::I64 if type_name == "OID" => Cell::I64(
            row.try_get::<sqlx::postgres::types::Oid, _>(i)
                .map_err(e)?
                .0
                .into(),
        ),
        Kind::I64 => Cell::I64(row.try_get(i).map_err(e)?),
        Kind::F32 => Cell::F64(row.try_get::<f32, _>(i).map_err(e)?.into()),
        Kind::F64 => Cell::F64(row.try_get(i).map_err(e)?),
        Kind::Binary => Cell::Bytes(row.try_get(i).map_err(e)?),
        Kind::Date => Cell::Date(row.try_get(i).map_err(e)?),
        Kind::Timestamp { tz: false } => Cell::Timestamp(row.try_get(i).map_err(e)?),
        Kind::Timestamp { tz: true } => Cell::Timestamp(
            row.try_get::<DateTime<sqlx::types::chrono::Utc>, _>(i)
                .map_err(e)?
                .naive_utc(),
        ),
        Kind::Time => Cell::Time(row.try_get(i).map_err(e)?),
        Kind::Json | Kind::Text | Kind::U64 => {
            let bytes = raw.as_bytes().map_err(|e| e.to_string())?;
            match type_name.as_str() {
                "NUMERIC" => Cell::Text(postgres::numeric_text(bytes)?),
                "JSONB" => Cell::Text(String::from_utf8_lossy(bytes.get(1..).unwrap_or_default()).into_owned()),
                "UUID" if bytes.len() == 16 => Cell::Text(uuid_text(bytes)),
                _ => Cell::Text(String::from_utf8(bytes.to_vec()).map_err(|_| {
                    format!("type {type_name} cannot be read as text: cast it in the query (`CAST(col AS text)`)")
                })?),
            }
        }
    })
}

fn uuid_text(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn mysql_kind(type_name: &str) -> Kind {
    match type_name {
        "BOOLEAN" => Kind::Bool,
        "BIGINT UNSIGNED" | "BIT" => Kind::U64,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => Kind::I64,
        n if n.ends_with("UNSIGNED") => Kind::I64,
        "FLOAT" => Kind::F32,
        "DOUBLE" => Kind::F64,
        "JSON" => Kind::Json,
        "DATE" => Kind::Date,
        "DATETIME" => Kind::Timestamp { tz: false },
        "TIMESTAMP" => Kind::Timestamp { tz: true },
        "TIME" => Kind::Time,
        n if n.contains("BLOB") || n.contains("BINARY") => Kind::Binary,
        _ => Kind::Text,
    }
}

fn mysql_cell(row: &sqlx::mysql::MySqlRow, i: usize, kind: Kind) -> Result<Cell, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let unsigned = raw.type_info().name().ends_with("UNSIGNED");
    let e = |e: sqlx::Error| e.to_string();
    Ok(match kind {
        Kind::Bool => Cell::Bool(row.try_get_unchecked::<i64, _>(i).map_err(e)? != 0),
        Kind::U64 => Cell::U64(row.try_get_unchecked(i).map_err(e)?),
        Kind::I16 | Kind::I32 | Kind::I64 if unsigned => {
            let v: u64 = row.try_get_unchecked(i).map_err(e)?;
            Cell::I64(i64::try_from(v).map_err(|e| e.to_string())?)
        }
        Kind::I16 | Kind::I32 | Kind::I64 => Cell::I64(row.try_get_unchecked(i).map_err(e)?),
        Kind::F32 => Cell::F64(row.try_get_unchecked::<f32, _>(i).map_err(e)?.into()),
        Kind::F64 => Cell::F64(row.try_get_unchecked(i).map_err(e)?),
        Kind::Binary => Cell::Bytes(row.try_get_unchecked(i).map_err(e)?),
        Kind::Date => Cell::Date(row.try_get_unchecked(i).map_err(e)?),
        Kind::Timestamp { .. } => Cell::Timestamp(row.try_get_unchecked(i).map_err(e)?),
        Kind::Time => Cell::Time(row.try_get_unchecked(i).map_err(e)?),
        Kind::Text | Kind::Json => {
            let bytes: Vec<u8> = row.try_get_unchecked(i).map_err(e)?;
            Cell::Text(
                String::from_utf8(bytes)
                    .map_err(|_| "a value is not valid UTF-8: cast it in the query".to_owned())?,
            )
        }
    })
}

fn sqlite_kind(type_name: &str) -> Kind {
    match type_name {
        "INTEGER" => Kind::I64,
        "REAL" => Kind::F64,
        "BOOLEAN" => Kind::Bool,
        "BLOB" => Kind::Binary,
        _ => Kind::Text,
    }
}

fn sqlite_cell(row: &sqlx::sqlite::SqliteRow, i: usize, _kind: Kind) -> Result<Cell, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let storage = raw.type_info().name().to_owned();
    let e = |e: sqlx::Error| e.to_string();
    Ok(match storage.as_str() {
        "INTEGER" | "BOOLEAN" => Cell::I64(row.try_get_unchecked(i).map_err(e)?),
        "REAL" => Cell::F64(row.try_get_unchecked(i).map_err(e)?),
        "BLOB" => Cell::Bytes(row.try_get_unchecked(i).map_err(e)?),
        _ => Cell::Text(row.try_get_unchecked(i).map_err(e)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a query (as a comment), makes the reading task panic after its first batch.
    pub(super) const PANIC_AFTER_A_BATCH: &str = "/* test: panic after a batch */";

    /// A reading task that panics closes the channel as the end of the data would: the
    /// source tells it as `internal`, with the panic's message, instead of the end.
    #[tokio::test]
    async fn a_panic_in_the_reading_task_is_an_internal_error_not_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let mut conn = sqlx::SqliteConnection::connect_with(&options.create_if_missing(true))
            .await
            .unwrap();
        conn.execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3);",
        )
        .await
        .unwrap();
        conn.close().await.unwrap();

        let mut config = SqlSourceConfig::new(
            &url,
            format!("SELECT id FROM t ORDER BY id {PANIC_AFTER_A_BATCH}"),
        );
        config.batch_rows = 1;
        let mut source = SqlSource::new(config, "p", "src", None).unwrap();
        let first = source.next_batch().await.unwrap().expect("the first batch");
        assert_eq!(first.batch.num_rows(), 1);
        let err = source
            .next_batch()
            .await
            .expect_err("the panic is an error, not the end of the data");
        assert_eq!(err.class, ErrorClass::Internal, "{err}");
        assert!(
            err.message
                .contains("panicked: a test's panic in the reader"),
            "{err}"
        );
        // And it stays one: a later call does not take the closed channel for the end.
        let again = source.next_batch().await.expect_err("still an error");
        assert_eq!(again.class, ErrorClass::Internal, "{again}");

        // Without the marker, the same query reads its three rows to the end.
        let mut config = SqlSourceConfig::new(&url, "SELECT id FROM t ORDER BY id");
        config.batch_rows = 1;
        let mut source = SqlSource::new(config, "p", "src", None).unwrap();
        let mut rows = 0;
        while let Some(b) = source.next_batch().await.unwrap() {
            rows += b.batch.num_rows();
        }
        assert_eq!(rows, 3);
        assert!(source.next_batch().await.unwrap().is_none());
    }

    /// A SQLite file holding `t(id, name)` with `rows` rows whose names are 100 bytes.
    async fn table(dir: &std::path::Path, rows: usize) -> String {
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let mut conn = sqlx::SqliteConnection::connect_with(&options.create_if_missing(true))
            .await
            .unwrap();
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
            .await
            .unwrap();
        for i in 1..=rows {
            sqlx::query("INSERT INTO t VALUES (?, ?)")
                .bind(i as i64)
                .bind(format!("{i:0>100}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
        url
    }

    /// The rows of each batch of a whole run.
    async fn batches(config: SqlSourceConfig) -> Vec<usize> {
        let mut source = SqlSource::new(config, "p", "src", None).unwrap();
        let mut rows = Vec::new();
        while let Some(b) = source.next_batch().await.unwrap() {
            rows.push(b.batch.num_rows());
        }
        rows
    }

    /// `batch_bytes` cuts a batch at the row that reaches it (a row of `t` counts 108
    /// bytes: its 8-byte id and 100-byte name); `batch_rows` alone does not decide.
    #[tokio::test]
    async fn batches_end_at_the_row_that_reaches_batch_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let url = table(dir.path(), 10).await;
        let mut config = SqlSourceConfig::new(&url, "SELECT id, name FROM t ORDER BY id");
        config.batch_rows = 1000;
        config.batch_bytes = 250;
        config.max_wait = Duration::from_secs(3600);
        assert_eq!(batches(config.clone()).await, vec![3, 3, 3, 1]);
        config.batch_bytes = 4 << 20;
        config.batch_rows = 4;
        assert_eq!(batches(config).await, vec![4, 4, 2]);
    }

    /// A batch goes once its first row waited `max_wait`: with none, a batch a row.
    #[tokio::test]
    async fn a_batch_goes_once_its_first_row_waited_max_wait() {
        let dir = tempfile::tempdir().unwrap();
        let url = table(dir.path(), 5).await;
        let mut config = SqlSourceConfig::new(&url, "SELECT id, name FROM t ORDER BY id");
        config.batch_rows = 1000;
        config.max_wait = Duration::ZERO;
        assert_eq!(batches(config.clone()).await, vec![1; 5]);
        config.max_wait = Duration::from_secs(3600);
        assert_eq!(batches(config).await, vec![5]);
    }

    #[test]
    fn watermark_is_found_outside_strings_and_comments() {
        let q = "SELECT ':watermark', \":watermark\" FROM t -- :watermark\n WHERE a > :watermark AND b::text = :watermarks /* :watermark */ OR c <= :watermark";
        assert_eq!(count_watermark_uses(q), 2);
        let mut n = 0;
        let out = rewrite_watermark(q, |i| {
            n += 1;
            format!("${}", i + 1)
        });
        assert!(out.contains("a > $1 AND b::text = :watermarks"), "{out}");
        assert!(out.ends_with("c <= $2"), "{out}");
        assert!(out.starts_with("SELECT ':watermark'"), "{out}");
    }

    #[test]
    fn casts_are_not_watermarks() {
        assert_eq!(count_watermark_uses("SELECT x::watermark"), 0);
        assert_eq!(count_watermark_uses("SELECT 'é' || :watermark"), 1);
    }

    #[test]
    fn checkpoints_parse_back() {
        assert!(parse_datetime("2024-01-02T03:04:05Z").is_some());
        assert!(parse_datetime("2024-01-02T03:04:05.123456").is_some());
        assert!(parse_datetime("2024-01-02 03:04:05").is_some());
        assert!(parse_datetime("soon").is_none());
    }
}
