//! `sluice doctor`'s checks of a database: connect, the table exists, its columns, the
//! permission to write; for a source, its query on a first batch (the sample).

use super::config::Dialect;
use super::error::Endpoint;
use super::ident::TableName;
use sluice_config::doctor::{Finding, ProbeReport, Step};
use sluice_core::{ConnectorError, ErrorClass, Secret};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use std::time::{Duration, Instant};

/// A connection to check with, and how to describe and classify its failures.
pub(crate) struct Db {
    pub(crate) pool: AnyPool,
    pub(crate) ep: Endpoint,
    pub(crate) dialect: Dialect,
}

/// The endpoint (for messages and classes) of a database URL.
fn endpoint(url: &Secret, timeout: Duration) -> Result<(Dialect, Endpoint), ConnectorError> {
    let dialect = Dialect::from_url(url.expose())
        .map_err(|e| ConnectorError::new(ErrorClass::InvalidRequest, e))?;
    let ep = match dialect {
        Dialect::Postgres => super::postgres::options(url, timeout)?.1,
        Dialect::Mysql => super::mysql::options(url, timeout)?.1,
        Dialect::Sqlite => super::sqlite::read_options(url, timeout)?.1,
    };
    Ok((dialect, ep))
}

/// Connects (one connection, `timeout` to get it).
pub(crate) async fn connect(url: &str, timeout: Duration) -> Result<Db, ConnectorError> {
    sqlx::any::install_default_drivers();
    let secret = Secret::new(url);
    let (dialect, ep) = endpoint(&secret, timeout)?;
    let any_url = match url.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => url.to_owned(),
    };
    // One attempt first: a pool retries a refused connection until its timeout, and a
    // database that is down should say so at once.
    let once = tokio::time::timeout(
        timeout,
        <sqlx::AnyConnection as sqlx::Connection>::connect(&any_url),
    )
    .await;
    match once {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(Err(e)) => return Err(ep.fatal(e, "connecting")),
        Err(_) => {
            return Err(ep.error(
                ErrorClass::Dependency,
                format!(
                    "{} did not answer within {} ms while connecting",
                    ep.describe(),
                    timeout.as_millis()
                ),
            ));
        }
    }
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .connect(&any_url)
        .await
        .map_err(|e| ep.fatal(e, "connecting"))?;
    Ok(Db { pool, ep, dialect })
}

/// The file of a `sqlite://` URL (not of an in-memory database).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| std::path::PathBuf::from(path))
}

/// A text literal for SQL text (names from the pipeline file, quoted, never spliced).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Db {
    /// The table's columns and their types, in order; empty when it does not exist.
    pub(crate) async fn columns(
        &self,
        table: &TableName,
    ) -> Result<Vec<(String, String)>, ConnectorError> {
        let t = literal(&table.table);
        let sql = match self.dialect {
            Dialect::Postgres => format!(
                "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns
                 WHERE table_schema = {} AND table_name = {t} ORDER BY ordinal_position",
                table
                    .schema
                    .as_deref()
                    .map_or("current_schema()".to_owned(), literal)
            ),
            Dialect::Mysql => format!(
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR) FROM information_schema.columns
                 WHERE table_schema = {} AND table_name = {t} ORDER BY ordinal_position",
                table
                    .schema
                    .as_deref()
                    .map_or("DATABASE()".to_owned(), literal)
            ),
            Dialect::Sqlite => format!("SELECT name, type FROM pragma_table_info({t})"),
        };
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.ep.fatal(e, "reading the table's columns"))?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.ep.fatal(e, "reading the table's columns"))
    }

    /// Whether this user may insert into the table: `Ok(None)` when the database has no
    /// grants to ask (SQLite).
    pub(crate) async fn may_insert(
        &self,
        table: &TableName,
    ) -> Result<Option<bool>, ConnectorError> {
        match self.dialect {
            Dialect::Postgres => {
                let sql = format!(
                    "SELECT has_table_privilege({}, 'INSERT')",
                    literal(&table.sql(Dialect::Postgres))
                );
                let row = sqlx::query(AssertSqlSafe(sql))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| self.ep.fatal(e, "asking for the INSERT permission"))?;
                let may: bool = row
                    .try_get(0)
                    .map_err(|e| self.ep.fatal(e, "asking for the INSERT permission"))?;
                Ok(Some(may))
            }
            Dialect::Mysql => {
                // An insert of no row, rolled back: the server checks the grant all the same.
                let name = table.sql(Dialect::Mysql);
                let mut tx = self
                    .pool
                    .begin()
                    .await
                    .map_err(|e| self.ep.fatal(e, "asking for the INSERT permission"))?;
                let done = sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {name} SELECT * FROM {name} WHERE 1 = 0"
                )))
                .execute(&mut *tx)
                .await;
                let _ = tx.rollback().await;
                match done {
                    Ok(_) => Ok(Some(true)),
                    Err(e) => {
                        let e = self.ep.fatal(e, "inserting no row");
                        if e.class == ErrorClass::Permission {
                            Ok(Some(false))
                        } else {
                            Err(e)
                        }
                    }
                }
            }
            Dialect::Sqlite => Ok(None),
        }
    }
}

