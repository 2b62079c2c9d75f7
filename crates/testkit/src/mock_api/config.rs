//! What the mock API serves and which failures it injects.

use serde::{Deserialize, Serialize};

/// The mock API's configuration. Every field has a default, so `{}` is a valid config:
/// 1000 records, pages of 100, no auth, no faults.
///
/// ```
/// let cfg: sluice_testkit::mock_api::MockConfig = serde_json::from_str(
///     r#"{"records": 250, "auth": {"type": "api_key", "name": "X-Api-Key", "value": "k"},
///         "faults": [{"from_request": 2, "kind": {"type": "rate_limited", "retry_after": {"seconds": 1}}}]}"#,
/// ).unwrap();
/// assert_eq!(cfg.records, 250);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// Records in the data set (ids `1..=records`).
    #[serde(default = "default_records")]
    pub records: u64,
    /// Records per page when a request does not ask for a size.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Seed of the data set: the same seed always gives the same records.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The port on 127.0.0.1 (`0`: any free port).
    #[serde(default)]
    pub port: u16,
    /// How requests must authenticate.
    #[serde(default)]
    pub auth: MockAuth,
    /// A page size asked above this gets `504 Gateway Timeout`, the way a backend that
    /// times out on a large query answers.
    #[serde(default)]
    pub max_page_size: Option<u32>,
    /// A request body larger than this gets `413 Payload Too Large`.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Injected failures, checked in order; the first that applies to a request wins.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Schema drift: records from this one on have another shape.
    #[serde(default)]
    pub drift: Option<Drift>,
    /// Ids of records served malformed (a wrong type for `id`, or not an object).
    #[serde(default)]
    pub malformed_records: Vec<u64>,
    /// Error answers (4xx, 5xx) begin their body with the request as received (method,
    /// path and query, non-standard headers, body), as some servers do: a client must
    /// redact its own secrets from what it shows of such an answer.
    #[serde(default)]
    pub echo_requests: bool,
    /// Records served with this text as their `updated_at`, the way an upstream whose
    /// clock or data went wrong serves them (`"2999-01-01T00:00:00Z"`, `"not a date"`).
    /// `updated_since` selects them by that time when it is RFC 3339, else by their own.
    #[serde(default)]
    pub updated_at_overrides: std::collections::BTreeMap<u64, String>,
    /// Every response's envelope carries a new `request_id` and `served_at`, as many APIs
    /// do: the same page reads as a different body each time, with the same records.
    #[serde(default)]
    pub envelope_noise: bool,
    /// Fixed pages served as written by `GET /fixed/items?page=N` (from 1), each the JSON
    /// text of an array of records (numbers keep every digit they are written with);
    /// pages past the last are `[]`. For records the generated data set has no form for:
    /// 20-digit ids, long decimals, values whose shape changes between records.
    #[serde(default)]
    pub pages: Vec<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            records: default_records(),
            page_size: default_page_size(),
            seed: default_seed(),
            port: 0,
            auth: MockAuth::default(),
            max_page_size: None,
            max_body_bytes: None,
            faults: Vec::new(),
            drift: None,
            malformed_records: Vec::new(),
            echo_requests: false,
            updated_at_overrides: std::collections::BTreeMap::new(),
            envelope_noise: false,
            pages: Vec::new(),
        }
    }
}

