//! The service's Prometheus metrics (`GET /metrics`, text format 0.0.4).
//!
//! Built on the `prometheus` crate with a registry of the service's own (no global
//! recorder: two services in one test process do not mix, and nothing else in the
//! process adds series). Names follow Prometheus' conventions: `_total` counters,
//! `_seconds` units, past-tense events.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `sluice_runs_total` | pipeline, trigger, status | runs finished |
//! | `sluice_runs_skipped_total` | pipeline, reason | runs not started: `overlap`, `lease_held`, `parked`, `error` |
//! | `sluice_run_duration_seconds` | pipeline | histogram of run wall time |
//! | `sluice_last_success_timestamp_seconds` | pipeline | end of the last succeeded run |
//! | `sluice_runs_in_flight` | pipeline | 1 while a run goes on |
//! | `sluice_node_records_in_total` | pipeline, node | records received (sinks, transforms) or read (sources) |
//! | `sluice_node_records_out_total` | pipeline, node | records written or emitted |
//! | `sluice_node_batches_total` | pipeline, node | batches handled |
//! | `sluice_node_retries_total` | pipeline, node | retries made |
//! | `sluice_node_records_quarantined_total` | pipeline, node | records kept in the failed-batch store |
//! | `sluice_node_duplicates_skipped_total` | pipeline, node | redelivered records the ledger skipped |
//! | `sluice_failures_handled_total` | pipeline, node, class, action | failures met and what was done: `retried`, `split`, `quarantined`, `skipped`, `handled` |
//! | `sluice_node_failures_total` | pipeline, node, class | nodes that failed their run, by error class |
//! | `sluice_node_records_helped_total` | pipeline, node | records this worker wrote for runs another worker owns (counted again in the owner's `sluice_node_records_out_total`) |
//! | `sluice_buffer_backlog_batches` | pipeline, node, input | batches of `input` the node has not consumed, at the end of the last run (Kafka consumer lag, the embedded log's backlog) |
//! | `sluice_buffer_backlog_age_seconds` | pipeline, node, input | age of the oldest of those batches (0 when none waits) |
//! | `sluice_buffer_backlog_bytes` | pipeline, node, input | about how many bytes those batches take in the embedded log (not measured for Kafka) |
//! | `sluice_link_up` | pipeline, kind, link | 1 up, 0 down, at the last check (every `--health-interval`, and `GET /health`) |
//! | `sluice_pipelines_loaded` | | pipelines served |
//! | `sluice_pipeline_files_invalid` | | files that do not validate (not served, or kept on their last good version) |
//!
//! The connectors' own metrics follow, from the registry they share through the build
//! context (`sluice_config::ConnectorMetrics`): for the HTTP source, per host,
//! `sluice_http_requests_total` (status), `sluice_http_request_duration_seconds`,
//! `sluice_http_rate_limit_waits_total`, `sluice_http_rate_limit_wait_seconds_total`,
//! `sluice_http_breaker_state`.
//!
//! The per-node counters are added when a run ends, from the same numbers the run record
//! keeps (`sluice runs show`), so they equal the sum over the run records.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use sluice_engine::{EventKind, RunSummary};
use sluice_state::{RunStatus, Trigger};

