//! Batches and their deterministic ids.

use arrow::array::RecordBatch;
use arrow::ipc::writer::StreamWriter;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A batch id: 32 hex characters of a BLAKE3 hash of `(pipeline, node, position, content)`.
///
/// The same records read from the same position of the same node always get the same id,
/// which is what lets sinks skip a redelivered batch through their ledger.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(String);

impl BatchId {
    /// Wraps an id read back from storage (a ledger row, a Kafka header, the state store).
    pub fn from_stored(id: impl Into<String>) -> Self {
        BatchId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn derive(parts: &[&[u8]]) -> Self {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            // Length-prefix every part so that ("ab", "c") and ("a", "bc") differ.
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let hex = hasher.finalize().to_hex();
        BatchId(hex[..32].to_owned())
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchId({})", self.0)
    }
}

/// Where in the source a batch came from: what a source needs to resume after it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum SourcePosition {
    /// A page number (page-number pagination).
    Page(u64),
    /// A record offset (offset/limit pagination, file line offset).
    Offset(u64),
    /// An opaque cursor returned by the API.
    Cursor(String),
    /// A next-page URL (JSON path or `Link` header pagination).
    Url(String),
    /// A watermark value (incremental SQL sources).
    Watermark(String),
    /// A position in a log: Kafka or the embedded buffer.
    Log {
        /// Partition number.
        partition: i32,
        /// Offset within the partition.
        offset: i64,
    },
    /// The source has a single position (a non-paginated request, a whole file).
    Whole,
}

impl SourcePosition {
    /// A page number.
    pub fn page(n: u64) -> Self {
        SourcePosition::Page(n)
    }

    /// A stable byte encoding, used in batch ids.
    fn key(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a source position always serializes")
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourcePosition::Page(n) => write!(f, "page {n}"),
            SourcePosition::Offset(n) => write!(f, "offset {n}"),
            SourcePosition::Cursor(c) => write!(f, "cursor {c}"),
            SourcePosition::Url(u) => write!(f, "url {u}"),
            SourcePosition::Watermark(w) => write!(f, "watermark {w}"),
            SourcePosition::Log { partition, offset } => {
                write!(f, "partition {partition} offset {offset}")
            }
            SourcePosition::Whole => f.write_str("whole"),
        }
    }
}

/// Which part of a split batch this is. Parts keep their parent's id, so a sink never
/// mistakes half a batch for the whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPart {
    /// The id of the batch this part was split from (the original, not an intermediate part).
    pub parent: BatchId,
    /// The first row of the original batch that this part holds.
    pub first_row: usize,
    /// How many rows of the original batch this part holds.
    pub rows: usize,
}

/// The unit of work, of buffering, of failure and of replay.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Deterministic id: see [`BatchId`].
    pub id: BatchId,
    /// The pipeline that produced it.
    pub pipeline: String,
    /// The node that produced it.
    pub node: String,
    /// The source position that produced it.
    pub position: SourcePosition,
    /// Set on the parts of a split batch.
    pub part: Option<BatchPart>,
    /// The records.
    pub records: RecordBatch,
}

impl Batch {
    /// A new batch whose id is derived from the pipeline, node, position and a hash of
    /// the records' Arrow IPC encoding.
    pub fn new(
        pipeline: impl Into<String>,
        node: impl Into<String>,
        position: SourcePosition,
        records: RecordBatch,
    ) -> Self {
        let content = content_hash(&records);
        Self::with_content_hash(pipeline, node, position, &content, records)
    }

    /// A new batch whose content hash the caller computed already (a source that hashed
    /// the raw page bytes, say), which saves encoding the records to hash them.
    pub fn with_content_hash(
        pipeline: impl Into<String>,
        node: impl Into<String>,
        position: SourcePosition,
        content_hash: &[u8],
        records: RecordBatch,
    ) -> Self {
        let pipeline = pipeline.into();
        let node = node.into();
        let id = BatchId::derive(&[
            pipeline.as_bytes(),
            node.as_bytes(),
            &position.key(),
            content_hash,
        ]);
        Batch {
            id,
            pipeline,
            node,
            position,
            part: None,
            records,
        }
    }

