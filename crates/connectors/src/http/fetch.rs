//! One page request, retried by error class: the rate-limit gate, the host's circuit
//! breaker, auth (with one token refresh on a 401), `Retry-After` over our own backoff.

use super::auth::Auth;
use super::breaker::CircuitBreaker;
use super::classify::{
    ERROR_BODY_CAP, MAX_API_WAIT, Redactor, body_signal_error, bounded_wait, capped_note, host_of,
    humanize, humanize_long, quota_exhausted, ratelimit_reset_asked, read_capped, status_error,
    too_large_error, transport_error,
};
use super::config::RateLimitSignalConfig;
use super::ratelimit::{Gate, Limiter};
use reqwest::header::HeaderMap;
use sluice_core::{BreakerNote, ConnectorError, ConnectorEvent, ErrorClass, RetryPolicy};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// What the source shares with its in-flight requests.
pub(crate) struct Fetcher {
    pub(crate) client: reqwest::Client,
    pub(crate) method: reqwest::Method,
    pub(crate) auth: Auth,
    pub(crate) limiter: Limiter,
    pub(crate) breaker: Option<Arc<CircuitBreaker>>,
    pub(crate) redactor: Mutex<Redactor>,
    pub(crate) events: Mutex<Vec<ConnectorEvent>>,
    /// Told of each event as it happens (the engine's live display).
    pub(crate) listener: Mutex<Option<sluice_core::EventListener>>,
    pub(crate) retry: RetryPolicy,
    /// The classes retried with backoff (never `auth`: see the refresh above).
    pub(crate) retry_on: Vec<ErrorClass>,
    pub(crate) max_retry_after: Duration,
    pub(crate) request_timeout: Duration,
    /// The largest answer body read, counted decoded (`max_response_bytes`).
    pub(crate) max_response_bytes: usize,
    /// A `200` whose body says the quota is used up.
    pub(crate) rate_limit_signal: Option<RateLimitSignalConfig>,
    /// The quota is used up until then, later than `max_retry_after`: no request is
    /// sent before it, the source parks.
    pub(crate) parked: Mutex<Option<SystemTime>>,
    /// The process's HTTP metrics (`None`: not kept).
    pub(crate) metrics: Option<Arc<super::metrics::HttpMetrics>>,
}

/// A request to send.
#[derive(Debug, Clone)]
pub(crate) struct RequestSpec {
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Vec<u8>>,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) url: Url,
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// A failed attempt: the error, and the status when there was an answer.
struct Failure {
    error: ConnectorError,
    status: Option<u16>,
}

impl Fetcher {
    pub(crate) fn event(&self, class: Option<ErrorClass>, message: impl Into<String>) {
        self.push(ConnectorEvent::new(class, message));
    }

    /// Tells of a failed request sent again (counted as one of the node's retries).
    fn retried(&self, class: ErrorClass, message: String) {
        self.push(ConnectorEvent::retried(class, message));
    }

