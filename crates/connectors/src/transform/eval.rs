//! Expressions (`filter` predicates, `add` columns) evaluated over a whole batch at once.
//!
//! Every sub-expression becomes a [`Value`]: an array with one value per record, or a
//! scalar (an array of length one) for constants, so that `amount > 10` compares a column
//! with one number through arrow's `Datum` kernels without repeating the `10`.
//!
//! Typing, decided per batch from the arrays' types:
//!
//! - comparisons and `coalesce` bring their operands to one type: whole numbers with whole
//!   numbers as `Int64` (exact), other numbers as `Float64`, text with text, true/false
//!   with true/false, timestamps and dates with each other (and with text, read as a
//!   timestamp or date). Text against a number is an error that says which cast to add.
//! - `null` (a `null` literal, or a column that is null in every record so that its type
//!   is `Null`) compares as null: `x == null` is never true; write `x is null`.
//! - `and`, `or` and `not` follow SQL's three-valued logic (arrow's Kleene kernels).
//! - a type that does not fit (text in `and`, a number in `lower`) is `contract_changed`:
//!   the batch is not shaped as the pipeline expects. A value that must be read as another
//!   type and cannot (`created > '2024-01-01'` where `created` holds `soon`) is
//!   `invalid_request`.
//! - a column path descends into struct columns (`customer.address.city`); a field under a
//!   null record is null. A top-level column named with the whole dotted path (as
//!   `flatten` with `separator: "."` makes) is taken first.
//!
//! Functions:
//!
//! | function | result |
//! |---|---|
//! | `lower(text)`, `upper(text)` | Unicode case mapping |
//! | `trim(text)` | without Unicode whitespace at both ends |
//! | `length(text)` | the number of characters (not bytes), an `Int64` |
//! | `concat(a, ...)` | the arguments as text (numbers, true/false and timestamps are written out), end to end; a null argument counts as empty text, and the result is null only when every argument is null (PostgreSQL's `concat` skips nulls too, where SQL's `\|\|` would give null) |
//! | `coalesce(a, ...)` | per record, the first argument that is not null, as the arguments' common type |
//! | `now()` | the run's start, a UTC timestamp: the same in every batch of a run |

use super::Fail;
use super::cast::{self, CastError};
use crate::spec::ColumnType;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Datum, Float64Array, Int64Array, NullArray,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray, UInt32Array,
    new_null_array,
};
use arrow::compute::kernels::boolean::{and, and_kleene, is_not_null, is_null, not, or_kleene};
use arrow::compute::kernels::cmp;
use arrow::compute::kernels::concat_elements::concat_elements_utf8_many;
use arrow::compute::kernels::nullif::nullif;
use arrow::compute::kernels::take::take;
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::{DataType, Schema};
use sluice_config::expr::{CmpOp, Expr, Func, Literal};
use std::sync::Arc;

/// The result of a sub-expression.
#[derive(Debug, Clone)]
pub(super) enum Value {
    /// One value per record.
    Array(ArrayRef),
    /// One value for every record: an array of length one.
    Scalar(ArrayRef),
}

impl Value {
    fn array(&self) -> &ArrayRef {
        match self {
            Value::Array(a) | Value::Scalar(a) => a,
        }
    }

    pub(super) fn data_type(&self) -> &DataType {
        self.array().data_type()
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Value::Scalar(_))
    }

    /// The same shape (array or scalar) with another content.
    fn map(&self, f: impl FnOnce(&ArrayRef) -> Result<ArrayRef, Fail>) -> Result<Value, Fail> {
        Ok(match self {
            Value::Array(a) => Value::Array(f(a)?),
            Value::Scalar(a) => Value::Scalar(f(a)?),
        })
    }

    fn datum(&self) -> Operand<'_> {
        Operand(self.array().as_ref(), self.is_scalar())
    }

    /// One value per record: a scalar is repeated `rows` times.
    pub(super) fn into_array(self, rows: usize) -> Result<ArrayRef, Fail> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(a) => repeat(&a, rows),
        }
    }
}

/// An array and whether it stands for a scalar, as arrow's kernels take them.
#[derive(Debug)]
struct Operand<'a>(&'a dyn Array, bool);

impl Datum for Operand<'_> {
    fn get(&self) -> (&dyn Array, bool) {
        (self.0, self.1)
    }
}

/// Repeats the single value of `one` (an array of length one) `rows` times.
pub(super) fn repeat(one: &ArrayRef, rows: usize) -> Result<ArrayRef, Fail> {
    if one.data_type() == &DataType::Null {
        return Ok(new_null_array(&DataType::Null, rows));
    }
    let zero = u32::try_from(rows)
        .map(|n| UInt32Array::from(vec![0u32; n as usize]))
        .map_err(|_| Fail::internal(format!("a batch of {rows} records is too large")))?;
    Ok(take(one.as_ref(), &zero, None)?)
}

