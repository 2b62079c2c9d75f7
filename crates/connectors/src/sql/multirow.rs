//! Multi-row `INSERT … VALUES (…), (…)` statements (MySQL, SQLite, and small batches on
//! PostgreSQL): how many rows go in one statement under the engine's placeholder limit and
//! byte budget, and the write of a job with them.

use super::db;
use super::error::{Endpoint, Failure};
use super::sink::{Job, Settings};
use super::types::{Column, Kind, Typed, Value};
use sqlx::{AssertSqlSafe, Database, Encode, Executor, IntoArguments, Transaction, Type};

/// The text around the rows of a multi-row insert.
#[derive(Debug, Clone)]
pub(crate) struct InsertSql {
    /// `INSERT INTO t (a, b) VALUES `
    pub(crate) prefix: String,
    /// Per column, the text before and after its placeholder (`CAST(` and ` AS numeric)`).
    pub(crate) wraps: Vec<(String, String)>,
    /// Placeholders are numbered (`$1`, PostgreSQL) rather than `?`.
    pub(crate) numbered: bool,
    /// ` ON CONFLICT … ` / ` ON DUPLICATE KEY UPDATE …`, or empty.
    pub(crate) suffix: String,
}

impl InsertSql {
    /// `?` placeholders, bare.
    pub(crate) fn new(prefix: String, columns: usize, suffix: String) -> InsertSql {
        InsertSql {
            prefix,
            wraps: vec![(String::new(), String::new()); columns],
            numbered: false,
            suffix,
        }
    }

    /// The statement for `rows` rows.
    pub(crate) fn statement(&self, rows: usize) -> String {
        let mut sql =
            String::with_capacity(self.prefix.len() + rows * self.row_text() + self.suffix.len());
        sql.push_str(&self.prefix);
        let mut n = 0usize;
        for i in 0..rows {
            sql.push_str(if i > 0 { ", (" } else { "(" });
            for (j, (before, after)) in self.wraps.iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(before);
                if self.numbered {
                    n += 1;
                    sql.push('$');
                    sql.push_str(&n.to_string());
                } else {
                    sql.push('?');
                }
                sql.push_str(after);
            }
            sql.push(')');
        }
        sql.push_str(&self.suffix);
        sql
    }

    /// Bytes of statement text each row adds (at most).
    pub(crate) fn row_text(&self) -> usize {
        4 + self
            .wraps
            .iter()
            .map(|(b, a)| b.len() + a.len() + 8)
            .sum::<usize>()
    }
}

/// How one layout of columns is written with multi-row inserts.
pub(crate) struct Plan {
    pub(crate) insert: InsertSql,
    pub(crate) kinds: Vec<Kind>,
    pub(crate) limits: Limits,
    /// The statement that empties the table for `replace`.
    pub(crate) truncate: String,
}

/// Binds one value, knowing its column's kind.
pub(crate) type Bind<A> = fn(&mut A, Value<'_>, Kind) -> Result<(), String>;

/// Writes the job in the open transaction `tx` (ledger row, then the rows in as many
/// statements as the limits ask), and commits.
pub(crate) async fn write<DB>(
    mut tx: Transaction<'_, DB>,
    ep: &Endpoint,
    settings: &Settings,
    plan: &Plan,
    job: &Job<'_>,
    bind: Bind<DB::Arguments>,
) -> Result<usize, Failure>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    DB::Arguments: IntoArguments<DB>,
{
    // Each part its statements (a part's rows are cut to the limits on their own).
    let mut work = Vec::with_capacity(job.parts.len());
    for columns in job.parts {
        let typed: Vec<Typed<'_>> = columns.iter().map(Column::typed).collect();
        let rows = columns.first().map_or(0, |c| c.array.len());
        let cuts = statements(&typed, rows, plan.limits, plan.insert.row_text())
            .map_err(|size| ep.too_large(size, plan.limits.max_bytes))?;
        work.push((typed, cuts));
    }
    let truncate = job.truncate.map(|load| (plan.truncate.as_str(), load));
    db::begin_write::<DB>(&mut tx, ep, settings, job.entries, truncate).await?;
    for (typed, cuts) in &work {
        for &(start, len) in cuts {
            let mut args = DB::Arguments::default();
            for row in start..start + len {
                for (t, kind) in typed.iter().zip(&plan.kinds) {
                    let value = t.value(row).map_err(|p| ep.bad_value(p))?;
                    bind(&mut args, value, *kind).map_err(|p| ep.bad_value(p))?;
                }
            }
            sqlx::query_with(AssertSqlSafe(plan.insert.statement(len)), args)
                .execute(&mut *tx)
                .await
                .map_err(|e| ep.classify(e, "inserting rows"))?;
        }
    }
    tx.commit()
        .await
        .map_err(|e| ep.classify(e, "committing"))?;
    Ok(super::sink::rows_of(job.parts))
}

/// The bounds of one statement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_rows: usize,
    pub(crate) max_params: usize,
    pub(crate) max_bytes: usize,
}

