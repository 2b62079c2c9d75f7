//! From a failed request to a classified [`ConnectorError`]: the class of each status and
//! transport error, the message saying what to check, and the redacted evidence.

use reqwest::header::HeaderMap;
use sluice_core::{ConnectorError, ErrorClass, Secret};
use std::time::{Duration, SystemTime};
use url::Url;

/// How many bytes of a response body the evidence keeps.
const BODY_SNIPPET: usize = 200;

/// Removes secrets from what the user will see: URL passwords, every query value but
/// those of public parameters, and every configured secret wherever it appears.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<Secret>,
    /// Query parameters that carry a credential (an API key in the query): always
    /// masked.
    params: Vec<String>,
    /// Query parameters whose values may print (lower case).
    public: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(secrets: Vec<Secret>, params: Vec<String>) -> Self {
        let secrets = secrets
            .into_iter()
            .filter(|s| !s.expose().is_empty())
            .collect();
        let params = params.into_iter().map(|p| p.to_ascii_lowercase()).collect();
        Redactor {
            secrets,
            params,
            public: Vec::new(),
        }
    }

    /// Also shows the values of these query parameters (the node's `public` list, the
    /// pagination's own parameters).
    pub(crate) fn with_public(mut self, public: impl IntoIterator<Item = String>) -> Self {
        self.public
            .extend(public.into_iter().map(|p| p.to_ascii_lowercase()));
        self
    }

    /// Adds a secret learned at run time (an OAuth2 access token).
    pub(crate) fn add_secret(&mut self, secret: Secret) {
        if !secret.expose().is_empty() && !self.secrets.contains(&secret) {
            self.secrets.push(secret);
        }
    }

    fn public_param(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        self.public.contains(&n) && !self.params.contains(&n)
    }

    /// The URL with its password and every query value but public ones as `***`.
    pub(crate) fn url(&self, url: &Url) -> String {
        let shown = sluice_core::redact::redact_url_except(url.as_str(), |n| self.public_param(n));
        self.text(&shown)
    }

    /// The length of the longest secret, in bytes.
    fn longest(&self) -> usize {
        self.secrets
            .iter()
            .map(|s| s.expose().len())
            .max()
            .unwrap_or(0)
    }

    /// The text with every known secret replaced by `***`.
    pub(crate) fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = s.redact(&out);
        }
        out
    }
}

/// Response headers worth showing: they explain rate limits, auth failures, bodies.
fn interesting(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "content-encoding"
            | "retry-after"
            | "www-authenticate"
            | "x-request-id"
            | "request-id"
            | "date"
    ) || name.starts_with("x-ratelimit")
        || name.starts_with("x-rate-limit")
        || name.starts_with("ratelimit")
        || name.ends_with("call-limit")
}

/// The evidence snippet: method, redacted URL, status, headers of interest, and the
/// first bytes of the body, all redacted.
pub(crate) fn evidence(
    redactor: &Redactor,
    method: &str,
    url: &Url,
    status: Option<u16>,
    headers: Option<&HeaderMap>,
    body: &[u8],
) -> String {
    let mut out = format!("{method} {}", redactor.url(url));
    if let Some(status) = status {
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        out.push_str(&format!("\n→ {status} {reason}"));
    }
    if let Some(headers) = headers {
        for (name, value) in headers {
            if interesting(name.as_str()) {
                let v = String::from_utf8_lossy(value.as_bytes());
                out.push_str(&format!("\n{}: {}", name.as_str(), redactor.text(&v)));
            }
        }
    }
    if !body.is_empty() {
        // Redact before cutting: a secret across the cut would leave its first part.
        let window = body
            .len()
            .min((64 << 10).max(BODY_SNIPPET + 3 * redactor.longest()));
        let text = redactor.text(&String::from_utf8_lossy(&body[..window]));
        let mut shown: String = text.chars().take(BODY_SNIPPET).collect();
        if shown.len() < text.len() || window < body.len() {
            shown.push_str(" …");
        }
        out.push_str(&format!("\nbody ({} bytes): {shown}", body.len()));
    }
    out
}

