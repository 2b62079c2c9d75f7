//! Run leases: one owner per pipeline at a time.
//!
//! A process that runs or replays a pipeline first takes its lease, a row of the
//! `leases` table:
//!
//! - **SQLite** (one machine): the row says who holds it, and an OS file lock
//!   (`<state.db>.locks/<pipeline>.lock`) held by the process makes it so. The OS
//!   releases the lock when the process ends, however it ends, so a dead owner never
//!   blocks the next one and a live one (even paused) is never overtaken.
//! - **PostgreSQL** (several machines): the row has an expiry, renewed by a heartbeat
//!   every third of the lease's time to live, measured on the database's clock. A holder
//!   that stops renewing (killed, paused, cut off) loses the lease when it expires, and
//!   another process may take it.
//!
//! Each acquisition increments the row's **fencing token**. A store [fenced] by a lease
//! writes checkpoints only in a transaction that first renews the lease by its token, so a
//! process that lost its lease (paused past its expiry, then resumed) cannot move a
//! checkpoint: its write fails with [`StateError::LeaseLost`] and its run fails loudly.
//! Buffer offsets are committed only while the lease is known to be valid
//! ([`StateStore::check_owner`]).
//!
//! [fenced]: StateStore::fenced

use sluice_core::flock::{LockMode, try_lock};
use sqlx::{AssertSqlSafe, Row};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Backend, StateError, StateStore, host_id, now_ms};

/// The default time to live of a lease (PostgreSQL): a holder that stops renewing loses
/// it this long after its last renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Who holds a pipeline's lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    /// The pipeline.
    pub pipeline: String,
    /// The holder's machine (host name and boot id).
    pub host: String,
    /// Its process id.
    pub pid: i64,
    /// The command it runs (`sluice run orders.yaml`).
    pub command: String,
    /// When it took the lease (ms since the Unix epoch).
    pub since: i64,
    /// When the lease expires unless renewed (ms since the Unix epoch, database clock);
    /// 0 once released.
    pub expires_at: i64,
    /// The fencing token of that acquisition.
    pub token: i64,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(self.since)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| self.since.to_string());
        write!(
            f,
            "pid {} on {} since {since} (`{}`)",
            self.pid, self.host, self.command
        )
    }
}

/// A held lease. Dropping it stops the heartbeat; [`Lease::release`] also frees the row
/// at once (else it expires, or, on SQLite, the file lock goes with the process).
#[derive(Debug)]
pub struct Lease {
    inner: Arc<LeaseInner>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
pub(crate) struct LeaseInner {
    pipeline: String,
    token: i64,
    ttl: Duration,
    /// The store without a fence, for renewals.
    store: StateStore,
    /// Until when the lease is known to be ours (local monotonic clock, which keeps
    /// running while the process is paused): the last renewal's start plus the TTL.
    valid_until: Mutex<Instant>,
    lost: AtomicBool,
    /// The OS lock (SQLite), held until released.
    file: Mutex<Option<File>>,
}

/// SQL for "now" in ms since the epoch, on the database's clock.
fn now_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let mut shown: Vec<String> = Vec::new();
    for (i, a) in args.iter().enumerate().take(4) {
        if i == 0 {
            shown.push(
                std::path::Path::new(a)
                    .file_name()
                    .map_or_else(|| a.clone(), |n| n.to_string_lossy().into_owned()),
            );
        } else {
            // Arguments are file names and flags; a URL could hold a password.
            shown.push(crate::redact_url(a));
        }
    }
    shown.join(" ")
}