impl MockConfig {
    /// The fault mix of `sluice demo` over `records` records: OAuth2 tokens that expire
    /// mid-run, a 429 storm with `Retry-After` in both forms, a 5xx burst, pages capped at
    /// 100 records (a larger page gets `504`), three malformed records and `amount`
    /// retyped from the middle of the data set on. Pointed at by `pipelines/quickstart.yaml`.
    pub fn demo(records: u64) -> MockConfig {
        let rate_limited = |retry_after| FaultKind::RateLimited { retry_after };
        MockConfig {
            records,
            page_size: 100,
            auth: MockAuth::Oauth2 {
                client_id: DEMO_CLIENT_ID.to_owned(),
                client_secret: DEMO_CLIENT_SECRET.to_owned(),
                token_ttl_secs: 300,
            },
            max_page_size: Some(100),
            faults: vec![
                Fault::new(3, 2, rate_limited(RetryAfter::Seconds(1))),
                Fault::new(5, 1, rate_limited(RetryAfter::HttpDate(1))),
                Fault::new(8, 3, FaultKind::ServerError { status: 503 }),
                Fault::new(13, 1, FaultKind::ExpireTokens),
            ],
            drift: Some(Drift {
                from_id: records / 2 + 1,
                change: DriftChange::Retype,
            }),
            malformed_records: [records / 6, records / 2 + 7, records - records / 8]
                .into_iter()
                .filter(|&id| id >= 1)
                .collect(),
            ..MockConfig::default()
        }
    }
}

/// The OAuth2 client id of [`MockConfig::demo`].
pub const DEMO_CLIENT_ID: &str = "sluice-demo";
/// The OAuth2 client secret of [`MockConfig::demo`] (a demo value, not a secret).
pub const DEMO_CLIENT_SECRET: &str = "demo-secret";

fn default_records() -> u64 {
    1000
}
fn default_page_size() -> u32 {
    100
}
fn default_seed() -> u64 {
    42
}

/// How the mock checks requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MockAuth {
    /// Anyone may read.
    #[default]
    None,
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
    /// A key in a header or a query parameter.
    ApiKey {
        /// The header or parameter name.
        name: String,
        /// The key.
        value: String,
        /// `header` or `query`.
        #[serde(default, rename = "in")]
        location: KeyIn,
    },
    /// OAuth2 client credentials: `POST /oauth/token` issues bearer tokens that expire.
    Oauth2 {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: String,
        /// Token lifetime in seconds, as told in `expires_in`.
        #[serde(default = "default_token_ttl")]
        token_ttl_secs: u64,
    },
    /// HMAC-signed requests: the signature of `method\npath\nquery\ntimestamp\nbody`
    /// (query parameters sorted) in `X-Signature`, hex, with the Unix time in
    /// `X-Timestamp`; SHA-256.
    Hmac {
        /// The shared key.
        key: String,
        /// The signature header.
        #[serde(default = "default_signature_header")]
        signature_header: String,
        /// The timestamp header.
        #[serde(default = "default_timestamp_header")]
        timestamp_header: String,
        /// How far the timestamp may be from the mock's clock, in seconds.
        #[serde(default = "default_skew")]
        max_skew_secs: u64,
    },
}

fn default_token_ttl() -> u64 {
    3600
}
fn default_signature_header() -> String {
    "X-Signature".to_owned()
}
fn default_timestamp_header() -> String {
    "X-Timestamp".to_owned()
}
fn default_skew() -> u64 {
    300
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyIn {
    /// A request header.
    #[default]
    Header,
    /// A query parameter.
    Query,
}

/// A failure injected into data requests (not into `/oauth/token` or `/admin/*`).
///
/// Data requests are numbered from 1 in the order they arrive. The fault applies to
/// requests `from_request .. from_request + times` (`times: 0`: to every one from there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The first data request that gets the fault (1-based).
    #[serde(default = "default_from")]
    pub from_request: u64,
    /// How many requests in a row get it; `0` means every one from `from_request` on.
    #[serde(default = "default_times")]
    pub times: u64,
    /// What happens.
    pub kind: FaultKind,
}

fn default_from() -> u64 {
    1
}
fn default_times() -> u64 {
    1
}

impl Fault {
    /// A fault on `times` requests from the `from_request`th on.
    pub fn new(from_request: u64, times: u64, kind: FaultKind) -> Self {
        Fault {
            from_request,
            times,
            kind,
        }
    }

    pub(crate) fn applies_to(&self, request_no: u64) -> bool {
        request_no >= self.from_request
            && (self.times == 0 || request_no < self.from_request.saturating_add(self.times))
    }
}

