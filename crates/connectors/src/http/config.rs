//! `HttpSourceConfig`: what a `type: http` source runs with: its spec (`spec.rs`) with
//! secrets resolved and paths parsed, joined with the node's effective retry, batching
//! and timeouts, as `kind.rs` builds it. The enums are the spec's own.
//!
//! It also reads from JSON (the same field names as the pipeline YAML), for callers of the
//! library that build a source without a pipeline, and [`HttpSourceConfig::validate`]
//! guards those: a pipeline's node was checked, with positions, by its spec. Durations
//! are written `"250ms"`, `"30s"`, `"5m"`, `"1h"` (or a number of seconds).

pub use super::spec::{
    CredentialsIn, HmacAlgorithm, HttpMethod, KeyLocation, SignatureEncoding, SignedPart,
};
pub use crate::spec::{BadRecordPolicy, ColumnType, NestedMode};
use serde::{Deserialize, Serialize};
pub use sluice_config::spec::SchemaPolicy;
use sluice_core::{ErrorClass, RetryPolicy, Secret};
use std::collections::BTreeMap;
use std::time::Duration;

/// A `type: http` source: pages of records from an HTTP API.
///
/// Template variables, filled in per request in `url`, `query` values, header values and
/// `body` strings: `{{page}}`, `{{page_size}}` (page-number pagination), `{{offset}}`,
/// `{{limit}}` (offset/limit), `{{cursor}}` (cursor), `{{watermark}}` (incremental). A
/// body string that is exactly one variable becomes a number where the value is one.
///
/// ```
/// use sluice_connectors::http::HttpSourceConfig;
/// let cfg: HttpSourceConfig = serde_json::from_value(serde_json::json!({
///     "url": "https://api.example.com/v1/orders",
///     "pagination": {"cursor": {"path": "$.meta.next_cursor", "param": "cursor"}},
///     "records": {"path": "$.data.items"},
///     "incremental": {"field": "updated_at", "param": "updated_since", "lookback": "5m"},
///     "rate_limit": {"requests_per_second": 5.0, "burst": 2},
/// })).unwrap();
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The address of the first page (`http` or `https`); may hold template variables.
    pub url: String,
    /// The request method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers; values may hold template variables. Values never print.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Query parameters of every request (not re-added to next-page URLs that the API
    /// gave); values may hold template variables.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// A JSON body (sent with `POST`); strings may hold template variables.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Names of headers, query parameters and body fields whose values may print in
    /// errors and evidence; every other such value is a secret (case does not matter).
    #[serde(default)]
    pub public: Vec<String>,
    /// Hosts (`host` or `host:port`) beside `url`'s origin that may receive the
    /// credentials: a next-page URL or a redirect anywhere else is refused
    /// (`invalid_request`).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// How requests authenticate.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// How the next page is found.
    #[serde(default)]
    pub pagination: PaginationConfig,
    /// When paging stops, beside the end the pagination style itself detects.
    #[serde(default)]
    pub stop: StopConfig,
    /// Most pages read in one run: a guard against an API that never stops paging. The
    /// run stops there and the next run goes on from the page after.
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
    /// Where the records are in a response.
    #[serde(default)]
    pub records: RecordsConfig,
    /// Read only what changed since the last run.
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
    /// Limits on the request rate.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// A `200` whose body says the quota is used up (some APIs never use a status for
    /// it): that answer is `rate_limited` and waited out like a 429.
    #[serde(default)]
    pub rate_limit_signal: Option<RateLimitSignalConfig>,
    /// Connect and request timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// How failed requests are retried (full-jitter backoff): the whole budget of each
    /// request, the engine retries the source no further.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The classes whose failed requests are retried (by default `network`,
    /// `rate_limited` and `dependency`; a pipeline's `on_error` classes set to `retry`).
    /// `auth` is not retried with backoff: an OAuth2 token is fetched again once.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<ErrorClass>,
    /// The circuit breaker of the API's host.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The columns of the records: `infer` (from the first page) or declared.
    #[serde(default)]
    pub schema: SchemaConfig,
    /// How nested objects and lists become columns.
    #[serde(default)]
    pub nested: NestedMode,
    /// What to do when a page's fields differ from the schema (schema drift).
    #[serde(default)]
    pub schema_policy: SchemaPolicy,
    /// What to do with a record that is not a JSON object or does not fit its columns.
    #[serde(default)]
    pub bad_records: BadRecordPolicy,
    /// How a page is cut into batches.
    #[serde(default)]
    pub batching: BatchingConfig,
    /// The largest answer body read, in bytes, counted after decoding (`gzip`): a larger
    /// answer stops being read at this size and is a `payload_too_large` error (with
    /// page-number or offset/limit pagination, a smaller page is asked for).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

