//! The file source: NDJSON, CSV and JSON-array files streamed into Arrow batches.

use super::config::{FileFormat, FileSourceConfig};
use super::{glob, io_error};
use crate::http::{BadRecordPolicy, ColumnType, NestedMode, SchemaConfig, SchemaPolicy};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use serde_json::{Value, json};
use sluice_core::{
    Batch, ConnectorError, ConnectorEvent, ErrorClass, QuarantinedRecords, Source, SourceBatch,
    SourcePosition,
};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `type: file` source. Its checkpoint:
/// `{"done": [files read to the end], "file": the file in progress, "offset": bytes,
/// "line": lines (NDJSON, JSON) or records (CSV) read in it}`.
pub struct FileSource {
    pipeline: String,
    node: String,
    state: Option<Box<ReadState>>,
    events: Vec<ConnectorEvent>,
    quarantined: Vec<QuarantinedRecords>,
}

impl FileSource {
    /// A source for node `node` of `pipeline`, resuming after `checkpoint` (the last one
    /// the engine stored). Opens no file until the first batch.
    pub fn new(
        config: FileSourceConfig,
        pipeline: &str,
        node: &str,
        checkpoint: Option<Value>,
    ) -> Result<Self, ConnectorError> {
        if config.format == FileFormat::Csv {
            config
                .csv
                .bytes()
                .map_err(|m| ConnectorError::new(ErrorClass::InvalidRequest, m))?;
        }
        let mut state = ReadState {
            config,
            files: None,
            done: BTreeSet::new(),
            resume: None,
            current: None,
            schema: None,
            events: Vec::new(),
            quarantined: Vec::new(),
        };
        if let Some(cp) = checkpoint {
            if let Some(done) = cp.get("done").and_then(Value::as_array) {
                state.done = done
                    .iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect();
            }
            if let Some(file) = cp.get("file").and_then(Value::as_str) {
                let offset = cp.get("offset").and_then(Value::as_u64).unwrap_or(0);
                let line = cp.get("line").and_then(Value::as_u64).unwrap_or(0);
                state.resume = Some((file.to_owned(), offset, line));
            }
        }
        Ok(FileSource {
            pipeline: pipeline.to_owned(),
            node: node.to_owned(),
            state: Some(Box::new(state)),
            events: Vec::new(),
            quarantined: Vec::new(),
        })
    }
}

#[async_trait]
impl Source for FileSource {
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError> {
        let Some(mut state) = self.state.take() else {
            return Err(ConnectorError::new(
                ErrorClass::Internal,
                "the file source failed before and cannot read on",
            ));
        };
        let (state, result) = tokio::task::spawn_blocking(move || {
            let r = state.next_chunk();
            (state, r)
        })
        .await
        .map_err(|e| {
            ConnectorError::new(
                ErrorClass::Internal,
                format!("the file reader stopped: {e}"),
            )
        })?;
        let mut state = state;
        self.events.append(&mut state.events);
        for (records, error, reread, position) in state.quarantined.drain(..) {
            self.quarantined.push(QuarantinedRecords {
                batch: Batch::new(
                    self.pipeline.clone(),
                    self.node.clone(),
                    SourcePosition::Cursor(position),
                    records,
                ),
                error,
                reread,
            });
        }
        self.state = Some(state);
        let Some(chunk) = result? else {
            return Ok(None);
        };
        let batch = Batch::with_content_hash(
            self.pipeline.clone(),
            self.node.clone(),
            SourcePosition::Cursor(format!("{}@{}", chunk.file, chunk.start)),
            chunk.hash.as_bytes(),
            chunk.records,
        );
        Ok(Some(SourceBatch {
            batch,
            checkpoint: Some(chunk.checkpoint),
        }))
    }

    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        std::mem::take(&mut self.events)
    }

    fn take_quarantined(&mut self) -> Vec<QuarantinedRecords> {
        std::mem::take(&mut self.quarantined)
    }

    async fn health(&mut self) -> Result<Option<Duration>, ConnectorError> {
        let started = Instant::now();
        let path = match &self.state {
            Some(s) => s.config.path.clone(),
            None => return Ok(None),
        };
        let files = tokio::task::spawn_blocking(move || glob::expand(&path))
            .await
            .map_err(|e| ConnectorError::new(ErrorClass::Internal, e.to_string()))??;
        if let Some(first) = files.first() {
            File::open(first).map_err(|e| io_error("read", first, &e))?;
        }
        Ok(Some(started.elapsed()))
    }
}

/// One batch's worth of records read.
struct Chunk {
    records: RecordBatch,
    file: String,
    start: u64,
    hash: blake3::Hash,
    checkpoint: Value,
}

struct ReadState {
    config: FileSourceConfig,
    /// The files the path names, found at the first read.
    files: Option<Vec<PathBuf>>,
    done: BTreeSet<String>,
    resume: Option<(String, u64, u64)>,
    current: Option<Current>,
    schema: Option<SchemaRef>,
    events: Vec<ConnectorEvent>,
    /// Overlong records kept for the failed-batch store: records, why, where, position.
    quarantined: Vec<(RecordBatch, ConnectorError, Value, String)>,
}

/// The file being read (a file; in tests, any reader).
struct Current<R = BufReader<File>> {
    path: PathBuf,
    key: String,
    reader: R,
    offset: u64,
    line: u64,
    /// JSON arrays: whether the opening `[` was read.
    in_array: bool,
    /// CSV: the decoder, kept across chunks.
    csv: Option<arrow_csv::reader::Decoder>,
    /// CSV: where the bytes decoded so far leave the reader (inside a quoted field, ...).
    csv_at: CsvAt,
}

