//! Errors of the three engines mapped to Sluice's classes, by SQLSTATE, MySQL error
//! number and SQLite result code, with messages that name the server and what to check,
//! and never the password.

use super::config::Dialect;
use sluice_core::{ConnectorError, ErrorClass, Secret};
use std::io::ErrorKind as Io;

/// Why one transaction failed, as the write loop needs to know it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The database refused the rows' content (constraint, bad value): isolate them.
    Rows(ConnectorError),
    /// The statement or a row is too large for the target: split.
    TooLarge(ConnectorError),
    /// Deadlock, serialization failure, busy database: try the same transaction again.
    Conflict(ConnectorError),
    /// The ledger row was already there (a concurrent writer): nothing to write.
    AlreadyWritten,
    /// Anything else: the write stops with this error.
    Fatal(ConnectorError),
}

impl Failure {
    /// The error, for a caller that does not handle the case.
    pub(crate) fn into_error(self) -> ConnectorError {
        match self {
            Failure::Rows(e) | Failure::TooLarge(e) | Failure::Conflict(e) | Failure::Fatal(e) => e,
            Failure::AlreadyWritten => ConnectorError::new(
                ErrorClass::Internal,
                "the ledger row was written by another writer at the same time",
            ),
        }
    }
}

/// What a database error means for us, before it becomes a [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meaning {
    Rows,
    TooLarge,
    Conflict,
    Down,
    Auth,
    Permission,
    /// The target's shape does not fit (missing table or column, no unique key).
    Contract,
    /// A bad setting (unknown database).
    Config,
    Internal,
}

/// The meaning of a database error from its SQLSTATE (PostgreSQL, MySQL), MySQL error
/// number or SQLite extended result code, and its message.
pub(crate) fn meaning(
    dialect: Dialect,
    code: Option<&str>,
    number: Option<u16>,
    message: &str,
) -> Meaning {
    match dialect {
        Dialect::Postgres => pg_meaning(code.unwrap_or("")),
        Dialect::Mysql => mysql_meaning(number.unwrap_or(0), code.unwrap_or("")),
        Dialect::Sqlite => sqlite_meaning(code.and_then(|c| c.parse().ok()).unwrap_or(1), message),
    }
}

fn pg_meaning(state: &str) -> Meaning {
    let class = state.get(..2).unwrap_or("");
    match state {
        // 25P03: the server ended a session idle in its transaction (a process paused
        // mid-write, see `sluice_core::IDLE_IN_TRANSACTION`): written again, it goes on.
        "40001" | "40P01" | "55P03" | "25P03" => Meaning::Conflict,
        "57P01" | "57P02" | "57P03" | "57014" => Meaning::Down,
        "28000" | "28P01" => Meaning::Auth,
        "42501" => Meaning::Permission,
        "3D000" => Meaning::Config,
        "3F000" | "42P01" | "42703" | "42P10" | "42804" | "42846" | "42883" | "42701" | "42622" => {
            Meaning::Contract
        }
        "54001" | "54011" | "54023" => Meaning::TooLarge,
        "21000" | "54000" => Meaning::Rows,
        _ => match class {
            "22" | "23" => Meaning::Rows,
            "08" | "53" | "58" | "XX" => Meaning::Down,
            _ => Meaning::Internal,
        },
    }
}

fn mysql_meaning(number: u16, state: &str) -> Meaning {
    match number {
        1213 | 1205 | 1614 => Meaning::Conflict,
        1040 | 1053 | 1077 | 1079 | 1080 | 1152 | 1158 | 1159 | 1160 | 1161 | 1184 | 1203
        | 1317 | 1927 | 4031 => Meaning::Down,
        1045 | 1698 | 1251 | 1862 => Meaning::Auth,
        1044 | 1142 | 1143 | 1227 | 1370 | 1290 => Meaning::Permission,
        1049 | 1046 => Meaning::Config,
        1146 | 1054 | 1059 | 1060 | 1166 | 1071 | 1118 | 1170 | 1072 => Meaning::Contract,
        1153 | 1390 | 1301 => Meaning::TooLarge,
        1048 | 1062 | 1406 | 1264 | 1366 | 1292 | 1365 | 1364 | 1452 | 1451 | 1216 | 1217
        | 3819 | 4025 | 3140 | 4038 | 1367 | 1411 | 1265 | 1263 | 1300 | 1690 => Meaning::Rows,
        _ => match state.get(..2).unwrap_or("") {
            "22" | "23" => Meaning::Rows,
            "08" => Meaning::Down,
            "28" => Meaning::Auth,
            "40" => Meaning::Conflict,
            _ => Meaning::Internal,
        },
    }
}