fn default_max_pages() -> u64 {
    10_000
}

fn default_max_response_bytes() -> usize {
    256 * 1024 * 1024
}

fn default_retry_on() -> Vec<ErrorClass> {
    ErrorClass::ALL
        .into_iter()
        .filter(|c| c.is_transient())
        .collect()
}

/// How requests authenticate. Secrets never print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// An API key in a header or a query parameter.
    ApiKey {
        /// The header or query parameter that carries the key.
        name: String,
        /// The key.
        value: Secret,
        /// Where the key goes: `header` or `query`.
        #[serde(default, rename = "in")]
        location: KeyLocation,
    },
    /// OAuth2 client credentials: a token from `token_url`, cached, refreshed before it
    /// expires and once after a 401.
    Oauth2ClientCredentials(OAuth2Config),
    /// Each request signed with an HMAC of chosen parts.
    Hmac(HmacConfig),
}

/// OAuth2 client credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The token endpoint.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// Scopes to request (sent space-separated in `scope`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The `audience` parameter some providers require.
    #[serde(default)]
    pub audience: Option<String>,
    /// Refresh the token this long before it expires.
    #[serde(default = "default_refresh_before", with = "duration")]
    pub refresh_before: Duration,
    /// How the client credentials are sent to the token endpoint.
    #[serde(default)]
    pub credentials_in: CredentialsIn,
}

fn default_refresh_before() -> Duration {
    Duration::from_secs(30)
}

/// HMAC request signing. The signed text is the chosen parts joined by newlines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// The hash function.
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// The signing key.
    pub key: Secret,
    /// An id of the key, sent in `key_id_header`.
    #[serde(default)]
    pub key_id: Option<String>,
    /// What is signed, joined by newlines in this order.
    #[serde(default = "default_signed_parts")]
    pub signed_parts: Vec<SignedPart>,
    /// The header carrying the signature.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// The header carrying the timestamp (Unix seconds) that is signed.
    #[serde(default = "default_timestamp_header")]
    pub timestamp_header: String,
    /// The header carrying `key_id`.
    #[serde(default = "default_key_id_header")]
    pub key_id_header: String,
    /// How the signature is written.
    #[serde(default)]
    pub encoding: SignatureEncoding,
}

fn default_signed_parts() -> Vec<SignedPart> {
    vec![
        SignedPart::Method,
        SignedPart::Path,
        SignedPart::Query,
        SignedPart::Timestamp,
        SignedPart::Body,
    ]
}
fn default_signature_header() -> String {
    "X-Signature".to_owned()
}
fn default_timestamp_header() -> String {
    "X-Timestamp".to_owned()
}
fn default_key_id_header() -> String {
    "X-Key-Id".to_owned()
}

/// How the next page is found.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationConfig {
    /// One request, one page.
    #[default]
    None,
    /// `?page=1`, `?page=2`, ...
    PageNumber(PageNumberConfig),
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, ...
    OffsetLimit(OffsetLimitConfig),
    /// The next request sends the cursor found in the response.
    Cursor(CursorConfig),
    /// The next request goes to the URL found in the response.
    NextUrl(NextUrlConfig),
    /// The next request goes to the `Link: <...>; rel="next"` header's URL.
    LinkHeader,
}

