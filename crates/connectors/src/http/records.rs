//! Response bodies to records (a JSON path, a root array, NDJSON), and records to Arrow:
//! schema inference, declared schemas, nested columns, schema drift.

use super::config::{ColumnType, NestedMode, RecordsConfig, SchemaConfig};
use crate::cut;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::Value;
use serde_json_path::JsonPath;
use std::collections::HashMap;
use std::sync::Arc;

mod fast;
pub(crate) use fast::{FastPage, RawAt, RawPage, locate};

/// The records of a page as a batch id hashes them: each one's JSON text as `serde_json`
/// writes its `Value` (compact, keys in order; the same record gives the same text on
/// every read), one after the other, each behind its length. One blake3 over the page,
/// not one per record: blake3 hashes an input of several KiB on all its SIMD lanes at
/// once, a 500-byte record on one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RecordTexts {
    bytes: Vec<u8>,
    /// Where each record (its length, then its text) starts in `bytes`.
    starts: Vec<usize>,
}

impl RecordTexts {
    pub(crate) fn with_capacity(bytes: usize, records: usize) -> RecordTexts {
        RecordTexts {
            bytes: Vec::with_capacity(bytes),
            starts: Vec::with_capacity(records),
        }
    }

    /// The general path's: each record written by `serde_json`.
    pub(crate) fn of(records: &[Value]) -> RecordTexts {
        let mut texts = RecordTexts::with_capacity(records.len() * 512, records.len());
        for record in records {
            let start = texts.open();
            // Serializing a JSON value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut texts.bytes, record);
            texts.close(start);
        }
        texts
    }

    /// Adds a record's text (the fast path's, equal to what `serde_json` writes).
    pub(crate) fn push(&mut self, text: &[u8]) {
        let start = self.open();
        self.bytes.extend_from_slice(text);
        self.close(start);
    }

    fn open(&mut self) -> usize {
        let start = self.bytes.len();
        self.starts.push(start);
        self.bytes.extend_from_slice(&[0; 8]);
        start
    }

    fn close(&mut self, start: usize) {
        let len = (self.bytes.len() - start - 8) as u64;
        self.bytes[start..start + 8].copy_from_slice(&len.to_le_bytes());
    }

    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Feeds the records `delivered` marks to `hasher`: the whole page at once when that
    /// is all of them.
    pub(crate) fn hash_into(&self, hasher: &mut blake3::Hasher, delivered: &[bool]) {
        if delivered.iter().all(|d| *d) {
            hasher.update(&self.bytes);
            return;
        }
        for (i, _) in delivered.iter().enumerate().filter(|(_, d)| **d) {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.bytes.len());
            if let Some(record) = self.starts.get(i).and_then(|&s| self.bytes.get(s..end)) {
                hasher.update(record);
            }
        }
    }
}

/// Where the records are, compiled.
pub(crate) enum RecordsAt {
    Root,
    Ndjson,
    Path(JsonPath),
}

impl RecordsAt {
    pub(crate) fn new(cfg: &RecordsConfig) -> Result<Self, String> {
        Ok(match cfg {
            RecordsConfig::Root => RecordsAt::Root,
            RecordsConfig::Ndjson => RecordsAt::Ndjson,
            RecordsConfig::Path(p) => RecordsAt::Path(
                JsonPath::parse(p).map_err(|e| format!("records.path `{p}` ({e})"))?,
            ),
        })
    }
}

/// A record that could not be used, with why.
#[derive(Debug, Clone)]
pub(crate) struct BadRecord {
    pub(crate) index: usize,
    pub(crate) reason: String,
    pub(crate) snippet: String,
}

/// The records of a page, and what is left of the document (for cursors, `has_more`).
pub(crate) struct Extracted {
    pub(crate) records: Vec<Value>,
    pub(crate) bad: Vec<BadRecord>,
    pub(crate) doc: Option<Value>,
    /// Some records hold numbers kept as their text (see [`keep_exact`]).
    pub(crate) exact: bool,
}

/// Why a body gave no records.
#[derive(Debug)]
pub(crate) enum ExtractError {
    /// Not JSON (or not NDJSON): the message says where it broke.
    Malformed(String),
    /// JSON, but not where or what the config says: the envelope changed.
    Shape(String),
}

fn snippet(v: &Value) -> String {
    cut(&json_text(v), 200)
}

fn push_records(out: &mut Extracted, items: Vec<Value>) {
    for v in items {
        let index = out.records.len() + out.bad.len();
        if v.is_object() {
            out.records.push(v);
        } else {
            out.bad.push(BadRecord {
                index,
                reason: "not a JSON object".into(),
                snippet: snippet(&v),
            });
        }
    }
}

pub(crate) fn extract(body: &[u8], at: &RecordsAt) -> Result<Extracted, ExtractError> {
    let mut out = Extracted {
        records: Vec::new(),
        bad: Vec::new(),
        doc: None,
        exact: false,
    };
    match at {
        RecordsAt::Ndjson => {
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                let trimmed = line.trim_ascii();
                if trimmed.is_empty() {
                    continue;
                }
                match parse(trimmed) {
                    Ok((v, exact)) => {
                        out.exact |= exact;
                        push_records(&mut out, vec![v]);
                    }
                    Err(e) => out.bad.push(BadRecord {
                        index: out.records.len() + out.bad.len(),
                        reason: format!("line {} is not JSON ({e})", i + 1),
                        snippet: cut(&String::from_utf8_lossy(trimmed), 200),
                    }),
                }
            }
        }
        RecordsAt::Root => {
            let (doc, exact) = parse(body).map_err(|e| ExtractError::Malformed(e.to_string()))?;
            out.exact = exact;
            match doc {
                Value::Array(items) => push_records(&mut out, items),
                Value::Object(_) => {
                    return Err(ExtractError::Shape(
                        "the response is a JSON object, not an array of records: set `records: { path: ... }` to where the array is (e.g. `$.data.items`)".into(),
                    ));
                }
                other => {
                    return Err(ExtractError::Shape(format!(
                        "the response is `{}`, not an array of records",
                        cut(&other.to_string(), 40)
                    )));
                }
            }
        }
        RecordsAt::Path(path) => {
            let (mut doc, exact) =
                parse(body).map_err(|e| ExtractError::Malformed(e.to_string()))?;
            out.exact = exact;
            let pointers: Vec<String> = path
                .query_located(&doc)
                .locations()
                .map(|l| l.to_json_pointer())
                .collect();
            if pointers.is_empty() {
                return Err(ExtractError::Shape(format!(
                    "records.path `{path}` matches nothing in the response: has the API changed its envelope? (keys at the top: {})",
                    top_keys(&doc)
                )));
            }
            for p in pointers {
                match doc.pointer_mut(&p).map(Value::take) {
                    Some(Value::Array(items)) => push_records(&mut out, items),
                    Some(Value::Null) | None => {}
                    Some(Value::Object(o)) => push_records(&mut out, vec![Value::Object(o)]),
                    Some(other) => {
                        return Err(ExtractError::Shape(format!(
                            "records.path `{path}` holds `{}`, not an array of records",
                            cut(&other.to_string(), 40)
                        )));
                    }
                }
            }
            if exact {
                // The envelope (cursors, totals) sees such numbers as their text.
                unmark_all(&mut doc);
            }
            out.doc = Some(doc);
        }
    }
    Ok(out)
}