/// The class of an HTTP status that is not a success.
pub(crate) fn class_of_status(status: u16) -> ErrorClass {
    match status {
        401 => ErrorClass::Auth,
        403 => ErrorClass::Permission,
        408 => ErrorClass::Network,
        413 | 414 | 431 => ErrorClass::PayloadTooLarge,
        429 => ErrorClass::RateLimited,
        500..=599 => ErrorClass::Dependency,
        _ => ErrorClass::InvalidRequest,
    }
}

/// What a status means for the user, and what to check.
pub(crate) fn status_message(status: u16, host: &str) -> String {
    match status {
        401 => format!(
            "{host} refused the credentials (401): check the key, token or client secret, and the clock for signed requests"
        ),
        403 => format!(
            "{host} forbids this request (403): the credentials are valid but lack the permission or scope; ask the API's owner to grant it"
        ),
        404 => format!("{host} has no such resource (404): check the URL and the path"),
        408 => format!("{host} timed out waiting for the request (408)"),
        413 => format!("{host} found the request too large (413): lower the page size or the body"),
        414 => format!("{host} found the URL too long (414): move parameters to the body"),
        429 => format!(
            "{host} is rate limiting us (429): lower rate_limit.requests_per_second or wait for the quota to reset"
        ),
        502..=504 => format!(
            "{host} or a gateway in front of it is unavailable ({status}): the run is retried; if it persists, check the API's status page"
        ),
        500..=599 => {
            format!("{host} failed ({status}): a fault on the API's side; the run is retried")
        }
        400 | 422 => format!(
            "{host} rejected the request ({status}): check the query parameters, the body and the template variables"
        ),
        _ => format!("{host} answered {status}: check the URL, method and parameters"),
    }
}

/// Whether an error answer tells of a rate limit rather than of what its status says:
/// it carries `Retry-After` or says the quota is used up. GitHub answers its primary
/// limit with `403` and `x-ratelimit-remaining: 0`, an overloaded API a `503` with
/// `Retry-After`. A `401` stays `auth` (a fresh token is the cure).
pub(crate) fn signals_rate_limit(status: u16, headers: &HeaderMap) -> bool {
    status == 429
        || (status != 401 && (headers.contains_key("retry-after") || quota_exhausted(headers)))
}

