//! `sluice replay`: re-delivers failed batches once their cause is fixed.

use anyhow::Context;
use clap::Args;
use sluice_engine::build::{self, BuildContext};
use sluice_engine::{Executor, replay};
use sluice_state::{FailedBatchFilter, now_ms};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use super::state::StateArgs;
use super::{PipelineFile, owner};

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The pipeline whose failed batches to replay (its file is the one it last ran from;
    /// `--file` overrides). Optional when the state store knows one pipeline only.
    #[arg(long, short = 'p')]
    pipeline: Option<String>,
    /// Only batches that last failed in this run.
    #[arg(long)]
    run: Option<String>,
    /// Only batches failed at this node.
    #[arg(long)]
    node: Option<String>,
    /// Only batches that last failed within this long (`2h`, `30m`).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Only this batch.
    #[arg(long)]
    batch: Option<String>,
    /// When another process runs this pipeline (a realtime or scheduled `sluice run`),
    /// wait for it to finish its current run, then replay (else exit 75 naming it).
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    state: StateArgs,
}

pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let since = match &args.since {
        Some(text) => {
            let ago = sluice_config::values::Duration::from_str(text)
                .map_err(|e| anyhow::anyhow!("--since {text}: {e}"))?;
            Some(now_ms() - ago.get().as_millis() as i64)
        }
        None => None,
    };
    // Find the pipeline file: --file, or the one the pipeline last ran from.
    let path: PathBuf = match &args.state.file {
        Some(file) => file.clone(),
        None => {
            let store = args.state.open().await?;
            let known = store.pipeline_files().await?;
            let chosen = match &args.pipeline {
                Some(p) => known.iter().find(|(name, _)| name == p).with_context(|| {
                    format!("the state store knows no pipeline `{p}`; pass its file with --file")
                })?,
                None if known.len() == 1 => &known[0],
                None => anyhow::bail!(
                    "say which pipeline to replay with --pipeline (known: {})",
                    known
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            PathBuf::from(&chosen.1)
        }
    };
    let file = PipelineFile::read(&path)?;
    let plan = file.plan()?;
    if let Some(p) = &args.pipeline {
        anyhow::ensure!(
            *p == plan.pipeline,
            "`{}` defines pipeline `{}`, not `{p}`",
            path.display(),
            plan.pipeline
        );
    }
    let ctx = BuildContext::default();
    let store = match &args.state.state {
        Some(url) => sluice_state::StateStore::open(url).await?,
        None => build::open_state(&plan, &ctx).await?,
    };
    // A replay owns the pipeline like a run: never beside a run of it in another process.
    let cancel = tokio_util::sync::CancellationToken::new();
    let owned = match owner::take(&store, &plan, &ctx, args.wait.then_some(&cancel)).await? {
        Some(owned) => owned,
        None => return Ok(ExitCode::from(130)),
    };
    let exec = Executor::new(owned.store.clone(), owned.buffer.clone());
    let pipeline =
        build::build_pipeline(&plan, &ctx.with_rate_budgets(store.rate_budgets())).await?;
    let filter = FailedBatchFilter {
        run_id: args.run,
        node: args.node,
        since,
        id: args.batch,
        ..FailedBatchFilter::default()
    };
    let report = replay(&exec, pipeline, filter).await;
    drop(exec);
    owned.release().await;
    let report = report?;
    let rows: i64 = report.delivered.iter().map(|(_, r)| r).sum();
    for (id, n) in &report.delivered {
        println!("delivered      {id} ({n} records)");
    }
    for (id, why) in &report.failed_again {
        println!("failed again   {id}: {why}");
    }
    for (id, why) in &report.not_replayable {
        println!("not replayable {id}: {why}");
    }
    let mut downstream_ok = true;
    if let Some(summary) = &report.downstream {
        for node in summary
            .nodes
            .iter()
            .filter(|n| n.counts.records_in > 0 || n.error.is_some())
        {
            println!(
                "downstream     {:<16} {:>8} in {:>8} out  {}{}",
                node.id,
                node.counts.records_in,
                node.counts.records_out,
                node.status,
                node.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        downstream_ok = summary.status == sluice_state::RunStatus::Succeeded;
    }
    println!(
        "replay {} of `{}`: {} batch(es) / {rows} record(s) delivered, {} failed again, {} not replayable",
        report.run_id,
        plan.pipeline,
        report.delivered.len(),
        report.failed_again.len(),
        report.not_replayable.len()
    );
    Ok(
        if report.failed_again.is_empty() && report.not_replayable.is_empty() && downstream_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        },
    )
}
