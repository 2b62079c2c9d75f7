//! The engine's one retry loop: attempts of an operation under the node's retry policy,
//! with a full-jitter backoff (or the wait the other side asked for) between them, a
//! [`EventKind::Retried`] event before each wait, and no further wait once the run is
//! stopped. Sources, buffer publishes, tasks and deliveries all retry through it.

use async_trait::async_trait;
use sluice_core::{ConnectorError, RetryPolicy};
use std::time::{Duration, Instant};

use crate::EventKind;
use crate::deliver::NodeCtx;

/// A last guard on a server's `Retry-After`: connectors bound it by the node's own
/// `rate_limit.max_retry_after` (which this must not cut short), this only by a day.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Why the attempts ended without a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The failure is not one to try again (by its disposition, or the caller's rule).
    NotRetried,
    /// The retry policy's attempts or time are spent.
    Exhausted,
    /// The run was stopped, before a wait or during one.
    Cancelled,
}

/// The last failure of an operation that did not succeed, and why no attempt followed.
#[derive(Debug)]
pub(crate) struct GaveUp {
    /// The last attempt's error.
    pub error: ConnectorError,
    /// Attempts made, the last one included.
    pub attempts: u32,
    /// Why no other attempt was made.
    pub stop: Stop,
}

/// One attempt of an operation the engine retries: a source's read, a publish to the
/// buffer, a task's run, a target's handling of a batch.
#[async_trait]
pub(crate) trait Attempt: Send {
    /// What a successful attempt gives.
    type Output: Send;

    /// Makes one attempt.
    async fn attempt(&mut self, ctx: &mut NodeCtx) -> Result<Self::Output, ConnectorError>;

    /// Whether a failed attempt may be tried again, the policy permitting: by default,
    /// when the node's disposition for its class is `retry`.
    fn retry_on(&self, ctx: &NodeCtx, error: &ConnectorError) -> bool {
        ctx.retries(error)
    }
}

/// Makes attempts of `op` until one succeeds or no other attempt is allowed.
///
/// Each failure is recorded in the run record. It is tried again when
/// [`Attempt::retry_on`] says so, the node's [`RetryPolicy`] still allows an attempt
/// (counted from the first one of this call) and the run is not stopped; the wait before
/// it is counted as one of the node's retries and shown as an [`EventKind::Retried`]
/// event. Cancelling the run ends a wait at once.
pub(crate) async fn retrying<A: Attempt + ?Sized>(
    ctx: &mut NodeCtx,
    op: &mut A,
) -> Result<A::Output, GaveUp> {
    let started = Instant::now();
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let error = match op.attempt(ctx).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        ctx.record_attempt(&error).await;
        let stop = if !op.retry_on(ctx, &error) {
            Some(Stop::NotRetried)
        } else if !ctx.retry.allows(attempts, started.elapsed()) {
            Some(Stop::Exhausted)
        } else if ctx.cancel.is_cancelled() {
            Some(Stop::Cancelled)
        } else {
            None
        };
        if let Some(stop) = stop {
            return Err(GaveUp {
                error,
                attempts,
                stop,
            });
        }
        let wait = retry_wait(&ctx.retry, attempts, &error);
        ctx.stats.retries += 1;
        ctx.emit(EventKind::Retried {
            class: error.class,
            wait,
            message: error.message.clone(),
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.cancel.cancelled() => {
                return Err(GaveUp {
                    error,
                    attempts,
                    stop: Stop::Cancelled,
                });
            }
        }
    }
}