    /// A batch a node made from `input` (a transform's output): its id derives from the
    /// input's ledger key, which already covers the input's position and content, and not
    /// from the output's records. The same input so always gives the same output id, even
    /// through a transform whose output differs from run to run (`now()`), and a batch
    /// re-read after a crash is recognised downstream of the transform too.
    pub fn derived(
        pipeline: impl Into<String>,
        node: impl Into<String>,
        input: &Batch,
        records: RecordBatch,
    ) -> Self {
        let key = input.ledger_key();
        Self::with_content_hash(
            pipeline,
            node,
            input.position.clone(),
            key.as_str().as_bytes(),
            records,
        )
    }

    /// Number of records.
    pub fn num_rows(&self) -> usize {
        self.records.num_rows()
    }

    /// The id a sink writes to its ledger: the parent's id plus the row range for a part,
    /// the batch's own id otherwise. Two parts of one batch never share a ledger key, and
    /// the same part re-split the same way always gets the same key.
    pub fn ledger_key(&self) -> BatchId {
        match &self.part {
            None => self.id.clone(),
            Some(p) => BatchId(format!("{}:{}+{}", p.parent, p.first_row, p.rows)),
        }
    }

    /// Splits the batch in two halves (zero-copy slices). Returns `None` for a batch of
    /// fewer than two records: such a record must be quarantined, not split.
    pub fn split(&self) -> Option<(Batch, Batch)> {
        let rows = self.num_rows();
        if rows < 2 {
            return None;
        }
        let mid = rows / 2;
        Some((self.slice(0, mid), self.slice(mid, rows - mid)))
    }

    /// Splits into parts of at most `max_rows` rows each, in order.
    pub fn chunks(&self, max_rows: usize) -> Vec<Batch> {
        let max_rows = max_rows.max(1);
        let rows = self.num_rows();
        if rows <= max_rows {
            return vec![self.clone()];
        }
        (0..rows)
            .step_by(max_rows)
            .map(|start| self.slice(start, max_rows.min(rows - start)))
            .collect()
    }

    /// A part of this batch holding rows `offset..offset+len` (relative to this batch).
    pub fn slice(&self, offset: usize, len: usize) -> Batch {
        let (parent, base) = match &self.part {
            None => (self.id.clone(), 0),
            Some(p) => (p.parent.clone(), p.first_row),
        };
        Batch {
            id: self.id.clone(),
            pipeline: self.pipeline.clone(),
            node: self.node.clone(),
            position: self.position.clone(),
            part: Some(BatchPart {
                parent,
                first_row: base + offset,
                rows: len,
            }),
            records: self.records.slice(offset, len),
        }
    }
}

/// A short, stable fingerprint of a schema: 16 hex characters of a BLAKE3 hash of each
/// field's name, type and nullability. Two batches with the same fingerprint can be
/// concatenated; a change of fingerprint between pages is schema drift.
pub fn schema_fingerprint(schema: &arrow::datatypes::Schema) -> String {
    let mut hasher = blake3::Hasher::new();
    for field in schema.fields() {
        let line = format!(
            "{}\u{1f}{}\u{1f}{}\n",
            field.name(),
            field.data_type(),
            field.is_nullable()
        );
        hasher.update(line.as_bytes());
    }
    hasher.finalize().to_hex()[..16].to_owned()
}

