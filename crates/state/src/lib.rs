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
//! | `alerts` | alerts raised, with their class and message |
//! | `leases` | per pipeline: who owns it now (host, pid, since), until when, fencing token |
//!
//! Text stored here never holds a secret: callers pass redacted details only.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_state::StateError> {
//! use sluice_state::{RunStatus, StateStore};
//! let store = StateStore::open("sqlite:///tmp/sluice-state.db").await?;
//! let run = store.start_run("orders", "manual").await?;
//! store.finish_run(&run, RunStatus::Succeeded, None).await?;
//! # Ok(()) }
//! ```

mod lease;
mod names;
mod store;

pub use lease::{DEFAULT_LEASE_TTL, Lease, LeaseHolder};
pub use names::ColumnNameRow;
pub use store::{now_ms, redact_url};

pub use store::{
    AlertRow, AttemptRow, FailedBatchFilter, FailedBatchRow, NewFailedBatch, NodeRunRow, RunRow,
    RunStatus, StateError, StateStore,
};