/// What kind of value a type holds, for coercion and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    Bool,
    /// Integers that fit `Int64`.
    Int,
    /// Floats, decimals, `UInt64`.
    Float,
    Text,
    Timestamp,
    Date,
    /// Structs, lists, maps.
    Nested,
    Other,
}

pub(super) fn kind(dt: &DataType) -> Kind {
    use DataType as D;
    match dt {
        D::Null => Kind::Null,
        D::Boolean => Kind::Bool,
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 => Kind::Int,
        D::UInt64
        | D::Float16
        | D::Float32
        | D::Float64
        | D::Decimal32(..)
        | D::Decimal64(..)
        | D::Decimal128(..)
        | D::Decimal256(..) => Kind::Float,
        D::Utf8 | D::LargeUtf8 | D::Utf8View => Kind::Text,
        D::Timestamp(..) => Kind::Timestamp,
        D::Date32 | D::Date64 => Kind::Date,
        D::Dictionary(_, values) => kind(values),
        D::Struct(_)
        | D::List(_)
        | D::LargeList(_)
        | D::ListView(_)
        | D::LargeListView(_)
        | D::FixedSizeList(..)
        | D::Map(..) => Kind::Nested,
        _ => Kind::Other,
    }
}

/// `text`, `a number`, ... for messages.
pub(super) fn kind_name(dt: &DataType) -> String {
    match kind(dt) {
        Kind::Null => "null in every record".to_owned(),
        Kind::Bool => "true/false".to_owned(),
        Kind::Int | Kind::Float => "a number".to_owned(),
        Kind::Text => "text".to_owned(),
        Kind::Timestamp => "a timestamp".to_owned(),
        Kind::Date => "a date".to_owned(),
        Kind::Nested if matches!(dt, DataType::Struct(_)) => "a nested record".to_owned(),
        Kind::Nested => "a list".to_owned(),
        Kind::Other => format!("of type {dt}"),
    }
}

/// The timestamp type of sluice: UTC microseconds.
pub(super) fn timestamp_type() -> DataType {
    DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()))
}

/// A column or sub-expression as written, for messages: `` `customer.vip` ``,
/// `` `lower(name)` ``.
pub(super) fn show(e: &Expr) -> String {
    format!("`{}`", render(e))
}

fn render(e: &Expr) -> String {
    let child = |c: &Expr| match c {
        Expr::And(..) | Expr::Or(..) => format!("({})", render(c)),
        _ => render(c),
    };
    match e {
        Expr::Literal(Literal::Null) => "null".to_owned(),
        Expr::Literal(Literal::Bool(b)) => b.to_string(),
        Expr::Literal(Literal::Number(n)) => n.to_string(),
        Expr::Literal(Literal::String(s)) => format!("'{}'", s.replace('\'', "\\'")),
        Expr::Column(path) => path.join("."),
        Expr::Not(x) => format!("not {}", child(x)),
        Expr::And(a, b) => format!("{} and {}", child(a), child(b)),
        Expr::Or(a, b) => format!("{} or {}", child(a), child(b)),
        Expr::Compare(op, a, b) => {
            let op = match op {
                CmpOp::Eq => "==",
                CmpOp::Ne => "!=",
                CmpOp::Lt => "<",
                CmpOp::Le => "<=",
                CmpOp::Gt => ">",
                CmpOp::Ge => ">=",
            };
            format!("{} {op} {}", child(a), child(b))
        }
        Expr::IsNull { expr, negated } => {
            format!(
                "{} is {}null",
                child(expr),
                if *negated { "not " } else { "" }
            )
        }
        Expr::Call(f, args) => {
            let args: Vec<String> = args.iter().map(render).collect();
            format!("{}({})", func_name(*f), args.join(", "))
        }
    }
}

fn func_name(f: Func) -> &'static str {
    match f {
        Func::Lower => "lower",
        Func::Upper => "upper",
        Func::Trim => "trim",
        Func::Length => "length",
        Func::Concat => "concat",
        Func::Coalesce => "coalesce",
        Func::Now => "now",
    }
}

/// How to make `e` of type `ty`: a `cast` op when it is a plain column.
fn cast_hint(e: &Expr, ty: &str) -> String {
    match e {
        Expr::Column(path) if path.len() == 1 => {
            format!("add `cast: {{ {}: {ty} }}` before this op", path[0])
        }
        _ => format!("convert it to {ty} first"),
    }
}

/// "column `x` is not in the batch (columns: a, b, c); did the upstream API rename it?"
pub(super) fn missing_column(name: &str, schema: &Schema) -> Fail {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut message = format!(
        "column `{name}` is not in the batch (columns: {}); did the upstream API rename it?",
        list(&names)
    );
    if let Some(near) = sluice_config::diag::suggest(name, names.iter().copied()) {
        message.push_str(&format!(" `{near}` is close"));
    }
    Fail::contract(message)
}