/// A classified error for a failed response.
pub(crate) fn status_error(
    redactor: &Redactor,
    method: &str,
    url: &Url,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> ConnectorError {
    let host = host_of(url);
    let limited = signals_rate_limit(status, headers);
    let (class, message) = if limited && status != 429 {
        (
            ErrorClass::RateLimited,
            format!(
                "{host} answered {status} with a rate-limit signal (Retry-After or a used-up quota): it is rate limiting us, not refusing; waiting for the quota to reset (at most rate_limit.max_retry_after, else the node is parked until then)"
            ),
        )
    } else {
        (class_of_status(status), status_message(status, &host))
    };
    let e = ConnectorError::new(class, message).with_evidence(evidence(
        redactor,
        method,
        url,
        Some(status),
        Some(headers),
        body,
    ));
    let now = SystemTime::now();
    let asked = retry_after_asked(headers, now)
        .or_else(|| limited.then(|| ratelimit_reset_asked(headers, now))?);
    match asked {
        Some(asked) => with_asked_wait(e, &host, asked),
        None => e,
    }
}

/// The longest wait an answer can impose: a month of 31 days, the longest quota window
/// APIs use (a monthly quota resets at most 31 days on). A longer `Retry-After` or reset
/// is a misread clock or a broken server, not a quota: believed, one header would park the
/// pipeline (and every worker sharing the API's budget) for years.
pub(crate) const MAX_API_WAIT: Duration = Duration::from_secs(31 * 24 * 3600);

/// `asked` bounded by [`MAX_API_WAIT`].
pub(crate) fn bounded_wait(asked: Duration) -> Duration {
    asked.min(MAX_API_WAIT)
}

/// What to tell when `host` asked for a wait longer than [`MAX_API_WAIT`], else `None`.
pub(crate) fn capped_note(host: &str, asked: Duration) -> Option<String> {
    (asked > MAX_API_WAIT).then(|| {
        format!(
            "{host} asked to wait {}, longer than any quota window: the wait is capped at {} (check the API's Retry-After and rate-limit reset headers in the evidence)",
            humanize_long(asked),
            humanize_long(MAX_API_WAIT)
        )
    })
}

/// `e` with the wait `host` asked for, bounded, and a note in the message when it was cut.
fn with_asked_wait(mut e: ConnectorError, host: &str, asked: Duration) -> ConnectorError {
    if let Some(note) = capped_note(host, asked) {
        e.message = format!("{}; {note}", e.message);
    }
    e.with_retry_after(bounded_wait(asked))
}

/// A duration of days as days, shorter ones as [`humanize`] does.
pub(crate) fn humanize_long(d: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    if d.as_secs() >= DAY {
        format!("{:.1} days", d.as_secs_f64() / DAY as f64)
    } else {
        humanize(d)
    }
}

/// How much of an error answer's body is read: enough for the evidence, never more.
pub(crate) const ERROR_BODY_CAP: usize = 64 * 1024;

/// A response body read chunk by chunk, as decoded (reqwest undoes `gzip`), up to a
/// limit: however large the answer, at most `limit` bytes are held.
#[derive(Debug)]
pub struct CappedBody {
    /// The body, or its first `limit` bytes.
    pub bytes: Vec<u8>,
    /// The body went on beyond the limit (the rest was not read).
    pub over_limit: bool,
}

/// The most a body's buffer is sized to before its bytes arrive (see [`read_capped`]).
const PRESIZED_BODY: usize = 16 << 20;

/// The capacity a body's buffer starts with: the length the server announces, if any, up
/// to [`PRESIZED_BODY`] and `limit` (a length is a claim: a larger one, and the chunks past
/// it, grow the buffer as they come, never past `limit`).
fn presized(announced: Option<u64>, limit: usize) -> usize {
    let announced = usize::try_from(announced.unwrap_or(0)).unwrap_or(usize::MAX);
    announced.min(limit).min(PRESIZED_BODY)
}

/// Reads `resp`'s body up to `limit` decoded bytes (see [`CappedBody`]).
pub async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<CappedBody, reqwest::Error> {
    let mut bytes = Vec::with_capacity(presized(resp.content_length(), limit));
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(bytes.len());
        let take = chunk.len().min(room);
        // Grown by doubling as usual, but never past `limit`: the buffer holds at most
        // `limit` bytes (doubling alone could reserve nearly twice that).
        if bytes.capacity() - bytes.len() < take {
            let want = (bytes.capacity() * 2).max(bytes.len() + take).min(limit);
            bytes.reserve_exact(want - bytes.len());
        }
        bytes.extend_from_slice(&chunk[..take]);
        if chunk.len() > room {
            return Ok(CappedBody {
                bytes,
                over_limit: true,
            });
        }
    }
    Ok(CappedBody {
        bytes,
        over_limit: false,
    })
}

/// The `payload_too_large` error of an answer whose decoded body exceeds `cap`'s bytes
/// (its second part names the limit for the message); `prefix` is what was read of it.
pub(crate) fn too_large_error(
    redactor: &Redactor,
    method: &str,
    url: &Url,
    status: u16,
    headers: &HeaderMap,
    prefix: &[u8],
    cap: (usize, &str),
) -> ConnectorError {
    let (limit, setting) = cap;
    let host = host_of(url);
    ConnectorError::new(
        ErrorClass::PayloadTooLarge,
        format!(
            "the answer from {host} is larger than {limit} bytes once decoded ({setting}); reading stopped there: ask for smaller pages, or raise {setting} if the API really sends answers that large"
        ),
    )
    .with_evidence(evidence(
        redactor,
        method,
        url,
        Some(status),
        Some(headers),
        &prefix[..prefix.len().min(BODY_SNIPPET)],
    ))
}

/// A `200` whose body says the quota is used up (`rate_limit_signal`): a `rate_limited`
/// error, with the wait until the reset the body gives, if any.
pub(crate) fn body_signal_error(
    redactor: &Redactor,
    method: &str,
    url: &Url,
    headers: &HeaderMap,
    body: &[u8],
    signal: &super::config::RateLimitSignalConfig,
) -> Option<ConnectorError> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let at = |path: &str| {
        serde_json_path::JsonPath::parse(path)
            .ok()
            .and_then(|p| p.query(&doc).first().cloned())
    };
    let found = at(&signal.path)?;
    let text = match &found {
        serde_json::Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    if text != signal.equals {
        return None;
    }
    let host = host_of(url);
    let mut e = ConnectorError::new(
        ErrorClass::RateLimited,
        format!(
            "{host} answered 200 but its body says the quota is used up ({} is `{}`): waiting for the quota to reset",
            signal.path, signal.equals
        ),
    )
    .with_evidence(evidence(redactor, method, url, Some(200), Some(headers), body));
    let now = SystemTime::now();
    let asked = signal
        .reset
        .as_deref()
        .and_then(at)
        .and_then(|v| reset_value(&v, now))
        .or_else(|| retry_after_asked(headers, now))
        .or_else(|| ratelimit_reset_asked(headers, now));
    if let Some(asked) = asked {
        e = with_asked_wait(e, &host, asked);
    }
    Some(e)
}