fn sqlite_meaning(code: i32, message: &str) -> Meaning {
    match code & 0xff {
        5 | 6 => Meaning::Conflict,
        19 | 20 => Meaning::Rows,
        18 => Meaning::TooLarge,
        3 | 8 => Meaning::Permission,
        23 => Meaning::Auth,
        10 | 11 | 13 | 14 | 26 => Meaning::Down,
        1 => {
            let m = message.to_ascii_lowercase();
            if m.contains("too many sql variables") || m.contains("too big") {
                Meaning::TooLarge
            } else if m.contains("no such table")
                || m.contains("no such column")
                || m.contains("has no column named")
                || m.contains("on conflict clause does not match")
                || m.contains("duplicate column name")
                || m.contains("unknown database")
            {
                Meaning::Contract
            } else {
                Meaning::Internal
            }
        }
        _ => Meaning::Internal,
    }
}

/// A database server (or file), for messages and redaction.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) dialect: Dialect,
    /// `host:port`, or the SQLite file.
    pub(crate) address: String,
    /// The URL, redacted from every message.
    url: Secret,
    /// The URL's password and query values, raw and decoded, redacted separately (a
    /// driver may quote one alone).
    parts: Vec<Secret>,
    /// How long a connection may take, for "no connection within" messages.
    pub(crate) connect_timeout: std::time::Duration,
}

const CHECK: &str = "is it running? `scripts/services.sh status`";

impl Endpoint {
    pub(crate) fn new(
        dialect: Dialect,
        address: String,
        url: &Secret,
        connect_timeout: std::time::Duration,
    ) -> Self {
        Endpoint {
            dialect,
            address,
            url: url.clone(),
            parts: sluice_core::redact::url_secrets(url.expose(), |_| false),
            connect_timeout,
        }
    }

    /// `PostgreSQL at 127.0.0.1:5432`.
    pub(crate) fn describe(&self) -> String {
        format!("{} at {}", self.dialect.name(), self.address)
    }

