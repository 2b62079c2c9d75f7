//! The file sink: batches appended to a file as NDJSON, CSV or one JSON array, under a
//! write-ahead ledger (see `ledger.rs`), new files created by a rename.

use super::config::{FileFormat, FileSinkConfig, FileWriteMode};
use super::io_error;
use super::ledger::{Entry, Ledger};
use arrow::array::RecordBatch;
use async_trait::async_trait;
use sluice_core::{Batch, ConnectorError, ConnectorEvent, ErrorClass, RunInfo, Sink, WriteReport};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The closing of a JSON array file this sink writes.
const JSON_CLOSE: &str = "\n]\n";

/// A `type: file_sink`.
pub struct FileSink {
    state: Option<Box<SinkState>>,
    dir: PathBuf,
    events: Vec<ConnectorEvent>,
}

struct SinkState {
    config: FileSinkConfig,
    /// The file this run writes (`{{date}}` filled in).
    file: PathBuf,
    ledger: Option<Ledger>,
    ledger_path: PathBuf,
    target: String,
    /// The load this sink writes in (see [`RunInfo`]): a sink never told its run is a
    /// load of its own; `None` in a replay, which never overwrites.
    load: Option<String>,
    events: Vec<ConnectorEvent>,
}

impl FileSink {
    /// A sink for node `node` of `pipeline`. `{{date}}` in the path is today's date (UTC):
    /// build the sink at the start of each run. Opens nothing until the first write.
    pub fn new(config: FileSinkConfig, pipeline: &str, node: &str) -> Result<Self, ConnectorError> {
        let _ = (pipeline, node);
        let template = config.path.to_string_lossy().into_owned();
        let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let file = PathBuf::from(render(&template, &date)?);
        if config.format == FileFormat::Csv {
            config
                .csv
                .bytes()
                .map_err(|m| ConnectorError::new(ErrorClass::InvalidRequest, m))?;
        }
        // The ledger lives in the deepest folder of the template that holds no variable,
        // so that every file the template makes (one per day, say) shares it.
        let fixed = match template.find("{{") {
            Some(i) => &template[..i],
            None => &template,
        };
        let fixed = Path::new(fixed);
        let dir = if template.contains("{{") && !fixed.to_string_lossy().ends_with('/') {
            fixed.parent().map(Path::to_path_buf).unwrap_or_default()
        } else if template.contains("{{") {
            fixed.to_path_buf()
        } else {
            file.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        Ok(FileSink {
            state: Some(Box::new(SinkState {
                config,
                file,
                ledger: None,
                ledger_path: dir.join(".sluice-ledger"),
                target: template,
                load: Some(crate::own_load()),
                events: Vec::new(),
            })),
            dir,
            events: Vec::new(),
        })
    }

    /// The file this sink writes in this run.
    pub fn file(&self) -> Option<&Path> {
        self.state.as_ref().map(|s| s.file.as_path())
    }
}

/// `{{run_id}}` until the engine names the run ([`Sink::begin_run`]).
const RUN_ID: &str = "{{run_id}}";

/// The path with `{{date}}` filled in; `{{run_id}}` waits for [`Sink::begin_run`].
fn render(template: &str, date: &str) -> Result<String, ConnectorError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + len].trim();
        out.push_str(&rest[..start]);
        match name {
            "date" => out.push_str(date),
            // Filled in by `begin_run`, once the run has its id.
            "run_id" => out.push_str(RUN_ID),
            other => {
                return Err(ConnectorError::new(
                    ErrorClass::InvalidRequest,
                    format!("a file_sink `path` may use `{{{{date}}}}`, not `{{{{{other}}}}}`"),
                ));
            }
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[async_trait]
impl Sink for FileSink {
    fn begin_run(&mut self, run: &RunInfo) -> Result<(), ConnectorError> {
        let run_id = run.run_id.as_str();
        if let Some(state) = self.state.as_mut() {
            state.load = run.load.clone();
            let template = state.config.path.to_string_lossy().into_owned();
            if template.contains("{{") {
                let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
                state.file = PathBuf::from(render(&template, &date)?.replace(RUN_ID, run_id));
            }
        }
        Ok(())
    }

    async fn write(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        let Some(mut state) = self.state.take() else {
            return Err(ConnectorError::new(
                ErrorClass::Internal,
                "the file sink stopped after an earlier failure",
            ));
        };
        if state.file.to_string_lossy().contains(RUN_ID) {
            let message =
                "the file sink was not told its run, so `{{run_id}}` in its path has no value";
            self.state = Some(state);
            return Err(ConnectorError::new(ErrorClass::Internal, message));
        }
        let batch = batch.clone();
        let (mut state, result) = tokio::task::spawn_blocking(move || {
            let r = state.write(&batch);
            (state, r)
        })
        .await
        .map_err(|e| {
            ConnectorError::new(
                ErrorClass::Internal,
                format!("the file writer stopped: {e}"),
            )
        })?;
        self.events.append(&mut state.events);
        self.state = Some(state);
        result
    }

    async fn health(&self) -> Result<Duration, ConnectorError> {
        let started = Instant::now();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| io_error("create the folder", &dir, &e))?;
            let probe = dir.join(format!(".sluice-health-{}", std::process::id()));
            File::create(&probe).map_err(|e| io_error("write in the folder", &dir, &e))?;
            let _ = std::fs::remove_file(&probe);
            Ok::<_, ConnectorError>(())
        })
        .await
        .map_err(|e| ConnectorError::new(ErrorClass::Internal, e.to_string()))??;
        Ok(started.elapsed())
    }

    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        std::mem::take(&mut self.events)
    }
}

