//! `cast: { column: type }`: arrow's cast kernel, with sluice's readings where arrow's
//! differ, and the first value that does not convert named.
//!
//! | to | from |
//! |---|---|
//! | `boolean`, `int64`, `float64`, `string` | arrow's cast (`'1.5'` → 1.5, `'true'` → true, 7 → `'7'`); a float with a fraction is not an `int64`; timestamps and dates become Unix seconds |
//! | `timestamp` (UTC microseconds) | RFC 3339 text (and the forms arrow reads: `2024-01-01 10:00:00`, `2024-01-01`), Unix seconds as numbers or text (`1700000000`, `1700000000.25`), dates, timestamps of any unit or zone |
//! | `date` | `2024-01-31`, any timestamp text (its UTC date), Unix seconds, timestamps |
//! | `json` | any value as JSON text: text becomes a JSON string (`"abc"`), numbers and true/false stay bare, records and lists become objects and arrays (null fields kept as `null`), timestamps RFC 3339 strings |
//! | `string` | records and lists as JSON text, like `json` |
//!
//! A JSON column carries the canonical Arrow extension type `arrow.json` in its field
//! metadata, so sinks can write it to `jsonb`, and casting it to `json` again keeps it
//! as it is (no double encoding). Null stays null everywhere.

use super::eval::{Kind, kind, kind_name, timestamp_type};
use crate::spec::ColumnType;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, StringBuilder, TimestampMicrosecondArray,
    new_null_array,
};
use arrow::compute::kernels::boolean::{and, is_not_null, is_null, or};
use arrow::compute::kernels::cmp::neq;
use arrow::compute::kernels::zip::zip;
use arrow::compute::{CastOptions, can_cast_types, cast_with_options, prep_null_mask_filter};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, TimeUnit};
use arrow::error::ArrowError;
use arrow::json::writer::{EncoderOptions, make_encoder};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use std::collections::HashMap;
use std::sync::Arc;

/// The field metadata key of Arrow extension types.
pub(super) const EXTENSION_NAME: &str = "ARROW:extension:name";
/// Its metadata.
pub(super) const EXTENSION_METADATA: &str = "ARROW:extension:metadata";
/// The canonical extension type of JSON text.
pub(super) const JSON_EXTENSION: &str = "arrow.json";

/// Why a column did not convert.
#[derive(Debug)]
pub(super) enum CastError {
    /// Its type cannot become the target type at all (the message says why).
    Type(String),
    /// Some values do not convert: how many, the first one's row and its text.
    Values {
        count: usize,
        row: usize,
        value: String,
    },
    /// A kernel failed.
    Arrow(ArrowError),
}

impl From<ArrowError> for CastError {
    fn from(e: ArrowError) -> Self {
        CastError::Arrow(e)
    }
}

/// The YAML name of a column type.
pub(super) fn type_name(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Boolean => "boolean",
        ColumnType::Int64 => "int64",
        ColumnType::Float64 => "float64",
        ColumnType::String => "string",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Date => "date",
        ColumnType::Json => "json",
    }
}

/// The Arrow type of a column type.
pub(super) fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::String | ColumnType::Json => DataType::Utf8,
        ColumnType::Timestamp => timestamp_type(),
        ColumnType::Date => DataType::Date32,
    }
}

/// Whether a field holds JSON text.
pub(super) fn is_json(field: &Field) -> bool {
    field.metadata().get(EXTENSION_NAME).map(String::as_str) == Some(JSON_EXTENSION)
}

/// The field of a column cast to `to`: its type, and the `arrow.json` marker set or
/// removed.
pub(super) fn cast_field(field: &Field, array: &dyn Array, to: ColumnType) -> Field {
    let mut metadata: HashMap<String, String> = field.metadata().clone().into();
    metadata.remove(EXTENSION_NAME);
    metadata.remove(EXTENSION_METADATA);
    if to == ColumnType::Json {
        metadata.insert(EXTENSION_NAME.to_owned(), JSON_EXTENSION.to_owned());
    }
    Field::new(
        field.name(),
        array.data_type().clone(),
        field.is_nullable() || array.logical_null_count() > 0,
    )
    .with_metadata(metadata)
}

