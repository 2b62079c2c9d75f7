//! JSON pages → Arrow, beside the parsers tried as alternatives (criterion).
//!
//! Five pages of 1,000 mock API records (~575 KB each, what `scripts/bench.sh` serves),
//! throughput in bytes of response per second, one core:
//!
//! - `sluice fast path` and `sluice general path`: what the HTTP source does with a page
//!   under the benchmark's declared columns (`json` columns for the nested values), record
//!   digests included; the converter is reused from page to page, as the source does.
//! - `arrow-json decoder`: arrow's tape decoder on the same records, given as JSON lines
//!   (the page's array cut out beforehand, not timed) into the struct and list columns it
//!   infers: parse and build, but it cannot put an object into a text column, so it is a
//!   bound on parsing, not a replacement.
//! - `serde_json Value`, `sonic-rs Value`, `simd-json borrowed value`: parsing the page
//!   alone into a tree, no Arrow at all (simd-json parses in place: its copy of the page is
//!   made outside the timing).
//!
//! `cargo bench -p sluice-connectors --bench json_to_arrow` (add `-- <filter>` for some);
//! the numbers are in docs/benchmarks.md.

#![allow(unreachable_pub)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
mod common;

use sluice_connectors::http::{__BenchPages, NestedMode, RecordsConfig};
use sluice_testkit::mock_api::{MockApi, MockConfig};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

const PAGES: u32 = 5;

/// Pages 2 to 6 of the mock API's records (the first sets what a converter has seen).
fn pages() -> (Vec<u8>, Vec<Vec<u8>>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let mock = MockApi::start(MockConfig {
            records: u64::from(PAGES + 1) * 1000,
            page_size: 1000,
            ..MockConfig::default()
        })
        .await
        .expect("the mock API starts");
        let mut pages = common::fetch_pages(&mock, u64::from(PAGES) + 1).await;
        mock.shutdown().await;
        let first = pages.remove(0);
        (first, pages)
    })
}

/// A page's records as JSON lines (for arrow-json, which reads a stream of objects).
fn json_lines(page: &[u8]) -> Vec<u8> {
    let doc: serde_json::Value = serde_json::from_slice(page).expect("a JSON page");
    let mut out = Vec::with_capacity(page.len());
    for record in doc["data"]["items"].as_array().expect("a records array") {
        serde_json::to_writer(&mut out, record).expect("writes");
        out.push(b'\n');
    }
    out
}

fn json_to_arrow(c: &mut Criterion) {
    let (first, pages) = pages();
    let bytes: usize = pages.iter().map(Vec::len).sum();
    let path = RecordsConfig::Path("$.data.items".into());
    let schema = common::declared_columns();

    let mut group = c.benchmark_group("json_to_arrow");
    group
        .throughput(Throughput::Bytes(bytes as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));

    for (label, fast) in [("sluice fast path", true), ("sluice general path", false)] {
        let mut conv =
            __BenchPages::new(&path, &schema, NestedMode::JsonText).expect("a converter");
        conv.page(&first, fast).expect("converts");
        group.bench_function(label, |b| {
            b.iter(|| {
                let rows: usize = pages
                    .iter()
                    .map(|p| conv.page(p, fast).expect("converts"))
                    .sum();
                assert_eq!(rows, PAGES as usize * 1000);
            })
        });
    }

    let lines: Vec<Vec<u8>> = pages.iter().map(|p| json_lines(p)).collect();
    let (inferred, _) =
        arrow::json::reader::infer_json_schema_from_seekable(Cursor::new(json_lines(&first)), None)
            .expect("a schema");
    let inferred = Arc::new(inferred);
    group.bench_function("arrow-json decoder, struct columns", |b| {
        b.iter(|| {
            let mut rows = 0;
            for page in &lines {
                let mut decoder = arrow::json::ReaderBuilder::new(inferred.clone())
                    .with_batch_size(1000)
                    .build_decoder()
                    .expect("a decoder");
                decoder.decode(page).expect("decodes");
                rows += decoder
                    .flush()
                    .expect("flushes")
                    .map_or(0, |b| b.num_rows());
            }
            assert_eq!(rows, PAGES as usize * 1000);
        })
    });

    group.bench_function("serde_json Value, parse only", |b| {
        b.iter(|| {
            for page in &pages {
                let v: serde_json::Value = serde_json::from_slice(page).expect("parses");
                std::hint::black_box(v);
            }
        })
    });
    group.bench_function("sonic-rs Value, parse only", |b| {
        b.iter(|| {
            for page in &pages {
                let v: sonic_rs::Value = sonic_rs::from_slice(page).expect("parses");
                std::hint::black_box(v);
            }
        })
    });
    group.bench_function("simd-json borrowed value, parse only", |b| {
        b.iter_batched(
            || pages.clone(),
            |mut copies| {
                for page in &mut copies {
                    let v = simd_json::to_borrowed_value(page).expect("parses");
                    std::hint::black_box(&v);
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, json_to_arrow);
criterion_main!(benches);