/// BLAKE3 of the batch's Arrow IPC stream encoding.
fn content_hash(records: &RecordBatch) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    {
        let mut writer = StreamWriter::try_new(&mut hasher, &records.schema())
            .expect("a stream writer over a hasher cannot fail to start");
        writer
            .write(records)
            .expect("encoding a valid record batch into a hasher cannot fail");
        writer
            .finish()
            .expect("finishing an IPC stream into a hasher cannot fail");
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn records(ids: &[i64]) -> RecordBatch {
        let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids.to_vec())) as _),
            ("name", Arc::new(StringArray::from(names)) as _),
        ])
        .unwrap()
    }

    #[test]
    fn same_page_same_records_same_id() {
        let a = Batch::new("p", "n", SourcePosition::page(3), records(&[1, 2]));
        let b = Batch::new("p", "n", SourcePosition::page(3), records(&[1, 2]));
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.as_str().len(), 32);
    }

    #[test]
    fn changed_records_position_or_node_give_a_new_id() {
        let base = Batch::new("p", "n", SourcePosition::page(3), records(&[1, 2]));
        let changed = Batch::new("p", "n", SourcePosition::page(3), records(&[1, 3]));
        let moved = Batch::new("p", "n", SourcePosition::page(4), records(&[1, 2]));
        let other_node = Batch::new("p", "m", SourcePosition::page(3), records(&[1, 2]));
        let cursor = Batch::new(
            "p",
            "n",
            SourcePosition::Cursor("3".into()),
            records(&[1, 2]),
        );
        for other in [changed, moved, other_node, cursor] {
            assert_ne!(base.id, other.id);
        }
    }

    #[test]
    fn split_keeps_parent_and_gives_distinct_ledger_keys() {
        let b = Batch::new("p", "n", SourcePosition::page(1), records(&[1, 2, 3, 4, 5]));
        let (left, right) = b.split().unwrap();
        assert_eq!((left.num_rows(), right.num_rows()), (2, 3));
        let (rl, rr) = right.split().unwrap();
        for part in [&left, &rl, &rr] {
            assert_eq!(part.part.as_ref().unwrap().parent, b.id);
        }
        assert_eq!(rr.part.as_ref().unwrap().first_row, 3);
        let keys: std::collections::HashSet<_> = [&b, &left, &right, &rl, &rr]
            .iter()
            .map(|x| x.ledger_key())
            .collect();
        assert_eq!(keys.len(), 5);
        // The same split twice gives the same keys: replays stay idempotent.
        assert_eq!(b.split().unwrap().1.ledger_key(), right.ledger_key());
    }

    #[test]
    fn fingerprint_follows_names_and_types() {
        let a = records(&[1]);
        let b = records(&[2, 3]);
        assert_eq!(
            schema_fingerprint(&a.schema()),
            schema_fingerprint(&b.schema())
        );
        let other =
            RecordBatch::try_from_iter([("id", Arc::new(StringArray::from(vec!["1"])) as _)])
                .unwrap();
        assert_ne!(
            schema_fingerprint(&a.schema()),
            schema_fingerprint(&other.schema())
        );
    }

    #[test]
    fn a_derived_batch_follows_its_input_not_its_content() {
        let input = Batch::new("p", "src", SourcePosition::page(1), records(&[1, 2]));
        let a = Batch::derived("p", "t", &input, records(&[1, 2]));
        let b = Batch::derived("p", "t", &input, records(&[7, 8]));
        assert_eq!(a.id, b.id, "the output's content does not change the id");
        assert_eq!(a.position, input.position);
        let other = Batch::new("p", "src", SourcePosition::page(1), records(&[1, 3]));
        assert_ne!(a.id, Batch::derived("p", "t", &other, records(&[1, 2])).id);
        let (left, right) = input.split().unwrap();
        let l = Batch::derived("p", "t", &left, records(&[1]));
        let r = Batch::derived("p", "t", &right, records(&[2]));
        assert_ne!(
            l.id, r.id,
            "the parts of a split input give distinct outputs"
        );
        assert_ne!(a.id, input.id);
    }

    #[test]
    fn a_single_record_does_not_split() {
        let b = Batch::new("p", "n", SourcePosition::Whole, records(&[1]));
        assert!(b.split().is_none());
    }

    #[test]
    fn chunks_cover_every_row_in_order() {
        let b = Batch::new(
            "p",
            "n",
            SourcePosition::Whole,
            records(&[1, 2, 3, 4, 5, 6, 7]),
        );
        let parts = b.chunks(3);
        assert_eq!(
            parts.iter().map(Batch::num_rows).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        assert_eq!(parts[2].part.as_ref().unwrap().first_row, 6);
    }
}
