//! Rate-limit budgets shared between processes: the token bucket and the pause of an API
//! (keyed by its host and a hash of the credentials that read it), kept where every
//! worker sees them (the state store, when it is PostgreSQL).

use crate::ConnectorError;
use crate::node::BoxFuture;
use std::fmt;
use std::time::Duration;

/// Where rate-limit budgets live for every process that reads the same API. A key is
/// `host` plus a hash of the credentials: never a secret.
pub trait RateBudgets: Send + Sync + fmt::Debug {
    /// Takes one token of `key`'s bucket, which refills at `rate` tokens per second up to
    /// `burst`: `Ok(None)` when taken (a request may start now), `Ok(Some(wait))` when no
    /// request may start before `wait` has passed (the bucket is empty, or the budget is
    /// paused: then `wait` is what is left of the pause).
    fn take<'a>(
        &'a self,
        key: &'a str,
        rate: f64,
        burst: f64,
    ) -> BoxFuture<'a, Result<Option<Duration>, ConnectorError>>;

    /// No request under `key` starts before `wait` from now has passed (a `Retry-After`,
    /// a quota reset), whichever process asks.
    fn pause<'a>(
        &'a self,
        key: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;
}
