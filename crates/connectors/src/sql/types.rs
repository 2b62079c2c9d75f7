//! Arrow ↔ SQL types: the columns of a batch brought to a few canonical kinds, the SQL
//! type each kind gets when a sink creates a table, and the conversions of values.
//!
//! | Arrow | kind | PostgreSQL | MySQL/MariaDB | SQLite |
//! |---|---|---|---|---|
//! | Boolean | Bool | boolean | BOOLEAN | BOOLEAN (0/1) |
//! | Int8, UInt8, Int16 | Int16 | smallint | SMALLINT | INTEGER |
//! | UInt16, Int32 | Int32 | integer | INT | INTEGER |
//! | UInt32, Int64 | Int64 | bigint | BIGINT | INTEGER |
//! | UInt64 | UInt64 | numeric(20,0) | BIGINT UNSIGNED | INTEGER |
//! | Float16, Float32 | Float32 | real | FLOAT | REAL |
//! | Float64 | Float64 | double precision | DOUBLE | REAL |
//! | Decimal32/64/128(p,s), Decimal256 p ≤ 38 | Decimal | numeric(p,s) | DECIMAL(p,s) | TEXT |
//! | Utf8, LargeUtf8, Utf8View, Null | Text | text | LONGTEXT (VARCHAR(255) in a key) | TEXT |
//! | Utf8 tagged `arrow.json`, Struct, List, Map | Json | jsonb | JSON | TEXT |
//! | Binary, LargeBinary, BinaryView, FixedSizeBinary | Binary | bytea | LONGBLOB (VARBINARY(255) in a key) | BLOB |
//! | Date32, Date64 | Date | date | DATE | DATE (`YYYY-MM-DD`) |
//! | Timestamp(unit, None) | Timestamp | timestamp | DATETIME(6) | DATETIME (ISO 8601) |
//! | Timestamp(unit, tz) | Timestamp tz | timestamptz | DATETIME(6), UTC | DATETIME (ISO 8601, `Z`) |
//! | Time32, Time64 | Time | time | TIME(6) | TIME |
//! | Dictionary | its values' kind | | | |
//! | Duration, Interval, anything else Arrow can cast to text | Text | | | |

use super::config::Dialect;
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Decimal128Array, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray, StringBuilder,
    UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, TimeUnit};
use sqlx::types::chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use std::sync::Arc;

/// How a column is encoded, whatever Arrow type it came as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Bool,
    Int16,
    Int32,
    Int64,
    UInt64,
    Float32,
    Float64,
    /// An exact decimal: `mantissa × 10^-scale`.
    Decimal {
        precision: u8,
        scale: i8,
    },
    Text,
    Json,
    Binary,
    /// Days since 1970-01-01 (an `Int32Array`).
    Date,
    /// Units since 1970-01-01T00:00:00 (an `Int64Array`); `tz`: the instant is UTC.
    Timestamp {
        unit: TimeUnit,
        tz: bool,
    },
    /// Microseconds since midnight (an `Int64Array`).
    Time,
}

/// A column of a batch, brought to its kind's canonical array type.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) array: ArrayRef,
}

impl Column {
    /// Rows `offset..offset + len` of this column (zero-copy).
    pub(crate) fn slice(&self, offset: usize, len: usize) -> Column {
        Column {
            name: self.name.clone(),
            kind: self.kind,
            array: self.array.slice(offset, len),
        }
    }
}

/// The Arrow extension name that marks a Utf8 field as JSON text.
const JSON_EXTENSION: &str = "arrow.json";

/// Brings every column of `records` to its kind. Fails (a `contract_changed` matter) only
/// for a type with no SQL counterpart.
pub(crate) fn normalize(records: &RecordBatch) -> Result<Vec<Column>, String> {
    let schema = records.schema();
    schema
        .fields()
        .iter()
        .zip(records.columns())
        .map(|(field, array)| {
            let is_json = field
                .metadata()
                .get("ARROW:extension:name")
                .is_some_and(|n| n == JSON_EXTENSION);
            let (kind, array) = canonical(field, array, is_json)
                .map_err(|e| format!("column `{}`: {e}", field.name()))?;
            Ok(Column {
                name: field.name().clone(),
                kind,
                array,
            })
        })
        .collect()
}

