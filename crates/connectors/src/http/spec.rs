//! `type: http` (a source reading an HTTP API) and `type: http_sink` (a sink POSTing
//! batches to an HTTP endpoint), and what they share: auth, rate limits, schemas.

use crate::spec::{
    BadRecordPolicy, NestedMode, SchemaSpec, default_future_tolerance, default_true,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_config::Spanned;
use sluice_config::spec::SchemaPolicy;
use sluice_config::spec::TimeoutsSpec;
use sluice_config::values::{
    ByteSize, Duration, HttpUrl, JsonPath, SecretMap, SecretValue, secret_schema,
};

/// `type: http`: pages of records from an HTTP API.
///
/// Template variables, filled in per request in `url`, `query` values, `headers` values
/// and `body` strings:
/// `{{page}}` and `{{page_size}}` (page-number pagination), `{{offset}}` and `{{limit}}`
/// (offset/limit), `{{cursor}}` (cursor), `{{watermark}}` (incremental).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceSpec {
    /// The address of the first page.
    #[schemars(example = &"https://api.example.com/v1/orders")]
    pub url: Spanned<HttpUrl>,
    /// The request method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers. Their values never print (unless named in `public`).
    #[serde(default)]
    #[schemars(example = &serde_json::json!({"Accept": "application/json"}))]
    pub headers: SecretMap,
    /// Query parameters of every request; values may use template variables. Their
    /// values never print (unless named in `public`).
    #[serde(default)]
    #[schemars(example = &serde_json::json!({"status": "open", "updated_since": "{{watermark}}"}))]
    pub query: SecretMap,
    /// A JSON body (for `POST`), written as YAML; strings may use template variables.
    /// Its values never print (unless their field is named in `public`).
    #[schemars(example = &serde_json::json!({"page": "{{page}}", "filter": {"status": "open"}}))]
    pub body: Option<Spanned<serde_json::Value>>,
    /// Names of headers, query parameters (of `query`, of `url` and of the next-page URLs
    /// the API gives) and body fields whose values are not secret: they print in `plan`,
    /// errors and evidence. Every other such value prints as `***`. Names match without
    /// regard to case.
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["Accept", "status", "page"]))]
    pub public: Vec<String>,
    /// Other hosts (`host` or `host:port`) that may receive the credentials (`auth`,
    /// `headers`, `query`): a next-page URL or redirect to such a host is followed. Any
    /// other origin than `url`'s is refused (`invalid_request`), so that an API cannot
    /// send the credentials elsewhere. An `https` URL never downgrades to `http`.
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["api2.example.com", "cdn.example.com:8443"]))]
    pub allowed_hosts: Vec<Spanned<String>>,
    /// How requests authenticate.
    pub auth: Option<Spanned<AuthSpec>>,
    /// How the next page is found.
    #[serde(default)]
    pub pagination: PaginationSpec,
    /// When paging stops, beside the end the pagination style itself detects (no next
    /// cursor, no next link). Only with pagination.
    pub stop: Option<Spanned<StopSpec>>,
    /// Most pages read in one run: a guard against an API that never stops paging. At
    /// least 1.
    #[schemars(extend("default" = 10000), example = 500)]
    pub max_pages: Option<Spanned<u64>>,
    /// Fetch the next page while the current one's batches go downstream, overlapping the
    /// API's answer time with the buffer's write. The next page's request is the one the
    /// source would send anyway; a page fetched ahead when the run stops is dropped and
    /// read again from the checkpoint. Turn it off for an API that must see one request
    /// at a time per run.
    #[schemars(extend("default" = true))]
    pub prefetch: Option<bool>,
    /// Where the records are in a response.
    #[serde(default)]
    pub records: RecordsSpec,
    /// Read only what changed since the last run.
    pub incremental: Option<Spanned<IncrementalSpec>>,
    /// Limits on the request rate.
    pub rate_limit: Option<RateLimitSpec>,
    /// For APIs that tell of a used-up quota in a `200`'s body rather than by status or
    /// headers: such an answer is `rate_limited`, waited out (at most
    /// `rate_limit.max_retry_after`, else the node is parked until the reset).
    pub rate_limit_signal: Option<Spanned<RateLimitSignalSpec>>,
    /// The circuit breaker of the API's host: it opens when too many requests fail, and
    /// requests then wait (within the retry budget) or fail fast as `dependency`.
    pub breaker: Option<BreakerSpec>,
    /// Timeouts (else `defaults.timeouts`).
    pub timeouts: Option<TimeoutsSpec>,
    /// The columns of the records: `infer` (from the first page) or declared.
    #[serde(default)]
    pub schema: SchemaSpec,
    /// How nested objects and lists become columns.
    #[serde(default)]
    pub nested: NestedMode,
    /// What to do when a page's fields differ from the schema (schema drift, the
    /// `contract_changed` class).
    #[serde(default)]
    pub schema_policy: Spanned<SchemaPolicy>,
    /// What to do with a record that is not a JSON object or does not fit its column
    /// (the `invalid_request` class).
    #[serde(default)]
    pub bad_records: BadRecordPolicy,
    /// The largest answer body read, counted after decoding (`gzip`): a larger answer
    /// stops being read there and is `payload_too_large` (with `page_number` or
    /// `offset_limit` pagination, smaller pages are asked for). Guards memory against an
    /// API answering gigabytes, or a small gzip answer that decodes to gigabytes.
    #[schemars(extend("default" = "256MiB"), example = &"64MiB")]
    pub max_response_bytes: Option<Spanned<ByteSize>>,
}