/// `array` converted to `to`. `field`, when given, is the column's field (its JSON marker
/// is honoured).
pub(super) fn convert(
    array: &ArrayRef,
    field: Option<&Field>,
    to: ColumnType,
) -> Result<ArrayRef, CastError> {
    let k = kind(array.data_type());
    if to != ColumnType::Json && array.data_type() == &arrow_type(to) {
        return Ok(array.clone());
    }
    let mut also_bad = None;
    let out = match to {
        ColumnType::Json if field.is_some_and(is_json) => return Ok(array.clone()),
        ColumnType::Json if k == Kind::Null => {
            return Ok(new_null_array(&DataType::Utf8, array.len()));
        }
        ColumnType::Json if matches!(k, Kind::Timestamp | Kind::Date) => {
            // Arrow's JSON encoder writes a timestamp it cannot format as an "ERROR: ..."
            // string: find such values first.
            strict(array, &DataType::Utf8)?;
            return json_text(array);
        }
        ColumnType::Json => return json_text(array),
        ColumnType::String if k == Kind::Nested => return json_text(array),
        ColumnType::Int64 | ColumnType::Float64 if matches!(k, Kind::Timestamp | Kind::Date) => {
            unix_seconds(array, to)?
        }
        ColumnType::Boolean | ColumnType::Int64 | ColumnType::Float64 | ColumnType::String => {
            let out = safe_cast(array, &arrow_type(to))?;
            if to == ColumnType::Int64 && k == Kind::Float {
                // Arrow truncates 1.5 to 1: a fraction is a value that does not convert.
                let before = safe_cast(array, &DataType::Float64)?;
                let after = safe_cast(&out, &DataType::Float64)?;
                also_bad = Some(null_as_false(&neq(&before, &after)?));
            }
            out
        }
        ColumnType::Timestamp => timestamps(array)?,
        ColumnType::Date => dates(array)?,
    };
    check(array, &out, also_bad)?;
    Ok(out)
}

/// Arrow's cast, with values that do not convert as nulls (found by [`check`]). When the
/// kernel fails as a whole (a timestamp too large to write as text), the failing values
/// are found one by one.
fn safe_cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, CastError> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    if !can_cast_types(array.data_type(), to) {
        let hint = match kind(array.data_type()) {
            Kind::Nested => "; flatten it first, or cast it to json",
            _ => "",
        };
        return Err(CastError::Type(format!(
            "the column is {} ({}), which cannot become {}{hint}",
            kind_name(array.data_type()),
            array.data_type(),
            friendly(to)
        )));
    }
    cast_with_options(array.as_ref(), to, &CastOptions::default()).map_err(|e| locate(array, to, e))
}

/// The values of `array` that arrow cannot cast to `to`, one by one.
fn locate(array: &ArrayRef, to: &DataType, error: ArrowError) -> CastError {
    let mut count = 0;
    let mut first = None;
    for row in 0..array.len() {
        if array.is_null(row) {
            continue;
        }
        let one = array.slice(row, 1);
        let fails = match cast_with_options(one.as_ref(), to, &CastOptions::default()) {
            Ok(out) => out.is_null(0),
            Err(_) => true,
        };
        if fails {
            count += 1;
            first.get_or_insert(row);
        }
    }
    match first {
        Some(row) => CastError::Values {
            count,
            row,
            value: display(array.as_ref(), row),
        },
        None => CastError::Arrow(error),
    }
}

