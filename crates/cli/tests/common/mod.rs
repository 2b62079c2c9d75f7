//! Helpers shared by the CLI tests: run the built binary from the workspace root.
//! Each test file uses a part of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (where `pipelines/` and `tests/fixtures/` are).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Runs `sluice ARGS` from the workspace root with an empty environment plus `vars`, so
/// that the outcome never depends on the caller's variables.
pub(crate) fn sluice(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args).current_dir(root()).env_clear();
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("the sluice binary runs")
}

/// Lossy UTF-8 of a stream.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether goldens should be rewritten instead of compared (`SLUICE_BLESS=1`).
pub(crate) fn bless() -> bool {
    std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1")
}

/// The sorted `*.yaml` files of a folder below the root.
pub(crate) fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}