/// Request method of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
pub enum HttpMethod {
    /// `GET`.
    #[default]
    GET,
    /// `POST` (with `body`).
    POST,
}

/// How requests authenticate. Secrets never print; write them as `${VAR}` or
/// `${file:/path}` rather than in the file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSpec {
    /// HTTP basic authentication.
    Basic(BasicAuth),
    /// `Authorization: Bearer <token>`.
    Bearer(BearerAuth),
    /// An API key in a header or a query parameter.
    ApiKey(ApiKeyAuth),
    /// OAuth2 client credentials: a token fetched from `token_url`, cached, refreshed
    /// before it expires and once after a 401.
    Oauth2ClientCredentials(OAuth2Auth),
    /// Each request signed with an HMAC of chosen parts.
    Hmac(HmacAuth),
}

/// HTTP basic authentication.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    #[schemars(example = &"sluice")]
    pub username: String,
    /// The password (a secret).
    #[schemars(schema_with = "secret_schema", example = &"${API_PASSWORD}")]
    pub password: SecretValue,
}

/// A bearer token.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The token (a secret).
    #[schemars(schema_with = "secret_schema", example = &"${API_TOKEN}")]
    pub token: SecretValue,
}

/// An API key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// The header or query parameter that carries the key.
    #[schemars(example = &"X-Api-Key")]
    pub name: String,
    /// The key (a secret).
    #[schemars(schema_with = "secret_schema", example = &"${API_KEY}")]
    pub value: SecretValue,
    /// Where the key goes: `header` or `query`.
    #[serde(default, rename = "in")]
    pub location: KeyLocation,
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    /// A request header.
    #[default]
    Header,
    /// A query parameter (visible in server logs: prefer a header).
    Query,
}

/// OAuth2 client credentials.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Auth {
    /// The token endpoint.
    #[schemars(example = &"https://auth.example.com/oauth/token")]
    pub token_url: Spanned<HttpUrl>,
    /// The client id.
    #[schemars(example = &"sluice-prod")]
    pub client_id: String,
    /// The client secret (a secret).
    #[schemars(schema_with = "secret_schema", example = &"${OAUTH_CLIENT_SECRET}")]
    pub client_secret: SecretValue,
    /// Scopes to request.
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["orders:read"]))]
    pub scopes: Vec<String>,
    /// The `audience` parameter some providers require.
    #[schemars(example = &"https://api.example.com")]
    pub audience: Option<String>,
    /// Refresh the token this long before it expires.
    #[serde(default = "default_refresh_before")]
    pub refresh_before: Spanned<Duration>,
    /// How the client credentials are sent to the token endpoint.
    #[serde(default)]
    pub credentials_in: CredentialsIn,
}

fn default_refresh_before() -> Spanned<Duration> {
    Spanned::new(Duration::secs(30), sluice_config::Pos::START)
}

/// How OAuth2 client credentials are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsIn {
    /// HTTP basic authentication (RFC 6749's preferred way).
    #[default]
    BasicHeader,
    /// `client_id` and `client_secret` form fields.
    Body,
}

