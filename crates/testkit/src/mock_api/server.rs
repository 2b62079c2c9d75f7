//! The request handler: faults, auth, limits, then the data routes.

// Handlers return `Result<Response, Response>`: an error *is* an answer here, and
// boxing every early return would only add noise.
#![allow(clippy::result_large_err)]

use super::config::{FaultKind, KeyIn, MockAuth, MockConfig, QuotaDialect, RetryAfter};
use super::data::DataSet;
use super::log::LoggedRequest;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Put on each request by the connection task: the handler notifies it to drop the
/// connection (a TCP reset, since sockets linger 0).
#[derive(Clone)]
pub(crate) struct ConnKill(pub(crate) Arc<Notify>);

pub(crate) struct MockState {
    pub(crate) config: MockConfig,
    pub(crate) faults: Mutex<Vec<super::config::Fault>>,
    pub(crate) data: RwLock<DataSet>,
    pub(crate) log: Mutex<Vec<LoggedRequest>>,
    pub(crate) data_requests: AtomicU64,
    pub(crate) all_requests: AtomicU64,
    pub(crate) healed: AtomicBool,
    pub(crate) tokens: Mutex<HashMap<String, Instant>>,
    pub(crate) token_counter: AtomicU64,
    pub(crate) started: Instant,
    /// A quota fault in force: its answer and when the quota resets.
    pub(crate) quota: Mutex<Option<(FaultKind, SystemTime)>>,
}

impl MockState {
    pub(crate) fn new(config: MockConfig) -> Self {
        let data = DataSet::new(
            config.records,
            config.seed,
            config.drift.clone(),
            config.malformed_records.clone(),
            config.updated_at_overrides.clone(),
        );
        MockState {
            faults: Mutex::new(config.faults.clone()),
            config,
            data: RwLock::new(data),
            log: Mutex::new(Vec::new()),
            data_requests: AtomicU64::new(0),
            all_requests: AtomicU64::new(0),
            healed: AtomicBool::new(false),
            tokens: Mutex::new(HashMap::new()),
            token_counter: AtomicU64::new(0),
            started: Instant::now(),
            quota: Mutex::new(None),
        }
    }

    pub(crate) fn data(&self) -> std::sync::RwLockReadGuard<'_, DataSet> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn fault_for(&self, request_no: u64) -> Option<FaultKind> {
        if self.healed.load(Ordering::SeqCst) {
            return None;
        }
        let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults
            .iter()
            .find(|f| f.applies_to(request_no))
            .map(|f| f.kind.clone())
    }
}

/// What a request was, kept for the log.
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    at: SystemTime,
    elapsed: Duration,
    seq: u64,
}

/// Headers the log keeps: those a test may want to check.
fn interesting(name: &str, cfg: &MockConfig) -> bool {
    const KEEP: &[&str] = &[
        "authorization",
        "content-type",
        "content-length",
        "accept-encoding",
        "user-agent",
        "x-signature",
        "x-timestamp",
        "x-key-id",
        "x-api-key",
    ];
    if KEEP.contains(&name) {
        return true;
    }
    match &cfg.auth {
        MockAuth::ApiKey { name: key, .. } => key.eq_ignore_ascii_case(name),
        MockAuth::Hmac {
            signature_header,
            timestamp_header,
            ..
        } => {
            signature_header.eq_ignore_ascii_case(name)
                || timestamp_header.eq_ignore_ascii_case(name)
        }
        _ => false,
    }
}

