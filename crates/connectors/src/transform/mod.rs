//! `type: transform`: the declarative operations of a transform node, compiled once from
//! the spec and applied to every batch with arrow's compute kernels.
//!
//! ```text
//! ops:
//!   - filter: "status != 'test' and total > 0"   # null counts as false
//!   - rename: { id: order_id }
//!   - cast: { total: float64, created: timestamp }
//!   - add: { column: source, value: shop_api }
//!   - add: { column: email, expr: "lower(trim(email))" }   # replaces `email` in place
//!   - flatten: { column: customer }                # customer_name, customer_address_city
//!   - drop: [internal_notes]
//! ```
//!
//! What each operation does with a batch:
//!
//! - `select`: only these columns, in this order. A missing one is `contract_changed`.
//! - `drop`: removes these columns; an absent one is fine.
//! - `rename`: all renames at once (`{a: b, b: a}` swaps). A missing column, or a new name
//!   that another column already has, is `contract_changed`.
//! - `cast`: see [`cast`](self::cast) for what converts to what. A column that is absent,
//!   or whose type cannot become the target (a record to `int64`), is `contract_changed`;
//!   a value that does not convert is `invalid_request`, naming the first one.
//! - `filter`: keeps the records for which the condition is true (null is false).
//! - `add`: a constant (`value`: text, a number, true/false or null) or an expression
//!   computed per record (`expr`). A column of that name is replaced where it stands;
//!   otherwise the new column goes last.
//! - `flatten`: the fields of a struct column become top-level columns
//!   `parent<separator>field`, where the struct stood, **recursively**
//!   (`customer.address.city` becomes `customer_address_city`); a record that is null
//!   gives nulls in all its columns. Without `column`, every struct column is flattened;
//!   lists are left alone (cast them to `json`). A name that already exists is
//!   `contract_changed`. A named column that is null in every record of a batch (so its
//!   type is `Null`) is left as it is.
//!
//! Expressions are described in [`eval`](self::eval). Every error says which operation
//! (`transform op 2 (cast)`), which column, and what to do. The transform never panics on
//! a batch: should a kernel panic all the same, that is turned into an `internal` error and
//! the batch is kept for replay.

mod cast;
mod eval;
mod kind;
pub mod spec;

pub use kind::TRANSFORM;

use crate::spec::ColumnType;
use crate::transform::spec::{TransformOp, TransformSpec};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, NullArray, RecordBatch,
    RecordBatchOptions, StringArray,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;
use cast::CastError;
use eval::{Eval, Kind, Value, kind, kind_name, missing_column, show};
use sluice_config::expr::Expr;
use sluice_core::node::Transform;
use sluice_core::{ConnectorError, ErrorClass};
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A transform node's operations, ready to apply to batches.
#[derive(Debug, Clone)]
pub struct CompiledTransform {
    ops: Vec<Op>,
    /// `now()`: the run's start, in UTC microseconds.
    now_micros: i64,
}

#[derive(Debug, Clone)]
enum Op {
    Select(Vec<String>),
    Drop(Vec<String>),
    Rename(Vec<(String, String)>),
    Cast(Vec<(String, ColumnType)>),
    Filter(Expr),
    Add {
        column: String,
        value: AddValue,
    },
    Flatten {
        column: Option<String>,
        separator: String,
    },
}

#[derive(Debug, Clone)]
enum AddValue {
    /// One value (an array of length one), repeated.
    Constant(ArrayRef),
    Expr(Expr),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Select(_) => "select",
            Op::Drop(_) => "drop",
            Op::Rename(_) => "rename",
            Op::Cast(_) => "cast",
            Op::Filter(_) => "filter",
            Op::Add { .. } => "add",
            Op::Flatten { .. } => "flatten",
        }
    }
}

/// Why an operation failed on a batch: the class decides what the engine does with it.
#[derive(Debug)]
struct Fail {
    class: ErrorClass,
    message: String,
}

impl Fail {
    /// The batch is not shaped as the pipeline expects (a column missing or retyped).
    fn contract(message: impl Into<String>) -> Self {
        Fail {
            class: ErrorClass::ContractChanged,
            message: message.into(),
        }
    }

    /// A value in the batch is not what it should be.
    fn invalid(message: impl Into<String>) -> Self {
        Fail {
            class: ErrorClass::InvalidRequest,
            message: message.into(),
        }
    }

    /// A bug.
    fn internal(message: impl Into<String>) -> Self {
        Fail {
            class: ErrorClass::Internal,
            message: message.into(),
        }
    }
}