/// HMAC request signing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacAuth {
    /// The hash function.
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// The signing key (a secret).
    #[schemars(schema_with = "secret_schema", example = &"${API_SIGNING_KEY}")]
    pub key: SecretValue,
    /// An id of the key, sent in `key_id_header`.
    #[schemars(example = &"key-2024-01")]
    pub key_id: Option<String>,
    /// What is signed, joined by newlines in this order.
    #[serde(default = "default_signed_parts")]
    pub signed_parts: Vec<Spanned<SignedPart>>,
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

fn default_signed_parts() -> Vec<Spanned<SignedPart>> {
    [
        SignedPart::Method,
        SignedPart::Path,
        SignedPart::Query,
        SignedPart::Timestamp,
        SignedPart::Body,
    ]
    .into_iter()
    .map(|p| Spanned::new(p, sluice_config::Pos::START))
    .collect()
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

/// An HMAC hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HmacAlgorithm {
    /// HMAC-SHA256.
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// A part of a request that is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignedPart {
    /// The method, upper case.
    Method,
    /// The host.
    Host,
    /// The path.
    Path,
    /// The query string, parameters sorted.
    Query,
    /// The timestamp sent in `timestamp_header`.
    Timestamp,
    /// The body (empty for `GET`).
    Body,
}

/// How a signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Lowercase hexadecimal.
    #[default]
    Hex,
    /// Standard base64.
    Base64,
}

/// How the next page is found.
///
/// ```yaml
/// pagination: none
/// pagination: { page_number: { param: page, size_param: per_page, size: 100 } }
/// pagination: { cursor: { path: $.meta.next_cursor, param: cursor } }
/// pagination: link_header
/// ```
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationSpec {
    /// One request, one page.
    #[default]
    None,
    /// `?page=1`, `?page=2`, ...
    PageNumber(PageNumberPagination),
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, ...
    OffsetLimit(OffsetLimitPagination),
    /// The next request sends the cursor found in the response.
    Cursor(CursorPagination),
    /// The next request goes to the URL found in the response.
    NextUrl(NextUrlPagination),
    /// The next request goes to the `Link: <...>; rel="next"` header's URL.
    LinkHeader,
}

impl PaginationSpec {
    /// The name used in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            PaginationSpec::None => "none",
            PaginationSpec::PageNumber(_) => "page_number",
            PaginationSpec::OffsetLimit(_) => "offset_limit",
            PaginationSpec::Cursor(_) => "cursor",
            PaginationSpec::NextUrl(_) => "next_url",
            PaginationSpec::LinkHeader => "link_header",
        }
    }

    /// The template variables this style sets.
    pub fn variables(&self) -> &'static [&'static str] {
        match self {
            PaginationSpec::PageNumber(_) => &["page", "page_size"],
            PaginationSpec::OffsetLimit(_) => &["offset", "limit"],
            PaginationSpec::Cursor(_) => &["cursor"],
            _ => &[],
        }
    }
}

/// Page-number pagination.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageNumberPagination {
    /// The query parameter of the page number.
    #[serde(default = "default_page_param")]
    pub param: String,
    /// The first page's number.
    #[serde(default = "default_first_page")]
    pub start: u64,
    /// The query parameter of the page size, if the API takes one.
    #[schemars(example = &"per_page")]
    pub size_param: Option<String>,
    /// The page size to ask for (with `size_param`). At least 1.
    #[schemars(example = 100)]
    pub size: Option<Spanned<u32>>,
}

fn default_page_param() -> String {
    "page".to_owned()
}
fn default_first_page() -> u64 {
    1
}

/// Offset/limit pagination.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OffsetLimitPagination {
    /// The query parameter of the offset.
    #[serde(default = "default_offset_param")]
    pub offset_param: String,
    /// The query parameter of the limit.
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    /// Records per page. At least 1.
    #[serde(default = "default_limit")]
    pub limit: Spanned<u32>,
}

fn default_offset_param() -> String {
    "offset".to_owned()
}
fn default_limit_param() -> String {
    "limit".to_owned()
}
fn default_limit() -> Spanned<u32> {
    Spanned::new(100, sluice_config::Pos::START)
}

