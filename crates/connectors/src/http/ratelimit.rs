//! The per-source request gate: a token bucket (requests per second, burst) whose rate
//! halves after a 429 and creeps back with successes, a pause that no request passes
//! (`Retry-After`, an exhausted quota), and a cap on requests in flight.
//!
//! With a shared budget (the state store on PostgreSQL, through
//! [`sluice_config::BuildContext::rate_budgets`]), a request also takes a token of the
//! API's bucket there, and pauses told by the API are written there: every worker and run
//! reading the same API with the same credentials keeps within one limit together, and a
//! quota reset learned by one holds them all.

use sluice_core::RateBudgets;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The share of `requests_per_second` a shared budget fills at: the margin covers the
/// time between a worker's token and its request reaching the API (a round trip to the
/// state store, the scheduling of two processes), so that the API never counts more
/// than its limit in a second however those delays fall.
const SHARED_HEADROOM: f64 = 0.95;

/// Successes between two steps of recovery after a slow-down.
const RECOVER_EVERY: u32 = 10;
/// The slowest rate a slow-down goes to.
const MIN_RATE: f64 = 0.1;

pub(crate) struct Limiter {
    bucket: Mutex<Bucket>,
    in_flight: Arc<Semaphore>,
    shared: Option<SharedBudget>,
}

/// The API's budget shared with other processes.
struct SharedBudget {
    budgets: Arc<dyn RateBudgets>,
    /// The API's host and a hash of the credentials.
    key: String,
    /// The store failed once: said once, then this source limits itself.
    failed: AtomicBool,
}

/// What [`Limiter::acquire`] found.
pub(crate) enum Gate {
    /// Go: hold the slot until the answer is read; how long the rate limit made the
    /// request wait.
    Go(OwnedSemaphorePermit, Duration),
    /// The shared budget is paused for longer than the source may wait: no request.
    Parked(Duration),
}

struct Bucket {
    /// The configured rate (`None`: unlimited until a 429).
    configured: Option<f64>,
    /// The rate in force.
    rate: Option<f64>,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
    successes: u32,
    /// Smoothed interval between request starts, to slow down from when no rate is set.
    interval: Option<f64>,
    last_start: Option<Instant>,
}

impl Limiter {
    pub(crate) fn new(rate: Option<f64>, burst: u32, concurrency: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Limiter {
            bucket: Mutex::new(Bucket {
                configured: rate,
                rate,
                burst,
                tokens: burst,
                refilled: Instant::now(),
                paused_until: None,
                successes: 0,
                interval: None,
                last_start: None,
            }),
            in_flight: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
            shared: None,
        }
    }

