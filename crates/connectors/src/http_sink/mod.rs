//! The HTTP sink (`type: http_sink`): one request per batch, its records as a JSON array
//! (optionally wrapped in an object) or NDJSON, with the batch's ledger key in an
//! `Idempotency-Key` header so that the receiver can drop a batch sent twice.
//!
//! It shares the HTTP source's auth (basic, bearer, API key, OAuth2 client credentials
//! with one refresh after a 401, HMAC), its rate limiter and its error classification:
//! 429 is `rate_limited` with the server's `Retry-After`, 413 `payload_too_large` (the
//! engine splits the batch and sends the halves), 5xx `dependency`, 401 `auth`, 403
//! `permission`, other 4xx `invalid_request`, each with redacted evidence (method, URL
//! without secrets, status, headers of interest, the first bytes of the answer).
//! Retries are the engine's: a failed request is returned at once, classified.
//!
//! ```no_run
//! # async fn demo(batch: sluice_core::Batch) -> Result<(), sluice_core::ConnectorError> {
//! use sluice_connectors::http_sink::{HttpSink, HttpSinkConfig};
//! use sluice_core::Sink;
//! let mut sink = HttpSink::new(HttpSinkConfig::new("https://ingest.example.com/v1/events"))?;
//! let report = sink.write(&batch).await?;
//! # Ok(()) }
//! ```

pub use spec::{SinkFormat, SinkMethod};
mod kind;
pub mod spec;

use crate::http::auth::Auth;
use crate::http::classify::{
    ERROR_BODY_CAP, Redactor, host_of, humanize, read_capped, status_error, transport_error,
};
use crate::http::origin::Origins;
use crate::http::ratelimit::{Gate, Limiter};
use crate::http::{AuthConfig, RateLimitConfig, TimeoutsConfig};
use arrow::array::RecordBatch;
use async_trait::async_trait;
pub use kind::HTTP_SINK;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use sluice_core::{Batch, ConnectorError, ConnectorEvent, ErrorClass, Secret, Sink, WriteReport};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use url::Url;

/// A `type: http_sink`.
#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    /// Where batches are sent (`http` or `https`).
    pub url: String,
    /// The request method.
    pub method: SinkMethod,
    /// Request headers. Values never print (unless named in `public`).
    pub headers: BTreeMap<String, Secret>,
    /// Names of headers and of `url`'s query parameters whose values may print in errors
    /// and evidence (case does not matter); every other value is a secret.
    pub public: Vec<String>,
    /// How requests authenticate.
    pub auth: Option<AuthConfig>,
    /// The body's format.
    pub format: SinkFormat,
    /// With `json_array`: the array goes in an object under this key.
    pub wrap_key: Option<String>,
    /// The header carrying the batch's ledger key (`Idempotency-Key` when unset).
    pub idempotency_header: Option<String>,
    /// Request rate limits.
    pub rate_limit: RateLimitConfig,
    /// Connect and request timeouts.
    pub timeouts: TimeoutsConfig,
}

impl HttpSinkConfig {
    /// A sink POSTing JSON arrays to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        HttpSinkConfig {
            url: url.into(),
            method: SinkMethod::POST,
            headers: BTreeMap::new(),
            public: Vec::new(),
            auth: None,
            format: SinkFormat::JsonArray,
            wrap_key: None,
            idempotency_header: None,
            rate_limit: RateLimitConfig::default(),
            timeouts: TimeoutsConfig::default(),
        }
    }
}

/// A `type: http_sink`: see the module's documentation.
pub struct HttpSink {
    config: HttpSinkConfig,
    url: Url,
    method: reqwest::Method,
    client: reqwest::Client,
    auth: Auth,
    redactor: Redactor,
    limiter: Limiter,
    headers: HeaderMap,
    idempotency: HeaderName,
    /// Ledger keys accepted by the receiver in this run: a redelivery is not sent again.
    sent: HashSet<String>,
    events: Vec<ConnectorEvent>,
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorClass::InvalidRequest, message)
}