/// Cursor pagination.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorPagination {
    /// Where the next cursor is in a response; paging ends when it is missing, null or
    /// empty.
    #[schemars(example = &"$.meta.next_cursor")]
    pub path: Spanned<JsonPath>,
    /// The query parameter the cursor is sent in.
    #[serde(default = "default_cursor_param")]
    pub param: String,
}

fn default_cursor_param() -> String {
    "cursor".to_owned()
}

/// Next-URL pagination.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NextUrlPagination {
    /// Where the next page's URL is in a response; paging ends when it is missing or null.
    #[schemars(example = &"$.links.next")]
    pub path: Spanned<JsonPath>,
}

/// Extra stop conditions of paging.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    /// Stop at a page with no records.
    #[serde(default = "default_true")]
    pub empty_page: bool,
    /// Stop when the boolean at this path is `false`.
    #[schemars(example = &"$.meta.has_more")]
    pub has_more: Option<Spanned<JsonPath>>,
    /// Stop once as many records as the number at this path were read.
    #[schemars(example = &"$.meta.total")]
    pub total: Option<Spanned<JsonPath>>,
}

/// Where the records are in a response.
///
/// ```yaml
/// records: root                      # the response is a JSON array
/// records: ndjson                    # one JSON record per line
/// records: { path: $.data.items }    # an array inside the response
/// ```
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RecordsSpec {
    /// The whole response is an array of records.
    #[default]
    Root,
    /// The response is newline-delimited JSON, one record per line.
    Ndjson,
    /// The array of records at this JSON path.
    Path(Spanned<JsonPath>),
}

/// Incremental reading: only records changed since the last run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementalSpec {
    /// The record field whose maximum is the watermark (kept as the node's checkpoint,
    /// advanced only after the buffer acknowledged the batch).
    #[schemars(example = &"updated_at")]
    pub field: Spanned<String>,
    /// The query parameter the watermark is sent in. Without it, use `{{watermark}}` in
    /// `url`, `query` or `body`.
    #[schemars(example = &"updated_since")]
    pub param: Option<String>,
    /// Re-read this far behind the watermark, for records committed late upstream.
    #[schemars(example = &"5m")]
    pub lookback: Option<Spanned<Duration>>,
    /// The watermark of the first run (else the first run reads everything). Its form (a
    /// timestamp, a number) is the watermark's type unless `schema` declares the field.
    #[schemars(example = &"2024-01-01T00:00:00Z")]
    pub initial: Option<String>,
    /// How far past the run's start a value may be and still become the watermark. A
    /// later one (an upstream clock gone wrong, `2999-01-01`) and a value of another type
    /// than the watermark's are delivered, left out of the watermark and reported as
    /// `contract_changed`. Times without a zone get 14 hours more (they may be local).
    #[serde(default = "default_future_tolerance")]
    pub future_tolerance: Spanned<Duration>,
}

/// Request rate limits, kept by one token bucket per node.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Sustained requests per second. More than zero. Without it, requests go as fast
    /// as answers come until the API rate limits them (then the rate halves).
    #[schemars(example = 10.0)]
    pub requests_per_second: Option<Spanned<f64>>,
    /// Requests allowed at once above the sustained rate. At least 1.
    #[serde(default = "default_one")]
    pub burst: Spanned<u32>,
    /// A cap on requests in flight at once. At least 1. It does not raise them: a source
    /// has one request in flight (with `prefetch`, the next page's while the page before
    /// is processed) and a sink sends one batch at a time, so a value above 1 is warned of.
    #[serde(default = "default_one")]
    pub concurrency: Spanned<u32>,
    /// The longest wait for a rate limit (`Retry-After`, a quota's reset) within a run.
    /// A source told to wait longer is parked: it keeps its checkpoint, the run ends
    /// `rate_limited` with the resume time, and the next run after it goes on from
    /// there. An `http_sink` told to wait longer waits this long before it sends again.
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after: Spanned<Duration>,
}

