//! `sluice reconcile`'s view of a database: a source's query or a sink's table, counted
//! and checksummed by key range in the database itself (only the keys of the ranges that
//! differ leave it).

use super::config::Dialect;
use super::doctor::{Db, connect, literal};
use super::ident::{TableName, quote};
use sluice_config::reconcile::{Bucket, CHECKSUM_MODULUS, KeySet, Since};
use sluice_core::ConnectorError;
use sluice_core::node::BoxFuture;
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the records are read from.
pub(crate) enum From {
    /// A source's query (`:watermark` filled with its initial value: everything).
    Query(String),
    /// A sink's table.
    Table(String),
}

/// A query or table of one database.
pub(crate) struct SqlKeySet {
    url: String,
    from: From,
    shown: String,
    timeout: Duration,
    since_column: Option<String>,
    db: Option<Db>,
}

impl SqlKeySet {
    pub(crate) fn new(
        url: String,
        shown_url: String,
        from: From,
        timeout: Duration,
        since_column: Option<String>,
    ) -> Self {
        let shown = match &from {
            From::Query(_) => format!("the query of {shown_url}"),
            From::Table(t) => format!("table {t} of {shown_url}"),
        };
        SqlKeySet {
            url,
            from,
            shown,
            timeout,
            since_column,
            db: None,
        }
    }

    async fn db(&mut self) -> Result<&Db, ConnectorError> {
        if self.db.is_none() {
            self.db = Some(connect(&self.url, self.timeout).await?);
        }
        Ok(self.db.as_ref().expect("just connected"))
    }

    /// `FROM ...` with the `since` filter, for `dialect`, named [`RECORDS`]: its columns
    /// are read as [`column`]s of it.
    fn source(&self, dialect: Dialect, since: Option<&Since>) -> String {
        let base = match &self.from {
            From::Query(q) => format!("({q})"),
            From::Table(t) => TableName::parse(None, t).sql(dialect),
        };
        match since {
            Some(s) => format!(
                "(SELECT * FROM {base} AS {RECORDS} WHERE {} >= {}) AS {RECORDS}",
                column(dialect, &s.column),
                literal(&s.value)
            ),
            None => format!("{base} AS {RECORDS}"),
        }
    }

    /// Runs `sql` and reads each row's integers.
    async fn rows(&mut self, sql: String, doing: &str) -> Result<Vec<Vec<i64>>, ConnectorError> {
        let db = self.db().await?;
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&db.pool)
            .await
            .map_err(|e| db.ep.fatal(e, doing))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<Option<i64>, _>(i)
                            .map(Option::unwrap_or_default)
                    })
                    .collect::<Result<Vec<i64>, _>>()
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| db.ep.fatal(e, doing))
    }

    async fn dialect(&mut self) -> Result<Dialect, ConnectorError> {
        Ok(self.db().await?.dialect)
    }
}

/// The name the records are read under.
const RECORDS: &str = "records";

/// A column of the records, qualified: unqualified, a double-quoted name that is no column
/// is a string literal to SQLite, so a key the table has not would read as one value for
/// every row (and every record as missing) instead of failing with "no such column".
fn column(dialect: Dialect, name: &str) -> String {
    format!("{RECORDS}.{}", quote(dialect, name))
}

/// `CAST(x AS BIGINT)` in the dialect.
fn bigint(dialect: Dialect, x: &str) -> String {
    match dialect {
        Dialect::Mysql => format!("CAST({x} AS SIGNED)"),
        _ => format!("CAST({x} AS BIGINT)"),
    }
}

/// `key / width`, truncating, in the dialect.
fn bucket_of(dialect: Dialect, key: &str, width: i64) -> String {
    let k = bigint(dialect, &column(dialect, key));
    match dialect {
        Dialect::Mysql => format!("({k} DIV {width})"),
        _ => format!("({k} / {width})"),
    }
}

impl KeySet for SqlKeySet {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn since_column(&self) -> Option<String> {
        self.since_column.clone()
    }

    fn count<'a>(
        &'a mut self,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<i64, ConnectorError>> {
        Box::pin(async move {
            let d = self.dialect().await?;
            let sql = format!(
                "SELECT {} FROM {}",
                bigint(d, "COUNT(*)"),
                self.source(d, since)
            );
            let rows = self.rows(sql, "counting the records").await?;
            Ok(rows.first().and_then(|r| r.first()).copied().unwrap_or(0))
        })
    }

    fn bounds<'a>(
        &'a mut self,
        key: &'a str,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, ConnectorError>> {
        Box::pin(async move {
            let d = self.dialect().await?;
            let k = bigint(d, &column(d, key));
            let sql = format!(
                "SELECT MIN({k}), MAX({k}), {} FROM {}",
                bigint(d, "COUNT(*)"),
                self.source(d, since)
            );
            let rows = self.rows(sql, "reading the key range").await?;
            Ok(rows
                .first()
                .filter(|r| r.get(2).copied().unwrap_or(0) > 0)
                .map(|r| (r[0], r[1])))
        })
    }

    fn buckets<'a>(
        &'a mut self,
        key: &'a str,
        width: i64,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<BTreeMap<i64, Bucket>, ConnectorError>> {
        Box::pin(async move {
            let d = self.dialect().await?;
            let b = bucket_of(d, key, width);
            let k = bigint(d, &column(d, key));
            let sql = format!(
                "SELECT {b}, {}, {} FROM {} GROUP BY {b}",
                bigint(d, "COUNT(*)"),
                bigint(d, &format!("SUM({k} % {CHECKSUM_MODULUS})")),
                self.source(d, since)
            );
            let rows = self.rows(sql, "checksumming the key ranges").await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    (
                        r[0],
                        Bucket {
                            count: r[1],
                            sum: r[2],
                        },
                    )
                })
                .collect())
        })
    }

    fn keys<'a>(
        &'a mut self,
        key: &'a str,
        width: i64,
        bucket: i64,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<Vec<i64>, ConnectorError>> {
        Box::pin(async move {
            let d = self.dialect().await?;
            let k = bigint(d, &column(d, key));
            let sql = format!(
                "SELECT {k} FROM {} WHERE {} = {bucket} ORDER BY 1",
                self.source(d, since),
                bucket_of(d, key, width)
            );
            let rows = self.rows(sql, "reading the keys of a range").await?;
            Ok(rows
                .into_iter()
                .filter_map(|r| r.first().copied())
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite reads an unknown double-quoted name as a string: unqualified, a key the
    /// table has not would be one value for every row. Qualified, it is an error.
    #[tokio::test]
    async fn a_key_the_table_has_not_is_an_error_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = connect(&url, Duration::from_secs(5)).await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER, at TEXT)")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1, '2026-01-01'), (5, '2026-02-01')")
            .execute(&db.pool)
            .await
            .unwrap();
        for from in [
            From::Table("t".into()),
            From::Query("SELECT * FROM t".into()),
        ] {
            let mut set =
                SqlKeySet::new(url.clone(), "t".into(), from, Duration::from_secs(5), None);
            assert_eq!(set.bounds("id", None).await.unwrap(), Some((1, 5)));
            let since = Since {
                column: "at".into(),
                value: "2026-01-15".into(),
            };
            assert_eq!(set.count(Some(&since)).await.unwrap(), 1);
            let e = set.bounds("number", None).await.unwrap_err();
            assert!(e.to_string().contains("no such column"), "{e}");
        }
    }
}
