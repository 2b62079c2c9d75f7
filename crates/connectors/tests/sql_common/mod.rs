//! What the SQL test binaries share: the three targets (a fresh PostgreSQL schema, a fresh
//! MariaDB database, a SQLite file), read-back queries, and records (made batches by
//! `sluice_testkit::batches::page_batch`).

#![allow(dead_code, unreachable_pub)]

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array,
    RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field};
use sluice_connectors::sql::SqlSinkConfig;
use sqlx::{AssertSqlSafe, MySqlPool, PgPool, Row, SqlitePool};
use std::sync::Arc;

/// Runs the same code on whichever pool the target has.
macro_rules! on_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Pg($p) => $body,
            Db::My($p) => $body,
            Db::Lite($p) => $body,
        }
    };
}

pub enum Db {
    Pg(PgPool),
    My(MySqlPool),
    Lite(SqlitePool),
}

pub struct Target {
    pub name: &'static str,
    pub url: String,
    pub db: Db,
    _guard: Box<dyn std::any::Any + Send>,
}

pub async fn postgres() -> Target {
    let schema = sluice_testkit::postgres_schema("sqlsink").await;
    let pool = PgPool::connect(&schema.url)
        .await
        .expect("connect to PostgreSQL");
    Target {
        name: "postgres",
        url: schema.url.clone(),
        db: Db::Pg(pool),
        _guard: Box::new(schema),
    }
}

pub async fn mariadb() -> Target {
    let db = sluice_testkit::mysql_database("sqlsink").await;
    let pool = MySqlPool::connect(&db.url)
        .await
        .expect("connect to MariaDB");
    Target {
        name: "mariadb",
        url: db.url.clone(),
        db: Db::My(pool),
        _guard: Box::new(db),
    }
}

pub async fn sqlite() -> Target {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("sink.db").display());
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let pool = SqlitePool::connect_with(options.create_if_missing(true))
        .await
        .expect("open SQLite");
    Target {
        name: "sqlite",
        url,
        db: Db::Lite(pool),
        _guard: Box::new(dir),
    }
}

impl Target {
    pub fn config(&self, table: &str) -> SqlSinkConfig {
        let mut c = SqlSinkConfig::new(self.url.clone(), table);
        c.connect_timeout_ms = 3_000;
        c
    }

    /// `name` quoted for this engine.
    pub fn q(&self, name: &str) -> String {
        match self.db {
            Db::My(_) => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// The engine's name of a text type for `CAST(... AS ...)`.
    pub fn text_type(&self) -> &'static str {
        match self.db {
            Db::My(_) => "CHAR",
            _ => "TEXT",
        }
    }

    pub async fn exec(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        let r = on_pool!(&self.db, p => sqlx::raw_sql(sql).execute(p).await.map(|_| ()));
        r.unwrap_or_else(|e| panic!("{}: {e}", self.name));
    }

    /// The first column of every row of `sql`, as text.
    pub async fn strings(&self, sql: &str) -> Vec<Option<String>> {
        let sql = AssertSqlSafe(sql.to_owned());
        on_pool!(&self.db, p => {
            let rows = sqlx::query(sql).fetch_all(p).await.unwrap();
            rows.iter()
                .map(|r| {
                    let bytes: Option<Vec<u8>> = r.try_get_unchecked(0).unwrap();
                    bytes.map(|b| String::from_utf8(b).unwrap())
                })
                .collect()
        })
    }

    /// The first column of every row of `sql`, as integers.
    pub async fn ints(&self, sql: &str) -> Vec<i64> {
        let sql = AssertSqlSafe(sql.to_owned());
        on_pool!(&self.db, p => {
            let rows = sqlx::query(sql).fetch_all(p).await.unwrap();
            rows.iter().map(|r| r.get(0)).collect()
        })
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.ints(&format!("SELECT COUNT(*) FROM {}", self.q(table)))
            .await[0]
    }

    /// The ids in `table`, sorted.
    pub async fn ids(&self, table: &str) -> Vec<i64> {
        self.ints(&format!(
            "SELECT {} FROM {} ORDER BY 1",
            self.q("id"),
            self.q(table)
        ))
        .await
    }

    /// The column names of `table`, in order.
    pub async fn columns(&self, table: &str) -> Vec<String> {
        let sql = match &self.db {
            Db::Pg(_) => format!(
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name = '{}' ORDER BY ordinal_position",
                table.replace('\'', "''")
            ),
            Db::My(_) => format!(
                "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = '{}' ORDER BY ORDINAL_POSITION",
                table.replace('\'', "''")
            ),
            Db::Lite(_) => format!(
                "SELECT name FROM pragma_table_info('{}')",
                table.replace('\'', "''")
            ),
        };
        self.strings(&sql).await.into_iter().flatten().collect()
    }
}

/// `url` with its `host:port` replaced.
pub fn with_address(url: &str, address: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{userinfo}{address}{tail}")
}

/// `url` with its password replaced.
pub fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    format!("{scheme}://{user}:{password}@{host}")
}

/// Rows `start..start + n` with a column of each common type; `id` is unique.
pub fn records(start: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let json = StructArray::from(vec![(
        Arc::new(Field::new("k", DataType::Int64, true)),
        Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
    )]);
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("name {i} ✓")),
            )),
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from_iter_values(ids.iter().map(|i| i128::from(*i) * 101 - 5))
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
        ),
        (
            "score",
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| *i as f64 / 4.0),
            )),
        ),
        (
            "active",
            Arc::new(BooleanArray::from_iter(
                ids.iter().map(|i| Some(i % 2 == 0)),
            )),
        ),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    ids.iter().map(|i| 1_700_000_000_000_000 + i * 1_000_001),
                )
                .with_timezone("UTC"),
            ),
        ),
        (
            "day",
            Arc::new(Date32Array::from_iter_values(
                ids.iter().map(|i| 19_000 + (*i % 1000) as i32),
            )),
        ),
        (
            "blob",
            Arc::new(BinaryArray::from_iter_values(
                ids.iter().map(|i| i.to_le_bytes()),
            )),
        ),
        ("doc", Arc::new(json)),
    ])
    .unwrap()
}

/// Two columns: `id` and `name` (with `None` for null names).
pub fn names(ids: &[i64], names: &[Option<&str>]) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
        (
            "name",
            Arc::new(StringArray::from(names.to_vec())) as ArrayRef,
        ),
    ])
    .unwrap()
}
