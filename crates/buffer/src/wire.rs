//! The wire format of a batch in a buffer.
//!
//! A message is a set of string headers and a payload:
//!
//! | header | value |
//! |---|---|
//! | `sluice.version` | `1`: the wire format version |
//! | `sluice.format` | `arrow+zstd`, `arrow+lz4`, `arrow` or `jsonl` |
//! | `sluice.batch_id` | the batch id (shared by all parts of a split batch) |
//! | `sluice.pipeline`, `sluice.node` | where the batch was produced |
//! | `sluice.position` | the source position, JSON |
//! | `sluice.schema` | the schema fingerprint |
//! | `sluice.created_at` | milliseconds since the Unix epoch |
//! | `sluice.batch_part` | JSON, only on a batch that is itself a part of a split batch |
//! | `sluice.split` | `i/n`, only when the batch travels as `n` messages |
//! | `sluice.arrow_schema` | JSON of the Arrow schema, only with `jsonl` |
//!
//! The payload is an Arrow IPC stream (compressed per `sluice.format`) or JSON lines.
//! JSON lines is for users whose other consumers read the topic; Arrow IPC with zstd is
//! the default because it is smaller and faster to decode (see `docs/benchmarks.md`).

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use serde::{Deserialize, Serialize};
use sluice_core::{Batch, BatchId, BatchPart, SourcePosition, schema_fingerprint};
use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::str::FromStr;
use std::sync::Arc;

use crate::BufferError;

/// The current wire format version.
pub const VERSION: &str = "1";

/// The zstd level of `arrow+zstd` payloads.
const ZSTD_LEVEL: i32 = 1;

/// How the records of a batch are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WireFormat {
    /// Arrow IPC stream, zstd-compressed buffers.
    #[serde(rename = "arrow+zstd")]
    ArrowZstd,
    /// Arrow IPC stream, lz4-compressed buffers (the default).
    #[default]
    #[serde(rename = "arrow+lz4")]
    ArrowLz4,
    /// Arrow IPC stream, uncompressed.
    #[serde(rename = "arrow")]
    Arrow,
    /// One JSON object per line, readable by any consumer.
    #[serde(rename = "jsonl")]
    JsonLines,
}

impl WireFormat {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::ArrowZstd => "arrow+zstd",
            WireFormat::ArrowLz4 => "arrow+lz4",
            WireFormat::Arrow => "arrow",
            WireFormat::JsonLines => "jsonl",
        }
    }
}

impl FromStr for WireFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arrow+zstd" => Ok(WireFormat::ArrowZstd),
            "arrow+lz4" => Ok(WireFormat::ArrowLz4),
            "arrow" => Ok(WireFormat::Arrow),
            "jsonl" => Ok(WireFormat::JsonLines),
            other => Err(format!(
                "unknown wire format `{other}` (expected arrow+zstd, arrow+lz4, arrow or jsonl)"
            )),
        }
    }
}

/// One message: headers and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `sluice.*` headers.
    pub headers: BTreeMap<String, String>,
    /// The encoded records.
    pub payload: Vec<u8>,
}

impl Message {
    /// Bytes the message takes on the wire, roughly: payload plus headers.
    pub fn size(&self) -> usize {
        self.payload.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
    }