/// Where a `200`'s body says the quota is used up.
///
/// ```yaml
/// rate_limit_signal: { path: $.error.code, equals: RATE_LIMITED, reset: $.error.reset_at }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSignalSpec {
    /// The value to look at.
    #[schemars(example = &"$.error.code")]
    pub path: Spanned<JsonPath>,
    /// The value there that means "rate limited" (compared as text: a string, or a
    /// number or boolean as written).
    #[schemars(example = &"RATE_LIMITED")]
    pub equals: String,
    /// Where the reset time is: a Unix time, seconds from now, or an RFC 3339 or HTTP
    /// date. Without it, `Retry-After` and the rate-limit reset headers tell, else the
    /// retry backoff.
    #[schemars(example = &"$.error.reset_at")]
    pub reset: Option<Spanned<JsonPath>>,
}

fn default_one() -> Spanned<u32> {
    Spanned::new(1, sluice_config::Pos::START)
}

/// The circuit breaker of the API's host, counting network errors and 5xx answers. Once
/// `min_requests` requests were made within `window` and the share of them that failed
/// reaches `failure_ratio`, it opens: no request goes to the host for `open_for`; then
/// `half_open_probes` requests go through, and if they all succeed it closes. Sources of
/// one process with the same settings share the breaker of a host.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Whether the breaker is used.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The time window requests are counted over. More than zero.
    #[serde(default = "default_breaker_window")]
    #[schemars(example = &"2m")]
    pub window: Spanned<Duration>,
    /// Requests within the window before the failure share counts. At least 1.
    #[serde(default = "default_min_requests")]
    #[schemars(example = 20)]
    pub min_requests: Spanned<u32>,
    /// The share of failed requests (more than 0, at most 1) that opens the breaker.
    #[serde(default = "default_failure_ratio")]
    #[schemars(example = 0.8)]
    pub failure_ratio: Spanned<f64>,
    /// How long the breaker stays open before probing. More than zero.
    #[serde(default = "default_open_for")]
    #[schemars(example = &"1m")]
    pub open_for: Spanned<Duration>,
    /// Requests let through after `open_for`; all must succeed to close the breaker. At
    /// least 1.
    #[serde(default = "default_one")]
    pub half_open_probes: Spanned<u32>,
}

fn default_breaker_window() -> Spanned<Duration> {
    Spanned::new(Duration::secs(60), sluice_config::Pos::START)
}
fn default_min_requests() -> Spanned<u32> {
    Spanned::new(10, sluice_config::Pos::START)
}
fn default_failure_ratio() -> Spanned<f64> {
    Spanned::new(0.5, sluice_config::Pos::START)
}
fn default_open_for() -> Spanned<Duration> {
    Spanned::new(Duration::secs(30), sluice_config::Pos::START)
}
fn default_max_retry_after() -> Spanned<Duration> {
    Spanned::new(Duration::secs(300), sluice_config::Pos::START)
}

/// Whether `name` is in a node's `public:` list (without regard to case).
pub fn is_public(public: &[String], name: &str) -> bool {
    public.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// A JSON body as it prints: every value `***` unless its field is public (or it is
/// only template variables); the shape stays.
pub fn shown_body(value: &serde_json::Value, public: &[String]) -> serde_json::Value {
    fn walk(v: &serde_json::Value, shown: bool, public: &[String]) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), walk(v, shown || is_public(public, k), public)))
                    .collect(),
            ),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| walk(v, shown, public)).collect())
            }
            Value::Null => Value::Null,
            Value::String(t) if shown || sluice_core::redact::is_template_only(t) => v.clone(),
            _ if shown => v.clone(),
            _ => Value::String(sluice_core::redact::MASK.to_owned()),
        }
    }
    walk(value, false, public)
}

impl HttpSourceSpec {
    /// The spec as `plan --json` shows it: values of headers, query parameters (also in
    /// `url`) and body fields as `***` unless named in `public`.
    pub(crate) fn shown(&self) -> Result<serde_json::Value, serde_json::Error> {
        let public = |n: &str| is_public(&self.public, n);
        let mut v = serde_json::to_value(self)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "url".into(),
                sluice_core::redact::redact_url_except(self.url.value.as_str(), public).into(),
            );
            obj.insert("headers".into(), shown_map(&self.headers, public));
            obj.insert("query".into(), shown_map(&self.query, public));
            if let Some(b) = &self.body {
                obj.insert("body".into(), shown_body(&b.value, &self.public));
            }
        }
        Ok(v)
    }
}

pub(crate) fn shown_map(map: &SecretMap, public: impl Fn(&str) -> bool) -> serde_json::Value {
    serde_json::Value::Object(
        map.shown(public)
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    )
}