impl SinkState {
    fn event(&mut self, class: Option<ErrorClass>, message: String) {
        tracing::info!(class = class.map(|c| c.as_str()), "{message}");
        self.events.push(ConnectorEvent::new(class, message));
    }

    fn write(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        if self.ledger.is_none() {
            if let Some(dir) = self.ledger_path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io_error("create the folder", dir, &e))?;
            }
            self.ledger = Some(Ledger::open(self.ledger_path.clone(), self.target.clone())?);
            // Writes an earlier process began and did not finish, in whatever file: the
            // path may name another file now (`{{run_id}}`, `{{date}}`).
            let unfinished: Vec<String> = self
                .ledger
                .as_ref()
                .map(|l| l.pending.keys().cloned().collect())
                .unwrap_or_default();
            for file in unfinished {
                self.recover(Path::new(&file))?;
            }
        }
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(WriteReport::default());
        }
        let shown = self.file.display().to_string();
        let ledger = self
            .ledger
            .as_ref()
            .ok_or_else(|| ConnectorError::new(ErrorClass::Internal, "no ledger"))?;
        // `overwrite`: the first write of a load replaces the file, and with it what
        // earlier loads wrote there, so nothing in it counts as written before. A replay
        // (no load) adds to the file.
        let replace = self.config.mode == FileWriteMode::Overwrite
            && self
                .load
                .as_deref()
                .is_some_and(|load| ledger.load_of(&shown) != Some(load));
        let gaps = if replace {
            vec![(0, rows)]
        } else {
            ledger.uncovered(batch)
        };
        if gaps.is_empty() {
            return Ok(WriteReport {
                duplicate: true,
                ..WriteReport::default()
            });
        }
        for &(off, len) in &gaps {
            if off == 0 && len == rows {
                self.write_part(batch, replace)?;
            } else {
                self.write_part(&batch.slice(off, len), false)?;
            }
        }
        Ok(WriteReport {
            written: gaps.iter().map(|(_, len)| len).sum(),
            ..WriteReport::default()
        })
    }

    /// Writes the rows of `batch` (a whole batch or the part no commit holds) under a
    /// `begin`/`commit` pair; `replace` starts the file afresh for this load.
    fn write_part(&mut self, batch: &Batch, replace: bool) -> Result<(), ConnectorError> {
        let key = batch.ledger_key().to_string();
        let file = self.file.clone();
        let shown = file.display().to_string();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io_error("create the folder", dir, &e))?;
        }
        self.recover(&file)?;

        let len = match std::fs::metadata(&file) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error("write", &file, &e)),
        };
        let fresh = replace || len == 0;
        let format = self.config.format;
        if !fresh {
            self.check_existing(&file, batch, len)?;
        }
        let body = encode(&batch.records, format, &self.config, fresh)?;
        let (start, suffix) = match (fresh, format) {
            (true, _) => (0, String::new()),
            (false, FileFormat::Json) => (len - JSON_CLOSE.len() as u64, JSON_CLOSE.to_owned()),
            (false, _) => (len, String::new()),
        };
        let ledger = self
            .ledger
            .as_mut()
            .ok_or_else(|| ConnectorError::new(ErrorClass::Internal, "no ledger"))?;
        ledger.append(Entry {
            op: "begin".into(),
            target: String::new(),
            key: key.clone(),
            file: shown.clone(),
            start: Some(start),
            suffix,
            rows: None,
            replace: false,
            load: None,
        })?;
        if fresh {
            write_renamed(&file, &body)?;
        } else {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&file)
                .map_err(|e| io_error("write", &file, &e))?;
            f.set_len(start)
                .and_then(|()| f.seek(SeekFrom::Start(start)).map(|_| ()))
                .map_err(|e| io_error("write", &file, &e))?;
            crash_point(&mut f, &body);
            f.write_all(&body)
                .and_then(|()| f.sync_data())
                .map_err(|e| io_error("write", &file, &e))?;
        }
        let ledger = self
            .ledger
            .as_mut()
            .ok_or_else(|| ConnectorError::new(ErrorClass::Internal, "no ledger"))?;
        ledger.append(Entry {
            op: "commit".into(),
            target: String::new(),
            key,
            file: shown,
            start: None,
            suffix: String::new(),
            rows: Some(batch.num_rows()),
            replace,
            load: if replace { self.load.clone() } else { None },
        })?;
        Ok(())
    }

    /// Undoes a write that began and did not commit (the process died mid-write).
    fn recover(&mut self, file: &Path) -> Result<(), ConnectorError> {
        let shown = file.display().to_string();
        let Some(pending) = self.ledger.as_mut().and_then(|l| l.pending.remove(&shown)) else {
            return Ok(());
        };
        let len = match std::fs::metadata(file) {
            Ok(m) => m.len(),
            Err(_) => return self.rolled_back(&shown, pending.key),
        };
        if len < pending.start {
            self.event(
                Some(ErrorClass::ContractChanged),
                format!(
                    "{shown} is shorter than the ledger says ({len} < {} bytes): left as it is",
                    pending.start
                ),
            );
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .write(true)
            .open(file)
            .map_err(|e| io_error("write", file, &e))?;
        f.set_len(pending.start)
            .and_then(|()| f.seek(SeekFrom::End(0)).map(|_| ()))
            .and_then(|()| f.write_all(pending.suffix.as_bytes()))
            .and_then(|()| f.sync_data())
            .map_err(|e| io_error("write", file, &e))?;
        self.event(
            None,
            format!(
                "rolled back an unfinished write of batch {} to {shown} (cut from {len} to {} bytes)",
                pending.key, pending.start
            ),
        );
        self.rolled_back(&shown, pending.key)
    }

    /// Records that the unfinished write of `key` to `file` was undone, so that the next
    /// process does not look at it again.
    fn rolled_back(&mut self, file: &str, key: String) -> Result<(), ConnectorError> {
        let Some(ledger) = self.ledger.as_mut() else {
            return Ok(());
        };
        ledger.append(Entry {
            op: "rollback".into(),
            target: String::new(),
            key,
            file: file.to_owned(),
            start: None,
            suffix: String::new(),
            rows: None,
            replace: false,
            load: None,
        })
    }

    /// An existing file must be one this format can add to: a CSV file with the same
    /// header, a JSON array ending as this sink ends it.
    fn check_existing(&self, file: &Path, batch: &Batch, len: u64) -> Result<(), ConnectorError> {
        let shown = file.display();
        match self.config.format {
            FileFormat::Csv if self.config.csv.header => {
                let f = File::open(file).map_err(|e| io_error("read", file, &e))?;
                let mut first = String::new();
                BufReader::new(f)
                    .read_line(&mut first)
                    .map_err(|e| io_error("read", file, &e))?;
                let want = String::from_utf8_lossy(&csv_header(&batch.records, &self.config)?)
                    .into_owned();
                if first.trim_end() != want.trim_end() {
                    return Err(ConnectorError::new(
                        ErrorClass::ContractChanged,
                        format!(
                            "{shown} has the columns `{}`, the batch `{}`: write to a new file (a `{{{{date}}}}` path, or `mode: overwrite`)",
                            first.trim_end(),
                            want.trim_end()
                        ),
                    ));
                }
            }
            FileFormat::Json => {
                let mut f = File::open(file).map_err(|e| io_error("read", file, &e))?;
                let mut tail = vec![0u8; JSON_CLOSE.len()];
                let ok = len >= JSON_CLOSE.len() as u64
                    && f.seek(SeekFrom::End(-(JSON_CLOSE.len() as i64))).is_ok()
                    && std::io::Read::read_exact(&mut f, &mut tail).is_ok()
                    && tail == JSON_CLOSE.as_bytes();
                if !ok {
                    return Err(ConnectorError::new(
                        ErrorClass::ContractChanged,
                        format!(
                            "{shown} does not end as a JSON array this sink wrote (`]` on its own line): move it away or use `mode: overwrite`"
                        ),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Debug builds only, for the crash tests: with `SLUICE_DEBUG_FILE_SINK_ABORT=N`, the
/// N-th append of the process writes half its bytes and aborts the process (a crash in
/// the middle of an append, after its `begin`).
#[cfg(debug_assertions)]
fn crash_point(f: &mut File, body: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static APPENDS: AtomicU64 = AtomicU64::new(0);
    let Some(at) = std::env::var("SLUICE_DEBUG_FILE_SINK_ABORT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    if APPENDS.fetch_add(1, Ordering::SeqCst) + 1 == at {
        let _ = f.write_all(&body[..body.len() / 2]);
        let _ = f.sync_data();
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
fn crash_point(_: &mut File, _: &[u8]) {}

/// Writes `body` to a temporary file next to `file`, fsyncs it, renames it over `file`
/// and fsyncs the folder: readers see the old file or the new one, never a part.
fn write_renamed(file: &Path, body: &[u8]) -> Result<(), ConnectorError> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("write", file, &e));
    }
    Ok(())
}

fn csv_header(records: &RecordBatch, config: &FileSinkConfig) -> Result<Vec<u8>, ConnectorError> {
    let empty = nested_as_json(&records.slice(0, 0))?;
    let mut out = Vec::new();
    csv_writer(&mut out, config, true)?
        .write(&empty)
        .map_err(|e| encode_error(&e))?;
    Ok(out)
}

fn csv_writer<'a>(
    out: &'a mut Vec<u8>,
    config: &FileSinkConfig,
    header: bool,
) -> Result<arrow_csv::Writer<&'a mut Vec<u8>>, ConnectorError> {
    let (delimiter, quote) = config
        .csv
        .bytes()
        .map_err(|m| ConnectorError::new(ErrorClass::InvalidRequest, m))?;
    Ok(arrow_csv::WriterBuilder::new()
        .with_header(header)
        .with_delimiter(delimiter)
        .with_quote(quote)
        .build(out))
}

fn encode_error(e: &arrow::error::ArrowError) -> ConnectorError {
    ConnectorError::new(
        ErrorClass::ContractChanged,
        format!("the batch cannot be written in this format: {e}"),
    )
}

/// The bytes a batch adds to the file.
fn encode(
    records: &RecordBatch,
    format: FileFormat,
    config: &FileSinkConfig,
    fresh: bool,
) -> Result<Vec<u8>, ConnectorError> {
    let mut out = Vec::new();
    match format {
        FileFormat::Ndjson => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            w.write(records).map_err(|e| encode_error(&e))?;
            w.finish().map_err(|e| encode_error(&e))?;
        }
        FileFormat::Csv => {
            let header = fresh && config.csv.header;
            csv_writer(&mut out, config, header)?
                .write(&nested_as_json(records)?)
                .map_err(|e| encode_error(&e))?;
        }
        FileFormat::Json => {
            let mut lines = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut lines);
                w.write(records).map_err(|e| encode_error(&e))?;
                w.finish().map_err(|e| encode_error(&e))?;
            }
            out.extend_from_slice(if fresh { b"[\n" } else { b",\n" });
            let text = String::from_utf8_lossy(&lines);
            let joined: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
            out.extend_from_slice(joined.join(",\n").as_bytes());
            out.extend_from_slice(JSON_CLOSE.as_bytes());
        }
    }
    Ok(out)
}

/// The batch with its nested columns (structs, lists, maps) as JSON text, which CSV can
/// hold.
fn nested_as_json(records: &RecordBatch) -> Result<RecordBatch, ConnectorError> {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = records.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(records.clone());
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let column = records.column(i);
        if !field.data_type().is_nested() {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
            continue;
        }
        let one = RecordBatch::try_new(
            Arc::new(Schema::new(vec![field.as_ref().clone()])),
            vec![column.clone()],
        )
        .map_err(|e| encode_error(&e))?;
        let mut lines = Vec::new();
        {
            let mut w = arrow::json::writer::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(&mut lines);
            w.write(&one).map_err(|e| encode_error(&e))?;
            w.finish().map_err(|e| encode_error(&e))?;
        }
        let mut values: Vec<Option<String>> = Vec::with_capacity(records.num_rows());
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
            values.push(match v.get(field.name()) {
                None | Some(serde_json::Value::Null) => None,
                Some(x) => Some(x.to_string()),
            });
        }
        values.resize(records.num_rows(), None);
        fields.push(Field::new(field.name(), DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(values)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| encode_error(&e))
}
