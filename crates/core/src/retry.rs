//! Retry policy: exponential backoff with full jitter.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often and how patiently to retry.
///
/// The delay before attempt `n + 1` is drawn uniformly from `0..=min(max_backoff,
/// initial_backoff * multiplier^(n-1))` ("full jitter"), so that many clients hitting the
/// same failed service do not retry in lockstep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. `1` means no retry.
    pub max_attempts: u32,
    /// The cap of the first backoff.
    pub initial_backoff: Duration,
    /// No single backoff exceeds this.
    pub max_backoff: Duration,
    /// Growth factor of the cap between attempts.
    pub multiplier: f64,
    /// Give up once this much time has passed since the first attempt (`None`: no limit).
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            max_elapsed: Some(Duration::from_secs(300)),
        }
    }
}

impl RetryPolicy {
    /// The cap of the backoff after `attempt` failed attempts (`attempt >= 1`).
    pub fn backoff_cap(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let cap = self.initial_backoff.as_secs_f64() * exp;
        // `try_`: a cap near `Duration::MAX` rounds above it as f64; never panic on it.
        Duration::try_from_secs_f64(cap.min(self.max_backoff.as_secs_f64()))
            .unwrap_or(self.max_backoff)
    }

    /// A full-jitter delay before the next attempt, after `attempt` failed ones.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let cap = self.backoff_cap(attempt);
        if cap.is_zero() {
            return cap;
        }
        Duration::try_from_secs_f64(rng.random_range(0.0..=cap.as_secs_f64())).unwrap_or(cap)
    }

    /// Whether another attempt is allowed after `attempt` failed ones and `elapsed` time.
    pub fn allows(&self, attempt: u32, elapsed: Duration) -> bool {
        attempt < self.max_attempts && self.max_elapsed.is_none_or(|max| elapsed < max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_grows_then_saturates() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_cap(1), Duration::from_millis(200));
        assert_eq!(p.backoff_cap(2), Duration::from_millis(400));
        assert_eq!(p.backoff_cap(30), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_the_cap() {
        let p = RetryPolicy::default();
        let mut rng = rand::rng();
        for attempt in 1..10 {
            for _ in 0..100 {
                assert!(p.backoff(attempt, &mut rng) <= p.backoff_cap(attempt));
            }
        }
    }

    #[test]
    fn a_huge_cap_does_not_panic() {
        let p = RetryPolicy {
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff_cap(40), Duration::MAX);
        assert!(p.backoff(40, &mut rand::rng()) <= Duration::MAX);
    }

    #[test]
    fn attempts_and_elapsed_time_bound_retries() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_elapsed: Some(Duration::from_secs(10)),
            ..RetryPolicy::default()
        };
        assert!(p.allows(1, Duration::ZERO));
        assert!(p.allows(2, Duration::from_secs(9)));
        assert!(!p.allows(3, Duration::ZERO));
        assert!(!p.allows(1, Duration::from_secs(10)));
    }
}
