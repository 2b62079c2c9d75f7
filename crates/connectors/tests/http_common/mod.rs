//! Helpers shared by the HTTP source tests: a fast retry policy, draining a source.

#![allow(dead_code, unreachable_pub)]

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use sluice_connectors::http::{HttpSource, HttpSourceConfig, HttpSourceContext};
use sluice_core::{ConnectorError, ConnectorEvent, RetryPolicy, Source, SourceBatch};
use std::time::Duration;

/// Small backoffs: nothing waits longer than it must.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        multiplier: 2.0,
        max_elapsed: Some(Duration::from_secs(20)),
    }
}

pub fn config(url: String, extra: serde_json::Value) -> HttpSourceConfig {
    let mut base = serde_json::json!({ "url": url });
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let mut cfg = HttpSourceConfig::from_spec(base)
        .unwrap_or_else(|e| panic!("the test config is valid: {:#?}", e.diagnostics()));
    cfg.retry = fast_retry();
    cfg
}

pub fn source(cfg: HttpSourceConfig, checkpoint: Option<serde_json::Value>) -> HttpSource {
    HttpSource::new(
        cfg,
        HttpSourceContext {
            pipeline: "test".into(),
            node: "api".into(),
            checkpoint,
            breakers: None,
            budgets: None,
            metrics: None,
        },
    )
    .expect("source builds")
}

/// Everything a run produced.
pub struct Run {
    pub batches: Vec<SourceBatch>,
    pub errors: Vec<ConnectorError>,
    pub events: Vec<ConnectorEvent>,
    /// What the source handed over for the failed-batch store.
    pub quarantined: Vec<sluice_core::QuarantinedRecords>,
}

impl Run {
    pub fn ids(&self) -> Vec<i64> {
        self.batches.iter().flat_map(ids).collect()
    }

    pub fn last_checkpoint(&self) -> Option<serde_json::Value> {
        self.batches.last().and_then(|b| b.checkpoint.clone())
    }

    pub fn event_text(&self) -> String {
        self.events
            .iter()
            .map(|e| format!("[{:?}] {}", e.class, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn ids(b: &SourceBatch) -> Vec<i64> {
    let col = b.batch.records.column_by_name("id").expect("an id column");
    let col = col.as_primitive::<Int64Type>();
    (0..col.len()).map(|i| col.value(i)).collect()
}

/// Reads until the source ends; with `keep_going`, goes on after errors (up to 50).
pub async fn run(src: &mut HttpSource, keep_going: bool) -> Run {
    let mut out = Run {
        batches: Vec::new(),
        errors: Vec::new(),
        events: Vec::new(),
        quarantined: Vec::new(),
    };
    loop {
        let next = src.next_batch().await;
        out.quarantined.extend(src.take_quarantined());
        match next {
            Ok(Some(b)) => out.batches.push(b),
            Ok(None) => break,
            Err(e) => {
                out.errors.push(e);
                if !keep_going || out.errors.len() >= 50 {
                    break;
                }
            }
        }
    }
    out.events = src.drain_events();
    out
}

pub fn expect_all(run: &Run, n: i64) {
    assert!(
        run.errors.is_empty(),
        "errors: {:?}\nevents:\n{}",
        run.errors,
        run.event_text()
    );
    let ids = run.ids();
    assert_eq!(
        ids,
        (1..=n).collect::<Vec<_>>(),
        "every record once, in order"
    );
}