/// The wait before the next attempt: the server's `Retry-After` when it gave one
/// (capped), else a full-jitter backoff.
fn retry_wait(policy: &RetryPolicy, attempt: u32, error: &ConnectorError) -> Duration {
    match error.retry_after {
        Some(wait) => wait.min(MAX_RETRY_AFTER),
        None => policy.backoff(attempt, &mut rand::rng()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Dispositions;
    use crate::{Event, EventKind};
    use sluice_core::ErrorClass;
    use sluice_state::StateStore;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    /// Fails with `class` until `failures` attempts failed, then succeeds.
    struct Flaky {
        class: ErrorClass,
        failures: u32,
        made: u32,
        retry_after: Option<Duration>,
        /// Cancels the run at this attempt (1-based).
        cancel_at: Option<u32>,
    }

    #[async_trait]
    impl Attempt for Flaky {
        type Output = u32;

        async fn attempt(&mut self, ctx: &mut NodeCtx) -> Result<u32, ConnectorError> {
            self.made += 1;
            if self.cancel_at == Some(self.made) {
                ctx.cancel.cancel();
            }
            if self.made > self.failures {
                return Ok(self.made);
            }
            let error = ConnectorError::new(self.class, format!("attempt {}", self.made));
            Err(match self.retry_after {
                Some(wait) => error.with_retry_after(wait),
                None => error,
            })
        }
    }

    fn flaky(class: ErrorClass, failures: u32) -> Flaky {
        Flaky {
            class,
            failures,
            made: 0,
            retry_after: None,
            cancel_at: None,
        }
    }

    async fn ctx(
        dir: &tempfile::TempDir,
        max_attempts: u32,
    ) -> (NodeCtx, mpsc::UnboundedReceiver<Event>) {
        let store = StateStore::open(&format!("sqlite://{}/state.db", dir.path().display()))
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = NodeCtx {
            pipeline: "p".into(),
            namespace: "p".into(),
            node: "n".into(),
            run_id: "r".into(),
            load: None,
            retry: RetryPolicy {
                max_attempts,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
                ..RetryPolicy::default()
            },
            dispositions: Dispositions::default(),
            store,
            events: Some(tx),
            cancel: CancellationToken::new(),
            stats: sluice_state::NodeCounts::default(),
            link_down: false,
            quarantined_ids: Vec::new(),
            schema_drift: Vec::new(),
            gate: None,
            wrote: false,
            hand_back: false,
            poisoned: false,
        };
        (ctx, rx)
    }

    fn retried_events(rx: &mut mpsc::UnboundedReceiver<Event>) -> usize {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter(|e| matches!(e.kind, EventKind::Retried { .. }))
            .count()
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_until_it_passes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, mut rx) = ctx(&dir, 5).await;
        let made = retrying(&mut ctx, &mut flaky(ErrorClass::Dependency, 2))
            .await
            .unwrap();
        assert_eq!(made, 3);
        assert_eq!(ctx.stats.retries, 2);
        assert_eq!(retried_events(&mut rx), 2);
    }

    #[tokio::test]
    async fn the_policy_bounds_the_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, _rx) = ctx(&dir, 3).await;
        let gave_up = retrying(&mut ctx, &mut flaky(ErrorClass::Network, 10))
            .await
            .unwrap_err();
        assert_eq!(gave_up.stop, Stop::Exhausted);
        assert_eq!(gave_up.attempts, 3);
        assert_eq!(gave_up.error.message, "attempt 3");
        assert_eq!(ctx.stats.retries, 2);
    }

    #[tokio::test]
    async fn a_class_not_disposed_to_retry_gets_one_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, mut rx) = ctx(&dir, 5).await;
        let gave_up = retrying(&mut ctx, &mut flaky(ErrorClass::Permission, 10))
            .await
            .unwrap_err();
        assert_eq!(gave_up.stop, Stop::NotRetried);
        assert_eq!(gave_up.attempts, 1);
        assert_eq!(ctx.stats.retries, 0);
        assert_eq!(retried_events(&mut rx), 0);
    }

    #[tokio::test]
    async fn a_stopped_run_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, mut rx) = ctx(&dir, 5).await;
        let mut op = Flaky {
            cancel_at: Some(2),
            ..flaky(ErrorClass::Dependency, 10)
        };
        let gave_up = retrying(&mut ctx, &mut op).await.unwrap_err();
        assert_eq!(gave_up.stop, Stop::Cancelled);
        assert_eq!(gave_up.attempts, 2);
        assert_eq!(retried_events(&mut rx), 1);
    }

    #[tokio::test]
    async fn stopping_the_run_ends_a_wait_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, _rx) = ctx(&dir, 5).await;
        let cancel = ctx.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        });
        // The other side asked for an hour: only the cancellation can end the wait.
        let mut op = Flaky {
            retry_after: Some(Duration::from_secs(3600)),
            ..flaky(ErrorClass::RateLimited, 10)
        };
        let waited = tokio::time::timeout(Duration::from_secs(60), retrying(&mut ctx, &mut op));
        let gave_up = waited.await.expect("the wait ended").unwrap_err();
        assert_eq!(gave_up.stop, Stop::Cancelled);
        assert_eq!(gave_up.attempts, 1);
    }
}