/// Page-number pagination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageNumberConfig {
    /// The query parameter of the page number (with `POST`, use `{{page}}` in the body).
    #[serde(default = "default_page_param")]
    pub param: String,
    /// The first page's number.
    #[serde(default = "default_first_page")]
    pub start: u64,
    /// The query parameter of the page size, if the API takes one.
    #[serde(default)]
    pub size_param: Option<String>,
    /// The page size to ask for. On a 413, or a 504 that a smaller page may avoid, it is
    /// halved (down to 1) and the page asked again.
    #[serde(default)]
    pub size: Option<u32>,
}

fn default_page_param() -> String {
    "page".to_owned()
}
fn default_first_page() -> u64 {
    1
}

/// Offset/limit pagination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetLimitConfig {
    /// The query parameter of the offset.
    #[serde(default = "default_offset_param")]
    pub offset_param: String,
    /// The query parameter of the limit.
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    /// Records per page; halved (down to 1) on a 413 or 504.
    #[serde(default = "default_limit")]
    pub limit: u32,
}

fn default_offset_param() -> String {
    "offset".to_owned()
}
fn default_limit_param() -> String {
    "limit".to_owned()
}
fn default_limit() -> u32 {
    100
}

/// Cursor pagination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorConfig {
    /// Where the next cursor is in a response (a JSON path); paging ends when it is
    /// missing, null or empty.
    pub path: String,
    /// The query parameter the cursor is sent in (with `POST`, use `{{cursor}}` in the
    /// body).
    #[serde(default = "default_cursor_param")]
    pub param: String,
}

fn default_cursor_param() -> String {
    "cursor".to_owned()
}

/// Next-URL pagination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextUrlConfig {
    /// Where the next page's URL is in a response (a JSON path; relative URLs are
    /// resolved against the page's); paging ends when it is missing or null.
    pub path: String,
}

/// Extra stop conditions of paging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopConfig {
    /// Stop at a page with no records.
    #[serde(default = "default_true")]
    pub empty_page: bool,
    /// Stop when the boolean at this JSON path is `false`.
    #[serde(default)]
    pub has_more: Option<String>,
    /// Stop once as many records as the number at this JSON path were read.
    #[serde(default)]
    pub total: Option<String>,
}

impl Default for StopConfig {
    fn default() -> Self {
        StopConfig {
            empty_page: true,
            has_more: None,
            total: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Where the records are in a response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RecordsConfig {
    /// The whole response is an array of records.
    #[default]
    Root,
    /// The response is newline-delimited JSON, one record per line.
    Ndjson,
    /// The array of records at this JSON path (`$.data.items`).
    Path(String),
}

/// Incremental reading: only records changed since the last run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// The record field whose maximum is the watermark (dots reach into objects:
    /// `meta.updated_at`). RFC 3339 timestamps and numbers compare by value.
    pub field: String,
    /// The query parameter the watermark is sent in. Without it, use `{{watermark}}`.
    #[serde(default)]
    pub param: Option<String>,
    /// Re-read this far behind the watermark, for records committed late upstream.
    #[serde(default, with = "opt_duration")]
    pub lookback: Option<Duration>,
    /// The watermark of the first run (else the first run reads everything). Its form
    /// (a timestamp, a number) is the watermark's type unless `schema` declares the field.
    #[serde(default)]
    pub initial: Option<String>,
    /// How far past the run's start a value may be and still become the watermark. A
    /// later one (an upstream clock gone wrong) is delivered but left out of the
    /// watermark and reported as `contract_changed`. Times without a zone get 14 hours
    /// more (they may be local times).
    #[serde(default = "default_future_tolerance", with = "duration")]
    pub future_tolerance: Duration,
}

fn default_future_tolerance() -> Duration {
    crate::watermark::DEFAULT_FUTURE_TOLERANCE
}

/// Request rate limits of this source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second (a token bucket); none: as fast as answers come.
    /// After a 429 the rate is halved, and it creeps back up with successes.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Requests allowed at once above the sustained rate.
    #[serde(default = "default_one")]
    pub burst: u32,
    /// Requests in flight at once (token fetches aside). The source itself reads one
    /// page at a time, so today this matters once several readers share the gate.
    #[serde(default = "default_one")]
    pub concurrency: u32,
    /// The longest `Retry-After` (or rate-limit reset) honoured; a longer one is cut to
    /// this.
    #[serde(default = "default_max_retry_after", with = "duration")]
    pub max_retry_after: Duration,
}

/// Where a response body says the quota is used up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSignalConfig {
    /// The JSON path of the value to look at (`$.error.code`).
    pub path: String,
    /// The value that means "rate limited" (a string, or the text of a number or
    /// boolean).
    pub equals: String,
    /// The JSON path of the reset time: a Unix time, seconds from now, or an RFC 3339
    /// or HTTP date. Without it, `Retry-After` and the reset headers, else backoff.
    #[serde(default)]
    pub reset: Option<String>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_second: None,
            burst: 1,
            concurrency: 1,
            max_retry_after: default_max_retry_after(),
        }
    }
}

