//! `sluice validate FILE...`: checks pipeline files without running anything.

use super::{PipelineFile, counts};
use clap::{Args, ValueEnum};
use sluice_config::diag::{self, JsonDiagnostic};
use sluice_config::{Diagnostic, validate};
use std::path::PathBuf;
use std::process::ExitCode;

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// `file:line:col: error: ...` with the source line and a caret, on stderr.
    Text,
    /// A JSON array of `{file, line, column, severity, message, help}`, on stdout.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Pipeline files to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output format of the diagnostics.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Exit 0 when every file is valid (warnings allowed), 1 otherwise.
pub(crate) fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut all_valid = true;
    let mut json: Vec<serde_json::Value> = Vec::new();
    for path in &args.files {
        let file = match PipelineFile::read(path) {
            Ok(f) => f,
            Err(err) => {
                all_valid = false;
                let name = path.display().to_string();
                let message = format!("{err:#}");
                match args.format {
                    Format::Text => eprintln!("{name}: error: {message}"),
                    Format::Json => json.push(serde_json::json!({
                        "file": name, "line": null, "column": null, "severity": "error",
                        "message": message, "help": "check the path",
                    })),
                }
                continue;
            }
        };
        let (diagnostics, summary): (Vec<Diagnostic>, String) =
            match validate(&file.text, &file.env, sluice_connectors::registry()) {
                Ok(plan) => {
                    let (_, warnings) = diag::count(&plan.warnings);
                    let mut summary = format!(
                        "{}: ok: pipeline `{}`, {} node(s)",
                        file.name,
                        plan.pipeline,
                        plan.nodes.len()
                    );
                    if warnings > 0 {
                        summary.push_str(&format!(" ({})", counts(0, warnings)));
                    }
                    (plan.warnings, summary)
                }
                Err(invalid) => {
                    all_valid = false;
                    let (errors, warnings) = diag::count(invalid.diagnostics());
                    let summary = format!(
                        "error: `{}` is invalid: {}",
                        file.name,
                        counts(errors, warnings)
                    );
                    (invalid.diagnostics().to_vec(), summary)
                }
            };
        match args.format {
            Format::Text => {
                eprint!("{}", diag::render(&file.name, &file.text, &diagnostics));
                if summary.starts_with("error:") {
                    eprintln!("{summary}");
                } else {
                    println!("{summary}");
                }
            }
            Format::Json => {
                for d in &diagnostics {
                    json.push(serde_json::to_value(JsonDiagnostic {
                        file: &file.name,
                        diagnostic: d,
                    })?);
                }
            }
        }
    }
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