impl From<ArrowError> for Fail {
    fn from(e: ArrowError) -> Self {
        Fail::internal(format!(
            "an arrow kernel failed: {e}; this is a bug in sluice (the batch is kept for \
             replay): please report it with the pipeline"
        ))
    }
}

impl CompiledTransform {
    /// Compiles a transform node's spec. `run_started` is what `now()` returns.
    ///
    /// The checks of `sluice validate` are assumed to have passed; what would make the
    /// operations meaningless (an `add` with both or neither of `value` and `expr`, a
    /// constant that is a list) is refused here again, with its line.
    pub fn compile(
        spec: &TransformSpec,
        run_started: SystemTime,
    ) -> Result<CompiledTransform, ConnectorError> {
        Self::compile_ops(spec, run_started)
            .map_err(|e| ConnectorError::new(ErrorClass::InvalidRequest, e))
    }

    fn compile_ops(
        spec: &TransformSpec,
        run_started: SystemTime,
    ) -> Result<CompiledTransform, String> {
        let now_micros = match run_started.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
        };
        let mut ops = Vec::with_capacity(spec.ops.value.len());
        for op in &spec.ops.value {
            let at = format!("{}:{}", op.pos.line, op.pos.column);
            ops.push(match &op.value {
                TransformOp::Select(cols) => {
                    Op::Select(cols.iter().map(|c| c.value.clone()).collect())
                }
                TransformOp::Drop(cols) => Op::Drop(cols.iter().map(|c| c.value.clone()).collect()),
                TransformOp::Rename(map) => Op::Rename(
                    map.iter()
                        .map(|(from, to)| (from.value.clone(), to.value.clone()))
                        .collect(),
                ),
                TransformOp::Cast(map) => Op::Cast(
                    map.iter()
                        .map(|(col, ty)| (col.value.clone(), *ty))
                        .collect(),
                ),
                TransformOp::Filter(e) => Op::Filter(e.value.expr().clone()),
                TransformOp::Add(add) => {
                    let column = add.column.value.clone();
                    let value = match (&add.value, &add.expr) {
                        (Some(v), None) => AddValue::Constant(constant(&v.value).map_err(|m| {
                            format!("{}:{}: add `{column}`: {m}", v.pos.line, v.pos.column)
                        })?),
                        (None, Some(e)) => AddValue::Expr(e.value.expr().clone()),
                        (Some(_), Some(_)) => {
                            return Err(format!(
                                "{at}: add `{column}`: takes `value` or `expr`, not both"
                            ));
                        }
                        (None, None) => {
                            return Err(format!(
                                "{at}: add `{column}`: needs `value` (a constant) or `expr` \
                                 (computed per record)"
                            ));
                        }
                    };
                    Op::Add { column, value }
                }
                TransformOp::Flatten(f) => {
                    if f.separator.is_empty() {
                        return Err(format!(
                            "{at}: flatten: `separator` is empty; use `_` or `.`"
                        ));
                    }
                    Op::Flatten {
                        column: f.column.as_ref().map(|c| c.value.clone()),
                        separator: f.separator.clone(),
                    }
                }
            });
        }
        Ok(CompiledTransform { ops, now_micros })
    }

    fn run(&self, mut batch: RecordBatch) -> Result<RecordBatch, ConnectorError> {
        for (i, op) in self.ops.iter().enumerate() {
            batch = self.apply_op(op, batch).map_err(|f| {
                ConnectorError::new(
                    f.class,
                    format!("transform op {} ({}): {}", i + 1, op.name(), f.message),
                )
            })?;
        }
        Ok(batch)
    }

    fn apply_op(&self, op: &Op, batch: RecordBatch) -> Result<RecordBatch, Fail> {
        let schema = batch.schema();
        match op {
            Op::Select(names) => {
                let indices = names
                    .iter()
                    .map(|n| schema.index_of(n).map_err(|_| missing_column(n, &schema)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(batch.project(&indices)?)
            }
            Op::Drop(names) => {
                let indices: Vec<usize> = (0..schema.fields().len())
                    .filter(|&i| !names.contains(schema.field(i).name()))
                    .collect();
                Ok(batch.project(&indices)?)
            }
            Op::Rename(pairs) => {
                for (from, _) in pairs {
                    if schema.index_of(from).is_err() {
                        return Err(missing_column(from, &schema));
                    }
                }
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|f| match pairs.iter().find(|(from, _)| from == f.name()) {
                        Some((_, to)) => f.as_ref().clone().with_name(to),
                        None => f.as_ref().clone(),
                    })
                    .collect();
                if let Some(name) = duplicate(&fields) {
                    let from = pairs
                        .iter()
                        .find(|(_, to)| *to == name)
                        .map_or(name.as_str(), |(from, _)| from.as_str());
                    return Err(Fail::contract(format!(
                        "renaming `{from}` to `{name}` makes two columns `{name}`: the batch \
                         already has one; drop or rename it first"
                    )));
                }
                rebuild(&schema, fields, batch.columns().to_vec(), batch.num_rows())
            }
            Op::Cast(casts) => {
                let mut fields: Vec<Field> =
                    schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                let mut columns = batch.columns().to_vec();
                for (name, to) in casts {
                    let i = schema
                        .index_of(name)
                        .map_err(|_| missing_column(name, &schema))?;
                    let out = cast::convert(&columns[i], Some(&fields[i]), *to)
                        .map_err(|e| cast_fail(name, *to, e))?;
                    fields[i] = cast::cast_field(&fields[i], out.as_ref(), *to);
                    columns[i] = out;
                }
                rebuild(&schema, fields, columns, batch.num_rows())
            }
            Op::Filter(e) => {
                let value = self.eval(&batch, e)?;
                let mask = match kind(value.data_type()) {
                    Kind::Bool => value.into_array(batch.num_rows())?,
                    Kind::Null => return Ok(batch.slice(0, 0)),
                    _ => {
                        return Err(Fail::contract(format!(
                            "the condition {} is {}, not true/false; compare it with \
                             something, e.g. `amount > 0`",
                            show(e),
                            kind_name(value.data_type())
                        )));
                    }
                };
                let Some(mask) = mask.as_boolean_opt() else {
                    return Err(Fail::internal("a condition did not give true/false"));
                };
                Ok(filter_record_batch(&batch, &cast::null_as_false(mask))?)
            }
            Op::Add { column, value } => {
                let rows = batch.num_rows();
                let array = match value {
                    AddValue::Constant(one) => eval::repeat(one, rows)?,
                    AddValue::Expr(e) => self.eval(&batch, e)?.into_array(rows)?,
                };
                let field = Field::new(column, array.data_type().clone(), true);
                let mut fields: Vec<Field> =
                    schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                let mut columns = batch.columns().to_vec();
                match schema.index_of(column) {
                    Ok(i) => {
                        fields[i] = field;
                        columns[i] = array;
                    }
                    Err(_) => {
                        fields.push(field);
                        columns.push(array);
                    }
                }
                rebuild(&schema, fields, columns, rows)
            }
            Op::Flatten { column, separator } => flatten(&batch, column.as_deref(), separator),
        }
    }

    fn eval(&self, batch: &RecordBatch, e: &Expr) -> Result<Value, Fail> {
        Eval {
            batch,
            now_micros: self.now_micros,
        }
        .eval(e)
    }
}