fn default_one() -> u32 {
    1
}
fn default_max_retry_after() -> Duration {
    Duration::from_secs(300)
}

/// Network timeouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Time to establish a connection (TCP and TLS).
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect: Duration,
    /// Time for one whole request, from sending to the last byte of the answer.
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect: default_connect_timeout(),
            request: default_request_timeout(),
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The circuit breaker of a host: it opens when the share of failed requests (network
/// errors and 5xx) over `window` reaches `failure_ratio` (after `min_requests`), fails
/// fast while open, and lets `half_open_probes` requests through after `open_for`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Whether the breaker is used.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The time window failures are counted over.
    #[serde(default = "default_breaker_window", with = "duration")]
    pub window: Duration,
    /// Requests in the window before the ratio counts.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// The failure share (0..=1) that opens the breaker.
    #[serde(default = "default_failure_ratio")]
    pub failure_ratio: f64,
    /// How long it stays open before probing.
    #[serde(default = "default_open_for", with = "duration")]
    pub open_for: Duration,
    /// Requests let through while half-open; all must succeed to close it.
    #[serde(default = "default_one")]
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            window: default_breaker_window(),
            min_requests: default_min_requests(),
            failure_ratio: default_failure_ratio(),
            open_for: default_open_for(),
            half_open_probes: 1,
        }
    }
}

fn default_breaker_window() -> Duration {
    Duration::from_secs(60)
}
fn default_min_requests() -> u32 {
    10
}
fn default_failure_ratio() -> f64 {
    0.5
}
fn default_open_for() -> Duration {
    Duration::from_secs(30)
}

/// The columns of the records.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SchemaConfig {
    /// From the first page's records.
    #[default]
    Infer,
    /// These columns, in this order.
    Columns(Vec<ColumnConfig>),
}

/// A declared column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The record field (and column) name.
    pub name: String,
    /// The column's type.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Whether the value may be missing or null.
    #[serde(default = "default_true")]
    pub nullable: bool,
}

/// How a page is cut into batches: a batch closes at whichever limit comes first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Records per batch.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Bytes per batch, counted as the records' JSON size.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_max_rows() -> usize {
    10_000
}
fn default_max_bytes() -> usize {
    4 << 20
}

/// The configuration cannot work; each problem names its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid http source: {}", problems.join("; "))]
pub struct InvalidHttpConfig {
    /// `field: what is wrong and what to write instead`, one per problem.
    pub problems: Vec<String>,
}