/// A rough count of the bytes a value takes in a statement (binary protocol: the value,
/// its length prefix and its type tag).
pub(crate) fn wire_size(t: &Typed<'_>, row: usize) -> usize {
    if t.is_null(row) {
        return 3;
    }
    match t {
        Typed::Text(a) => a.value(row).len() + 11,
        Typed::Binary(a) => a.value(row).len() + 11,
        Typed::Decimal(..) => 52,
        _ => 14,
    }
}

/// Cuts rows `0..rows` into statements within `limits`: `(first, len)` each. A row that
/// alone exceeds the byte budget is an error carrying its size.
pub(crate) fn statements(
    typed: &[Typed<'_>],
    rows: usize,
    limits: Limits,
    row_text: usize,
) -> Result<Vec<(usize, usize)>, usize> {
    let per_statement = limits
        .max_rows
        .min(limits.max_params / typed.len().max(1))
        .max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0usize, 0usize);
    for row in 0..rows {
        let size = row_text + typed.iter().map(|t| wire_size(t, row)).sum::<usize>();
        if size > limits.max_bytes {
            return Err(size);
        }
        let len = row - start;
        if len > 0 && (len >= per_statement || bytes + size > limits.max_bytes) {
            out.push((start, len));
            start = row;
            bytes = 0;
        }
        bytes += size;
    }
    if rows > start {
        out.push((start, rows - start));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn statements_respect_rows_params_and_bytes() {
        let ids = Int64Array::from((0..10).collect::<Vec<i64>>());
        let text = StringArray::from(vec!["x".repeat(100); 10]);
        let typed = [Typed::Int64(&ids), Typed::Text(&text)];
        let unlimited = Limits {
            max_rows: usize::MAX,
            max_params: usize::MAX,
            max_bytes: usize::MAX,
        };
        assert_eq!(statements(&typed, 10, unlimited, 8).unwrap(), vec![(0, 10)]);
        let rows4 = Limits {
            max_rows: 4,
            ..unlimited
        };
        assert_eq!(
            statements(&typed, 10, rows4, 8).unwrap(),
            vec![(0, 4), (4, 4), (8, 2)]
        );
        let params6 = Limits {
            max_params: 6,
            ..unlimited
        };
        assert_eq!(statements(&typed, 10, params6, 8).unwrap().len(), 4);
        // Each row is 8 + 14 + 111 = 133 bytes: three fit in 400.
        let bytes = Limits {
            max_bytes: 400,
            ..unlimited
        };
        assert_eq!(
            statements(&typed, 10, bytes, 8).unwrap(),
            vec![(0, 3), (3, 3), (6, 3), (9, 1)]
        );
        let tiny = Limits {
            max_bytes: 100,
            ..unlimited
        };
        assert_eq!(statements(&typed, 10, tiny, 8), Err(133));
    }

    #[test]
    fn statement_text_has_one_group_per_row() {
        let sql = InsertSql::new(
            "INSERT INTO t (a, b) VALUES ".into(),
            2,
            " ON CONFLICT DO NOTHING".into(),
        );
        assert_eq!(
            sql.statement(2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING"
        );
        let numbered = InsertSql {
            wraps: vec![
                (String::new(), String::new()),
                ("CAST(".into(), " AS jsonb)".into()),
            ],
            numbered: true,
            ..sql
        };
        assert_eq!(
            numbered.statement(2),
            "INSERT INTO t (a, b) VALUES ($1, CAST($2 AS jsonb)), ($3, CAST($4 AS jsonb)) ON CONFLICT DO NOTHING"
        );
    }
}