impl Transform for CompiledTransform {
    fn apply(&mut self, records: RecordBatch) -> Result<RecordBatch, ConnectorError> {
        match catch_unwind(AssertUnwindSafe(|| self.run(records))) {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                Err(ConnectorError::new(
                    ErrorClass::Internal,
                    format!(
                        "the transform panicked on this batch ({what}); this is a bug in \
                         sluice (the batch is kept for replay): please report it with the \
                         pipeline"
                    ),
                ))
            }
        }
    }
}

/// An `add` constant as an array of one value.
fn constant(v: &serde_json::Value) -> Result<ArrayRef, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => Arc::new(NullArray::new(1)),
        J::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Arc::new(Int64Array::from(vec![i])),
            (None, Some(f)) => Arc::new(Float64Array::from(vec![f])),
            (None, None) => return Err(format!("the number {n} does not fit a float64")),
        },
        J::String(s) => Arc::new(StringArray::from(vec![s.as_str()])),
        J::Array(_) | J::Object(_) => {
            return Err(
                "`value` must be text, a number, true/false or null; for a JSON value write \
                 it as text and `cast` the column to json"
                    .to_owned(),
            );
        }
    })
}

fn cast_fail(column: &str, to: ColumnType, e: CastError) -> Fail {
    let ty = cast::type_name(to);
    match e {
        CastError::Values { count, row, value } => Fail::invalid(format!(
            "column `{column}`: `{value}` (record {}) is not a {ty}{}; fix the data upstream, \
             or filter such records out before the cast",
            row + 1,
            eval::more(count)
        )),
        CastError::Type(m) => Fail::contract(format!("cannot cast `{column}` to {ty}: {m}")),
        CastError::Arrow(e) => e.into(),
    }
}

/// The first name that two fields share.
fn duplicate(fields: &[Field]) -> Option<String> {
    let mut seen = HashSet::new();
    fields
        .iter()
        .find(|f| !seen.insert(f.name().as_str()))
        .map(|f| f.name().clone())
}