impl LeaseInner {
    fn still_valid(&self) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        // On SQLite the OS lock is the lease: ours as long as this process lives.
        self.store.backend == Backend::Sqlite
            || Instant::now() < *self.valid_until.lock().expect("lease clock")
    }

    fn lost_error(&self) -> StateError {
        StateError::LeaseLost {
            pipeline: self.pipeline.clone(),
            ttl: self.ttl,
        }
    }

    /// Renews the lease in `conn` (a transaction when a write follows).
    async fn renew_in(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StateError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.lost_error());
        }
        let now = now_sql(self.store.backend);
        // On SQLite the file lock is held: the token alone says the row is ours. On
        // PostgreSQL an expired lease may already be someone else's to take: never revive.
        let sql = match self.store.backend {
            Backend::Sqlite => format!(
                "UPDATE leases SET expires_at = {now} + $3 WHERE pipeline = $1 AND token = $2"
            ),
            Backend::Postgres => format!(
                "UPDATE leases SET expires_at = {now} + $3 WHERE pipeline = $1 AND token = $2 AND expires_at > {now}"
            ),
        };
        let started = Instant::now();
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(&self.pipeline)
            .bind(self.token)
            .bind(self.ttl.as_millis() as i64)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.store.err(e))?;
        if done.rows_affected() != 1 {
            self.lost.store(true, Ordering::SeqCst);
            tracing::error!(pipeline = %self.pipeline, "the run lease was lost: another process may own the pipeline now");
            return Err(self.lost_error());
        }
        *self.valid_until.lock().expect("lease clock") = started + self.ttl;
        Ok(())
    }

    async fn renew(&self) -> Result<(), StateError> {
        let mut conn = self
            .store
            .pool
            .acquire()
            .await
            .map_err(|e| self.store.err(e))?;
        self.renew_in(&mut conn).await
    }
}

impl Lease {
    /// The fencing token of this acquisition (grows with every acquisition).
    pub fn token(&self) -> i64 {
        self.inner.token
    }

    /// The pipeline leased.
    pub fn pipeline(&self) -> &str {
        &self.inner.pipeline
    }

    /// Whether the lease is still known to be held.
    pub fn is_valid(&self) -> bool {
        self.inner.still_valid()
    }

    /// Renews the lease now (the heartbeat does this on its own).
    pub async fn renew(&self) -> Result<(), StateError> {
        self.inner.renew().await
    }

