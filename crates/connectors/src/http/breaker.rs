//! Circuit breakers, one per host, kept in a registry that several sources can share.

use super::config::BreakerConfig;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The circuit breakers of every host, by `host:port` and settings. One registry shared
/// by all the sources of a process (pass the same `Arc` to each) makes the sources with
/// the same `breaker` settings share each host's breaker: one source's failures then
/// protect the others. A source with other settings gets a breaker of its own, so that
/// each source's `breaker` is the one that acts.
#[derive(Debug, Default)]
pub struct BreakerRegistry {
    breakers: Mutex<HashMap<String, Vec<Arc<CircuitBreaker>>>>,
}

impl BreakerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        BreakerRegistry::default()
    }

    /// The breaker of a host with these settings, made on first use.
    pub(crate) fn for_host(&self, host: &str, config: &BreakerConfig) -> Arc<CircuitBreaker> {
        let mut map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let same_host = map.entry(host.to_owned()).or_default();
        if let Some(b) = same_host.iter().find(|b| b.config == *config) {
            return b.clone();
        }
        let b = Arc::new(CircuitBreaker::new(host, config.clone()));
        same_host.push(b.clone());
        b
    }
}

#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    host: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// (when, failed) of recent requests, oldest first.
    outcomes: VecDeque<(Instant, bool)>,
    /// When the breaker last opened from closed: kept while it stays open or half-open
    /// (a failed probe opens it again), cleared when it closes.
    opened_at: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

impl CircuitBreaker {
    fn new(host: &str, config: BreakerConfig) -> Self {
        CircuitBreaker {
            host: host.to_owned(),
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                outcomes: VecDeque::new(),
                opened_at: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state for the metrics: 0 closed, 1 half-open, 2 open (until its time passed).
    pub(crate) fn state_value(&self, now: Instant) -> i64 {
        match self.lock().state {
            State::Closed => 0,
            State::HalfOpen { .. } => 1,
            State::Open { until } if now < until => 2,
            State::Open { .. } => 1,
        }
    }

    /// When the breaker opened, while it is not closed (open, or half-open probing).
    pub(crate) fn open_since(&self) -> Option<SystemTime> {
        let inner = self.lock();
        match inner.state {
            State::Closed => None,
            _ => inner.opened_at,
        }
    }

    /// Whether a request may go now. `Err(wait)`: open, retry in `wait`. `Ok(Some(msg))`
    /// when this call moved the breaker to half-open.
    pub(crate) fn admit(&self, now: Instant) -> Result<Option<String>, Duration> {
        if !self.config.enabled {
            return Ok(None);
        }
        let mut inner = self.lock();
        match inner.state {
            State::Closed => Ok(None),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } => {
                inner.state = State::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                };
                Ok(Some(format!(
                    "circuit breaker for {} went half-open: probing with {} request(s)",
                    self.host, self.config.half_open_probes
                )))
            }
            State::HalfOpen {
                admitted,
                succeeded,
            } => {
                if admitted < self.config.half_open_probes {
                    inner.state = State::HalfOpen {
                        admitted: admitted + 1,
                        succeeded,
                    };
                    Ok(None)
                } else {
                    // The probes are out; wait for their verdict.
                    Err(Duration::from_millis(50))
                }
            }
        }
    }