/// A batch with new fields and columns, keeping the schema's metadata and the row count
/// (even with no column left).
fn rebuild(
    schema: &SchemaRef,
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch, Fail> {
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

fn flatten(
    batch: &RecordBatch,
    column: Option<&str>,
    separator: &str,
) -> Result<RecordBatch, Fail> {
    let schema = batch.schema();
    if let Some(name) = column {
        let field = schema
            .field_with_name(name)
            .map_err(|_| missing_column(name, &schema))?;
        match field.data_type() {
            DataType::Struct(_) => {}
            DataType::Null => return Ok(batch.clone()),
            other => {
                return Err(Fail::contract(format!(
                    "column `{name}` is {}, not a record, so it has no fields to flatten; \
                     did the upstream API change its shape?",
                    kind_name(other)
                )));
            }
        }
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let wanted = column.is_none_or(|c| c == field.name());
        if wanted && matches!(field.data_type(), DataType::Struct(_)) {
            flatten_into(field, array, separator, &mut fields, &mut columns)?;
        } else {
            fields.push(field.as_ref().clone());
            columns.push(array.clone());
        }
    }
    if let Some(name) = duplicate(&fields) {
        return Err(Fail::contract(format!(
            "flattening makes a column `{name}`, but the batch already has one; rename one of \
             them first, or choose another `separator`"
        )));
    }
    rebuild(&schema, fields, columns, batch.num_rows())
}

/// The fields of the struct `array` as columns `parent<sep>field`, recursively.
fn flatten_into(
    parent: &FieldRef,
    array: &ArrayRef,
    separator: &str,
    fields: &mut Vec<Field>,
    columns: &mut Vec<ArrayRef>,
) -> Result<(), Fail> {
    let Some(record) = array.as_struct_opt() else {
        return Err(Fail::internal(format!(
            "`{}` is not a struct array",
            parent.name()
        )));
    };
    for (child_field, child) in record.fields().iter().zip(record.columns()) {
        let child = eval::with_parent_nulls(record, child)?;
        let name = format!("{}{separator}{}", parent.name(), child_field.name());
        let field = Arc::new(child_field.as_ref().clone().with_name(name).with_nullable(
            child_field.is_nullable() || parent.is_nullable() || child.logical_null_count() > 0,
        ));
        if matches!(field.data_type(), DataType::Struct(_)) {
            flatten_into(&field, &child, separator, fields, columns)?;
        } else {
            fields.push(field.as_ref().clone());
            columns.push(child);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::spec::{AddColumn, FlattenOp};
    use arrow::array::{
        DictionaryArray, Int32Array, LargeStringArray, ListArray, StructArray,
        TimestampMicrosecondArray,
    };
    use arrow::buffer::NullBuffer;
    use arrow::datatypes::{Fields, Int32Type, Int64Type, TimestampMicrosecondType};
    use sluice_config::{Env, Pos, Spanned};

    /// A transform from the YAML of its `ops:` (indented by 6), through `sluice validate`.
    fn compile(ops: &str) -> CompiledTransform {
        let yaml = format!(
            "pipeline: t
nodes:
  api:
    type: http
    url: https://api.example.com/orders
    records: {{ path: $.data }}
  shape:
    type: transform
    inputs: [api]
    ops:
{ops}
  db:
    type: sqlite
    inputs: [shape]
    url: sqlite://orders.db
    table: orders
"
        );
        let plan = match sluice_config::validate(&yaml, &Env::new(), crate::registry()) {
            Ok(plan) => plan,
            Err(e) => panic!("{yaml}\n{:?}", e.diagnostics()),
        };
        let node = plan.nodes.iter().find(|n| n.id == "shape").unwrap();
        let spec = node
            .config
            .downcast_ref::<TransformSpec>()
            .expect("a transform");
        let run_started = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        CompiledTransform::compile(spec, run_started).unwrap()
    }

    fn apply(ops: &str, batch: RecordBatch) -> Result<RecordBatch, ConnectorError> {
        compile(ops).apply(batch)
    }

    fn ok(ops: &str, batch: RecordBatch) -> RecordBatch {
        apply(ops, batch).unwrap_or_else(|e| panic!("{ops}: {e:?}"))
    }

    fn fail(ops: &str, batch: RecordBatch) -> ConnectorError {
        match apply(ops, batch) {
            Ok(b) => panic!("{ops}: expected an error, got {b:?}"),
            Err(e) => e,
        }
    }

    fn names(b: &RecordBatch) -> Vec<String> {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn strings(b: &RecordBatch, column: &str) -> Vec<Option<String>> {
        b.column_by_name(column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", names(b)))
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_owned))
            .collect()
    }

    pub(super) fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    /// Asserts that `message` contains `text`.
    pub(super) fn says(message: &str, text: &str) {
        assert!(message.contains(text), "{message}");
    }

    /// Asserts that `message` starts with `text`.
    pub(super) fn starts(message: &str, text: &str) {
        assert!(message.starts_with(text), "{message}");
    }

    /// id, status, total (text), customer {name, address {city}}, tags, notes.
    fn orders() -> RecordBatch {
        let address = StructArray::from(vec![(
            Arc::new(Field::new("city", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![
                Some("Oslo"),
                Some("Lima"),
                Some("Rome"),
            ])) as ArrayRef,
        )]);
        let customer_fields = Fields::from(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("address", address.data_type().clone(), true),
        ]);
        let customer = StructArray::new(
            customer_fields,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("Ann"),
                    Some("Bob"),
                    Some("Cy"),
                ])),
                Arc::new(address),
            ],
            Some(NullBuffer::from(vec![true, true, false])),
        );
        let tags = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![]),
        ]);
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "status",
                Arc::new(StringArray::from(vec![Some("open"), Some("test"), None])),
            ),
            (
                "total",
                Arc::new(StringArray::from(vec![Some("12.5"), Some("0"), Some("7")])),
            ),
            ("customer", Arc::new(customer)),
            ("tags", Arc::new(tags)),
            (
                "notes",
                Arc::new(StringArray::from(vec![Some("x"), None, Some("y")])),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn select_keeps_columns_in_order_and_names_a_missing_one() {
        let b = ok("      - select: [total, id]", orders());
        assert_eq!(names(&b), vec!["total", "id"]);
        assert_eq!(b.num_rows(), 3);
        let e = fail("      - select: [id, order_total]", orders());
        assert_eq!(e.class, ErrorClass::ContractChanged);
        assert_eq!(
            e.message,
            "transform op 1 (select): column `order_total` is not in the batch (columns: id, \
             status, total, customer, tags, notes); did the upstream API rename it?"
        );
    }

    #[test]
    fn drop_removes_present_columns_and_ignores_absent_ones() {
        let b = ok("      - drop: [notes, gone, tags]", orders());
        assert_eq!(names(&b), vec!["id", "status", "total", "customer"]);
        // Dropping every column keeps the records.
        let b = ok(
            "      - drop: [id, status, total, customer, tags, notes]",
            orders(),
        );
        assert_eq!((b.num_columns(), b.num_rows()), (0, 3));
    }

    #[test]
    fn rename_all_at_once_and_refuses_missing_or_clashing_names() {
        let b = ok("      - rename: { id: order_id, status: state }", orders());
        assert_eq!(names(&b)[..2], ["order_id", "state"]);
        let b = ok("      - rename: { id: status, status: id }", orders());
        assert_eq!(names(&b)[..2], ["status", "id"]);
        assert_eq!(b.column(0).data_type(), &DataType::Int64);

        let e = fail("      - rename: { statuss: state }", orders());
        assert_eq!(e.class, ErrorClass::ContractChanged);
        starts(
            &e.message,
            "transform op 1 (rename): column `statuss` is not in the batch",
        );
        assert!(e.message.ends_with("`status` is close"), "{}", e.message);
        let e = fail("      - rename: { id: notes }", orders());
        assert_eq!(e.class, ErrorClass::ContractChanged);
        assert_eq!(
            e.message,
            "transform op 1 (rename): renaming `id` to `notes` makes two columns `notes`: the \
             batch already has one; drop or rename it first"
        );
    }

    #[test]
    fn cast_converts_and_names_the_first_bad_value() {
        let b = ok("      - cast: { total: float64, id: string }", orders());
        let total = b.column_by_name("total").unwrap();
        assert_eq!(
            total
                .as_primitive::<arrow::datatypes::Float64Type>()
                .values(),
            &[12.5, 0.0, 7.0]
        );
        assert_eq!(strings(&b, "id"), vec![s("1"), s("2"), s("3")]);

        let e = fail(
            "      - filter: \"id > 0\"\n      - cast: { status: int64 }",
            orders(),
        );
        assert_eq!(e.class, ErrorClass::InvalidRequest);
        assert_eq!(
            e.message,
            "transform op 2 (cast): column `status`: `open` (record 1) is not a int64 (and 1 \
             more value in this batch); fix the data upstream, or filter such records out \
             before the cast"
        );
        let e = fail("      - cast: { customer: int64 }", orders());
        assert_eq!(e.class, ErrorClass::ContractChanged);
        starts(
            &e.message,
            "transform op 1 (cast): cannot cast `customer` to int64: the column is a nested record",
        );
        let e = fail("      - cast: { price: float64 }", orders());
        assert_eq!(e.class, ErrorClass::ContractChanged);
        says(&e.message, "column `price` is not in the batch");
    }

    #[test]
    fn cast_to_timestamp_date_and_json() {
        let batch = RecordBatch::try_from_iter(vec![
            (
                "at",
                Arc::new(StringArray::from(vec![
                    "2024-01-01T00:00:00Z",
                    "1704067200",
                ])) as ArrayRef,
            ),
            (
                "day",
                Arc::new(StringArray::from(vec!["2024-01-31", "2024-02-01"])),
            ),
        ])
        .unwrap();
        let b = ok("      - cast: { at: timestamp, day: date }", batch);
        let at = b.column(0).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.values(), &[1_704_067_200_000_000; 2]);
        assert_eq!(b.schema().field(0).data_type(), &eval::timestamp_type());
        assert_eq!(b.schema().field(1).data_type(), &DataType::Date32);

        let b = ok("      - cast: { customer: json, tags: json }", orders());
        assert_eq!(
            strings(&b, "customer"),
            vec![
                s(r#"{"name":"Ann","address":{"city":"Oslo"}}"#),
                s(r#"{"name":"Bob","address":{"city":"Lima"}}"#),
                None
            ]
        );
        assert_eq!(strings(&b, "tags"), vec![s("[1,2]"), None, s("[]")]);
        assert!(cast::is_json(
            b.schema().field_with_name("customer").unwrap()
        ));
        // Casting JSON to json again keeps it.
        let again = compile("      - cast: { customer: json }")
            .apply(b.clone())
            .unwrap();
        assert_eq!(strings(&again, "customer"), strings(&b, "customer"));
    }

    #[test]
    fn filter_keeps_true_records_and_drops_null_ones() {
        let b = ok("      - filter: \"status != 'test'\"", orders());
        // `status` is null in the third record: null is not true.
        assert_eq!(b.num_rows(), 1);
        assert_eq!(strings(&b, "status"), vec![s("open")]);
        let b = ok(
            "      - filter: \"customer.address.city == 'Rome'\"",
            orders(),
        );
        // The third customer is null, so its city is too, whatever the child holds.
        assert_eq!(b.num_rows(), 0);
        let b = ok("      - filter: \"status is null or id >= 2\"", orders());
        assert_eq!(b.num_rows(), 2);
        let b = ok("      - filter: \"true\"", orders());
        assert_eq!(b.num_rows(), 3);
        let b = ok("      - filter: \"not (id == 1)\"", orders());
        assert_eq!(b.num_rows(), 2);

        let e = fail("      - filter: \"status == 1\"", orders());
        assert_eq!(e.class, ErrorClass::ContractChanged);
        starts(
            &e.message,
            "transform op 1 (filter): cannot compare `status` (text) with `1` (a number): add `cast: { status: float64 }` before this op or quote the number ('1')",
        );
        let e = fail("      - filter: \"total\"", orders());
        assert_eq!(e.class, ErrorClass::ContractChanged);
        says(&e.message, "the condition `total` is text, not true/false");
        let e = fail("      - filter: \"statuz == 'open'\"", orders());
        says(&e.message, "column `statuz` is not in the batch");
    }

    #[test]
    fn add_constants_and_expressions() {
        let b = ok(
            "      - add: { column: source, value: shop_api }
      - add: { column: version, value: 3 }
      - add: { column: weight, value: 1.5 }
      - add: { column: live, value: true }
      - add: { column: label, expr: \"concat(upper(status), '#', id)\" }
      - add: { column: status, expr: \"coalesce(status, 'unknown')\" }",
            orders(),
        );
        assert_eq!(
            names(&b),
            vec![
                "id", "status", "total", "customer", "tags", "notes", "source", "version",
                "weight", "live", "label"
            ]
        );
        assert_eq!(strings(&b, "source"), vec![s("shop_api"); 3]);
        assert_eq!(
            b.column_by_name("version")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values(),
            &[3, 3, 3]
        );
        assert_eq!(
            b.column_by_name("weight").unwrap().data_type(),
            &DataType::Float64
        );
        assert_eq!(
            b.column_by_name("live").unwrap().as_boolean().true_count(),
            3
        );
        assert_eq!(
            strings(&b, "label"),
            vec![s("OPEN#1"), s("TEST#2"), s("#3")]
        );
        // Replaced in place.
        assert_eq!(
            strings(&b, "status"),
            vec![s("open"), s("test"), s("unknown")]
        );

        let b = ok("      - add: { column: seen, expr: \"now()\" }", orders());
        let seen = b.column_by_name("seen").unwrap();
        assert_eq!(seen.data_type(), &eval::timestamp_type());
        assert_eq!(
            seen.as_primitive::<TimestampMicrosecondType>().values(),
            &[1_700_000_000_000_000; 3]
        );
        let e = fail("      - add: { column: n, expr: \"length(id)\" }", orders());
        assert_eq!(e.class, ErrorClass::ContractChanged);
        assert_eq!(
            e.message,
            "transform op 1 (add): `length` takes text, but `id` is a number; add `cast: { \
             id: string }` before this op"
        );
    }

    #[test]
    fn flatten_one_column_recursively() {
        let b = ok("      - flatten: { column: customer }", orders());
        assert_eq!(
            names(&b),
            vec![
                "id",
                "status",
                "total",
                "customer_name",
                "customer_address_city",
                "tags",
                "notes"
            ]
        );
        // The null customer gives nulls, although its children hold values.
        assert_eq!(strings(&b, "customer_name"), vec![s("Ann"), s("Bob"), None]);
        assert_eq!(
            strings(&b, "customer_address_city"),
            vec![s("Oslo"), s("Lima"), None]
        );
        let b = ok("      - flatten: { separator: \".\" }", orders());
        assert_eq!(names(&b)[3..5], ["customer.name", "customer.address.city"]);
        // The flattened dotted name is what the dotted path now reads.
        let b = ok(
            "      - flatten: { separator: \".\" }\n      - filter: \"customer.name == 'Bob'\"",
            orders(),
        );
        assert_eq!(b.num_rows(), 1);
    }

    #[test]
    fn flatten_every_struct_and_refuse_clashes_and_non_records() {
        let b = ok("      - flatten: {}", orders());
        assert!(
            !b.schema()
                .fields()
                .iter()
                .any(|f| matches!(f.data_type(), DataType::Struct(_)))
        );
        // Lists are left alone.
        assert!(names(&b).contains(&"tags".to_owned()));

        let e = fail(
            "      - add: { column: customer_name, value: x }\n      - flatten: {}",
            orders(),
        );
        assert_eq!(e.class, ErrorClass::ContractChanged);
        assert_eq!(
            e.message,
            "transform op 2 (flatten): flattening makes a column `customer_name`, but the \
             batch already has one; rename one of them first, or choose another `separator`"
        );
        let e = fail("      - flatten: { column: status }", orders());
        assert_eq!(e.class, ErrorClass::ContractChanged);
        says(&e.message, "column `status` is text, not a record");
        let e = fail("      - flatten: { column: buyer }", orders());
        says(&e.message, "column `buyer` is not in the batch");
        // A struct column that is null in every record may come typed as Null: kept.
        let nulls =
            RecordBatch::try_from_iter(vec![("customer", Arc::new(NullArray::new(2)) as ArrayRef)])
                .unwrap();
        let b = ok("      - flatten: { column: customer }", nulls);
        assert_eq!(names(&b), vec!["customer"]);
    }

    #[test]
    fn the_documented_example_runs() {
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "status",
                Arc::new(StringArray::from(vec!["paid", "test", "paid"])),
            ),
            ("total", Arc::new(StringArray::from(vec!["10", "5", "0"]))),
            (
                "internal_notes",
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
            ),
        ])
        .unwrap();
        let b = ok(
            "      - cast: { total: float64 }
      - filter: \"status != 'test' and total > 0\"
      - rename: { id: order_id }
      - add: { column: source, value: shop_api }
      - flatten: {}
      - drop: [internal_notes]",
            batch,
        );
        assert_eq!(names(&b), vec!["order_id", "status", "total", "source"]);
        assert_eq!(b.num_rows(), 1);
    }

    #[test]
    fn empty_batches_and_schema_metadata_survive() {
        let batch = orders().slice(0, 0);
        let batch = batch
            .clone()
            .with_schema(Arc::new(batch.schema().as_ref().clone().with_metadata(
                std::collections::HashMap::from([("origin".to_owned(), "api".to_owned())]),
            )))
            .unwrap();
        let b = ok(
            "      - filter: \"id > 1\"
      - cast: { total: float64, customer: json }
      - add: { column: k, expr: \"concat(status, now())\" }
      - flatten: {}",
            batch,
        );
        assert_eq!(b.num_rows(), 0);
        assert_eq!(
            b.schema().metadata().get("origin").map(String::as_str),
            Some("api")
        );
    }

    fn spanned<T>(v: T) -> Spanned<T> {
        Spanned::new(v, Pos::new(3, 7))
    }

    fn spec(op: TransformOp) -> TransformSpec {
        TransformSpec {
            ops: spanned(vec![spanned(op)]),
        }
    }

    #[test]
    fn compile_refuses_what_validation_would() {
        let add = |value: Option<serde_json::Value>, expr: Option<&str>| {
            spec(TransformOp::Add(AddColumn {
                column: spanned("c".to_owned()),
                value: value.map(spanned),
                expr: expr.map(|e| spanned(e.parse().unwrap())),
            }))
        };
        let now = SystemTime::now();
        let e =
            CompiledTransform::compile(&add(Some(serde_json::json!([1])), None), now).unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidRequest);
        assert!(
            e.message
                .starts_with("3:7: add `c`: `value` must be text, a number"),
            "{e}"
        );
        let e = CompiledTransform::compile(&add(Some(serde_json::json!(1)), Some("a")), now)
            .unwrap_err();
        assert_eq!(e.message, "3:7: add `c`: takes `value` or `expr`, not both");
        let e = CompiledTransform::compile(&add(None, None), now).unwrap_err();
        assert!(e.message.starts_with("3:7: add `c`: needs `value`"), "{e}");
        let flatten = spec(TransformOp::Flatten(FlattenOp {
            column: None,
            separator: String::new(),
        }));
        assert!(CompiledTransform::compile(&flatten, now).is_err());
        // A null constant is a null column; a run before 1970 is a negative now().
        let mut t = CompiledTransform::compile(
            &add(Some(serde_json::Value::Null), None),
            UNIX_EPOCH - std::time::Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(t.now_micros, -1_000_000);
        let b = t.apply(orders()).unwrap();
        assert_eq!(b.column_by_name("c").unwrap().logical_null_count(), 3);
    }

    /// Batches of every shape through every kind of op and expression: errors are fine,
    /// panics and kernel failures (`internal`) are not.
    #[test]
    fn no_batch_makes_it_panic() {
        let dict: DictionaryArray<Int32Type> =
            vec![Some("a"), None, Some("b")].into_iter().collect();
        let odd = RecordBatch::try_from_iter(vec![
            ("a", Arc::new(NullArray::new(3)) as ArrayRef),
            (
                "b",
                Arc::new(LargeStringArray::from(vec![Some("1"), None, Some("x")])),
            ),
            ("c", Arc::new(dict)),
            (
                "d",
                Arc::new(Int32Array::from(vec![None, Some(i32::MAX), Some(i32::MIN)])),
            ),
            (
                "e",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(i64::MAX), None, Some(i64::MIN)])
                        .with_timezone("UTC"),
                ),
            ),
            (
                "f",
                Arc::new(arrow::array::Float64Array::from(vec![
                    f64::NAN,
                    f64::INFINITY,
                    -0.0,
                ])),
            ),
            (
                "g",
                Arc::new(arrow::array::BinaryArray::from(vec![
                    &b"x"[..],
                    b"",
                    b"\xff",
                ])),
            ),
        ])
        .unwrap();
        let batches = [odd.clone(), odd.slice(1, 2), odd.slice(0, 0), orders()];
        let columns = [
            "a", "b", "c", "d", "e", "f", "g", "customer", "tags", "id", "status",
        ];
        let mut ops = Vec::new();
        for c in columns {
            for ty in [
                "boolean",
                "int64",
                "float64",
                "string",
                "timestamp",
                "date",
                "json",
            ] {
                ops.push(format!("      - cast: {{ {c}: {ty} }}"));
            }
            for e in [
                format!("{c} == 1"),
                format!("{c} > 'x'"),
                format!("{c} is null"),
                format!("not {c}"),
                format!("{c} and true"),
                format!("{c} < now()"),
                format!("{c}.x == 1"),
                format!("{c} == {c}"),
            ] {
                ops.push(format!("      - filter: \"{e}\""));
            }
            for e in [
                format!("lower({c})"),
                format!("length({c})"),
                format!("concat({c}, 1, null)"),
                format!("coalesce({c}, null, {c})"),
                format!("coalesce({c}, 'x')"),
                format!("coalesce({c}, 1)"),
            ] {
                ops.push(format!("      - add: {{ column: z, expr: \"{e}\" }}"));
            }
            ops.push(format!("      - flatten: {{ column: {c} }}"));
            ops.push(format!("      - select: [{c}]"));
        }
        for op in &ops {
            let mut t = compile(op);
            for batch in &batches {
                if let Err(e) = t.apply(batch.clone()) {
                    assert_ne!(e.class, ErrorClass::Internal, "{op}: {}", e.message);
                }
            }
        }
    }
}
