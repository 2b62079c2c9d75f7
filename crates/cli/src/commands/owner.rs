//! Taking ownership of a pipeline before running or replaying it: its run lease in the
//! state store, then its buffer (the embedded log is locked by its owner).

use sluice_buffer::{Buffer, BufferError};
use sluice_config::Plan;
use sluice_engine::build::{self, BuildContext, BuildError};
use sluice_state::{DEFAULT_LEASE_TTL, Lease, StateError, StateStore};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exit code when another process owns the pipeline (EX_TEMPFAIL: try again later).
pub(crate) const EXIT_HELD: u8 = 75;

/// What a process needs to run a pipeline as its owner.
pub(crate) struct Owned {
    /// The lease: renewed in the background; release it when done.
    pub(crate) lease: Lease,
    /// The state store, fenced by the lease: checkpoints written only while it is ours.
    pub(crate) store: StateStore,
    /// The pipeline's buffer, opened (and, embedded, locked) for this process.
    pub(crate) buffer: Arc<dyn Buffer>,
}

impl Owned {
    /// Closes the buffer and gives the lease up, so the next process may take it at once.
    pub(crate) async fn release(self) {
        drop(self.buffer);
        if let Err(e) = self.lease.release().await {
            tracing::warn!(error = %e, "could not release the run lease (it expires on its own)");
        }
    }
}

/// The lease's time to live: `SLUICE_LEASE_TTL` (`30s`, `2m`), else 30 s.
pub(crate) fn lease_ttl() -> anyhow::Result<Duration> {
    match std::env::var("SLUICE_LEASE_TTL") {
        Ok(text) if !text.trim().is_empty() => {
            let ttl: sluice_config::values::Duration = text
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("SLUICE_LEASE_TTL={text}: {e}"))?;
            Ok(ttl.get())
        }
        _ => Ok(DEFAULT_LEASE_TTL),
    }
}

/// Whether an error says another process owns the pipeline.
pub(crate) fn is_held(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<StateError>(),
            Some(StateError::LeaseHeld { .. })
        ) || matches!(
            e.downcast_ref::<BufferError>(),
            Some(BufferError::Locked { .. })
        )
    })
}

/// Takes the pipeline's lease and opens its buffer. When another process owns it: with
/// `wait`, waits until it is free (or `wait` is cancelled: `Ok(None)`); else fails with
/// the holder's name.
pub(crate) async fn take(
    store: &StateStore,
    plan: &Plan,
    ctx: &BuildContext,
    wait: Option<&CancellationToken>,
) -> anyhow::Result<Option<Owned>> {
    let ttl = lease_ttl()?;
    let mut told = false;
    loop {
        let held = match try_take(store, plan, ctx, ttl).await {
            Ok(owned) => return Ok(Some(owned)),
            Err(e) if is_held(&e) => e,
            Err(e) => return Err(e),
        };
        let Some(cancel) = wait else {
            return Err(held);
        };
        if !told {
            eprintln!("sluice: waiting: {held:#}");
            told = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = cancel.cancelled() => return Ok(None),
        }
    }
}

async fn try_take(
    store: &StateStore,
    plan: &Plan,
    ctx: &BuildContext,
    ttl: Duration,
) -> anyhow::Result<Owned> {
    let lease = store.acquire_lease(&plan.pipeline, ttl).await?;
    let buffer = match build::open_buffer(plan, ctx) {
        Ok(buffer) => buffer,
        Err(e) => {
            // Another state store's process may own the same buffer folder.
            let _ = lease.release().await;
            return Err(match e {
                BuildError::Buffer(b) => b.into(),
                e => e.into(),
            });
        }
    };
    Ok(Owned {
        store: store.fenced(&lease),
        lease,
        buffer,
    })
}
