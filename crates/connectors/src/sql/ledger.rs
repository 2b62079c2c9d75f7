//! The batch ledger: one row per written batch (or part of a batch), inserted in the same
//! transaction as the batch's rows.
//!
//! ```text
//! _sluice_ledger(target, batch_id, parent_id, first_row, rows, pipeline, node, committed_at)
//!   primary key (target, batch_id), index (target, parent_id)
//! ```
//!
//! `batch_id` is [`Batch::ledger_key`]: the batch id, or `parent:first+rows` for a part.
//! `target` is the written table, so two sinks fed by the same batches keep apart.
//! `parent_id`, `first_row` and `rows` say which rows of the original batch the entry
//! covers: a batch delivered again is compared with the ranges already written, and only
//! the rows no entry covers are written — however the batch was split before.

use super::config::Dialect;
use super::ident::{TableName, quote};
use sluice_core::Batch;

/// The ledger entry of a batch or part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) parent: String,
    pub(crate) first_row: i64,
    pub(crate) rows: i64,
    pub(crate) pipeline: String,
    pub(crate) node: String,
}

impl Entry {
    pub(crate) fn of(batch: &Batch) -> Entry {
        let (parent, first_row) = parent_and_base(batch);
        Entry {
            key: batch.ledger_key().as_str().to_owned(),
            parent,
            first_row: first_row as i64,
            rows: batch.num_rows() as i64,
            pipeline: batch.pipeline.clone(),
            node: batch.node.clone(),
        }
    }
}

/// The original batch's id and the first of its rows that `batch` holds.
pub(crate) fn parent_and_base(batch: &Batch) -> (String, usize) {
    match &batch.part {
        None => (batch.id.as_str().to_owned(), 0),
        Some(p) => (p.parent.as_str().to_owned(), p.first_row),
    }
}

/// The parts of rows `first..first + rows` (of the original batch) that no `(first_row,
/// rows)` range in `covered` holds, as `(offset, len)` relative to `first`.
pub(crate) fn uncovered(first: usize, rows: usize, covered: &[(i64, i64)]) -> Vec<(usize, usize)> {
    let end = first + rows;
    let mut ranges: Vec<(usize, usize)> = covered
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|&(s, n)| (s.max(0) as usize, (s.max(0) + n) as usize))
        .filter(|&(s, e)| e > first && s < end)
        .collect();
    ranges.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = first;
    for (s, e) in ranges {
        if s > at {
            gaps.push((at - first, s - at));
        }
        at = at.max(e);
        if at >= end {
            break;
        }
    }
    if at < end {
        gaps.push((at - first, end - at));
    }
    gaps
}

/// The `parent_id` of a target's load row: `batch_id` holds the load (the run that
/// began it) whose `replace` emptied the table. Batch ids are hex, so no batch has it.
pub(crate) const LOAD_PARENT: &str = "sluice:load";

/// The ledger's statements for one dialect and table.
#[derive(Debug, Clone)]
pub(crate) struct LedgerSql {
    pub(crate) create: Vec<String>,
    /// The lookup of the ranges written of some parents: [`LedgerSql::covered_of`] ends it.
    covered_head: String,
    /// `insert` up to its `VALUES`: [`LedgerSql::insert_of`] ends it.
    insert_head: String,
    dialect: Dialect,
    /// The `batch_id` of the target's rows with a given `parent_id` (the load row).
    pub(crate) load: String,
    pub(crate) clear: String,
}

impl LedgerSql {
    pub(crate) fn new(dialect: Dialect, table: &TableName) -> LedgerSql {
        let t = table.sql(dialect);
        let q = |n: &str| quote(dialect, n);
        let index = format!("{}_parent", table.table);
        let (text, key_text, parent_text, int, now, tail) = match dialect {
            Dialect::Postgres => (
                "text",
                "text",
                "text",
                "bigint",
                "timestamptz NOT NULL DEFAULT now()",
                "",
            ),
            Dialect::Mysql => (
                "VARCHAR(255)",
                "VARCHAR(128)",
                "VARCHAR(64)",
                "BIGINT",
                "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
                " DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            ),
            Dialect::Sqlite => (
                "TEXT",
                "TEXT",
                "TEXT",
                "INTEGER",
                "TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                "",
            ),
        };
        let mysql_index = if dialect == Dialect::Mysql {
            format!(", KEY {} ({}, {})", q(&index), q("target"), q("parent_id"))
        } else {
            String::new()
        };
        let mut create = vec![format!(
            "CREATE TABLE IF NOT EXISTS {t} ({target} {text} NOT NULL, {batch} {key_text} NOT NULL, \
             {parent} {parent_text} NOT NULL, {first} {int} NOT NULL, {rows} {int} NOT NULL, \
             {pipeline} {text} NOT NULL, {node} {text} NOT NULL, {at} {now}, \
             PRIMARY KEY ({target}, {batch}){mysql_index}){tail}",
            target = q("target"),
            batch = q("batch_id"),
            parent = q("parent_id"),
            first = q("first_row"),
            rows = q("rows"),
            pipeline = q("pipeline"),
            node = q("node"),
            at = q("committed_at"),
        )];
        match dialect {
            Dialect::Postgres => create.push(format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} ({}, {})",
                q(&index),
                q("target"),
                q("parent_id")
            )),
            Dialect::Sqlite => create.push(format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({}, {})",
                table.sibling(&index).sql(dialect),
                q(&table.table),
                q("target"),
                q("parent_id")
            )),
            Dialect::Mysql => {}
        }
        let p = |i: usize| placeholder(dialect, i);
        let columns = [
            "target",
            "batch_id",
            "parent_id",
            "first_row",
            "rows",
            "pipeline",
            "node",
        ]
        .map(q)
        .join(", ");
        LedgerSql {
            create,
            covered_head: format!(
                "SELECT {}, {}, {} FROM {t} WHERE {} = {} AND {} IN (",
                q("parent_id"),
                q("first_row"),
                q("rows"),
                q("target"),
                p(1),
                q("parent_id"),
            ),
            insert_head: format!("INSERT INTO {t} ({columns}) VALUES "),
            dialect,
            load: format!(
                "SELECT {} FROM {t} WHERE {} = {} AND {} = {}",
                q("batch_id"),
                q("target"),
                p(1),
                q("parent_id"),
                p(2)
            ),
            clear: format!("DELETE FROM {t} WHERE {} = {}", q("target"), p(1)),
        }
    }

    /// The `(parent_id, first_row, rows)` of the target's ledger rows whose parent is one
    /// of `parents` (bound after the target, in order): one statement for a group's
    /// batches instead of one each.
    pub(crate) fn covered_of(&self, parents: usize) -> String {
        let mut sql = self.covered_head.clone();
        for i in 0..parents {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&placeholder(self.dialect, i + 2));
        }
        sql.push(')');
        sql
    }

    /// An `insert` of `rows` ledger rows in one statement (seven values each, bound row
    /// after row, in `insert`'s order).
    pub(crate) fn insert_of(&self, rows: usize) -> String {
        let mut sql = self.insert_head.clone();
        for row in 0..rows {
            sql.push_str(if row > 0 { ", (" } else { "(" });
            for col in 0..7 {
                if col > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&placeholder(self.dialect, row * 7 + col + 1));
            }
            sql.push(')');
        }
        sql
    }
}