/// Names for a message, at most 30 of them.
pub(super) fn list(names: &[&str]) -> String {
    const MAX: usize = 30;
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut out = names
        .iter()
        .take(MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX {
        out.push_str(&format!(", and {} more", names.len() - MAX));
    }
    out
}

/// `child` with nulls where its parent struct is null (arrow lets a struct's children hold
/// values under a null parent).
pub(super) fn with_parent_nulls(parent: &dyn Array, child: &ArrayRef) -> Result<ArrayRef, Fail> {
    match parent.logical_nulls() {
        Some(nulls) if nulls.null_count() > 0 => Ok(nullif(child.as_ref(), &is_null(parent)?)?),
        _ => Ok(child.clone()),
    }
}

/// `a` (the value of `e`) as type `to`: every value must convert (a timestamp too far in
/// the future to write as text does not).
fn widen(a: &ArrayRef, to: &DataType, e: &Expr) -> Result<ArrayRef, Fail> {
    cast::strict(a, to).map_err(|err| value_fail(e, err, &cast::friendly(to)))
}

/// The error of a value of `e` that does not convert to `what`.
fn value_fail(e: &Expr, err: CastError, what: &str) -> Fail {
    match err {
        CastError::Values { count, row, value } => Fail::invalid(format!(
            "{} holds `{value}` (record {}), which is not a {what}{}; fix the data upstream \
             or filter such records out first",
            show(e),
            row + 1,
            more(count)
        )),
        CastError::Type(m) => Fail::contract(format!("{}: {m}", show(e))),
        CastError::Arrow(err) => err.into(),
    }
}

/// Evaluates expressions over one batch.
pub(super) struct Eval<'a> {
    pub(super) batch: &'a RecordBatch,
    /// `now()`: the run's start, in UTC microseconds.
    pub(super) now_micros: i64,
}

