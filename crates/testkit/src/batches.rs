//! Batches for tests: records with an `id` column (and often a `name`), read from a page
//! by node `src` of pipeline `p`. Tests that only need "some records" build them here,
//! one way, and read them back with [`ids_of`].
//!
//! ```
//! use sluice_testkit::batches::{ids_of, named_batch, page_ids};
//! let batch = named_batch(2, &page_ids(2, 3, 1000), |i| format!("record {i}"));
//! assert_eq!(ids_of(&batch), [2000, 2001, 2002]);
//! ```

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use sluice_core::{Batch, SourcePosition};
use std::sync::Arc;

/// The pipeline of every batch built here.
pub const PIPELINE: &str = "p";

/// The node of every batch built here.
pub const NODE: &str = "src";

/// `rows` ids starting at `page * stride`: the ids of page `page` when no page holds more
/// than `stride` records, so that pages never share an id.
pub fn page_ids(page: u64, rows: i64, stride: i64) -> Vec<i64> {
    let first = page as i64 * stride;
    (first..first + rows).collect()
}

/// Records with one column, `id` (Int64, not null).
pub fn ids(ids: &[i64]) -> RecordBatch {
    RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef)])
        .expect("an id column is a valid record batch")
}

/// Records with the columns `id` and `name` (Utf8), each name made by `name(id)`.
pub fn named(ids: &[i64], name: impl Fn(i64) -> String) -> RecordBatch {
    let names: Vec<String> = ids.iter().map(|&i| name(i)).collect();
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
        ("name", Arc::new(StringArray::from(names)) as ArrayRef),
    ])
    .expect("id and name columns of one length are a valid record batch")
}

/// `records` as the batch node [`NODE`] of pipeline [`PIPELINE`] read from page `page`.
/// The same page with the same records is the same batch (the same id and ledger key).
pub fn page_batch(page: u64, records: RecordBatch) -> Batch {
    Batch::new(PIPELINE, NODE, SourcePosition::page(page), records)
}

/// The batch of page `page` holding the records of [`ids`].
pub fn ids_batch(page: u64, ids: &[i64]) -> Batch {
    page_batch(page, self::ids(ids))
}

/// The batch of page `page` holding the records of [`named`].
pub fn named_batch(page: u64, ids: &[i64], name: impl Fn(i64) -> String) -> Batch {
    page_batch(page, named(ids, name))
}

/// The values of the batch's `id` column (Int64), in order.
///
/// # Panics
/// When the batch has no Int64 `id` column, or one with a null.
pub fn ids_of(batch: &Batch) -> Vec<i64> {
    let column = batch
        .records
        .column_by_name("id")
        .unwrap_or_else(|| panic!("batch {} has no `id` column", batch.id));
    let ids = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap_or_else(|| panic!("the `id` column of batch {} is not Int64", batch.id));
    assert_eq!(ids.null_count(), 0, "batch {} has null ids", batch.id);
    ids.values().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_do_not_share_ids() {
        assert_eq!(page_ids(0, 3, 10), [0, 1, 2]);
        assert_eq!(page_ids(4, 2, 10), [40, 41]);
    }

    #[test]
    fn the_same_page_and_records_are_the_same_batch() {
        let a = named_batch(1, &[1, 2], |i| format!("n{i}"));
        let b = named_batch(1, &[1, 2], |i| format!("n{i}"));
        let other = named_batch(1, &[1, 3], |i| format!("n{i}"));
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, other.id);
        assert_eq!(ids_of(&other), [1, 3]);
        assert_eq!(a.records.num_columns(), 2);
        assert_eq!(ids_batch(7, &[7]).records.num_columns(), 1);
    }
}