    /// Gives the lease up: the next process may take it at once.
    pub async fn release(mut self) -> Result<(), StateError> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let result = if self.inner.lost.load(Ordering::SeqCst) {
            Ok(())
        } else {
            sqlx::query("UPDATE leases SET expires_at = 0 WHERE pipeline = $1 AND token = $2")
                .bind(&self.inner.pipeline)
                .bind(self.inner.token)
                .execute(&self.inner.store.pool)
                .await
                .map(|_| ())
                .map_err(|e| self.inner.store.err(e))
        };
        self.inner.lost.store(true, Ordering::SeqCst);
        drop(self.inner.file.lock().expect("lease file").take());
        result
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl StateStore {
    /// The OS lock file of a pipeline's lease, for a SQLite store on disk.
    fn lease_lock_path(&self, pipeline: &str) -> Option<PathBuf> {
        let db = self.sqlite_path.as_ref()?;
        let mut dir = db.as_os_str().to_owned();
        dir.push(".locks");
        let safe: String = pipeline
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Some(PathBuf::from(dir).join(format!("{safe}.lock")))
    }

    /// Takes the OS lock of a pipeline (SQLite): `Ok(None)` when held by another process.
    fn try_lock_file(&self, pipeline: &str) -> Result<Option<Option<File>>, StateError> {
        let Some(path) = self.lease_lock_path(pipeline) else {
            return Ok(Some(None));
        };
        let file = open_lock_file(&path)?;
        match try_lock(&file, LockMode::Exclusive) {
            Ok(true) => Ok(Some(Some(file))),
            Ok(false) => Ok(None),
            Err(e) => Err(StateError::Lock { path, source: e }),
        }
    }

    /// Who holds (or last held) the pipeline's lease, and whether it is held now.
    pub async fn lease_holder(
        &self,
        pipeline: &str,
    ) -> Result<Option<(LeaseHolder, bool)>, StateError> {
        let now = now_sql(self.backend);
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT host, pid, command, acquired_at, expires_at, token, expires_at > {now} AS live
             FROM leases WHERE pipeline = $1"
        )))
        .bind(pipeline)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = row else { return Ok(None) };
        let holder = LeaseHolder {
            pipeline: pipeline.to_owned(),
            host: row.try_get("host").map_err(|e| self.err(e))?,
            pid: row.try_get("pid").map_err(|e| self.err(e))?,
            command: row.try_get("command").map_err(|e| self.err(e))?,
            since: row.try_get("acquired_at").map_err(|e| self.err(e))?,
            expires_at: row.try_get("expires_at").map_err(|e| self.err(e))?,
            token: row.try_get("token").map_err(|e| self.err(e))?,
        };
        let live = match self.backend {
            // The OS lock says whether its holder lives; the row only who it was.
            Backend::Sqlite => match self.lease_lock_path(pipeline) {
                Some(_) => holder.expires_at != 0 && self.try_lock_file(pipeline)?.is_none(),
                None => row_bool(&row, "live"),
            },
            Backend::Postgres => row_bool(&row, "live"),
        };
        Ok(Some((holder, live)))
    }

    /// Takes the pipeline's run lease, or fails with [`StateError::LeaseHeld`] naming the
    /// holder. Runs of the pipeline still marked `running` are closed as aborted: with the
    /// lease ours, their process can no longer be running them. The lease is renewed in
    /// the background every `ttl / 3` until released or dropped.
    pub async fn acquire_lease(&self, pipeline: &str, ttl: Duration) -> Result<Lease, StateError> {
        let ttl = ttl.max(Duration::from_millis(300));
        let file = match self.try_lock_file(pipeline)? {
            Some(file) => file,
            None => return Err(self.held(pipeline).await?),
        };
        // With the OS lock ours (SQLite), the row is ours to take whatever it says.
        let force = file.is_some() || self.backend == Backend::Sqlite;
        let now = now_sql(self.backend);
        sqlx::query(
            "INSERT INTO leases (pipeline, token, host, pid, command, acquired_at, expires_at)
             VALUES ($1, 0, '', 0, '', 0, 0) ON CONFLICT (pipeline) DO NOTHING",
        )
        .bind(pipeline)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let started = Instant::now();
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE leases SET token = token + 1, host = $2, pid = $3, command = $4,
                acquired_at = {now}, expires_at = {now} + $5
             WHERE pipeline = $1 AND (expires_at <= {now} OR $6)
             RETURNING token"
        )))
        .bind(pipeline)
        .bind(host_id())
        .bind(i64::from(std::process::id()))
        .bind(command_line())
        .bind(ttl.as_millis() as i64)
        .bind(force)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = row else {
            return Err(self.held(pipeline).await?);
        };
        let token: i64 = row.try_get("token").map_err(|e| self.err(e))?;
        if let Some(mut f) = file.as_ref() {
            // Who holds it, for people looking at the file.
            let _ = f.set_len(0);
            let _ = writeln!(
                f,
                "pid {} since {} ({})",
                std::process::id(),
                now_ms(),
                command_line()
            );
        }
        self.abort_running_runs(pipeline).await?;
        let inner = Arc::new(LeaseInner {
            pipeline: pipeline.to_owned(),
            token,
            ttl,
            store: self.unfenced(),
            valid_until: Mutex::new(started + ttl),
            lost: AtomicBool::new(false),
            file: Mutex::new(file),
        });
        let beat = inner.clone();
        let heartbeat = tokio::spawn(async move {
            let every = beat.ttl / 3;
            loop {
                tokio::time::sleep(every).await;
                match beat.renew().await {
                    Ok(()) => {}
                    Err(StateError::LeaseLost { .. }) => return,
                    // The store is unreachable: try again; the lease expires meanwhile
                    // and checkpoint writes fail until a renewal succeeds.
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew the run lease");
                    }
                }
            }
        });
        Ok(Lease {
            inner,
            heartbeat: Some(heartbeat),
        })
    }

    async fn held(&self, pipeline: &str) -> Result<StateError, StateError> {
        let holder = self.lease_holder(pipeline).await?.map(|(h, _)| h);
        Ok(StateError::LeaseHeld {
            pipeline: pipeline.to_owned(),
            holder: holder.map_or_else(|| "another process".to_owned(), |h| h.to_string()),
        })
    }

    /// A store whose checkpoint writes renew `lease` by its fencing token in the same
    /// transaction, and fail with [`StateError::LeaseLost`] once it is lost.
    pub fn fenced(&self, lease: &Lease) -> StateStore {
        let mut store = self.clone();
        store.fence = Some(lease.inner.clone());
        store
    }

    fn unfenced(&self) -> StateStore {
        let mut store = self.clone();
        store.fence = None;
        store
    }

    /// Whether this store may still write as its pipeline's owner: always, unfenced;
    /// else while its lease is known to be valid. Checked before committing buffer
    /// offsets.
    pub fn check_owner(&self) -> Result<(), StateError> {
        match &self.fence {
            Some(lease) if !lease.still_valid() => Err(lease.lost_error()),
            _ => Ok(()),
        }
    }

    /// Starts a transaction for a write made as the pipeline's owner: under a fence, the
    /// lease is renewed in it first (so a lost lease writes nothing).
    pub(crate) async fn owner_tx(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StateError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        if let Some(lease) = &self.fence {
            lease.renew_in(&mut tx).await?;
        }
        Ok(tx)
    }

    /// Closes the pipeline's runs still marked `running` (called with its lease held).
    async fn abort_running_runs(&self, pipeline: &str) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE runs SET status = 'failed', finished_at = $1, error = $2
             WHERE pipeline = $3 AND status = 'running'",
        )
        .bind(now_ms())
        .bind("aborted: its process ended (killed, crashed, paused past its lease, or the machine restarted) before the run finished; the next run resumed from the checkpoints")
        .bind(pipeline)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Opens (creating it and its folder) a lock file.
