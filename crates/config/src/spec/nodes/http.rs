//! `type: http` (a source reading an HTTP API) and `type: http_sink` (a sink POSTing
//! batches to an HTTP endpoint), and what they share: auth, rate limits, schemas.

use crate::de::Spanned;
use crate::spec::policy::TimeoutsSpec;
use crate::values::{
    ByteSize, Duration, HttpUrl, JsonPath, RedactedMap, SecretValue, secret_schema,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `type: http`: pages of records from an HTTP API.
///
/// Template variables, filled in per request in `url`, `query` values and `body` strings:
/// `{{page}}` and `{{page_size}}` (page-number pagination), `{{offset}}` and `{{limit}}`
/// (offset/limit), `{{cursor}}` (cursor), `{{watermark}}` (incremental).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// The address of the first page.
    #[schemars(example = &"https://api.example.com/v1/orders")]
    pub url: Spanned<HttpUrl>,
    /// The request method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers. Values of secret-looking headers (`Authorization`, `X-Api-Key`,
    /// ...) never print.
    #[serde(default)]
    #[schemars(example = &serde_json::json!({"Accept": "application/json"}))]
    pub headers: RedactedMap,
    /// Query parameters of every request; values may use template variables. Values of
    /// secret-looking parameters (`api_key`, `token`, ...) never print.
    #[serde(default)]
    #[schemars(example = &serde_json::json!({"status": "open", "updated_since": "{{watermark}}"}))]
    pub query: RedactedMap,
    /// A JSON body (for `POST`), written as YAML; strings may use template variables.
    #[schemars(example = &serde_json::json!({"page": "{{page}}", "filter": {"status": "open"}}))]
    pub body: Option<Spanned<serde_json::Value>>,
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
    /// Where the records are in a response.
    #[serde(default)]
    pub records: RecordsSpec,
    /// Read only what changed since the last run.
    pub incremental: Option<Spanned<IncrementalSpec>>,
    /// Limits on the request rate.
    pub rate_limit: Option<RateLimitSpec>,
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

/// What an HTTP source does with a malformed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Fail the page: the node fails, showing the record.
    #[default]
    Fail,
    /// Leave the record out, with an event in the run record; it is not kept.
    Skip,
    /// Deliver the page's good records and keep the bad ones in the failed-batch store;
    /// `sluice replay` reads them again from the API once it serves them well.
    Quarantine,
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
    Spanned::new(Duration::secs(30), crate::diag::Pos::START)
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
    .map(|p| Spanned::new(p, crate::diag::Pos::START))
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
    Spanned::new(100, crate::diag::Pos::START)
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

pub(crate) fn default_true() -> bool {
    true
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
    /// The watermark of the first run (else the first run reads everything).
    #[schemars(example = &"2024-01-01T00:00:00Z")]
    pub initial: Option<String>,
}

/// Request rate limits, kept by one token bucket per node.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Sustained requests per second. More than zero.
    #[schemars(example = 10.0)]
    pub requests_per_second: Spanned<f64>,
    /// Requests allowed at once above the sustained rate. At least 1.
    #[serde(default = "default_one")]
    pub burst: Spanned<u32>,
    /// Requests in flight at once. At least 1.
    #[serde(default = "default_one")]
    pub concurrency: Spanned<u32>,
    /// The longest `Retry-After` honoured; a longer one is treated as this.
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after: Spanned<Duration>,
}

fn default_one() -> Spanned<u32> {
    Spanned::new(1, crate::diag::Pos::START)
}
fn default_max_retry_after() -> Spanned<Duration> {
    Spanned::new(Duration::secs(300), crate::diag::Pos::START)
}

/// The columns of records.
///
/// ```yaml
/// schema: infer
/// schema:
///   columns:
///     - { name: id, type: int64, nullable: false }
///     - { name: updated_at, type: timestamp }
/// ```
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SchemaSpec {
    /// From the first page's records.
    #[default]
    Infer,
    /// These columns, in this order.
    Columns(Spanned<Vec<ColumnSpec>>),
}

/// A declared column.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The record field (and column) name.
    #[schemars(example = &"id")]
    pub name: Spanned<String>,
    /// The column's type.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Whether the value may be missing or null.
    #[serde(default = "default_true")]
    pub nullable: bool,
}

/// A column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// `true` / `false`.
    Boolean,
    /// A 64-bit integer.
    Int64,
    /// A 64-bit float.
    Float64,
    /// UTF-8 text.
    String,
    /// A timestamp (RFC 3339 text or Unix seconds), stored in UTC microseconds.
    Timestamp,
    /// A calendar date.
    Date,
    /// Any JSON value, kept as JSON text.
    Json,
}

/// How nested objects and lists become columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NestedMode {
    /// Arrow struct and list columns.
    #[default]
    Struct,
    /// JSON text columns.
    JsonText,
}

/// What to do when records' fields differ from the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchemaPolicy {
    /// Accept it: new columns are added (downstream tables too).
    Evolve,
    /// Accept it and raise a warning alert.
    Warn,
    /// Quarantine the batch (`contract_changed`) and go on.
    Quarantine,
    /// Fail the node (`contract_changed`).
    #[default]
    Fail,
}

/// `type: http_sink`: batches sent to an HTTP endpoint, one request per batch.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSink {
    /// Where batches are sent.
    #[schemars(example = &"https://ingest.example.com/v1/events")]
    pub url: Spanned<HttpUrl>,
    /// The request method.
    #[serde(default)]
    pub method: SinkMethod,
    /// Request headers (secret-looking values never print).
    #[serde(default)]
    pub headers: RedactedMap,
    /// How requests authenticate.
    pub auth: Option<Spanned<AuthSpec>>,
    /// How a batch is written in the body: `json_array` or `ndjson`.
    #[serde(default)]
    pub format: SinkFormat,
    /// With `json_array`: wrap the array in an object under this key
    /// (`{"records": [...]}`).
    #[schemars(example = &"records")]
    pub wrap_key: Option<Spanned<String>>,
    /// A header carrying the batch id, so that the receiver can drop a redelivered batch.
    #[schemars(example = &"Idempotency-Key")]
    pub idempotency_header: Option<String>,
    /// Limits on the request rate.
    pub rate_limit: Option<RateLimitSpec>,
    /// Timeouts (else `defaults.timeouts`).
    pub timeouts: Option<TimeoutsSpec>,
}

/// Request method of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
pub enum SinkMethod {
    /// `POST`.
    #[default]
    POST,
    /// `PUT`.
    PUT,
    /// `PATCH`.
    PATCH,
}

/// How an HTTP sink writes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    /// A JSON array of records.
    #[default]
    JsonArray,
    /// One JSON record per line.
    Ndjson,
}