impl Eval<'_> {
    fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Evaluates `e`.
    pub(super) fn eval(&self, e: &Expr) -> Result<Value, Fail> {
        match e {
            Expr::Literal(l) => Ok(Value::Scalar(literal(l))),
            Expr::Column(path) => Ok(Value::Array(self.column(path)?)),
            Expr::Not(x) => {
                let v = self.boolean(self.eval(x)?, x, "`not`")?;
                v.map(|a| Ok(Arc::new(not(a.as_boolean())?)))
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                let word = if matches!(e, Expr::And(..)) {
                    "`and`"
                } else {
                    "`or`"
                };
                let left = self.boolean(self.eval(a)?, a, word)?;
                let right = self.boolean(self.eval(b)?, b, word)?;
                let scalar = left.is_scalar() && right.is_scalar();
                let rows = if scalar { 1 } else { self.rows() };
                let (l, r) = (left.into_array(rows)?, right.into_array(rows)?);
                let out = if matches!(e, Expr::And(..)) {
                    and_kleene(l.as_boolean(), r.as_boolean())?
                } else {
                    or_kleene(l.as_boolean(), r.as_boolean())?
                };
                Ok(shaped(Arc::new(out), scalar))
            }
            Expr::Compare(op, a, b) => self.compare(*op, a, b),
            Expr::IsNull { expr, negated } => {
                let v = self.eval(expr)?;
                v.map(|a| {
                    Ok(Arc::new(if *negated {
                        is_not_null(a.as_ref())?
                    } else {
                        is_null(a.as_ref())?
                    }))
                })
            }
            Expr::Call(f, args) => self.call(*f, args),
        }
    }

    /// The array of a column path, descending into struct columns. A top-level column
    /// whose name is the whole dotted path (`customer.vip` after a flatten with `.`) wins.
    fn column(&self, path: &[String]) -> Result<ArrayRef, Fail> {
        if path.len() > 1
            && let Some(c) = self.batch.column_by_name(&path.join("."))
        {
            return Ok(c.clone());
        }
        let Some(first) = path.first() else {
            return Err(Fail::internal("an empty column path"));
        };
        let mut current = self
            .batch
            .column_by_name(first)
            .cloned()
            .ok_or_else(|| missing_column(first, self.batch.schema_ref()))?;
        for (depth, name) in path.iter().enumerate().skip(1) {
            let parent = path[..depth].join(".");
            let whole = path.join(".");
            if current.data_type() == &DataType::Null {
                // Null in every record of this batch: so are its fields.
                return Ok(new_null_array(&DataType::Null, self.rows()));
            }
            let Some(record) = current.as_struct_opt() else {
                return Err(Fail::contract(format!(
                    "`{whole}`: `{parent}` is {}, not a record, so it has no field `{name}`; \
                     did the upstream API change its shape?",
                    kind_name(current.data_type())
                )));
            };
            let Some(child) = record.column_by_name(name) else {
                let fields: Vec<&str> = record.fields().iter().map(|f| f.name().as_str()).collect();
                let mut message = format!(
                    "column `{whole}` is not in the batch: `{parent}` has no field `{name}` \
                     (fields: {}); did the upstream API rename it?",
                    list(&fields)
                );
                if let Some(near) = sluice_config::diag::suggest(name, fields.iter().copied()) {
                    message.push_str(&format!(" `{parent}.{near}` is close"));
                }
                return Err(Fail::contract(message));
            };
            current = with_parent_nulls(record, child)?;
        }
        Ok(current)
    }

    /// `v` as true/false, or the error saying that `what` needs true/false.
    fn boolean(&self, v: Value, e: &Expr, what: &str) -> Result<Value, Fail> {
        match kind(v.data_type()) {
            Kind::Bool | Kind::Null => v.map(|a| widen(a, &DataType::Boolean, e)),
            _ => Err(Fail::contract(format!(
                "{what} takes true/false, but {} is {}; compare it with something, \
                 e.g. `{} == ...`",
                show(e),
                kind_name(v.data_type()),
                render(e)
            ))),
        }
    }

    fn compare(&self, op: CmpOp, a: &Expr, b: &Expr) -> Result<Value, Fail> {
        let (left, right) = (self.eval(a)?, self.eval(b)?);
        let scalar = left.is_scalar() && right.is_scalar();
        for (v, e) in [(&left, a), (&right, b)] {
            if matches!(kind(v.data_type()), Kind::Nested | Kind::Other) {
                return Err(Fail::contract(format!(
                    "cannot compare {} {}: {}",
                    show(e),
                    kind_name(v.data_type()),
                    "compare its fields (`record.field`) instead, or cast it to json"
                )));
            }
        }
        let target = match unify(&[(&left, a), (&right, b)]) {
            Ok(Some(t)) => t,
            // One side is null: so is the comparison.
            Ok(None) => return Ok(Value::Scalar(Arc::new(BooleanArray::from(vec![None])))),
            Err((_, _)) => {
                let (lk, rk) = (kind(left.data_type()), kind(right.data_type()));
                let numeric = |k: Kind| matches!(k, Kind::Int | Kind::Float);
                let hint = match (lk, rk) {
                    (Kind::Text, k) if numeric(k) => text_number_hint(a, b),
                    (k, Kind::Text) if numeric(k) => text_number_hint(b, a),
                    _ => "compare values of one kind: numbers with numbers, text with text, \
                          true/false with true/false, timestamps with timestamps"
                        .to_owned(),
                };
                return Err(Fail::contract(format!(
                    "cannot compare {} ({}) with {} ({}): {hint}",
                    show(a),
                    kind_name(left.data_type()),
                    show(b),
                    kind_name(right.data_type())
                )));
            }
        };
        let left = self.convert(left, &target, a)?;
        let right = self.convert(right, &target, b)?;
        let (l, r) = (left.datum(), right.datum());
        let out = match op {
            CmpOp::Eq => cmp::eq(&l, &r)?,
            CmpOp::Ne => cmp::neq(&l, &r)?,
            CmpOp::Lt => cmp::lt(&l, &r)?,
            CmpOp::Le => cmp::lt_eq(&l, &r)?,
            CmpOp::Gt => cmp::gt(&l, &r)?,
            CmpOp::Ge => cmp::gt_eq(&l, &r)?,
        };
        Ok(shaped(Arc::new(out), scalar))
    }

    /// `v` as type `to` (chosen by [`unify`]); text read as a timestamp or date must be one.
    fn convert(&self, v: Value, to: &DataType, e: &Expr) -> Result<Value, Fail> {
        if v.data_type() == to {
            return Ok(v);
        }
        let column_type = match (kind(v.data_type()), to) {
            (Kind::Text, DataType::Timestamp(..)) => ColumnType::Timestamp,
            (Kind::Text, DataType::Date32) => ColumnType::Date,
            _ => return v.map(|a| widen(a, to, e)),
        };
        v.map(|a| {
            cast::convert(a, None, column_type)
                .map_err(|err| value_fail(e, err, cast::type_name(column_type)))
        })
    }

    fn call(&self, f: Func, args: &[Expr]) -> Result<Value, Fail> {
        let name = func_name(f);
        match f {
            Func::Now => {
                let now =
                    TimestampMicrosecondArray::from(vec![self.now_micros]).with_timezone("UTC");
                Ok(Value::Scalar(Arc::new(now)))
            }
            Func::Lower | Func::Upper | Func::Trim | Func::Length => {
                let [arg] = args else {
                    return Err(Fail::internal(format!(
                        "`{name}` takes 1 argument, found {}",
                        args.len()
                    )));
                };
                let v = self.eval(arg)?;
                let text = match kind(v.data_type()) {
                    Kind::Text | Kind::Null => v.map(|a| widen(a, &DataType::Utf8, arg))?,
                    _ => {
                        return Err(Fail::contract(format!(
                            "`{name}` takes text, but {} is {}; {}",
                            show(arg),
                            kind_name(v.data_type()),
                            cast_hint(arg, "string")
                        )));
                    }
                };
                text.map(|a| {
                    let s = a.as_string::<i32>();
                    Ok(match f {
                        Func::Lower => map_text(s, |t, b| b.append_value(t.to_lowercase())),
                        Func::Upper => map_text(s, |t, b| b.append_value(t.to_uppercase())),
                        Func::Trim => map_text(s, |t, b| b.append_value(t.trim())),
                        _ => Arc::new(Int64Array::from_iter(s.iter().map(|t| {
                            t.map(|t| i64::try_from(t.chars().count()).unwrap_or(i64::MAX))
                        }))),
                    })
                })
            }
            Func::Concat => self.concat(args),
            Func::Coalesce => self.coalesce(args),
        }
    }

    /// `concat(a, b, ...)`: the arguments as text, end to end. A null argument counts as
    /// empty text; the result is null only when every argument is null.
    fn concat(&self, args: &[Expr]) -> Result<Value, Fail> {
        let values = args
            .iter()
            .map(|a| self.eval(a))
            .collect::<Result<Vec<_>, _>>()?;
        let scalar = values.iter().all(Value::is_scalar);
        let rows = if scalar { 1 } else { self.rows() };
        let empty = StringArray::from(vec![""]);
        let mut parts = Vec::with_capacity(values.len());
        let mut all_null: Option<BooleanArray> = None;
        for (v, e) in values.into_iter().zip(args) {
            if matches!(kind(v.data_type()), Kind::Nested | Kind::Other) {
                return Err(Fail::contract(format!(
                    "`concat` takes text, numbers, true/false and timestamps, but {} is {}; {}",
                    show(e),
                    kind_name(v.data_type()),
                    cast_hint(e, "json")
                )));
            }
            let text = widen(&v.into_array(rows)?, &DataType::Utf8, e)?;
            let nulls = is_null(text.as_ref())?;
            all_null = Some(match all_null {
                None => nulls,
                Some(before) => and(&before, &nulls)?,
            });
            let filled = zip(
                &is_not_null(text.as_ref())?,
                &Operand(text.as_ref(), false),
                &Operand(&empty, true),
            )?;
            parts.push(filled);
        }
        let strings: Vec<&StringArray> = parts.iter().map(|p| p.as_string::<i32>()).collect();
        let joined = concat_elements_utf8_many(&strings)?;
        let out = match all_null {
            Some(mask) if mask.true_count() > 0 => nullif(&joined, &mask)?,
            _ => Arc::new(joined),
        };
        Ok(shaped(out, scalar))
    }

    /// `coalesce(a, b, ...)`: per record, the first argument that is not null.
    fn coalesce(&self, args: &[Expr]) -> Result<Value, Fail> {
        let values = args
            .iter()
            .map(|a| self.eval(a))
            .collect::<Result<Vec<_>, _>>()?;
        let pairs: Vec<(&Value, &Expr)> = values.iter().zip(args).collect();
        let target = match unify(&pairs) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(Value::Scalar(Arc::new(NullArray::new(1)))),
            Err((i, j)) => {
                return Err(Fail::contract(format!(
                    "`coalesce` takes arguments of one kind, but {} is {} and {} is {}; \
                     `cast` the column first, or write the fallback as the same kind",
                    show(&args[i]),
                    kind_name(values[i].data_type()),
                    show(&args[j]),
                    kind_name(values[j].data_type()),
                )));
            }
        };
        let scalar = values.iter().all(Value::is_scalar);
        let rows = if scalar { 1 } else { self.rows() };
        let mut converted = Vec::with_capacity(values.len());
        for (v, e) in values.into_iter().zip(args) {
            converted.push(self.convert(v, &target, e)?);
        }
        let mut iter = converted.into_iter();
        let Some(first) = iter.next() else {
            return Err(Fail::internal("`coalesce` without arguments"));
        };
        let mut acc = first.into_array(rows)?;
        for next in iter {
            if acc.null_count() == 0 {
                break;
            }
            let mask = is_not_null(acc.as_ref())?;
            acc = zip(&mask, &Operand(acc.as_ref(), false), &next.datum())?;
        }
        Ok(shaped(acc, scalar))
    }
}