impl ReadState {
    fn event(&mut self, class: Option<ErrorClass>, message: String) {
        tracing::info!(class = class.map(|c| c.as_str()), "{message}");
        self.events.push(ConnectorEvent::new(class, message));
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>, ConnectorError> {
        if self.files.is_none() {
            let files = glob::expand(&self.config.path)?;
            if files.is_empty() {
                self.event(
                    None,
                    format!("no file matches {}", self.config.path.display()),
                );
            }
            self.files = Some(files);
        }
        loop {
            if self.current.is_none() && !self.open_next()? {
                return Ok(None);
            }
            let chunk = match self.config.format {
                FileFormat::Csv => self.read_csv()?,
                FileFormat::Ndjson | FileFormat::Json => self.read_json()?,
            };
            let Some(cur) = self.current.as_mut() else {
                return Ok(None);
            };
            let at_end = cur
                .reader
                .fill_buf()
                .map_err(|e| io_error("read", &cur.path, &e))?
                .is_empty();
            let key = cur.key.clone();
            let (offset, line) = (cur.offset, cur.line);
            if at_end {
                self.done.insert(key.clone());
                self.current = None;
            }
            let checkpoint = if at_end {
                json!({"done": self.done, "file": null, "offset": 0, "line": 0})
            } else {
                json!({"done": self.done, "file": key, "offset": offset, "line": line})
            };
            match chunk {
                Some((records, start, hash)) if records.num_rows() > 0 => {
                    return Ok(Some(Chunk {
                        records,
                        file: key,
                        start,
                        hash,
                        checkpoint,
                    }));
                }
                // Only overlong records (handled by `bad_records`): read on in this file.
                Some(_) if !at_end && self.config.format != FileFormat::Csv => {}
                _ => {
                    // Nothing left in this file: go on with the next one.
                    self.current = None;
                    self.done.insert(key);
                }
            }
        }
    }

    /// Opens the next file not read yet; false when there is none.
    fn open_next(&mut self) -> Result<bool, ConnectorError> {
        let files = self.files.clone().unwrap_or_default();
        let Some(path) = files
            .into_iter()
            .find(|f| !self.done.contains(&f.display().to_string()))
        else {
            return Ok(false);
        };
        let key = path.display().to_string();
        let file = File::open(&path).map_err(|e| io_error("read", &path, &e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error("read", &path, &e))?
            .len();
        let mut reader = BufReader::with_capacity(256 << 10, file);
        let (mut offset, mut line) = (0, 0);
        if let Some((f, o, l)) = self.resume.take() {
            if f == key && o <= len {
                offset = o;
                line = l;
            } else if f == key {
                self.event(
                    Some(ErrorClass::ContractChanged),
                    format!("{key} is shorter than when it was last read ({len} < {o} bytes): reading it again from the start"),
                );
            } else {
                self.resume = Some((f, o, l));
            }
        }
        if offset > 0 {
            reader
                .seek(SeekFrom::Start(offset))
                .map_err(|e| io_error("read", &path, &e))?;
            self.event(
                None,
                format!("resumed {key} at byte {offset} (line {line})"),
            );
        }
        self.current = Some(Current {
            path: path.clone(),
            key,
            reader,
            offset,
            line,
            in_array: offset > 0,
            csv: None,
            csv_at: CsvAt::FieldStart,
        });
        self.check_schema(&path)?;
        Ok(true)
    }

    /// Infers (or declares) the schema from the start of `path`, and compares it with
    /// the schema of the files read before.
    fn check_schema(&mut self, path: &Path) -> Result<(), ConnectorError> {
        let found: SchemaRef = match &self.config.schema {
            SchemaConfig::Columns(cols) => {
                if self.schema.is_some() {
                    return Ok(());
                }
                Arc::new(Schema::new(
                    cols.iter()
                        .map(|c| Field::new(&c.name, declared_type(c.data_type), c.nullable))
                        .collect::<Vec<_>>(),
                ))
            }
            SchemaConfig::Infer => Arc::new(self.infer(path)?),
        };
        let Some(known) = self.schema.clone() else {
            self.schema = Some(found);
            return Ok(());
        };
        let new: Vec<String> = found
            .fields()
            .iter()
            .filter(|f| known.field_with_name(f.name()).is_err())
            .map(|f| f.name().clone())
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.drift(&known, &found, &new, &path.display().to_string())
    }

    /// New fields: added to the schema (`evolve`, `warn`) or a `contract_changed` error.
    fn drift(
        &mut self,
        known: &Schema,
        found: &Schema,
        new: &[String],
        at: &str,
    ) -> Result<(), ConnectorError> {
        match self.config.schema_policy {
            SchemaPolicy::Evolve | SchemaPolicy::Warn => {
                let merged = Schema::try_merge([known.clone(), found.clone()]).map_err(|e| {
                    ConnectorError::new(
                        ErrorClass::ContractChanged,
                        format!("{at}: the records' fields changed type ({e})"),
                    )
                })?;
                let event = ConnectorEvent::schema_evolved(
                    self.config.schema_policy == SchemaPolicy::Warn,
                    format!("{at}: new field(s) {} added to the schema", new.join(", ")),
                );
                tracing::info!(class = event.class.map(|c| c.as_str()), "{}", event.message);
                self.events.push(event);
                self.schema = Some(Arc::new(merged));
                Ok(())
            }
            SchemaPolicy::Fail | SchemaPolicy::Quarantine => Err(ConnectorError::new(
                ErrorClass::ContractChanged,
                format!(
                    "{at}: record(s) with field(s) the schema lacks: {}; set `schema_policy: evolve` to add them, or declare the schema",
                    new.join(", ")
                ),
            )),
        }
    }

    fn infer(&mut self, path: &Path) -> Result<Schema, ConnectorError> {
        let file = File::open(path).map_err(|e| io_error("read", path, &e))?;
        let reader = BufReader::new(file);
        let rows = self.config.infer_rows.max(1);
        let shown = path.display();
        match self.config.format {
            FileFormat::Csv => {
                let (delimiter, quote) = self
                    .config
                    .csv
                    .bytes()
                    .map_err(|m| ConnectorError::new(ErrorClass::InvalidRequest, m))?;
                let format = arrow_csv::reader::Format::default()
                    .with_header(self.config.csv.header)
                    .with_delimiter(delimiter)
                    .with_quote(quote);
                let (schema, _) = format.infer_schema(reader, Some(rows)).map_err(|e| {
                    ConnectorError::new(
                        ErrorClass::InvalidRequest,
                        format!("{shown}: cannot read the CSV header and first records: {e}"),
                    )
                })?;
                Ok(schema)
            }
            FileFormat::Ndjson | FileFormat::Json => {
                let mut values = Vec::new();
                let mut scan = Current {
                    path: path.to_path_buf(),
                    key: shown.to_string(),
                    reader,
                    offset: 0,
                    line: 0,
                    in_array: false,
                    csv: None,
                    csv_at: CsvAt::FieldStart,
                };
                let mut buf = Vec::new();
                let mut order: Vec<String> = Vec::new();
                while values.len() < rows {
                    buf.clear();
                    let line = match next_record(
                        &mut scan,
                        self.config.format,
                        &mut buf,
                        self.config.max_record_bytes.max(1),
                        self.config.bad_records != BadRecordPolicy::Fail,
                    )? {
                        None => break,
                        Some(Found::Record(line)) => line,
                        // Left out of inference; the read applies `bad_records` to it.
                        Some(Found::Overlong(o)) if o.complete => continue,
                        // Not read past (`bad_records: fail`): the read fails there.
                        Some(Found::Overlong(_)) => break,
                    };
                    for k in key_order(&buf) {
                        if !order.contains(&k) {
                            order.push(k);
                        }
                    }
                    let v: Value = serde_json::from_slice(&buf)
                        .map_err(|e| malformed(&scan.key, line, &e.to_string()))?;
                    if !v.is_object() {
                        return Err(malformed(
                            &scan.key,
                            line,
                            "the record is not a JSON object",
                        ));
                    }
                    values.push(self.shape(v));
                }
                let schema = arrow::json::reader::infer_json_schema_from_iterator(
                    values.iter().map(Ok::<_, arrow::error::ArrowError>),
                )
                .map_err(|e| {
                    ConnectorError::new(
                        ErrorClass::InvalidRequest,
                        format!("{shown}: cannot infer the records' columns: {e}"),
                    )
                })?;
                // Columns in the order the records name them, not alphabetical.
                let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
                fields.sort_by_key(|f| order.iter().position(|k| k == f.name()));
                Ok(Schema::new(fields))
            }
        }
    }

    /// A record with nested values turned into JSON text where the config says so.
    fn shape(&self, mut v: Value) -> Value {
        let text_cols: Option<Vec<&str>> = match (&self.config.schema, self.config.nested) {
            (SchemaConfig::Columns(cols), _) => Some(
                cols.iter()
                    .filter(|c| c.data_type == ColumnType::Json)
                    .map(|c| c.name.as_str())
                    .collect(),
            ),
            (SchemaConfig::Infer, NestedMode::JsonText) => None,
            (SchemaConfig::Infer, NestedMode::Struct) => return v,
        };
        if let Some(map) = v.as_object_mut() {
            for (k, val) in map.iter_mut() {
                let wanted = match &text_cols {
                    Some(cols) => cols.contains(&k.as_str()) && !val.is_null(),
                    None => val.is_object() || val.is_array(),
                };
                if wanted && !val.is_string() {
                    *val = Value::String(val.to_string());
                }
            }
        }
        v
    }

    /// A record longer than `max_record_bytes`, by `bad_records`: an error, an event, or
    /// kept for the failed-batch store (its first KiB, file, line and byte offset).
    fn overlong(&mut self, key: &str, o: Overlong, max: usize) -> Result<(), ConnectorError> {
        let what = if o.complete {
            format!(
                "{key} line {}: a record of {} bytes (at byte {}) is longer than max_record_bytes ({max} bytes)",
                o.line, o.bytes, o.offset
            )
        } else {
            format!(
                "{key} line {}: a record (at byte {}) is longer than max_record_bytes ({max} bytes); reading stopped there",
                o.line, o.offset
            )
        };
        match self.config.bad_records {
            BadRecordPolicy::Fail => Err(ConnectorError::new(
                ErrorClass::InvalidRequest,
                format!(
                    "{what}: raise `max_record_bytes` if such records are expected, or set `bad_records: skip` or `quarantine`"
                ),
            )),
            BadRecordPolicy::Skip => {
                self.event(Some(ErrorClass::InvalidRequest), format!("{what}: skipped"));
                Ok(())
            }
            BadRecordPolicy::Quarantine => {
                use arrow::array::{StringArray, UInt64Array};
                let raw = format!(
                    "{} … ({} bytes in all; {key} from byte {} )",
                    String::from_utf8_lossy(&o.prefix),
                    o.bytes,
                    o.offset
                );
                let schema = Arc::new(Schema::new(vec![
                    Field::new("_index", DataType::UInt64, false),
                    Field::new("_raw", DataType::Utf8, false),
                ]));
                let records = RecordBatch::try_new(
                    schema,
                    vec![
                        Arc::new(UInt64Array::from(vec![o.line])),
                        Arc::new(StringArray::from(vec![raw])),
                    ],
                )
                .map_err(|e| ConnectorError::new(ErrorClass::Internal, e.to_string()))?;
                self.event(
                    Some(ErrorClass::InvalidRequest),
                    format!("{what}: quarantined"),
                );
                self.quarantined.push((
                    records,
                    ConnectorError::new(ErrorClass::InvalidRequest, what),
                    json!({"file": key, "offset": o.offset, "line": o.line, "bytes": o.bytes}),
                    format!("{key}@{}", o.offset),
                ));
                Ok(())
            }
        }
    }

    /// Whether records go through serde (to turn nested values into text) rather than
    /// straight into arrow's decoder.
    fn needs_shaping(&self) -> bool {
        match &self.config.schema {
            SchemaConfig::Columns(cols) => cols.iter().any(|c| c.data_type == ColumnType::Json),
            SchemaConfig::Infer => self.config.nested == NestedMode::JsonText,
        }
    }

    /// The next NDJSON or JSON-array chunk: records, the offset it started at, its hash.
    fn read_json(&mut self) -> Result<Option<(RecordBatch, u64, blake3::Hash)>, ConnectorError> {
        let format = self.config.format;
        let (max_rows, max_bytes) = (self.config.max_rows.max(1), self.config.max_bytes.max(1));
        let max_record = self.config.max_record_bytes.max(1);
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
        };
        let start = cur.offset;
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        let mut ends = Vec::new();
        let mut overlong = Vec::new();
        let read_past = self.config.bad_records != BadRecordPolicy::Fail;
        // When the chunk's first record was read: the chunk goes `max_wait` after it.
        let mut oldest: Option<Instant> = None;
        while lines.len() < max_rows && buf.len() < max_bytes {
            match next_record(cur, format, &mut buf, max_record, read_past)? {
                None => break,
                Some(Found::Record(line)) => {
                    buf.push(b'\n');
                    lines.push(line);
                    ends.push(buf.len());
                    if oldest.get_or_insert_with(Instant::now).elapsed() >= self.config.max_wait {
                        break;
                    }
                }
                Some(Found::Overlong(o)) => {
                    let complete = o.complete;
                    overlong.push(o);
                    // A quarantined record is handed over with the chunk it ends; one
                    // not read past (`bad_records: fail`) ends the reading.
                    if self.config.bad_records == BadRecordPolicy::Quarantine || !complete {
                        break;
                    }
                }
            }
        }
        let key = cur.key.clone();
        for o in overlong {
            self.overlong(&key, o, max_record)?;
        }
        if lines.is_empty() {
            // Only overlong records (handled above): an empty chunk, reading goes on.
            if self.current.as_ref().is_some_and(|c| c.offset > start) {
                let schema = self
                    .schema
                    .clone()
                    .unwrap_or_else(|| Arc::new(Schema::empty()));
                return Ok(Some((
                    RecordBatch::new_empty(schema),
                    start,
                    blake3::hash(&[]),
                )));
            }
            return Ok(None);
        }
        let hash = blake3::hash(&buf);
        let records = loop {
            let schema = self
                .schema
                .clone()
                .unwrap_or_else(|| Arc::new(Schema::empty()));
            match self.decode(&schema, &buf) {
                Ok(batch) => break batch,
                Err(e) => {
                    let text = e.to_string();
                    // A field the schema lacks: the schema policy decides.
                    if let Some(name) = missing_column(&text)
                        && matches!(self.config.schema, SchemaConfig::Infer)
                    {
                        let line = first_line_with(&buf, &ends, &lines, &name);
                        let at = format!("{key} line {line}");
                        let found = self.infer_chunk(&buf, &key, &lines, &ends)?;
                        let new: Vec<String> = found
                            .fields()
                            .iter()
                            .filter(|f| schema.field_with_name(f.name()).is_err())
                            .map(|f| f.name().clone())
                            .collect();
                        if new.is_empty() {
                            return Err(malformed(&key, line, &text));
                        }
                        self.drift(&schema, &found, &new, &at)?;
                        continue;
                    }
                    return Err(self.locate(&schema, &buf, &ends, &lines, &key, &text));
                }
            }
        };
        Ok(Some((records, start, hash)))
    }

    fn decoder(&self, schema: &SchemaRef) -> Result<arrow::json::reader::Decoder, ConnectorError> {
        arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(self.config.max_rows.max(1))
            .with_coerce_primitive(true)
            .with_strict_mode(matches!(self.config.schema, SchemaConfig::Infer))
            .build_decoder()
            .map_err(|e| ConnectorError::new(ErrorClass::Internal, e.to_string()))
    }

    fn decode(&self, schema: &SchemaRef, buf: &[u8]) -> Result<RecordBatch, ConnectorError> {
        let mut decoder = self.decoder(schema)?;
        let err = |e: arrow::error::ArrowError| {
            ConnectorError::new(ErrorClass::InvalidRequest, e.to_string())
        };
        if self.needs_shaping() {
            let mut rows = Vec::new();
            for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: Value = serde_json::from_slice(line)
                    .map_err(|e| ConnectorError::new(ErrorClass::InvalidRequest, e.to_string()))?;
                if !v.is_object() {
                    return Err(ConnectorError::new(
                        ErrorClass::InvalidRequest,
                        "the record is not a JSON object",
                    ));
                }
                rows.push(self.shape(v));
            }
            decoder.serialize(&rows).map_err(err)?;
        } else {
            let mut rest = buf;
            while !rest.is_empty() {
                let n = decoder.decode(rest).map_err(err)?;
                if n == 0 {
                    break;
                }
                rest = &rest[n..];
            }
        }
        Ok(decoder
            .flush()
            .map_err(err)?
            .unwrap_or_else(|| RecordBatch::new_empty(schema.clone())))
    }

