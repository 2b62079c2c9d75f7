//! The state store as a sink's [`NameBook`]: the column names `naming: snake_case` chose,
//! kept per pipeline and node, and listed in each run's record.

use crate::deliver::NodeCtx;
use sluice_core::naming::NameBook;
use sluice_core::{ConnectorError, Sink};
use sluice_state::StateStore;
use std::collections::BTreeMap;
use std::sync::Arc;

struct StoreNameBook {
    store: StateStore,
    pipeline: String,
    node: String,
    run_id: String,
}

fn store_error(e: sluice_state::StateError, doing: &str) -> ConnectorError {
    ConnectorError::new(
        e.class(),
        format!("cannot {doing} in the state store (is it reachable?): {e}"),
    )
}

#[async_trait::async_trait]
impl NameBook for StoreNameBook {
    async fn recorded(&self) -> Result<BTreeMap<String, String>, ConnectorError> {
        self.store
            .column_names(&self.pipeline, &self.node)
            .await
            .map_err(|e| store_error(e, "read the recorded column names"))
    }

    async fn record(&self, names: &BTreeMap<String, String>) -> Result<(), ConnectorError> {
        self.store
            .record_column_names(&self.pipeline, &self.node, &self.run_id, names)
            .await
            .map_err(|e| store_error(e, "record the column names"))
    }
}

/// Hands a sink the state store's record of its column names, then tells it its run.
pub(crate) fn begin_sink(ctx: &NodeCtx, sink: &mut dyn Sink) -> Result<(), ConnectorError> {
    sink.use_name_book(Arc::new(StoreNameBook {
        store: ctx.store.clone(),
        pipeline: ctx.pipeline.clone(),
        node: ctx.node.clone(),
        run_id: ctx.run_id.clone(),
    }));
    sink.begin_run(&ctx.run_info())
}
