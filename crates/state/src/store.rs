//! The state store on sqlx's `Any` driver: one set of queries for SQLite and PostgreSQL.

use crate::kinds::{AlertKind, AlertSeverity, DeliveryStatus, RunStatus, Trigger};
use serde::Serialize;
use sluice_core::ErrorClass;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What went wrong in the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The URL is not one the store understands.
    #[error(
        "state store URL `{url}` is not supported: use `sqlite:///path/to/state.db` or `postgres://user:password@host:port/db`"
    )]
    UnsupportedUrl {
        /// The URL, with any password removed.
        url: String,
    },
    /// The database failed.
    #[error(
        "state store at {url}: {source} (is the database reachable and writable? `sluice` keeps runs, checkpoints and failed batches there)"
    )]
    Database {
        /// The URL, with any password removed.
        url: String,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// Another process holds the pipeline's run lease.
    #[error(
        "pipeline `{pipeline}` is being run by {holder}: one process at a time owns a pipeline (its checkpoints and buffer); wait for it to finish (`--wait`), or stop it"
    )]
    LeaseHeld {
        /// The pipeline.
        pipeline: String,
        /// Who holds it.
        holder: String,
    },
    /// This process lost its run lease (paused or cut off from the state store longer
    /// than the lease lives): it must not write as the owner any more.
    #[error(
        "this process lost its run lease on pipeline `{pipeline}` (it could not renew it within {ttl:?}: paused, or cut off from the state store); another process may own the pipeline now, so nothing more is written; run again to resume from the checkpoints"
    )]
    LeaseLost {
        /// The pipeline.
        pipeline: String,
        /// The lease's time to live.
        ttl: std::time::Duration,
    },
    /// The OS lock file of a lease could not be used.
    #[error("cannot use the lease lock file {path}: {source} (is the state folder writable?)")]
    Lock {
        /// The lock file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A row that should exist does not.
    #[error("{what} `{id}` not found in the state store")]
    NotFound {
        /// `run`, `failed batch`, ...
        what: &'static str,
        /// Its id.
        id: String,
    },
}

/// A state-store failure met by a node (reading its checkpoint, recording a batch) fails
/// the node with the store's class.
impl From<StateError> for sluice_core::ConnectorError {
    fn from(e: StateError) -> Self {
        sluice_core::ConnectorError::new(e.class(), e.to_string())
    }
}

impl StateError {
    /// The class: an unreachable state store is a `dependency`.
    pub fn class(&self) -> ErrorClass {
        match self {
            StateError::UnsupportedUrl { .. } | StateError::NotFound { .. } => {
                ErrorClass::InvalidRequest
            }
            StateError::Database { .. }
            | StateError::LeaseHeld { .. }
            | StateError::LeaseLost { .. }
            | StateError::Lock { .. } => ErrorClass::Dependency,
        }
    }
}

/// A run, as listed by `sluice runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// What started it.
    pub trigger: Trigger,
    /// Status.
    pub status: RunStatus,
    /// Start, milliseconds since the epoch.
    pub started_at: i64,
    /// End, if over.
    pub finished_at: Option<i64>,
    /// Why it failed, redacted.
    pub error: Option<String>,
    /// A `rate_limited` (parked) run: when the API's quota resets, milliseconds since the
    /// epoch. The next run should not start before.
    pub resume_at: Option<i64>,
}

/// What a node did in a run: counted by the engine as it goes, kept in the node's row of
/// the run, shown by `sluice run` and `sluice runs show`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeCounts {
    /// Records received (sinks, transforms) or read (sources).
    pub records_in: i64,
    /// Records emitted or written.
    pub records_out: i64,
    /// Batches handled.
    pub batches: i64,
    /// Retries made.
    pub retries: i64,
    /// Records quarantined (kept in the failed-batch store).
    pub quarantined: i64,
    /// Redelivered batches skipped through the ledger.
    pub duplicates: i64,
}

impl NodeCounts {
    /// The counts of a `node_runs` or `node_shares` row.
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(NodeCounts {
            records_in: r.try_get("records_in")?,
            records_out: r.try_get("records_out")?,
            batches: r.try_get("batches")?,
            retries: r.try_get("retries")?,
            quarantined: r.try_get("quarantined")?,
            duplicates: r.try_get("duplicates")?,
        })
    }

    /// Binds the six counts, in the order of [`NodeCounts::from_row`]'s columns.
    pub(crate) fn bind<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        query
            .bind(self.records_in)
            .bind(self.records_out)
            .bind(self.batches)
            .bind(self.retries)
            .bind(self.quarantined)
            .bind(self.duplicates)
    }
}

/// A node within a run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRunRow {
    /// Node id.
    pub node: String,
    /// Its status at the end of the run (or now, while it runs).
    pub status: RunStatus,
    /// What it did.
    #[serde(flatten)]
    pub counts: NodeCounts,
    /// The class of the error that failed the node.
    pub error_class: Option<ErrorClass>,
    /// The error, redacted.
    pub error: Option<String>,
}

/// A failed attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    /// Node id.
    pub node: String,
    /// Error class.
    pub class: ErrorClass,
    /// What happened and what was done, redacted.
    pub detail: String,
    /// When, milliseconds since the epoch.
    pub at: i64,
}

/// A batch to keep in the failed-batch store.
#[derive(Debug, Clone)]
pub struct NewFailedBatch<'a> {
    /// The batch's ledger key (stable across retries and replays).
    pub id: &'a str,
    /// Pipeline.
    pub pipeline: &'a str,
    /// The node where it failed: replay starts there.
    pub node: &'a str,
    /// The run it failed in.
    pub run_id: &'a str,
    /// Error class.
    pub class: ErrorClass,
    /// The error, redacted.
    pub error: &'a str,
    /// Redacted request/response evidence, if any.
    pub evidence: Option<&'a str>,
    /// Attempts made in this run.
    pub attempts: i64,
    /// Records in the batch.
    pub rows: i64,
    /// The encoded batch (a buffer wire-format frame).
    pub payload: &'a [u8],
}