    /// The schema of a chunk's records (to find the fields a schema lacks).
    fn infer_chunk(
        &self,
        buf: &[u8],
        key: &str,
        lines: &[u64],
        ends: &[usize],
    ) -> Result<Schema, ConnectorError> {
        let mut values = Vec::new();
        let mut from = 0;
        for (i, &end) in ends.iter().enumerate() {
            let v: Value = serde_json::from_slice(&buf[from..end])
                .map_err(|e| malformed(key, lines[i], &e.to_string()))?;
            values.push(self.shape(v));
            from = end;
        }
        arrow::json::reader::infer_json_schema_from_iterator(
            values.iter().map(Ok::<_, arrow::error::ArrowError>),
        )
        .map_err(|e| malformed(key, lines[0], &e.to_string()))
    }

    /// The error of a chunk that did not decode, naming the first record that fails on
    /// its own.
    fn locate(
        &self,
        schema: &SchemaRef,
        buf: &[u8],
        ends: &[usize],
        lines: &[u64],
        key: &str,
        whole: &str,
    ) -> ConnectorError {
        let mut from = 0;
        for (i, &end) in ends.iter().enumerate() {
            let record = &buf[from..end];
            let why = match serde_json::from_slice::<Value>(record) {
                Err(e) => Some(format!("not valid JSON ({e})")),
                Ok(v) if !v.is_object() => Some("the record is not a JSON object".to_owned()),
                Ok(_) => self.decode(schema, record).err().map(|e| e.message),
            };
            if let Some(why) = why {
                return malformed(key, lines[i], &why);
            }
            from = end;
        }
        ConnectorError::new(
            ErrorClass::InvalidRequest,
            format!(
                "{key}: the records from line {} do not decode: {whole}",
                lines[0]
            ),
        )
    }