/// The hint when `text` is compared with the number `number`.
fn text_number_hint(text: &Expr, number: &Expr) -> String {
    let quote = match number {
        Expr::Literal(Literal::Number(n)) => format!(" or quote the number ('{n}')"),
        _ => String::new(),
    };
    format!("{}{quote}", cast_hint(text, "float64"))
}

/// ", and 3 more values like it" when there are more.
pub(super) fn more(count: usize) -> String {
    match count {
        0 | 1 => String::new(),
        2 => " (and 1 more value in this batch)".to_owned(),
        n => format!(" (and {} more values in this batch)", n - 1),
    }
}

fn shaped(a: ArrayRef, scalar: bool) -> Value {
    if scalar {
        Value::Scalar(a)
    } else {
        Value::Array(a)
    }
}

fn map_text(s: &StringArray, mut f: impl FnMut(&str, &mut StringBuilder)) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(s.len(), s.value_data().len());
    for t in s.iter() {
        match t {
            Some(t) => f(t, &mut b),
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

/// Literals as arrays of one value: whole numbers (up to 2^53) as `Int64`, other numbers
/// as `Float64`.
fn literal(l: &Literal) -> ArrayRef {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match l {
        Literal::Null => Arc::new(NullArray::new(1)),
        Literal::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
        Literal::Number(n) if n.fract() == 0.0 && n.abs() <= EXACT => {
            Arc::new(Int64Array::from(vec![*n as i64]))
        }
        Literal::Number(n) => Arc::new(Float64Array::from(vec![*n])),
        Literal::String(s) => Arc::new(StringArray::from(vec![s.as_str()])),
    }
}

/// The one type that values of these kinds are compared or coalesced as: `Ok(None)` when
/// every value is null, `Err((i, j))` naming two that do not go together.
fn unify(values: &[(&Value, &Expr)]) -> Result<Option<DataType>, (usize, usize)> {
    let mut target: Option<(usize, Kind, &DataType)> = None;
    for (i, (v, _)) in values.iter().enumerate() {
        let (k, dt) = (kind(v.data_type()), v.data_type());
        if k == Kind::Null {
            continue;
        }
        target = Some(match target {
            None => (i, k, dt),
            Some((j, tk, tdt)) => {
                let joined = match (tk, k) {
                    (a, b) if a == b => a,
                    (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
                    (Kind::Timestamp, Kind::Date) | (Kind::Date, Kind::Timestamp) => {
                        Kind::Timestamp
                    }
                    (t @ (Kind::Timestamp | Kind::Date), Kind::Text) => t,
                    (Kind::Text, t @ (Kind::Timestamp | Kind::Date)) => t,
                    _ => return Err((j, i)),
                };
                if matches!(joined, Kind::Nested | Kind::Other) && tdt != dt {
                    return Err((j, i));
                }
                // Keep the index of a value of the joined kind, for the type of nested ones.
                if joined == k {
                    (i, k, dt)
                } else {
                    (j, joined, tdt)
                }
            }
        });
    }
    Ok(target.map(|(_, k, dt)| match k {
        Kind::Bool => DataType::Boolean,
        Kind::Int => DataType::Int64,
        Kind::Float => DataType::Float64,
        Kind::Text => DataType::Utf8,
        Kind::Timestamp => timestamp_type(),
        Kind::Date => DataType::Date32,
        Kind::Null | Kind::Nested | Kind::Other => dt.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::tests::{s, says, starts};
    use arrow::array::{Int32Array, StructArray};
    use arrow::buffer::NullBuffer;
    use arrow::datatypes::{Field, Fields};
    use sluice_config::expr::Expression;
    use sluice_core::ErrorClass;

    const NOW: i64 = 1_700_000_000_000_000;

    fn batch() -> RecordBatch {
        let customer_fields = Fields::from(vec![
            Field::new("vip", DataType::Boolean, true),
            Field::new("name", DataType::Utf8, true),
        ]);
        let customer = StructArray::new(
            customer_fields,
            vec![
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    Some(true),
                    None,
                ])),
                Arc::new(StringArray::from(vec![
                    Some("Ann"),
                    Some("Bob"),
                    Some("ghost"),
                    None,
                ])),
            ],
            // The third customer is null although its children hold values.
            Some(NullBuffer::from(vec![true, true, false, true])),
        );
        RecordBatch::try_from_iter(vec![
            (
                "status",
                Arc::new(StringArray::from(vec![
                    Some("open"),
                    Some("test"),
                    None,
                    Some("open"),
                ])) as ArrayRef,
            ),
            (
                "amount",
                Arc::new(Float64Array::from(vec![
                    Some(150.0),
                    Some(5.5),
                    Some(20.0),
                    None,
                ])),
            ),
            (
                "qty",
                Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(4)])),
            ),
            ("customer", Arc::new(customer)),
            (
                "name",
                Arc::new(StringArray::from(vec![
                    Some("  Ann Lee "),
                    Some("ÉMILE"),
                    None,
                    Some("zoë"),
                ])),
            ),
            (
                "created",
                Arc::new(StringArray::from(vec![
                    Some("2024-01-01T00:00:00Z"),
                    Some("2023-06-01T12:00:00+02:00"),
                    Some("1700000000"),
                    None,
                ])),
            ),
            ("nothing", Arc::new(NullArray::new(4))),
        ])
        .unwrap()
    }

    fn eval(text: &str) -> Result<ArrayRef, Fail> {
        let b = batch();
        let e: Expression = text.parse().unwrap();
        let ev = Eval {
            batch: &b,
            now_micros: NOW,
        };
        ev.eval(e.expr())?.into_array(b.num_rows())
    }

    fn bools(text: &str) -> Vec<Option<bool>> {
        let a = eval(text).unwrap_or_else(|e| panic!("{text}: {}", e.message));
        a.as_boolean().iter().collect()
    }

    fn strings(text: &str) -> Vec<Option<String>> {
        let a = eval(text).unwrap_or_else(|e| panic!("{text}: {}", e.message));
        a.as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_owned))
            .collect()
    }

    fn err(text: &str) -> Fail {
        match eval(text) {
            Ok(a) => panic!("{text}: expected an error, got {a:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn comparisons_coerce_numbers_and_compare_text() {
        assert_eq!(
            bools("amount > 10"),
            vec![Some(true), Some(false), Some(true), None]
        );
        // Int32 column with an integer literal (exact), and with a float literal.
        assert_eq!(
            bools("qty >= 2"),
            vec![Some(false), Some(true), None, Some(true)]
        );
        assert_eq!(
            bools("qty < 1.5"),
            vec![Some(true), Some(false), None, Some(false)]
        );
        // A float column with an int column.
        assert_eq!(
            bools("amount != qty"),
            vec![Some(true), Some(true), None, None]
        );
        assert_eq!(
            bools("status == 'open'"),
            vec![Some(true), Some(false), None, Some(true)]
        );
        assert_eq!(
            bools("'open' <= status"),
            vec![Some(true), Some(true), None, Some(true)]
        );
        assert_eq!(bools("1 < 2"), vec![Some(true); 4]);
    }

    #[test]
    fn comparing_text_with_a_number_says_which_cast_to_add() {
        let e = err("status > 5");
        assert_eq!(e.class, ErrorClass::ContractChanged);
        says(
            &e.message,
            "cannot compare `status` (text) with `5` (a number)",
        );
        says(&e.message, "`cast: { status: float64 }`");
        says(&e.message, "('5')");
        let e = err("amount == customer.name");
        says(&e.message, "(a number) with `customer.name` (text)");
        let e = err("customer == 1");
        says(&e.message, "`customer` a nested record");
        let e = err("customer.vip == 'yes'");
        says(&e.message, "true/false");
    }

    #[test]
    fn null_compares_as_null_and_is_null_tests_it() {
        assert_eq!(bools("status == null"), vec![None; 4]);
        assert_eq!(bools("nothing == 1"), vec![None; 4]);
        assert_eq!(
            bools("status is null"),
            vec![Some(false), Some(false), Some(true), Some(false)]
        );
        assert_eq!(
            bools("amount is not null"),
            vec![Some(true), Some(true), Some(true), Some(false)]
        );
        assert_eq!(bools("nothing is null"), vec![Some(true); 4]);
        assert_eq!(bools("null is null"), vec![Some(true); 4]);
    }

    #[test]
    fn three_valued_logic() {
        // status: open, test, null, open; amount > 10: true, false, true, null
        assert_eq!(
            bools("status == 'open' and amount > 10"),
            vec![Some(true), Some(false), None, None]
        );
        assert_eq!(
            bools("status == 'open' or amount > 10"),
            vec![Some(true), Some(false), Some(true), Some(true)]
        );
        // null and false is false; null or true is true.
        assert_eq!(bools("nothing and false"), vec![Some(false); 4]);
        assert_eq!(bools("nothing or true"), vec![Some(true); 4]);
        assert_eq!(
            bools("not status == 'open'"),
            vec![Some(false), Some(true), None, Some(false)]
        );
        assert_eq!(bools("not true or false"), vec![Some(false); 4]);
        let e = err("amount and true");
        assert_eq!(e.class, ErrorClass::ContractChanged);
        starts(
            &e.message,
            "`and` takes true/false, but `amount` is a number",
        );
        assert!(
            err("not name")
                .message
                .starts_with("`not` takes true/false")
        );
    }

    #[test]
    fn nested_paths_respect_null_parents() {
        // The third customer is null: its `vip` is null although the child holds `true`.
        assert_eq!(
            bools("customer.vip"),
            vec![Some(true), Some(false), None, None]
        );
        assert_eq!(
            strings("customer.name"),
            vec![s("Ann"), s("Bob"), None, None]
        );
        assert_eq!(bools("nothing.deep.field is null"), vec![Some(true); 4]);
        let e = err("customer.tier == 'gold'");
        assert_eq!(e.class, ErrorClass::ContractChanged);
        starts(
            &e.message,
            "column `customer.tier` is not in the batch: `customer` has no field `tier` (fields: vip, name)",
        );
        let e = err("status.code == 1");
        says(&e.message, "`status` is text, not a record");
    }

    #[test]
    fn a_dotted_top_level_name_wins_over_the_path() {
        let b = RecordBatch::try_from_iter(vec![(
            "customer.vip",
            Arc::new(BooleanArray::from(vec![true, false])) as ArrayRef,
        )])
        .unwrap();
        let e: Expression = "customer.vip".parse().unwrap();
        let out = Eval {
            batch: &b,
            now_micros: 0,
        }
        .eval(e.expr())
        .unwrap()
        .into_array(2)
        .unwrap();
        assert_eq!(out.as_boolean(), &BooleanArray::from(vec![true, false]));
    }

    #[test]
    fn a_missing_column_lists_the_columns_and_suggests() {
        let e = err("amout > 1");
        assert_eq!(e.class, ErrorClass::ContractChanged);
        assert_eq!(
            e.message,
            "column `amout` is not in the batch (columns: status, amount, qty, customer, name, \
             created, nothing); did the upstream API rename it? `amount` is close"
        );
    }

    #[test]
    fn text_functions() {
        assert_eq!(
            strings("lower(name)"),
            vec![s("  ann lee "), s("émile"), None, s("zoë")]
        );
        assert_eq!(
            strings("upper(name)"),
            vec![s("  ANN LEE "), s("ÉMILE"), None, s("ZOË")]
        );
        assert_eq!(
            strings("trim(name)"),
            vec![s("Ann Lee"), s("ÉMILE"), None, s("zoë")]
        );
        let len = eval("length(name)").unwrap();
        // Characters, not bytes: `ÉMILE` is 5, `zoë` is 3.
        assert_eq!(
            len.as_primitive::<arrow::datatypes::Int64Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(10), Some(5), None, Some(3)]
        );
        assert_eq!(strings("upper('abc')"), vec![s("ABC"); 4]);
        assert_eq!(strings("lower(nothing)"), vec![None; 4]);
        let e = err("lower(amount)");
        assert_eq!(e.class, ErrorClass::ContractChanged);
        assert_eq!(
            e.message,
            "`lower` takes text, but `amount` is a number; add `cast: { amount: string }` before this op"
        );
    }

    #[test]
    fn concat_skips_nulls_and_is_null_only_when_all_are() {
        assert_eq!(
            strings("concat(status, '-', qty)"),
            vec![s("open-1"), s("test-2"), s("-"), s("open-4")]
        );
        assert_eq!(
            strings("concat(status, customer.name)"),
            vec![s("openAnn"), s("testBob"), None, s("open")]
        );
        assert_eq!(strings("concat('a', 1, true)"), vec![s("a1true"); 4]);
        assert_eq!(strings("concat(nothing)"), vec![None; 4]);
        let e = err("concat(customer)");
        says(&e.message, "add `cast: { customer: json }`");
    }

    #[test]
    fn coalesce_picks_the_first_value_and_unifies_types() {
        assert_eq!(
            strings("coalesce(status, customer.name, 'none')"),
            vec![s("open"), s("test"), s("none"), s("open")]
        );
        let a = eval("coalesce(qty, 0)").unwrap();
        assert_eq!(a.data_type(), &DataType::Int64);
        assert_eq!(
            a.as_primitive::<arrow::datatypes::Int64Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(1), Some(2), Some(0), Some(4)]
        );
        let a = eval("coalesce(amount, qty, 0.5)").unwrap();
        assert_eq!(
            a.as_primitive::<arrow::datatypes::Float64Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(150.0), Some(5.5), Some(20.0), Some(4.0)]
        );
        assert_eq!(
            eval("coalesce(nothing, null)")
                .unwrap()
                .logical_null_count(),
            4
        );
        let e = err("coalesce(status, 0)");
        assert_eq!(e.class, ErrorClass::ContractChanged);
        starts(
            &e.message,
            "`coalesce` takes arguments of one kind, but `status` is text and `0` is a number",
        );
    }

    #[test]
    fn now_is_the_run_start_and_compares_with_text_timestamps() {
        let a = eval("now()").unwrap();
        assert_eq!(a.data_type(), &timestamp_type());
        let ts = a.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.value(0), NOW);
        // 2023-11-14T22:13:20Z is NOW; created: 2024-01-01, 2023-06-01, NOW (Unix seconds).
        assert_eq!(
            bools("created < now()"),
            vec![Some(false), Some(true), Some(false), None]
        );
        assert_eq!(bools("now() > '2023-01-01'"), vec![Some(true); 4]);
        let e = err("now() > 'soon'");
        assert_eq!(e.class, ErrorClass::InvalidRequest);
        starts(
            &e.message,
            "`'soon'` holds `soon` (record 1), which is not a timestamp",
        );
        let e = err("now() > 5");
        says(&e.message, "(a timestamp) with `5` (a number)");
    }

    #[test]
    fn rendering_round_trips_the_shape() {
        let e: Expression = "not (a == 'x' or b.c is not null) and lower(d) != concat(e, 1.5)"
            .parse()
            .unwrap();
        assert_eq!(
            render(e.expr()),
            "not (a == 'x' or b.c is not null) and lower(d) != concat(e, 1.5)"
        );
    }
}