pub(crate) fn open_lock_file(path: &std::path::Path) -> Result<File, StateError> {
    let io = |source| StateError::Lock {
        path: path.to_path_buf(),
        source,
    };
    sluice_core::flock::open_lock_file(path).map_err(io)
}

fn row_bool(row: &sqlx::any::AnyRow, column: &str) -> bool {
    row.try_get::<bool, _>(column)
        .or_else(|_| row.try_get::<i64, _>(column).map(|v| v != 0))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process paused (SIGSTOP, a frozen VM) between the lease renewal of a checkpoint
    /// write and its commit holds the lease's row locked. PostgreSQL closes its session
    /// after [`crate::store::IDLE_IN_TRANSACTION`], so that the next owner takes the lease
    /// instead of waiting for it forever; the paused write, resumed, commits nothing.
    #[tokio::test]
    async fn an_owner_paused_inside_a_write_does_not_block_the_next_one() {
        let pg = sluice_testkit::postgres_schema("lease_paused_tx").await;
        let a = StateStore::open(&pg.url).await.unwrap();
        let b = StateStore::open(&pg.url).await.unwrap();
        let ttl = Duration::from_millis(600);
        let lease = a.acquire_lease("orders", ttl).await.unwrap();
        let fenced = a.fenced(&lease);
        let mut paused = fenced.owner_tx().await.unwrap();
        drop(lease);
        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        let bound = crate::store::IDLE_IN_TRANSACTION + Duration::from_secs(20);
        let taken = tokio::time::timeout(bound, b.acquire_lease("orders", ttl))
            .await
            .expect("the next owner takes the lease (it used to wait for the paused one forever)")
            .unwrap();
        b.fenced(&taken)
            .save_checkpoint("orders", "api", &serde_json::json!({"page": 7}))
            .await
            .unwrap();
        let late = sqlx::query(
            "INSERT INTO checkpoints (pipeline, node, value, updated_at) VALUES ('orders', 'api', '{\"page\":2}', 0)
             ON CONFLICT (pipeline, node) DO UPDATE SET value = excluded.value",
        )
        .execute(&mut *paused)
        .await;
        let committed = match late {
            Ok(_) => paused.commit().await.is_ok(),
            Err(_) => false,
        };
        assert!(
            !committed,
            "the paused write committed after its session was closed"
        );
        assert_eq!(
            b.checkpoint("orders", "api").await.unwrap(),
            Some(serde_json::json!({"page": 7}))
        );
        taken.release().await.unwrap();
    }
}
