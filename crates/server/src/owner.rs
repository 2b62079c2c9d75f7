//! Taking a pipeline before a run or a replay, as `sluice run` does: its run lease in the
//! state store, then its buffer (the embedded log is locked by its owner).

use sluice_buffer::{Buffer, BufferError};
use sluice_config::Plan;
use sluice_engine::build::{self, BuildContext, BuildError};
use sluice_state::{Lease, StateError, StateStore};
use std::sync::Arc;
use std::time::Duration;

/// What a worker needs to run a pipeline as its owner.
pub(crate) struct Owned {
    lease: Lease,
    /// The state store, fenced by the lease.
    pub(crate) store: StateStore,
    /// The pipeline's buffer, opened (and, embedded, locked) for this run.
    pub(crate) buffer: Arc<dyn Buffer>,
}

impl Owned {
    /// Closes the buffer and gives the lease up.
    pub(crate) async fn release(self) {
        drop(self.buffer);
        if let Err(e) = self.lease.release().await {
            tracing::warn!(error = %e, "could not release the run lease (it expires on its own)");
        }
    }
}

/// Why a pipeline could not be taken.
pub(crate) enum NotTaken {
    /// Another process or worker owns it now (the message names it).
    Held(String),
    /// Something else failed (the message says what), with its class.
    Failed(sluice_core::ErrorClass, String),
}

/// Takes the pipeline's lease and opens its buffer.
pub(crate) async fn take(
    store: &StateStore,
    plan: &Plan,
    ctx: &BuildContext,
    ttl: Duration,
) -> Result<Owned, NotTaken> {
    let lease = match store.acquire_lease(&plan.pipeline, ttl).await {
        Ok(lease) => lease,
        Err(e @ StateError::LeaseHeld { .. }) => return Err(NotTaken::Held(e.to_string())),
        Err(e) => return Err(NotTaken::Failed(e.class(), e.to_string())),
    };
    match build::open_buffer(plan, ctx) {
        Ok(buffer) => Ok(Owned {
            store: store.fenced(&lease),
            lease,
            buffer,
        }),
        Err(e) => {
            let _ = lease.release().await;
            Err(match e {
                BuildError::Buffer(b @ BufferError::Locked { .. }) => NotTaken::Held(b.to_string()),
                e => NotTaken::Failed(e.class(), e.to_string()),
            })
        }
    }
}