    pub(crate) fn push(&self, event: ConnectorEvent) {
        tracing::info!(class = event.class.map(|c| c.as_str()), "{}", event.message);
        if let Some(listener) = &*self.listener.lock().unwrap_or_else(|e| e.into_inner()) {
            listener(&event);
        }
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    pub(crate) fn drain_events(&self) -> Vec<ConnectorEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn redactor(&self) -> Redactor {
        self.redactor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends the request until it succeeds, fails for good, or the retry policy gives
    /// up. With `shrinkable`, a 413 or 504 comes back at once as `payload_too_large` so
    /// that the caller can ask for a smaller page.
    pub(crate) async fn fetch(
        &self,
        spec: &RequestSpec,
        shrinkable: bool,
    ) -> Result<Fetched, ConnectorError> {
        let started = Instant::now();
        let host = host_of(&spec.url);
        let mut failed_attempts = 0u32;
        let mut refreshed = false;
        let parked = *self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = parked
            && until > SystemTime::now()
        {
            return Err(self.park(&host, until, None));
        }
        loop {
            if let Some(b) = &self.breaker {
                let admitted = b.admit(Instant::now());
                if let Some(m) = &self.metrics {
                    m.breaker(&host, b.state_value(Instant::now()));
                }
                match admitted {
                    Ok(Some(msg)) => self.breaker_event(b, &host, msg),
                    Ok(None) => {}
                    Err(wait) => {
                        let err = ConnectorError::new(
                            ErrorClass::Dependency,
                            format!("the circuit breaker for {host} is open after repeated failures; requests resume in {}: check the API's health", humanize(wait)),
                        )
                        .with_retry_after(wait);
                        if self.budget_left(started).is_some_and(|left| wait < left) {
                            if wait >= Duration::from_millis(100) {
                                self.breaker_event(
                                    b,
                                    &host,
                                    format!(
                                        "waited {} for the circuit breaker of {host}",
                                        humanize(wait)
                                    ),
                                );
                            }
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        return Err(err);
                    }
                }
            }

            let permit = match self.limiter.acquire(self.max_retry_after).await {
                Gate::Go(permit, waited) => {
                    if let Some(m) = &self.metrics {
                        m.waited(&host, waited);
                    }
                    permit
                }
                // Another worker (or run) reading this API was told to wait that long.
                Gate::Parked(wait) => {
                    let until = system_time_after(wait);
                    *self.parked.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
                    return Err(self.park(
                        &host,
                        until,
                        Some(format!(
                            "the pause was learned by another worker or run reading {host} with the same credentials (the rate-limit budget shared through the state store)"
                        )),
                    ));
                }
            };
            let sent = Instant::now();
            let mut attempt = self.send_once(spec).await;
            drop(permit);
            if let Some(m) = &self.metrics {
                let status = match &attempt {
                    Ok(f) => Some(f.status),
                    Err(f) => f.status,
                };
                m.request(&host, status, sent.elapsed());
            }
            if let (Ok(f), Some(signal)) = (&attempt, &self.rate_limit_signal) {
                let redactor = self.redactor();
                let method = self.method.as_str();
                if let Some(error) =
                    body_signal_error(&redactor, method, &f.url, &f.headers, &f.body, signal)
                {
                    attempt = Err(Failure {
                        error,
                        status: Some(200),
                    });
                }
            }

            let failure = match attempt {
                Ok(f) => {
                    self.record(false, &host);
                    self.limiter.on_success();
                    if quota_exhausted(&f.headers) {
                        let asked = ratelimit_reset_asked(&f.headers, SystemTime::now());
                        if let Some(note) = asked.and_then(|a| capped_note(&host, a)) {
                            self.event(Some(ErrorClass::RateLimited), note);
                        }
                        match asked.map(bounded_wait) {
                            // Too far to wait: the next request parks the source.
                            Some(reset) if reset > self.max_retry_after => {
                                *self.parked.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(system_time_after(reset));
                                self.limiter.share_pause(reset).await;
                            }
                            Some(wait) => {
                                self.limiter
                                    .pause_until(super::instant_after(Instant::now(), wait));
                                self.limiter.share_pause(wait).await;
                                self.event(
                                    Some(ErrorClass::RateLimited),
                                    format!(
                                        "{host} says the quota is used up; pausing {} until it resets",
                                        humanize(wait)
                                    ),
                                );
                            }
                            // A `used/limit` header at its limit tells no reset: go slower.
                            None => {
                                let rate = self.limiter.slow_down();
                                self.event(
                                    Some(ErrorClass::RateLimited),
                                    format!(
                                        "{host} says the quota is used up; slowed to {rate:.2} requests/s"
                                    ),
                                );
                            }
                        }
                    }
                    return Ok(f);
                }
                Err(f) => f,
            };
            let Failure { error, status } = failure;
            let class = error.class;
            self.record(
                matches!(class, ErrorClass::Network | ErrorClass::Dependency),
                &host,
            );

            if class == ErrorClass::Auth && self.auth.refreshable() && !refreshed {
                refreshed = true;
                self.auth.invalidate().await;
                self.event(
                    Some(ErrorClass::Auth),
                    format!(
                        "{host} refused the access token (401); fetching a new one and retrying"
                    ),
                );
                continue;
            }
            if shrinkable && matches!(status, Some(413) | Some(504)) {
                let mut e = error;
                e.class = ErrorClass::PayloadTooLarge;
                return Err(e);
            }
            if class == ErrorClass::Auth || !self.retry_on.contains(&class) {
                return Err(error);
            }
            if class == ErrorClass::RateLimited
                && let Some(wait) = error.retry_after
                && wait > self.max_retry_after
            {
                let until = system_time_after(wait);
                *self.parked.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
                self.limiter.share_pause(wait).await;
                let mut parked = self.park(&host, until, error.evidence);
                // `wait` is bounded: at the bound, the API asked for that long or longer.
                if wait >= MAX_API_WAIT {
                    parked.message = format!(
                        "{}; {host} asked to wait {} or longer, and no wait an API asks for is longer than that (see the evidence for what it asked)",
                        parked.message,
                        humanize_long(MAX_API_WAIT)
                    );
                }
                return Err(parked);
            }
            failed_attempts += 1;
            let elapsed = started.elapsed();
            if !self.retry.allows(failed_attempts, elapsed) {
                return Err(gave_up(error, failed_attempts, elapsed));
            }
            let asked = error.retry_after.map(|w| w.min(self.max_retry_after));
            let wait = match asked {
                Some(w) => w,
                None => self.retry.backoff(failed_attempts, &mut rand::rng()),
            };
            if self.budget_left(started).is_some_and(|left| wait >= left) {
                return Err(gave_up(error, failed_attempts, elapsed));
            }
            let what = match status {
                Some(s) => format!("{s}"),
                None => "a network error".to_owned(),
            };
            let source = if asked.is_some() {
                "as Retry-After asked"
            } else {
                "backoff"
            };
            if class == ErrorClass::RateLimited {
                self.limiter
                    .pause_until(super::instant_after(Instant::now(), wait));
                if asked.is_some() {
                    self.limiter.share_pause(wait).await;
                }
                let rate = self.limiter.slow_down();
                self.retried(
                    class,
                    format!(
                        "retried after {what} from {host} (attempt {} of {}): waited {} {source}; slowed to {rate:.2} requests/s",
                        failed_attempts + 1,
                        self.retry.max_attempts,
                        humanize(wait)
                    ),
                );
                // The pause holds this request and every other one until `wait` passed.
            } else {
                self.retried(
                    class,
                    format!(
                        "retried after {what} from {host} (attempt {} of {}): waited {} {source}",
                        failed_attempts + 1,
                        self.retry.max_attempts,
                        humanize(wait)
                    ),
                );
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// The error that parks the source until `until`.
    fn park(&self, host: &str, until: SystemTime, evidence: Option<String>) -> ConnectorError {
        let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
        let at = chrono::DateTime::<chrono::Utc>::from(until)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut e = ConnectorError::new(
            ErrorClass::RateLimited,
            format!(
                "{host}'s quota is used up until {at} (in {}), later than rate_limit.max_retry_after ({}): the node is parked with its checkpoint; the next run after {at} resumes where it stopped (raise max_retry_after to wait within the run instead)",
                humanize(Duration::from_secs(wait.as_secs().max(1))),
                humanize(self.max_retry_after)
            ),
        )
        .with_retry_after(wait)
        .with_resume_at(until);
        e.evidence = evidence;
        e
    }

    /// Tells of the breaker's state with `message`: open since when, or closed.
    fn breaker_event(&self, breaker: &CircuitBreaker, host: &str, message: String) {
        let host = host.to_owned();
        let note = match breaker.open_since() {
            Some(since) => BreakerNote::Open { host, since },
            None => BreakerNote::Closed { host },
        };
        self.push(ConnectorEvent::breaker(note, message));
    }

    fn budget_left(&self, started: Instant) -> Option<Duration> {
        match self.retry.max_elapsed {
            Some(max) => Some(max.saturating_sub(started.elapsed())),
            None => Some(Duration::MAX),
        }
    }

    fn record(&self, failed: bool, host: &str) {
        if let Some(b) = &self.breaker {
            let now = Instant::now();
            if let Some(msg) = b.record(failed, now) {
                self.breaker_event(b, host, msg);
            }
            if let Some(m) = &self.metrics {
                m.breaker(host, b.state_value(now));
            }
        }
    }

    async fn send_once(&self, spec: &RequestSpec) -> Result<Fetched, Failure> {
        let mut url = spec.url.clone();
        let mut headers = spec.headers.clone();
        let body = spec.body.clone().unwrap_or_default();
        let method = self.method.as_str();
        let redactor = self.redactor();
        let applied = self
            .auth
            .apply(
                &self.client,
                &redactor,
                method,
                &mut url,
                &mut headers,
                &body,
            )
            .await
            .map_err(|error| Failure {
                error,
                status: None,
            })?;
        if let Some(secret) = applied.new_secret {
            self.redactor
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add_secret(secret);
        }
        if let Some(msg) = applied.fetched_token {
            self.event(None, msg);
        }
        let redactor = self.redactor();
        let mut req = self
            .client
            .request(self.method.clone(), url.clone())
            .headers(headers);
        if spec.body.is_some() {
            req = req.body(body);
        }
        let net = |e: reqwest::Error| Failure {
            error: transport_error(&redactor, method, &url, &e, self.request_timeout),
            status: None,
        };
        let resp = req.send().await.map_err(net)?;
        let status = resp.status().as_u16();
        let final_url = resp.url().clone();
        let headers = resp.headers().clone();
        let success = (200..300).contains(&status);
        let limit = if success {
            self.max_response_bytes
        } else {
            ERROR_BODY_CAP
        };
        let body = read_capped(resp, limit).await.map_err(net)?;
        if !success {
            return Err(Failure {
                error: status_error(&redactor, method, &final_url, status, &headers, &body.bytes),
                status: Some(status),
            });
        }
        if body.over_limit {
            return Err(Failure {
                error: too_large_error(
                    &redactor,
                    method,
                    &final_url,
                    status,
                    &headers,
                    &body.bytes,
                    (self.max_response_bytes, "`max_response_bytes`"),
                ),
                status: Some(status),
            });
        }
        Ok(Fetched {
            url: final_url,
            status,
            headers,
            body: body.bytes,
        })
    }
}

fn gave_up(mut e: ConnectorError, attempts: u32, elapsed: Duration) -> ConnectorError {
    e.message = format!(
        "{} (gave up after {attempts} attempt(s) over {})",
        e.message,
        humanize(elapsed)
    );
    e
}

/// Now plus a wait the server gave (or another worker shared), which may be absurd:
/// capped at [`MAX_API_WAIT`], never an overflow.
fn system_time_after(wait: Duration) -> SystemTime {
    let now = SystemTime::now();
    now.checked_add(wait.min(MAX_API_WAIT)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_testkit::receiver::{Answer, receive};

    /// A century in seconds: what a broken API (or a misread reset) asks for.
    const CENTURY: u64 = 100 * 365 * 24 * 3600;

    /// A receiver on 127.0.0.1 that gives `answer` to every request.
    async fn serve(answer: Answer) -> Url {
        let addr = receive(move |_| answer.clone()).await;
        Url::parse(&format!("http://{addr}/items")).unwrap()
    }

    fn fetcher() -> Fetcher {
        Fetcher {
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            method: reqwest::Method::GET,
            auth: Auth::new(None).unwrap(),
            limiter: Limiter::new(None, 1, 1),
            breaker: None,
            redactor: Mutex::new(Redactor::default()),
            events: Mutex::new(Vec::new()),
            listener: Mutex::new(None),
            retry: RetryPolicy::default(),
            retry_on: vec![ErrorClass::RateLimited],
            max_retry_after: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_response_bytes: 1 << 20,
            rate_limit_signal: None,
            parked: Mutex::new(None),
            metrics: None,
        }
    }

    fn spec(url: Url) -> RequestSpec {
        RequestSpec {
            url,
            headers: HeaderMap::new(),
            body: None,
        }
    }

    /// Parked until no later than [`MAX_API_WAIT`] from now, and no earlier than a day
    /// before that.
    fn assert_parked_at_the_cap(e: &ConnectorError) {
        assert_eq!(e.class, ErrorClass::RateLimited, "{e}");
        let resume_at = e.resume_at.expect("a parked error says when to resume");
        let now = SystemTime::now();
        assert!(resume_at <= now + MAX_API_WAIT, "{e}");
        assert!(
            resume_at > now + MAX_API_WAIT - Duration::from_secs(24 * 3600),
            "{e}"
        );
    }

    #[test]
    fn a_wait_is_bounded_at_the_cap_and_never_overflows() {
        let now = SystemTime::now();
        let at = system_time_after(Duration::MAX);
        assert!(at > now && at <= SystemTime::now() + MAX_API_WAIT);
        let short = system_time_after(Duration::from_secs(60));
        assert!(short <= SystemTime::now() + Duration::from_secs(60));
    }

    /// A `Retry-After` of a century parks the source for the cap, not a century; the
    /// message says the wait was capped, the evidence what the API asked for.
    #[tokio::test]
    async fn a_century_of_retry_after_parks_the_source_for_the_cap_only() {
        let url = serve(Answer::status(429).with_header("retry-after", &CENTURY.to_string())).await;
        let f = fetcher();
        let e = f.fetch(&spec(url), false).await.unwrap_err();
        assert_parked_at_the_cap(&e);
        assert!(
            e.message.contains("parked") && e.message.contains("31.0 days or longer"),
            "{e}"
        );
        assert!(
            e.evidence
                .as_deref()
                .is_some_and(|ev| ev.contains(&format!("retry-after: {CENTURY}"))),
            "{:?}",
            e.evidence
        );
    }

    /// A used-up quota whose reset is a century ahead parks the next request for the
    /// cap, with an event saying what the API asked for.
    #[tokio::test]
    async fn a_used_up_quota_resetting_far_ahead_parks_for_the_cap_only() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let url = serve(
            Answer::status(200)
                .with_header("x-ratelimit-remaining", "0")
                .with_header("x-ratelimit-reset", &(now + CENTURY).to_string()),
        )
        .await;
        let f = fetcher();
        let first = f.fetch(&spec(url.clone()), false).await.unwrap();
        assert_eq!(first.status, 200);
        let events = f.drain_events();
        assert!(
            events
                .iter()
                .any(|e| e.message.contains("asked to wait 36500.0 days")
                    && e.message.contains("capped at 31.0 days")),
            "{events:?}"
        );
        let e = f.fetch(&spec(url), false).await.unwrap_err();
        assert_parked_at_the_cap(&e);
    }

    /// A reset in milliseconds since the epoch, a second ahead, is a pause of a second
    /// (within `max_retry_after`), not a park.
    #[tokio::test]
    async fn a_reset_in_milliseconds_is_a_short_pause_not_a_park() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let url = serve(
            Answer::status(200)
                .with_header("x-ratelimit-remaining", "0")
                .with_header("x-ratelimit-reset", &(now + 500).to_string()),
        )
        .await;
        let f = fetcher();
        f.fetch(&spec(url.clone()), false).await.unwrap();
        assert!(f.parked.lock().unwrap().is_none(), "not parked");
        assert!(
            f.drain_events()
                .iter()
                .any(|e| e.message.contains("pausing")),
            "a pause until the reset"
        );
    }
}