    /// Records a request's outcome (`failed`: a network error or a 5xx). Returns a
    /// message when the breaker changed state.
    pub(crate) fn record(&self, failed: bool, now: Instant) -> Option<String> {
        if !self.config.enabled {
            return None;
        }
        let cfg = &self.config;
        let mut inner = self.lock();
        match inner.state {
            State::HalfOpen {
                admitted,
                succeeded,
            } => {
                if failed {
                    inner.state = State::Open {
                        until: super::instant_after(now, cfg.open_for),
                    };
                    inner.outcomes.clear();
                    return Some(format!(
                        "circuit breaker for {} opened again: a probe failed; next probe in {}s",
                        self.host,
                        cfg.open_for.as_secs()
                    ));
                }
                let succeeded = succeeded + 1;
                if succeeded >= cfg.half_open_probes {
                    inner.state = State::Closed;
                    inner.outcomes.clear();
                    inner.opened_at = None;
                    return Some(format!(
                        "circuit breaker for {} closed: the probes succeeded",
                        self.host
                    ));
                }
                inner.state = State::HalfOpen {
                    admitted,
                    succeeded,
                };
                None
            }
            State::Open { .. } => None,
            State::Closed => {
                inner.outcomes.push_back((now, failed));
                while inner
                    .outcomes
                    .front()
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) > cfg.window)
                {
                    inner.outcomes.pop_front();
                }
                let total = inner.outcomes.len();
                let failures = inner.outcomes.iter().filter(|(_, f)| *f).count();
                if total >= cfg.min_requests as usize
                    && failures as f64 / total as f64 >= cfg.failure_ratio
                {
                    inner.state = State::Open {
                        until: super::instant_after(now, cfg.open_for),
                    };
                    inner.outcomes.clear();
                    inner.opened_at = Some(SystemTime::now());
                    return Some(format!(
                        "circuit breaker for {} opened: {failures} of the last {total} requests failed within {}s; requests pause for {}s",
                        self.host,
                        cfg.window.as_secs(),
                        cfg.open_for.as_secs()
                    ));
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            window: Duration::from_secs(10),
            min_requests: 4,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
        }
    }

    #[test]
    fn opens_on_the_failure_ratio_probes_then_closes() {
        let reg = BreakerRegistry::new();
        let b = reg.for_host("api:443", &cfg());
        assert!(Arc::ptr_eq(&b, &reg.for_host("api:443", &cfg())));
        let other = BreakerConfig {
            min_requests: 2,
            ..cfg()
        };
        assert!(!Arc::ptr_eq(&b, &reg.for_host("api:443", &other)));
        let t = Instant::now();
        assert!(b.record(false, t).is_none());
        assert!(b.record(true, t).is_none());
        assert!(b.record(false, t).is_none());
        assert!(b.record(true, t).unwrap().contains("opened"));
        assert!(b.admit(t + Duration::from_secs(1)).is_err());
        let t2 = t + Duration::from_secs(6);
        assert!(b.admit(t2).unwrap().unwrap().contains("half-open"));
        assert!(b.admit(t2).is_err(), "only one probe at a time");
        assert!(b.record(false, t2).unwrap().contains("closed"));
        assert_eq!(b.admit(t2), Ok(None));
    }

    #[test]
    fn a_failed_probe_reopens_and_old_failures_age_out() {
        let b = CircuitBreaker::new("h", cfg());
        let t = Instant::now();
        for _ in 0..4 {
            b.record(true, t);
        }
        let t2 = t + Duration::from_secs(6);
        b.admit(t2).unwrap();
        assert!(b.record(true, t2).unwrap().contains("opened again"));

        let b = CircuitBreaker::new("h", cfg());
        b.record(true, t);
        b.record(true, t);
        let later = t + Duration::from_secs(11);
        for _ in 0..3 {
            assert!(b.record(false, later).is_none());
        }
        assert!(b.record(true, later).is_none(), "1 of 4 in the window");
    }

    #[test]
    fn open_since_holds_through_a_failed_probe_and_clears_on_close() {
        let b = CircuitBreaker::new("h", cfg());
        let t = Instant::now();
        assert_eq!(b.open_since(), None);
        for _ in 0..4 {
            b.record(true, t);
        }
        let since = b.open_since().expect("open");
        let t2 = t + Duration::from_secs(6);
        b.admit(t2).unwrap();
        assert_eq!(
            b.open_since(),
            Some(since),
            "half-open: still the first opening"
        );
        b.record(true, t2);
        assert_eq!(
            b.open_since(),
            Some(since),
            "opened again: still the first opening"
        );
        let t3 = t2 + Duration::from_secs(6);
        b.admit(t3).unwrap();
        assert!(b.record(false, t3).unwrap().contains("closed"));
        assert_eq!(b.open_since(), None);
    }
}