/// A reset given as a number (Unix time, or seconds from now when small), as a numeric
/// string, or as an RFC 3339 or HTTP date. Not bounded (see [`bounded_wait`]).
fn reset_value(v: &serde_json::Value, now: SystemTime) -> Option<Duration> {
    match v {
        serde_json::Value::Number(n) => reset_number(n.as_f64()?, now),
        serde_json::Value::String(t) => {
            let t = t.trim();
            if let Ok(n) = t.parse::<f64>() {
                return reset_number(n, now);
            }
            let at = match chrono::DateTime::parse_from_rfc3339(t) {
                Ok(d) => SystemTime::from(d),
                Err(_) => httpdate::parse_http_date(t).ok()?,
            };
            Some(at.duration_since(now).unwrap_or(Duration::ZERO))
        }
        _ => None,
    }
}

/// A reset number: more than a trillion is a Unix time in milliseconds (some APIs give
/// `Date.now()`; as seconds it would be the year 33658 or later), more than a billion a
/// Unix time in seconds, less is seconds from now. Not bounded (see [`bounded_wait`]).
fn reset_number(n: f64, now: SystemTime) -> Option<Duration> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let since_epoch = if n > 1_000_000_000_000.0 {
        n / 1000.0
    } else if n > 1_000_000_000.0 {
        n
    } else {
        return Duration::try_from_secs_f64(n).ok();
    };
    let at = SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(since_epoch).ok()?)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A classified error for a request that got no response.
pub(crate) fn transport_error(
    redactor: &Redactor,
    method: &str,
    url: &Url,
    err: &reqwest::Error,
    timeout: Duration,
) -> ConnectorError {
    let host = host_of(url);
    let chain = chain(err);
    let (class, message) = if err.is_timeout() {
        (
            ErrorClass::Network,
            format!(
                "{host} did not answer within {} ({chain}): the API is slow or unreachable; raise timeouts.request if its pages are large",
                humanize(timeout)
            ),
        )
    } else if err.is_connect() {
        (
            ErrorClass::Network,
            format!(
                "could not connect to {host} ({chain}): check the host name, the port, DNS, the network path and TLS"
            ),
        )
    } else if let Some(to) = refused_redirect(err) {
        (
            ErrorClass::InvalidRequest,
            format!(
                "{host} redirected the request to {to}, another origin: credentials go only to the origin of `url` and to `allowed_hosts`; write the final address in `url`, or add its host to `allowed_hosts` if you trust it"
            ),
        )
    } else if err.is_builder() {
        (
            ErrorClass::InvalidRequest,
            format!(
                "the request to {host} could not be built ({chain}): check the URL and header values"
            ),
        )
    } else {
        (
            ErrorClass::Network,
            format!(
                "the connection to {host} failed mid-request ({chain}): reset or closed by the other side; the request is retried"
            ),
        )
    };
    ConnectorError::new(class, redactor.text(&message))
        .with_evidence(evidence(redactor, method, url, None, None, b""))
}

/// The origin a redirect was refused to, if that is what failed.
fn refused_redirect(err: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<super::origin::RefusedRedirect>() {
            return Some(r.0.clone());
        }
        source = s.source();
    }
    None
}

/// The error and its sources, without the URL (which could hold a secret).
fn chain(err: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    let head = match err.url() {
        Some(_) => {
            let text = err.to_string();
            text.split(" for url (").next().unwrap_or(&text).to_owned()
        }
        None => err.to_string(),
    };
    parts.push(head);
    while let Some(s) = source {
        let t = s.to_string();
        if !parts.iter().any(|p| p == &t) {
            parts.push(t);
        }
        source = s.source();
    }
    parts.join(": ")
}

pub(crate) fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => "the API".to_owned(),
    }
}