pub(crate) async fn handle(state: Arc<MockState>, req: Request<Body>) -> Response {
    if !state.config.echo_requests {
        return answer(state, req).await;
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let mut echo = format!(
        "{} {}",
        parts.method,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host"
                | "user-agent"
                | "accept"
                | "accept-encoding"
                | "content-length"
                | "content-type"
        ) {
            echo.push_str(&format!(
                " {name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
    }
    echo.push(' ');
    echo.push_str(&String::from_utf8_lossy(&body));
    let resp = answer(state, Request::from_parts(parts, Body::from(body))).await;
    if resp.status().as_u16() < 400 {
        return resp;
    }
    let (mut head, was) = resp.into_parts();
    let was = axum::body::to_bytes(was, usize::MAX)
        .await
        .unwrap_or_default();
    head.headers.remove(header::CONTENT_LENGTH);
    let text = json!({"echo": echo, "error": String::from_utf8_lossy(&was)}).to_string();
    Response::from_parts(head, Body::from(text))
}

async fn answer(state: Arc<MockState>, req: Request<Body>) -> Response {
    let (parts, body) = req.into_parts();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts
            .headers
            .iter()
            .filter(|(n, _)| interesting(n.as_str(), &state.config))
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        at: SystemTime::now(),
        elapsed: state.started.elapsed(),
        seq: state.all_requests.fetch_add(1, Ordering::SeqCst) + 1,
    };
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(_) => Bytes::new(),
    };
    let kill = parts.extensions.get::<ConnKill>().cloned();
    let path = parts.uri.path().to_owned();

    if path == "/oauth/token" {
        let resp = token_endpoint(&state, &parts.headers, &body);
        return logged(&state, seen, None, None, None, resp);
    }
    if let Some(rest) = path.strip_prefix("/admin/") {
        let resp = admin(&state, rest, &body);
        return logged(&state, seen, None, None, None, resp);
    }
    if path == "/health" {
        return logged(
            &state,
            seen,
            None,
            None,
            None,
            (StatusCode::OK, "ok").into_response(),
        );
    }

    let n = state.data_requests.fetch_add(1, Ordering::SeqCst) + 1;
    let in_force = {
        let mut q = state.quota.lock().unwrap_or_else(|e| e.into_inner());
        match &*q {
            Some((kind, until)) if SystemTime::now() < *until => Some((kind.clone(), *until)),
            _ => {
                *q = None;
                None
            }
        }
    };
    let fault = match &in_force {
        Some((kind, _)) => Some(kind.clone()),
        None => state.fault_for(n),
    };
    let fault_name = fault.as_ref().map(fault_label);
    let mut truncate = false;
    match fault {
        Some(FaultKind::Reset) => {
            log(&state, seen, Some(n), fault_name, 0);
            if let Some(kill) = kill {
                kill.0.notify_one();
                std::future::pending::<()>().await;
            }
            // Not served through the mock's own accept loop: answer as close as we can.
            return StatusCode::BAD_GATEWAY.into_response();
        }
        Some(FaultKind::Slow { delay_ms }) => {
            // Logged on arrival: the client has usually given up before the answer.
            log(&state, seen, Some(n), fault_name, 0);
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let query = parse_query(parts.uri.query().unwrap_or(""));
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1")
                .to_owned();
            return match route(&state, &parts.method, &path, &query, &body, &host) {
                Ok(r) | Err(r) => r,
            };
        }
        Some(FaultKind::RateLimited { retry_after }) => {
            let (value, until) = match retry_after {
                RetryAfter::Seconds(s) => (s.to_string(), system_time_after(s)),
                RetryAfter::HttpDate(s) => {
                    let now = SystemTime::now();
                    let whole =
                        now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() + 1 + s;
                    let until = UNIX_EPOCH + Duration::from_secs(whole);
                    (httpdate::fmt_http_date(until), until)
                }
            };
            let reset = until
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs()
                .max(1);
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down");
            let h = resp.headers_mut();
            insert(h, "retry-after", &value);
            insert(h, "x-ratelimit-limit", "10");
            insert(h, "x-ratelimit-remaining", "0");
            insert(h, "x-ratelimit-reset", &reset.to_string());
            return logged(&state, seen, Some(n), fault_name, Some(until), resp);
        }
        Some(FaultKind::ServerError { status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let resp = error(
                status,
                "upstream_unavailable",
                "the backend is having a bad day",
            );
            return logged(&state, seen, Some(n), fault_name, None, resp);
        }
        Some(FaultKind::Unauthorized) => {
            let resp = unauthorized("invalid_token");
            return logged(&state, seen, Some(n), fault_name, None, resp);
        }
        Some(FaultKind::Forbidden) => {
            let resp = error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this client may not read orders",
            );
            return logged(&state, seen, Some(n), fault_name, None, resp);
        }
        Some(FaultKind::ExpireTokens) => {
            let mut tokens = state.tokens.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            for expiry in tokens.values_mut() {
                *expiry = now;
            }
        }
        Some(FaultKind::MalformedJson) => truncate = true,
        Some(FaultKind::LargeBody { bytes, gzip }) => {
            let resp = large_body(bytes, gzip).await;
            return logged(&state, seen, Some(n), fault_name, None, resp);
        }
        Some(FaultKind::Quota {
            status,
            dialect,
            reset_secs,
        }) if status != 200 => {
            let until = match in_force {
                Some((_, until)) => until,
                None => {
                    let now = SystemTime::now();
                    let whole = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
                        + 1
                        + reset_secs;
                    let until = UNIX_EPOCH + Duration::from_secs(whole);
                    if reset_secs > 0 {
                        *state.quota.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((fault.clone().unwrap_or(FaultKind::Reset), until));
                    }
                    until
                }
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let mut resp = error(status, "rate_limited", "API rate limit exceeded");
            quota_signal(&mut resp, dialect, until);
            return logged(&state, seen, Some(n), fault_name, Some(until), resp);
        }
        Some(FaultKind::Quota { .. }) | None => {}
    }

    if let Err(resp) = check_auth(&state, &parts.method, &parts.uri, &parts.headers, &body) {
        return logged(&state, seen, Some(n), fault_name, None, resp);
    }
    if let Some(max) = state.config.max_body_bytes
        && body.len() > max
    {
        let resp = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("request bodies are limited to {max} bytes"),
        );
        return logged(&state, seen, Some(n), fault_name, None, resp);
    }

    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let mut resp = match route(&state, &parts.method, &path, &query, &body, &host) {
        Ok(r) => r,
        Err(r) => r,
    };
    if truncate && resp.status().is_success() {
        let (head, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let cut = bytes.slice(..bytes.len() / 2);
        let mut head = head;
        head.headers.remove(header::CONTENT_LENGTH);
        resp = Response::from_parts(head, Body::from(cut));
    }
    let mut until = None;
    if let Some(FaultKind::Quota {
        dialect,
        reset_secs,
        ..
    }) = fault
        && resp.status().is_success()
    {
        let at = SystemTime::now() + Duration::from_secs(reset_secs);
        quota_signal(&mut resp, dialect, at);
        until = (dialect == QuotaDialect::Body).then_some(at);
    }
    logged(&state, seen, Some(n), fault_name, until, resp)
}

/// Adds a used-up quota's signal in `dialect` to an answer, resetting at `until`.
fn quota_signal(resp: &mut Response, dialect: QuotaDialect, until: SystemTime) {
    let unix = until
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        .ceil() as u64;
    let delta = until
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs_f64()
        .ceil() as u64;
    let h = resp.headers_mut();
    match dialect {
        QuotaDialect::Github => {
            insert(h, "x-ratelimit-limit", "60");
            insert(h, "x-ratelimit-remaining", "0");
            insert(h, "x-ratelimit-used", "60");
            insert(h, "x-ratelimit-reset", &unix.to_string());
        }
        QuotaDialect::GithubSecondary => {
            insert(h, "retry-after", &delta.to_string());
            insert(h, "x-ratelimit-limit", "5000");
            insert(h, "x-ratelimit-remaining", "4990");
            insert(h, "x-ratelimit-used", "10");
            insert(h, "x-ratelimit-reset", &(unix + 3600).to_string());
            h.remove(header::CONTENT_LENGTH);
            let text = json!({
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
            })
            .to_string();
            *resp.body_mut() = Body::from(text);
        }
        QuotaDialect::Ietf => {
            insert(h, "ratelimit-limit", "60");
            insert(h, "ratelimit-remaining", "0");
            insert(h, "ratelimit-reset", &delta.to_string());
        }
        QuotaDialect::Hyphenated => {
            insert(h, "x-rate-limit-limit", "60");
            insert(h, "x-rate-limit-remaining", "0");
            insert(h, "x-rate-limit-reset", &unix.to_string());
        }
        QuotaDialect::RetryAfter => insert(h, "retry-after", &delta.to_string()),
        QuotaDialect::CallLimit => insert(h, "x-shopify-shop-api-call-limit", "40/40"),
        QuotaDialect::Body => {
            h.remove(header::CONTENT_LENGTH);
            let text = json!({"error": {"code": "RATE_LIMITED", "reset_at": unix}}).to_string();
            *resp.body_mut() = Body::from(text);
        }
    }
}

/// `now + secs` for the log; a time past the clock's end is capped at a century.
fn system_time_after(secs: u64) -> SystemTime {
    let now = SystemTime::now();
    now.checked_add(Duration::from_secs(secs))
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// The answer of [`FaultKind::LargeBody`]: `{"data":[],"pad":"aaa…"}`, `bytes` long
/// (at least the frame), gzip-compressed when asked (built off the async runtime).
async fn large_body(bytes: u64, gzip: bool) -> Response {
    fn write_body(out: &mut impl std::io::Write, bytes: u64) -> std::io::Result<()> {
        const HEAD: &[u8] = br#"{"data":[],"pad":""#;
        const TAIL: &[u8] = br#""}"#;
        let chunk = vec![b'a'; 1 << 20];
        out.write_all(HEAD)?;
        let mut left = bytes.saturating_sub((HEAD.len() + TAIL.len()) as u64);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            out.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        out.write_all(TAIL)
    }
    let built = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            write_body(&mut enc, bytes)?;
            enc.finish()
        } else {
            let mut out = Vec::new();
            write_body(&mut out, bytes)?;
            Ok(out)
        }
    })
    .await;
    let Ok(Ok(body)) = built else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    insert(h, "content-type", "application/json");
    if gzip {
        insert(h, "content-encoding", "gzip");
    }
    resp
}

