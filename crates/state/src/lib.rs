//! # sluice-state
//!
//! Everything Sluice remembers between runs, in one database: a SQLite file by default
//! (`sqlite:///path/state.db`), or PostgreSQL (`postgres://…`) when several workers share
//! the work.
//!
//! | table | holds |
//! |---|---|
//! | `runs` | one row per run: pipeline, trigger, status, times, error |
//! | `node_runs` | per run and node: status, records and batches in/out, retries, quarantined |
//! | `attempts` | each failed attempt: node, class, redacted detail |
//! | `checkpoints` | per pipeline and node: the source's cursor or watermark (JSON) |
//! | `failed_batches` | the failed-batch store: payload, node, run, class, error, attempts, resolved-at |
//! | `schema_fingerprints` | the schemas each node has produced, to detect drift |
//! | `alerts` | alerts raised: kind, error class, severity, message, repeats held back |
//! | `alert_deliveries` | per alert and channel: sent or failed, attempts, error |
//! | `alert_conditions` | conditions alerted and not cleared: since when, last sent when |
//! | `node_shares` | per run, sink node and worker other than the run's owner: what it wrote |
//! | `leases` | per pipeline: who owns it now (host, pid, since), until when, fencing token |
//! | `rate_budgets` | per API (host and a hash of the credentials): a token bucket and a pause shared by every worker (PostgreSQL) |
//!
//! Text stored here never holds a secret: callers pass redacted details only. Closed
//! vocabularies (a run's [`RunStatus`] and [`Trigger`], an alert's [`AlertKind`] and
//! [`AlertSeverity`], error classes) are enums; their names exist only in the store's SQL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_state::StateError> {
//! use sluice_state::{RunStatus, StateStore, Trigger};
//! let store = StateStore::open("sqlite:///tmp/sluice-state.db").await?;
//! let run = store.start_run("orders", Trigger::Manual).await?;
//! store.finish_run(&run, RunStatus::Succeeded, None).await?;
//! # Ok(()) }
//! ```

mod budget;
mod kinds;
mod lease;
mod names;
mod shares;
mod store;

pub use kinds::{AlertKind, AlertSeverity, DeliveryStatus, RunStatus, Trigger, UnknownName};

pub use lease::{DEFAULT_LEASE_TTL, Lease, LeaseHolder};
pub use names::ColumnNameRow;
pub use shares::worker_id;
pub use store::{new_alert_id, now_ms, redact_url};

pub use store::{
    AlertRow, AttemptRow, ClearedCondition, ConditionKey, Dedup, DeliveryRow, FailedBatchFilter,
    FailedBatchRow, NewFailedBatch, NodeCounts, NodeRunRow, RunRow, StateError, StateStore,
};