    fn header(&self, name: &str) -> Result<&str, String> {
        self.headers
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("missing header `{name}`"))
    }

    /// Frames the message as one byte string (the embedded log's entry body):
    /// `u32 little-endian header length`, the headers as JSON, the payload.
    pub fn to_frame(&self) -> Vec<u8> {
        let headers = serde_json::to_vec(&self.headers).expect("string headers serialize");
        let mut out = Vec::with_capacity(4 + headers.len() + self.payload.len());
        out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
        out.extend_from_slice(&headers);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses a frame written by [`Message::to_frame`]. A frame that does not parse is
    /// [`BufferError::Undecodable`].
    pub fn from_frame(frame: &[u8]) -> Result<Message, BufferError> {
        Message::parse_frame(frame).map_err(BufferError::undecodable)
    }

    fn parse_frame(frame: &[u8]) -> Result<Message, String> {
        let len_bytes: [u8; 4] = frame
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or("frame shorter than its header length")?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        let headers = frame
            .get(4..4 + len)
            .ok_or("frame shorter than its headers")?;
        let headers: BTreeMap<String, String> =
            serde_json::from_slice(headers).map_err(|e| format!("headers are not JSON: {e}"))?;
        Ok(Message {
            headers,
            payload: frame[4 + len..].to_vec(),
        })
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode_records(records: &RecordBatch, format: WireFormat) -> Result<Vec<u8>, String> {
    match format {
        WireFormat::JsonLines => {
            let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
            writer.write(records).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
            Ok(writer.into_inner())
        }
        arrow_format => {
            let compression = match arrow_format {
                WireFormat::ArrowZstd => Some(CompressionType::ZSTD),
                WireFormat::ArrowLz4 => Some(CompressionType::LZ4_FRAME),
                _ => None,
            };
            // zstd at level 1 rather than arrow's default 3: on API records it compresses
            // about as well, in less CPU (docs/benchmarks.md, "Buffers").
            let level = (arrow_format == WireFormat::ArrowZstd).then_some(ZSTD_LEVEL);
            let options = IpcWriteOptions::default()
                .try_with_compression(compression)
                .and_then(|o| o.try_with_compression_level(level))
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            let mut writer =
                StreamWriter::try_new_with_options(&mut out, &records.schema(), options)
                    .map_err(|e| e.to_string())?;
            writer.write(records).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
            drop(writer);
            Ok(out)
        }
    }
}

fn message_for(
    batch: &Batch,
    format: WireFormat,
    split: Option<(usize, usize)>,
    records: &RecordBatch,
) -> Result<Message, String> {
    let mut headers = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        headers.insert(k.to_owned(), v);
    };
    put("sluice.version", VERSION.to_owned());
    put("sluice.format", format.as_str().to_owned());
    put("sluice.batch_id", batch.id.to_string());
    put("sluice.pipeline", batch.pipeline.clone());
    put("sluice.node", batch.node.clone());
    put(
        "sluice.position",
        serde_json::to_string(&batch.position).map_err(|e| e.to_string())?,
    );
    put("sluice.schema", schema_fingerprint(&records.schema()));
    put("sluice.created_at", now_millis().to_string());
    if let Some(part) = &batch.part {
        put(
            "sluice.batch_part",
            serde_json::to_string(part).map_err(|e| e.to_string())?,
        );
    }
    if let Some((i, n)) = split {
        put("sluice.split", format!("{i}/{n}"));
    }
    if format == WireFormat::JsonLines {
        put(
            "sluice.arrow_schema",
            serde_json::to_string(records.schema().as_ref()).map_err(|e| e.to_string())?,
        );
    }
    Ok(Message {
        headers,
        payload: encode_records(records, format)?,
    })
}

/// Encodes a batch into one message, or into ordered parts when one message would exceed
/// `max_bytes`. Parts split the records in contiguous row ranges; a single record larger
/// than `max_bytes` is [`BufferError::RecordTooLarge`].
pub fn encode(
    batch: &Batch,
    format: WireFormat,
    max_bytes: usize,
) -> Result<Vec<Message>, BufferError> {
    let enc_err = |message: String| BufferError::Encode {
        batch_id: batch.id.to_string(),
        message,
    };
    let whole = message_for(batch, format, None, &batch.records).map_err(enc_err)?;
    if whole.size() <= max_bytes {
        return Ok(vec![whole]);
    }
    // Cut into row ranges whose encodings fit, starting from an estimate and halving any
    // range that is still too large.
    let rows = batch.num_rows();
    let estimate = whole.size().div_ceil(max_bytes.max(1)).max(2);
    let step = rows.div_ceil(estimate).max(1);
    let mut pending: Vec<(usize, usize)> = (0..rows)
        .step_by(step)
        .map(|s| (s, step.min(rows - s)))
        .rev()
        .collect();
    let mut ranges = Vec::new();
    while let Some((start, len)) = pending.pop() {
        let slice = batch.records.slice(start, len);
        let probe = message_for(batch, format, Some((0, 0)), &slice).map_err(enc_err)?;
        if probe.size() <= max_bytes {
            ranges.push(slice);
        } else if len == 1 {
            return Err(BufferError::RecordTooLarge {
                bytes: probe.size(),
                limit: max_bytes,
            });
        } else {
            let half = len / 2;
            pending.push((start + half, len - half));
            pending.push((start, half));
        }
    }
    let n = ranges.len();
    ranges
        .iter()
        .enumerate()
        .map(|(i, records)| message_for(batch, format, Some((i, n)), records).map_err(enc_err))
        .collect()
}

/// One decoded message: a whole batch, or one part of a split batch.
#[derive(Debug)]
pub struct Decoded {
    /// The batch (or the part's rows, with the batch's metadata).
    pub batch: Batch,
    /// `(index, count)` when the batch travels in parts.
    pub split: Option<(usize, usize)>,
}

fn decode_records(format: WireFormat, message: &Message) -> Result<RecordBatch, String> {
    match format {
        WireFormat::JsonLines => {
            let schema: arrow::datatypes::Schema =
                serde_json::from_str(message.header("sluice.arrow_schema")?)
                    .map_err(|e| format!("bad `sluice.arrow_schema`: {e}"))?;
            let schema = Arc::new(schema);
            let reader = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(8192)
                .build(Cursor::new(&message.payload))
                .map_err(|e| e.to_string())?;
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            concat_batches(&schema, &batches).map_err(|e| e.to_string())
        }
        _ => {
            let mut reader = StreamReader::try_new(Cursor::new(&message.payload), None)
                .map_err(|e| e.to_string())?;
            let schema = reader.schema();
            let mut batches = Vec::new();
            for b in &mut reader {
                batches.push(b.map_err(|e| e.to_string())?);
            }
            concat_batches(&schema, &batches).map_err(|e| e.to_string())
        }
    }
}

/// The most parts a batch may travel in. A part holds at least one record and a batch at
/// most `batching.max_rows` of them; a header claiming more is crafted or corrupt.
pub const MAX_SPLIT_PARTS: usize = 1_000_000;

/// `sluice.split`: `i/n` with `i < n <= MAX_SPLIT_PARTS`.
fn parse_split(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .filter(|(i, n)| i < n)
        .ok_or_else(|| format!("bad `sluice.split` `{s}`"))?;
    if n > MAX_SPLIT_PARTS {
        return Err(format!(
            "bad `sluice.split` `{s}`: a batch travels in at most {MAX_SPLIT_PARTS} parts"
        ));
    }
    Ok((i, n))
}

/// Decodes a message. An error here ([`BufferError::Undecodable`]) means the message is
/// poison: quarantine it.
pub fn decode(message: &Message) -> Result<Decoded, BufferError> {
    decode_message(message).map_err(BufferError::undecodable)
}

fn decode_message(message: &Message) -> Result<Decoded, String> {
    let version = message.header("sluice.version")?;
    if version != VERSION {
        return Err(format!(
            "unknown wire format version `{version}` (this sluice reads version {VERSION})"
        ));
    }
    let format: WireFormat = message.header("sluice.format")?.parse()?;
    let position: SourcePosition = serde_json::from_str(message.header("sluice.position")?)
        .map_err(|e| format!("bad `sluice.position`: {e}"))?;
    let part: Option<BatchPart> = match message.headers.get("sluice.batch_part") {
        Some(p) => {
            Some(serde_json::from_str(p).map_err(|e| format!("bad `sluice.batch_part`: {e}"))?)
        }
        None => None,
    };
    let split = match message.headers.get("sluice.split") {
        Some(s) => Some(parse_split(s)?),
        None => None,
    };
    let records = decode_records(format, message)?;
    Ok(Decoded {
        batch: Batch {
            id: BatchId::from_stored(message.header("sluice.batch_id")?),
            pipeline: message.header("sluice.pipeline")?.to_owned(),
            node: message.header("sluice.node")?.to_owned(),
            position,
            part,
            records,
        },
        split,
    })
}

/// Bounds on the parts a [`Reassembler`] holds while it waits for the rest of their
/// batches. A batch whose parts stop coming (its producer died mid-batch, or the page was
/// re-read with other content and so another batch id) would otherwise be held forever,
/// and the group's offset could never pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Incomplete batches held at once (per subscription); the oldest beyond it is orphaned.
    pub max_batches: usize,
    /// Bytes of parts held at once (the records' in-memory size); the oldest batch beyond
    /// it is orphaned.
    pub max_bytes: usize,
    /// Messages of the partition read since a batch's first part: a producer writes the
    /// parts of a batch one after the other, so parts still missing that much later are
    /// not coming.
    pub max_age_messages: i64,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_batches: 64,
            max_bytes: 512 * 1024 * 1024,
            max_age_messages: 10_000,
        }
    }
}

