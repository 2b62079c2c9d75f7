//! `sluice schema`: the JSON Schema of pipeline files, or the field reference.

use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct SchemaArgs {
    /// Print the Markdown field reference (the generated part of
    /// docs/pipeline-reference.md) instead of the JSON Schema.
    #[arg(long)]
    markdown: bool,
}

pub(crate) fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    if args.markdown {
        print!(
            "{}",
            sluice_config::schema::reference_markdown(sluice_connectors::registry())
        );
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&sluice_config::schema::json_schema(
                sluice_connectors::registry()
            ))?
        );
    }
    Ok(ExitCode::SUCCESS)
}