impl HttpSink {
    /// A sink for `config`. Opens no connection until the first write or health check.
    pub fn new(config: HttpSinkConfig) -> Result<Self, ConnectorError> {
        let url =
            Url::parse(&config.url).map_err(|e| invalid(format!("`url` is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "`url` must be http or https, not `{}`",
                url.scheme()
            )));
        }
        let auth = Auth::new(config.auth.as_ref())?;
        let public = |n: &str| config.public.iter().any(|p| p.eq_ignore_ascii_case(n));
        let mut secrets = auth.secrets();
        secrets.extend(
            config
                .headers
                .iter()
                .filter(|(k, _)| !public(k))
                .map(|(_, v)| v.clone()),
        );
        secrets.extend(
            sluice_core::redact::url_secrets(&config.url, public)
                .into_iter()
                .filter(|s| s.expose().chars().count() >= 4),
        );
        let redactor =
            Redactor::new(secrets, auth.secret_params()).with_public(config.public.iter().cloned());
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("header `{name}` is not a valid header name")))?;
            let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
                invalid(format!(
                    "the value of header `{name}` holds characters not allowed in a header"
                ))
            })?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        let content_type = match config.format {
            SinkFormat::JsonArray => "application/json",
            SinkFormat::Ndjson => "application/x-ndjson",
        };
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static(content_type));
        let idem_name = config
            .idempotency_header
            .clone()
            .unwrap_or_else(|| "Idempotency-Key".to_owned());
        let idempotency = HeaderName::from_bytes(idem_name.as_bytes()).map_err(|_| {
            invalid(format!(
                "`idempotency_header`: `{idem_name}` is not a valid header name"
            ))
        })?;
        // Redirects stay within `url`'s origin: the credentials go nowhere else.
        let client = crate::http::origin::client(
            &Origins::new(Some(&url), &[]),
            &config.timeouts,
            config.rate_limit.concurrency as usize,
        )?;
        let limiter = Limiter::new(
            config.rate_limit.requests_per_second,
            config.rate_limit.burst,
            config.rate_limit.concurrency,
        );
        let method = match config.method {
            SinkMethod::POST => reqwest::Method::POST,
            SinkMethod::PUT => reqwest::Method::PUT,
            SinkMethod::PATCH => reqwest::Method::PATCH,
        };
        Ok(HttpSink {
            config,
            url,
            method,
            client,
            auth,
            redactor,
            limiter,
            headers,
            idempotency,
            sent: HashSet::new(),
            events: Vec::new(),
        })
    }

    fn event(&mut self, class: Option<ErrorClass>, message: String) {
        tracing::info!(class = class.map(|c| c.as_str()), "{message}");
        self.events.push(ConnectorEvent::new(class, message));
    }

    /// The request body of a batch.
    fn body(&self, records: &RecordBatch) -> Result<Vec<u8>, ConnectorError> {
        let bad = |e: arrow::error::ArrowError| {
            ConnectorError::new(
                ErrorClass::ContractChanged,
                format!("the batch cannot be written as JSON: {e}"),
            )
        };
        let mut lines = Vec::new();
        {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut lines);
            w.write(records).map_err(bad)?;
            w.finish().map_err(bad)?;
        }
        if self.config.format == SinkFormat::Ndjson {
            return Ok(lines);
        }
        let mut out = Vec::with_capacity(lines.len() + 32);
        if let Some(key) = &self.config.wrap_key {
            out.push(b'{');
            out.extend_from_slice(serde_json::Value::from(key.as_str()).to_string().as_bytes());
            out.push(b':');
        }
        out.push(b'[');
        let mut first = true;
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(line);
        }
        out.push(b']');
        if self.config.wrap_key.is_some() {
            out.push(b'}');
        }
        Ok(out)
    }

    /// The error of a failed answer, with messages that speak of batches.
    fn answer_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ConnectorError {
        let method = self.method.as_str();
        let mut e = status_error(&self.redactor, method, &self.url, status, headers, body);
        let host = host_of(&self.url);
        match status {
            413 => {
                e.message = format!(
                    "{host} found the batch too large (413): it is split in halves and each sent again; lower `batching.max_rows` of the source that feeds this sink to send smaller batches"
                );
            }
            400 | 404 | 405 | 409 | 415 | 422 => {
                e.message = format!(
                    "{host} refused the batch ({status}): check the URL, the method and the records against what the endpoint expects (see the answer below)"
                );
            }
            _ => {}
        }
        e
    }
}