/// A row of the failed-batch store.
#[derive(Debug, Clone, Serialize)]
pub struct FailedBatchRow {
    /// The batch's ledger key.
    pub id: String,
    /// Pipeline.
    pub pipeline: String,
    /// Node where it failed.
    pub node: String,
    /// Run where it last failed.
    pub run_id: String,
    /// Error class.
    pub class: ErrorClass,
    /// The error, redacted.
    pub error: String,
    /// Redacted evidence.
    pub evidence: Option<String>,
    /// Attempts over all runs.
    pub attempts: i64,
    /// Records in the batch.
    pub rows: i64,
    /// First failure, ms since the epoch.
    pub first_failed_at: i64,
    /// Last failure, ms since the epoch.
    pub last_failed_at: i64,
    /// When a replay delivered it.
    pub resolved_at: Option<i64>,
    /// The encoded batch (empty in listings).
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// Which failed batches to list or replay.
#[derive(Debug, Clone, Default)]
pub struct FailedBatchFilter {
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only batches last failed in this run.
    pub run_id: Option<String>,
    /// Only this node.
    pub node: Option<String>,
    /// Only batches that last failed at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// Only this batch.
    pub id: Option<String>,
    /// Include resolved ones too.
    pub include_resolved: bool,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    /// Pipeline.
    pub pipeline: String,
    /// Node, if the alert is about one.
    pub node: Option<String>,
    /// What it is about.
    pub kind: AlertKind,
    /// The class of the error behind it, if one is (a recovery has none).
    pub class: Option<ErrorClass>,
    /// How urgent it is.
    pub severity: AlertSeverity,
    /// What happened, redacted.
    pub message: String,
    /// When, ms since the epoch.
    pub at: i64,
}

/// The outcome of delivering one alert to one of its pipeline's `alerts.channels`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRow {
    /// The alert's id, as [`StateStore::record_alert`] returned it.
    pub alert_id: String,
    /// The channel's name.
    pub channel: String,
    /// Sent, or failed after every attempt.
    pub status: DeliveryStatus,
    /// How many attempts were made.
    pub attempts: i64,
    /// Why the last attempt failed (redacted), if one did.
    pub error: Option<String>,
    /// When the delivery ended, ms since the epoch.
    pub at: i64,
}

/// A fresh id for an alert.
pub fn new_alert_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The database URL without its password and query values, for messages (the user info
/// ends at the last `@` before the host: see [`sluice_core::redact`]).
pub fn redact_url(url: &str) -> String {
    sluice_core::redact::redact_url(url)
}

/// The schema, as migrations applied in order. `{blob}` becomes the backend's byte type.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, trigger_kind TEXT NOT NULL,
        status TEXT NOT NULL, started_at BIGINT NOT NULL, finished_at BIGINT, error TEXT);
     CREATE INDEX IF NOT EXISTS runs_pipeline ON runs (pipeline, started_at);
     CREATE TABLE IF NOT EXISTS node_runs (
        run_id TEXT NOT NULL, node TEXT NOT NULL, status TEXT NOT NULL,
        records_in BIGINT NOT NULL, records_out BIGINT NOT NULL, batches BIGINT NOT NULL,
        retries BIGINT NOT NULL, quarantined BIGINT NOT NULL, duplicates BIGINT NOT NULL,
        error_class TEXT, error TEXT, PRIMARY KEY (run_id, node));
     CREATE TABLE IF NOT EXISTS attempts (
        id TEXT PRIMARY KEY, run_id TEXT NOT NULL, node TEXT NOT NULL, class TEXT NOT NULL,
        detail TEXT NOT NULL, at BIGINT NOT NULL);
     CREATE INDEX IF NOT EXISTS attempts_run ON attempts (run_id, at);
     CREATE TABLE IF NOT EXISTS checkpoints (
        pipeline TEXT NOT NULL, node TEXT NOT NULL, value TEXT NOT NULL,
        updated_at BIGINT NOT NULL, PRIMARY KEY (pipeline, node));
     CREATE TABLE IF NOT EXISTS failed_batches (
        id TEXT NOT NULL, pipeline TEXT NOT NULL, node TEXT NOT NULL, run_id TEXT NOT NULL,
        class TEXT NOT NULL, error TEXT NOT NULL, evidence TEXT, attempts BIGINT NOT NULL,
        rows_count BIGINT NOT NULL, first_failed_at BIGINT NOT NULL,
        last_failed_at BIGINT NOT NULL, resolved_at BIGINT, payload {blob} NOT NULL,
        PRIMARY KEY (pipeline, node, id));
     CREATE TABLE IF NOT EXISTS schema_fingerprints (
        pipeline TEXT NOT NULL, node TEXT NOT NULL, fingerprint TEXT NOT NULL,
        schema_text TEXT NOT NULL, first_seen_at BIGINT NOT NULL,
        PRIMARY KEY (pipeline, node, fingerprint));
     CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, node TEXT, class TEXT NOT NULL,
        severity TEXT NOT NULL, message TEXT NOT NULL, at BIGINT NOT NULL);",
    "CREATE TABLE IF NOT EXISTS pipelines (
        name TEXT PRIMARY KEY, file TEXT NOT NULL, updated_at BIGINT NOT NULL);",
    "ALTER TABLE runs ADD COLUMN host TEXT;
     ALTER TABLE runs ADD COLUMN pid BIGINT;",
    "CREATE TABLE IF NOT EXISTS leases (
        pipeline TEXT PRIMARY KEY, token BIGINT NOT NULL, host TEXT NOT NULL,
        pid BIGINT NOT NULL, command TEXT NOT NULL, acquired_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL);",
    "ALTER TABLE runs ADD COLUMN resume_at BIGINT;",
    "CREATE TABLE IF NOT EXISTS column_names (
        pipeline TEXT NOT NULL, node TEXT NOT NULL, field TEXT NOT NULL,
        column_name TEXT NOT NULL, first_run TEXT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (pipeline, node, field));
     CREATE TABLE IF NOT EXISTS run_column_names (
        run_id TEXT NOT NULL, node TEXT NOT NULL, field TEXT NOT NULL,
        column_name TEXT NOT NULL, PRIMARY KEY (run_id, node, field));",
    // An alert's kind and its error class, in columns of their own: `class` held either
    // (`run_failed`, `link_recovered`, or the error class of a link that went down) and
    // could not be null. SQLite cannot drop a NOT NULL, so the table is copied.
    "CREATE TABLE alerts_v7 (
        id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, node TEXT, kind TEXT NOT NULL,
        class TEXT, severity TEXT NOT NULL, message TEXT NOT NULL, at BIGINT NOT NULL);
     INSERT INTO alerts_v7 (id, pipeline, node, kind, class, severity, message, at)
        SELECT id, pipeline, node,
            CASE WHEN class IN ('run_failed', 'link_recovered') THEN class ELSE 'link_down' END,
            CASE WHEN class IN ('run_failed', 'link_recovered') THEN NULL ELSE class END,
            severity, message, at
        FROM alerts;
     DROP TABLE alerts;
     ALTER TABLE alerts_v7 RENAME TO alerts;",
    // Where each alert went: one row per (alert, channel) of the pipeline's `alerts:`.
    "CREATE TABLE IF NOT EXISTS alert_deliveries (
        alert_id TEXT NOT NULL, channel TEXT NOT NULL, status TEXT NOT NULL,
        attempts BIGINT NOT NULL, error TEXT, at BIGINT NOT NULL,
        PRIMARY KEY (alert_id, channel));",
    // Conditions alerted and not yet cleared (a link down, a pipeline failing or late),
    // so that one alert goes out per condition, a reminder per `repeat_every`, and a
    // recovery when it clears, whichever process sees it; and per alert, how many repeats
    // were held back.
    "CREATE TABLE IF NOT EXISTS alert_conditions (
        pipeline TEXT NOT NULL, subject TEXT NOT NULL, kind TEXT NOT NULL, class TEXT NOT NULL,
        alert_id TEXT NOT NULL, since BIGINT NOT NULL, last_sent_at BIGINT NOT NULL,
        PRIMARY KEY (pipeline, subject, kind, class));
     ALTER TABLE alerts ADD COLUMN suppressed BIGINT NOT NULL DEFAULT 0;",
    // The rate-limit budgets of the APIs read, shared by every worker (used on
    // PostgreSQL, see `budget.rs`): per host and hash of the credentials, a token bucket
    // and a pause, in ms on the database's clock; `last_wait_ms` is what the last take
    // was told (0: it got a token).
    "CREATE TABLE IF NOT EXISTS rate_budgets (
        key TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, refilled_at BIGINT NOT NULL,
        paused_until BIGINT NOT NULL, last_wait_ms BIGINT NOT NULL);",
    // What workers other than a run's owner wrote for its sinks (see `shares.rs`).
    "CREATE TABLE IF NOT EXISTS node_shares (
        run_id TEXT NOT NULL, node TEXT NOT NULL, worker TEXT NOT NULL,
        records_in BIGINT NOT NULL, records_out BIGINT NOT NULL, batches BIGINT NOT NULL,
        retries BIGINT NOT NULL, quarantined BIGINT NOT NULL, duplicates BIGINT NOT NULL,
        updated_at BIGINT NOT NULL, PRIMARY KEY (run_id, node, worker));",
];