fn fault_label(kind: &FaultKind) -> String {
    match kind {
        FaultKind::RateLimited { .. } => "rate_limited",
        FaultKind::ServerError { .. } => "server_error",
        FaultKind::Slow { .. } => "slow",
        FaultKind::Reset => "reset",
        FaultKind::Unauthorized => "unauthorized",
        FaultKind::Forbidden => "forbidden",
        FaultKind::ExpireTokens => "expire_tokens",
        FaultKind::MalformedJson => "malformed_json",
        FaultKind::LargeBody { .. } => "large_body",
        FaultKind::Quota { .. } => "quota",
    }
    .to_owned()
}

fn logged(
    state: &MockState,
    seen: Seen,
    data_request: Option<u64>,
    fault: Option<String>,
    retry_after_until: Option<SystemTime>,
    resp: Response,
) -> Response {
    let mut entry = entry(seen, data_request, fault, resp.status().as_u16());
    entry.retry_after_until = retry_after_until;
    state
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(entry);
    resp
}

fn log(
    state: &MockState,
    seen: Seen,
    data_request: Option<u64>,
    fault: Option<String>,
    status: u16,
) {
    let entry = entry(seen, data_request, fault, status);
    state
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(entry);
}

fn entry(
    seen: Seen,
    data_request: Option<u64>,
    fault: Option<String>,
    status: u16,
) -> LoggedRequest {
    LoggedRequest {
        seq: seen.seq,
        data_request,
        at: seen.at,
        elapsed: seen.elapsed,
        method: seen.method,
        path: seen.path,
        query: seen.query,
        headers: seen.headers,
        status,
        fault,
        retry_after_until: None,
    }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

fn unauthorized(code: &str) -> Response {
    let mut resp = error(StatusCode::UNAUTHORIZED, code, "authentication failed");
    insert(
        resp.headers_mut(),
        "www-authenticate",
        &format!("Bearer error=\"{code}\""),
    );
    resp
}

pub(crate) fn parse_query(q: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

/// The canonical query string that HMAC signatures cover: parameters decoded, sorted by
/// name then value, and form-encoded again.
pub(crate) fn canonical_query(q: &str) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect();
    pairs.sort();
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn check_auth(
    state: &MockState,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response> {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match &state.config.auth {
        MockAuth::None => Ok(()),
        MockAuth::Basic { username, password } => {
            let expected =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            if authz.strip_prefix("Basic ") == Some(expected.as_str()) {
                Ok(())
            } else {
                Err(unauthorized("invalid_credentials"))
            }
        }
        MockAuth::Bearer { token } => {
            if authz.strip_prefix("Bearer ") == Some(token.as_str()) {
                Ok(())
            } else {
                Err(unauthorized("invalid_token"))
            }
        }
        MockAuth::ApiKey {
            name,
            value,
            location,
        } => {
            let sent = match location {
                KeyIn::Header => headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                KeyIn::Query => parse_query(uri.query().unwrap_or("")).remove(name),
            };
            if sent.as_deref() == Some(value.as_str()) {
                Ok(())
            } else {
                Err(unauthorized("invalid_api_key"))
            }
        }
        MockAuth::Oauth2 { .. } => {
            let Some(token) = authz.strip_prefix("Bearer ") else {
                return Err(unauthorized("missing_token"));
            };
            let tokens = state.tokens.lock().unwrap_or_else(|e| e.into_inner());
            match tokens.get(token) {
                Some(expiry) if *expiry > Instant::now() => Ok(()),
                Some(_) => Err(unauthorized("token_expired")),
                None => Err(unauthorized("invalid_token")),
            }
        }
        MockAuth::Hmac {
            key,
            signature_header,
            timestamp_header,
            max_skew_secs,
        } => {
            let get = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
            };
            let ts = get(timestamp_header);
            let sig = get(signature_header);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64;
            match ts.parse::<i64>() {
                Ok(t) if (now - t).unsigned_abs() <= *max_skew_secs => {}
                _ => return Err(unauthorized("stale_or_missing_timestamp")),
            }
            let canonical = format!(
                "{}\n{}\n{}\n{}\n{}",
                method.as_str(),
                uri.path(),
                canonical_query(uri.query().unwrap_or("")),
                ts,
                String::from_utf8_lossy(body)
            );
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
                return Err(unauthorized("bad_key"));
            };
            mac.update(canonical.as_bytes());
            let expected = hex(&mac.finalize().into_bytes());
            if sig.eq_ignore_ascii_case(&expected) {
                Ok(())
            } else {
                Err(unauthorized("bad_signature"))
            }
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn token_endpoint(state: &MockState, headers: &HeaderMap, body: &[u8]) -> Response {
    let MockAuth::Oauth2 {
        client_id,
        client_secret,
        token_ttl_secs,
    } = &state.config.auth
    else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this mock does not issue tokens",
        );
    };
    let form = parse_query(&String::from_utf8_lossy(body));
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "use client_credentials",
        );
    }
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (id, secret) = from_header.unwrap_or_else(|| {
        (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        )
    });
    if &id != client_id || &secret != client_secret {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    }
    let n = state.token_counter.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("tok-{n}-{:x}", state.config.seed.wrapping_mul(n + 7));
    state
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            token.clone(),
            // A huge `token_ttl_secs` (u64::MAX, to test clients) never expires here.
            Instant::now()
                .checked_add(Duration::from_secs(*token_ttl_secs))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)),
        );
    axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": token_ttl_secs,
    }))
    .into_response()
}

