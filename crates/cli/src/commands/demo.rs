//! `sluice demo`: the quickstart against the flaky mock API.

use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {}

pub(crate) async fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`sluice demo` is being built")
}