/// A condition an alert is about, which holds until something clears it: the pipeline,
/// what it is about (a link's address, a node, or empty for the whole pipeline), the
/// alert's kind and the error class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionKey {
    /// Pipeline.
    pub pipeline: String,
    /// A link's address, a node id, a channel name, or `""` for the pipeline itself.
    pub subject: String,
    /// The kind of the alert that opened it.
    pub kind: AlertKind,
    /// The class of the error behind it, if any.
    pub class: Option<ErrorClass>,
}

/// What to do with an alert about a condition ([`StateStore::open_condition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dedup {
    /// The condition is new: send the alert.
    First,
    /// The condition has held since `since` and its last alert is older than the repeat
    /// interval: send the alert as a reminder.
    Reminder {
        /// When the condition was first alerted, ms since the epoch.
        since: i64,
    },
    /// The condition was alerted within the repeat interval: hold this one back (it was
    /// counted on the alert that went out, `alert_id`).
    Suppressed {
        /// The alert that went out last for the condition.
        alert_id: String,
        /// When the condition was first alerted, ms since the epoch.
        since: i64,
    },
}

/// A condition that cleared ([`StateStore::close_conditions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClearedCondition {
    /// What it was about (see [`ConditionKey::subject`]).
    pub subject: String,
    /// The class of the error behind it, if any.
    pub class: Option<ErrorClass>,
    /// When it was first alerted, ms since the epoch.
    pub since: i64,
}

// How long PostgreSQL keeps a store session that is idle inside a transaction before it
// closes it (`idle_in_transaction_session_timeout`).
pub(crate) use sluice_core::IDLE_IN_TRANSACTION;

/// The state store.
#[derive(Debug, Clone)]
pub struct StateStore {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    url: String,
    /// The SQLite file, for the leases' OS locks beside it.
    pub(crate) sqlite_path: Option<std::path::PathBuf>,
    /// The lease whose token checkpoint writes check ([`StateStore::fenced`]).
    pub(crate) fence: Option<std::sync::Arc<crate::lease::LeaseInner>>,
}

