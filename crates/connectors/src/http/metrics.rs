//! The HTTP source's metrics, per host (`host:port`): requests by status, their latency,
//! rate-limit waits and the circuit breaker's state. Registered once per
//! [`sluice_config::ConnectorMetrics`] (a `sluice serve` exports them at `/metrics`).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `sluice_http_requests_total` | host, status | requests answered, by status (`error`: no answer: refused, reset, timeout) |
//! | `sluice_http_request_duration_seconds` | host | histogram of the time to the last byte of the answer |
//! | `sluice_http_rate_limit_waits_total` | host | requests held by the rate limit (the source's, the shared budget's, a `Retry-After`) |
//! | `sluice_http_rate_limit_wait_seconds_total` | host | the time they were held |
//! | `sluice_http_breaker_state` | host | the circuit breaker: 0 closed, 1 half-open, 2 open |

use prometheus::{CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use std::time::Duration;

/// The HTTP sources' metrics of a process.
pub(crate) struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    waits: IntCounterVec,
    waited: CounterVec,
    breaker: IntGaugeVec,
}

/// A wait shorter than this is not a rate-limit wait (scheduling noise).
const NOTICED_WAIT: Duration = Duration::from_millis(1);

impl HttpMetrics {
    /// Every metric, registered in `registry`.
    pub(crate) fn new(registry: &prometheus::Registry) -> Self {
        let host = &["host"];
        let requests = IntCounterVec::new(
            Opts::new(
                "sluice_http_requests_total",
                "HTTP requests of the sources answered, by host and status (`error`: no answer).",
            ),
            &["host", "status"],
        )
        .expect("a valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "sluice_http_request_duration_seconds",
                "Time from sending an HTTP request of a source to the last byte of its answer, by host.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            host,
        )
        .expect("a valid metric");
        let waits = IntCounterVec::new(
            Opts::new(
                "sluice_http_rate_limit_waits_total",
                "HTTP requests of the sources held by a rate limit before they were sent, by host.",
            ),
            host,
        )
        .expect("a valid metric");
        let waited = CounterVec::new(
            Opts::new(
                "sluice_http_rate_limit_wait_seconds_total",
                "Time HTTP requests of the sources were held by a rate limit, by host.",
            ),
            host,
        )
        .expect("a valid metric");
        let breaker = IntGaugeVec::new(
            Opts::new(
                "sluice_http_breaker_state",
                "The circuit breaker of an API host: 0 closed, 1 half-open, 2 open.",
            ),
            host,
        )
        .expect("a valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(waits.clone()),
            Box::new(waited.clone()),
            Box::new(breaker.clone()),
        ] {
            if let Err(e) = registry.register(m) {
                tracing::warn!(error = %e, "an HTTP metric could not be registered");
            }
        }
        HttpMetrics {
            requests,
            latency,
            waits,
            waited,
            breaker,
        }
    }

    /// A request ended: its status (`None`: no answer) and how long it took.
    pub(crate) fn request(&self, host: &str, status: Option<u16>, took: Duration) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.requests.with_label_values(&[host, &status]).inc();
        self.latency
            .with_label_values(&[host])
            .observe(took.as_secs_f64());
    }

    /// A request was held `waited` by the rate limit.
    pub(crate) fn waited(&self, host: &str, waited: Duration) {
        if waited < NOTICED_WAIT {
            return;
        }
        self.waits.with_label_values(&[host]).inc();
        self.waited
            .with_label_values(&[host])
            .inc_by(waited.as_secs_f64());
    }

    /// The breaker of `host` is in `state` (0 closed, 1 half-open, 2 open).
    pub(crate) fn breaker(&self, host: &str, state: i64) {
        self.breaker.with_label_values(&[host]).set(state);
    }
}