    /// The next CSV chunk.
    fn read_csv(&mut self) -> Result<Option<(RecordBatch, u64, blake3::Hash)>, ConnectorError> {
        let schema = self
            .schema
            .clone()
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let (delimiter, quote) = self
            .config
            .csv
            .bytes()
            .map_err(|m| ConnectorError::new(ErrorClass::InvalidRequest, m))?;
        let (max_rows, header) = (self.config.max_rows.max(1), self.config.csv.header);
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
        };
        let start = cur.offset;
        let decoder = cur.csv.get_or_insert_with(|| {
            arrow_csv::ReaderBuilder::new(schema.clone())
                .with_header(header && start == 0)
                .with_delimiter(delimiter)
                .with_quote(quote)
                .with_batch_size(max_rows)
                .build_decoder()
        });
        let mut hasher = blake3::Hasher::new();
        let first_record = cur.line + 1;
        // When the chunk's first records were decoded: it goes `max_wait` after them.
        let mut oldest: Option<Instant> = None;
        let max_wait = self.config.max_wait;
        let bad = |e: arrow::error::ArrowError, key: &str| {
            ConnectorError::new(
                ErrorClass::InvalidRequest,
                format!("{key}: malformed CSV at or after record {first_record}: {e}"),
            )
        };
        loop {
            let buf = cur
                .reader
                .fill_buf()
                .map_err(|e| io_error("read", &cur.path, &e))?;
            if buf.is_empty() {
                decoder.decode(&[]).map_err(|e| bad(e, &cur.key))?;
                break;
            }
            // Past `max_wait`, the chunk goes at the next record's end (the decoder cannot
            // stop inside one): it is given the bytes up to there only.
            let due = oldest.is_some_and(|o| o.elapsed() >= max_wait);
            let (at, end) = cur.csv_at.scan(buf, delimiter, quote, due);
            let input = &buf[..end.unwrap_or(buf.len())];
            let n = decoder.decode(input).map_err(|e| bad(e, &cur.key))?;
            let decoded = &buf[..n];
            hasher.update(decoded);
            // The scan stopped where the decoder did (the input's end, or the record end
            // it was cut at): its state holds; else the decoded part is scanned again.
            cur.csv_at = match n == input.len() {
                true => at,
                false => cur.csv_at.scan(decoded, delimiter, quote, false).0,
            };
            let at_record_end = cur.csv_at == CsvAt::FieldStart && decoded.last() == Some(&b'\n');
            cur.reader.consume(n);
            cur.offset += n as u64;
            if decoder.capacity() == 0 || n == 0 {
                break;
            }
            if decoder.capacity() < max_rows {
                let first = *oldest.get_or_insert_with(Instant::now);
                if at_record_end && first.elapsed() >= max_wait {
                    break;
                }
            }
        }
        let records = decoder.flush().map_err(|e| bad(e, &cur.key))?;
        let Some(records) = records else {
            return Ok(None);
        };
        cur.line += records.num_rows() as u64;
        Ok(Some((records, start, hasher.finalize())))
    }
}

