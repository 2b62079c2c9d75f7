//! `sluice reconcile`: what a source holds against what a sink holds. Both ends are
//! counted; where the records have an integer key, both are checksummed by key range
//! (count and sum of the keys per bucket, computed where the data lives), only the
//! ranges whose checksums differ are read key by key, and each key missing from the sink
//! is looked for in the failed-batch store.

use sluice_config::plan::Plan;
use sluice_config::reconcile::{Bucket, KeySet, Since};
use sluice_config::spec::nodes::Role;
use sluice_core::{ConnectorError, ErrorClass};
use sluice_state::{FailedBatchFilter, StateStore};
use std::collections::{BTreeMap, BTreeSet};

use crate::build::BuildContext;

/// What to compare.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// Only the pairs with this node (a source or a sink).
    pub node: Option<String>,
    /// Only records whose watermark column is at or after this value.
    pub since: Option<String>,
    /// The key column at the sink (default: its upsert key, else `id`), followed back
    /// to the source through the transforms between them.
    pub key: Option<String>,
    /// How many missing and extra keys to list.
    pub limit: usize,
    /// How many key ranges to checksum.
    pub buckets: i64,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            node: None,
            since: None,
            key: None,
            limit: 20,
            buckets: 64,
        }
    }
}

/// A key range whose checksums differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDiff {
    /// The smallest and largest key of the range (`width` keys wide).
    pub from: i64,
    /// The largest key of the range.
    pub to: i64,
    /// The source's keys in it.
    pub source: i64,
    /// The sink's keys in it.
    pub sink: i64,
}

/// A key missing from the sink, and the failed batch that holds it, if one does.
#[derive(Debug, Clone)]
pub struct Missing {
    /// The key.
    pub key: i64,
    /// The unresolved failed batch holding it: its id, node and class.
    pub failed_batch: Option<(String, String, ErrorClass)>,
}

/// One source compared with one sink.
#[derive(Debug, Clone)]
pub struct PairReport {
    /// The source node and what was read of it.
    pub source: (String, String),
    /// The sink node and what was read of it.
    pub sink: (String, String),
    /// The key column, when the records were compared by key.
    pub key: Option<String>,
    /// The filter applied.
    pub since: Option<Since>,
    /// Records at the source.
    pub source_count: Option<i64>,
    /// Records at the sink.
    pub sink_count: Option<i64>,
    /// Key ranges checksummed, and their width.
    pub ranges: (usize, i64),
    /// The ranges whose checksums differ.
    pub differing: Vec<RangeDiff>,
    /// Keys the sink lacks (the first `limit`).
    pub missing: Vec<Missing>,
    /// How many keys the sink lacks.
    pub missing_total: usize,
    /// Keys only the sink has (the first `limit`).
    pub extra: Vec<i64>,
    /// How many keys only the sink has.
    pub extra_total: usize,
    /// Why the comparison could not be made.
    pub error: Option<ConnectorError>,
}

impl PairReport {
    /// Whether both ends hold the same records.
    pub fn matches(&self) -> bool {
        self.error.is_none()
            && self.source_count == self.sink_count
            && self.differing.is_empty()
            && self.missing_total == 0
            && self.extra_total == 0
    }

    /// As JSON (for `--json` and a service).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "source": {"node": self.source.0, "read": self.source.1, "count": self.source_count},
            "sink": {"node": self.sink.0, "read": self.sink.1, "count": self.sink_count},
            "key": self.key,
            "since": self.since.as_ref().map(|s| serde_json::json!({"column": s.column, "value": s.value})),
            "matches": self.matches(),
            "ranges": {"checksummed": self.ranges.0, "width": self.ranges.1},
            "differing_ranges": self.differing.iter().map(|d| serde_json::json!({
                "from": d.from, "to": d.to, "source": d.source, "sink": d.sink,
            })).collect::<Vec<_>>(),
            "missing_total": self.missing_total,
            "missing": self.missing.iter().map(|m| serde_json::json!({
                "key": m.key,
                "failed_batch": m.failed_batch.as_ref().map(|(id, node, class)| serde_json::json!({
                    "id": id, "node": node, "class": class.as_str(),
                })),
            })).collect::<Vec<_>>(),
            "extra_total": self.extra_total,
            "extra": self.extra,
            "class": self.error.as_ref().map(|e| e.class.as_str()),
            "error": self.error.as_ref().map(|e| e.message.clone()),
        })
    }
}

/// The source nodes whose records reach `sink` (through transforms).
fn sources_of(plan: &Plan, sink: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![sink.to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(node) = plan.nodes.iter().find(|n| n.id == id) else {
            continue;
        };
        if node.role == Role::Source {
            out.insert(id);
        } else {
            todo.extend(node.inputs.iter().cloned());
        }
    }
    out.into_iter().collect()
}

