//! `sluice mock-api`: the flaky mock API of the testkit as a server, for demos,
//! benchmarks and trying a pipeline against every failure class.

use anyhow::Context;
use clap::{Args, ValueEnum};
use sluice_testkit::mock_api::{MockApi, MockConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct MockApiArgs {
    /// The port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 18080)]
    port: u16,
    /// Records in the data set (ids 1..=N, 300–600 bytes of nested JSON each).
    #[arg(long, default_value_t = 1000)]
    records: u64,
    /// Records per page when a request does not ask for a size.
    #[arg(long)]
    page_size: Option<u32>,
    /// Seed of the data set: the same seed serves the same records.
    #[arg(long)]
    seed: Option<u64>,
    /// Which failures to inject: `none`, or `demo` (the mix of `sluice demo`: OAuth2 with
    /// expiring tokens, a 429 storm, a 5xx burst, pages capped at 100, malformed records,
    /// a retyped field).
    #[arg(long, value_enum, default_value_t = Faults::None)]
    faults: Faults,
    /// With `--faults demo`: serve the demo's API healed (same auth and data, no injected
    /// failures, malformed records repaired), e.g. to `sluice replay` after `sluice demo`.
    #[arg(long)]
    healed: bool,
    /// The whole configuration as a JSON file (records, auth, faults, drift, ...; see
    /// docs/http-source.md); flags given as well override it.
    #[arg(long, value_name = "FILE", conflicts_with = "faults")]
    config: Option<PathBuf>,
}

/// Fault presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Faults {
    /// No injected failure.
    None,
    /// The fault mix of `sluice demo`.
    Demo,
}

pub(crate) async fn run(args: MockApiArgs) -> anyhow::Result<ExitCode> {
    let mut config = match (&args.config, args.faults) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            serde_json::from_str::<MockConfig>(&text)
                .with_context(|| format!("`{}` is not a mock API config", path.display()))?
        }
        (None, Faults::Demo) => MockConfig::demo(args.records),
        (None, Faults::None) => MockConfig::default(),
    };
    config.port = args.port;
    if args.config.is_none() || args.records != 1000 {
        config.records = args.records;
    }
    if let Some(size) = args.page_size {
        config.page_size = size;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if args.healed {
        config.faults.clear();
        config.malformed_records.clear();
    }
    let records = config.records;
    let faults = config.faults.len();
    let mock = MockApi::start(config).await?;
    // Whoever started us may stop reading (a closed pipe): the server goes on serving.
    let banner = format!(
        "mock API: {} ({records} records, {faults} fault rules)\n\
         \x20 data:  GET /page/items /offset/items /cursor/items /next/items /link/items /ndjson/items, POST /search\n\
         \x20 admin: POST /admin/heal, POST /admin/repair, POST /admin/touch {{\"ids\": [..]}}, GET /admin/requests\n\
         Ctrl-C to stop.",
        mock.base_url()
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{banner}");
        let _ = out.flush();
    }
    tokio::signal::ctrl_c().await?;
    mock.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
