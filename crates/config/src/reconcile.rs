//! What `sluice reconcile` asks of a node kind: the records a source holds or a sink
//! wrote, counted and summed by key range, so that the engine can compare both ends and
//! narrow a difference to the ranges (then the keys) that differ.
//!
//! Keys are integers (ids); a bucket `b` of width `w` holds the keys `k` with
//! `k / w == b`, the division truncating toward zero (as SQL's integer division does).

use sluice_core::ConnectorError;
use sluice_core::node::BoxFuture;
use std::collections::BTreeMap;

/// The checksum of one bucket: how many keys, and their sum modulo [`CHECKSUM_MODULUS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Keys in the bucket.
    pub count: i64,
    /// The sum of `key % CHECKSUM_MODULUS` over the bucket's keys.
    pub sum: i64,
}

/// The modulus of a bucket's sum (a prime under 2^31, so that sums of billions of keys
/// fit in 64 bits).
pub const CHECKSUM_MODULUS: i64 = 2_147_483_647;

/// Which records count: those whose `column` is at or after `since` (as the data holds
/// it: a timestamp or a number), or all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Since {
    /// The column (or record field) compared.
    pub column: String,
    /// The value, as text.
    pub value: String,
}

/// The records at one end of a pipeline, as `sluice reconcile` reads them.
pub trait KeySet: Send {
    /// What is read, without secrets: `table items on PostgreSQL at 127.0.0.1:5432`.
    fn describe(&self) -> String;
    /// The column `--since` compares when none is given (a source's watermark).
    fn since_column(&self) -> Option<String> {
        None
    }
    /// The number of records.
    fn count<'a>(
        &'a mut self,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<i64, ConnectorError>>;
    /// The smallest and largest key, `None` when there are no records.
    fn bounds<'a>(
        &'a mut self,
        key: &'a str,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, ConnectorError>>;
    /// Each bucket of `width` that holds keys, with its checksum.
    fn buckets<'a>(
        &'a mut self,
        key: &'a str,
        width: i64,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<BTreeMap<i64, Bucket>, ConnectorError>>;
    /// The keys of one bucket, sorted.
    fn keys<'a>(
        &'a mut self,
        key: &'a str,
        width: i64,
        bucket: i64,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<Vec<i64>, ConnectorError>>;
}

/// A bucket's checksum over keys held in memory (for kinds that re-read their records).
pub fn buckets_of(keys: &[i64], width: i64) -> BTreeMap<i64, Bucket> {
    let mut out: BTreeMap<i64, Bucket> = BTreeMap::new();
    for k in keys {
        let b = out.entry(k / width.max(1)).or_default();
        b.count += 1;
        b.sum += k % CHECKSUM_MODULUS;
    }
    out
}