/// The name the sink's column `key` has at `source`: followed back through the nodes
/// between them (a transform's `rename`). `None` when a node on the way makes the column.
fn key_at_source(plan: &Plan, sink: &str, source: &str, key: &str) -> Option<String> {
    // The first path from the sink to the source, node by node (depth first on inputs).
    let mut path: Vec<&str> = Vec::new();
    fn walk<'p>(plan: &'p Plan, id: &'p str, to: &str, path: &mut Vec<&'p str>) -> bool {
        if path.contains(&id) {
            return false;
        }
        path.push(id);
        if id == to {
            return true;
        }
        if let Some(node) = plan.nodes.iter().find(|n| n.id == id) {
            for input in &node.inputs {
                if walk(plan, input, to, path) {
                    return true;
                }
            }
        }
        path.pop();
        false
    }
    if !walk(plan, sink, source, &mut path) {
        return Some(key.to_owned());
    }
    let mut name = key.to_owned();
    // The nodes strictly between the sink and the source, from the sink's side.
    for id in path.iter().skip(1).take(path.len().saturating_sub(2)) {
        let node = plan.nodes.iter().find(|n| n.id == *id)?;
        name = node.config.column_before(&name)?;
    }
    Some(name)
}

/// Compares each sink with each source that feeds it (or those with `options.node`).
pub async fn reconcile(
    plan: &Plan,
    ctx: &BuildContext,
    options: &ReconcileOptions,
) -> Vec<PairReport> {
    let ctx = &ctx.for_pipeline(&plan.pipeline);
    let store = StateStore::open(&ctx.database_url(plan.state.expose()))
        .await
        .ok();
    let mut out = Vec::new();
    for sink in plan.nodes.iter().filter(|n| n.role == Role::Sink) {
        for source_id in sources_of(plan, &sink.id) {
            if options
                .node
                .as_deref()
                .is_some_and(|n| n != sink.id && n != source_id)
            {
                continue;
            }
            let Some(source) = plan.nodes.iter().find(|n| n.id == source_id) else {
                continue;
            };
            let key = options
                .key
                .clone()
                .or_else(|| sink.config.key_columns().into_iter().next())
                .unwrap_or_else(|| "id".to_owned());
            let src = source.config.keyset(source, ctx);
            let dst = sink.config.keyset(sink, ctx);
            let mut report = PairReport {
                source: (source.id.clone(), String::new()),
                sink: (sink.id.clone(), String::new()),
                key: None,
                since: None,
                source_count: None,
                sink_count: None,
                ranges: (0, 0),
                differing: Vec::new(),
                missing: Vec::new(),
                missing_total: 0,
                extra: Vec::new(),
                extra_total: 0,
                error: None,
            };
            let (Some(mut src), Some(mut dst)) = (src, dst) else {
                report.error = Some(ConnectorError::new(
                    ErrorClass::InvalidRequest,
                    format!(
                        "a {} cannot be counted or read again: reconcile compares SQL sources and HTTP sources with SQL sinks",
                        if source.config.keyset(source, ctx).is_none() {
                            source.kind_label()
                        } else {
                            sink.kind_label()
                        }
                    ),
                ));
                out.push(report);
                continue;
            };
            report.source.1 = src.describe();
            report.sink.1 = dst.describe();
            let Some(source_key) = key_at_source(plan, &sink.id, &source.id, &key) else {
                report.error = Some(ConnectorError::new(
                    ErrorClass::InvalidRequest,
                    format!(
                        "the key `{key}` is made by a transform between `{}` and `{}`, not read from the source: name a key the records carry from the source with `--key`",
                        source.id, sink.id
                    ),
                ));
                out.push(report);
                continue;
            };
            if let Err(e) = compare(
                &mut report,
                src.as_mut(),
                dst.as_mut(),
                (&source_key, &key),
                options,
                store.as_ref(),
                &plan.pipeline,
            )
            .await
            {
                report.error = Some(e);
            }
            out.push(report);
        }
    }
    out
}

