//! Column names a sink chose for record fields (`naming: snake_case`): the mapping kept
//! per pipeline and node so that every run maps a field to the same column, and the
//! mappings each run applied, for its run record.

use crate::store::{StateError, StateStore, now_ms};
use serde::Serialize;
use sqlx::Row;
use std::collections::BTreeMap;

/// A field → column mapping a run applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnNameRow {
    /// The sink node.
    pub node: String,
    /// The record field, as the batches name it.
    pub field: String,
    /// The column it is written to.
    pub column: String,
}

impl StateStore {
    /// The mapping recorded for a sink node (field → column).
    pub async fn column_names(
        &self,
        pipeline: &str,
        node: &str,
    ) -> Result<BTreeMap<String, String>, StateError> {
        let rows = sqlx::query(
            "SELECT field, column_name FROM column_names WHERE pipeline = $1 AND node = $2",
        )
        .bind(pipeline)
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// Records mappings a sink node uses in a run: a field mapped before keeps its
    /// column (the first mapping wins); every one is listed in the run's record.
    pub async fn record_column_names(
        &self,
        pipeline: &str,
        node: &str,
        run_id: &str,
        names: &BTreeMap<String, String>,
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for (field, column) in names {
            sqlx::query(
                "INSERT INTO column_names (pipeline, node, field, column_name, first_run, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(pipeline)
            .bind(node)
            .bind(field)
            .bind(column)
            .bind(run_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            sqlx::query(
                "INSERT INTO run_column_names (run_id, node, field, column_name)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(run_id)
            .bind(node)
            .bind(field)
            .bind(column)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// The mappings a run applied, by node and field.
    pub async fn run_column_names(&self, run_id: &str) -> Result<Vec<ColumnNameRow>, StateError> {
        let rows = sqlx::query(
            "SELECT node, field, column_name FROM run_column_names WHERE run_id = $1
             ORDER BY node, field",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(ColumnNameRow {
                    node: r.try_get(0)?,
                    field: r.try_get(1)?,
                    column: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }
}
