//! Run leases: one owner per pipeline, a fencing token that stops a process which lost
//! its lease from writing a checkpoint, on SQLite (OS lock) and PostgreSQL (expiry).

use serde_json::json;
use sluice_state::{RunStatus, StateError, StateStore, Trigger};
use std::time::Duration;

#[tokio::test]
async fn sqlite_one_owner_at_a_time_and_tokens_grow() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let a = StateStore::open(&url).await.unwrap();
    let b = StateStore::open(&url).await.unwrap();
    let lease = a
        .acquire_lease("orders", Duration::from_secs(30))
        .await
        .unwrap();
    let err = b
        .acquire_lease("orders", Duration::from_secs(30))
        .await
        .unwrap_err();
    let StateError::LeaseHeld { holder, .. } = &err else {
        panic!("expected LeaseHeld, got {err}")
    };
    assert!(
        holder.contains(&format!("pid {}", std::process::id())),
        "the error names the holder: {err}"
    );
    // Another pipeline is free.
    let other = b
        .acquire_lease("customers", Duration::from_secs(30))
        .await
        .unwrap();
    let first = lease.token();
    lease.release().await.unwrap();
    let again = b
        .acquire_lease("orders", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(again.token() > first, "fencing tokens only grow");
    // A fenced store writes checkpoints while its lease holds.
    b.fenced(&again)
        .save_checkpoint("orders", "api", &json!({"page": 3}))
        .await
        .unwrap();
    drop(other);
}

#[tokio::test]
async fn sqlite_a_dead_owner_frees_the_lease_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let a = StateStore::open(&url).await.unwrap();
    let lease = a
        .acquire_lease("orders", Duration::from_secs(60))
        .await
        .unwrap();
    let run = a.start_run("orders", Trigger::Manual).await.unwrap();
    // The process "dies": its OS lock goes, its lease row still says it is valid.
    drop(lease);
    drop(a);
    let b = StateStore::open(&url).await.unwrap();
    let lease = b
        .acquire_lease("orders", Duration::from_secs(60))
        .await
        .unwrap();
    let row = b.run(&run).await.unwrap();
    assert_eq!(
        row.0.status,
        RunStatus::Failed,
        "its run is closed as aborted"
    );
    lease.release().await.unwrap();
}

#[tokio::test]
async fn postgres_a_lost_lease_cannot_write_a_checkpoint() {
    let pg = sluice_testkit::postgres_schema("lease").await;
    let a = StateStore::open(&pg.url).await.unwrap();
    let b = StateStore::open(&pg.url).await.unwrap();
    let ttl = Duration::from_millis(600);
    let lease = a.acquire_lease("orders", ttl).await.unwrap();
    let fenced = a.fenced(&lease);
    fenced
        .save_checkpoint("orders", "api", &json!({"page": 1}))
        .await
        .unwrap();
    assert!(matches!(
        b.acquire_lease("orders", ttl).await.unwrap_err(),
        StateError::LeaseHeld { .. }
    ));
    // A paused process: its heartbeat stops (the lease object is gone), the store it
    // writes through is still there.
    drop(lease);
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    assert!(
        fenced.check_owner().is_err(),
        "offsets are not committed any more"
    );
    let taken = b.acquire_lease("orders", ttl).await.unwrap();
    b.fenced(&taken)
        .save_checkpoint("orders", "api", &json!({"page": 7}))
        .await
        .unwrap();
    // The old owner wakes up and tries to move the checkpoint back.
    let err = fenced
        .save_checkpoint("orders", "api", &json!({"page": 2}))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::LeaseLost { .. }), "{err}");
    assert_eq!(
        b.checkpoint("orders", "api").await.unwrap(),
        Some(json!({"page": 7}))
    );
    // The new owner's heartbeat keeps it alive past the TTL.
    tokio::time::sleep(ttl * 2).await;
    assert!(taken.is_valid());
    b.fenced(&taken)
        .save_checkpoint("orders", "api", &json!({"page": 8}))
        .await
        .unwrap();
    // Even with the old owner's lease expired and nobody else taking it, it cannot
    // revive it: the token it holds is not the current one.
    taken.release().await.unwrap();
    assert!(matches!(
        fenced
            .save_checkpoint("orders", "api", &json!({"page": 2}))
            .await
            .unwrap_err(),
        StateError::LeaseLost { .. }
    ));
}

/// Processes that open a new store at once (a realtime run and a `run --once` started
/// together) all get it: the migrations run once, under a lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_opened_by_several_at_once() {
    for _ in 0..3 {
        let pg = sluice_testkit::postgres_schema("migrate").await;
        let opens = (0..6).map(|_| {
            let url = pg.url.clone();
            async move { StateStore::open(&url).await }
        });
        for store in futures_util_join(opens).await {
            store.unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let opens = (0..6).map(|_| {
            let url = url.clone();
            async move { StateStore::open(&url).await }
        });
        for store in futures_util_join(opens).await {
            store.unwrap();
        }
    }
}

/// Runs the futures concurrently on the runtime's threads.
async fn futures_util_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
