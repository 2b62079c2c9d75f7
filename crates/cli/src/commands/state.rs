//! Commands that read the state store: `runs`, `failed`.

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice_state::{FailedBatchFilter, StateStore};
use std::path::PathBuf;
use std::process::ExitCode;

use super::PipelineFile;

/// Which state store to open.
#[derive(Debug, Args)]
pub(crate) struct StateArgs {
    /// The state store URL. Default: the `state:` of `--file`, else `sqlite://.sluice/state.db`.
    #[arg(long, env = "SLUICE_STATE", value_name = "URL", global = true)]
    pub(crate) state: Option<String>,
    /// Read the state store URL from this pipeline file.
    #[arg(long, short = 'f', value_name = "FILE", global = true)]
    pub(crate) file: Option<PathBuf>,
}

impl StateArgs {
    /// Where the store was looked for, and how to look elsewhere: for "nothing found".
    pub(crate) fn looked_in(&self) -> String {
        match (&self.state, &self.file) {
            (Some(url), _) => format!(
                "in {} (from --state or SLUICE_STATE)",
                sluice_state::redact_url(url)
            ),
            (None, Some(file)) => format!(
                "in the state store named by the `state:` of {} (relative paths start at the working directory)",
                file.display()
            ),
            (None, None) => "in sqlite://.sluice/state.db, the default state store. A pipeline with a `state:` of its own keeps its runs there: add `-f PIPELINE.yaml` or `--state URL`".to_owned(),
        }
    }

    pub(crate) async fn open(&self) -> anyhow::Result<StateStore> {
        let url = match (&self.state, &self.file) {
            (Some(url), _) => url.clone(),
            (None, Some(file)) => {
                let file = PipelineFile::read(file)?;
                let plan = file.plan()?;
                // Relative paths start at the working directory, as for `sluice run`.
                sluice_engine::build::resolve_sqlite(plan.state.expose(), std::path::Path::new("."))
            }
            (None, None) => "sqlite://.sluice/state.db".to_owned(),
        };
        StateStore::open(&url)
            .await
            .context("cannot open the state store (pass --state URL or --file PIPELINE.yaml)")
    }
}

/// Milliseconds since the epoch as local `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[derive(Debug, Args)]
pub(crate) struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
    /// Only this pipeline.
    #[arg(long, short = 'p')]
    pipeline: Option<String>,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    limit: i64,
    /// Print JSON (also after `show ID`).
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// One run: its nodes with their counts, and every failed attempt with its class.
    Show {
        /// The run id (from `sluice runs`).
        id: String,
    },
}

