//! # sluice-connectors
//!
//! Where data comes from and goes to: one folder per node kind, each with its spec (the
//! YAML fields), its `kind.rs` (read, check, build, links) and its connector, and
//! [`registry()`], the one list of kinds. Sources implement [`sluice_core::Source`],
//! sinks [`sluice_core::Sink`], and every failure is a [`sluice_core::ConnectorError`]
//! with its class.
//!
//! - [`http`]: the HTTP API source (auth, pagination, incremental cursors, rate limits);
//!   [`http_sink`]: batches POSTed to an endpoint.
//! - [`sql`]: PostgreSQL, MySQL/MariaDB and SQLite sinks with idempotent upserts and a
//!   batch ledger, and the incremental SQL source.
//! - [`file`]: files read (NDJSON, JSON, CSV) and written; [`kafka`]: JSON records of an
//!   external topic.
//! - [`transform`]: declarative operations on batches; [`task`]: SQL statements and
//!   programs run once (also as `compensate`).
//!
//! ```
//! use sluice_config::{Env, validate};
//!
//! let yaml = r#"
//! pipeline: quickstart
//! nodes:
//!   users:
//!     type: http
//!     url: https://api.example.com/users
//!     records: { path: $.data }
//!   db:
//!     type: sqlite
//!     inputs: [users]
//!     url: sqlite://users.db
//!     table: users
//! "#;
//! let registry = sluice_connectors::registry();
//! let plan = validate(yaml, &Env::new(), registry).expect("valid");
//! assert_eq!(plan.nodes[0].id, "users");
//! assert_eq!(plan.nodes[0].kind_label(), "http source");
//! assert_eq!(plan.edges[0].topic.as_deref(), Some("quickstart.users"));
//!
//! let broken = yaml.replace("records:", "recrods:");
//! let err = validate(&broken, &Env::new(), registry).unwrap_err();
//! let d = &err.diagnostics()[0];
//! assert_eq!((d.pos.line, d.pos.column), (7, 5));
//! assert_eq!(d.message, "unknown field `recrods`, did you mean `records`?");
//! ```

pub mod file;
pub mod http;
pub mod http_sink;
pub mod kafka;
pub mod spec;
pub mod sql;
pub mod task;
pub mod transform;
mod watermark;

use sluice_config::Registry;
use std::sync::OnceLock;

/// Every node kind, in the order of the documentation: the one list. A new kind is a
/// folder (its spec, its `Kind` and `NodeConfig` impls, its connector) and a line here.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        Registry::new(vec![
            &http::HTTP,
            &http_sink::HTTP_SINK,
            &sql::POSTGRES,
            &sql::MYSQL,
            &sql::SQLITE,
            &file::FILE,
            &file::FILE_SINK,
            &kafka::KAFKA,
            &transform::TRANSFORM,
            &task::SQL_TASK,
            &task::COMMAND,
        ])
    })
}

/// The load of a sink never told its run (see `sluice_core::RunInfo`): one of its own, so
/// that it replaces (or overwrites) its target once.
pub(crate) fn own_load() -> String {
    static SINKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = SINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("sink-{}-{nanos:x}-{n}", std::process::id())
}

/// At most `max` bytes of a text, cut at a character boundary (` …` marks the cut).
pub(crate) fn cut(t: &str, max: usize) -> String {
    if t.len() <= max {
        return t.to_owned();
    }
    let mut end = max;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} …", &t[..end])
}

/// The records of a batch as JSON objects (a sample shown or compared by `sluice
/// doctor`); empty when they cannot be written as JSON.
pub fn records_json(batch: &arrow::array::RecordBatch) -> Vec<serde_json::Value> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    if writer.write(batch).is_err() || writer.finish().is_err() {
        return Vec::new();
    }
    serde_json::from_slice(&writer.into_inner()).unwrap_or_default()
}