/// Marks a number kept as its literal text in a record: `"\u{10FFFE}n:123…"`. U+10FFFE
/// is a Unicode noncharacter, not meant to appear in interchanged text.
const EXACT_MARK: &str = "\u{10FFFE}n:";

/// The literal of a number kept as text, if `s` is one.
fn marked(s: &str) -> Option<&str> {
    s.strip_prefix(EXACT_MARK)
}

/// Parses a JSON document. Numbers that `serde_json` (without `arbitrary_precision`)
/// would round, an integer beyond `i64`/`u64` or a decimal with more digits than
/// `float64` keeps, are kept as their literal text (marked strings, see [`keep_exact`]).
/// The flag says whether any such number is in the document.
fn parse(body: &[u8]) -> Result<(Value, bool), serde_json::Error> {
    match keep_exact(body) {
        None => Ok((serde_json::from_slice(body)?, false)),
        Some(rewritten) => {
            let mut doc: Value = serde_json::from_slice(&rewritten)?;
            let mut exact = false;
            settle(&mut doc, &mut exact);
            Ok((doc, exact))
        }
    }
}

/// A copy of `body` where each number token that may not survive `f64` is a marked JSON
/// string of its literal; `None` when there is no such number (the common case: one pass
/// over the bytes, nothing copied). Tokens that are not valid JSON numbers are left for
/// the parser to refuse.
fn keep_exact(body: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i += 1;
                while i < body.len() {
                    match body[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < body.len()
                    && matches!(body[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = &body[start..i];
                if may_round(token) {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
                    o.extend_from_slice(&body[copied..start]);
                    o.push(b'"');
                    o.extend_from_slice(EXACT_MARK.as_bytes());
                    o.extend_from_slice(token);
                    o.push(b'"');
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    out.map(|mut o| {
        o.extend_from_slice(&body[copied..]);
        o
    })
}

/// Whether a number token is valid JSON that `serde_json` might not hold exactly: an
/// integer beyond `i64`/`u64`, or a decimal with more than 15 significant digits or an
/// exponent near `f64`'s limits (those are checked exactly by [`settle`]).
fn may_round(token: &[u8]) -> bool {
    let exponent = token.iter().any(|b| matches!(b, b'e' | b'E'));
    let fraction = token.contains(&b'.');
    // The common cases, without allocating: integers of up to 18 digits, and decimals of
    // up to 15 digits without an exponent, which `f64` and `serde_json` hold exactly.
    if !exponent && !fraction && token.len() <= 18 {
        return false;
    }
    if !exponent && token.iter().filter(|b| b.is_ascii_digit()).count() <= 15 {
        return false;
    }
    let Ok(text) = std::str::from_utf8(token) else {
        return false;
    };
    let Some(parts) = DecimalParts::parse(text) else {
        return false;
    };
    if !exponent && !fraction {
        return text.parse::<i64>().is_err() && text.parse::<u64>().is_err();
    }
    parts.digits.len() > 15 || parts.exp.unsigned_abs() > 280
}

/// Turns marked numbers that `f64` holds exactly back into numbers; `exact` says whether
/// any stayed marked.
fn settle(v: &mut Value, exact: &mut bool) {
    match v {
        Value::String(s) => {
            let Some(lit) = marked(s) else { return };
            let is_int = !lit.contains(['.', 'e', 'E']);
            let float = (!is_int)
                .then(|| lit.parse::<f64>().ok())
                .flatten()
                .filter(|f| f.is_finite())
                .filter(|f| DecimalParts::parse(&format!("{f:e}")) == DecimalParts::parse(lit))
                .and_then(serde_json::Number::from_f64);
            match float {
                Some(n) => *v = Value::Number(n),
                None => *exact = true,
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| settle(i, exact)),
        Value::Object(map) => map.values_mut().for_each(|i| settle(i, exact)),
        _ => {}
    }
}

/// Marked numbers as plain strings of their literal (the envelope around the records).
fn unmark_all(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Some(lit) = marked(s) {
                *s = lit.to_owned();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unmark_all),
        Value::Object(map) => map.values_mut().for_each(unmark_all),
        _ => {}
    }
}

/// A value as JSON text, numbers kept as text written as the numbers they are.
pub(crate) fn json_text(v: &Value) -> String {
    let text = v.to_string();
    if !text.contains('\u{10FFFE}') {
        return text;
    }
    let quoted = format!("\"{EXACT_MARK}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(&quoted) {
        out.push_str(&rest[..at]);
        let after = &rest[at + quoted.len()..];
        // A number's literal has no quote in it: the string ends at the next one.
        let end = after.find('"').unwrap_or(after.len());
        out.push_str(&after[..end]);
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// A decimal number as `digits × 10^exp`, without leading or trailing zeros (zero: no
/// digits, `exp` 0).
#[derive(Debug, PartialEq)]
struct DecimalParts {
    negative: bool,
    digits: String,
    exp: i64,
}

impl DecimalParts {
    /// The parts of a JSON number literal; `None` when it is not one. An exponent too large
    /// for `i64` saturates (such a number fits no column but text).
    fn parse(text: &str) -> Option<DecimalParts> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
            None => (unsigned, None),
        };
        let (int, frac) = match mantissa.find('.') {
            Some(at) => (&mantissa[..at], Some(&mantissa[at + 1..])),
            None => (mantissa, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || (int.len() > 1 && int.starts_with('0')) {
            return None;
        }
        if frac.is_some_and(|f| !all_digits(f)) {
            return None;
        }
        let mut exp: i64 = match exponent {
            None => 0,
            Some(e) => {
                let (neg, d) = match e.as_bytes().first() {
                    Some(b'-') => (true, &e[1..]),
                    Some(b'+') => (false, &e[1..]),
                    _ => (false, e),
                };
                if !all_digits(d) {
                    return None;
                }
                let v = d.parse::<i64>().unwrap_or(i64::MAX / 2);
                let v = v.min(i64::MAX / 2);
                if neg { -v } else { v }
            }
        };
        let frac = frac.unwrap_or("");
        exp -= frac.len() as i64;
        let mut digits: String = int.chars().chain(frac.chars()).collect();
        let lead = digits.len() - digits.trim_start_matches('0').len();
        digits.drain(..lead);
        while digits.ends_with('0') {
            digits.pop();
            exp += 1;
        }
        if digits.is_empty() {
            exp = 0;
        }
        Some(DecimalParts {
            negative: negative && !digits.is_empty(),
            digits,
            exp,
        })
    }

    /// Digits before the point and after it, as a `decimal128` needs them; `None` beyond
    /// 38 digits.
    fn decimal(&self) -> Option<(u8, u8)> {
        let n = self.digits.len() as i64;
        let (int, scale) = if self.exp >= 0 {
            (n.checked_add(self.exp)?, 0)
        } else {
            ((n + self.exp).max(0), -self.exp)
        };
        (int + scale <= 38).then_some((int as u8, scale as u8))
    }

    /// Plain decimal text (`-0.0012`, `120`), for a decimal column.
    fn plain(&self) -> String {
        let mut out = String::new();
        if self.negative {
            out.push('-');
        }
        if self.digits.is_empty() {
            out.push('0');
        } else if self.exp >= 0 {
            out.push_str(&self.digits);
            out.extend(std::iter::repeat_n('0', self.exp as usize));
        } else {
            let scale = (-self.exp) as usize;
            if self.digits.len() > scale {
                let (i, f) = self.digits.split_at(self.digits.len() - scale);
                out.push_str(i);
                out.push('.');
                out.push_str(f);
            } else {
                out.push_str("0.");
                out.extend(std::iter::repeat_n('0', scale - self.digits.len()));
                out.push_str(&self.digits);
            }
        }
        out
    }
}

fn top_keys(doc: &Value) -> String {
    match doc {
        Value::Object(o) => o.keys().take(8).cloned().collect::<Vec<_>>().join(", "),
        _ => "none: not an object".into(),
    }
}

/// The shape of JSON values, as inference sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    Null,
    Bool,
    Int,
    /// An integer above `i64::MAX` that `u64` holds.
    UInt,
    Float,
    /// Exact decimal numbers `float64` would round: digits before and after the point
    /// (38 at most together).
    Dec(u8, u8),
    Str,
    /// Plain text made of scalars of several kinds, and numbers no other type holds.
    Text,
    /// JSON text (tagged `arrow.json`): a declared `json` column, or a column whose values
    /// have no common shape (an object here, a string there; lists of mixed items).
    Json,
    /// A declared timestamp.
    Timestamp,
    /// A declared date.
    Date,
    List(Box<Shape>),
    Obj(Vec<(String, Shape)>),
}

impl Shape {
    fn of(v: &Value) -> Shape {
        match v {
            Value::Null => Shape::Null,
            Value::Bool(_) => Shape::Bool,
            Value::Number(n) if n.is_i64() => Shape::Int,
            Value::Number(n) if n.is_u64() => Shape::UInt,
            Value::Number(_) => Shape::Float,
            Value::String(s) => match marked(s) {
                Some(lit) => DecimalParts::parse(lit)
                    .and_then(|p| p.decimal())
                    .map_or(Shape::Text, |(i, s)| Shape::Dec(i, s)),
                None => Shape::Str,
            },
            Value::Array(items) => {
                let mut item = Shape::Null;
                for i in items {
                    item = merge(item, Shape::of(i), false);
                }
                Shape::List(Box::new(item))
            }
            Value::Object(map) => {
                Shape::Obj(map.iter().map(|(k, v)| (k.clone(), Shape::of(v))).collect())
            }
        }
    }

    fn name(&self) -> String {
        match self {
            Shape::Null => "null".into(),
            Shape::Bool => "boolean".into(),
            Shape::Int => "int64".into(),
            Shape::UInt => "uint64".into(),
            Shape::Float => "float64".into(),
            Shape::Dec(i, s) => format!("decimal({},{s})", (i + s).max(1)),
            Shape::Str => "string".into(),
            Shape::Text => "text".into(),
            Shape::Json => "json".into(),
            Shape::Timestamp => "timestamp".into(),
            Shape::Date => "date".into(),
            Shape::List(i) => format!("list<{}>", i.name()),
            Shape::Obj(_) => "object".into(),
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Shape::Null | Shape::Str | Shape::Text | Shape::Json => DataType::Utf8,
            Shape::Bool => DataType::Boolean,
            Shape::Int => DataType::Int64,
            Shape::UInt => DataType::UInt64,
            Shape::Float => DataType::Float64,
            Shape::Dec(i, s) => DataType::Decimal128((i + s).max(1), *s as i8),
            Shape::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Shape::Date => DataType::Date32,
            Shape::List(item) => DataType::List(Arc::new(arrow_field("item", item, true))),
            Shape::Obj(fields) => DataType::Struct(fields_of(fields, &[])),
        }
    }

    fn has_json(&self) -> bool {
        match self {
            Shape::Json => true,
            Shape::List(item) => item.has_json(),
            Shape::Obj(fields) => fields.iter().any(|(_, s)| s.has_json()),
            _ => false,
        }
    }

    /// A column with no common shape somewhere inside becomes JSON text as a whole, so
    /// that each value is kept as the JSON it was.
    fn lifted(self) -> Shape {
        if self.has_json() { Shape::Json } else { self }
    }
}

/// The Arrow field of a column; JSON text carries the `arrow.json` extension name that
/// SQL sinks read as `jsonb`/`JSON`.
fn arrow_field(name: &str, shape: &Shape, nullable: bool) -> Field {
    let f = Field::new(name, shape.data_type(), nullable);
    if *shape == Shape::Json {
        f.with_metadata(HashMap::from([(
            "ARROW:extension:name".to_owned(),
            "arrow.json".to_owned(),
        )]))
    } else {
        f
    }
}

fn fields_of(fields: &[(String, Shape)], required: &[String]) -> Fields {
    fields
        .iter()
        .map(|(n, s)| arrow_field(n, s, !required.contains(n)))
        .collect()
}

/// A decimal shape of `int` and `scale` digits, or text beyond 38.
fn dec(int: u8, scale: u8) -> Shape {
    if u16::from(int) + u16::from(scale) <= 38 {
        Shape::Dec(int, scale)
    } else {
        Shape::Text
    }
}

/// Two shapes as one: numbers widen (`int64` → `float64`; → `uint64`, `decimal128`; text
/// when nothing holds both exactly), other scalar conflicts become text, a conflict with
/// an object or a list becomes JSON text.
fn merge(a: Shape, b: Shape, _widen: bool) -> Shape {
    use Shape::*;
    match (a, b) {
        (Null, x) | (x, Null) => x,
        (Json, _) | (_, Json) => Json,
        (Obj(_) | List(_), Text) | (Text, Obj(_) | List(_)) => Json,
        (Text, _) | (_, Text) => Text,
        (Int, Float) | (Float, Int) => Float,
        (Int, UInt) | (UInt, Int) => Dec(20, 0),
        (Int, Dec(i, s)) | (Dec(i, s), Int) => dec(i.max(19), s),
        (UInt, Dec(i, s)) | (Dec(i, s), UInt) => dec(i.max(20), s),
        (Dec(i, s), Dec(j, t)) => dec(i.max(j), s.max(t)),
        (List(a), List(b)) => List(Box::new(merge(*a, *b, _widen))),
        (Obj(mut a), Obj(b)) => {
            for (k, v) in b {
                match a.iter_mut().find(|(n, _)| *n == k) {
                    Some((_, cur)) => *cur = merge(std::mem::replace(cur, Null), v, _widen),
                    None => a.push((k, v)),
                }
            }
            Obj(a)
        }
        (x, y) if x == y => x,
        (Timestamp, Str) | (Str, Timestamp) | (Timestamp, Int) | (Int, Timestamp) => Timestamp,
        (Date, Str) | (Str, Date) => Date,
        (Obj(_) | List(_), _) | (_, Obj(_) | List(_)) => Json,
        _ => Text,
    }
}

/// The shape of a page: every record's fields merged, in order of first appearance.
fn page_shape(records: &[Value]) -> Vec<(String, Shape)> {
    let mut fields: Vec<(String, Shape)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in records {
        let Value::Object(map) = r else { continue };
        for (k, v) in map {
            let s = Shape::of(v);
            match index.get(k) {
                Some(&i) => {
                    let cur = std::mem::replace(&mut fields[i].1, Shape::Null);
                    fields[i].1 = merge(cur, s, false);
                }
                None => {
                    index.insert(k.clone(), fields.len());
                    fields.push((k.clone(), s));
                }
            }
        }
    }
    fields.into_iter().map(|(k, s)| (k, s.lifted())).collect()
}

/// The decimal that holds every value of column `key` exactly (numbers of any kind, nulls),
/// or `None` when a value is not a number or more than 38 digits are needed. `float64`
/// values count with their shortest exact digits (`0.5`, not `0.5000000000000000000`).
fn decimal_footprint(records: &[Value], key: &str) -> Option<Shape> {
    let (mut int, mut scale) = (0u8, 0u8);
    for r in records {
        let parts = match r.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if n.is_f64() => DecimalParts::parse(&format!("{f:e}")),
                _ => DecimalParts::parse(&n.to_string()),
            },
            Some(Value::String(s)) => DecimalParts::parse(marked(s)?),
            Some(_) => return None,
        };
        let (i, s) = parts?.decimal()?;
        int = int.max(i);
        scale = scale.max(s);
    }
    match dec(int, scale) {
        Shape::Dec(i, s) => Some(Shape::Dec(i, s)),
        _ => None,
    }
}

/// A difference between the schema and a page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Added(String, String),
    Removed(String),
    Retyped(String, String, String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(p, t) => write!(f, "added `{p}` ({t})"),
            Change::Removed(p) => write!(f, "removed `{p}`"),
            Change::Retyped(p, a, b) => write!(f, "retyped `{p}` ({a} → {b})"),
        }
    }
}

/// Whether a value of shape `page` fits a column of shape `schema` as it is.
fn fits(schema: &Shape, page: &Shape) -> bool {
    use Shape::*;
    match (schema, page) {
        (_, Null) | (Text | Json, _) => true,
        (Null | Str, Bool | Int | UInt | Float | Dec(..) | Str) => true,
        (Float, Int | Float) => true,
        (Dec(i, _), Int) => *i >= 19,
        (Dec(i, _), UInt) => *i >= 20,
        (Dec(i, s), Dec(j, t)) => j <= i && t <= s,
        (Timestamp, Str | Int) | (Date, Str) => true,
        (a, b) => a == b,
    }
}

fn diff(path: &str, schema: &Shape, page: &Shape, out: &mut Vec<Change>) {
    match (schema, page) {
        (Shape::Obj(s), Shape::Obj(p)) => diff_fields(path, s, p, true, &[], out),
        (Shape::List(s), Shape::List(p)) => diff(&format!("{path}[]"), s, p, out),
        (s, p) if fits(s, p) => {}
        (s, p) => out.push(Change::Retyped(path.to_owned(), s.name(), p.name())),
    }
}

fn diff_fields(
    prefix: &str,
    schema: &[(String, Shape)],
    page: &[(String, Shape)],
    report_added: bool,
    required: &[String],
    out: &mut Vec<Change>,
) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    for (k, p) in page {
        match schema.iter().find(|(n, _)| n == k) {
            Some((_, s)) => diff(&join(k), s, p, out),
            None if report_added => out.push(Change::Added(join(k), p.name())),
            None => {}
        }
    }
    for (k, _) in schema {
        let missing = !page.iter().any(|(n, _)| n == k);
        if missing && (report_added || required.contains(k)) {
            out.push(Change::Removed(join(k)));
        }
    }
}

/// What happened to the schema on a page.
pub(crate) struct Drift {
    pub(crate) changes: Vec<Change>,
}

impl Drift {
    pub(crate) fn summary(&self) -> String {
        self.changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Records to Arrow, keeping the schema across pages.
pub(crate) struct Converter {
    nested: NestedMode,
    declared: bool,
    /// Non-nullable declared columns (their absence is drift).
    required: Vec<String>,
    fields: Option<Vec<(String, Shape)>>,
    schema: Option<SchemaRef>,
    /// The fast path's columns for the current schema, when it can build them all.
    fast: Option<fast::FastColumns>,
}

/// How a converted page went.
pub(crate) struct Converted {
    pub(crate) batch: RecordBatch,
    /// Records that did not fit their columns (left out of `batch`).
    pub(crate) bad: Vec<BadRecord>,
}

impl Converter {
    pub(crate) fn new(schema: &SchemaConfig, nested: NestedMode) -> Self {
        let mut c = Converter {
            nested,
            declared: false,
            required: Vec::new(),
            fields: None,
            schema: None,
            fast: None,
        };
        if let SchemaConfig::Columns(cols) = schema {
            c.declared = true;
            c.required = cols
                .iter()
                .filter(|c| !c.nullable)
                .map(|c| c.name.clone())
                .collect();
            let fields = cols
                .iter()
                .map(|col| {
                    let s = match col.data_type {
                        ColumnType::Boolean => Shape::Bool,
                        ColumnType::Int64 => Shape::Int,
                        ColumnType::Float64 => Shape::Float,
                        ColumnType::String => Shape::Str,
                        ColumnType::Timestamp => Shape::Timestamp,
                        ColumnType::Date => Shape::Date,
                        ColumnType::Json => Shape::Json,
                    };
                    (col.name.clone(), s)
                })
                .collect();
            c.set_fields(fields);
        }
        c
    }

    fn set_fields(&mut self, fields: Vec<(String, Shape)>) {
        let schema: SchemaRef = Arc::new(Schema::new(fields_of(&fields, &self.required)));
        self.fast = fast::FastColumns::new(&fields, &schema, self.declared);
        self.schema = Some(schema);
        self.fields = Some(fields);
    }

    /// Whether pages may take the fast path: the schema is known and the fast path builds
    /// every one of its columns (asked before a page is located, so that a schema with
    /// nested columns costs no wasted pass).
    pub(crate) fn fast_ready(&self) -> bool {
        self.fast.is_some()
    }

    /// The page through the fast path (see [`fast`]), or `None` when it takes the general
    /// one: no schema yet, a column the fast path does not build, or a record that does
    /// not fit the schema as it stands.
    pub(crate) fn convert_fast(
        &self,
        page: &RawPage<'_>,
        body_bytes: usize,
        watermark: Option<&str>,
    ) -> Option<FastPage> {
        self.fast.as_ref()?.convert(page, body_bytes, watermark)
    }

    fn flatten_nested(&self, fields: Vec<(String, Shape)>) -> Vec<(String, Shape)> {
        match self.nested {
            NestedMode::Struct => fields,
            NestedMode::JsonText => fields
                .into_iter()
                .map(|(k, s)| match s {
                    Shape::Obj(_) | Shape::List(_) => (k, Shape::Text),
                    s => (k, s),
                })
                .collect(),
        }
    }

    /// The shape of a page. A column of numbers that no single number type holds exactly
    /// (`float64` values beside long decimals) is a decimal when one holds them all; so is a
    /// column of plain numbers where the schema already has a decimal.
    fn page_shape(&self, records: &[Value]) -> Vec<(String, Shape)> {
        let mut page = page_shape(records);
        for (k, s) in &mut page {
            let in_schema = self
                .fields
                .as_ref()
                .and_then(|f| f.iter().find(|(n, _)| n == k))
                .map(|(_, s)| s);
            if self.declared && in_schema == Some(&Shape::Float) {
                // A declared `float64` column takes any number as a float, as declared.
                let numbers = records.iter().all(|r| match r.get(k.as_str()) {
                    None | Some(Value::Null | Value::Number(_)) => true,
                    Some(Value::String(s)) => marked(s).is_some(),
                    Some(_) => false,
                });
                if numbers {
                    *s = Shape::Float;
                }
                continue;
            }
            let to_unsigned = match s {
                // Ids beyond `i64` beside small ones (merged as a decimal): `uint64` when
                // none is negative.
                Shape::Dec(_, 0) => true,
                // Small ids in a `uint64` column.
                Shape::Int => in_schema == Some(&Shape::UInt),
                _ => false,
            };
            if to_unsigned {
                let unsigned = records.iter().all(|r| {
                    r.get(k.as_str())
                        .is_none_or(|v| v.is_null() || v.as_u64().is_some())
                });
                if unsigned {
                    *s = Shape::UInt;
                }
                continue;
            }
            let refine = match s {
                Shape::Text => !self.declared,
                Shape::Int | Shape::UInt | Shape::Float => {
                    matches!(in_schema, Some(Shape::Dec(..)))
                }
                _ => false,
            };
            if refine {
                if let Some(d) = decimal_footprint(records, k) {
                    *s = d;
                }
            }
        }
        self.flatten_nested(page)
    }

    /// How the page differs from the schema (nothing on the first page of an inferred
    /// schema, which becomes the schema).
    pub(crate) fn check(&mut self, records: &[Value]) -> Option<Drift> {
        if records.is_empty() {
            return None;
        }
        let page = self.page_shape(records);
        let Some(current) = &self.fields else {
            self.set_fields(page);
            return None;
        };
        let mut changes = Vec::new();
        diff_fields(
            "",
            current,
            &page,
            !self.declared,
            &self.required,
            &mut changes,
        );
        if changes.is_empty() {
            None
        } else {
            Some(Drift { changes })
        }
    }

    /// Takes the page's shape into the schema: new fields are added, removed ones kept
    /// (null from now on), retyped ones widened (int → float) or turned to text.
    pub(crate) fn evolve(&mut self, records: &[Value]) {
        let page = self.page_shape(records);
        let current = self.fields.clone().unwrap_or_default();
        let mut merged: Vec<(String, Shape)> = Vec::with_capacity(current.len());
        for (k, s) in current {
            let next = match page.iter().find(|(n, _)| *n == k) {
                Some((_, p)) if fits(&s, p) => s,
                Some((_, p)) if self.declared => {
                    let _ = p;
                    Shape::Text
                }
                Some((_, p)) => evolve_shape(s, p.clone()).lifted(),
                None => s,
            };
            merged.push((k, next));
        }
        if !self.declared {
            for (k, p) in page {
                if !merged.iter().any(|(n, _)| *n == k) {
                    merged.push((k, p));
                }
            }
        }
        self.set_fields(merged);
    }

    /// The page as a record batch in the current schema. Records whose values do not
    /// fit come back in `bad`.
    /// `exact`: the page holds numbers kept as text ([`Extracted::exact`]).
    pub(crate) fn convert(
        &self,
        mut records: Vec<Value>,
        exact: bool,
    ) -> Result<Converted, String> {
        let (Some(schema), Some(fields)) = (&self.schema, &self.fields) else {
            return Err("no schema yet".into());
        };
        prepare(fields, &mut records, exact);
        match decode(schema, &records) {
            Ok(batch) => Ok(Converted {
                batch,
                bad: Vec::new(),
            }),
            Err(_) => {
                // Find the records that do not fit, one by one; decode the rest.
                let mut good = Vec::with_capacity(records.len());
                let mut bad = Vec::new();
                for (index, r) in records.into_iter().enumerate() {
                    match decode(schema, std::slice::from_ref(&r)) {
                        Ok(_) => good.push(r),
                        Err(e) => bad.push(BadRecord {
                            index,
                            reason: e,
                            snippet: snippet(&r),
                        }),
                    }
                }
                let batch = decode(schema, &good)?;
                Ok(Converted { batch, bad })
            }
        }
    }
}

fn evolve_shape(schema: Shape, page: Shape) -> Shape {
    use Shape::*;
    match (schema, page) {
        (Int, Float) => Float,
        (Obj(s), Obj(p)) => {
            let mut out = s;
            for (k, v) in p {
                match out.iter_mut().find(|(n, _)| *n == k) {
                    Some((_, cur)) => {
                        if !fits(cur, &v) {
                            *cur = evolve_shape(std::mem::replace(cur, Null), v);
                        }
                    }
                    None => out.push((k, v)),
                }
            }
            Obj(out)
        }
        (List(s), List(p)) => {
            if fits(&s, &p) {
                List(s)
            } else {
                List(Box::new(evolve_shape(*s, *p)))
            }
        }
        (Null, p) => p,
        (s, p) => merge(s, p, true),
    }
}

/// Rewrites values the decoder cannot take as they are: JSON columns get each value's
/// JSON text (a string as a JSON string); objects and lists in text columns become JSON
/// text; numbers kept as text become plain decimals in decimal columns and their literal
/// elsewhere (with `exact`, the page has some: nested values are visited too); Unix
/// seconds in timestamp columns become microseconds.
fn prepare(fields: &[(String, Shape)], records: &mut [Value], exact: bool) {
    let cols: Vec<(&str, &Shape)> = fields
        .iter()
        .filter(|(_, s)| {
            exact
                || matches!(
                    s,
                    Shape::Text | Shape::Json | Shape::Null | Shape::Str | Shape::Timestamp
                )
        })
        .map(|(k, s)| (k.as_str(), s))
        .collect();
    if cols.is_empty() {
        return;
    }
    for r in records {
        let Value::Object(map) = r else { continue };
        for (k, s) in &cols {
            if let Some(v) = map.get_mut(*k) {
                prepare_value(s, v, exact);
            }
        }
    }
}

fn prepare_value(shape: &Shape, v: &mut Value, exact: bool) {
    match (shape, &mut *v) {
        (_, Value::Null) => {}
        (Shape::Json, _) => *v = Value::String(json_text(v)),
        (Shape::Timestamp, Value::Number(n)) => {
            if let Some(secs) = n.as_f64() {
                *v = Value::from((secs * 1_000_000.0) as i64);
            }
        }
        (Shape::Text | Shape::Null | Shape::Str, Value::Object(_) | Value::Array(_)) => {
            *v = Value::String(json_text(v));
        }
        (Shape::Float, Value::String(s)) => {
            let Some(lit) = marked(s) else { return };
            // Beyond `f64` (`1e400`, which would read as infinity) the record fails, saying so.
            *v = match lit
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Some(n) => Value::Number(n),
                None => Value::String(format!("{lit} (beyond float64)")),
            };
        }
        (_, Value::String(s)) => {
            let Some(lit) = marked(s) else { return };
            let parts = DecimalParts::parse(lit);
            *s = match (shape, parts) {
                (Shape::Dec(..), Some(p)) if p.decimal().is_some() => p.plain(),
                _ => lit.to_owned(),
            };
        }
        (Shape::Obj(fields), Value::Object(map)) if exact => {
            for (k, s) in fields {
                if let Some(v) = map.get_mut(k) {
                    prepare_value(s, v, exact);
                }
            }
        }
        (Shape::List(item), Value::Array(items)) if exact => {
            for v in items {
                prepare_value(item, v, exact);
            }
        }
        _ => {}
    }
}

fn decode(schema: &SchemaRef, records: &[Value]) -> Result<RecordBatch, String> {
    if records.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(records.len())
        .with_coerce_primitive(true)
        .with_strict_mode(false)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    decoder.serialize(records).map_err(|e| e.to_string())?;
    match decoder.flush().map_err(|e| e.to_string())? {
        Some(b) => Ok(b),
        None => Ok(RecordBatch::new_empty(schema.clone())),
    }
}

/// The value at a dotted path of a record (`updated_at`, `meta.changed`).
pub(crate) fn field<'a>(record: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = record;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::config::ColumnConfig;
    use arrow::array::{Array, AsArray};
    use serde_json::json;

    fn rec(id: i64, amount: Value) -> Value {
        json!({"id": id, "amount": amount, "customer": {"name": "A", "tags": ["x"]}, "note": null})
    }

    #[test]
    fn extracts_by_path_root_and_ndjson_and_flags_bad_records() {
        let at = RecordsAt::new(&RecordsConfig::Path("$.data.items".into())).unwrap();
        let body = br#"{"data":{"items":[{"id":1},"junk",{"id":2}]},"meta":{"next":"c"}}"#;
        let e = extract(body, &at).unwrap();
        assert_eq!(e.records.len(), 2);
        assert_eq!(e.bad[0].index, 1);
        assert_eq!(e.doc.unwrap()["meta"]["next"], "c");
        let e = extract(b"{\"id\":1}\n\n{bad\n{\"id\":3}\n", &RecordsAt::Ndjson).unwrap();
        assert_eq!((e.records.len(), e.bad.len()), (2, 1));
        assert!(matches!(
            extract(b"{\"a\":1}", &RecordsAt::Root),
            Err(ExtractError::Shape(_))
        ));
        assert!(matches!(
            extract(b"[{\"a\":", &RecordsAt::Root),
            Err(ExtractError::Malformed(_))
        ));
        assert!(matches!(
            extract(b"{\"data\":{}}", &at),
            Err(ExtractError::Shape(_))
        ));
    }

    #[test]
    fn a_page_nested_100000_deep_is_a_malformed_page_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let path = RecordsAt::new(&RecordsConfig::Path("$.data".into())).unwrap();
        let wrapped = format!("{{\"data\":{deep}}}");
        assert!(matches!(
            extract(deep.as_bytes(), &RecordsAt::Root),
            Err(ExtractError::Malformed(m)) if m.contains("recursion limit")
        ));
        assert!(matches!(
            extract(wrapped.as_bytes(), &path),
            Err(ExtractError::Malformed(_))
        ));
        let e = extract(
            format!("{{\"id\":{deep}}}\n").as_bytes(),
            &RecordsAt::Ndjson,
        )
        .unwrap();
        assert_eq!((e.records.len(), e.bad.len()), (0, 1));
        // Just under serde_json's limit: inference and conversion walk it without trouble.
        let ok = format!("{{\"id\":1,\"x\":{}1{}}}", "[".repeat(120), "]".repeat(120));
        for nested in [NestedMode::Struct, NestedMode::JsonText] {
            let e = extract(format!("[{ok}]").as_bytes(), &RecordsAt::Root).unwrap();
            let mut c = Converter::new(&SchemaConfig::Infer, nested);
            c.check(&e.records);
            let _ = c.convert(e.records, e.exact);
        }
    }

    #[test]
    fn infers_nested_columns_and_detects_drift() {
        let mut c = Converter::new(&SchemaConfig::Infer, NestedMode::Struct);
        let page1 = vec![rec(1, json!(1.5)), rec(2, json!(2.0))];
        assert!(c.check(&page1).is_none());
        let out = c.convert(page1, false).unwrap();
        assert_eq!(out.batch.num_rows(), 2);
        let schema = out.batch.schema();
        assert!(matches!(
            schema.field_with_name("customer").unwrap().data_type(),
            DataType::Struct(_)
        ));
        assert_eq!(
            schema.field_with_name("note").unwrap().data_type(),
            &DataType::Utf8
        );

        let same = vec![
            rec(3, json!(3)),
            json!({"id": 4, "amount": 1.0, "customer": {"name": "B", "tags": []}, "note": "hi"}),
        ];
        assert!(
            c.check(&same).is_none(),
            "int into float and a first note fit"
        );

        let drifted = vec![
            json!({"id": 5, "amount": "12.50", "customer": {"name": "C", "tags": []}, "note": null, "priority": 2}),
        ];
        let d = c.check(&drifted).unwrap();
        assert_eq!(
            d.summary(),
            "retyped `amount` (float64 → string), added `priority` (int64)"
        );
        c.evolve(&drifted);
        let out = c.convert(drifted, false).unwrap();
        assert_eq!(
            out.batch
                .schema()
                .field_with_name("amount")
                .unwrap()
                .data_type(),
            &DataType::Utf8
        );
        assert_eq!(
            out.batch
                .column_by_name("amount")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "12.50"
        );

        let renamed = vec![
            json!({"id": 6, "amount": 1.0, "customer": {"name": "D", "tags": []}, "note": null, "priority": 1, "state": "x"}),
        ];
        let d = c.check(&renamed).unwrap();
        assert!(d.summary().contains("added `state`"));
        let gone = vec![json!({"id": 6, "amount": 1.0, "note": null, "priority": 1})];
        assert!(
            c.check(&gone)
                .unwrap()
                .summary()
                .contains("removed `customer`")
        );
    }

    #[test]
    fn declared_columns_json_text_and_bad_values() {
        let cols = vec![
            ColumnConfig {
                name: "id".into(),
                data_type: ColumnType::Int64,
                nullable: false,
            },
            ColumnConfig {
                name: "at".into(),
                data_type: ColumnType::Timestamp,
                nullable: true,
            },
            ColumnConfig {
                name: "customer".into(),
                data_type: ColumnType::Json,
                nullable: true,
            },
        ];
        let mut c = Converter::new(&SchemaConfig::Columns(cols), NestedMode::Struct);
        let page = vec![
            json!({"id": 1, "at": "2024-01-01T00:00:00Z", "customer": {"a": 1}, "extra": true}),
            json!({"id": 2, "at": 1704067200, "customer": [1]}),
            json!({"id": "x", "at": null}),
        ];
        assert!(c.check(&page).unwrap().summary().contains("retyped `id`"));
        let out = c.convert(page, false).unwrap();
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.bad.len(), 1);
        assert_eq!(out.bad[0].index, 2);
        let ts = out.batch.column_by_name("at").unwrap();
        assert_eq!(
            ts.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(1),
            1_704_067_200_000_000
        );
        assert_eq!(
            out.batch
                .column_by_name("customer")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "{\"a\":1}"
        );
        assert!(!out.batch.column_by_name("id").unwrap().is_null(0));

        let mut t = Converter::new(&SchemaConfig::Infer, NestedMode::JsonText);
        let page = vec![rec(1, json!(1.0))];
        t.check(&page);
        let out = t.convert(page, false).unwrap();
        assert_eq!(
            out.batch
                .column_by_name("customer")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            r#"{"name":"A","tags":["x"]}"#
        );
    }
}

