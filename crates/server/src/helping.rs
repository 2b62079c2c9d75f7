//! Workers helping each other's runs: with a Kafka buffer and a PostgreSQL state store
//! shared by several `sluice serve` processes, a run is one worker's (its lease), and
//! every other worker joins the consumer groups of the run's sinks that can be written
//! from several places (`NodeConfig::shared_writes`: a server database, appended or
//! upserted). Kafka spreads the topic's partitions over the members, so the sinks' work
//! spreads over the workers; when the run ends (or its owner changes) the helpers leave
//! and the partitions go back. See `sluice_engine::Executor::assist` for what keeps it
//! exact.

use std::sync::Arc;
use std::time::Duration;

use sluice_config::spec::BufferSpec;
use sluice_config::spec::nodes::Role;
use sluice_engine::build;
use sluice_engine::{Assist, Executor, running_elsewhere};
use tokio_util::sync::CancellationToken;

use crate::service::{Service, Slot};

/// How often a worker looks for a run to help, and whether the one it helps still runs.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The sinks of the slot's current version another worker can help with: none unless
/// the buffer is Kafka and the state store is shared.
fn helpable(slot: &Slot) -> Vec<String> {
    let loaded = slot.current();
    let plan = &loaded.plan;
    let shared_state = slot.state_url.starts_with("postgres");
    if !shared_state || !matches!(plan.buffer, BufferSpec::Kafka(_)) {
        return Vec::new();
    }
    plan.nodes
        .iter()
        .filter(|n| n.role == Role::Sink && n.config.shared_writes())
        .map(|n| n.id.clone())
        .collect()
}

/// Looks for runs of the slot's pipeline another worker owns, and helps each, until
/// `cancel`.
pub(crate) async fn help_loop(svc: Arc<Service>, slot: Arc<Slot>, cancel: CancellationToken) {
    let worker = sluice_state::worker_id();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
        if slot.running.lock().expect("slot").is_some() {
            continue;
        }
        let sinks = helpable(&slot);
        if sinks.is_empty() {
            continue;
        }
        match running_elsewhere(&slot.store, &slot.name, &worker).await {
            Ok(Some(assist)) => help(&svc, &slot, &sinks, assist, &cancel).await,
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(pipeline = %slot.name, error = %e, "cannot tell whether another worker runs the pipeline")
            }
        }
    }
}

/// Helps one run's sinks until it ends, its owner changes, this worker takes the
/// pipeline, or `cancel`.
async fn help(
    svc: &Arc<Service>,
    slot: &Arc<Slot>,
    sinks: &[String],
    assist: Assist,
    cancel: &CancellationToken,
) {
    let name = slot.name.clone();
    let loaded = slot.current();
    let plan = &loaded.plan;
    let buffer = match build::open_buffer(plan, &svc.ctx) {
        Ok(buffer) => buffer,
        Err(e) => {
            tracing::warn!(pipeline = %name, error = %e, "cannot open the buffer to help the run");
            return;
        }
    };
    let exec = Executor::new(slot.store.clone(), buffer);
    let stop = cancel.child_token();
    let mut helpers = Vec::new();
    for sink in sinks {
        let pipeline = match build::build_pipeline(plan, &svc.ctx).await {
            Ok(pipeline) => pipeline,
            Err(e) => {
                tracing::warn!(pipeline = %name, error = %e, "cannot build the pipeline to help the run");
                stop.cancel();
                break;
            }
        };
        let (exec, assist, stop, sink) = (exec.clone(), assist.clone(), stop.clone(), sink.clone());
        helpers.push(tokio::spawn(async move {
            let result = exec.assist(pipeline, &sink, &assist, stop).await;
            (sink, result)
        }));
    }
    tracing::info!(pipeline = %name, run = %assist.run_id, sinks = ?sinks, "helping the run another worker owns");
    // Until the run is over (or no longer another's), or every helper handed back.
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stop.cancelled() => break,
        }
        if helpers.iter().all(|h| h.is_finished()) {
            break;
        }
        let ours = slot.running.lock().expect("slot").is_some();
        let still = match running_elsewhere(&slot.store, &name, &assist.worker).await {
            Ok(Some(now)) => now.run_id == assist.run_id,
            Ok(None) => false,
            // The store unreachable: the run's owner meets it too; keep helping.
            Err(_) => true,
        };
        if ours || !still {
            break;
        }
    }
    stop.cancel();
    for helper in helpers {
        match helper.await {
            Ok((sink, Ok(counts))) => {
                svc.metrics.helped(&name, &sink, counts.records_out);
                tracing::info!(pipeline = %name, node = %sink, run = %assist.run_id, records = counts.records_out, batches = counts.batches, "helped the run");
            }
            Ok((sink, Err(e))) => {
                tracing::warn!(pipeline = %name, node = %sink, run = %assist.run_id, class = %e.class, error = %e, "stopped helping the run; its owner writes the rest");
            }
            Err(join) => {
                tracing::error!(pipeline = %name, run = %assist.run_id, error = %join, "a helper ended abnormally; the run's owner writes the rest");
            }
        }
    }
}