/// Where a CSV reader stands between two bytes, as csv-core (arrow's CSV reader) sees it
/// with its defaults (a quote doubled inside a quoted field, no escape character): it can
/// stop between records only, after a line break that is not inside a quoted field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CsvAt {
    /// At the start of a field (of a record, after a line break).
    FieldStart,
    /// Inside a field that did not start with a quote (a quote there is a character).
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// After a quote inside a quoted field: its end, or the first of a doubled quote.
    QuoteInQuoted,
}

impl CsvAt {
    /// Where the reader stands after `buf`, and with `find_end`, the length of `buf` up
    /// to the end of the first record that ends in it (its scan stops there).
    fn scan(
        mut self,
        buf: &[u8],
        delimiter: u8,
        quote: u8,
        find_end: bool,
    ) -> (CsvAt, Option<usize>) {
        use CsvAt::*;
        for (i, &b) in buf.iter().enumerate() {
            self = match (self, b) {
                (Quoted, b) if b == quote => QuoteInQuoted,
                (Quoted, _) => Quoted,
                (QuoteInQuoted, b) if b == quote => Quoted,
                (FieldStart, b) if b == quote => Quoted,
                (_, b'\n') => {
                    if find_end {
                        return (FieldStart, Some(i + 1));
                    }
                    FieldStart
                }
                (_, b) if b == delimiter => FieldStart,
                _ => Unquoted,
            };
        }
        (self, None)
    }
}