    /// Removes the URL, its password and its query values from `text`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = self.url.redact(text);
        for p in &self.parts {
            if p.expose().len() >= 3 {
                out = p.redact(&out);
            }
        }
        out
    }

    /// An error of `class` with a redacted message.
    pub(crate) fn error(&self, class: ErrorClass, message: impl AsRef<str>) -> ConnectorError {
        ConnectorError::new(class, self.redact(message.as_ref()))
    }

    /// A row too large for one statement.
    pub(crate) fn too_large(&self, size: usize, budget: usize) -> Failure {
        Failure::TooLarge(self.error(
            ErrorClass::PayloadTooLarge,
            format!(
                "a row takes about {size} bytes, more than one statement may hold on {} ({budget} bytes{})",
                self.describe(),
                match self.dialect {
                    Dialect::Mysql => ": the server's `max_allowed_packet` less 4 KiB; raise it on the server",
                    _ => "",
                }
            ),
        ))
    }

    /// A value that cannot be encoded (out of range, say): a row-level problem.
    pub(crate) fn bad_value(&self, problem: String) -> Failure {
        Failure::Rows(self.error(
            ErrorClass::InvalidRequest,
            format!(
                "a value cannot be written to {}: {problem}",
                self.describe()
            ),
        ))
    }

    /// A sqlx error, classified, as a fatal [`ConnectorError`] (for paths that do not
    /// isolate rows: DDL, health checks, the source).
    pub(crate) fn fatal(&self, err: sqlx::Error, doing: &str) -> ConnectorError {
        self.classify(err, doing).into_error()
    }

    /// A sqlx error met while `doing` something, classified.
    pub(crate) fn classify(&self, err: sqlx::Error, doing: &str) -> Failure {
        let at = self.describe();
        let down = |what: String| Failure::Fatal(self.error(ErrorClass::Dependency, what));
        match err {
            sqlx::Error::Io(e) => match e.kind() {
                Io::ConnectionRefused => down(format!("{at} refused the connection while {doing} ({CHECK})")),
                Io::TimedOut => down(format!("{at} did not answer in time while {doing} ({CHECK})")),
                Io::NotFound if self.dialect == Dialect::Sqlite => Failure::Fatal(self.error(
                    ErrorClass::InvalidRequest,
                    format!("{at}: the file or its folder does not exist ({e}); create the folder"),
                )),
                _ => down(format!(
                    "lost the connection to {at} while {doing} ({e}); the write can be retried once it is back ({CHECK})"
                )),
            },
            sqlx::Error::PoolTimedOut => down(format!(
                "no connection to {at} within {:?} while {doing} ({CHECK})",
                self.connect_timeout
            )),
            sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                down(format!("the connection pool of {at} was closed while {doing}"))
            }
            sqlx::Error::Protocol(p) => down(format!(
                "the connection to {at} broke while {doing} ({p}); the write can be retried"
            )),
            sqlx::Error::Tls(e) => Failure::Fatal(self.error(
                ErrorClass::Network,
                format!("TLS with {at} failed while {doing} ({e}); check the server's certificate and the url's TLS options"),
            )),
            sqlx::Error::Configuration(e) => Failure::Fatal(self.error(
                ErrorClass::InvalidRequest,
                format!("the url of {} is not valid ({e}); write e.g. `postgres://user:pass@host:5432/db`", self.dialect.name()),
            )),
            sqlx::Error::Encode(e) => Failure::Rows(self.error(
                ErrorClass::InvalidRequest,
                format!("a value could not be encoded for {at} ({e})"),
            )),
            sqlx::Error::InvalidArgument(m) if m.contains("too many") => Failure::TooLarge(self.error(
                ErrorClass::PayloadTooLarge,
                format!("{at} refused the statement while {doing}: {m}"),
            )),
            sqlx::Error::Database(db) => self.database_failure(db.as_ref(), doing),
            other => Failure::Fatal(self.error(
                ErrorClass::Internal,
                format!("{at}: unexpected error while {doing}: {other}"),
            )),
        }
    }

    fn database_failure(&self, db: &dyn sqlx::error::DatabaseError, doing: &str) -> Failure {
        let code = db.code().map(|c| c.into_owned());
        let number = mysql_number(db);
        let message = db.message();
        let tag = match (number, &code) {
            (Some(n), _) => format!("error {n}"),
            (None, Some(c)) => format!("code {c}"),
            (None, None) => "no code".to_owned(),
        };
        let at = self.describe();
        let text = format!("{at} while {doing}: {message} ({tag})");
        let err = |class: ErrorClass, hint: &str| self.error(class, format!("{text}{hint}"));
        match meaning(self.dialect, code.as_deref(), number, message) {
            Meaning::Rows => Failure::Rows(err(ErrorClass::InvalidRequest, "")),
            Meaning::TooLarge => Failure::TooLarge(err(ErrorClass::PayloadTooLarge, "")),
            Meaning::Conflict => Failure::Conflict(err(ErrorClass::Dependency, "")),
            Meaning::Down => Failure::Fatal(err(ErrorClass::Dependency, &format!("; {CHECK}"))),
            Meaning::Auth => Failure::Fatal(err(
                ErrorClass::Auth,
                "; check the user and password in the url",
            )),
            Meaning::Permission => Failure::Fatal(err(
                ErrorClass::Permission,
                "; grant the user the rights to create, alter and insert into the table and the ledger",
            )),
            Meaning::Contract => Failure::Fatal(err(
                ErrorClass::ContractChanged,
                "; the table does not have the shape the batches need (columns, a unique key on `key` for upsert)",
            )),
            Meaning::Config => Failure::Fatal(err(
                ErrorClass::InvalidRequest,
                "; check the database named in the url",
            )),
            Meaning::Internal => Failure::Fatal(err(ErrorClass::Internal, "")),
        }
    }
}

/// A MySQL/MariaDB error's number (`1062`), which says more than its SQLSTATE; `None` for
/// the other engines.
pub(crate) fn mysql_number(db: &dyn sqlx::error::DatabaseError) -> Option<u16> {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|e| e.number())
}

/// The class of an error of statements the user wrote (a `sql_task`): what the sink
/// would call a bug of its own (`internal`, a syntax error say) or a target of the wrong
/// shape (`contract_changed`, a missing table) is the statement's fault here
/// (`invalid_request`).
pub(crate) fn statement_class(dialect: Dialect, err: &sqlx::Error) -> ErrorClass {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorClass::Dependency,
        sqlx::Error::Tls(_) => ErrorClass::Network,
        sqlx::Error::Configuration(_) => ErrorClass::InvalidRequest,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned());
            let number = mysql_number(db.as_ref());
            match meaning(dialect, code.as_deref(), number, db.message()) {
                Meaning::Rows | Meaning::Config | Meaning::Internal | Meaning::Contract => {
                    ErrorClass::InvalidRequest
                }
                Meaning::TooLarge => ErrorClass::PayloadTooLarge,
                Meaning::Conflict | Meaning::Down => ErrorClass::Dependency,
                Meaning::Auth => ErrorClass::Auth,
                Meaning::Permission => ErrorClass::Permission,
            }
        }
        _ => ErrorClass::Internal,
    }
}

