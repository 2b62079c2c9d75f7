//! What other workers wrote for a run's sink: with `sluice serve` on a Kafka buffer, the
//! workers that do not own a run join its sinks' consumer groups and write the batches of
//! the partitions they get. Each keeps its counts for the run here (absolute, overwritten
//! as it goes); the run's owner adds them to the node's own when the node ends, so the
//! run record counts every record once, whoever wrote it.

use crate::store::{NodeCounts, StateError, StateStore, host_id, now_ms};
use sqlx::Row;

/// This process as a worker: its machine and pid.
pub fn worker_id() -> String {
    format!("{}:{}", host_id(), std::process::id())
}

impl StateStore {
    /// Sets what worker `worker` has written so far for node `node` of run `run_id`.
    pub async fn record_share(
        &self,
        run_id: &str,
        node: &str,
        worker: &str,
        counts: &NodeCounts,
    ) -> Result<(), StateError> {
        let query = sqlx::query(
            "INSERT INTO node_shares (run_id, node, worker, records_in, records_out, batches,
                retries, quarantined, duplicates, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (run_id, node, worker) DO UPDATE SET
                records_in = excluded.records_in, records_out = excluded.records_out,
                batches = excluded.batches, retries = excluded.retries,
                quarantined = excluded.quarantined, duplicates = excluded.duplicates,
                updated_at = excluded.updated_at",
        )
        .bind(run_id)
        .bind(node)
        .bind(worker);
        counts
            .bind(query)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// What other workers wrote for node `node` of run `run_id`: each worker and its
    /// counts, by worker.
    pub async fn shares(
        &self,
        run_id: &str,
        node: &str,
    ) -> Result<Vec<(String, NodeCounts)>, StateError> {
        let rows = sqlx::query(
            "SELECT worker, records_in, records_out, batches, retries, quarantined, duplicates
             FROM node_shares WHERE run_id = $1 AND node = $2 ORDER BY worker",
        )
        .bind(run_id)
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| Ok((r.try_get("worker")?, NodeCounts::from_row(r)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_share_is_kept_per_worker_and_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/state.db", dir.path().display());
        let store = StateStore::open(&url).await.unwrap();
        let counts = |n| NodeCounts {
            records_in: n,
            records_out: n,
            batches: 1,
            ..NodeCounts::default()
        };
        store
            .record_share("r1", "db", "b:1", &counts(10))
            .await
            .unwrap();
        store
            .record_share("r1", "db", "b:1", &counts(30))
            .await
            .unwrap();
        store
            .record_share("r1", "db", "c:2", &counts(5))
            .await
            .unwrap();
        store
            .record_share("r2", "db", "c:2", &counts(7))
            .await
            .unwrap();
        let shares = store.shares("r1", "db").await.unwrap();
        assert_eq!(
            shares,
            vec![
                ("b:1".to_owned(), counts(30)),
                ("c:2".to_owned(), counts(5))
            ]
        );
        assert!(store.shares("r1", "other").await.unwrap().is_empty());
    }
}
