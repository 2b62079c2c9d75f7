//! Crashes on purpose at a named point of a run, for the end-to-end tests that prove what a
//! crash there leaves behind (no record lost, none written twice).
//!
//! `SLUICE_TEST_KILL=before_checkpoint:<node>:<n>[:<millis>]` aborts the process right after
//! the buffer acknowledged source `<node>`'s `<n>`-th batch of the process and before its
//! checkpoint is saved, after a pause of `<millis>` (so the nodes downstream can take that
//! batch first). Debug builds only; unset, as it always is outside those tests, it costs one
//! lookup per process.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct KillPoint {
    point: String,
    node: String,
    nth: u64,
    pause: Duration,
    seen: AtomicU64,
}

fn configured() -> Option<&'static KillPoint> {
    static POINT: OnceLock<Option<KillPoint>> = OnceLock::new();
    POINT
        .get_or_init(|| {
            // Never in a release build: a stray variable must not crash a production run.
            if !cfg!(debug_assertions) {
                return None;
            }
            let spec = std::env::var("SLUICE_TEST_KILL").ok()?;
            let mut parts = spec.split(':');
            let point = parts.next()?.to_owned();
            let node = parts.next()?.to_owned();
            let nth = parts.next()?.parse().ok()?;
            let pause = parts
                .next()
                .and_then(|m| m.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or_default();
            Some(KillPoint {
                point,
                node,
                nth,
                pause,
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process when `SLUICE_TEST_KILL` names this point and node and its count is
/// reached.
pub(crate) async fn reached(point: &str, node: &str) {
    let Some(k) = configured() else { return };
    if k.point != point || k.node != node {
        return;
    }
    if k.seen.fetch_add(1, Ordering::SeqCst) + 1 == k.nth {
        tokio::time::sleep(k.pause).await;
        tracing::warn!(point, node, "SLUICE_TEST_KILL: aborting the process");
        std::process::abort();
    }
}