pub(crate) fn humanize(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `Retry-After` as seconds or as an HTTP date (a date in the past means now), bounded by
/// [`MAX_API_WAIT`].
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    retry_after_asked(headers, now).map(bounded_wait)
}

/// `Retry-After` as the API gave it, not bounded.
fn retry_after_asked(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The names of the rate-limit headers of each dialect, by what they tell: the
/// `X-RateLimit-*` of GitHub and many others, the IETF draft's `RateLimit-*`, and the
/// hyphenated `X-Rate-Limit-*` (Twitter, Okta).
const REMAINING: [&str; 3] = [
    "x-ratelimit-remaining",
    "ratelimit-remaining",
    "x-rate-limit-remaining",
];
const RESET: [&str; 3] = ["x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset"];

/// A parameter of the IETF draft's combined `RateLimit` header
/// (`limit=10, remaining=0, reset=5`, or the later `"default";r=0;t=5`).
fn combined(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    let c = headers.get("ratelimit")?.to_str().ok()?;
    c.split([',', ';']).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        names
            .contains(&k.trim().to_ascii_lowercase().as_str())
            .then(|| v.trim().to_owned())
    })
}

/// The wait until a rate-limit window resets as the API gave it (not bounded: see
/// [`bounded_wait`]), from `X-RateLimit-Reset`, `RateLimit-Reset`, `X-Rate-Limit-Reset` or
/// the combined `RateLimit: ..., reset=N` header. Large numbers are Unix times (in
/// seconds, or in milliseconds past a trillion), small ones seconds from now.
pub(crate) fn ratelimit_reset_asked(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let raw = RESET
        .iter()
        .find_map(|n| headers.get(*n)?.to_str().ok().map(str::to_owned))
        .or_else(|| combined(headers, &["reset", "t"]))?;
    reset_number(raw.trim().parse().ok()?, now)
}