/// The checks of a sink's table: connect, the table, its columns, the INSERT permission.
pub(crate) async fn sink_probe(
    url: String,
    table: String,
    create_table: bool,
    timeout: Duration,
) -> ProbeReport {
    let mut report = ProbeReport::default();
    let out = &mut report.findings;
    if let Some(path) = sqlite_file(&url)
        && !path.exists()
    {
        out.push(Finding::passed(
            Step::Dependencies,
            format!("SQLite file {}", path.display()),
            "does not exist yet: the sink creates it on its first write (its folder must be writable)",
        ));
        return report;
    }
    let started = Instant::now();
    let db = match connect(&url, timeout).await {
        Ok(db) => db,
        Err(e) => {
            out.push(Finding::failed(Some(Step::Dependencies), "connect", e));
            return report;
        }
    };
    let at = db.ep.describe();
    out.push(Finding::passed(
        Step::Dependencies,
        format!("connect to {at}"),
        format!("connected in {} ms", started.elapsed().as_millis()),
    ));
    let name = TableName::parse(None, &table);
    let shown = name.display();
    let columns = match db.columns(&name).await {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::failed(
                Some(Step::Dependencies),
                format!("table {shown}"),
                e,
            ));
            return report;
        }
    };
    if columns.is_empty() {
        if create_table {
            out.push(Finding::passed(
                Step::Dependencies,
                format!("table {shown} exists"),
                "not yet: the sink creates it on its first write (`create_table: true`), which needs the CREATE permission",
            ));
        } else {
            out.push(Finding::failed(
                Some(Step::Dependencies),
                format!("table {shown} exists"),
                db.ep.error(
                    ErrorClass::ContractChanged,
                    format!("table {shown} does not exist in {at}: create it, or set `create_table: true`"),
                ),
            ));
        }
        return report;
    }
    out.push(Finding::passed(
        Step::Dependencies,
        format!("table {shown} exists"),
        format!(
            "{} columns: {}",
            columns.len(),
            crate::cut(
                &columns
                    .iter()
                    .map(|(n, t)| format!("{n} {t}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                300
            )
        ),
    ));
    let user = url::Url::parse(&url)
        .map(|u| u.username().to_owned())
        .unwrap_or_default();
    let checked = format!("permission to INSERT into {shown}");
    match db.may_insert(&name).await {
        Ok(Some(true)) => out.push(Finding::passed(Step::Dependencies, checked, "granted")),
        Ok(None) => out.push(Finding::passed(
            Step::Dependencies,
            checked,
            "a SQLite file: no grants (the file must be writable)",
        )),
        Ok(Some(false)) => out.push(Finding::failed(
            Some(Step::Dependencies),
            checked,
            db.ep.error(
                ErrorClass::Permission,
                format!(
                    "the user{} may not INSERT into {shown} on {at}: `GRANT INSERT ON {} TO {}`",
                    if user.is_empty() {
                        String::new()
                    } else {
                        format!(" `{user}`")
                    },
                    name.sql(db.dialect),
                    if user.is_empty() { "..." } else { &user },
                ),
            ),
        )),
        Err(e) => out.push(Finding::failed(Some(Step::Dependencies), checked, e)),
    }
    report
}

/// The checks of a source: connect, then its query's first batch (the sample).
pub(crate) async fn source_probe(
    config: super::SqlSourceConfig,
    pipeline: String,
    node: String,
    timeout: Duration,
) -> ProbeReport {
    let mut report = ProbeReport::default();
    let out = &mut report.findings;
    let started = Instant::now();
    let db = match connect(config.url.expose(), timeout).await {
        Ok(db) => db,
        Err(e) => {
            out.push(Finding::failed(Some(Step::Dependencies), "connect", e));
            return report;
        }
    };
    let at = db.ep.describe();
    out.push(Finding::passed(
        Step::Dependencies,
        format!("connect to {at}"),
        format!("connected in {} ms", started.elapsed().as_millis()),
    ));
    db.pool.close().await;
    let checked = "the query's first batch, as the pipeline reads it";
    let mut source = match super::build_source(config, &pipeline, &node, None).await {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding::failed(Some(Step::Parameters), checked, e));
            return report;
        }
    };
    match source.next_batch().await {
        Ok(batch) => {
            let records = batch
                .map(|b| crate::records_json(&b.batch.records))
                .unwrap_or_default();
            out.push(Finding::passed(
                Step::Parameters,
                checked,
                format!("{} rows", records.len()),
            ));
            report.sample = Some(records);
        }
        Err(e) => out.push(Finding::failed(Some(Step::Parameters), checked, e)),
    }
    report
}