/// The next record of an NDJSON or JSON-array file, appended to `buf` (without its line
/// break); returns its line number, or `None` at the end.
/// How much of an overlong record is kept (for the quarantine and the messages).
const OVERLONG_PREFIX: usize = 1024;

/// What reading one record found.
enum Found {
    /// A record was appended to the buffer; its line.
    Record(u64),
    /// A record longer than `max_record_bytes`, read past without holding it.
    Overlong(Overlong),
}

/// A record longer than `max_record_bytes`.
struct Overlong {
    line: u64,
    /// Byte offset of its start in the file.
    offset: u64,
    /// Its length (bytes, as far as read).
    bytes: u64,
    /// Its first bytes.
    prefix: Vec<u8>,
    /// Whether it was read to its end; not when it is not read past (`bad_records:
    /// fail`), so that an endless line is not read forever.
    complete: bool,
}

/// The next record (an NDJSON line, or an element of the JSON array), appended to `buf`
/// when it is at most `max` bytes long; a longer one is read past in the reader's chunks
/// with `read_past`, else left where it went over `max` (the reading fails there).
/// However long the record, `buf` grows by at most `max + 2` bytes for it.
fn next_record<R: BufRead>(
    cur: &mut Current<R>,
    format: FileFormat,
    buf: &mut Vec<u8>,
    max: usize,
    read_past: bool,
) -> Result<Option<Found>, ConnectorError> {
    match format {
        FileFormat::Json => next_array_element(cur, buf, max, read_past),
        _ => loop {
            let from = buf.len();
            let start = cur.offset;
            let (mut n, mut over, mut complete) = (0u64, false, true);
            loop {
                let avail = cur
                    .reader
                    .fill_buf()
                    .map_err(|e| io_error("read", &cur.path, &e))?;
                if avail.is_empty() {
                    break;
                }
                let (take, done) = match avail.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (avail.len(), false),
                };
                if !over {
                    // `+ 2`: room for the line's own `\r\n`, trimmed below.
                    let room = (max + 2).saturating_sub(buf.len() - from);
                    let keep = take.min(room);
                    // Grown by doubling, but not past this record's room.
                    if buf.capacity() - buf.len() < keep {
                        let want = (buf.capacity() * 2)
                            .max(buf.len() + keep)
                            .min(from + max + 2);
                        buf.reserve_exact(want - buf.len());
                    }
                    buf.extend_from_slice(&avail[..keep]);
                    over = take > room;
                    if over && !read_past && !done {
                        // Only as far as kept: the rest of the line is not read.
                        cur.reader.consume(keep);
                        n += keep as u64;
                        complete = false;
                        break;
                    }
                }
                cur.reader.consume(take);
                n += take as u64;
                if done {
                    break;
                }
            }
            if n == 0 {
                return Ok(None);
            }
            cur.offset += n;
            cur.line += 1;
            while buf.len() > from && buf.last().is_some_and(u8::is_ascii_whitespace) {
                buf.pop();
            }
            if !over && buf[from..].iter().all(u8::is_ascii_whitespace) {
                buf.truncate(from);
                continue;
            }
            if over || buf.len() - from > max {
                let prefix = buf[from..(from + OVERLONG_PREFIX).min(buf.len())].to_vec();
                buf.truncate(from);
                return Ok(Some(Found::Overlong(Overlong {
                    line: cur.line,
                    offset: start,
                    bytes: n,
                    prefix,
                    complete,
                })));
            }
            return Ok(Some(Found::Record(cur.line)));
        },
    }
}

/// One byte from the reader, counting offsets and lines.
fn byte<R: BufRead>(cur: &mut Current<R>) -> Result<Option<u8>, ConnectorError> {
    let mut one = [0u8];
    match cur.reader.read(&mut one) {
        Ok(0) => Ok(None),
        Ok(_) => {
            cur.offset += 1;
            if one[0] == b'\n' {
                cur.line += 1;
            }
            Ok(Some(one[0]))
        }
        Err(e) => Err(io_error("read", &cur.path, &e)),
    }
}

