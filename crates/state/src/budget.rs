//! Rate-limit budgets shared by every process on a PostgreSQL store (`rate_budgets`): per
//! key (an API's host and a hash of its credentials, never a secret), a token bucket
//! (tokens, when it was last refilled) and a pause (`Retry-After`, a quota reset), on the
//! database's clock so that workers on several machines agree.
//!
//! Taking a token is one statement: an `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`
//! that refills the bucket for the time passed, takes a token if there is one and returns
//! how long to wait otherwise. Row locking makes two workers' takes one after the other.

use crate::store::{Backend, StateStore};
use sluice_core::node::BoxFuture;
use sluice_core::{ConnectorError, RateBudgets};
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

/// Now, in ms since the epoch, on PostgreSQL's clock.
const NOW: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The tokens in the bucket once refilled for the time since `refilled_at` (`$2`: rate
/// per second, `$3`: burst).
const AVAILABLE: &str = "LEAST(CAST($3 AS DOUBLE PRECISION), b.tokens
    + CAST(GREATEST(EXCLUDED.refilled_at - b.refilled_at, 0) AS DOUBLE PRECISION)
      * CAST($2 AS DOUBLE PRECISION) / 1000.0)";

/// The budgets of a PostgreSQL state store.
#[derive(Debug)]
struct SharedBudgets {
    store: StateStore,
}

impl StateStore {
    /// Where the rate-limit budgets of the sources are shared with every process using
    /// this store: `Some` on PostgreSQL (several workers), `None` on SQLite (one process:
    /// each source limits itself).
    pub fn rate_budgets(&self) -> Option<Arc<dyn RateBudgets>> {
        (self.backend == Backend::Postgres).then(|| {
            Arc::new(SharedBudgets {
                store: self.clone(),
            }) as Arc<dyn RateBudgets>
        })
    }

    /// Takes a token of `key`'s bucket: `None` when taken, else the wait (see
    /// [`RateBudgets::take`]). PostgreSQL only.
    async fn take_token(
        &self,
        key: &str,
        rate: f64,
        burst: f64,
    ) -> Result<Option<Duration>, crate::StateError> {
        let paused = "b.paused_until > EXCLUDED.refilled_at";
        let sql = format!(
            "INSERT INTO rate_budgets AS b (key, tokens, refilled_at, paused_until, last_wait_ms)
             VALUES ($1, CAST($3 AS DOUBLE PRECISION) - 1, {NOW}, 0, 0)
             ON CONFLICT (key) DO UPDATE SET
               last_wait_ms = CASE
                 WHEN {paused} THEN b.paused_until - EXCLUDED.refilled_at
                 WHEN {AVAILABLE} >= 1 THEN 0
                 ELSE CAST(CEIL((1 - {AVAILABLE}) * 1000.0 / CAST($2 AS DOUBLE PRECISION)) AS BIGINT)
               END,
               tokens = CASE
                 WHEN {paused} THEN b.tokens
                 WHEN {AVAILABLE} >= 1 THEN {AVAILABLE} - 1
                 ELSE {AVAILABLE}
               END,
               refilled_at = CASE
                 WHEN {paused} THEN b.refilled_at
                 ELSE GREATEST(b.refilled_at, EXCLUDED.refilled_at)
               END
             RETURNING last_wait_ms"
        );
        let wait: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .bind(rate.max(1e-3))
            .bind(burst.max(1.0))
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get::<i64, _>(0))
            .map_err(|e| self.err(e))?;
        Ok((wait > 0).then(|| Duration::from_millis(wait.unsigned_abs())))
    }

    /// No token of `key` is taken for `wait` from now (a later pause is kept).
    async fn pause_budget(&self, key: &str, wait: Duration) -> Result<(), crate::StateError> {
        let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 4);
        let wait = wait.min(100 * 365 * 24 * 3600 * 1000);
        let sql = format!(
            "INSERT INTO rate_budgets AS b (key, tokens, refilled_at, paused_until, last_wait_ms)
             VALUES ($1, 0, {NOW}, {NOW} + $2, 0)
             ON CONFLICT (key) DO UPDATE SET
               paused_until = GREATEST(b.paused_until, EXCLUDED.paused_until)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key)
            .bind(wait)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

impl RateBudgets for SharedBudgets {
    fn take<'a>(
        &'a self,
        key: &'a str,
        rate: f64,
        burst: f64,
    ) -> BoxFuture<'a, Result<Option<Duration>, ConnectorError>> {
        Box::pin(async move { Ok(self.store.take_token(key, rate, burst).await?) })
    }

    fn pause<'a>(
        &'a self,
        key: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        Box::pin(async move { Ok(self.store.pause_budget(key, wait).await?) })
    }
}