/// Collects the parts of split batches until each is whole.
///
/// Keyed by `(partition, batch id)`; the first offset of each incomplete batch is kept so
/// that a commit never moves past a batch that was only partly delivered. What it holds
/// is bounded by [`ReassemblyLimits`]: a batch beyond them is handed back by
/// [`Reassembler::orphans`] as [`OrphanPart`]s, to be quarantined as poison.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: HashMap<(i32, BatchId), Pending>,
    limits: ReassemblyLimits,
    bytes: usize,
}

#[derive(Debug)]
struct Pending {
    first_offset: i64,
    count: usize,
    /// The parts received: index → (offset, records).
    parts: BTreeMap<usize, (i64, RecordBatch)>,
    bytes: usize,
    template: Batch,
}

/// A part of a batch whose other parts never came: to be handed out as poison.
#[derive(Debug)]
pub struct OrphanPart {
    /// Partition of the part.
    pub partition: i32,
    /// Offset of the part.
    pub offset: i64,
    /// The part re-encoded as a frame (Arrow IPC, with its `sluice.split` header), for
    /// inspection.
    pub payload: Vec<u8>,
    /// Why it is poison.
    pub error: String,
}

impl Reassembler {
    /// A reassembler with other limits than the defaults.
    pub fn with_limits(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            ..Reassembler::default()
        }
    }

    /// Adds a decoded message seen at `offset`. Returns the whole batch when this message
    /// completed it (or was whole already); a part that disagrees with its batch's other
    /// parts is [`BufferError::Undecodable`].
    pub fn add(
        &mut self,
        partition: i32,
        offset: i64,
        decoded: Decoded,
    ) -> Result<Option<Batch>, BufferError> {
        self.add_part(partition, offset, decoded)
            .map_err(BufferError::undecodable)
    }

    fn add_part(
        &mut self,
        partition: i32,
        offset: i64,
        decoded: Decoded,
    ) -> Result<Option<Batch>, String> {
        let Some((index, count)) = decoded.split else {
            return Ok(Some(decoded.batch));
        };
        if index >= count || count > MAX_SPLIT_PARTS {
            return Err(format!("bad split {index}/{count}"));
        }
        let key = (partition, decoded.batch.id.clone());
        let size = decoded.batch.records.get_array_memory_size();
        let entry = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            first_offset: offset,
            count,
            parts: BTreeMap::new(),
            bytes: 0,
            template: Batch {
                records: RecordBatch::new_empty(decoded.batch.records.schema()),
                ..decoded.batch.clone()
            },
        });
        if entry.count != count {
            return Err(format!(
                "part {index}/{count} of batch {} disagrees with earlier parts ({} parts)",
                key.1, entry.count
            ));
        }
        if let Some((_, old)) = entry.parts.insert(index, (offset, decoded.batch.records)) {
            let old = old.get_array_memory_size();
            entry.bytes -= old;
            self.bytes -= old;
        }
        entry.bytes += size;
        self.bytes += size;
        if entry.parts.len() < entry.count {
            return Ok(None);
        }
        let done = self.pending.remove(&key).expect("entry exists");
        self.bytes -= done.bytes;
        let parts: Vec<RecordBatch> = done.parts.into_values().map(|(_, r)| r).collect();
        let schema = parts[0].schema();
        let records = concat_batches(&schema, &parts).map_err(|e| e.to_string())?;
        Ok(Some(Batch {
            records,
            ..done.template
        }))
    }

    /// The lowest first offset of an incomplete batch in `partition`: commits must stay
    /// below it.
    pub fn low_watermark(&self, partition: i32) -> Option<i64> {
        self.pending
            .iter()
            .filter(|((p, _), _)| *p == partition)
            .map(|(_, v)| v.first_offset)
            .min()
    }

    /// The offset a delivery made after reading `offset` in `partition` may commit: past
    /// it, but never past the first part of a batch still incomplete.
    pub fn commit_point(&self, partition: i32, offset: i64) -> i64 {
        self.low_watermark(partition)
            .map_or(offset + 1, |low| low.min(offset + 1))
    }

    /// Drops the parts held for `partition`: it was taken from this consumer (a
    /// rebalance gave it to another member of the group), which reads those batches
    /// whole from the committed offset.
    pub fn forget(&mut self, partition: i32) {
        let mut freed = 0;
        self.pending.retain(|(p, _), pending| {
            let keep = *p != partition;
            if !keep {
                freed += pending.bytes;
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Whether parts of incomplete batches are held for `partition`.
    pub fn holds(&self, partition: i32) -> bool {
        self.pending.keys().any(|(p, _)| *p == partition)
    }

    /// The parts of the batches that went beyond the limits, now that `offset` was read in
    /// `partition` (oldest first): too old in messages, or beyond the count or bytes held.
    /// With `all`, every incomplete batch of `partition` (the subscriber knows no part of
    /// them can still come). They are forgotten: commits may pass them.
    pub fn orphans(&mut self, partition: i32, offset: i64, all: bool) -> Vec<OrphanPart> {
        let mut out = Vec::new();
        loop {
            let oldest = self
                .pending
                .iter()
                .filter(|((p, _), _)| *p == partition)
                .min_by_key(|(_, v)| v.first_offset)
                .map(|(k, v)| (k.clone(), v.first_offset));
            let Some((key, first)) = oldest else { break };
            let why = if all {
                "the rest of its parts is not in the log (its producer stopped mid-batch?)"
                    .to_owned()
            } else if offset.saturating_sub(first) >= self.limits.max_age_messages {
                format!(
                    "the rest of its parts did not come within {} messages",
                    self.limits.max_age_messages
                )
            } else if self.pending.len() > self.limits.max_batches {
                format!(
                    "more than {} batches were incomplete at once",
                    self.limits.max_batches
                )
            } else if self.bytes > self.limits.max_bytes {
                format!(
                    "incomplete batches held more than {} bytes",
                    self.limits.max_bytes
                )
            } else {
                break;
            };
            let gone = self.pending.remove(&key).expect("entry exists");
            self.bytes -= gone.bytes;
            let (have, count) = (gone.parts.len(), gone.count);
            for (index, (at, records)) in gone.parts {
                let part = Batch {
                    records,
                    ..gone.template.clone()
                };
                let payload = message_for(
                    &part,
                    WireFormat::ArrowZstd,
                    Some((index, count)),
                    &part.records,
                )
                .map(|m| m.to_frame())
                .unwrap_or_default();
                out.push(OrphanPart {
                    partition,
                    offset: at,
                    payload,
                    error: format!(
                        "part {index}/{count} of batch {} is orphaned: {have} of its {count} parts arrived and {why}",
                        key.1
                    ),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_testkit::batches::named;

    /// `n` records of about 50 bytes, ids from 0, read at a cursor.
    fn batch(n: i64) -> Batch {
        let ids: Vec<i64> = (0..n).collect();
        let records = named(&ids, |i| format!("name-{i}-{}", "x".repeat(40)));
        Batch::new("p", "n", SourcePosition::Cursor("c1".into()), records)
    }

    #[test]
    fn every_format_round_trips() {
        let b = batch(100);
        for format in [
            WireFormat::ArrowZstd,
            WireFormat::ArrowLz4,
            WireFormat::Arrow,
            WireFormat::JsonLines,
        ] {
            let msgs = encode(&b, format, usize::MAX).unwrap();
            assert_eq!(msgs.len(), 1);
            let frame = msgs[0].to_frame();
            let back = decode(&Message::from_frame(&frame).unwrap()).unwrap();
            assert_eq!(back.split, None);
            assert_eq!(back.batch.id, b.id);
            assert_eq!(back.batch.position, b.position);
            assert_eq!(back.batch.records, b.records, "{format:?}");
        }
    }

    #[test]
    fn an_oversized_batch_is_split_and_reassembled_in_any_order() {
        let b = batch(1000);
        let msgs = encode(&b, WireFormat::Arrow, 8 * 1024).unwrap();
        assert!(msgs.len() > 2, "{} parts", msgs.len());
        assert!(msgs.iter().all(|m| m.size() <= 8 * 1024));
        let mut r = Reassembler::default();
        let mut whole = None;
        // Deliver in reverse: only the last one completes the batch.
        for (i, m) in msgs.iter().enumerate().rev() {
            let out = r.add(0, 10 + i as i64, decode(m).unwrap()).unwrap();
            if i > 0 {
                assert!(out.is_none());
                assert_eq!(r.low_watermark(0), Some(10 + msgs.len() as i64 - 1));
            } else {
                whole = out;
            }
        }
        let whole = whole.unwrap();
        assert_eq!(whole.id, b.id);
        assert_eq!(whole.records, b.records);
        assert_eq!(r.low_watermark(0), None);
    }

    #[test]
    fn a_crafted_split_count_is_poison_not_an_allocation() {
        let mut m = encode(&batch(3), WireFormat::Arrow, usize::MAX)
            .unwrap()
            .remove(0);
        m.headers
            .insert("sluice.split".into(), "0/100000000000".into());
        let err = decode(&m).unwrap_err();
        assert!(err.to_string().contains("sluice.split"), "{err}");
        // Even past `decode`, the reassembler holds parts in a map, never `n` slots.
        let mut d = decode(&encode(&batch(3), WireFormat::Arrow, usize::MAX).unwrap()[0]).unwrap();
        d.split = Some((0, usize::MAX));
        assert!(Reassembler::default().add(0, 0, d).is_err());
    }

    #[test]
    fn parts_whose_batch_never_completes_are_orphaned_by_age_count_and_bytes() {
        let b = batch(1000);
        let parts = encode(&b, WireFormat::Arrow, 8 * 1024).unwrap();
        assert!(parts.len() > 3);
        let limits = ReassemblyLimits {
            max_batches: 64,
            max_bytes: usize::MAX,
            max_age_messages: 5,
        };
        let mut r = Reassembler::with_limits(limits);
        // Parts 0 and 1 at offsets 10 and 11, then whole batches only.
        for (i, m) in parts.iter().take(2).enumerate() {
            assert!(
                r.add(0, 10 + i as i64, decode(m).unwrap())
                    .unwrap()
                    .is_none()
            );
        }
        assert_eq!(r.commit_point(0, 12), 10);
        assert!(r.orphans(0, 14, false).is_empty());
        let orphans = r.orphans(0, 15, false);
        assert_eq!(
            orphans.iter().map(|o| o.offset).collect::<Vec<_>>(),
            [10, 11]
        );
        assert!(
            orphans[0].error.contains("orphaned"),
            "{}",
            orphans[0].error
        );
        // The payload is a frame of the part, for inspection.
        let back = decode(&Message::from_frame(&orphans[1].payload).unwrap()).unwrap();
        assert_eq!(back.split, Some((1, parts.len())));
        assert_eq!(r.commit_point(0, 15), 16);
        assert!(!r.holds(0));

        // Count: the oldest incomplete batch goes first.
        let mut r = Reassembler::with_limits(ReassemblyLimits {
            max_batches: 1,
            ..ReassemblyLimits::default()
        });
        let other = encode(&batch(999), WireFormat::Arrow, 8 * 1024).unwrap();
        r.add(0, 0, decode(&parts[0]).unwrap()).unwrap();
        r.add(0, 1, decode(&other[0]).unwrap()).unwrap();
        let orphans = r.orphans(0, 1, false);
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].offset, 0);
        assert_eq!(r.commit_point(0, 1), 1);

        // Bytes.
        let mut r = Reassembler::with_limits(ReassemblyLimits {
            max_bytes: 1,
            ..ReassemblyLimits::default()
        });
        r.add(0, 0, decode(&parts[0]).unwrap()).unwrap();
        assert_eq!(r.orphans(0, 0, false).len(), 1);
    }

    #[test]
    fn a_record_larger_than_the_limit_is_reported() {
        let err = encode(&batch(10), WireFormat::Arrow, 64).unwrap_err();
        assert!(matches!(err, BufferError::RecordTooLarge { .. }), "{err}");
        assert_eq!(err.class(), sluice_core::ErrorClass::PayloadTooLarge);
    }

    #[test]
    fn garbage_and_unknown_versions_are_errors_not_panics() {
        assert!(Message::from_frame(b"\x01").is_err());
        assert!(Message::from_frame(b"\xff\xff\xff\x00{}").is_err());
        let mut m = encode(&batch(3), WireFormat::ArrowZstd, usize::MAX)
            .unwrap()
            .remove(0);
        m.payload.truncate(m.payload.len() / 2);
        assert!(decode(&m).is_err());
        m.headers.insert("sluice.version".into(), "9".into());
        let err = decode(&m).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        assert_eq!(err.class(), sluice_core::ErrorClass::InvalidRequest);
        m.headers.clear();
        let err = decode(&m).unwrap_err();
        assert_eq!(err.to_string(), "missing header `sluice.version`");
        assert!(matches!(err, BufferError::Undecodable { .. }), "{err:?}");
    }
}
