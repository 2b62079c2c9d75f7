//! Identifiers: every name that reaches SQL text goes through [`quote`], so a field called
//! `a"; DROP TABLE x; --` is a column name, never SQL.

use super::config::Dialect;

/// `name` quoted for `dialect`: `"…"` with `"` doubled (PostgreSQL, SQLite), or `` `…` ``
/// with `` ` `` doubled (MySQL).
pub(crate) fn quote(dialect: Dialect, name: &str) -> String {
    let q = match dialect {
        Dialect::Mysql => '`',
        Dialect::Postgres | Dialect::Sqlite => '"',
    };
    let mut out = String::with_capacity(name.len() + 2);
    out.push(q);
    for c in name.chars() {
        if c == q {
            out.push(q);
        }
        out.push(c);
    }
    out.push(q);
    out
}

/// A comma-separated list of quoted names.
pub(crate) fn quote_list<'a>(dialect: Dialect, names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| quote(dialect, n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table, optionally in a schema (PostgreSQL), database (MySQL) or attached database
/// (SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    pub(crate) schema: Option<String>,
    pub(crate) table: String,
}

impl TableName {
    /// `schema` when given; else `table` split at its first dot when it holds one.
    pub(crate) fn parse(schema: Option<&str>, table: &str) -> TableName {
        match schema {
            Some(s) => TableName {
                schema: Some(s.to_owned()),
                table: table.to_owned(),
            },
            None => match table.split_once('.') {
                Some((s, t)) if !s.is_empty() && !t.is_empty() => TableName {
                    schema: Some(s.to_owned()),
                    table: t.to_owned(),
                },
                _ => TableName {
                    schema: None,
                    table: table.to_owned(),
                },
            },
        }
    }

    /// Another table in the same schema.
    pub(crate) fn sibling(&self, table: &str) -> TableName {
        TableName {
            schema: self.schema.clone(),
            table: table.to_owned(),
        }
    }

    /// The quoted, qualified name for SQL text.
    pub(crate) fn sql(&self, dialect: Dialect) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote(dialect, s), quote(dialect, &self.table)),
            None => quote(dialect, &self.table),
        }
    }

    /// The name for messages and the ledger's `target` column: `schema.table`.
    pub(crate) fn display(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.table),
            None => self.table.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_nothing_else_changes() {
        let hostile = "a\"; DROP TABLE x; --";
        assert_eq!(
            quote(Dialect::Postgres, hostile),
            "\"a\"\"; DROP TABLE x; --\""
        );
        assert_eq!(quote(Dialect::Mysql, "a`b c"), "`a``b c`");
        assert_eq!(quote(Dialect::Mysql, hostile), "`a\"; DROP TABLE x; --`");
        assert_eq!(quote(Dialect::Sqlite, "名前"), "\"名前\"");
    }

    #[test]
    fn table_names_split_at_the_first_dot_unless_the_schema_is_given() {
        let t = TableName::parse(None, "analytics.orders");
        assert_eq!(t.sql(Dialect::Postgres), "\"analytics\".\"orders\"");
        assert_eq!(t.display(), "analytics.orders");
        let t = TableName::parse(Some("s"), "a.b");
        assert_eq!(t.sql(Dialect::Mysql), "`s`.`a.b`");
        let t = TableName::parse(None, "orders");
        assert_eq!(
            t.sibling("_sluice_ledger").sql(Dialect::Sqlite),
            "\"_sluice_ledger\""
        );
    }
}