/// The next element of the file's JSON array, appended to `buf`.
fn next_array_element<R: BufRead>(
    cur: &mut Current<R>,
    buf: &mut Vec<u8>,
    max: usize,
    read_past: bool,
) -> Result<Option<Found>, ConnectorError> {
    let key = cur.key.clone();
    // Skip whitespace and separators up to the element's first byte.
    let first = loop {
        let Some(b) = byte(cur)? else {
            if cur.in_array {
                return Err(malformed(
                    &key,
                    cur.line + 1,
                    "the JSON array is not closed (`]` missing)",
                ));
            }
            return Ok(None);
        };
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'[' if !cur.in_array => cur.in_array = true,
            b',' if cur.in_array => {}
            b']' if cur.in_array => {
                // The end: the rest must be whitespace.
                while let Some(b) = byte(cur)? {
                    if !b.is_ascii_whitespace() {
                        return Err(malformed(
                            &key,
                            cur.line + 1,
                            "text after the JSON array's closing `]`",
                        ));
                    }
                }
                cur.in_array = false;
                return Ok(None);
            }
            b'{' if cur.in_array => break b,
            other if !cur.in_array => {
                return Err(malformed(
                    &key,
                    cur.line + 1,
                    &format!(
                        "a JSON array file must start with `[`, found `{}`",
                        other as char
                    ),
                ));
            }
            other => {
                return Err(malformed(
                    &key,
                    cur.line + 1,
                    &format!(
                        "the record is not a JSON object (starts with `{}`)",
                        other as char
                    ),
                ));
            }
        }
    };
    let line = cur.line + 1;
    let (from, start) = (buf.len(), cur.offset - 1);
    let (mut over, mut complete) = (false, true);
    buf.push(first);
    let (mut depth, mut in_string, mut escaped) = (1usize, false, false);
    while depth > 0 {
        let Some(b) = byte(cur)? else {
            return Err(malformed(&key, line, "the file ends inside this record"));
        };
        // Past `max`, the element is only scanned to its end, not kept.
        if !over && buf.len() - from >= max {
            over = true;
            buf.truncate(from + OVERLONG_PREFIX.min(max));
            if !read_past {
                // Not scanned to its end: the reading fails here.
                complete = false;
                break;
            }
        }
        if !over {
            // A line break outside strings is whitespace; keep records on one line.
            buf.push(if b == b'\n' { b' ' } else { b });
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            _ => {}
        }
    }
    if over {
        let prefix = buf[from..].to_vec();
        buf.truncate(from);
        return Ok(Some(Found::Overlong(Overlong {
            line,
            offset: start,
            bytes: cur.offset - start,
            prefix,
            complete,
        })));
    }
    Ok(Some(Found::Record(line)))
}

fn malformed(key: &str, line: u64, why: &str) -> ConnectorError {
    ConnectorError::new(
        ErrorClass::InvalidRequest,
        format!("{key} line {line}: malformed record: {why}"),
    )
}

/// The field named by arrow's "column 'x' missing from schema".
fn missing_column(text: &str) -> Option<String> {
    let rest = &text[text.find("column '")? + 8..];
    let end = rest.find("' missing from schema")?;
    Some(rest[..end].to_owned())
}

/// The line of the first record of the chunk that has the field `name`.
fn first_line_with(buf: &[u8], ends: &[usize], lines: &[u64], name: &str) -> u64 {
    let needle = format!("\"{name}\"");
    let mut from = 0;
    for (i, &end) in ends.iter().enumerate() {
        if buf[from..end]
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            return lines[i];
        }
        from = end;
    }
    lines.first().copied().unwrap_or(0)
}

fn declared_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::String | ColumnType::Json => DataType::Utf8,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnType::Date => DataType::Date32,
    }
}