fn admin(state: &MockState, what: &str, body: &[u8]) -> Response {
    match what {
        "heal" => {
            state.healed.store(true, Ordering::SeqCst);
            axum::Json(json!({"healed": true})).into_response()
        }
        "repair" => {
            state
                .data
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .repair();
            axum::Json(json!({"repaired": true})).into_response()
        }
        "touch" => {
            let ids: Vec<u64> = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("ids").cloned())
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            state
                .data
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .touch(&ids);
            axum::Json(json!({"touched": ids.len()})).into_response()
        }
        "requests" => {
            let log = state.log.lock().unwrap_or_else(|e| e.into_inner());
            let entries: Vec<Value> = log.iter().map(LoggedRequest::to_json).collect();
            axum::Json(Value::Array(entries)).into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "admin endpoints: heal, repair, touch, requests",
        ),
    }
}

/// Query parameters that ask for a page size, per route.
fn size_param(q: &HashMap<String, String>, names: &[&str], default: u32) -> Result<u64, Response> {
    for name in names {
        if let Some(v) = q.get(*name) {
            return v.parse::<u64>().map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_parameter",
                    &format!("`{name}` must be a whole number"),
                )
            });
        }
    }
    Ok(u64::from(default))
}

fn num_param(q: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, Response> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_parameter",
                &format!("`{name}` must be a whole number"),
            )
        }),
    }
}

