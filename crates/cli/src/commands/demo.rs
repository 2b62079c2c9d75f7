//! `sluice demo`: the quickstart pipeline against the flaky mock API, with every failure
//! class injected, on embedded defaults (no service to install or start).

use anyhow::Context;
use clap::Args;
use sluice_core::ErrorClass;
use sluice_engine::Executor;
use sluice_engine::build::{self, BuildContext};
use sluice_state::RunStatus;
use sluice_testkit::mock_api::{MockApi, MockConfig};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::sync::mpsc;

use super::PipelineFile;
use super::run::{print_summary, run_once, show_progress};

/// The pipeline the demo runs: the repository's `pipelines/quickstart.yaml`.
const QUICKSTART: &str = include_str!("../../../../pipelines/quickstart.yaml");
/// The API address `pipelines/quickstart.yaml` defaults to.
const DEFAULT_API: &str = "http://127.0.0.1:18080";
/// Marks a folder as the demo's, so a second run may empty it.
const MARKER: &str = ".sluice-demo";

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Records the mock API serves.
    #[arg(long, default_value_t = 5000)]
    records: u64,
    /// The demo's folder: its pipeline, state store, buffer and SQLite file. A folder a
    /// previous demo made is emptied first; any other non-empty folder is refused.
    #[arg(long, default_value = "sluice-demo")]
    dir: PathBuf,
    /// The mock API's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 18080)]
    port: u16,
    /// Plain log lines instead of the live display, even on a terminal.
    #[arg(long)]
    plain: bool,
    /// Exit after the run instead of serving the healed mock API until Ctrl-C (the
    /// default when not on a terminal).
    #[arg(long)]
    no_wait: bool,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.records >= 100, "--records must be at least 100");
    let dir = prepare_dir(&args.dir)?;
    let mock = MockApi::start(MockConfig {
        port: args.port,
        ..MockConfig::demo(args.records)
    })
    .await
    .with_context(|| {
        format!(
            "cannot start the mock API on 127.0.0.1:{}; pick another port with --port",
            args.port
        )
    })?;
    let api = mock.base_url().to_owned();
    let pipeline_path = dir.join("quickstart.yaml");
    std::fs::write(&pipeline_path, QUICKSTART.replace(DEFAULT_API, &api))
        .with_context(|| format!("cannot write {}", pipeline_path.display()))?;

    eprintln!(
        "Sluice demo: {} orders from a flaky OAuth2 API ({api}) into SQLite, through the embedded buffer.\n\
         The API will rate-limit (429 with Retry-After), fail with 503s, expire the token mid-run,\n\
         refuse pages that are too large, serve 3 malformed records and retype a field halfway.\n\
         Pipeline: {}\n",
        args.records,
        pipeline_path.display()
    );

    let file = PipelineFile::read(&pipeline_path)?;
    let plan = file.plan()?;
    let ctx = BuildContext {
        base_dir: dir.clone(),
        ..BuildContext::default()
    };
    let store = build::open_state(&plan, &ctx).await?;
    store
        .register_pipeline(&plan.pipeline, &pipeline_path.display().to_string())
        .await?;
    let buffer = build::open_buffer(&plan, &ctx)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let exec = Executor::new(store, buffer).with_events(tx);
    let live = !args.plain && std::io::stderr().is_terminal();
    let printer = tokio::spawn(show_progress(rx, live));
    let summary = run_once(&exec, &plan, &ctx).await?;
    drop(exec);
    let tally = printer.await.unwrap_or_default();
    print_summary(&summary, &plan, std::path::Path::new("quickstart.yaml"));

    eprintln!("\nWhat went wrong, and what Sluice did (default rules, see `sluice classes`):");
    for (class, count) in &tally {
        eprintln!(
            "  {:<18} {count:>3} event(s)  {}",
            class.as_str(),
            handled(*class)
        );
    }
    let rows = count_rows(&dir.join("quickstart.db")).await?;
    let quarantined: i64 = summary.nodes.iter().map(|n| n.quarantined).sum();
    eprintln!(
        "\n{rows} of the API's {} orders are in {} (table `orders`); {quarantined} record(s) wait in the failed-batch store.",
        args.records,
        dir.join("quickstart.db").display()
    );

    // The upstream is fixed: no more faults, and the malformed records are served well.
    mock.heal();
    mock.repair();
    let sluice = sluice_command();
    eprintln!(
        "\nNext, from the demo's folder:\n\
         \x20 cd {}\n\
         \x20 {sluice} runs                          # the run, node by node\n\
         \x20 {sluice} failed list                   # the quarantined records and why\n\
         \x20 {sluice} replay --pipeline quickstart  # reads them again from the (now fixed) API\n\
         \x20 sqlite3 quickstart.db 'SELECT count(*) FROM orders'",
        dir.display()
    );
    let wait = !args.no_wait && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if wait {
        eprintln!(
            "\nThe mock API is fixed and keeps serving at {api} for the replay. Ctrl-C to stop it."
        );
        tokio::signal::ctrl_c().await?;
    } else {
        eprintln!(
            "\nThe replay reads from the API: serve it again, fixed, with\n\
             \x20 {sluice} mock-api --faults demo --healed --records {} --port {} &",
            args.records,
            mock.addr().port()
        );
    }
    mock.shutdown().await;
    Ok(match summary.status {
        RunStatus::Succeeded | RunStatus::PartiallySucceeded => ExitCode::SUCCESS,
        other => super::run::exit_code(other),
    })
}

/// The demo's folder, made (or emptied, if a previous demo made it) and canonical.
fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        let ours = dir.join(MARKER).exists();
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if ours {
            eprintln!(
                "Starting afresh: emptied {} (a previous demo's).",
                dir.display()
            );
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot empty {}", dir.display()))?;
        } else if !empty {
            anyhow::bail!(
                "{} exists and is not a demo folder; pass another with --dir",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "made by `sluice demo`; emptied by the next one\n",
    )?;
    Ok(std::fs::canonicalize(dir)?)
}

/// Rows in the demo's SQLite table.
async fn count_rows(db: &Path) -> anyhow::Result<i64> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders")
        .fetch_one(&mut conn)
        .await?;
    Ok(n)
}

/// How to call this binary in the printed commands: `sluice` when that is on `PATH`.
fn sluice_command() -> String {
    let exe = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("sluice"))
            .find(|p| p.is_file())
    });
    match (exe, on_path) {
        (Some(exe), Some(found))
            if std::fs::canonicalize(&found).ok() == std::fs::canonicalize(&exe).ok() =>
        {
            "sluice".to_owned()
        }
        (Some(exe), _) => exe.display().to_string(),
        (None, _) => "sluice".to_owned(),
    }
}

/// What Sluice does by default with a failure of this class, in the demo's words.
fn handled(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimited => {
            "429 Too Many Requests: waited as Retry-After asked, then slowed down"
        }
        ErrorClass::Dependency => "5xx from the API: retried with backoff and jitter",
        ErrorClass::Auth => "the token expired mid-run: fetched a new one, retried once",
        ErrorClass::PayloadTooLarge => "the API refused a page that large: asked for smaller pages",
        ErrorClass::ContractChanged => {
            "a field changed type: the schema evolved and it was flagged (schema_policy: warn)"
        }
        ErrorClass::InvalidRequest => {
            "malformed records: kept for replay; the rest of their page delivered"
        }
        ErrorClass::Network => "the connection failed or timed out: retried with backoff",
        ErrorClass::Permission => "refused (403): the node fails, it needs a person",
        _ => "see docs/troubleshooting.md",
    }
}
