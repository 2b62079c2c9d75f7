//! HTTP source benchmarks, printing the median of several runs:
//!
//! 1. JSON page → Arrow conversion throughput, one core (MB/s of response bytes);
//! 2. requests per second of the whole source against the mock API (small pages);
//! 3. records per second of the whole source with large pages.
//!
//! `SLUICE_BENCH_CASE=<part of a label>` runs only the JSON → Arrow cases that match (for a
//! profile). Run with `bash bench/http_bench.sh` (or `cargo bench -p sluice-connectors --bench
//! http_json_to_arrow`). `SLUICE_BENCH_RUNS` sets the runs per measurement (default 5).

#![allow(unreachable_pub)]

mod common;

use sluice_connectors::http::{
    __BenchPages, HttpSource, HttpSourceConfig, HttpSourceContext, NestedMode, RecordsConfig,
    SchemaConfig,
};
use sluice_core::Source;
use sluice_testkit::mock_api::{MockApi, MockConfig};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: a
    // short run then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("SLUICE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let records = if quick { 2_000 } else { 20_000 };
        let mock = MockApi::start(MockConfig { records, page_size: 1000, ..MockConfig::default() })
            .await
            .expect("the mock API starts");
        let pages = common::fetch_pages(&mock, records / 1000).await;
        let bytes: usize = pages.iter().map(Vec::len).sum();
        let path = RecordsConfig::Path("$.data.items".into());
        let declared = common::declared_columns();
        let cases = [
            ("declared columns, json text", &declared, NestedMode::JsonText),
            ("inferred, struct columns", &SchemaConfig::Infer, NestedMode::Struct),
            ("inferred, json text columns", &SchemaConfig::Infer, NestedMode::JsonText),
        ];
        for (label, schema, nested) in cases {
            for (path_label, fast) in [("general path", false), ("fast path", true)] {
                // `SLUICE_BENCH_CASE=fast` (a part of the label): only those, for a profile.
                let case = format!("{label}, {path_label}");
                if std::env::var("SLUICE_BENCH_CASE").is_ok_and(|c| !case.contains(&c)) {
                    continue;
                }
                let mut rates = Vec::new();
                for _ in 0..runs {
                    let mut conv = __BenchPages::new(&path, schema, nested).expect("a converter");
                    // The first page sets an inferred schema; measured from the second on.
                    conv.page(&pages[0], fast).expect("converts");
                    let t = Instant::now();
                    let mut rows = 0;
                    for p in &pages[1..] {
                        rows += conv.page(p, fast).expect("converts");
                    }
                    assert_eq!(rows as u64, records - 1000);
                    let measured: usize = pages[1..].iter().map(Vec::len).sum();
                    rates.push(measured as f64 / 1e6 / t.elapsed().as_secs_f64());
                }
                println!("json→arrow ({label}, {path_label}, pages of 1000 records, {:.1} MB): median {:.1} MB/s per core over {runs} runs", bytes as f64 / 1e6, median(rates));
            }
        }

        let only_cases = std::env::var("SLUICE_BENCH_CASE").is_ok();
        for (label, page, unit) in [("small pages (10 records)", 10u32, "requests/s"), ("large pages (1000 records)", 1000, "records/s")] {
            if only_cases {
                break;
            }
            let mut rates = Vec::new();
            let n = if page == 10 { records.min(5_000) } else { records };
            for _ in 0..runs {
                let mut cfg = HttpSourceConfig::from_spec(serde_json::json!({
                    "url": mock.url("/offset/items"),
                    "pagination": {"offset_limit": {"limit": page}},
                    "records": {"path": "$.data.items"},
                    "stop": {"total": "$.meta.total"},
                    "max_pages": 1_000_000,
                }))
                .expect("config");
                cfg.breaker.enabled = false;
                let mut src = HttpSource::new(cfg, HttpSourceContext::default()).expect("source");
                let before = mock.data_requests().len();
                let t = Instant::now();
                let mut rows = 0u64;
                while let Some(b) = src.next_batch().await.expect("no error") {
                    rows += b.batch.num_rows() as u64;
                    if rows >= n {
                        break;
                    }
                }
                let secs = t.elapsed().as_secs_f64().max(1e-9);
                let reqs = (mock.data_requests().len() - before) as f64;
                mock.clear_log();
                rates.push(if page == 10 { reqs / secs } else { rows as f64 / secs });
            }
            println!("source against the mock, {label}: median {:.0} {unit} over {runs} runs", median(rates));
        }
        mock.shutdown().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
}
