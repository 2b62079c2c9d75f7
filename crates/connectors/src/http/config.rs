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
use serde::Serialize;
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
/// let cfg = HttpSourceConfig::from_spec(serde_json::json!({
///     "url": "https://api.example.com/v1/orders",
///     "pagination": {"cursor": {"path": "$.meta.next_cursor", "param": "cursor"}},
///     "records": {"path": "$.data.items"},
///     "incremental": {"field": "updated_at", "param": "updated_since", "lookback": "5m"},
///     "rate_limit": {"requests_per_second": 5.0, "burst": 2},
/// })).unwrap();
/// assert_eq!(cfg.max_pages, 10_000);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSourceConfig {
    /// The address of the first page (`http` or `https`); may hold template variables.
    pub url: String,
    /// The request method.
    pub method: HttpMethod,
    /// Request headers; values may hold template variables. Values never print.
    pub headers: BTreeMap<String, Secret>,
    /// Query parameters of every request (not re-added to next-page URLs that the API
    /// gave); values may hold template variables.
    pub query: BTreeMap<String, String>,
    /// A JSON body (sent with `POST`); strings may hold template variables.
    pub body: Option<serde_json::Value>,
    /// Names of headers, query parameters and body fields whose values may print in
    /// errors and evidence; every other such value is a secret (case does not matter).
    pub public: Vec<String>,
    /// Hosts (`host` or `host:port`) beside `url`'s origin that may receive the
    /// credentials: a next-page URL or a redirect anywhere else is refused
    /// (`invalid_request`).
    pub allowed_hosts: Vec<String>,
    /// How requests authenticate.
    pub auth: Option<AuthConfig>,
    /// How the next page is found.
    pub pagination: PaginationConfig,
    /// When paging stops, beside the end the pagination style itself detects.
    pub stop: StopConfig,
    /// Most pages read in one run: a guard against an API that never stops paging. The
    /// run stops there and the next run goes on from the page after.
    pub max_pages: u64,
    /// Fetch the next page while the current one's batches go downstream (the request
    /// for a page is sent once the page before it is read, as without prefetch; a
    /// prefetched page not used when the run stops is dropped, and read again by the next
    /// run from the checkpoint).
    pub prefetch: bool,
    /// Where the records are in a response.
    pub records: RecordsConfig,
    /// Read only what changed since the last run.
    pub incremental: Option<IncrementalConfig>,
    /// Limits on the request rate.
    pub rate_limit: RateLimitConfig,
    /// A `200` whose body says the quota is used up (some APIs never use a status for
    /// it): that answer is `rate_limited` and waited out like a 429.
    pub rate_limit_signal: Option<RateLimitSignalConfig>,
    /// Connect and request timeouts.
    pub timeouts: TimeoutsConfig,
    /// How failed requests are retried (full-jitter backoff): the whole budget of each
    /// request, the engine retries the source no further.
    pub retry: RetryPolicy,
    /// The classes whose failed requests are retried (by default `network`,
    /// `rate_limited` and `dependency`; a pipeline's `on_error` classes set to `retry`).
    /// `auth` is not retried with backoff: an OAuth2 token is fetched again once.
    pub retry_on: Vec<ErrorClass>,
    /// The circuit breaker of the API's host.
    pub breaker: BreakerConfig,
    /// The columns of the records: `infer` (from the first page) or declared.
    pub schema: SchemaConfig,
    /// How nested objects and lists become columns.
    pub nested: NestedMode,
    /// What to do when a page's fields differ from the schema (schema drift).
    pub schema_policy: SchemaPolicy,
    /// What to do with a record that is not a JSON object or does not fit its columns.
    pub bad_records: BadRecordPolicy,
    /// How a page is cut into batches.
    pub batching: BatchingConfig,
    /// The largest answer body read, in bytes, counted after decoding (`gzip`): a larger
    /// answer stops being read at this size and is a `payload_too_large` error (with
    /// page-number or offset/limit pagination, a smaller page is asked for).
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
#[derive(Debug, Clone, PartialEq)]
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
        location: KeyLocation,
    },
    /// OAuth2 client credentials: a token from `token_url`, cached, refreshed before it
    /// expires and once after a 401.
    Oauth2ClientCredentials(OAuth2Config),
    /// Each request signed with an HMAC of chosen parts.
    Hmac(HmacConfig),
}

/// OAuth2 client credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Config {
    /// The token endpoint.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// Scopes to request (sent space-separated in `scope`).
    pub scopes: Vec<String>,
    /// The `audience` parameter some providers require.
    pub audience: Option<String>,
    /// Refresh the token this long before it expires.
    pub refresh_before: Duration,
    /// How the client credentials are sent to the token endpoint.
    pub credentials_in: CredentialsIn,
}

/// HMAC request signing. The signed text is the chosen parts joined by newlines.
#[derive(Debug, Clone, PartialEq)]
pub struct HmacConfig {
    /// The hash function.
    pub algorithm: HmacAlgorithm,
    /// The signing key.
    pub key: Secret,
    /// An id of the key, sent in `key_id_header`.
    pub key_id: Option<String>,
    /// What is signed, joined by newlines in this order.
    pub signed_parts: Vec<SignedPart>,
    /// The header carrying the signature.
    pub signature_header: String,
    /// The header carrying the timestamp (Unix seconds) that is signed.
    pub timestamp_header: String,
    /// The header carrying `key_id`.
    pub key_id_header: String,
    /// How the signature is written.
    pub encoding: SignatureEncoding,
}