/// The metrics of one service.
pub struct Metrics {
    registry: Registry,
    runs: IntCounterVec,
    skipped: IntCounterVec,
    duration: HistogramVec,
    last_success: GaugeVec,
    in_flight: IntGaugeVec,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    batches: IntCounterVec,
    retries: IntCounterVec,
    quarantined: IntCounterVec,
    duplicates: IntCounterVec,
    handled: IntCounterVec,
    node_failures: IntCounterVec,
    helped: IntCounterVec,
    link_up: IntGaugeVec,
    backlog: IntGaugeVec,
    backlog_age: GaugeVec,
    backlog_bytes: IntGaugeVec,
    loaded: IntGauge,
    invalid: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered, at zero.
    pub fn new() -> Self {
        let r = Registry::new();
        let pn = &["pipeline", "node"];
        let runs = counter(
            &r,
            "sluice_runs_total",
            "Runs finished, by trigger and final status.",
            &["pipeline", "trigger", "status"],
        );
        let skipped = counter(
            &r,
            "sluice_runs_skipped_total",
            "Runs not started: overlap (the previous run still ran), lease_held (another process owns the pipeline), parked (rate limited until a reset), error.",
            &["pipeline", "reason"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new("sluice_run_duration_seconds", "Wall time of runs.").buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
            &["pipeline"],
        )
        .expect("a valid metric");
        r.register(Box::new(duration.clone())).expect("registered");
        let last_success = GaugeVec::new(
            Opts::new(
                "sluice_last_success_timestamp_seconds",
                "When the last succeeded run of the pipeline ended (Unix time).",
            ),
            &["pipeline"],
        )
        .expect("a valid metric");
        r.register(Box::new(last_success.clone()))
            .expect("registered");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "sluice_runs_in_flight",
                "1 while a run of the pipeline goes on.",
            ),
            &["pipeline"],
        )
        .expect("a valid metric");
        r.register(Box::new(in_flight.clone())).expect("registered");
        let link_up = IntGaugeVec::new(
            Opts::new(
                "sluice_link_up",
                "Whether a link answered at its last check (1 up, 0 down).",
            ),
            &["pipeline", "kind", "link"],
        )
        .expect("a valid metric");
        r.register(Box::new(link_up.clone())).expect("registered");
        let backlog = IntGaugeVec::new(
            Opts::new(
                "sluice_buffer_backlog_batches",
                "Batches in the buffer a node has not consumed yet, from one of its inputs, at the end of the pipeline's last run (Kafka: the consumer group's lag; embedded: the log's backlog).",
            ),
            &["pipeline", "node", "input"],
        )
        .expect("a valid metric");
        r.register(Box::new(backlog.clone())).expect("registered");
        let backlog_age = GaugeVec::new(
            Opts::new(
                "sluice_buffer_backlog_age_seconds",
                "Age of the oldest batch in the buffer a node has not consumed yet, from one of its inputs, at the end of the pipeline's last run; 0 when none waits.",
            ),
            &["pipeline", "node", "input"],
        )
        .expect("a valid metric");
        r.register(Box::new(backlog_age.clone()))
            .expect("registered");
        let backlog_bytes = IntGaugeVec::new(
            Opts::new(
                "sluice_buffer_backlog_bytes",
                "About how many bytes of batches in the embedded buffer a node has not consumed yet, from one of its inputs, at the end of the pipeline's last run (not measured for Kafka).",
            ),
            &["pipeline", "node", "input"],
        )
        .expect("a valid metric");
        r.register(Box::new(backlog_bytes.clone()))
            .expect("registered");
        let loaded =
            IntGauge::new("sluice_pipelines_loaded", "Pipelines served.").expect("a valid metric");
        r.register(Box::new(loaded.clone())).expect("registered");
        let invalid = IntGauge::new(
            "sluice_pipeline_files_invalid",
            "Pipeline files that do not validate.",
        )
        .expect("a valid metric");
        r.register(Box::new(invalid.clone())).expect("registered");
        let uptime_start = Gauge::new(
            "sluice_serve_start_timestamp_seconds",
            "When this sluice serve started (Unix time).",
        )
        .expect("a valid metric");
        r.register(Box::new(uptime_start.clone()))
            .expect("registered");
        uptime_start.set(sluice_state::now_ms() as f64 / 1000.0);
        Metrics {
            runs,
            skipped,
            duration,
            last_success,
            in_flight,
            records_in: counter(
                &r,
                "sluice_node_records_in_total",
                "Records a node received (sinks, transforms) or read (sources).",
                pn,
            ),
            records_out: counter(
                &r,
                "sluice_node_records_out_total",
                "Records a node wrote or emitted.",
                pn,
            ),
            batches: counter(
                &r,
                "sluice_node_batches_total",
                "Batches a node handled.",
                pn,
            ),
            retries: counter(&r, "sluice_node_retries_total", "Retries a node made.", pn),
            quarantined: counter(
                &r,
                "sluice_node_records_quarantined_total",
                "Records kept in the failed-batch store for replay.",
                pn,
            ),
            duplicates: counter(
                &r,
                "sluice_node_duplicates_skipped_total",
                "Redelivered records a sink's ledger recognised and skipped.",
                pn,
            ),
            handled: counter(
                &r,
                "sluice_failures_handled_total",
                "Failures met, by error class and what was done (retried, split, quarantined, skipped, handled).",
                &["pipeline", "node", "class", "action"],
            ),
            node_failures: counter(
                &r,
                "sluice_node_failures_total",
                "Nodes that failed their run, by error class.",
                &["pipeline", "node", "class"],
            ),
            helped: counter(
                &r,
                "sluice_node_records_helped_total",
                "Records this worker wrote for runs another worker owns (also in the owner's sluice_node_records_out_total).",
                pn,
            ),
            link_up,
            backlog,
            backlog_age,
            backlog_bytes,
            loaded,
            invalid,
            registry: r,
        }
    }

    /// The text format: the service's metrics, then those of `also` (the connectors'
    /// registry: HTTP requests per host, rate-limit waits, breakers; see
    /// `sluice_config::ConnectorMetrics`).
    pub fn render(&self, also: &[&Registry]) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        let mut families = self.registry.gather();
        for r in also {
            families.extend(r.gather());
        }
        if let Err(e) = encoder.encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// A run ended: its counts, status and duration.
    pub fn run_finished(&self, summary: &RunSummary, trigger: Trigger) {
        let p = summary.pipeline.as_str();
        self.runs
            .with_label_values(&[p, trigger.as_str(), summary.status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[p])
            .observe(summary.elapsed.as_secs_f64());
        if summary.status == RunStatus::Succeeded {
            self.last_success
                .with_label_values(&[p])
                .set(sluice_state::now_ms() as f64 / 1000.0);
        }
        let add = |c: &IntCounterVec, node: &str, n: i64| {
            c.with_label_values(&[p, node])
                .inc_by(u64::try_from(n).unwrap_or(0));
        };
        for node in &summary.nodes {
            let n = node.id.as_str();
            add(&self.records_in, n, node.counts.records_in);
            add(&self.records_out, n, node.counts.records_out);
            add(&self.batches, n, node.counts.batches);
            add(&self.retries, n, node.counts.retries);
            add(&self.quarantined, n, node.counts.quarantined);
            add(&self.duplicates, n, node.counts.duplicates);
            if node.status == RunStatus::Failed {
                let class = node.error_class.map_or("internal", |c| c.as_str());
                self.node_failures.with_label_values(&[p, n, class]).inc();
            }
        }
    }

    /// A run was not started, and why (`overlap`, `lease_held`, `parked`, `error`).
    pub fn run_skipped(&self, pipeline: &str, reason: &str) {
        self.skipped.with_label_values(&[pipeline, reason]).inc();
    }

    /// What `node` has not consumed yet of `input` in the buffer, in batches.
    pub fn backlog(&self, pipeline: &str, node: &str, input: &str, batches: u64) {
        self.backlog
            .with_label_values(&[pipeline, node, input])
            .set(i64::try_from(batches).unwrap_or(i64::MAX));
    }

    /// How old the oldest batch `node` has not consumed yet of `input` is, in seconds.
    pub fn backlog_age(&self, pipeline: &str, node: &str, input: &str, seconds: f64) {
        self.backlog_age
            .with_label_values(&[pipeline, node, input])
            .set(seconds);
    }

    /// About how many bytes of `input` `node` has not consumed yet.
    pub fn backlog_bytes(&self, pipeline: &str, node: &str, input: &str, bytes: u64) {
        self.backlog_bytes
            .with_label_values(&[pipeline, node, input])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Records this worker wrote for a run another worker owns.
    pub fn helped(&self, pipeline: &str, node: &str, records: i64) {
        self.helped
            .with_label_values(&[pipeline, node])
            .inc_by(u64::try_from(records).unwrap_or(0));
    }

    /// A run started (`true`) or ended.
    pub fn in_flight(&self, pipeline: &str, running: bool) {
        self.in_flight
            .with_label_values(&[pipeline])
            .set(i64::from(running));
    }

    /// An event of a run: failures met and what was done with them.
    pub fn event(&self, pipeline: &str, node: &str, kind: &EventKind) {
        let (class, action) = match kind {
            EventKind::Retried { class, .. } => (class, "retried"),
            EventKind::Split { class, .. } => (class, "split"),
            EventKind::Quarantined { class, .. } => (class, "quarantined"),
            EventKind::Skipped { class, .. } => (class, "skipped"),
            EventKind::Connector {
                class: Some(class),
                retry,
                ..
            } => (class, if *retry { "retried" } else { "handled" }),
            _ => return,
        };
        self.handled
            .with_label_values(&[pipeline, node, class.as_str(), action])
            .inc();
    }

    /// A link's state at its last check.
    pub fn link(&self, pipeline: &str, kind: &str, link: &str, up: bool) {
        self.link_up
            .with_label_values(&[pipeline, kind, link])
            .set(i64::from(up));
    }

    /// How many pipelines are served and how many files do not validate.
    pub fn catalog(&self, loaded: usize, invalid: usize) {
        self.loaded.set(loaded as i64);
        self.invalid.set(invalid as i64);
    }

    /// Forgets a pipeline's per-run series (its file was deleted).
    pub fn forget(&self, pipeline: &str) {
        let _ = self.in_flight.remove_label_values(&[pipeline]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_the_conventional_names() {
        let m = Metrics::new();
        m.run_skipped("orders", "overlap");
        m.event(
            "orders",
            "api",
            &EventKind::Retried {
                class: sluice_core::ErrorClass::RateLimited,
                wait: std::time::Duration::from_secs(1),
                message: String::new(),
            },
        );
        let text = m.render(&[]);
        assert!(
            text.contains("sluice_runs_skipped_total{pipeline=\"orders\",reason=\"overlap\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "sluice_failures_handled_total{action=\"retried\",class=\"rate_limited\",node=\"api\",pipeline=\"orders\"} 1"
        ), "{text}");
        assert!(
            text.contains("# TYPE sluice_pipelines_loaded gauge"),
            "{text}"
        );
    }
}