fn cast_to(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, String> {
    cast(array, to).map_err(|e| format!("cannot convert {} to {to}: {e}", array.data_type()))
}

fn canonical(
    field: &FieldRef,
    array: &ArrayRef,
    is_json: bool,
) -> Result<(Kind, ArrayRef), String> {
    use DataType as D;
    let dt = array.data_type().clone();
    Ok(match &dt {
        D::Boolean => (Kind::Bool, array.clone()),
        D::Int8 | D::UInt8 | D::Int16 => (Kind::Int16, cast_to(array, &D::Int16)?),
        D::UInt16 | D::Int32 => (Kind::Int32, cast_to(array, &D::Int32)?),
        D::UInt32 | D::Int64 => (Kind::Int64, cast_to(array, &D::Int64)?),
        D::UInt64 => (Kind::UInt64, array.clone()),
        D::Float16 | D::Float32 => (Kind::Float32, cast_to(array, &D::Float32)?),
        D::Float64 => (Kind::Float64, array.clone()),
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) => (
            Kind::Decimal {
                precision: *p,
                scale: *s,
            },
            cast_to(array, &D::Decimal128(*p, *s))?,
        ),
        D::Decimal256(p, s) if *p <= 38 => (
            Kind::Decimal {
                precision: *p,
                scale: *s,
            },
            cast_to(array, &D::Decimal128(*p, *s))?,
        ),
        D::Utf8 | D::LargeUtf8 | D::Utf8View => {
            let kind = if is_json { Kind::Json } else { Kind::Text };
            (kind, cast_to(array, &D::Utf8)?)
        }
        D::Null => (Kind::Text, cast_to(array, &D::Utf8)?),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => {
            (Kind::Binary, cast_to(array, &D::Binary)?)
        }
        D::Date32 => (Kind::Date, cast_to(array, &D::Int32)?),
        D::Date64 => {
            let days = cast_to(array, &D::Date32)?;
            (Kind::Date, cast_to(&days, &D::Int32)?)
        }
        D::Timestamp(unit, tz) => (
            Kind::Timestamp {
                unit: *unit,
                tz: tz.is_some(),
            },
            cast_to(array, &D::Int64)?,
        ),
        D::Time32(_) | D::Time64(_) => {
            let micros = cast_to(array, &D::Time64(TimeUnit::Microsecond))?;
            (Kind::Time, cast_to(&micros, &D::Int64)?)
        }
        D::Dictionary(_, values) => {
            let plain = cast_to(array, values)?;
            return canonical(field, &plain, is_json);
        }
        D::Struct(_)
        | D::List(_)
        | D::LargeList(_)
        | D::ListView(_)
        | D::LargeListView(_)
        | D::FixedSizeList(_, _)
        | D::Map(_, _) => (
            Kind::Json,
            Arc::new(to_json_text(field, array)?) as ArrayRef,
        ),
        other => {
            let text = cast(array, &D::Utf8).map_err(|_| {
                format!("Arrow type {other} has no SQL counterpart: convert it in a transform")
            })?;
            (Kind::Text, text)
        }
    })
}

/// Each value of a nested column as JSON text.
fn to_json_text(field: &FieldRef, array: &ArrayRef) -> Result<StringArray, String> {
    let options = arrow::json::writer::EncoderOptions::default();
    let field = Arc::new(
        field
            .as_ref()
            .clone()
            .with_data_type(array.data_type().clone()),
    );
    let mut encoder = arrow::json::writer::make_encoder(&field, array.as_ref(), &options)
        .map_err(|e| format!("cannot encode {} as JSON: {e}", array.data_type()))?;
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 32);
    let mut buf = Vec::with_capacity(256);
    for i in 0..array.len() {
        if array.is_null(i) {
            out.append_null();
        } else {
            buf.clear();
            encoder.encode(i, &mut buf);
            out.append_value(String::from_utf8_lossy(&buf));
        }
    }
    Ok(out.finish())
}