/// How the next page is found.
#[derive(Debug, Clone, PartialEq, Default)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct PageNumberConfig {
    /// The query parameter of the page number (with `POST`, use `{{page}}` in the body).
    pub param: String,
    /// The first page's number.
    pub start: u64,
    /// The query parameter of the page size, if the API takes one.
    pub size_param: Option<String>,
    /// The page size to ask for. On a 413, or a 504 that a smaller page may avoid, it is
    /// halved (down to 1) and the page asked again.
    pub size: Option<u32>,
}

/// Offset/limit pagination.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetLimitConfig {
    /// The query parameter of the offset.
    pub offset_param: String,
    /// The query parameter of the limit.
    pub limit_param: String,
    /// Records per page; halved (down to 1) on a 413 or 504.
    pub limit: u32,
}

/// Cursor pagination.
#[derive(Debug, Clone, PartialEq)]
pub struct CursorConfig {
    /// Where the next cursor is in a response (a JSON path); paging ends when it is
    /// missing, null or empty.
    pub path: String,
    /// The query parameter the cursor is sent in (with `POST`, use `{{cursor}}` in the
    /// body).
    pub param: String,
}

/// Next-URL pagination.
#[derive(Debug, Clone, PartialEq)]
pub struct NextUrlConfig {
    /// Where the next page's URL is in a response (a JSON path; relative URLs are
    /// resolved against the page's); paging ends when it is missing or null.
    pub path: String,
}

/// Extra stop conditions of paging.
#[derive(Debug, Clone, PartialEq)]
pub struct StopConfig {
    /// Stop at a page with no records.
    pub empty_page: bool,
    /// Stop when the boolean at this JSON path is `false`.
    pub has_more: Option<String>,
    /// Stop once as many records as the number at this JSON path were read.
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

/// Where the records are in a response.
#[derive(Debug, Clone, PartialEq, Default)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct IncrementalConfig {
    /// The record field whose maximum is the watermark (dots reach into objects:
    /// `meta.updated_at`). RFC 3339 timestamps and numbers compare by value.
    pub field: String,
    /// The query parameter the watermark is sent in. Without it, use `{{watermark}}`.
    pub param: Option<String>,
    /// Re-read this far behind the watermark, for records committed late upstream.
    pub lookback: Option<Duration>,
    /// The watermark of the first run (else the first run reads everything). Its form
    /// (a timestamp, a number) is the watermark's type unless `schema` declares the field.
    pub initial: Option<String>,
    /// How far past the run's start a value may be and still become the watermark. A
    /// later one (an upstream clock gone wrong) is delivered but left out of the
    /// watermark and reported as `contract_changed`. Times without a zone get 14 hours
    /// more (they may be local times).
    pub future_tolerance: Duration,
}

/// Request rate limits of this source.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second (a token bucket); none: as fast as answers come.
    /// After a 429 the rate is halved, and it creeps back up with successes.
    pub requests_per_second: Option<f64>,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// Requests in flight at once (token fetches aside). The source itself reads one
    /// page at a time, so today this matters once several readers share the gate.
    pub concurrency: u32,
    /// The longest `Retry-After` (or rate-limit reset) honoured; a longer one is cut to
    /// this.
    pub max_retry_after: Duration,
}

/// Where a response body says the quota is used up.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSignalConfig {
    /// The JSON path of the value to look at (`$.error.code`).
    pub path: String,
    /// The value that means "rate limited" (a string, or the text of a number or
    /// boolean).
    pub equals: String,
    /// The JSON path of the reset time: a Unix time, seconds from now, or an RFC 3339
    /// or HTTP date. Without it, `Retry-After` and the reset headers, else backoff.
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

fn default_max_retry_after() -> Duration {
    Duration::from_secs(300)
}

/// Network timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeoutsConfig {
    /// Time to establish a connection (TCP and TLS).
    pub connect: Duration,
    /// Time for one whole request, from sending to the last byte of the answer.
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
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Whether the breaker is used.
    pub enabled: bool,
    /// The time window failures are counted over.
    pub window: Duration,
    /// Requests in the window before the ratio counts.
    pub min_requests: u32,
    /// The failure share (0..=1) that opens the breaker.
    pub failure_ratio: f64,
    /// How long it stays open before probing.
    pub open_for: Duration,
    /// Requests let through while half-open; all must succeed to close it.
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
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaConfig {
    /// From the first page's records.
    #[default]
    Infer,
    /// These columns, in this order.
    Columns(Vec<ColumnConfig>),
}

/// A declared column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnConfig {
    /// The record field (and column) name.
    pub name: String,
    /// The column's type.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Whether the value may be missing or null.
    pub nullable: bool,
}

/// How a page is cut into batches: a batch closes at whichever limit comes first.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchingConfig {
    /// Records per batch.
    pub max_rows: usize,
    /// Bytes per batch, counted as the records' JSON size.
    pub max_bytes: usize,
    /// How long a page's last batch waits for the next page (which tells whether the run
    /// ends there) before it is handed over anyway.
    pub max_wait: Duration,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
            max_wait: default_max_wait(),
        }
    }
}

fn default_max_wait() -> Duration {
    Duration::from_secs(1)
}

fn default_max_rows() -> usize {
    10_000
}
fn default_max_bytes() -> usize {
    4 << 20
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
            prefetch: true,
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
}
