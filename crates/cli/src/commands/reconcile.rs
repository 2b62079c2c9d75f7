//! `sluice reconcile FILE`: what each source holds against what its sinks hold (the work
//! is `sluice_engine::reconcile`; this prints it).

use clap::Args;
use sluice_engine::build::BuildContext;
use sluice_engine::reconcile::{self, PairReport, ReconcileOptions};
use std::path::PathBuf;
use std::process::ExitCode;

use super::PipelineFile;

#[derive(Debug, Args)]
pub(crate) struct ReconcileArgs {
    /// The pipeline file whose ends to compare.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Only the pairs with this node (a source or a sink).
    #[arg(long, short = 'n', value_name = "NODE")]
    node: Option<String>,
    /// Only records whose watermark column (the source's `watermark.column` or
    /// `incremental.field`) is at or after this value, at both ends.
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// The integer key column (default: the sink's `key`, else `id`).
    #[arg(long, value_name = "COLUMN")]
    key: Option<String>,
    /// How many missing and extra keys to list.
    #[arg(long, default_value_t = 20, value_name = "N")]
    limit: usize,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let file = PipelineFile::read(&args.file)?;
    let plan = file.plan()?;
    if let Some(node) = &args.node
        && !plan.nodes.iter().any(|n| &n.id == node)
    {
        anyhow::bail!("`{}` has no node `{node}`", file.name);
    }
    let options = ReconcileOptions {
        node: args.node.clone(),
        since: args.since.clone(),
        key: args.key.clone(),
        limit: args.limit,
        ..ReconcileOptions::default()
    };
    let pairs = reconcile::reconcile(&plan, &BuildContext::default(), &options).await;
    if args.json {
        let all: Vec<_> = pairs.iter().map(PairReport::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if pairs.is_empty() {
        println!("no source feeds a sink here: nothing to compare");
    } else {
        for p in &pairs {
            print(p);
        }
    }
    Ok(if pairs.iter().all(PairReport::matches) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print(p: &PairReport) {
    let count = |c: Option<i64>| c.map_or("?".to_owned(), |c| c.to_string());
    println!("{} -> {}", p.source.0, p.sink.0);
    println!(
        "  source: {} records ({})",
        count(p.source_count),
        p.source.1
    );
    println!("  sink:   {} records ({})", count(p.sink_count), p.sink.1);
    if let Some(s) = &p.since {
        println!("  since:  {} >= {}", s.column, s.value);
    }
    if let Some(e) = &p.error {
        println!("  [{}] {}", e.class, e.message);
        return;
    }
    if let Some(key) = &p.key {
        println!(
            "  key {key}: {} ranges of {} keys checksummed, {} differ",
            p.ranges.0,
            p.ranges.1,
            p.differing.len()
        );
        for d in &p.differing {
            println!(
                "    {key} {}..={}: source {}, sink {}",
                d.from, d.to, d.source, d.sink
            );
        }
    }
    if p.matches() {
        println!("  matching: every key of the source is in the sink, and no other");
        return;
    }
    if p.missing_total > 0 {
        println!(
            "  missing from the sink: {} key(s){}",
            p.missing_total,
            if p.missing_total > p.missing.len() {
                format!(", the first {}", p.missing.len())
            } else {
                String::new()
            }
        );
        for m in &p.missing {
            match &m.failed_batch {
                Some((id, node, class)) => println!(
                    "    {}: in failed batch {id} at node {node} [{class}]: `sluice replay --pipeline P` delivers it",
                    m.key
                ),
                None => println!(
                    "    {}: not in the failed-batch store (deleted at the sink, or lost)",
                    m.key
                ),
            }
        }
    }
    if p.extra_total > 0 {
        println!(
            "  only in the sink: {} key(s): {}",
            p.extra_total,
            p.extra
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if p.missing_total == 0 && p.extra_total == 0 && p.source_count != p.sink_count {
        println!("  the counts differ, the keys do not: some keys are there more than once");
    }
}
