//! The pipeline files of the folders `sluice serve` was given, read and validated.

use sluice_config::{Env, Plan, diag};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A pipeline file that validated: its plan, and the text it was made from.
#[derive(Clone)]
pub(crate) struct Loaded {
    pub(crate) file: PathBuf,
    pub(crate) text: String,
    pub(crate) plan: Arc<Plan>,
}

/// The pipeline files among `paths`: the `*.yaml` and `*.yml` of each folder (not its
/// sub-folders), and each file named, sorted, once each.
pub(crate) fn files_of(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let Ok(entries) = std::fs::read_dir(path) else {
                tracing::warn!(path = %path.display(), "cannot list the folder");
                continue;
            };
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_file() && is_pipeline_file(&p) {
                    files.push(p);
                }
            }
        } else if path.exists() {
            files.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    files
}

/// Whether a file in a watched folder is a pipeline file (`.yaml`, `.yml`; not hidden,
/// so editors' swap files are left alone).
pub(crate) fn is_pipeline_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden && path.extension().is_some_and(|x| x == "yaml" || x == "yml")
}

/// Reads and validates a pipeline file, as `sluice run` does: the plan, or every
/// diagnostic rendered at its line (the text the log and the API show).
pub(crate) fn load_file(path: &Path) -> Result<Loaded, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{name}`: {e}"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let env = Env::capture(&text, dir);
    match sluice_config::validate(&text, &env, sluice_connectors::registry()) {
        Ok(plan) => {
            if !plan.warnings.is_empty() {
                tracing::warn!(
                    file = %name,
                    "{}",
                    diag::render(&name, &text, &plan.warnings).trim_end()
                );
            }
            Ok(Loaded {
                file: path.to_path_buf(),
                text,
                plan: Arc::new(plan),
            })
        }
        Err(invalid) => {
            let (errors, warnings) = diag::count(invalid.diagnostics());
            let mut message = format!("`{name}` is invalid: {errors} error(s)");
            if warnings > 0 {
                message.push_str(&format!(", {warnings} warning(s)"));
            }
            message.push('\n');
            message.push_str(diag::render(&name, &text, invalid.diagnostics()).trim_end());
            Err(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_gives_its_yaml_files_and_reports_what_does_not_validate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("good.yaml"),
            "pipeline: good\nnodes:\n  t:\n    type: command\n    program: \"true\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("bad.yml"), "pipeline: Bad Name\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a pipeline").unwrap();
        std::fs::write(dir.path().join(".good.yaml.swp"), "").unwrap();
        let files = files_of(&[dir.path().to_path_buf()]);
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["bad.yml", "good.yaml"]);
        let good = load_file(&files[1]).unwrap();
        assert_eq!(good.plan.pipeline, "good");
        let bad = load_file(&files[0]).err().unwrap();
        assert!(bad.contains("is invalid"), "{bad}");
        assert!(bad.contains("bad.yml:1:"), "{bad}");
    }
}