async fn compare(
    report: &mut PairReport,
    src: &mut dyn KeySet,
    dst: &mut dyn KeySet,
    (source_key, key): (&str, &str),
    options: &ReconcileOptions,
    store: Option<&StateStore>,
    pipeline: &str,
) -> Result<(), ConnectorError> {
    let since = match &options.since {
        Some(value) => Some(Since {
            column: src.since_column().ok_or_else(|| {
                ConnectorError::new(
                    ErrorClass::InvalidRequest,
                    "--since needs a source with a watermark (`watermark: { column }` or `incremental: { field }`): its column is compared at both ends",
                )
            })?,
            value: value.clone(),
        }),
        None => None,
    };
    let since = since.as_ref();
    report.since = since.cloned();
    // The key range, from both ends.
    let a = src.bounds(source_key, since).await?;
    let b = dst.bounds(key, since).await?;
    report.source_count = Some(src.count(since).await?);
    report.sink_count = Some(dst.count(since).await?);
    report.key = Some(key.to_owned());
    let (lo, hi) = match (a, b) {
        (None, None) => return Ok(()),
        (Some((l, h)), None) | (None, Some((l, h))) => (l, h),
        (Some((l1, h1)), Some((l2, h2))) => (l1.min(l2), h1.max(h2)),
    };
    let span = (hi as i128 - lo as i128 + 1).max(1);
    let width = ((span + options.buckets.max(1) as i128 - 1) / options.buckets.max(1) as i128)
        .clamp(1, i64::MAX as i128) as i64;
    let ours = src.buckets(source_key, width, since).await?;
    let theirs = dst.buckets(key, width, since).await?;
    let all: BTreeSet<i64> = ours.keys().chain(theirs.keys()).copied().collect();
    report.ranges = (all.len(), width);
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    for bucket in all {
        let (x, y) = (
            ours.get(&bucket).copied().unwrap_or_default(),
            theirs.get(&bucket).copied().unwrap_or_default(),
        );
        if x == y {
            continue;
        }
        report.differing.push(range_of(bucket, width, x, y));
        let left = src.keys(source_key, width, bucket, since).await?;
        let right = dst.keys(key, width, bucket, since).await?;
        let r: BTreeSet<i64> = right.iter().copied().collect();
        let l: BTreeSet<i64> = left.iter().copied().collect();
        missing.extend(left.into_iter().filter(|k| !r.contains(k)));
        extra.extend(right.into_iter().filter(|k| !l.contains(k)));
    }
    report.missing_total = missing.len();
    report.extra_total = extra.len();
    extra.truncate(options.limit);
    report.extra = extra;
    missing.truncate(options.limit);
    let kept = match store {
        Some(store) if !missing.is_empty() => failed_keys(store, pipeline, key).await,
        _ => BTreeMap::new(),
    };
    report.missing = missing
        .into_iter()
        .map(|k| Missing {
            key: k,
            failed_batch: kept.get(&k).cloned(),
        })
        .collect();
    Ok(())
}

/// The range of keys a bucket holds (truncating division: bucket 0 holds both signs).
fn range_of(bucket: i64, width: i64, source: Bucket, sink: Bucket) -> RangeDiff {
    let (from, to) = match bucket {
        0 => (-(width - 1), width - 1),
        b if b > 0 => (b * width, b * width + width - 1),
        b => (b * width - width + 1, b * width),
    };
    let (from, to) = if bucket == 0 {
        (from.max(0), to)
    } else {
        (from, to)
    };
    RangeDiff {
        from,
        to,
        source: source.count,
        sink: sink.count,
    }
}

/// Every key held by an unresolved failed batch of the pipeline: the batch's id, node
/// and class.
async fn failed_keys(
    store: &StateStore,
    pipeline: &str,
    key: &str,
) -> BTreeMap<i64, (String, String, ErrorClass)> {
    let filter = FailedBatchFilter {
        pipeline: Some(pipeline.to_owned()),
        ..FailedBatchFilter::default()
    };
    let mut out = BTreeMap::new();
    let Ok(rows) = store.failed_batches(&filter, true).await else {
        return out;
    };
    for row in rows {
        let Ok(batch) = sluice_buffer::wire::Message::from_frame(&row.payload)
            .and_then(|m| sluice_buffer::wire::decode(&m))
        else {
            continue;
        };
        let Some(column) = batch.batch.records.column_by_name(key) else {
            continue;
        };
        let Ok(ints) = arrow::compute::cast(column, &arrow::datatypes::DataType::Int64) else {
            continue;
        };
        let Some(ints) = ints.as_any().downcast_ref::<arrow::array::Int64Array>() else {
            continue;
        };
        for k in ints.iter().flatten() {
            out.entry(k)
                .or_insert_with(|| (row.id.clone(), row.node.clone(), row.class));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_buckets() {
        let b = Bucket::default();
        assert_eq!(range_of(3, 100, b, b).from, 300);
        assert_eq!(range_of(3, 100, b, b).to, 399);
        assert_eq!(
            (range_of(0, 100, b, b).from, range_of(0, 100, b, b).to),
            (0, 99)
        );
    }
}