fn since_param(value: Option<&str>) -> Result<Option<i64>, Response> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => chrono::DateTime::parse_from_rfc3339(v)
            .map(|d| Some(d.timestamp()))
            .map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_parameter",
                    "`updated_since` must be an RFC 3339 timestamp",
                )
            }),
    }
}

struct PageOf {
    items: String,
    count: usize,
    total: usize,
    offset: usize,
}

fn page_of(state: &MockState, since: Option<i64>, offset: u64, size: u64) -> PageOf {
    let data = state.data();
    let selected = data.select(since);
    let total = selected.len();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
    let end = start
        .saturating_add(usize::try_from(size).unwrap_or(usize::MAX))
        .min(total);
    let mut items = String::with_capacity((end - start) * 520 + 2);
    items.push('[');
    for (k, i) in selected.range(start, end).into_iter().enumerate() {
        if k > 0 {
            items.push(',');
        }
        items.push_str(data.json(i));
    }
    items.push(']');
    PageOf {
        items,
        count: end - start,
        total,
        offset: start,
    }
}

/// A JSON envelope as the route made it, with a new `request_id` and `served_at` in front
/// when the config asks for noise.
fn enveloped(state: &MockState, text: String) -> Response {
    if !state.config.envelope_noise {
        return json_response(text);
    }
    let n = state
        .all_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let rest = text.strip_prefix('{').unwrap_or(&text);
    json_response(format!(
        r#"{{"request_id":"req-{n}-{}","served_at":"{at}",{rest}"#,
        state.started.elapsed().as_nanos()
    ))
}