/// The `i`th bound value (from 1) in a statement of `dialect`.
fn placeholder(dialect: Dialect, i: usize) -> String {
    match dialect {
        Dialect::Postgres => format!("${i}"),
        Dialect::Mysql | Dialect::Sqlite => "?".to_owned(),
    }
}

/// The most parents one ledger lookup names, and the most rows one ledger insert writes
/// (seven values each): well within every engine's limit on bound values (SQLite's 32,766
/// is the lowest).
pub(crate) const LEDGER_ROWS_PER_STATEMENT: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_s_ledger_statements_bind_every_value_once() {
        let pg = LedgerSql::new(Dialect::Postgres, &TableName::parse(None, "_sluice_ledger"));
        assert_eq!(
            pg.covered_of(3),
            r#"SELECT "parent_id", "first_row", "rows" FROM "_sluice_ledger" WHERE "target" = $1 AND "parent_id" IN ($2, $3, $4)"#
        );
        let insert = pg.insert_of(2);
        assert!(insert.starts_with(r#"INSERT INTO "_sluice_ledger" ("target", "batch_id", "parent_id", "first_row", "rows", "pipeline", "node") VALUES ($1, $2, $3, $4, $5, $6, $7), ($8, "#), "{insert}");
        assert!(insert.ends_with("$14)"), "{insert}");
        let my = LedgerSql::new(Dialect::Mysql, &TableName::parse(None, "_sluice_ledger"));
        assert_eq!(my.covered_of(2).matches('?').count(), 3);
        assert_eq!(my.insert_of(3).matches('?').count(), 21);
    }

    #[test]
    fn nothing_covered_leaves_the_whole_range() {
        assert_eq!(uncovered(0, 10, &[]), vec![(0, 10)]);
        assert_eq!(uncovered(5, 10, &[]), vec![(0, 10)]);
    }

    #[test]
    fn the_whole_batch_covered_leaves_nothing() {
        assert!(uncovered(0, 10, &[(0, 10)]).is_empty());
        // A part of a batch whose whole was written before.
        assert!(uncovered(3, 4, &[(0, 10)]).is_empty());
    }

    #[test]
    fn parts_written_before_are_skipped_whatever_the_split() {
        // Rows 0..4 and 6..8 of ten were written (a bad row 4..6 was rejected, say).
        let covered = [(0, 2), (2, 2), (6, 2)];
        assert_eq!(uncovered(0, 10, &covered), vec![(4, 2), (8, 2)]);
        // The right half, delivered alone.
        assert_eq!(uncovered(5, 5, &covered), vec![(0, 1), (3, 2)]);
        // Overlapping and out-of-order ranges.
        assert_eq!(
            uncovered(0, 10, &[(5, 5), (0, 6)]),
            Vec::<(usize, usize)>::new()
        );
    }

    #[test]
    fn ledger_statements_quote_the_table() {
        let t = TableName::parse(None, "a\"b._sluice_ledger");
        let sql = LedgerSql::new(Dialect::Postgres, &t);
        let insert = sql.insert_of(1);
        assert!(
            insert.starts_with("INSERT INTO \"a\"\"b\".\"_sluice_ledger\""),
            "{insert}"
        );
        assert!(sql.covered_of(1).ends_with("IN ($2)"));
        let sql = LedgerSql::new(Dialect::Mysql, &TableName::parse(None, "_sluice_ledger"));
        assert!(sql.create[0].contains("KEY `_sluice_ledger_parent`"));
    }
}
