//! The subcommands that work on pipeline files.

pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod health;
pub(crate) mod mock_api;
pub(crate) mod owner;
pub(crate) mod plan;
pub(crate) mod reconcile;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod schema;
pub(crate) mod serve;
pub(crate) mod state;
pub(crate) mod validate;

use anyhow::Context;
use sluice_config::{Env, Plan, diag};
use std::path::Path;

/// A pipeline file read from disk, with the environment its `${...}` refer to.
pub(crate) struct PipelineFile {
    /// The path as given on the command line (diagnostics print it as is).
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) env: Env,
}

impl PipelineFile {
    /// Reads the file, then the resolve step: the process environment and every file it
    /// references with `${file:...}` (relative to the pipeline file's folder).
    pub(crate) fn read(path: &Path) -> anyhow::Result<PipelineFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let env = Env::capture(&text, dir);
        Ok(PipelineFile {
            name: path.display().to_string(),
            text,
            env,
        })
    }

    /// Validates the file: the plan (its warnings printed to stderr), or every
    /// diagnostic printed and an error.
    pub(crate) fn plan(&self) -> anyhow::Result<Plan> {
        match sluice_config::validate(&self.text, &self.env, sluice_connectors::registry()) {
            Ok(plan) => {
                eprint!("{}", diag::render(&self.name, &self.text, &plan.warnings));
                Ok(plan)
            }
            Err(invalid) => {
                eprint!(
                    "{}",
                    diag::render(&self.name, &self.text, invalid.diagnostics())
                );
                let (errors, warnings) = diag::count(invalid.diagnostics());
                anyhow::bail!("`{}` is invalid: {}", self.name, counts(errors, warnings))
            }
        }
    }
}

/// `3 errors, 1 warning`.
pub(crate) fn counts(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (e, 0) => plural(e, "error"),
        (0, w) => plural(w, "warning"),
        (e, w) => format!("{}, {}", plural(e, "error"), plural(w, "warning")),
    }
}