/// The keys of a JSON object, in the order written.
fn key_order(record: &[u8]) -> Vec<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(k);
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_slice(record)
        .deserialize_map(Keys)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    const MIB: usize = 1 << 20;
    /// The reader's chunk, as the source reads files.
    const CHUNK: usize = 256 << 10;

    /// The rows of each non-empty batch of a whole run of `config`.
    async fn batches(config: FileSourceConfig) -> Vec<usize> {
        let mut source = FileSource::new(config, "p", "files", None).unwrap();
        let mut rows = Vec::new();
        while let Some(b) = source.next_batch().await.unwrap() {
            if b.batch.num_rows() > 0 {
                rows.push(b.batch.num_rows());
            }
        }
        rows
    }

    /// A chunk goes once its first record waited `max_wait` (checked as records are
    /// added): with none, an NDJSON batch a record, else one batch for the file.
    #[tokio::test]
    async fn an_ndjson_batch_goes_once_its_first_record_waited_max_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.ndjson");
        let text: String = (1..=5).map(|i| format!("{{\"id\": {i}}}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let mut config = FileSourceConfig::new(&path, FileFormat::Ndjson);
        config.max_wait = Duration::ZERO;
        assert_eq!(batches(config.clone()).await, vec![1; 5]);
        config.max_wait = Duration::from_secs(3600);
        assert_eq!(batches(config).await, vec![5]);
    }

    /// A CSV record ends at a line break outside quotes; a quote inside an unquoted field
    /// is a character, a doubled one inside a quoted field too.
    #[test]
    fn a_csv_record_ends_at_a_line_break_outside_quotes() {
        let end = |buf: &[u8], at: CsvAt| at.scan(buf, b',', b'"', true).1;
        assert_eq!(end(b"1,a\n2,b\n", CsvAt::FieldStart), Some(4));
        assert_eq!(end(b"1,\"a\nb\"\n2,c\n", CsvAt::FieldStart), Some(8));
        assert_eq!(end(b"1,\"a\"\"\nb\"\n", CsvAt::FieldStart), Some(10));
        // A stray quote inside an unquoted field opens nothing.
        assert_eq!(end(b"1,a\"b\n2,\"x\ny\"\n", CsvAt::FieldStart), Some(6));
        // Inside a quoted field from the start: its closing quote comes first.
        assert_eq!(end(b"x\ny\",2\n3\n", CsvAt::Quoted), Some(7));
        assert_eq!(end(b"1,a", CsvAt::FieldStart), None);
        assert_eq!(
            CsvAt::FieldStart.scan(b"1,\"a\nb", b',', b'"', false),
            (CsvAt::Quoted, None)
        );
    }

    /// CSV is decoded a buffer at a time: with no `max_wait`, a batch ends at the first
    /// record end after a buffer decoded records, short of `max_rows`; with a long one,
    /// `max_rows` decides.
    #[tokio::test]
    async fn a_csv_batch_goes_once_its_first_records_waited_max_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        let rows = 30_000;
        let mut text = String::from("id,name\n");
        for i in 0..rows {
            text.push_str(&format!("{i},name-{i:0>10}\n"));
        }
        assert!(text.len() > 2 * CHUNK);
        std::fs::write(&path, text).unwrap();
        let mut config = FileSourceConfig::new(&path, FileFormat::Csv);
        config.max_rows = 100_000;
        config.max_wait = Duration::ZERO;
        let eager = batches(config.clone()).await;
        assert!(eager.len() > 1, "{eager:?}");
        assert_eq!(eager.iter().sum::<usize>(), rows);
        config.max_wait = Duration::from_secs(3600);
        assert_eq!(batches(config).await, vec![rows]);
    }

    /// A reader counting the bytes read from it.
    struct Counted<R>(R, Arc<AtomicU64>);

    impl<R: Read> Read for Counted<R> {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(b)?;
            self.1.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
    }

    fn current<R: Read>(reader: R) -> Current<BufReader<R>> {
        Current {
            path: PathBuf::from("endless.ndjson"),
            key: "endless.ndjson".into(),
            reader: BufReader::with_capacity(CHUNK, reader),
            offset: 0,
            line: 0,
            in_array: false,
            csv: None,
            csv_at: CsvAt::FieldStart,
        }
    }

    /// Runs `f` on a thread of its own: a test of an endless input fails after `secs`
    /// instead of hanging (the thread is left behind).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("the read ended (an endless record must not be read forever)")
    }

    /// With `bad_records: fail`, an endless NDJSON line (no line break, ever) is reported
    /// once it passes `max_record_bytes`: about the limit read and held, not more.
    #[test]
    fn an_endless_ndjson_line_is_overlong_at_the_limit_not_read_forever() {
        let read = Arc::new(AtomicU64::new(0));
        let counted = read.clone();
        let (found, held) = within(30, move || {
            let mut cur = current(Counted(std::io::repeat(b'x'), counted));
            let mut buf = Vec::new();
            let found = next_record(&mut cur, FileFormat::Ndjson, &mut buf, MIB, false);
            (found, (buf.len(), buf.capacity()))
        });
        let Ok(Some(Found::Overlong(o))) = found else {
            panic!("not an overlong record");
        };
        assert!(!o.complete);
        assert_eq!((o.line, o.offset), (1, 0));
        assert_eq!(o.prefix, vec![b'x'; OVERLONG_PREFIX]);
        assert_eq!(held.0, 0, "the record is not kept");
        assert!(held.1 <= MIB + 2, "held {} bytes for a 1 MiB limit", held.1);
        let read = read.load(Ordering::Relaxed) as usize;
        assert!(read <= MIB + 2 + CHUNK, "read {read} bytes");
    }

    /// The same for an element of a JSON array that never ends.
    #[test]
    fn an_endless_json_array_element_is_overlong_at_the_limit_not_read_forever() {
        let found = within(30, || {
            let endless = std::io::Cursor::new(&b"[{\"a\": \""[..]).chain(std::io::repeat(b'x'));
            let mut cur = current(endless);
            let mut buf = Vec::new();
            next_record(&mut cur, FileFormat::Json, &mut buf, MIB, false)
                .map(|f| (f, buf.len(), cur.offset))
        });
        let Ok((Some(Found::Overlong(o)), kept, offset)) = found else {
            panic!("not an overlong record");
        };
        assert!(!o.complete);
        assert_eq!(kept, 0);
        assert!(offset as usize <= MIB + 16, "read {offset} bytes");
    }

    /// With `skip` (or `quarantine`), a 64 MiB line is read past to its end in the
    /// reader's chunks, holding at most the limit, and the next line is read.
    #[test]
    fn a_64_mib_line_is_read_past_holding_at_most_the_limit() {
        let (found, next, held) = within(120, || {
            let long = std::io::repeat(b'x')
                .take(64 << 20)
                .chain(&b"\n{\"a\":1}\n"[..]);
            let mut cur = current(long);
            let mut buf = Vec::new();
            let found = next_record(&mut cur, FileFormat::Ndjson, &mut buf, MIB, true);
            let held = (buf.len(), buf.capacity());
            let next = next_record(&mut cur, FileFormat::Ndjson, &mut buf, MIB, true)
                .map(|f| (f.map(|f| matches!(f, Found::Record(2))), buf.clone()));
            (found, next, held)
        });
        let Ok(Some(Found::Overlong(o))) = found else {
            panic!("not an overlong record");
        };
        assert!(o.complete);
        assert_eq!(o.bytes, (64 << 20) + 1);
        assert_eq!(held.0, 0);
        assert!(held.1 <= MIB + 2, "held {} bytes for a 1 MiB limit", held.1);
        let (is_line_2, buf) = next.unwrap();
        assert_eq!(is_line_2, Some(true));
        assert_eq!(buf, b"{\"a\":1}");
    }

    /// Through the source: a file that never ends (`/dev/zero`: no line break, ever) with
    /// `max_record_bytes: 1MiB` fails with the record too long, after inferring the
    /// schema and reading, instead of reading on forever.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_endless_file_fails_with_a_record_too_long() {
        let err = within(30, || {
            let mut config = FileSourceConfig::new("/dev/zero", FileFormat::Ndjson);
            config.max_record_bytes = MIB;
            let mut source = FileSource::new(config, "p", "src", None).unwrap();
            let mut state = source.state.take().unwrap();
            state.next_chunk().map(|c| c.is_some())
        })
        .expect_err("an error");
        assert_eq!(err.class, ErrorClass::InvalidRequest, "{err}");
        assert!(
            err.message.contains("/dev/zero line 1: a record (at byte 0) is longer than max_record_bytes (1048576 bytes)"),
            "{err}"
        );
    }
}