/// The coarse family of an SQL column type: `number`, `text`, `boolean`, `time`, or
/// `other` (JSON, arrays, anything that takes many shapes).
fn sql_family(t: &str) -> &'static str {
    let t = t.to_ascii_lowercase();
    if [
        "int", "numeric", "decimal", "real", "double", "float", "serial",
    ]
    .iter()
    .any(|n| t.contains(n))
    {
        "number"
    } else if t.contains("bool") {
        "boolean"
    } else if t.contains("char") || t.contains("text") || t.contains("clob") {
        "text"
    } else if t.contains("time") || t.contains("date") {
        "time"
    } else {
        "other"
    }
}

/// The coarse family of an Arrow type's text.
fn arrow_family(t: &str) -> &'static str {
    if t.starts_with("Int")
        || t.starts_with("UInt")
        || t.starts_with("Float")
        || t.starts_with("Decimal")
    {
        "number"
    } else if t == "Boolean" {
        "boolean"
    } else if t.contains("Utf8") {
        "text"
    } else if t.starts_with("Timestamp") || t.starts_with("Date") {
        "time"
    } else {
        "other"
    }
}

/// Step 6 at a SQL sink: the sample's columns against the table's (the names after
/// `naming`, the types by family), and what the sink would do with those that do not fit.
pub(crate) async fn sample_fit(
    config: super::SqlSinkConfig,
    node: String,
    columns: &[(String, String)],
) -> Vec<Finding> {
    use super::SchemaPolicy;
    use sluice_core::naming::{NameLimit, Naming, resolve};
    let checked = format!(
        "the sample's columns against sink {node}'s table {}",
        config.table
    );
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    let url = config.url.expose().to_owned();
    if sqlite_file(&url).is_some_and(|p| !p.exists()) {
        return vec![Finding::passed(
            Step::Logic,
            checked,
            "the table does not exist yet: the sink creates it from the records' schema",
        )];
    }
    let Ok(db) = connect(&url, timeout).await else {
        return vec![Finding::passed(
            Step::Logic,
            checked,
            "not checked: the database does not answer (its own link says why)",
        )];
    };
    let name = TableName::parse(None, &config.table);
    let Ok(table) = db.columns(&name).await else {
        return vec![Finding::passed(
            Step::Logic,
            checked,
            "not checked: the table's columns cannot be read (its own link says why)",
        )];
    };
    if table.is_empty() {
        return vec![Finding::passed(
            Step::Logic,
            checked,
            if config.create_table {
                "the table does not exist yet: the sink creates it from the records' schema"
            } else {
                "the table does not exist (its own link says so)"
            },
        )];
    }
    let limit = match db.dialect {
        Dialect::Postgres => NameLimit::Bytes(63),
        Dialect::Mysql => NameLimit::Chars(64),
        Dialect::Sqlite => NameLimit::None,
    };
    let names: std::collections::BTreeMap<String, String> = match config.naming {
        Naming::SnakeCase => resolve(
            &Default::default(),
            columns.iter().map(|(n, _)| n.as_str()),
            limit,
        ),
        Naming::Verbatim => columns
            .iter()
            .map(|(n, _)| (n.clone(), n.clone()))
            .collect(),
    };
    let mut missing = Vec::new();
    let mut misfits = Vec::new();
    for (field, arrow) in columns {
        let column = names.get(field).cloned().unwrap_or_else(|| field.clone());
        match table.iter().find(|(c, _)| c.eq_ignore_ascii_case(&column)) {
            None => missing.push(column),
            Some((c, sql)) => {
                let (a, s) = (arrow_family(arrow), sql_family(sql));
                let fits = a == s
                    || a == "other"
                    || s == "other"
                    || s == "text"
                    || (a == "text" && s == "time");
                if !fits {
                    misfits.push(format!(
                        "`{c}` is {arrow} in the records but {sql} in the table"
                    ));
                }
            }
        }
    }
    let at = db.ep.describe();
    if !misfits.is_empty() {
        return vec![Finding::failed(
            Some(Step::Logic),
            checked,
            db.ep.error(
                ErrorClass::InvalidRequest,
                format!(
                    "{} on {at}: the database refuses values that do not convert, and the sink keeps those rows in the failed-batch store; change the column, or cast in a transform",
                    misfits.join(", ")
                ),
            ),
        )];
    }
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return match config.schema_policy {
            SchemaPolicy::Evolve | SchemaPolicy::Warn => vec![Finding::passed(
                Step::Logic,
                checked,
                format!("the table lacks {list}: the sink adds them (schema_policy)"),
            )],
            SchemaPolicy::Fail | SchemaPolicy::Quarantine => vec![Finding::failed(
                Some(Step::Logic),
                checked,
                db.ep.error(
                    ErrorClass::ContractChanged,
                    format!(
                        "table {} on {at} lacks {list}, which the records carry: the sink refuses such batches (schema_policy: fail); add the columns, drop the fields in a transform, or set schema_policy: evolve",
                        name.display()
                    ),
                ),
            )],
        };
    }
    vec![Finding::passed(
        Step::Logic,
        checked,
        format!(
            "all {} columns are in the table, of fitting types",
            columns.len()
        ),
    )]
}