/// A kind of injected failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// `429 Too Many Requests` with `Retry-After` and `X-RateLimit-*` headers.
    RateLimited {
        /// The `Retry-After` form.
        retry_after: RetryAfter,
    },
    /// A 5xx answer.
    ServerError {
        /// The status (500, 502, 503, 504).
        #[serde(default = "default_server_status")]
        status: u16,
    },
    /// The answer comes after this delay (beyond the client's timeout, say).
    Slow {
        /// Milliseconds to wait before answering.
        delay_ms: u64,
    },
    /// The connection is reset (TCP RST) without an answer.
    Reset,
    /// `401 Unauthorized`, whatever the credentials.
    Unauthorized,
    /// `403 Forbidden`.
    Forbidden,
    /// Every token issued so far expires now (OAuth2), so this request's token is refused.
    ExpireTokens,
    /// A `200 OK` whose body is cut in the middle: not valid JSON.
    MalformedJson,
    /// A `200 OK` whose body is `bytes` long once decoded (a JSON object padded with one
    /// long string). With `gzip`, it is sent `Content-Encoding: gzip`, whatever the
    /// client asked: a "gzip bomb" of a few kilobytes on the wire.
    LargeBody {
        /// The decoded size of the body.
        bytes: u64,
        /// Send it gzip-compressed.
        #[serde(default)]
        gzip: bool,
    },
    /// A used-up quota, told in one API's dialect. With an error `status` and a
    /// `reset_secs` above 0, every data request until the reset gets the same answer (the
    /// quota is used up until then, whatever the fault's `times`); with `200`, the page
    /// is served with the dialect's signal (a full `used/limit` header, or the quota
    /// error in the body).
    Quota {
        /// The status of the answer (GitHub: `403`).
        #[serde(default = "default_quota_status")]
        status: u16,
        /// How the API tells of it.
        dialect: QuotaDialect,
        /// Seconds until the quota resets.
        reset_secs: u64,
    },
}

fn default_quota_status() -> u16 {
    403
}

/// How an API tells that its quota is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaDialect {
    /// `X-RateLimit-Remaining: 0`, `X-RateLimit-Reset: <Unix time>` (GitHub).
    Github,
    /// GitHub's secondary rate limit (too many requests at once, whatever the quota):
    /// `Retry-After: <seconds>`, with the primary quota's headers saying requests are left
    /// (`X-RateLimit-Remaining: 4990`) and its reset an hour away; the body says
    /// "You have exceeded a secondary rate limit".
    GithubSecondary,
    /// `RateLimit-Remaining: 0`, `RateLimit-Reset: <seconds>` (the IETF draft).
    Ietf,
    /// `X-Rate-Limit-Remaining: 0`, `X-Rate-Limit-Reset: <Unix time>` (Twitter, Okta).
    Hyphenated,
    /// `Retry-After: <seconds>` alone.
    RetryAfter,
    /// `X-Shopify-Shop-Api-Call-Limit: 40/40`, no reset.
    CallLimit,
    /// No header: the body says `{"error": {"code": "RATE_LIMITED", "reset_at": <Unix
    /// time>}}`.
    Body,
}

fn default_server_status() -> u16 {
    503
}

/// The two forms of `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP-date>`, this many seconds from now (rounded up to a whole
    /// second, as HTTP dates have no fractions).
    HttpDate(u64),
}

/// Schema drift of the data set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    /// The first record id with the new shape. With pages of 100 sorted by id,
    /// `from_id: 201` makes the drift start on page 3.
    pub from_id: u64,
    /// What changed.
    pub change: DriftChange,
}

/// What schema drift does to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftChange {
    /// `status` is renamed `state`.
    Rename,
    /// A new field `priority` (an integer) appears.
    Add,
    /// `amount` becomes a string (`"12.50"`).
    Retype,
}