#[cfg(test)]
mod wide_tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Decimal128Type, UInt64Type};

    fn page(body: &str, c: &mut Converter) -> Converted {
        let e = extract(body.as_bytes(), &RecordsAt::Root).expect("a page");
        if c.check(&e.records).is_some() {
            c.evolve(&e.records);
        }
        c.convert(e.records, e.exact).expect("converted")
    }

    fn text(b: &RecordBatch, col: &str, row: usize) -> String {
        b.column_by_name(col)
            .unwrap()
            .as_string::<i32>()
            .value(row)
            .to_owned()
    }

    fn is_json(b: &RecordBatch, col: &str) -> bool {
        b.schema()
            .field_with_name(col)
            .unwrap()
            .metadata()
            .get("ARROW:extension:name")
            .is_some_and(|n| n == "arrow.json")
    }

    #[test]
    fn wide_numbers_get_wide_types_and_keep_their_digits() {
        let mut c = Converter::new(&SchemaConfig::Infer, NestedMode::Struct);
        let out = page(
            r#"[{"id": 18446744073709551615, "amount": 1234567890123456789012.345, "big": 123456789012345678901234567890123456789012, "tiny": 1e-400, "f": 0.1, "n": {"v": 98765432109876543210.5}},
                {"id": 12345678901234567890, "amount": -0.5, "big": 1, "tiny": 2, "f": 0.30000000000000004, "n": {"v": 1}}]"#,
            &mut c,
        );
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        let b = out.batch;
        let id = b.column_by_name("id").unwrap().as_primitive::<UInt64Type>();
        assert_eq!(id.value(0), u64::MAX);
        assert_eq!(id.value(1), 12_345_678_901_234_567_890);
        let amount = b.column_by_name("amount").unwrap();
        assert_eq!(amount.data_type(), &DataType::Decimal128(25, 3));
        let amount = amount.as_primitive::<Decimal128Type>();
        assert_eq!(amount.value(0), 1_234_567_890_123_456_789_012_345);
        assert_eq!(amount.value(1), -500);
        assert_eq!(
            text(&b, "big", 0),
            "123456789012345678901234567890123456789012"
        );
        assert_eq!(text(&b, "big", 1), "1");
        assert_eq!(text(&b, "tiny", 0), "1e-400");
        let f = b.column_by_name("f").unwrap();
        assert_eq!(
            f.data_type(),
            &DataType::Float64,
            "round-tripping floats stay floats"
        );
        let DataType::Struct(fields) = b.schema().field_with_name("n").unwrap().data_type().clone()
        else {
            panic!("n is a struct")
        };
        assert_eq!(fields[0].data_type(), &DataType::Decimal128(21, 1));
    }

    #[test]
    fn mixed_shapes_become_json_text() {
        let mut c = Converter::new(&SchemaConfig::Infer, NestedMode::Struct);
        let out = page(
            r#"[{"tags": [1, 2, {"d": "x"}], "meta": {"a": 1}, "s": 1, "deep": {"x": [1]}},
                {"tags": [], "meta": "plain", "s": "two", "deep": {"x": {"y": 1}}}]"#,
            &mut c,
        );
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        let b = out.batch;
        assert!(is_json(&b, "tags") && is_json(&b, "meta") && is_json(&b, "deep"));
        assert!(!is_json(&b, "s"), "scalars of two kinds are plain text");
        assert_eq!(text(&b, "tags", 0), r#"[1,2,{"d":"x"}]"#);
        assert_eq!(text(&b, "meta", 0), r#"{"a":1}"#);
        assert_eq!(text(&b, "meta", 1), r#""plain""#);
        assert_eq!(text(&b, "deep", 1), r#"{"x":{"y":1}}"#);
        assert_eq!(text(&b, "s", 0), "1");

        // Across pages: a struct column meets a string and becomes JSON text.
        let mut c = Converter::new(&SchemaConfig::Infer, NestedMode::Struct);
        page(r#"[{"meta": {"a": 1}}]"#, &mut c);
        let e = extract(br#"[{"meta": "x"}]"#, &RecordsAt::Root).unwrap();
        let drift = c.check(&e.records).expect("drift");
        assert_eq!(drift.summary(), "retyped `meta` (object → string)");
        c.evolve(&e.records);
        let b = c.convert(e.records, e.exact).unwrap().batch;
        assert!(is_json(&b, "meta"));
        assert_eq!(text(&b, "meta", 0), r#""x""#);
    }

    #[test]
    fn numbers_widen_across_pages() {
        let mut c = Converter::new(&SchemaConfig::Infer, NestedMode::Struct);
        page(r#"[{"id": 1, "amount": 2}]"#, &mut c);
        let e = extract(
            br#"[{"id": 12345678901234567890, "amount": 1.0000000000000000000001}]"#,
            &RecordsAt::Root,
        )
        .unwrap();
        assert_eq!(
            c.check(&e.records).unwrap().summary(),
            "retyped `amount` (int64 → decimal(23,22)), retyped `id` (int64 → uint64)"
        );
        c.evolve(&e.records);
        let b = c.convert(e.records, e.exact).unwrap().batch;
        assert_eq!(
            b.schema().field_with_name("id").unwrap().data_type(),
            &DataType::Decimal128(20, 0)
        );
        assert_eq!(
            b.schema().field_with_name("amount").unwrap().data_type(),
            &DataType::Utf8
        );
    }

    #[test]
    fn literals_and_marks() {
        let p = DecimalParts::parse("-001.2300e2");
        assert!(p.is_none(), "a leading zero is not JSON");
        let p = DecimalParts::parse("-1.2300e2").unwrap();
        assert_eq!((p.digits.as_str(), p.exp, p.negative), ("123", 0, true));
        assert_eq!(DecimalParts::parse("0.00120").unwrap().plain(), "0.0012");
        assert_eq!(DecimalParts::parse("12e3").unwrap().plain(), "12000");
        assert_eq!(
            DecimalParts::parse("1e99999999999999999999")
                .unwrap()
                .decimal(),
            None
        );
        assert!(keep_exact(br#"{"a": "12345678901234567890123", "b": 1.5}"#).is_none());
        assert!(keep_exact(br#"[-9223372036854775808, 18446744073709551615]"#).is_none());
        let body = br#"{"a\"": 123456789012345678901234, "b": [0.1234567890123456789]}"#;
        let (v, exact) = parse(body).unwrap();
        assert!(exact);
        assert_eq!(
            json_text(&v),
            r#"{"a\"":123456789012345678901234,"b":[0.1234567890123456789]}"#
        );
        // Sixteen digits that f64 keeps come back as numbers.
        let (v, exact) = parse(b"[0.1000000000000001]").unwrap();
        assert!(!exact);
        assert!(v[0].is_f64());
        assert!(
            parse(b"[0123456789012345678901]").is_err(),
            "invalid JSON stays invalid"
        );
    }

    #[test]
    fn declared_float_columns_take_long_numbers_as_declared() {
        let cols = vec![crate::http::config::ColumnConfig {
            name: "x".into(),
            data_type: ColumnType::Float64,
            nullable: true,
        }];
        let mut c = Converter::new(&SchemaConfig::Columns(cols), NestedMode::Struct);
        let e = extract(
            br#"[{"x": 0.12345678901234567890123}, {"x": 1e400}, {"x": 2}]"#,
            &RecordsAt::Root,
        )
        .unwrap();
        assert!(
            c.check(&e.records).is_none(),
            "no drift: float64 was declared"
        );
        let out = c.convert(e.records, e.exact).unwrap();
        let x = out.batch.column_by_name("x").unwrap();
        let x = x.as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(x.value(0), 0.123_456_789_012_345_68);
        assert_eq!(x.value(1), 2.0, "the record after the bad one");
        assert_eq!(out.bad.len(), 1, "1e400 is beyond float64: a bad record");
        assert!(
            out.bad[0].reason.contains("1e400 (beyond float64)"),
            "{:?}",
            out.bad
        );
    }

    #[test]
    fn declared_json_columns_are_tagged_json_text() {
        let cols = vec![crate::http::config::ColumnConfig {
            name: "doc".into(),
            data_type: ColumnType::Json,
            nullable: true,
        }];
        let mut c = Converter::new(&SchemaConfig::Columns(cols), NestedMode::Struct);
        let out = page(
            r#"[{"doc": "a \"b\""}, {"doc": 12345678901234567890123}, {"doc": null}]"#,
            &mut c,
        );
        let b = out.batch;
        assert!(is_json(&b, "doc"));
        assert_eq!(text(&b, "doc", 0), r#""a \"b\"""#);
        assert_eq!(text(&b, "doc", 1), "12345678901234567890123");
        assert!(b.column_by_name("doc").unwrap().is_null(2));
    }
}