pub(crate) async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let store = args.state.open().await?;
    // Runs whose process died (kill -9, a crash) would show `running` forever.
    store.close_abandoned_runs(None).await?;
    match args.command {
        None => {
            let runs = store.runs(args.pipeline.as_deref(), args.limit).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(ExitCode::SUCCESS);
            }
            if runs.is_empty() {
                println!("no runs yet {}", args.state.looked_in());
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<13} {:<20} {:<8} {:<20} {:<20} {:>8}",
                "RUN", "PIPELINE", "TRIGGER", "STATUS", "STARTED", "SECONDS"
            );
            for r in runs {
                let secs = r
                    .finished_at
                    .map(|f| format!("{:.1}", (f - r.started_at) as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<13} {:<20} {:<8} {:<20} {:<20} {:>8}",
                    r.id,
                    r.pipeline,
                    r.trigger.as_str(),
                    r.status.as_str(),
                    time(r.started_at),
                    secs
                );
                if let Some(at) = r.resume_at {
                    println!("{:<13} parked until {}", "", time(at));
                }
            }
        }
        Some(RunsCommand::Show { id }) => {
            let (run, nodes, attempts) = store.run(&id).await?;
            let column_names = store.run_column_names(&id).await?;
            if args.json {
                let value = serde_json::json!({
                    "run": run, "nodes": nodes, "attempts": attempts, "column_names": column_names
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "run {}  pipeline {}  trigger {}  status {}",
                run.id, run.pipeline, run.trigger, run.status
            );
            println!(
                "started {}{}",
                time(run.started_at),
                run.finished_at
                    .map(|f| format!("  finished {}", time(f)))
                    .unwrap_or_default()
            );
            if let Some(at) = run.resume_at {
                println!(
                    "parked until {} (rate limited): the next run after it resumes from the checkpoints",
                    time(at)
                );
            }
            if let Some(e) = &run.error {
                println!("error: {e}");
            }
            println!();
            println!(
                "{:<16} {:<20} {:>10} {:>10} {:>8} {:>8} {:>11} {:>10}",
                "NODE", "STATUS", "IN", "OUT", "BATCHES", "RETRIES", "QUARANTINED", "DUPLICATES"
            );
            for n in &nodes {
                println!(
                    "{:<16} {:<20} {:>10} {:>10} {:>8} {:>8} {:>11} {:>10}",
                    n.node,
                    n.status,
                    n.counts.records_in,
                    n.counts.records_out,
                    n.counts.batches,
                    n.counts.retries,
                    n.counts.quarantined,
                    n.counts.duplicates
                );
                if let Some(e) = &n.error {
                    println!("  {} error: {e}", n.error_class.map_or("?", |c| c.as_str()));
                }
            }
            if !attempts.is_empty() {
                println!("\nfailed attempts and what was done:");
                for a in &attempts {
                    let first = a.detail.lines().next().unwrap_or_default();
                    println!(
                        "  {}  {:<14} {:<18} {first}",
                        time(a.at),
                        a.node,
                        a.class.as_str()
                    );
                    for line in a.detail.lines().skip(1) {
                        println!("  {:>20}   {line}", "");
                    }
                }
            }
            if !column_names.is_empty() {
                println!("\ncolumn names (naming: snake_case), field -> column:");
                for c in &column_names {
                    println!("  {:<16} `{}` -> `{}`", c.node, c.field, c.column);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct FailedArgs {
    #[command(subcommand)]
    command: FailedCommand,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Debug, Subcommand)]
enum FailedCommand {
    /// The failed batches waiting for replay (with `--all`, the resolved ones too).
    List {
        /// Only this pipeline.
        #[arg(long, short = 'p')]
        pipeline: Option<String>,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Only batches last failed in this run.
        #[arg(long)]
        run: Option<String>,
        /// Include batches already delivered by a replay.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One failed batch: its error, evidence and attempts.
    Show {
        /// The batch id (from `sluice failed list`).
        id: String,
    },
    /// Deletes a failed batch for good (it will not be replayed).
    Drop {
        /// The batch id.
        id: String,
    },
}

pub(crate) async fn failed(args: FailedArgs) -> anyhow::Result<ExitCode> {
    let store = args.state.open().await?;
    match args.command {
        FailedCommand::List {
            pipeline,
            node,
            run,
            all,
            json,
        } => {
            let filter = FailedBatchFilter {
                pipeline,
                node,
                run_id: run,
                include_resolved: all,
                ..FailedBatchFilter::default()
            };
            let rows = store.failed_batches(&filter, false).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            if rows.is_empty() {
                println!(
                    "no failed batches{} {}",
                    if all { "" } else { " waiting for replay" },
                    args.state.looked_in()
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<44} {:<14} {:<14} {:<18} {:>6} {:>8}  ERROR",
                "BATCH", "PIPELINE", "NODE", "CLASS", "ROWS", "ATTEMPTS"
            );
            for r in &rows {
                let error: String = r.error.chars().take(70).collect();
                let resolved = if r.resolved_at.is_some() {
                    " (resolved)"
                } else {
                    ""
                };
                println!(
                    "{:<44} {:<14} {:<14} {:<18} {:>6} {:>8}  {error}{resolved}",
                    r.id,
                    r.pipeline,
                    r.node,
                    r.class.as_str(),
                    r.rows,
                    r.attempts
                );
            }
            let waiting = rows.iter().filter(|r| r.resolved_at.is_none()).count();
            if waiting > 0 {
                println!(
                    "\n{waiting} waiting; once the cause is fixed: sluice replay --pipeline {}",
                    rows[0].pipeline
                );
            }
        }
        FailedCommand::Show { id } => {
            let filter = FailedBatchFilter {
                id: Some(id.clone()),
                include_resolved: true,
                ..FailedBatchFilter::default()
            };
            let rows = store.failed_batches(&filter, true).await?;
            anyhow::ensure!(
                !rows.is_empty(),
                "no failed batch `{id}` (see `sluice failed list --all`)"
            );
            for r in rows {
                println!("batch     {}", r.id);
                println!(
                    "pipeline  {}  node {}  last run {}",
                    r.pipeline, r.node, r.run_id
                );
                println!("class     {}", r.class);
                println!(
                    "rows      {}  attempts {}  payload {} bytes",
                    r.rows,
                    r.attempts,
                    r.payload.len()
                );
                println!(
                    "failed    first {}  last {}",
                    time(r.first_failed_at),
                    time(r.last_failed_at)
                );
                if let Some(at) = r.resolved_at {
                    println!("resolved  {}", time(at));
                }
                println!("error     {}", r.error);
                if let Some(e) = &r.evidence {
                    println!(
                        "evidence\n{}",
                        e.lines()
                            .map(|l| format!("  {l}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
            }
        }
        FailedCommand::Drop { id } => {
            let n = store.drop_failed(&id).await?;
            println!("dropped {n} failed batch record(s) `{id}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}