impl StateStore {
    /// Opens the store, creating the SQLite file and applying migrations as needed.
    pub async fn open(url: &str) -> Result<Self, StateError> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let mut sqlite_path = None;
        let (backend, connect_url) = if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            if !file.is_empty() && !file.starts_with(":memory:") {
                sqlite_path = Some(std::path::PathBuf::from(file));
            }
            if let Some(parent) =
                std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
                && !parent.as_os_str().is_empty()
            {
                let _ = std::fs::create_dir_all(parent);
            }
            let sep = if url.contains('?') { '&' } else { '?' };
            (Backend::Sqlite, format!("{url}{sep}mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StateError::UnsupportedUrl { url: shown });
        };
        let db_err = |source| StateError::Database {
            url: shown.clone(),
            source,
        };
        let postgres = backend == Backend::Postgres;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 1 } else { 5 })
            .acquire_timeout(std::time::Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if postgres {
                        let ms = IDLE_IN_TRANSACTION.as_millis();
                        conn.execute(AssertSqlSafe(format!(
                            "SET idle_in_transaction_session_timeout = {ms}"
                        )))
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(db_err)?;
        let store = StateStore {
            pool,
            backend,
            url: shown.clone(),
            sqlite_path,
            fence: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The SQLite file of the store (`None` on PostgreSQL or in memory).
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.sqlite_path.as_deref()
    }

    pub(crate) fn err(&self, source: sqlx::Error) -> StateError {
        StateError::Database {
            url: self.url.clone(),
            source,
        }
    }

    async fn migrate(&self) -> Result<(), StateError> {
        // Two processes opening a new store at once must not both apply a migration:
        // SQLite holds a file lock meanwhile, PostgreSQL an advisory lock per migration.
        let _migrating = self.migration_lock().await?;
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA busy_timeout = 5000")
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        }
        // Two `CREATE TABLE IF NOT EXISTS` at once can still collide in PostgreSQL's
        // catalog: this one runs under the migrations' lock too.
        let mut tx = self.migration_tx().await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS sluice_state_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        let current: Option<i64> = sqlx::query("SELECT MAX(version) FROM sluice_state_version")
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get::<Option<i64>, _>(0))
            .map_err(|e| self.err(e))?;
        let blob = match self.backend {
            Backend::Sqlite => "BLOB",
            Backend::Postgres => "BYTEA",
        };
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if current.is_some_and(|c| c >= version) {
                continue;
            }
            let mut tx = self.migration_tx().await?;
            // Another process may have applied it while we waited for the lock.
            let applied: Option<i64> = sqlx::query("SELECT MAX(version) FROM sluice_state_version")
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get::<Option<i64>, _>(0))
                .map_err(|e| self.err(e))?;
            if applied.is_some_and(|c| c >= version) {
                continue;
            }
            for statement in migration.replace("{blob}", blob).split(';') {
                if statement.trim().is_empty() {
                    continue;
                }
                sqlx::query(AssertSqlSafe(statement.to_owned()))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            sqlx::query("INSERT INTO sluice_state_version (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            tx.commit().await.map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// A transaction for a migration step: on PostgreSQL it first takes the migrations'
    /// advisory lock (released at commit), so processes opening a store at once take
    /// turns; on SQLite the file lock of [`Self::migration_lock`] does that.
    async fn migration_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StateError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7355608112)")
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(tx)
    }

    /// Waits for the SQLite file's migration lock (`<db>.locks/.migrate.lock`), held until
    /// the returned file is dropped.
    async fn migration_lock(&self) -> Result<Option<std::fs::File>, StateError> {
        use sluice_core::flock::{LockMode, try_lock};
        let Some(db) = &self.sqlite_path else {
            return Ok(None);
        };
        let mut dir = db.as_os_str().to_owned();
        dir.push(".locks");
        let path = std::path::PathBuf::from(dir).join(".migrate.lock");
        let file = crate::lease::open_lock_file(&path)?;
        let io = |source| StateError::Lock {
            path: path.clone(),
            source,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !try_lock(&file, LockMode::Exclusive).map_err(io)? {
            if std::time::Instant::now() > deadline {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "another process has been upgrading the state store for 30 s",
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(Some(file))
    }

    /// Starts a run and returns its id.
    pub async fn start_run(&self, pipeline: &str, trigger: Trigger) -> Result<String, StateError> {
        self.close_abandoned_runs(Some(pipeline)).await?;
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        sqlx::query(
            "INSERT INTO runs (id, pipeline, trigger_kind, status, started_at, host, pid) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(pipeline)
        .bind(trigger.as_str())
        .bind(RunStatus::Running.as_str())
        .bind(now_ms())
        .bind(host_id())
        .bind(i64::from(std::process::id()))
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// Marks as failed the runs still `running` that can never finish: those of a
    /// pipeline whose run lease is no longer held (its owner died, on any machine, or
    /// was paused past the lease), and, for runs started without a lease, those whose
    /// process on this machine is gone. Returns how many were closed.
    pub async fn close_abandoned_runs(&self, pipeline: Option<&str>) -> Result<u64, StateError> {
        let host = host_id();
        let rows = sqlx::query(
            "SELECT id, pipeline, host, pid FROM runs WHERE status = $1 AND (pipeline = $2 OR $3)",
        )
        .bind(RunStatus::Running.as_str())
        .bind(pipeline.unwrap_or_default())
        .bind(pipeline.is_none())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut closed = 0;
        let mut leases: std::collections::HashMap<String, Option<bool>> = Default::default();
        for row in rows {
            let id: String = row.try_get("id").map_err(|e| self.err(e))?;
            let name: String = row.try_get("pipeline").map_err(|e| self.err(e))?;
            let run_host: Option<String> = row.try_get("host").map_err(|e| self.err(e))?;
            let pid: Option<i64> = row.try_get("pid").map_err(|e| self.err(e))?;
            let lease_live = match leases.get(&name) {
                Some(live) => *live,
                None => {
                    let live = self.lease_holder(&name).await?.map(|(_, live)| live);
                    leases.insert(name.clone(), live);
                    live
                }
            };
            let dead = match lease_live {
                // The pipeline is leased: a run is alive while its lease is held.
                Some(live) => !live,
                // No lease was ever taken: only the pid on this machine can tell.
                None => match pid {
                    Some(pid) if run_host.as_deref() == Some(host.as_str()) => !process_alive(pid),
                    _ => false,
                },
            };
            if !dead {
                continue;
            }
            let message = "aborted: its process ended before the run finished (killed, crashed, paused past its lease, or the machine restarted); the next run resumed from the checkpoints";
            sqlx::query(
                "UPDATE runs SET status = $1, finished_at = $2, error = $3 WHERE id = $4 AND status = $5",
            )
            .bind(RunStatus::Failed.as_str())
            .bind(now_ms())
            .bind(message)
            .bind(&id)
            .bind(RunStatus::Running.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
            closed += 1;
        }
        Ok(closed)
    }

    /// Ends a run.
    pub async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        sqlx::query("UPDATE runs SET status = $1, finished_at = $2, error = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(now_ms())
            .bind(error)
            .bind(run_id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records when a parked (`rate_limited`) run may go on, milliseconds since the epoch.
    pub async fn set_resume_at(&self, run_id: &str, at_ms: i64) -> Result<(), StateError> {
        sqlx::query("UPDATE runs SET resume_at = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(run_id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// When the pipeline's latest run was parked (`rate_limited`) and its resume time is
    /// still ahead: that time, milliseconds since the epoch.
    pub async fn parked_until(&self, pipeline: &str) -> Result<Option<i64>, StateError> {
        let latest = self.runs(Some(pipeline), 1).await?;
        Ok(latest
            .into_iter()
            .next()
            .filter(|r| r.status == RunStatus::RateLimited)
            .and_then(|r| r.resume_at)
            .filter(|&at| at > now_ms()))
    }

    /// Writes (or overwrites) a node's row of a run.
    pub async fn record_node(&self, run_id: &str, node: &NodeRunRow) -> Result<(), StateError> {
        let query = sqlx::query(
            "INSERT INTO node_runs (run_id, node, status, records_in, records_out, batches, retries,
                quarantined, duplicates, error_class, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (run_id, node) DO UPDATE SET status = excluded.status,
                records_in = excluded.records_in, records_out = excluded.records_out,
                batches = excluded.batches, retries = excluded.retries,
                quarantined = excluded.quarantined, duplicates = excluded.duplicates,
                error_class = excluded.error_class, error = excluded.error",
        )
        .bind(run_id)
        .bind(&node.node)
        .bind(node.status.as_str());
        node.counts
            .bind(query)
            .bind(node.error_class.map(ErrorClass::as_str))
            .bind(node.error.as_deref())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a failed attempt (detail must be redacted by the caller).
    pub async fn record_attempt(
        &self,
        run_id: &str,
        node: &str,
        class: ErrorClass,
        detail: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO attempts (id, run_id, node, class, detail, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(run_id)
        .bind(node)
        .bind(class.as_str())
        .bind(detail)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The node's last checkpoint.
    pub async fn checkpoint(
        &self,
        pipeline: &str,
        node: &str,
    ) -> Result<Option<serde_json::Value>, StateError> {
        let row = sqlx::query("SELECT value FROM checkpoints WHERE pipeline = $1 AND node = $2")
            .bind(pipeline)
            .bind(node)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row
            .and_then(|r| r.try_get::<String, _>(0).ok())
            .and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// Stores the node's checkpoint (call only after the batch it follows was acked).
    /// Under a fence ([`StateStore::fenced`]) the write renews the lease in the same
    /// transaction, and fails with [`StateError::LeaseLost`] if it was lost.
    pub async fn save_checkpoint(
        &self,
        pipeline: &str,
        node: &str,
        value: &serde_json::Value,
    ) -> Result<(), StateError> {
        let mut tx = self.owner_tx().await?;
        sqlx::query(
            "INSERT INTO checkpoints (pipeline, node, value, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (pipeline, node) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(pipeline)
        .bind(node)
        .bind(value.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Moves a schedule's last tick (the checkpoint row `entry` of `pipeline`, `{"tick":
    /// ms}`) forward to `tick`, unless it is there or beyond already: `true` when this call
    /// moved it. A compare-and-set, so that of several workers sharing the store exactly
    /// one claims each tick.
    pub async fn claim_tick(
        &self,
        pipeline: &str,
        entry: &str,
        tick: i64,
    ) -> Result<bool, StateError> {
        let new = serde_json::json!({ "tick": tick }).to_string();
        for _ in 0..5 {
            let current: Option<String> =
                sqlx::query("SELECT value FROM checkpoints WHERE pipeline = $1 AND node = $2")
                    .bind(pipeline)
                    .bind(entry)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.err(e))?
                    .and_then(|r| r.try_get::<String, _>(0).ok());
            let done = match &current {
                None => sqlx::query(
                    "INSERT INTO checkpoints (pipeline, node, value, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (pipeline, node) DO NOTHING",
                )
                .bind(pipeline)
                .bind(entry)
                .bind(&new)
                .bind(now_ms())
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?,
                Some(old) => {
                    let at = serde_json::from_str::<serde_json::Value>(old)
                        .ok()
                        .and_then(|v| v["tick"].as_i64());
                    if at.is_some_and(|at| at >= tick) {
                        return Ok(false);
                    }
                    sqlx::query(
                        "UPDATE checkpoints SET value = $3, updated_at = $4
                         WHERE pipeline = $1 AND node = $2 AND value = $5",
                    )
                    .bind(pipeline)
                    .bind(entry)
                    .bind(&new)
                    .bind(now_ms())
                    .bind(old)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.err(e))?
                }
            };
            if done.rows_affected() == 1 {
                return Ok(true);
            }
            // Another worker wrote in between: look again.
        }
        Ok(false)
    }

    /// Forgets a node's checkpoint (a full resync); fenced like [`Self::save_checkpoint`].
    pub async fn clear_checkpoint(&self, pipeline: &str, node: &str) -> Result<(), StateError> {
        let mut tx = self.owner_tx().await?;
        sqlx::query("DELETE FROM checkpoints WHERE pipeline = $1 AND node = $2")
            .bind(pipeline)
            .bind(node)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Keeps a failed batch; a batch already kept (same pipeline, node and id) gets its
    /// attempts added, its last failure updated and is unresolved again.
    pub async fn quarantine(&self, batch: &NewFailedBatch<'_>) -> Result<(), StateError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO failed_batches (id, pipeline, node, run_id, class, error, evidence, attempts,
                rows_count, first_failed_at, last_failed_at, resolved_at, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, NULL, $11)
             ON CONFLICT (pipeline, node, id) DO UPDATE SET run_id = excluded.run_id,
                class = excluded.class, error = excluded.error, evidence = excluded.evidence,
                attempts = failed_batches.attempts + excluded.attempts,
                last_failed_at = excluded.last_failed_at, resolved_at = NULL,
                payload = excluded.payload",
        )
        .bind(batch.id)
        .bind(batch.pipeline)
        .bind(batch.node)
        .bind(batch.run_id)
        .bind(batch.class.as_str())
        .bind(batch.error)
        .bind(batch.evidence)
        .bind(batch.attempts)
        .bind(batch.rows)
        .bind(now)
        .bind(batch.payload.to_vec())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn failed_row(row: &AnyRow, with_payload: bool) -> Result<FailedBatchRow, sqlx::Error> {
        Ok(FailedBatchRow {
            id: row.try_get("id")?,
            pipeline: row.try_get("pipeline")?,
            node: row.try_get("node")?,
            run_id: row.try_get("run_id")?,
            class: parsed(row, "class")?,
            error: row.try_get("error")?,
            evidence: row.try_get("evidence")?,
            attempts: row.try_get("attempts")?,
            rows: row.try_get("rows_count")?,
            first_failed_at: row.try_get("first_failed_at")?,
            last_failed_at: row.try_get("last_failed_at")?,
            resolved_at: row.try_get("resolved_at")?,
            payload: if with_payload {
                row.try_get("payload")?
            } else {
                Vec::new()
            },
        })
    }

    /// Failed batches matching the filter, oldest first. Payloads are loaded only when
    /// `with_payload` (replay needs them; listings do not).
    pub async fn failed_batches(
        &self,
        filter: &FailedBatchFilter,
        with_payload: bool,
    ) -> Result<Vec<FailedBatchRow>, StateError> {
        let columns = "id, pipeline, node, run_id, class, error, evidence, attempts, rows_count,
            first_failed_at, last_failed_at, resolved_at";
        let payload = if with_payload { ", payload" } else { "" };
        let mut sql = format!("SELECT {columns}{payload} FROM failed_batches WHERE 1 = 1");
        let mut n = 0;
        let mut param = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        if filter.pipeline.is_some() {
            param(&mut sql, " AND pipeline = ?");
        }
        if filter.run_id.is_some() {
            param(&mut sql, " AND run_id = ?");
        }
        if filter.node.is_some() {
            param(&mut sql, " AND node = ?");
        }
        if filter.since.is_some() {
            param(&mut sql, " AND last_failed_at >= ?");
        }
        if filter.id.is_some() {
            param(&mut sql, " AND id = ?");
        }
        if !filter.include_resolved {
            sql.push_str(" AND resolved_at IS NULL");
        }
        sql.push_str(" ORDER BY first_failed_at, id");
        // Only fixed fragments and placeholders are interpolated; values are bound.
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for value in [&filter.pipeline, &filter.run_id, &filter.node]
            .into_iter()
            .flatten()
        {
            query = query.bind(value.clone());
        }
        if let Some(since) = filter.since {
            query = query.bind(since);
        }
        if let Some(id) = &filter.id {
            query = query.bind(id.clone());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| Self::failed_row(r, with_payload))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Marks a failed batch delivered.
    pub async fn resolve_failed(
        &self,
        pipeline: &str,
        node: &str,
        id: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE failed_batches SET resolved_at = $1 WHERE pipeline = $2 AND node = $3 AND id = $4",
        )
        .bind(now_ms())
        .bind(pipeline)
        .bind(node)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Deletes failed batches with this id (all nodes). Returns how many went.
    pub async fn drop_failed(&self, id: &str) -> Result<u64, StateError> {
        let done = sqlx::query("DELETE FROM failed_batches WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        if done.rows_affected() == 0 {
            return Err(StateError::NotFound {
                what: "failed batch",
                id: id.to_owned(),
            });
        }
        Ok(done.rows_affected())
    }

    fn run_row(row: &AnyRow) -> Result<RunRow, sqlx::Error> {
        Ok(RunRow {
            id: row.try_get("id")?,
            pipeline: row.try_get("pipeline")?,
            trigger: parsed(row, "trigger_kind")?,
            status: parsed(row, "status")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            error: row.try_get("error")?,
            resume_at: row.try_get("resume_at")?,
        })
    }

    /// The latest runs, newest first.
    pub async fn runs(
        &self,
        pipeline: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRow>, StateError> {
        let rows = match pipeline {
            Some(p) => {
                sqlx::query(
                    "SELECT id, pipeline, trigger_kind, status, started_at, finished_at, error, resume_at FROM runs
                     WHERE pipeline = $1 ORDER BY started_at DESC, id LIMIT $2",
                )
                .bind(p)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(
                    "SELECT id, pipeline, trigger_kind, status, started_at, finished_at, error, resume_at FROM runs
                     ORDER BY started_at DESC, id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(Self::run_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// For a freshness bound: when the pipeline's last successful run (succeeded or
    /// partially succeeded, replays aside) finished, and when its first run started.
    pub async fn last_success(
        &self,
        pipeline: &str,
    ) -> Result<(Option<i64>, Option<i64>), StateError> {
        let row = sqlx::query(
            "SELECT
                (SELECT MAX(finished_at) FROM runs WHERE pipeline = $1 AND status IN ($2, $3)
                    AND trigger_kind <> $4) AS last_success,
                (SELECT MIN(started_at) FROM runs WHERE pipeline = $1) AS first_run",
        )
        .bind(pipeline)
        .bind(RunStatus::Succeeded.as_str())
        .bind(RunStatus::PartiallySucceeded.as_str())
        .bind(Trigger::Replay.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let get = |column: &str| row.try_get::<Option<i64>, _>(column);
        Ok((
            get("last_success").map_err(|e| self.err(e))?,
            get("first_run").map_err(|e| self.err(e))?,
        ))
    }

    /// One run with its nodes and attempts.
    pub async fn run(
        &self,
        id: &str,
    ) -> Result<(RunRow, Vec<NodeRunRow>, Vec<AttemptRow>), StateError> {
        let row = sqlx::query(
            "SELECT id, pipeline, trigger_kind, status, started_at, finished_at, error, resume_at FROM runs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?
        .ok_or_else(|| StateError::NotFound {
            what: "run",
            id: id.to_owned(),
        })?;
        let run = Self::run_row(&row).map_err(|e| self.err(e))?;
        let nodes = sqlx::query(
            "SELECT node, status, records_in, records_out, batches, retries, quarantined, duplicates,
                error_class, error FROM node_runs WHERE run_id = $1 ORDER BY node",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?
        .iter()
        .map(|r| {
            Ok(NodeRunRow {
                node: r.try_get("node")?,
                status: parsed(r, "status")?,
                counts: NodeCounts::from_row(r)?,
                error_class: r
                    .try_get::<Option<String>, _>("error_class")?
                    .map(|c| parse_column(&c, "error_class"))
                    .transpose()?,
                error: r.try_get("error")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| self.err(e))?;
        let attempts = sqlx::query(
            "SELECT node, class, detail, at FROM attempts WHERE run_id = $1 ORDER BY at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?
        .iter()
        .map(|r| {
            Ok(AttemptRow {
                node: r.try_get("node")?,
                class: parsed(r, "class")?,
                detail: r.try_get("detail")?,
                at: r.try_get("at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(|e| self.err(e))?;
        Ok((run, nodes, attempts))
    }

    /// Records a schema a node produced; returns `true` when it was not seen before.
    pub async fn record_schema(
        &self,
        pipeline: &str,
        node: &str,
        fingerprint: &str,
        schema_text: &str,
    ) -> Result<bool, StateError> {
        let done = sqlx::query(
            "INSERT INTO schema_fingerprints (pipeline, node, fingerprint, schema_text, first_seen_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(pipeline)
        .bind(node)
        .bind(fingerprint)
        .bind(schema_text)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// The schema a node produced most recently first: its fingerprint, its text and
    /// when it was first seen (`sluice doctor` compares a sample with it).
    pub async fn latest_schema(
        &self,
        pipeline: &str,
        node: &str,
    ) -> Result<Option<(String, String, i64)>, StateError> {
        let row = sqlx::query(
            "SELECT fingerprint, schema_text, first_seen_at FROM schema_fingerprints
             WHERE pipeline = $1 AND node = $2 ORDER BY first_seen_at DESC, fingerprint LIMIT 1",
        )
        .bind(pipeline)
        .bind(node)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.map(|r| {
            Ok((
                r.try_get("fingerprint")?,
                r.try_get("schema_text")?,
                r.try_get("first_seen_at")?,
            ))
        })
        .transpose()
        .map_err(|e: sqlx::Error| self.err(e))
    }

    /// Remembers which file defines a pipeline, so that `sluice replay --pipeline P` can
    /// rebuild its nodes.
    pub async fn register_pipeline(&self, name: &str, file: &str) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO pipelines (name, file, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET file = excluded.file, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(file)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The file that defined the pipeline when it last ran, and every known pipeline.
    pub async fn pipeline_files(&self) -> Result<Vec<(String, String)>, StateError> {
        let rows = sqlx::query("SELECT name, file FROM pipelines ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("file")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// Records an alert and returns its id (what its deliveries refer to).
    pub async fn record_alert(&self, alert: &AlertRow) -> Result<String, StateError> {
        let id = new_alert_id();
        self.record_alert_as(&id, alert).await?;
        Ok(id)
    }

    /// Records an alert under the id the caller chose (see [`Self::open_condition`]).
    pub async fn record_alert_as(&self, id: &str, alert: &AlertRow) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO alerts (id, pipeline, node, kind, class, severity, message, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&alert.pipeline)
        .bind(alert.node.as_deref())
        .bind(alert.kind.as_str())
        .bind(alert.class.map(ErrorClass::as_str))
        .bind(alert.severity.as_str())
        .bind(&alert.message)
        .bind(alert.at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Says whether an alert about `key`, to go out as `alert_id` at `now`, is the first
    /// for the condition, a reminder (the last one went out `repeat_ms` or more ago), or
    /// to be held back (then counted on the last one sent). Each step is one statement
    /// whose condition decides, so two processes raising the same condition at once send
    /// it once.
    pub async fn open_condition(
        &self,
        key: &ConditionKey,
        alert_id: &str,
        now: i64,
        repeat_ms: i64,
    ) -> Result<Dedup, StateError> {
        let class = key.class.map_or("", ErrorClass::as_str);
        let inserted = sqlx::query(
            "INSERT INTO alert_conditions (pipeline, subject, kind, class, alert_id, since, last_sent_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&key.pipeline)
        .bind(&key.subject)
        .bind(key.kind.as_str())
        .bind(class)
        .bind(alert_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if inserted.rows_affected() == 1 {
            return Ok(Dedup::First);
        }
        let reminded = sqlx::query(
            "UPDATE alert_conditions SET alert_id = $5, last_sent_at = $6
             WHERE pipeline = $1 AND subject = $2 AND kind = $3 AND class = $4
               AND last_sent_at <= $7",
        )
        .bind(&key.pipeline)
        .bind(&key.subject)
        .bind(key.kind.as_str())
        .bind(class)
        .bind(alert_id)
        .bind(now)
        .bind(now.saturating_sub(repeat_ms))
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let row = sqlx::query(
            "SELECT alert_id, since FROM alert_conditions
             WHERE pipeline = $1 AND subject = $2 AND kind = $3 AND class = $4",
        )
        .bind(&key.pipeline)
        .bind(&key.subject)
        .bind(key.kind.as_str())
        .bind(class)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = row else {
            // Cleared in between: this alert opens it again.
            return Box::pin(self.open_condition(key, alert_id, now, repeat_ms)).await;
        };
        let since: i64 = row.try_get("since").map_err(|e| self.err(e))?;
        if reminded.rows_affected() == 1 {
            return Ok(Dedup::Reminder { since });
        }
        let last: String = row.try_get("alert_id").map_err(|e| self.err(e))?;
        sqlx::query("UPDATE alerts SET suppressed = suppressed + 1 WHERE id = $1")
            .bind(&last)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Dedup::Suppressed {
            alert_id: last,
            since,
        })
    }

    /// Clears the open conditions of `kind` for the pipeline (only those about `subject`,
    /// if given) and returns them: each one cleared is returned to one caller only.
    pub async fn close_conditions(
        &self,
        pipeline: &str,
        subject: Option<&str>,
        kind: AlertKind,
    ) -> Result<Vec<ClearedCondition>, StateError> {
        let query = match subject {
            Some(subject) => sqlx::query(
                "DELETE FROM alert_conditions WHERE pipeline = $1 AND kind = $2 AND subject = $3
                 RETURNING subject, class, since",
            )
            .bind(pipeline)
            .bind(kind.as_str())
            .bind(subject),
            None => sqlx::query(
                "DELETE FROM alert_conditions WHERE pipeline = $1 AND kind = $2
                 RETURNING subject, class, since",
            )
            .bind(pipeline)
            .bind(kind.as_str()),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                let class: String = r.try_get("class")?;
                Ok(ClearedCondition {
                    subject: r.try_get("subject")?,
                    class: (!class.is_empty())
                        .then(|| parse_column(&class, "class"))
                        .transpose()?,
                    since: r.try_get("since")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// How many repeats of an alert were held back while its condition held.
    pub async fn suppressed(&self, alert_id: &str) -> Result<i64, StateError> {
        sqlx::query("SELECT suppressed FROM alerts WHERE id = $1")
            .bind(alert_id)
            .fetch_optional(&self.pool)
            .await
            .and_then(|r| r.map(|r| r.try_get::<i64, _>(0)).transpose())
            .map(Option::unwrap_or_default)
            .map_err(|e| self.err(e))
    }

    /// Records how the delivery of an alert to one channel ended.
    pub async fn record_delivery(&self, delivery: &DeliveryRow) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO alert_deliveries (alert_id, channel, status, attempts, error, at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (alert_id, channel) DO UPDATE SET status = excluded.status,
                attempts = excluded.attempts, error = excluded.error, at = excluded.at",
        )
        .bind(&delivery.alert_id)
        .bind(&delivery.channel)
        .bind(delivery.status.as_str())
        .bind(delivery.attempts)
        .bind(delivery.error.as_deref())
        .bind(delivery.at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The deliveries of one alert, by channel name.
    pub async fn deliveries(&self, alert_id: &str) -> Result<Vec<DeliveryRow>, StateError> {
        let rows = sqlx::query(
            "SELECT alert_id, channel, status, attempts, error, at FROM alert_deliveries
             WHERE alert_id = $1 ORDER BY channel",
        )
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRow {
                    alert_id: r.try_get("alert_id")?,
                    channel: r.try_get("channel")?,
                    status: parsed(r, "status")?,
                    attempts: r.try_get("attempts")?,
                    error: r.try_get("error")?,
                    at: r.try_get("at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// The latest alerts, newest first.
    pub async fn alerts(&self, limit: i64) -> Result<Vec<AlertRow>, StateError> {
        Ok(self
            .alerts_with_ids(limit)
            .await?
            .into_iter()
            .map(|(_, alert)| alert)
            .collect())
    }

    /// The latest alerts with their ids (for their deliveries), newest first.
    pub async fn alerts_with_ids(&self, limit: i64) -> Result<Vec<(String, AlertRow)>, StateError> {
        let rows = sqlx::query(
            "SELECT id, pipeline, node, kind, class, severity, message, at FROM alerts ORDER BY at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                let alert = AlertRow {
                    pipeline: r.try_get("pipeline")?,
                    node: r.try_get("node")?,
                    kind: parsed(r, "kind")?,
                    class: r
                        .try_get::<Option<String>, _>("class")?
                        .map(|c| parse_column(&c, "class"))
                        .transpose()?,
                    severity: parsed(r, "severity")?,
                    message: r.try_get("message")?,
                    at: r.try_get("at")?,
                };
                Ok((r.try_get("id")?, alert))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }
}

/// A text column holding one of an enum's names (see `crate::kinds`), as that enum.
fn parsed<T>(row: &AnyRow, column: &str) -> Result<T, sqlx::Error>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    parse_column(&row.try_get::<String, _>(column)?, column)
}

/// `text`, read from `column`, as the enum whose name it is.
fn parse_column<T>(text: &str, column: &str) -> Result<T, sqlx::Error>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(e),
    })
}

/// This machine, as recorded with a run: its host name and boot id (after a restart no
/// process of before is alive, whatever its pid).
pub(crate) fn host_id() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    };
    let name = Some(read("/proc/sys/kernel/hostname"))
        .filter(|n| !n.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    let boot = read("/proc/sys/kernel/random/boot_id");
    format!("{name}/{}", boot.get(..8).unwrap_or(&boot))
}

/// Whether a `sluice` process with this pid runs on this machine (Linux `/proc`; where it
/// is missing, every process counts as alive, so no run is closed by mistake).
fn process_alive(pid: i64) -> bool {
    if pid == i64::from(std::process::id()) {
        return true;
    }
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains("sluice"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
