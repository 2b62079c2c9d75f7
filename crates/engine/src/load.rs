//! Loads: which load a run's writes belong to, so that a sink in `replace` (or
//! `overwrite`) mode empties its target once per load, never on a resumed run or a
//! replay (see [`sluice_core::RunInfo`]).
//!
//! A normal run begins a new load when the pipeline's previous normal run (replays not
//! counted) completed (`succeeded` or `partially_succeeded`), when there is none, or when
//! none of its sources has a checkpoint (a full resync: the checkpoints were deleted).
//! Otherwise the previous run failed, was cancelled or was killed, and its sources go on
//! from their checkpoints: the run continues that run's load. The load's id is the id of
//! the run that began it; it is kept in the state store's checkpoints under
//! [`LOAD_ENTRY`], written before any source of the run saves a checkpoint.

use serde_json::json;
use sluice_core::RunInfo;
use sluice_state::{RunStatus, StateStore, Trigger};

use crate::EngineError;
use crate::pipeline::{NodeRunner, Pipeline};

/// The checkpoint row (in place of a node id) that holds the pipeline's current load:
/// `{"load": "<run id>"}`. Node ids are names from the pipeline file; this one starts
/// with `@`, which no pipeline in the docs uses.
pub(crate) const LOAD_ENTRY: &str = "@load";

/// How far back to look for the previous normal run among the latest runs (replays in
/// between are skipped). Past that, a new load begins.
const RUNS_LOOKED_AT: i64 = 200;

/// The pipeline's name and its sources' ids: what [`start_run`] needs. Only these cross
/// its awaits: a `&Pipeline` held there would make the run's future need
/// `Pipeline: Sync` (its nodes are `Send` only), and `sluice serve` spawns runs.
pub(crate) fn names_of(pipeline: &Pipeline) -> (String, Vec<String>) {
    let sources = pipeline
        .nodes
        .iter()
        .filter(|n| matches!(n.runner, NodeRunner::Source(_)))
        .map(|n| n.id.clone())
        .collect();
    (pipeline.name.clone(), sources)
}

/// Starts a run of pipeline `name` (whose sources are `sources`) in the state store and
/// tells which load it belongs to. A failure after the run was started finishes it as
/// failed.
pub(crate) async fn start_run(
    store: &StateStore,
    name: &str,
    sources: &[String],
    trigger: Trigger,
) -> Result<RunInfo, EngineError> {
    let run_id = store.start_run(name, trigger).await?;
    match load_of(store, name, sources, &run_id).await {
        Ok(load) => Ok(RunInfo::new(run_id, load)),
        Err(e) => {
            let message = format!("cannot tell the run's load: {e}");
            let _ = store
                .finish_run(&run_id, RunStatus::Failed, Some(&message))
                .await;
            Err(e)
        }
    }
}

/// The load run `run_id` of `pipeline` belongs to; records a new one.
async fn load_of(
    store: &StateStore,
    name: &str,
    sources: &[String],
    run_id: &str,
) -> Result<String, EngineError> {
    let mut resumable = false;
    for node in sources {
        if store.checkpoint(name, node).await?.is_some() {
            resumable = true;
            break;
        }
    }
    if resumable {
        let previous = store
            .runs(Some(name), RUNS_LOOKED_AT)
            .await?
            .into_iter()
            .find(|r| r.id != run_id && r.trigger != Trigger::Replay);
        let unfinished = previous.is_some_and(|r| {
            !matches!(
                r.status,
                RunStatus::Succeeded | RunStatus::PartiallySucceeded
            )
        });
        if unfinished {
            let current = store.checkpoint(name, LOAD_ENTRY).await?;
            if let Some(load) = current.as_ref().and_then(|v| v["load"].as_str()) {
                tracing::info!(pipeline = %name, run = %run_id, load, "the run continues the load of an unfinished run");
                return Ok(load.to_owned());
            }
        }
    }
    store
        .save_checkpoint(name, LOAD_ENTRY, &json!({ "load": run_id }))
        .await?;
    tracing::info!(pipeline = %name, run = %run_id, "the run begins a new load");
    Ok(run_id.to_owned())
}
