//! Response bodies to records (a JSON path, a root array, NDJSON), and records to Arrow:
//! schema inference, declared schemas, nested columns, schema drift.

use super::config::{ColumnType, NestedMode, RecordsConfig, SchemaConfig};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::Value;
use serde_json_path::JsonPath;
use std::collections::HashMap;
use std::sync::Arc;

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
    let t = v.to_string();
    cut(&t, 200)
}

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
    };
    match at {
        RecordsAt::Ndjson => {
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                let trimmed = line.trim_ascii();
                if trimmed.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Value>(trimmed) {
                    Ok(v) => push_records(&mut out, vec![v]),
                    Err(e) => out.bad.push(BadRecord {
                        index: out.records.len() + out.bad.len(),
                        reason: format!("line {} is not JSON ({e})", i + 1),
                        snippet: cut(&String::from_utf8_lossy(trimmed), 200),
                    }),
                }
            }
        }
        RecordsAt::Root => {
            let doc: Value =
                serde_json::from_slice(body).map_err(|e| ExtractError::Malformed(e.to_string()))?;
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
            let mut doc: Value =
                serde_json::from_slice(body).map_err(|e| ExtractError::Malformed(e.to_string()))?;
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
            out.doc = Some(doc);
        }
    }
    Ok(out)
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
    Float,
    Str,
    /// Text made of anything: JSON text of objects and lists, numbers as text.
    Text,
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
            Value::Number(n) if n.is_f64() => Shape::Float,
            Value::Number(_) => Shape::Int,
            Value::String(_) => Shape::Str,
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
            Shape::Float => "float64".into(),
            Shape::Str => "string".into(),
            Shape::Text => "text".into(),
            Shape::Timestamp => "timestamp".into(),
            Shape::Date => "date".into(),
            Shape::List(i) => format!("list<{}>", i.name()),
            Shape::Obj(_) => "object".into(),
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Shape::Null | Shape::Str | Shape::Text => DataType::Utf8,
            Shape::Bool => DataType::Boolean,
            Shape::Int => DataType::Int64,
            Shape::Float => DataType::Float64,
            Shape::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Shape::Date => DataType::Date32,
            Shape::List(item) => {
                DataType::List(Arc::new(Field::new("item", item.data_type(), true)))
            }
            Shape::Obj(fields) => DataType::Struct(fields_of(fields, &[])),
        }
    }
}

fn fields_of(fields: &[(String, Shape)], required: &[String]) -> Fields {
    fields
        .iter()
        .map(|(n, s)| Field::new(n, s.data_type(), !required.contains(n)))
        .collect()
}

/// Two shapes as one. With `widen`, conflicting shapes become text (evolution);
/// without, the conflict also becomes text (inference within a page).
fn merge(a: Shape, b: Shape, _widen: bool) -> Shape {
    use Shape::*;
    match (a, b) {
        (Null, x) | (x, Null) => x,
        (Text, _) | (_, Text) => Text,
        (Int, Float) | (Float, Int) => Float,
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
    fields
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
        (_, Null) | (Text, _) => true,
        (Null | Str, Bool | Int | Float | Str) => true,
        (Float, Int | Float) => true,
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
                        ColumnType::Json => Shape::Text,
                    };
                    (col.name.clone(), s)
                })
                .collect();
            c.set_fields(fields);
        }
        c
    }

    fn set_fields(&mut self, fields: Vec<(String, Shape)>) {
        let schema = Schema::new(fields_of(&fields, &self.required));
        self.schema = Some(Arc::new(schema));
        self.fields = Some(fields);
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

    /// How the page differs from the schema (nothing on the first page of an inferred
    /// schema, which becomes the schema).
    pub(crate) fn check(&mut self, records: &[Value]) -> Option<Drift> {
        if records.is_empty() {
            return None;
        }
        let page = self.flatten_nested(page_shape(records));
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
        let page = self.flatten_nested(page_shape(records));
        let current = self.fields.clone().unwrap_or_default();
        let mut merged: Vec<(String, Shape)> = Vec::with_capacity(current.len());
        for (k, s) in current {
            let next = match page.iter().find(|(n, _)| *n == k) {
                Some((_, p)) if fits(&s, p) => s,
                Some((_, p)) if self.declared => {
                    let _ = p;
                    Shape::Text
                }
                Some((_, p)) => evolve_shape(s, p.clone()),
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
    pub(crate) fn convert(&self, mut records: Vec<Value>) -> Result<Converted, String> {
        let (Some(schema), Some(fields)) = (&self.schema, &self.fields) else {
            return Err("no schema yet".into());
        };
        prepare(fields, &mut records);
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
        _ => Text,
    }
}

/// Rewrites values the decoder cannot take as they are: objects and lists in text
/// columns become JSON text; Unix seconds in timestamp columns become microseconds.
fn prepare(fields: &[(String, Shape)], records: &mut [Value]) {
    let cols: Vec<(&str, &Shape)> = fields
        .iter()
        .filter(|(_, s)| matches!(s, Shape::Text | Shape::Null | Shape::Str | Shape::Timestamp))
        .map(|(k, s)| (k.as_str(), s))
        .collect();
    if cols.is_empty() {
        return;
    }
    for r in records {
        let Value::Object(map) = r else { continue };
        for (k, s) in &cols {
            let Some(v) = map.get_mut(*k) else { continue };
            match (s, &*v) {
                (Shape::Timestamp, Value::Number(n)) => {
                    if let Some(secs) = n.as_f64() {
                        *v = Value::from((secs * 1_000_000.0) as i64);
                    }
                }
                (Shape::Timestamp, _) => {}
                (_, Value::Object(_) | Value::Array(_)) => *v = Value::String(v.to_string()),
                _ => {}
            }
        }
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
            let _ = c.convert(e.records);
        }
    }

    #[test]
    fn infers_nested_columns_and_detects_drift() {
        let mut c = Converter::new(&SchemaConfig::Infer, NestedMode::Struct);
        let page1 = vec![rec(1, json!(1.5)), rec(2, json!(2.0))];
        assert!(c.check(&page1).is_none());
        let out = c.convert(page1).unwrap();
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
        let out = c.convert(drifted).unwrap();
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
        let out = c.convert(page).unwrap();
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
        let out = t.convert(page).unwrap();
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