/// A failed ledger insert: a unique violation means another writer wrote the same batch
/// at the same time.
pub(crate) fn ledger_failure(ep: &Endpoint, e: sqlx::Error) -> Failure {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return Failure::AlreadyWritten;
        }
    }
    ep.classify(e, "writing the ledger row")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_codes() {
        let m = |c| meaning(Dialect::Postgres, Some(c), None, "");
        assert_eq!(m("23505"), Meaning::Rows);
        assert_eq!(m("23502"), Meaning::Rows);
        assert_eq!(m("22001"), Meaning::Rows);
        assert_eq!(m("40P01"), Meaning::Conflict);
        assert_eq!(m("40001"), Meaning::Conflict);
        assert_eq!(m("25P03"), Meaning::Conflict);
        assert_eq!(m("57P01"), Meaning::Down);
        assert_eq!(m("08006"), Meaning::Down);
        assert_eq!(m("28P01"), Meaning::Auth);
        assert_eq!(m("42501"), Meaning::Permission);
        assert_eq!(m("42P10"), Meaning::Contract);
        assert_eq!(m("54023"), Meaning::TooLarge);
        assert_eq!(m("42601"), Meaning::Internal);
    }

    #[test]
    fn mysql_numbers() {
        let m = |n, s| meaning(Dialect::Mysql, Some(s), Some(n), "");
        assert_eq!(m(1048, "23000"), Meaning::Rows);
        assert_eq!(m(1062, "23000"), Meaning::Rows);
        assert_eq!(m(1406, "22001"), Meaning::Rows);
        assert_eq!(m(1366, "HY000"), Meaning::Rows);
        assert_eq!(m(1213, "40001"), Meaning::Conflict);
        assert_eq!(m(1153, "08S01"), Meaning::TooLarge);
        assert_eq!(m(1390, "HY000"), Meaning::TooLarge);
        assert_eq!(m(1045, "28000"), Meaning::Auth);
        assert_eq!(m(1142, "42000"), Meaning::Permission);
        assert_eq!(m(1053, "08S01"), Meaning::Down);
        assert_eq!(m(1146, "42S02"), Meaning::Contract);
    }

    #[test]
    fn sqlite_codes() {
        let m = |c: &str, msg| meaning(Dialect::Sqlite, Some(c), None, msg);
        assert_eq!(m("1299", "NOT NULL constraint failed"), Meaning::Rows);
        assert_eq!(m("2067", "UNIQUE constraint failed"), Meaning::Rows);
        assert_eq!(m("5", "database is locked"), Meaning::Conflict);
        assert_eq!(m("1", "too many SQL variables"), Meaning::TooLarge);
        assert_eq!(m("1", "table t has no column named x"), Meaning::Contract);
        assert_eq!(
            m("8", "attempt to write a readonly database"),
            Meaning::Permission
        );
    }

    #[test]
    fn passwords_never_reach_messages() {
        let url = Secret::new("postgres://u:s3cret@h:1/db");
        let ep = Endpoint::new(
            Dialect::Postgres,
            "h:1".into(),
            &url,
            std::time::Duration::from_secs(1),
        );
        let e = ep.error(
            ErrorClass::Auth,
            "bad password s3cret for postgres://u:s3cret@h:1/db",
        );
        assert!(!e.message.contains("s3cret"), "{}", e.message);
        // A raw `@` in the password, and a password in the query.
        let url = Secret::new("postgres://u:hunter2@EXTRA@h:1/db?password=qs3cret");
        let ep = Endpoint::new(
            Dialect::Postgres,
            "h:1".into(),
            &url,
            std::time::Duration::from_secs(1),
        );
        let e = ep.error(
            ErrorClass::Auth,
            "password hunter2@EXTRA refused; tried qs3cret, hunter2%40EXTRA",
        );
        for s in ["hunter2", "EXTRA", "qs3cret"] {
            assert!(!e.message.contains(s), "{}", e.message);
        }
    }
}