impl HttpSourceConfig {
    /// A config reading `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        HttpSourceConfig {
            url: url.into(),
            method: HttpMethod::default(),
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
            body: None,
            public: Vec::new(),
            allowed_hosts: Vec::new(),
            auth: None,
            pagination: PaginationConfig::default(),
            stop: StopConfig::default(),
            max_pages: default_max_pages(),
            records: RecordsConfig::default(),
            incremental: None,
            rate_limit: RateLimitConfig::default(),
            rate_limit_signal: None,
            timeouts: TimeoutsConfig::default(),
            retry: RetryPolicy::default(),
            retry_on: default_retry_on(),
            breaker: BreakerConfig::default(),
            schema: SchemaConfig::default(),
            nested: NestedMode::default(),
            schema_policy: SchemaPolicy::default(),
            bad_records: BadRecordPolicy::default(),
            batching: BatchingConfig::default(),
            max_response_bytes: default_max_response_bytes(),
        }
    }

    /// Checks the config without any I/O and collects every problem.
    pub fn validate(&self) -> Result<(), InvalidHttpConfig> {
        let mut p = Vec::new();
        check_url("url", &self.url, &mut p);
        let mut path = |field: &str, value: &str| {
            if let Err(e) = serde_json_path::JsonPath::parse(value) {
                p.push(format!(
                    "{field}: `{value}` is not a JSON path ({e}); write e.g. `$.data.items`"
                ));
            }
        };
        if let RecordsConfig::Path(x) = &self.records {
            path("records.path", x);
        }
        match &self.pagination {
            PaginationConfig::Cursor(c) => path("pagination.cursor.path", &c.path),
            PaginationConfig::NextUrl(c) => path("pagination.next_url.path", &c.path),
            _ => {}
        }
        if let Some(x) = &self.stop.has_more {
            path("stop.has_more", x);
        }
        if let Some(x) = &self.stop.total {
            path("stop.total", x);
        }
        if let Some(sig) = &self.rate_limit_signal {
            path("rate_limit_signal.path", &sig.path);
            if let Some(x) = &sig.reset {
                path("rate_limit_signal.reset", x);
            }
        }
        match &self.pagination {
            PaginationConfig::PageNumber(c) if c.size == Some(0) => {
                p.push("pagination.page_number.size: must be at least 1".into())
            }
            PaginationConfig::OffsetLimit(c) if c.limit == 0 => {
                p.push("pagination.offset_limit.limit: must be at least 1".into())
            }
            _ => {}
        }
        if self.max_pages == 0 {
            p.push("max_pages: must be at least 1".into());
        }
        if self.max_response_bytes == 0 {
            p.push("max_response_bytes: must be at least 1 byte".into());
        }
        let rl = &self.rate_limit;
        if let Some(rps) = rl.requests_per_second
            && !(rps.is_finite() && rps > 0.0)
        {
            p.push(format!(
                "rate_limit.requests_per_second: {rps} must be a number above 0"
            ));
        }
        if rl.burst == 0 {
            p.push("rate_limit.burst: must be at least 1".into());
        }
        if rl.concurrency == 0 {
            p.push("rate_limit.concurrency: must be at least 1".into());
        }
        if self.timeouts.connect.is_zero() || self.timeouts.request.is_zero() {
            p.push("timeouts: connect and request must be above 0 (e.g. `10s`)".into());
        }
        if self.retry.max_attempts == 0 {
            p.push("retry.max_attempts: must be at least 1 (1 means no retry)".into());
        }
        let b = &self.breaker;
        if !(0.0..=1.0).contains(&b.failure_ratio) || b.failure_ratio == 0.0 {
            p.push(format!(
                "breaker.failure_ratio: {} must be in (0, 1]",
                b.failure_ratio
            ));
        }
        if b.half_open_probes == 0 {
            p.push("breaker.half_open_probes: must be at least 1".into());
        }
        if self.batching.max_rows == 0 {
            p.push("batching.max_rows: must be at least 1".into());
        }
        if self.batching.max_bytes < 1024 {
            p.push("batching.max_bytes: must be at least 1024".into());
        }
        if let Some(inc) = &self.incremental
            && inc.field.trim().is_empty()
        {
            p.push("incremental.field: name the record field holding the change time (e.g. `updated_at`)".into());
        }
        if let SchemaConfig::Columns(cols) = &self.schema {
            if cols.is_empty() {
                p.push("schema.columns: declare at least one column, or use `infer`".into());
            }
            let mut seen = std::collections::HashSet::new();
            for c in cols {
                if !seen.insert(c.name.as_str()) {
                    p.push(format!("schema.columns: `{}` is declared twice", c.name));
                }
            }
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(format!("headers: `{name}` is not a valid header name"));
            }
        }
        match &self.auth {
            Some(AuthConfig::Oauth2ClientCredentials(o)) => check_url(
                "auth.oauth2_client_credentials.token_url",
                &o.token_url,
                &mut p,
            ),
            Some(AuthConfig::Hmac(h)) => {
                if h.signed_parts.is_empty() {
                    p.push("auth.hmac.signed_parts: sign at least one part (e.g. [method, path, query, timestamp, body])".into());
                }
                for (f, v) in [
                    ("signature_header", &h.signature_header),
                    ("timestamp_header", &h.timestamp_header),
                    ("key_id_header", &h.key_id_header),
                ] {
                    if reqwest::header::HeaderName::from_bytes(v.as_bytes()).is_err() {
                        p.push(format!("auth.hmac.{f}: `{v}` is not a valid header name"));
                    }
                }
            }
            Some(AuthConfig::ApiKey { name, .. }) if name.is_empty() => {
                p.push("auth.api_key.name: name the header or query parameter".into())
            }
            _ => {}
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(InvalidHttpConfig { problems: p })
        }
    }
}