/// `array` as `to`, every value converted or an error naming the first that is not.
pub(super) fn strict(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, CastError> {
    let out = safe_cast(array, to)?;
    check(array, &out, None)?;
    Ok(out)
}

/// A type's name as the YAML says it where there is one.
pub(super) fn friendly(dt: &DataType) -> String {
    match dt {
        DataType::Boolean => "boolean".to_owned(),
        DataType::Int64 => "int64".to_owned(),
        DataType::Float64 => "float64".to_owned(),
        DataType::Utf8 => "string".to_owned(),
        DataType::Timestamp(..) => "timestamp".to_owned(),
        DataType::Date32 => "date".to_owned(),
        other => other.to_string(),
    }
}

/// Timestamps and dates as Unix seconds.
fn unix_seconds(array: &ArrayRef, to: ColumnType) -> Result<ArrayRef, CastError> {
    let micros = safe_cast(array, &timestamp_type())?;
    let micros = safe_cast(&micros, &DataType::Int64)?;
    let Some(micros) = micros.as_primitive_opt::<Int64Type>() else {
        return Err(CastError::Type(
            "timestamps did not become numbers".to_owned(),
        ));
    };
    Ok(match to {
        ColumnType::Float64 => Arc::new(micros.unary::<_, Float64Type>(|m| m as f64 / 1e6)),
        _ => Arc::new(micros.unary::<_, Int64Type>(|m| m.div_euclid(1_000_000))),
    })
}

/// Values as UTC microsecond timestamps, with nulls where they do not convert.
fn timestamps(array: &ArrayRef) -> Result<ArrayRef, CastError> {
    let target = timestamp_type();
    match kind(array.data_type()) {
        Kind::Null | Kind::Timestamp | Kind::Date => safe_cast(array, &target),
        Kind::Text => {
            let text = safe_cast(array, &DataType::Utf8)?;
            let parsed = safe_cast(&text, &target)?;
            if parsed.null_count() == text.null_count() {
                return Ok(parsed);
            }
            // What arrow could not read may be Unix seconds written as text.
            let (Some(text), Some(parsed)) = (
                text.as_string_opt::<i32>(),
                parsed.as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>(),
            ) else {
                return Err(CastError::Type("text did not become timestamps".to_owned()));
            };
            let patched: TimestampMicrosecondArray = text
                .iter()
                .zip(parsed.iter())
                .map(|(t, p)| p.or_else(|| t.and_then(seconds_text)))
                .collect();
            Ok(Arc::new(patched.with_timezone("UTC")))
        }
        Kind::Int => {
            let seconds = safe_cast(array, &DataType::Int64)?;
            let seconds = safe_cast(
                &seconds,
                &DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
            )?;
            safe_cast(&seconds, &target)
        }
        Kind::Float => {
            let seconds = safe_cast(array, &DataType::Float64)?;
            let Some(seconds) = seconds.as_primitive_opt::<Float64Type>() else {
                return Err(CastError::Type("numbers did not become floats".to_owned()));
            };
            let micros: ArrayRef = Arc::new(seconds.unary::<_, Float64Type>(|s| (s * 1e6).round()));
            let micros = safe_cast(&micros, &DataType::Int64)?;
            safe_cast(&micros, &target)
        }
        _ => Err(CastError::Type(format!(
            "the column is {} ({}), which cannot become a timestamp: timestamps are read \
             from RFC 3339 text, Unix seconds or dates",
            kind_name(array.data_type()),
            array.data_type()
        ))),
    }
}

/// Unix seconds written as text (`1700000000`, `1700000000.5`), in microseconds.
fn seconds_text(t: &str) -> Option<i64> {
    let t = t.trim();
    if let Ok(s) = t.parse::<i64>() {
        return s.checked_mul(1_000_000);
    }
    let s = t.parse::<f64>().ok().filter(|s| s.is_finite())?;
    let micros = (s * 1e6).round();
    // i64::MAX as f64 rounds up to 2^63, which does not fit: stay below it.
    (micros.abs() < 9.2e18).then_some(micros as i64)
}

/// Values as dates, with nulls where they do not convert.
fn dates(array: &ArrayRef) -> Result<ArrayRef, CastError> {
    match kind(array.data_type()) {
        Kind::Null | Kind::Date | Kind::Timestamp => safe_cast(array, &DataType::Date32),
        Kind::Text => {
            let text = safe_cast(array, &DataType::Utf8)?;
            let first = safe_cast(&text, &DataType::Date32)?;
            if first.null_count() == text.null_count() {
                return Ok(first);
            }
            // Timestamps written as text, or Unix seconds: their UTC date.
            let second = safe_cast(&timestamps(&text)?, &DataType::Date32)?;
            Ok(zip(&is_not_null(first.as_ref())?, &first, &second)?)
        }
        Kind::Int | Kind::Float => safe_cast(&timestamps(array)?, &DataType::Date32),
        _ => Err(CastError::Type(format!(
            "the column is {} ({}), which cannot become a date",
            kind_name(array.data_type()),
            array.data_type()
        ))),
    }
}

/// Every value as JSON text (arrow's JSON encoder), nulls as nulls.
fn json_text(array: &ArrayRef) -> Result<ArrayRef, CastError> {
    let field: FieldRef = Arc::new(Field::new("value", array.data_type().clone(), true));
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let mut encoder = make_encoder(&field, array.as_ref(), &options).map_err(|e| {
        CastError::Type(format!(
            "the column's type {} cannot be written as JSON ({e})",
            array.data_type()
        ))
    })?;
    let mut out = StringBuilder::with_capacity(array.len(), array.len() * 16);
    let mut buf = Vec::new();
    for row in 0..array.len() {
        if encoder.is_null(row) {
            out.append_null();
            continue;
        }
        buf.clear();
        encoder.encode(row, &mut buf);
        out.append_value(String::from_utf8_lossy(&buf));
    }
    Ok(Arc::new(out.finish()))
}

/// Fails with the first value that was not null before and is null after (or is marked in
/// `also_bad`).
fn check(
    before: &ArrayRef,
    after: &ArrayRef,
    also_bad: Option<BooleanArray>,
) -> Result<(), CastError> {
    let lost = and(&is_not_null(before.as_ref())?, &is_null(after.as_ref())?)?;
    let bad = match also_bad {
        Some(more) => or(&lost, &more)?,
        None => lost,
    };
    let bad = null_as_false(&bad);
    let count = bad.true_count();
    let Some(row) = bad.values().set_indices().next() else {
        return Ok(());
    };
    Err(CastError::Values {
        count,
        row,
        value: display(before.as_ref(), row),
    })
}

/// `mask` with null as false (arrow's helper expects nulls to be there).
pub(super) fn null_as_false(mask: &BooleanArray) -> BooleanArray {
    if mask.null_count() > 0 {
        prep_null_mask_filter(mask)
    } else {
        mask.clone()
    }
}

/// A value as text for a message, shortened.
pub(super) fn display(array: &dyn Array, row: usize) -> String {
    const MAX: usize = 60;
    let options = FormatOptions::default().with_display_error(false);
    let text = match ArrayFormatter::try_new(array, &options) {
        Ok(f) if row < array.len() => match f.value(row).try_to_string() {
            Ok(text) => text,
            // A timestamp out of chrono's range: its stored number.
            Err(_) => match cast_with_options(
                &array.slice(row, 1),
                &DataType::Int64,
                &CastOptions::default(),
            ) {
                Ok(raw) if raw.is_valid(0) => format!(
                    "{} (stored as {})",
                    "out of range",
                    display(raw.as_ref(), 0)
                ),
                _ => "?".to_owned(),
            },
        },
        _ => "?".to_owned(),
    };
    if text.chars().count() > MAX {
        let short: String = text.chars().take(MAX).collect();
        format!("{short}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Date32Array, Float64Array, Int32Array, Int64Array, ListArray, StringArray, StructArray,
        TimestampMillisecondArray,
    };
    use arrow::buffer::NullBuffer;
    use arrow::datatypes::{Date32Type, Fields, Int32Type, TimestampMicrosecondType};

    fn cast(array: ArrayRef, to: ColumnType) -> Result<ArrayRef, CastError> {
        convert(&array, None, to)
    }

    fn texts(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    fn micros(a: &ArrayRef) -> Vec<Option<i64>> {
        assert_eq!(a.data_type(), &timestamp_type());
        a.as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect()
    }

    fn strings(a: &ArrayRef) -> Vec<Option<&str>> {
        a.as_string::<i32>().iter().collect()
    }

    fn bad(r: Result<ArrayRef, CastError>) -> (usize, usize, String) {
        match r {
            Err(CastError::Values { count, row, value }) => (count, row, value),
            other => panic!("expected bad values, got {other:?}"),
        }
    }

    #[test]
    fn numbers_and_booleans_from_text() {
        let out = cast(texts(&[Some("1.5"), None, Some("-2")]), ColumnType::Float64).unwrap();
        assert_eq!(
            out.as_primitive::<Float64Type>().iter().collect::<Vec<_>>(),
            vec![Some(1.5), None, Some(-2.0)]
        );
        let out = cast(texts(&[Some("42"), Some("-7")]), ColumnType::Int64).unwrap();
        assert_eq!(out.as_primitive::<Int64Type>().values(), &[42, -7]);
        let out = cast(
            texts(&[Some("true"), Some("false"), None]),
            ColumnType::Boolean,
        )
        .unwrap();
        assert_eq!(
            out.as_boolean().iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), None]
        );
        assert_eq!(
            bad(cast(
                texts(&[Some("1"), Some("abc"), Some("x")]),
                ColumnType::Float64
            )),
            (2, 1, "abc".to_owned())
        );
        assert_eq!(
            bad(cast(texts(&[Some("1.5")]), ColumnType::Int64)),
            (1, 0, "1.5".to_owned())
        );
        assert_eq!(
            bad(cast(texts(&[Some("maybe")]), ColumnType::Boolean)).2,
            "maybe"
        );
    }

    #[test]
    fn floats_with_a_fraction_are_not_int64() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![Some(2.0), None, Some(-3.0)]));
        let out = cast(floats, ColumnType::Int64).unwrap();
        assert_eq!(
            out.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(),
            vec![Some(2), None, Some(-3)]
        );
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![2.0, 2.5, 1e300]));
        assert_eq!(
            bad(cast(floats, ColumnType::Int64)),
            (2, 1, "2.5".to_owned())
        );
    }

    #[test]
    fn to_string_and_unchanged() {
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(7), None]));
        let out = cast(ints, ColumnType::String).unwrap();
        assert_eq!(strings(&out), vec![Some("7"), None]);
        let same: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        assert!(Arc::ptr_eq(
            &same,
            &cast(same.clone(), ColumnType::Int64).unwrap()
        ));
    }

    #[test]
    fn timestamps_from_rfc3339_text_unix_seconds_and_other_units() {
        let out = cast(
            texts(&[
                Some("2024-01-01T00:00:00Z"),
                Some("2024-01-01T02:00:00+02:00"),
                Some("1704067200"),
                Some("1704067200.5"),
                Some("2024-01-01"),
                None,
            ]),
            ColumnType::Timestamp,
        )
        .unwrap();
        let t = 1_704_067_200_000_000;
        assert_eq!(
            micros(&out),
            vec![Some(t), Some(t), Some(t), Some(t + 500_000), Some(t), None]
        );
        let secs: ArrayRef = Arc::new(Int64Array::from(vec![Some(1_704_067_200), None]));
        assert_eq!(
            micros(&cast(secs, ColumnType::Timestamp).unwrap()),
            vec![Some(t), None]
        );
        let secs: ArrayRef = Arc::new(Float64Array::from(vec![1_704_067_200.25]));
        assert_eq!(
            micros(&cast(secs, ColumnType::Timestamp).unwrap()),
            vec![Some(t + 250_000)]
        );
        let millis: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![1_704_067_200_000]));
        assert_eq!(
            micros(&cast(millis, ColumnType::Timestamp).unwrap()),
            vec![Some(t)]
        );
        let days: ArrayRef = Arc::new(Date32Array::from(vec![19723]));
        assert_eq!(
            micros(&cast(days, ColumnType::Timestamp).unwrap()),
            vec![Some(t)]
        );
    }

    #[test]
    fn timestamps_that_do_not_convert() {
        assert_eq!(
            bad(cast(
                texts(&[Some("2024-01-01T00:00:00Z"), Some("yesterday"), Some("NaN")]),
                ColumnType::Timestamp
            )),
            (2, 1, "yesterday".to_owned())
        );
        // Seconds so large that microseconds overflow.
        let secs: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX / 10]));
        assert_eq!(bad(cast(secs, ColumnType::Timestamp)).1, 0);
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![f64::NAN, f64::INFINITY]));
        assert_eq!(bad(cast(floats, ColumnType::Timestamp)).0, 2);
        let flags: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
        assert!(matches!(
            cast(flags, ColumnType::Timestamp),
            Err(CastError::Type(m)) if m.contains("cannot become a timestamp")
        ));
    }

    #[test]
    fn timestamps_back_to_numbers_are_unix_seconds() {
        let t: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_704_067_200_500_000]).with_timezone("UTC"),
        );
        let secs = cast(t.clone(), ColumnType::Int64).unwrap();
        assert_eq!(secs.as_primitive::<Int64Type>().values(), &[1_704_067_200]);
        let secs = cast(t.clone(), ColumnType::Float64).unwrap();
        assert_eq!(
            secs.as_primitive::<Float64Type>().values(),
            &[1_704_067_200.5]
        );
        let text = cast(t, ColumnType::String).unwrap();
        assert_eq!(strings(&text), vec![Some("2024-01-01T00:00:00.500Z")]);
    }

    #[test]
    fn timestamps_out_of_range_are_values_that_do_not_convert() {
        let t: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(0), Some(i64::MAX)]).with_timezone("UTC"),
        );
        let out_of_range = (
            1,
            1,
            "out of range (stored as 9223372036854775807)".to_owned(),
        );
        assert_eq!(bad(cast(t.clone(), ColumnType::String)), out_of_range);
        assert_eq!(bad(cast(t.clone(), ColumnType::Json)), out_of_range);
        assert_eq!(bad(cast(t, ColumnType::Date)), out_of_range);
        let days: ArrayRef = Arc::new(Date32Array::from(vec![i32::MAX]));
        assert_eq!(bad(cast(days, ColumnType::Timestamp)).0, 1);
    }

    #[test]
    fn dates_from_text_timestamps_and_seconds() {
        let out = cast(
            texts(&[
                Some("2024-01-31"),
                Some("2024-01-31T23:30:00-02:00"),
                Some("1704067200"),
                None,
            ]),
            ColumnType::Date,
        )
        .unwrap();
        // 2024-01-31 is day 19753; 23:30 at -02:00 is the next day in UTC.
        assert_eq!(
            out.as_primitive::<Date32Type>().iter().collect::<Vec<_>>(),
            vec![Some(19753), Some(19754), Some(19723), None]
        );
        assert_eq!(
            bad(cast(texts(&[Some("31/01/2024")]), ColumnType::Date)).2,
            "31/01/2024"
        );
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_704_067_200_000_000]).with_timezone("UTC"),
        );
        assert_eq!(
            cast(ts, ColumnType::Date)
                .unwrap()
                .as_primitive::<Date32Type>()
                .values(),
            &[19723]
        );
    }

    #[test]
    fn json_of_every_kind() {
        let fields = Fields::from(vec![
            Field::new("id", DataType::Int32, true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                true,
            ),
            Field::new("note", DataType::Utf8, true),
        ]);
        let tags = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
        // A list of strings for `tags`.
        let tags = arrow::compute::cast(&tags, fields[1].data_type()).unwrap();
        let tags = arrow::compute::concat(&[tags.as_ref(), tags.as_ref()]).unwrap();
        let record = StructArray::new(
            fields,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), Some(2)])),
                tags,
                Arc::new(StringArray::from(vec![None, Some("say \"hi\"")])),
            ],
            Some(NullBuffer::from(vec![true, false])),
        );
        let out = cast(Arc::new(record), ColumnType::Json).unwrap();
        assert_eq!(
            strings(&out),
            vec![Some(r#"{"id":1,"tags":["1"],"note":null}"#), None]
        );

        let out = cast(texts(&[Some("a \"b\""), None]), ColumnType::Json).unwrap();
        assert_eq!(strings(&out), vec![Some(r#""a \"b\"""#), None]);
        let out = cast(Arc::new(Float64Array::from(vec![1.5])), ColumnType::Json).unwrap();
        assert_eq!(strings(&out), vec![Some("1.5")]);
        let out = cast(Arc::new(BooleanArray::from(vec![false])), ColumnType::Json).unwrap();
        assert_eq!(strings(&out), vec![Some("false")]);
        let out = cast(Arc::new(arrow::array::NullArray::new(2)), ColumnType::Json).unwrap();
        assert_eq!(out.null_count(), 2);

        // A column already marked as JSON is kept as it is.
        let marked = Field::new("p", DataType::Utf8, true).with_metadata(HashMap::from([(
            EXTENSION_NAME.to_owned(),
            JSON_EXTENSION.to_owned(),
        )]));
        let text = texts(&[Some(r#"{"a":1}"#)]);
        let out = convert(&text, Some(&marked), ColumnType::Json).unwrap();
        assert_eq!(strings(&out), vec![Some(r#"{"a":1}"#)]);
        let field = cast_field(&marked, out.as_ref(), ColumnType::Json);
        assert!(is_json(&field));
        assert!(!is_json(&cast_field(
            &marked,
            out.as_ref(),
            ColumnType::String
        )));
    }

    #[test]
    fn records_to_string_are_json_and_to_numbers_are_refused() {
        let record: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("a", DataType::Int32, true)),
            Arc::new(Int32Array::from(vec![1])) as ArrayRef,
        )]));
        assert_eq!(
            strings(&cast(record.clone(), ColumnType::String).unwrap()),
            vec![Some(r#"{"a":1}"#)]
        );
        match cast(record, ColumnType::Int64) {
            Err(CastError::Type(m)) => {
                assert!(
                    m.contains("a nested record") && m.contains("flatten it first"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn seconds_text_edges() {
        assert_eq!(seconds_text(" 12 "), Some(12_000_000));
        assert_eq!(seconds_text("1e3"), Some(1_000_000_000));
        assert_eq!(seconds_text("inf"), None);
        assert_eq!(seconds_text("9223372036854775807"), None);
        assert_eq!(seconds_text("1e300"), None);
        assert_eq!(seconds_text("x"), None);
    }

    #[test]
    fn display_shortens_long_values() {
        let long = "x".repeat(100);
        let a = StringArray::from(vec![long.as_str()]);
        assert_eq!(display(&a, 0).chars().count(), 61);
        assert_eq!(display(&a, 5), "?");
    }
}
