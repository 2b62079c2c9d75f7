//! The HTTP API source (`type: http`).
//!
//! Reads pages from an HTTP API and hands them to the engine as batches, handling each
//! failure class of the taxonomy by rule:
//!
//! - **auth**: basic, bearer, API key (header or query), OAuth2 client credentials
//!   (cached, refreshed before expiry and once after a 401), HMAC signing;
//! - **pagination**: page number, offset/limit, cursor, next URL, `Link` header, with
//!   stop conditions and a `max_pages` guard;
//! - **incremental**: a watermark (the greatest value of a record field) kept in each
//!   batch's checkpoint and sent on the next run, with an optional lookback;
//! - **rate limits**: a token bucket and a concurrency cap; `Retry-After` (seconds or
//!   HTTP date) and rate-limit reset headers of every common dialect honoured, on any
//!   status (GitHub's 403) and, with `rate_limit_signal`, in a 200's body; the rate halves
//!   after a 429; a reset beyond `max_retry_after` parks the source
//!   ([`sluice_core::ConnectorError::resume_at`]);
//! - **retries**: full-jitter backoff for `network`, `rate_limited` and `dependency`,
//!   bounded by attempts and time; a circuit breaker per host ([`BreakerRegistry`]);
//! - **records to Arrow**: a declared or inferred schema, nested objects as structs or
//!   JSON text, schema drift handled by `schema_policy`, pages cut to `batching` limits.
//!
//! Every failure is a [`sluice_core::ConnectorError`] with its class and a redacted
//! evidence snippet (method, URL without secrets, status, headers of interest, the first
//! 200 bytes of the body).
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_core::ConnectorError> {
//! use sluice_connectors::http::{HttpSource, HttpSourceConfig, HttpSourceContext};
//! use sluice_core::Source;
//! let config = HttpSourceConfig::from_spec(serde_json::json!({
//!     "url": "https://api.example.com/v1/orders",
//!     "pagination": {"cursor": {"path": "$.meta.next_cursor"}},
//!     "records": {"path": "$.data.items"},
//! })).unwrap();
//! let mut source = HttpSource::new(config, HttpSourceContext {
//!     pipeline: "orders".into(),
//!     node: "api".into(),
//!     ..HttpSourceContext::default()
//! })?;
//! while let Some(b) = source.next_batch().await? {
//!     println!("{} rows, checkpoint {:?}", b.batch.num_rows(), b.checkpoint);
//! }
//! # Ok(()) }
//! ```

pub(crate) mod auth;
mod breaker;
pub(crate) mod classify;
/// Bounded reading of an HTTP answer, for every crate that reads one (alert robots too).
pub use classify::{CappedBody, read_capped};
mod config;
mod fetch;
pub(crate) mod kind;
mod metrics;
pub(crate) mod origin;
mod pagination;
pub(crate) mod ratelimit;
pub(crate) mod records;
mod reread;
mod source;
pub mod spec;
mod template;

pub use breaker::BreakerRegistry;
pub use kind::HTTP;

/// The longest wait an outside value (`expires_in`, `Retry-After`, a rate-limit reset,
/// a configured maximum) can put between now and an [`std::time::Instant`]: a century,
/// far beyond any run, and far from the clock's overflow.
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + wait` that never overflows: a wait told by a server (or a huge setting) is
/// capped at [`FAR_FUTURE`].
pub(crate) fn instant_after(
    now: std::time::Instant,
    wait: std::time::Duration,
) -> std::time::Instant {
    now.checked_add(wait.min(FAR_FUTURE))
        .or_else(|| now.checked_add(std::time::Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}
pub use config::*;
pub use source::{HttpSource, HttpSourceContext};

/// For the benchmarks only (`benches/json_to_arrow.rs`, `benches/http_json_to_arrow.rs`):
/// response bodies through record extraction, the schema and Arrow conversion, with the
/// records' digests, as the source does it: by the general path (`fast: false`: a
/// `serde_json::Value` tree, shape checks, arrow-json) or the fast path where it applies
/// (slices of the body straight into Arrow builders).
#[doc(hidden)]
pub struct __BenchPages {
    at: records::RecordsAt,
    raw_at: Option<records::RawAt>,
    converter: records::Converter,
}

impl __BenchPages {
    #[doc(hidden)]
    pub fn new(
        records: &RecordsConfig,
        schema: &SchemaConfig,
        nested: NestedMode,
    ) -> Result<Self, String> {
        Ok(__BenchPages {
            at: records::RecordsAt::new(records)?,
            raw_at: records::RawAt::of(records),
            converter: records::Converter::new(schema, nested),
        })
    }

    /// One page; the rows converted.
    #[doc(hidden)]
    pub fn page(&mut self, body: &[u8], fast: bool) -> Result<usize, String> {
        if fast && self.converter.fast_ready() {
            if let Some(page) = self
                .raw_at
                .as_ref()
                .and_then(|at| records::locate(body, at))
                .and_then(|raw| self.converter.convert_fast(&raw, body.len(), None))
            {
                return Ok(page.batch.num_rows());
            }
        }
        let extracted = match records::extract(body, &self.at) {
            Ok(x) => x,
            Err(records::ExtractError::Malformed(m) | records::ExtractError::Shape(m)) => {
                return Err(m);
            }
        };
        if self.converter.check(&extracted.records).is_some() {
            self.converter.evolve(&extracted.records);
        }
        let texts = records::RecordTexts::of(&extracted.records);
        let converted = self.converter.convert(extracted.records, extracted.exact)?;
        debug_assert_eq!(texts.len(), converted.batch.num_rows());
        Ok(converted.batch.num_rows())
    }
}
