//! `type: transform`: a list of declarative operations applied to every batch, in order.

use crate::spec::ColumnType;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_config::Spanned;
use sluice_config::expr::Expression;
use sluice_config::values::SpannedMap;

/// `type: transform`: reshapes batches.
///
/// ```yaml
/// type: transform
/// inputs: [orders_api]
/// ops:
///   - filter: "status != 'test' and total > 0"
///   - rename: { id: order_id }
///   - cast: { total: float64 }
///   - add: { column: source, value: shop_api }
///   - flatten: { column: customer }
///   - drop: [internal_notes]
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformSpec {
    /// The operations, applied in order. At least one.
    pub ops: Spanned<Vec<Spanned<TransformOp>>>,
}

/// One operation of a transform.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformOp {
    /// Keep only these columns, in this order.
    Select(Vec<Spanned<String>>),
    /// Remove these columns.
    Drop(Vec<Spanned<String>>),
    /// Rename columns: `{ old: new }`.
    Rename(SpannedMap<Spanned<String>>),
    /// Change column types: `{ column: type }`. A value that does not convert is an
    /// `invalid_request` error of its record.
    Cast(SpannedMap<ColumnType>),
    /// Keep the records for which the expression is true (null counts as false).
    Filter(Spanned<Expression>),
    /// Add a column with a constant `value` or an `expr`.
    Add(AddColumn),
    /// Turn a struct column's fields into top-level columns (`customer.name` becomes
    /// `customer_name`).
    Flatten(FlattenOp),
}

impl TransformOp {
    /// The name used in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            TransformOp::Select(_) => "select",
            TransformOp::Drop(_) => "drop",
            TransformOp::Rename(_) => "rename",
            TransformOp::Cast(_) => "cast",
            TransformOp::Filter(_) => "filter",
            TransformOp::Add(_) => "add",
            TransformOp::Flatten(_) => "flatten",
        }
    }
}

/// A column added by a transform.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddColumn {
    /// The new column's name.
    #[schemars(example = &"source")]
    pub column: Spanned<String>,
    /// A constant value (text, number, boolean).
    #[schemars(example = &"shop_api")]
    pub value: Option<Spanned<serde_json::Value>>,
    /// An expression computed per record (instead of `value`).
    #[schemars(example = &"concat(first_name, ' ', last_name)")]
    pub expr: Option<Spanned<Expression>>,
}

/// Flattening of nested columns.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlattenOp {
    /// The struct column to flatten (every struct column when unset).
    #[schemars(example = &"customer")]
    pub column: Option<Spanned<String>>,
    /// Put between the parent and child names.
    #[serde(default = "default_separator")]
    pub separator: String,
}

fn default_separator() -> String {
    "_".to_owned()
}