fn json_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn too_large(state: &MockState, size: u64) -> Result<(), Response> {
    match state.config.max_page_size {
        Some(max) if size > u64::from(max) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            "the backend timed out building this page; ask for fewer records",
        )),
        _ => Ok(()),
    }
}

fn route(
    state: &MockState,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    body: &[u8],
    host: &str,
) -> Result<Response, Response> {
    let default_size = state.config.page_size;
    let since = since_param(q.get("updated_since").map(String::as_str))?;
    let since_qs = q
        .get("updated_since")
        .map(|s| format!("&updated_since={}", enc(s)))
        .unwrap_or_default();
    match (method.as_str(), path) {
        ("GET", "/page/items") => {
            let page = num_param(q, "page", 1)?.max(1);
            let size = size_param(q, &["per_page", "page_size"], default_size)?;
            too_large(state, size)?;
            let p = page_of(state, since, (page - 1).saturating_mul(size), size);
            let has_more = p.offset + p.count < p.total;
            Ok(enveloped(
                state,
                format!(
                    r#"{{"data":{{"items":{}}},"meta":{{"page":{page},"per_page":{size},"total":{},"has_more":{has_more}}}}}"#,
                    p.items, p.total
                ),
            ))
        }
        ("GET", "/offset/items") => {
            let offset = num_param(q, "offset", 0)?;
            let size = size_param(q, &["limit"], default_size)?;
            too_large(state, size)?;
            let p = page_of(state, since, offset, size);
            Ok(enveloped(
                state,
                format!(
                    r#"{{"data":{{"items":{}}},"meta":{{"offset":{offset},"limit":{size},"total":{}}}}}"#,
                    p.items, p.total
                ),
            ))
        }
        ("GET", "/cursor/items") => {
            let offset = match q.get("cursor").map(String::as_str) {
                None | Some("") => 0,
                Some(c) => decode_cursor(c).ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "bad_cursor",
                        "the cursor is not one this API issued",
                    )
                })?,
            };
            let size = size_param(q, &["limit"], default_size)?;
            too_large(state, size)?;
            let p = page_of(state, since, offset, size);
            let next = if p.offset + p.count < p.total {
                format!("\"{}\"", encode_cursor((p.offset + p.count) as u64))
            } else {
                "null".to_owned()
            };
            Ok(enveloped(
                state,
                format!(
                    r#"{{"data":{{"items":{}}},"meta":{{"next_cursor":{next}}}}}"#,
                    p.items
                ),
            ))
        }
        ("GET", "/next/items") => {
            let offset = num_param(q, "after", 0)?;
            let size = size_param(q, &["limit"], default_size)?;
            too_large(state, size)?;
            let p = page_of(state, since, offset, size);
            let next = if p.offset + p.count < p.total {
                format!(
                    "\"http://{host}/next/items?after={}&limit={size}{since_qs}\"",
                    p.offset + p.count
                )
            } else {
                "null".to_owned()
            };
            Ok(enveloped(
                state,
                format!(
                    r#"{{"data":{{"items":{}}},"links":{{"next":{next}}}}}"#,
                    p.items
                ),
            ))
        }
        ("GET", "/link/items") => {
            let page = num_param(q, "page", 1)?.max(1);
            let size = size_param(q, &["per_page"], default_size)?;
            too_large(state, size)?;
            let p = page_of(state, since, (page - 1).saturating_mul(size), size);
            let mut resp = json_response(p.items);
            let mut link = format!(
                "<http://{host}/link/items?page=1&per_page={size}{since_qs}>; rel=\"first\""
            );
            if p.offset + p.count < p.total {
                link = format!(
                    "<http://{host}/link/items?page={}&per_page={size}{since_qs}>; rel=\"next\", {link}",
                    page + 1
                );
            }
            insert(resp.headers_mut(), "link", &link);
            Ok(resp)
        }
        ("GET", "/ndjson/items") => {
            let offset = num_param(q, "offset", 0)?;
            let size = size_param(q, &["limit"], default_size)?;
            too_large(state, size)?;
            let data = state.data();
            let selected = data.select(since);
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(selected.len());
            let end = start
                .saturating_add(usize::try_from(size).unwrap_or(usize::MAX))
                .min(selected.len());
            let mut text = String::new();
            for i in selected.range(start, end) {
                text.push_str(data.json(i));
                text.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
        }
        ("GET", "/fixed/items") => {
            let page = num_param(q, "page", 1)?.max(1);
            let body = usize::try_from(page - 1)
                .ok()
                .and_then(|i| state.config.pages.get(i))
                .cloned()
                .unwrap_or_else(|| "[]".to_owned());
            Ok(json_response(body))
        }
        ("POST", "/search") => {
            let req: Value = serde_json::from_slice(body).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    &format!("the body is not JSON: {e}"),
                )
            })?;
            let page = req.get("page").and_then(Value::as_u64).unwrap_or(1).max(1);
            let size = req
                .get("page_size")
                .and_then(Value::as_u64)
                .unwrap_or(u64::from(default_size));
            too_large(state, size)?;
            let since = since_param(req.get("updated_since").and_then(Value::as_str))?;
            let p = page_of(state, since, (page - 1).saturating_mul(size), size);
            let has_more = p.offset + p.count < p.total;
            Ok(enveloped(
                state,
                format!(
                    r#"{{"data":{{"items":{}}},"meta":{{"page":{page},"page_size":{size},"total":{},"has_more":{has_more}}}}}"#,
                    p.items, p.total
                ),
            ))
        }
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "routes: GET /page/items, /offset/items, /cursor/items, /next/items, /link/items, /ndjson/items, /fixed/items; POST /search",
        )),
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn encode_cursor(offset: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

fn decode_cursor(c: &str) -> Option<u64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}
