//! `sluice plan FILE`: the execution plan of a valid pipeline.

use super::{PipelineFile, counts};
use clap::Args;
use sluice_config::diag;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The pipeline file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print the DAG in Graphviz DOT (`sluice plan p.yaml --dot | dot -Tsvg > p.svg`).
    #[arg(long, conflicts_with = "json")]
    dot: bool,
    /// Print the plan as JSON (secrets print as `***`).
    #[arg(long)]
    json: bool,
}

/// Prints the plan (exit 0), or the diagnostics (exit 1).
pub(crate) fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let file = PipelineFile::read(&args.file)?;
    match sluice_config::validate(&file.text, &file.env, sluice_connectors::registry()) {
        Ok(plan) => {
            eprint!("{}", diag::render(&file.name, &file.text, &plan.warnings));
            if args.dot {
                print!("{}", plan.to_dot());
            } else if args.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", plan.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(invalid) => {
            eprint!(
                "{}",
                diag::render(&file.name, &file.text, invalid.diagnostics())
            );
            let (errors, warnings) = diag::count(invalid.diagnostics());
            eprintln!(
                "error: `{}` is invalid: {}",
                file.name,
                counts(errors, warnings)
            );
            Ok(ExitCode::from(1))
        }
    }
}
