//! Spec pieces several node kinds share: declared schemas, nested values, bad records.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_config::values::Duration;
use sluice_config::{Checker, Spanned};

/// What an HTTP source does with a malformed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Fail the page: the node fails, showing the record.
    #[default]
    Fail,
    /// Leave the record out, with an event in the run record; it is not kept.
    Skip,
    /// Deliver the page's good records and keep the bad ones in the failed-batch store;
    /// `sluice replay` reads them again from the API once it serves them well.
    Quarantine,
}

pub(crate) fn default_true() -> bool {
    true
}

pub(crate) fn default_future_tolerance() -> Spanned<Duration> {
    Spanned::new(Duration::secs(3600), sluice_config::Pos::START)
}

/// The columns of records.
///
/// ```yaml
/// schema: infer
/// schema:
///   columns:
///     - { name: id, type: int64, nullable: false }
///     - { name: updated_at, type: timestamp }
/// ```
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SchemaSpec {
    /// From the first page's records.
    #[default]
    Infer,
    /// These columns, in this order.
    Columns(Spanned<Vec<ColumnSpec>>),
}

/// A declared column.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The record field (and column) name.
    #[schemars(example = &"id")]
    pub name: Spanned<String>,
    /// The column's type.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Whether the value may be missing or null.
    #[serde(default = "default_true")]
    pub nullable: bool,
}

/// A column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// `true` / `false`.
    Boolean,
    /// A 64-bit integer.
    Int64,
    /// A 64-bit float.
    Float64,
    /// UTF-8 text.
    String,
    /// A timestamp (RFC 3339 text or Unix seconds), stored in UTC microseconds.
    Timestamp,
    /// A calendar date.
    Date,
    /// Any JSON value, kept as JSON text.
    Json,
}

/// How nested objects and lists become columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NestedMode {
    /// Arrow struct and list columns.
    #[default]
    Struct,
    /// JSON text columns.
    JsonText,
}

impl SchemaSpec {
    /// The declared columns' names, in order (`None` for `infer`).
    pub fn declared(&self) -> Option<Vec<String>> {
        match self {
            SchemaSpec::Infer => None,
            SchemaSpec::Columns(columns) => {
                Some(columns.value.iter().map(|c| c.name.value.clone()).collect())
            }
        }
    }
}

/// `schema:` checks: declared columns are some, and named once.
pub(crate) fn check_schema(c: &mut Checker<'_>, schema: &SchemaSpec) {
    if let SchemaSpec::Columns(columns) = schema {
        if columns.value.is_empty() {
            c.error_at(
                columns,
                "`columns` is empty",
                "declare at least one column, or write `schema: infer`",
            );
        }
        let names: Vec<Spanned<String>> = columns.value.iter().map(|c| c.name.clone()).collect();
        c.unique(&names, "column");
    }
}

/// A declared or inferred schema (HTTP and file sources).
pub(crate) fn schema_config(spec: &SchemaSpec) -> crate::http::SchemaConfig {
    match spec {
        crate::spec::SchemaSpec::Infer => crate::http::SchemaConfig::Infer,
        crate::spec::SchemaSpec::Columns(cols) => crate::http::SchemaConfig::Columns(
            cols.value
                .iter()
                .map(|col| crate::http::ColumnConfig {
                    name: col.name.value.clone(),
                    data_type: col.data_type,
                    nullable: col.nullable,
                })
                .collect(),
        ),
    }
}