#[async_trait]
impl Sink for HttpSink {
    async fn write(&mut self, batch: &Batch) -> Result<WriteReport, ConnectorError> {
        // A batch without records (a transform that filtered out every record makes
        // them) sends no request: there is nothing to deliver, and many endpoints refuse
        // an empty array, which would fail the batch for nothing.
        if batch.num_rows() == 0 {
            return Ok(WriteReport::default());
        }
        let key = batch.ledger_key().to_string();
        if self.sent.contains(&key) {
            return Ok(WriteReport {
                duplicate: true,
                ..WriteReport::default()
            });
        }
        let body = self.body(&batch.records)?;
        let mut refreshed = false;
        loop {
            let mut url = self.url.clone();
            let mut headers = self.headers.clone();
            let idem = HeaderValue::from_str(&key).map_err(|_| {
                ConnectorError::new(ErrorClass::Internal, "a ledger key is not a header value")
            })?;
            headers.insert(self.idempotency.clone(), idem);
            let method = self.method.as_str().to_owned();
            let applied = self
                .auth
                .apply(
                    &self.client,
                    &self.redactor,
                    &method,
                    &mut url,
                    &mut headers,
                    &body,
                )
                .await?;
            if let Some(secret) = applied.new_secret {
                self.redactor.add_secret(secret);
            }
            if let Some(msg) = applied.fetched_token {
                self.event(None, msg);
            }
            // A sink's gate has no shared budget: it never parks.
            let permit = match self.limiter.acquire(std::time::Duration::MAX).await {
                Gate::Go(permit, _waited) => permit,
                Gate::Parked(_) => unreachable!("only a shared budget parks"),
            };
            let sent = self
                .client
                .request(self.method.clone(), url.clone())
                .headers(headers)
                .body(body.clone())
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    return Err(transport_error(
                        &self.redactor,
                        &method,
                        &url,
                        &e,
                        self.config.timeouts.request,
                    ));
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            // Only the status and the evidence's first bytes matter: the answer is read
            // up to a cap, however large (or however well gzipped) it is.
            let answer = read_capped(resp, ERROR_BODY_CAP)
                .await
                .map_err(|e| {
                    transport_error(
                        &self.redactor,
                        &method,
                        &url,
                        &e,
                        self.config.timeouts.request,
                    )
                })?
                .bytes;
            drop(permit);
            if (200..300).contains(&status) {
                self.limiter.on_success();
                self.sent.insert(key);
                return Ok(WriteReport {
                    written: batch.num_rows(),
                    ..WriteReport::default()
                });
            }
            let mut error = self.answer_error(status, &headers, &answer);
            // The receiver's wait, bounded as the pipeline says (`rate_limit.max_retry_after`).
            error.retry_after = error
                .retry_after
                .map(|w| w.min(self.config.rate_limit.max_retry_after));
            if status == 401 && self.auth.refreshable() && !refreshed {
                refreshed = true;
                self.auth.invalidate().await;
                let host = host_of(&self.url);
                self.event(
                    Some(ErrorClass::Auth),
                    format!("{host} refused the access token (401); fetching a new one and sending again"),
                );
                continue;
            }
            if status == 429 {
                let rate = self.limiter.slow_down();
                let wait = error
                    .retry_after
                    .map(humanize)
                    .unwrap_or_else(|| "backoff".into());
                tracing::info!(rate, wait, "rate limited by the receiver");
            }
            return Err(error);
        }
    }

    async fn health(&self) -> Result<Duration, ConnectorError> {
        // A TCP connection to the endpoint's host: a request would have to send a batch.
        let started = Instant::now();
        let host = self.url.host_str().unwrap_or_default().to_owned();
        let port = self.url.port_or_known_default().unwrap_or(80);
        let shown = host_of(&self.url);
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        match tokio::time::timeout(self.config.timeouts.connect, connect).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(ConnectorError::new(
                ErrorClass::Network,
                format!(
                    "could not connect to {shown} ({e}): check the host name, the port, DNS and the network path"
                ),
            )),
            Err(_) => Err(ConnectorError::new(
                ErrorClass::Network,
                format!(
                    "{shown} did not accept a connection within {}",
                    humanize(self.config.timeouts.connect)
                ),
            )),
        }
    }

    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use sluice_core::SourcePosition;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A receiver asking for an hour's pause: the sink passes on at most the pipeline's
    /// `rate_limit.max_retry_after`.
    #[tokio::test]
    async fn a_receivers_retry_after_is_bounded_by_max_retry_after() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        });
        let mut config = HttpSinkConfig::new(format!("http://127.0.0.1:{port}/in"));
        config.rate_limit.max_retry_after = Duration::from_secs(2);
        let mut sink = HttpSink::new(config).unwrap();
        let records =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1i64])) as _)])
                .unwrap();
        let batch = Batch::new("p", "out", SourcePosition::page(0), records);
        let err = sink.write(&batch).await.unwrap_err();
        assert_eq!(err.class, ErrorClass::RateLimited, "{err}");
        assert_eq!(err.retry_after, Some(Duration::from_secs(2)), "{err}");
    }
}