/// Whether the response says the quota is used up: a `remaining` of 0 in any dialect,
/// or a `used/limit` header at its limit (`X-Shopify-Shop-Api-Call-Limit: 40/40`, any
/// header whose name ends in `call-limit`).
pub(crate) fn quota_exhausted(headers: &HeaderMap) -> bool {
    let remaining = REMAINING
        .iter()
        .find_map(|n| headers.get(*n)?.to_str().ok()?.trim().parse::<f64>().ok())
        .or_else(|| combined(headers, &["remaining", "r"])?.parse::<f64>().ok());
    if remaining.is_some_and(|r| r <= 0.0) {
        return true;
    }
    headers.iter().any(|(name, value)| {
        name.as_str().ends_with("call-limit")
            && value
                .to_str()
                .ok()
                .and_then(|v| {
                    let (used, limit) = v.trim().split_once('/')?;
                    Some((
                        used.trim().parse::<f64>().ok()?,
                        limit.trim().parse::<f64>().ok()?,
                    ))
                })
                .is_some_and(|(used, limit)| limit > 0.0 && used >= limit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// The reset wait as the sources take it: bounded by [`MAX_API_WAIT`].
    fn ratelimit_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
        ratelimit_reset_asked(headers, now).map(bounded_wait)
    }

    /// An announced length sizes the buffer only within the cap and 16 MiB: a server that
    /// claims terabytes gets no more memory for it.
    #[test]
    fn a_body_buffer_is_presized_within_bounds() {
        let cap = 256 << 20;
        assert_eq!(presized(Some(500_000), cap), 500_000);
        assert_eq!(presized(None, cap), 0);
        assert_eq!(presized(Some(1 << 40), cap), PRESIZED_BODY);
        assert_eq!(presized(Some(u64::MAX), 1_000), 1_000);
        assert_eq!(presized(Some(5_000), 1_000), 1_000);
    }

    #[test]
    fn secrets_never_reach_the_evidence() {
        let r = Redactor::new(vec![Secret::new("s3cr3t")], vec!["apitoken2".into()])
            .with_public(["page".to_owned(), "apitoken2".to_owned()]);
        let url =
            Url::parse("https://u:pw@api.example.com/x?api_key=abc&page=2&apitoken2=zz&q=s3cr3t")
                .unwrap();
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        h.insert("set-cookie", HeaderValue::from_static("session=xyz"));
        let ev = evidence(
            &r,
            "GET",
            &url,
            Some(429),
            Some(&h),
            b"{\"echo\":\"s3cr3t\"}",
        );
        assert!(
            !ev.contains("abc")
                && !ev.contains("zz")
                && !ev.contains("s3cr3t")
                && !ev.contains("pw@"),
            "{ev}"
        );
        assert!(
            ev.contains("page=2")
                && ev.contains("retry-after: 3")
                && ev.contains("429 Too Many Requests"),
            "{ev}"
        );
        assert!(!ev.contains("session"), "{ev}");
        let long = vec![b'x'; 1000];
        assert!(evidence(&r, "GET", &url, Some(500), None, &long).len() < 500);
    }

    #[test]
    fn a_secret_across_the_body_cut_leaves_no_part() {
        let r = Redactor::new(vec![Secret::new("abcdefghij-secret")], vec![]);
        let url = Url::parse("https://api.example.com/x").unwrap();
        let body = format!("{}abcdefghij-secret and more", "x".repeat(BODY_SNIPPET - 5));
        let ev = evidence(&r, "GET", &url, Some(500), None, body.as_bytes());
        assert!(!ev.contains("abcde"), "{ev}");
        assert!(ev.ends_with('…'), "{ev}");
    }

    #[test]
    fn retry_after_reads_both_forms_and_reset_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(4));
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(4)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);

        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1700000010"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        assert_eq!(ratelimit_reset(&h, now), Some(Duration::from_secs(10)));
        assert!(quota_exhausted(&h));
        let mut h = HeaderMap::new();
        h.insert(
            "ratelimit",
            HeaderValue::from_static("limit=10, remaining=0, reset=5"),
        );
        assert_eq!(ratelimit_reset(&h, now), Some(Duration::from_secs(5)));
        assert!(quota_exhausted(&h));
    }

    /// A reset in milliseconds since the epoch is read as such, not as seconds millennia
    /// ahead; whatever an answer asks for, the wait is at most [`MAX_API_WAIT`].
    #[test]
    fn resets_in_milliseconds_are_read_and_every_asked_wait_is_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let millis = h(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000030000"),
        ]);
        assert_eq!(ratelimit_reset(&millis, now), Some(Duration::from_secs(30)));
        assert_eq!(
            reset_value(&serde_json::json!(1_700_000_000_500u64), now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            reset_value(&serde_json::json!("1700000004000"), now),
            Some(Duration::from_secs(4))
        );
        // A century in seconds, in every form an answer can ask for it.
        let century = 100 * 365 * 24 * 3600u64;
        let far = h(&[("retry-after", &century.to_string())]);
        assert_eq!(retry_after(&far, now), Some(MAX_API_WAIT));
        let far_date = httpdate::fmt_http_date(now + Duration::from_secs(century));
        assert_eq!(
            retry_after(&h(&[("retry-after", &far_date)]), now),
            Some(MAX_API_WAIT)
        );
        let far_reset = h(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(1_700_000_000 + century).to_string()),
        ]);
        assert_eq!(ratelimit_reset(&far_reset, now), Some(MAX_API_WAIT));
        // Within the bound, a wait is what was asked.
        let month = h(&[("retry-after", &(30 * 24 * 3600).to_string())]);
        assert_eq!(
            retry_after(&month, now),
            Some(Duration::from_secs(30 * 24 * 3600))
        );

        // The error says what the API asked for and that the wait was capped.
        let url = Url::parse("https://api.example.com/x").unwrap();
        let r = Redactor::default();
        let e = status_error(&r, "GET", &url, 429, &far, b"");
        assert_eq!(e.class, ErrorClass::RateLimited);
        assert_eq!(e.retry_after, Some(MAX_API_WAIT));
        assert!(
            e.message.contains("asked to wait 36500.0 days")
                && e.message.contains("capped at 31.0 days"),
            "{}",
            e.message
        );
        assert!(
            e.evidence
                .as_deref()
                .is_some_and(|ev| ev.contains(&format!("retry-after: {century}"))),
            "{:?}",
            e.evidence
        );
        let e = status_error(&r, "GET", &url, 429, &month, b"");
        assert!(!e.message.contains("capped"), "{}", e.message);
        let signal = crate::http::config::RateLimitSignalConfig {
            path: "$.quota".into(),
            equals: "exhausted".into(),
            reset: Some("$.reset".into()),
        };
        let body = format!(
            r#"{{"quota":"exhausted","reset":{}}}"#,
            1_700_000_000 + century
        );
        let e = body_signal_error(&r, "GET", &url, &HeaderMap::new(), body.as_bytes(), &signal)
            .expect("the body tells of a used-up quota");
        assert_eq!(e.retry_after, Some(MAX_API_WAIT));
        assert!(e.message.contains("capped at 31.0 days"), "{}", e.message);
    }

    #[test]
    fn statuses_map_to_the_taxonomy() {
        use ErrorClass::*;
        for (s, c) in [
            (401, Auth),
            (403, Permission),
            (404, InvalidRequest),
            (422, InvalidRequest),
            (413, PayloadTooLarge),
            (429, RateLimited),
            (500, Dependency),
            (503, Dependency),
            (504, Dependency),
            (408, Network),
        ] {
            assert_eq!(class_of_status(s), c, "{s}");
        }
    }

    #[test]
    fn every_dialect_tells_a_used_up_quota_and_its_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let github = h(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000060"),
        ]);
        assert!(quota_exhausted(&github) && signals_rate_limit(403, &github));
        assert_eq!(ratelimit_reset(&github, now), Some(Duration::from_secs(60)));
        let ietf = h(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "30")]);
        assert!(quota_exhausted(&ietf));
        assert_eq!(ratelimit_reset(&ietf, now), Some(Duration::from_secs(30)));
        let structured = h(&[("ratelimit", "\"default\";r=0;t=9")]);
        assert!(quota_exhausted(&structured));
        assert_eq!(
            ratelimit_reset(&structured, now),
            Some(Duration::from_secs(9))
        );
        let twitter = h(&[
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", "1700000005"),
        ]);
        assert!(quota_exhausted(&twitter));
        assert_eq!(ratelimit_reset(&twitter, now), Some(Duration::from_secs(5)));
        assert!(quota_exhausted(&h(&[(
            "x-shopify-shop-api-call-limit",
            "40/40"
        )])));
        assert!(!quota_exhausted(&h(&[(
            "x-shopify-shop-api-call-limit",
            "39/40"
        )])));
        assert!(!quota_exhausted(&h(&[(
            "x-shopify-shop-api-call-limit",
            "0/0"
        )])));
        assert!(!quota_exhausted(&h(&[("x-ratelimit-remaining", "12")])));
        // A plain 403 is still `permission`; a 503 with Retry-After is a rate limit; a
        // 401 stays `auth` whatever it carries.
        assert!(!signals_rate_limit(
            403,
            &h(&[("x-ratelimit-remaining", "4")])
        ));
        assert!(signals_rate_limit(503, &h(&[("retry-after", "3")])));
        assert!(!signals_rate_limit(401, &github));
        assert_eq!(
            reset_value(&serde_json::json!("2023-11-14T22:14:20Z"), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            reset_value(&serde_json::json!(1_700_000_004), now),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            reset_value(&serde_json::json!("12"), now),
            Some(Duration::from_secs(12))
        );
    }

    /// An answer whose body never ends (chunk after chunk, for as long as it is read):
    /// `read_capped` stops at the cap, having held at most the cap (not a doubling past
    /// it), and the server sees the connection go.
    #[tokio::test]
    async fn an_endless_body_is_read_up_to_the_cap_and_no_further() {
        // Not a power of two: a buffer grown by doubling alone would reserve 256 KiB.
        const CAP: usize = 200_000;
        let (addr, server) = sluice_testkit::receiver::endless_answer().await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let resp = client
            .get(format!("http://{addr}/endless"))
            .send()
            .await
            .unwrap();
        let body = tokio::time::timeout(Duration::from_secs(10), read_capped(resp, CAP))
            .await
            .expect("reading stops at the cap")
            .unwrap();
        assert!(body.over_limit);
        assert_eq!(body.bytes.len(), CAP);
        assert!(
            body.bytes.capacity() <= CAP,
            "held {} bytes for a cap of {CAP}",
            body.bytes.capacity()
        );
        drop(client);
        let sent = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the connection is closed once the cap is reached")
            .unwrap();
        // What was sent past the cap sat in the sockets' buffers, not in ours.
        assert!(sent < 64 << 20, "{sent} bytes were sent");
    }
}