fn check_url(field: &str, raw: &str, p: &mut Vec<String>) {
    // Template variables stand for values: check the URL with placeholders in.
    let probe = super::template::render_str(raw, &super::template::Vars::probe());
    match url::Url::parse(&probe) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
        Ok(u) => p.push(format!(
            "{field}: scheme `{}` is not supported; use http or https",
            u.scheme()
        )),
        Err(e) => p.push(format!(
            "{field}: `{}` is not a URL ({e}); write e.g. `https://api.example.com/v1/orders`",
            sluice_core::redact::redact_url(raw)
        )),
    }
}

/// Durations as `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"1h30m"` or a number of seconds.
pub(crate) mod duration {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let ms = d.as_millis();
        if ms % 1000 == 0 {
            s.serialize_str(&format!("{}s", ms / 1000))
        } else {
            s.serialize_str(&format!("{ms}ms"))
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) if s.is_finite() && s >= 0.0 => Duration::try_from_secs_f64(s)
                .map_err(|_| D::Error::custom(format!("{s} seconds is too long a duration"))),
            Raw::Secs(s) => Err(D::Error::custom(format!(
                "{s} is not a duration; write e.g. `30s`"
            ))),
            Raw::Text(t) => parse(&t).map_err(D::Error::custom),
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Duration, String> {
        let help = || {
            format!(
                "`{text}` is not a duration; write a number and a unit (ms, s, m, h, d), e.g. `30s`, `500ms` or `1h30m`"
            )
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(help());
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(help());
            }
            let n: f64 = rest[..digits].parse().map_err(|_| help())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let secs = match unit {
                "ms" => n / 1000.0,
                "s" | "" => n,
                "m" => n * 60.0,
                "h" => n * 3600.0,
                "d" => n * 86400.0,
                _ => return Err(help()),
            };
            total = Duration::try_from_secs_f64(secs)
                .ok()
                .and_then(|d| total.checked_add(d))
                .ok_or_else(help)?;
        }
        Ok(total)
    }
}

/// Optional durations, written like [`duration`].
pub(crate) mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::duration")] Duration);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_never_panic() {
        assert_eq!(duration::parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            duration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(duration::parse("2").unwrap(), Duration::from_secs(2));
        for bad in ["", "ms", "5y", "99999999999999999999999999999d", "1..2s"] {
            assert!(duration::parse(bad).is_err(), "{bad}");
        }
        let cfg: HttpSourceConfig = serde_json::from_value(serde_json::json!({
            "url": "http://x", "timeouts": {"connect": 1.5, "request": "2m"}
        }))
        .unwrap();
        assert_eq!(cfg.timeouts.connect, Duration::from_millis(1500));
        assert!(
            serde_json::from_value::<HttpSourceConfig>(serde_json::json!({
                "url": "http://x", "timeouts": {"connect": 1e300}
            }))
            .is_err()
        );
    }
}