    /// The same gate, also taking each request's token from `budgets` under `key` (the
    /// API's host and a hash of the credentials), where the pauses go too.
    pub(crate) fn shared(mut self, budgets: Arc<dyn RateBudgets>, key: String) -> Self {
        self.shared = Some(SharedBudget {
            budgets,
            key,
            failed: AtomicBool::new(false),
        });
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot in flight and a token (this source's, then the shared budget's):
    /// [`Gate::Go`] with the slot and how long the rate limit made the request wait, or
    /// [`Gate::Parked`] when the shared budget is paused longer than `max_wait`.
    pub(crate) async fn acquire(&self, max_wait: Duration) -> Gate {
        let started = Instant::now();
        let permit = match self.in_flight.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed; should it be, make a fresh one-slot permit.
            Err(_) => Arc::new(Semaphore::new(1))
                .acquire_owned()
                .await
                .unwrap_or_else(|_| unreachable!("a fresh semaphore is open")),
        };
        loop {
            let wait = self.lock().take(Instant::now());
            match wait {
                None => break,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
        if let Some(shared) = &self.shared
            && !shared.failed.load(Ordering::Relaxed)
        {
            let (rate, burst) = {
                let b = self.lock();
                // Without a rate, the budget only carries pauses: a bucket never empty.
                match b.rate {
                    Some(r) => (r * SHARED_HEADROOM, b.burst),
                    None => (1e9, 1e9),
                }
            };
            loop {
                match shared.budgets.take(&shared.key, rate, burst).await {
                    Ok(None) => break,
                    Ok(Some(wait)) if wait > max_wait => return Gate::Parked(wait),
                    Ok(Some(wait)) => tokio::time::sleep(wait).await,
                    Err(e) => {
                        shared.failed.store(true, Ordering::Relaxed);
                        tracing::warn!(
                            "the shared rate-limit budget is unavailable ({}): this source limits only its own requests from now on",
                            e.message
                        );
                        break;
                    }
                }
            }
        }
        Gate::Go(permit, started.elapsed())
    }

    /// Tells the other processes sharing the budget that no request starts within
    /// `wait` (a `Retry-After`, a quota reset).
    pub(crate) async fn share_pause(&self, wait: Duration) {
        let Some(shared) = &self.shared else { return };
        if shared.failed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = shared.budgets.pause(&shared.key, wait).await {
            shared.failed.store(true, Ordering::Relaxed);
            tracing::warn!(
                "the shared rate-limit budget is unavailable ({}): this source limits only its own requests from now on",
                e.message
            );
        }
    }

    /// No request starts before `until`.
    pub(crate) fn pause_until(&self, until: Instant) {
        let mut b = self.lock();
        if b.paused_until.is_none_or(|p| p < until) {
            b.paused_until = Some(until);
        }
    }

    /// Halves the rate after a 429. Returns the new rate.
    pub(crate) fn slow_down(&self) -> f64 {
        let mut b = self.lock();
        let current = b
            .rate
            .or_else(|| b.interval.map(|i| 1.0 / i.max(1e-3)))
            .unwrap_or(2.0);
        let rate = (current / 2.0).max(MIN_RATE);
        b.rate = Some(rate);
        b.tokens = b.tokens.min(1.0);
        b.successes = 0;
        rate
    }

    /// Counts a success; every few, a slowed-down rate grows back by a quarter of the
    /// configured one (or by a quarter when none is configured, until it is lifted).
    pub(crate) fn on_success(&self) {
        let mut b = self.lock();
        let Some(rate) = b.rate else { return };
        if b.configured == Some(rate) {
            return;
        }
        b.successes += 1;
        if b.successes < RECOVER_EVERY {
            return;
        }
        b.successes = 0;
        b.rate = match b.configured {
            Some(max) => Some((rate + max / 4.0).min(max)),
            None if rate * 1.25 > 1000.0 => None,
            None => Some(rate * 1.25),
        };
    }

    /// The rate in force (requests per second), if any.
    #[cfg(test)]
    pub(crate) fn rate(&self) -> Option<f64> {
        self.lock().rate
    }
}

impl Bucket {
    /// Takes a token, or says how long to wait for one.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Some(until - now);
            }
            self.paused_until = None;
        }
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(self.burst);
            self.refilled = now;
            if self.tokens < 1.0 {
                return Some(
                    Duration::try_from_secs_f64((1.0 - self.tokens) / rate)
                        .unwrap_or(Duration::from_secs(3600)),
                );
            }
            self.tokens -= 1.0;
        }
        if let Some(last) = self.last_start {
            let gap = now.saturating_duration_since(last).as_secs_f64();
            self.interval = Some(match self.interval {
                Some(i) => 0.8 * i + 0.2 * gap,
                None => gap,
            });
        }
        self.last_start = Some(now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let l = Limiter::new(Some(10.0), 3, 1);
        let mut b = l.lock();
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take(t), None);
        }
        let wait = b.take(t).unwrap();
        assert!(
            wait <= Duration::from_millis(100) && wait >= Duration::from_millis(99),
            "{wait:?}"
        );
        assert_eq!(b.take(t + Duration::from_millis(100)), None);
    }

    #[test]
    fn pause_holds_every_request_and_a_429_halves_the_rate_until_successes() {
        let l = Limiter::new(Some(8.0), 1, 1);
        let t = Instant::now();
        l.pause_until(t + Duration::from_secs(2));
        assert!(l.lock().take(t).unwrap() > Duration::from_millis(1900));
        assert_eq!(l.slow_down(), 4.0);
        assert_eq!(l.slow_down(), 2.0);
        for _ in 0..RECOVER_EVERY {
            l.on_success();
        }
        assert_eq!(l.rate(), Some(4.0));
        for _ in 0..(3 * RECOVER_EVERY) {
            l.on_success();
        }
        assert_eq!(l.rate(), Some(8.0));
    }

    /// A budget told to be paused for `pause` (0: none), counting takes.
    #[derive(Debug, Default)]
    struct FakeBudgets {
        pause: Mutex<Duration>,
        takes: std::sync::atomic::AtomicU32,
    }

    impl RateBudgets for FakeBudgets {
        fn take<'a>(
            &'a self,
            _key: &'a str,
            _rate: f64,
            _burst: f64,
        ) -> sluice_core::node::BoxFuture<'a, Result<Option<Duration>, sluice_core::ConnectorError>>
        {
            self.takes.fetch_add(1, Ordering::SeqCst);
            let pause = *self.pause.lock().unwrap();
            Box::pin(async move { Ok((!pause.is_zero()).then_some(pause)) })
        }

        fn pause<'a>(
            &'a self,
            _key: &'a str,
            wait: Duration,
        ) -> sluice_core::node::BoxFuture<'a, Result<(), sluice_core::ConnectorError>> {
            *self.pause.lock().unwrap() = wait;
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn a_shared_pause_beyond_the_longest_wait_parks_and_a_short_one_is_waited() {
        let budgets = Arc::new(FakeBudgets::default());
        let l = Limiter::new(Some(1000.0), 1, 1).shared(budgets.clone(), "k".into());
        assert!(matches!(
            l.acquire(Duration::from_secs(1)).await,
            Gate::Go(..)
        ));
        l.share_pause(Duration::from_secs(60)).await;
        match l.acquire(Duration::from_secs(1)).await {
            Gate::Parked(wait) => assert_eq!(wait, Duration::from_secs(60)),
            Gate::Go(..) => panic!("a pause told by another process parks this one"),
        }
        assert_eq!(budgets.takes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrency_caps_requests_in_flight() {
        let l = Limiter::new(None, 1, 2);
        let max = Duration::from_secs(1);
        let Gate::Go(a, _) = l.acquire(max).await else {
            panic!("no shared budget, no parking")
        };
        let _b = l.acquire(max).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), l.acquire(max))
                .await
                .is_err()
        );
        drop(a);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), l.acquire(max))
                .await
                .is_ok()
        );
    }
}