/// A value of one row, ready to bind as a parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F32(f32),
    F64(f64),
    Str(&'a str),
    String(String),
    Bytes(&'a [u8]),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    Time(NaiveTime),
}

/// The typed view of a column, downcast once per statement rather than once per value.
pub(crate) enum Typed<'a> {
    Bool(&'a BooleanArray),
    Int16(&'a Int16Array),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    UInt64(&'a UInt64Array),
    Float32(&'a Float32Array),
    Float64(&'a Float64Array),
    Decimal(&'a Decimal128Array, i8),
    Text(&'a StringArray),
    Binary(&'a BinaryArray),
    Date(&'a Int32Array),
    Timestamp(&'a Int64Array, TimeUnit),
    Time(&'a Int64Array),
}

impl Column {
    /// The typed view. The canonical array types are guaranteed by [`normalize`].
    pub(crate) fn typed(&self) -> Typed<'_> {
        let a = self.array.as_ref();
        match self.kind {
            Kind::Bool => Typed::Bool(a.as_boolean()),
            Kind::Int16 => Typed::Int16(a.as_primitive()),
            Kind::Int32 => Typed::Int32(a.as_primitive()),
            Kind::Int64 => Typed::Int64(a.as_primitive()),
            Kind::UInt64 => Typed::UInt64(a.as_primitive()),
            Kind::Float32 => Typed::Float32(a.as_primitive()),
            Kind::Float64 => Typed::Float64(a.as_primitive()),
            Kind::Decimal { scale, .. } => Typed::Decimal(a.as_primitive(), scale),
            Kind::Text | Kind::Json => Typed::Text(a.as_string()),
            Kind::Binary => Typed::Binary(a.as_binary()),
            Kind::Date => Typed::Date(a.as_primitive()),
            Kind::Timestamp { unit, .. } => Typed::Timestamp(a.as_primitive(), unit),
            Kind::Time => Typed::Time(a.as_primitive()),
        }
    }
}

impl<'a> Typed<'a> {
    fn array(&self) -> &dyn Array {
        match self {
            Typed::Bool(a) => *a,
            Typed::Int16(a) => *a,
            Typed::Int32(a) | Typed::Date(a) => *a,
            Typed::Int64(a) | Typed::Timestamp(a, _) | Typed::Time(a) => *a,
            Typed::UInt64(a) => *a,
            Typed::Float32(a) => *a,
            Typed::Float64(a) => *a,
            Typed::Decimal(a, _) => *a,
            Typed::Text(a) => *a,
            Typed::Binary(a) => *a,
        }
    }

    /// Whether row `i` is null.
    pub(crate) fn is_null(&self, i: usize) -> bool {
        self.array().is_null(i)
    }

    /// The value of row `i`; an error names what is wrong with it (a row-level problem).
    pub(crate) fn value(&self, i: usize) -> Result<Value<'a>, String> {
        if self.is_null(i) {
            return Ok(Value::Null);
        }
        Ok(match self {
            Typed::Bool(a) => Value::Bool(a.value(i)),
            Typed::Int16(a) => Value::Int(a.value(i).into()),
            Typed::Int32(a) => Value::Int(a.value(i).into()),
            Typed::Int64(a) => Value::Int(a.value(i)),
            Typed::UInt64(a) => Value::UInt(a.value(i)),
            Typed::Float32(a) => Value::F32(a.value(i)),
            Typed::Float64(a) => Value::F64(a.value(i)),
            Typed::Decimal(a, scale) => Value::String(decimal_string(a.value(i), *scale)),
            Typed::Text(a) => Value::Str(a.value(i)),
            Typed::Binary(a) => Value::Bytes(a.value(i)),
            Typed::Date(a) => Value::Date(date_from_days(a.value(i))?),
            Typed::Timestamp(a, unit) => Value::DateTime(datetime_from(a.value(i), *unit)?),
            Typed::Time(a) => Value::Time(time_from_micros(a.value(i))?),
        })
    }
}

/// Days since 1970-01-01 between 1970 and PostgreSQL's epoch (2000-01-01).
pub(crate) const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds between 1970-01-01 and 2000-01-01.
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A timestamp value in `unit` as microseconds, or `None` when it does not fit.
pub(crate) fn to_micros(value: i64, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Second => value.checked_mul(1_000_000),
        TimeUnit::Millisecond => value.checked_mul(1_000),
        TimeUnit::Microsecond => Some(value),
        TimeUnit::Nanosecond => Some(value.div_euclid(1_000)),
    }
}

pub(crate) fn datetime_from(value: i64, unit: TimeUnit) -> Result<NaiveDateTime, String> {
    to_micros(value, unit)
        .and_then(DateTime::from_timestamp_micros)
        .map(|d| d.naive_utc())
        .ok_or_else(|| format!("timestamp {value} ({unit:?}) is out of range"))
}

pub(crate) fn date_from_days(days: i32) -> Result<NaiveDate, String> {
    // 719,163 days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
    days.checked_add(719_163)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or_else(|| format!("date {days} (days since 1970-01-01) is out of range"))
}

pub(crate) fn time_from_micros(micros: i64) -> Result<NaiveTime, String> {
    let secs = u32::try_from(micros.div_euclid(1_000_000)).ok();
    let nanos = (micros.rem_euclid(1_000_000) * 1_000) as u32;
    secs.and_then(|s| NaiveTime::from_num_seconds_from_midnight_opt(s, nanos))
        .ok_or_else(|| format!("time of day {micros}µs is out of range"))
}

/// `mantissa × 10^-scale` as exact decimal text: `-12.340`, `0.001`, `1200`.
pub(crate) fn decimal_string(mantissa: i128, scale: i8) -> String {
    let negative = mantissa < 0;
    let digits = mantissa.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + 4);
    if negative {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(&digits);
        if mantissa != 0 {
            out.extend(std::iter::repeat_n('0', usize::from(scale.unsigned_abs())));
        }
        return out;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    }
    out
}

/// The SQL type a sink gives a column of `kind` when it creates or extends a table.
/// `key`: the column is part of the primary key (MySQL cannot index unbounded text).
pub(crate) fn sql_type(dialect: Dialect, kind: Kind, key: bool) -> String {
    match dialect {
        Dialect::Postgres => pg_type(kind, true).into_owned(),
        Dialect::Mysql => mysql_type(kind, key),
        Dialect::Sqlite => sqlite_type(kind).to_owned(),
    }
}

/// The PostgreSQL type of a kind. With `ddl`, decimals carry their precision and scale;
/// without, it is the base type name that `format_type(oid, NULL)` prints, which is what
/// the binary `COPY` encoding produces.
pub(crate) fn pg_type(kind: Kind, ddl: bool) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow::Borrowed;
    match kind {
        Kind::Bool => Borrowed("boolean"),
        Kind::Int16 => Borrowed("smallint"),
        Kind::Int32 => Borrowed("integer"),
        Kind::Int64 => Borrowed("bigint"),
        Kind::UInt64 if ddl => Borrowed("numeric(20,0)"),
        Kind::UInt64 => Borrowed("numeric"),
        Kind::Float32 => Borrowed("real"),
        Kind::Float64 => Borrowed("double precision"),
        Kind::Decimal { precision, scale }
            if ddl && scale >= 0 && precision >= 1 && i16::from(scale) <= i16::from(precision) =>
        {
            format!("numeric({precision},{scale})").into()
        }
        Kind::Decimal { .. } => Borrowed("numeric"),
        Kind::Text => Borrowed("text"),
        Kind::Json => Borrowed("jsonb"),
        Kind::Binary => Borrowed("bytea"),
        Kind::Date => Borrowed("date"),
        Kind::Timestamp { tz: true, .. } => Borrowed("timestamp with time zone"),
        Kind::Timestamp { tz: false, .. } => Borrowed("timestamp without time zone"),
        Kind::Time => Borrowed("time without time zone"),
    }
}

fn mysql_type(kind: Kind, key: bool) -> String {
    match kind {
        Kind::Bool => "BOOLEAN".into(),
        Kind::Int16 => "SMALLINT".into(),
        Kind::Int32 => "INT".into(),
        Kind::Int64 => "BIGINT".into(),
        Kind::UInt64 => "BIGINT UNSIGNED".into(),
        Kind::Float32 => "FLOAT".into(),
        Kind::Float64 => "DOUBLE".into(),
        Kind::Decimal { precision, scale } => {
            let (p, s) = if scale < 0 {
                (i16::from(precision) - i16::from(scale), 0)
            } else {
                (i16::from(precision), i16::from(scale))
            };
            if (1..=65).contains(&p) && s <= 30 && s <= p {
                format!("DECIMAL({p},{s})")
            } else {
                "DECIMAL(65,30)".into()
            }
        }
        Kind::Text if key => "VARCHAR(255)".into(),
        Kind::Text => "LONGTEXT".into(),
        Kind::Json => "JSON".into(),
        Kind::Binary if key => "VARBINARY(255)".into(),
        Kind::Binary => "LONGBLOB".into(),
        Kind::Date => "DATE".into(),
        Kind::Timestamp { .. } => "DATETIME(6)".into(),
        Kind::Time => "TIME(6)".into(),
    }
}

fn sqlite_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "BOOLEAN",
        Kind::Int16 | Kind::Int32 | Kind::Int64 | Kind::UInt64 => "INTEGER",
        Kind::Float32 | Kind::Float64 => "REAL",
        // TEXT keeps decimals exact: NUMERIC affinity would turn 1.10 into the REAL 1.1.
        Kind::Decimal { .. } | Kind::Text | Kind::Json => "TEXT",
        Kind::Binary => "BLOB",
        Kind::Date => "DATE",
        Kind::Timestamp { .. } => "DATETIME",
        Kind::Time => "TIME",
    }
}

/// A date as SQLite stores it: `YYYY-MM-DD`.
pub(crate) fn sqlite_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// A timestamp as SQLite stores it: ISO 8601 with microseconds, `Z` for an instant.
pub(crate) fn sqlite_datetime(d: NaiveDateTime, tz: bool) -> String {
    let mut s = d.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    if tz {
        s.push('Z');
    }
    s
}

/// A time of day as SQLite stores it: `HH:MM:SS.ffffff`.
pub(crate) fn sqlite_time(t: NaiveTime) -> String {
    t.format("%H:%M:%S%.6f").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date64Array, StructArray, TimestampMillisecondArray, UInt8Array};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn decimals_print_exactly() {
        assert_eq!(decimal_string(12340, 3), "12.340");
        assert_eq!(decimal_string(-5, 3), "-0.005");
        assert_eq!(decimal_string(0, 2), "0.00");
        assert_eq!(decimal_string(12, -2), "1200");
        assert_eq!(decimal_string(0, -2), "0");
        assert_eq!(decimal_string(i128::MIN, 0), i128::MIN.to_string());
    }

    #[test]
    fn columns_are_brought_to_their_kinds() {
        let nested = StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )]);
        let schema = Schema::new(vec![
            Field::new("small", DataType::UInt8, true),
            Field::new("day", DataType::Date64, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("obj", nested.data_type().clone(), true),
        ]);
        let records = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(UInt8Array::from(vec![1, 255])),
                Arc::new(Date64Array::from(vec![86_400_000, 0])),
                Arc::new(TimestampMillisecondArray::from(vec![1_500, -1]).with_timezone("UTC")),
                Arc::new(nested),
            ],
        )
        .unwrap();
        let cols = normalize(&records).unwrap();
        let kinds: Vec<_> = cols.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Int16,
                Kind::Date,
                Kind::Timestamp {
                    unit: TimeUnit::Millisecond,
                    tz: true
                },
                Kind::Json
            ]
        );
        assert_eq!(cols[0].typed().value(1).unwrap(), Value::Int(255));
        assert_eq!(
            cols[1].typed().value(0).unwrap(),
            Value::Date(NaiveDate::from_ymd_opt(1970, 1, 2).unwrap())
        );
        let Value::DateTime(t) = cols[2].typed().value(1).unwrap() else {
            panic!("not a datetime")
        };
        assert_eq!(t.to_string(), "1969-12-31 23:59:59.999");
        assert_eq!(cols[3].typed().value(0).unwrap(), Value::Str("{\"x\":1}"));
    }

    #[test]
    fn out_of_range_timestamps_are_row_errors() {
        assert!(datetime_from(i64::MAX, TimeUnit::Second).is_err());
        assert!(datetime_from(-1, TimeUnit::Nanosecond).is_ok());
    }
}
