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
/// Marks a folder as the demo's and lists what the demo made in it: the next demo
/// removes those entries, and nothing else.
const MARKER: &str = ".sluice-demo";
/// The first line of the marker; the entries the demo made follow, one name a line.
const MARKER_HEADER: &str =
    "made by `sluice demo`; the next demo removes the entries listed below, and nothing else";
/// What a demo makes in its folder (the pipeline, its SQLite file, the state store and the
/// buffer), listed in the marker from the start so that a demo cut short is cleaned too.
const MADE: &[&str] = &[
    "quickstart.yaml",
    "quickstart.db",
    "quickstart.db-wal",
    "quickstart.db-shm",
    "quickstart.db-journal",
    ".sluice",
];

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Records the mock API serves.
    #[arg(long, default_value_t = 5000)]
    records: u64,
    /// The demo's folder: its pipeline, state store, buffer and SQLite file. In a folder a
    /// previous demo made, what that demo made is removed first (and nothing else); any
    /// other non-empty folder is refused.
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
    let (dir, before) = prepare_dir(&args.dir)?;
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
    let ctx = BuildContext::new(dir.clone());
    let store = build::open_state(&plan, &ctx).await?;
    store
        .register_pipeline(&plan.pipeline, &pipeline_path.display().to_string())
        .await?;
    let buffer = build::open_buffer(&plan, &ctx)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let exec = Executor::new(store, buffer).with_events(tx);
    let live = !args.plain && std::io::stderr().is_terminal();
    let printer = tokio::spawn(show_progress(rx, live));
    let summary = run_once(&exec, &plan, &ctx).await;
    drop(exec);
    // Whatever the run made beside the known entries is the demo's too.
    write_marker(&dir, &made_since(&dir, &before))?;
    let summary = summary?;
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
    let quarantined: i64 = summary.nodes.iter().map(|n| n.counts.quarantined).sum();
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

/// The demo's folder, made (or cleared of what a previous demo made there) and canonical,
/// with the entries it held that are not the demo's (kept untouched).
fn prepare_dir(dir: &Path) -> anyhow::Result<(PathBuf, Vec<String>)> {
    if dir.exists() {
        let marker = dir.join(MARKER);
        let names = entries(dir)?;
        if marker.exists() {
            let listed = std::fs::read_to_string(&marker)
                .with_context(|| format!("cannot read {}", marker.display()))?;
            let made = made_by_demo(&listed);
            let mut removed = 0;
            for name in &made {
                let path = dir.join(name);
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .with_context(|| format!("cannot remove {}", path.display()))?;
                removed += 1;
            }
            let kept = names
                .iter()
                .filter(|n| n.as_str() != MARKER && !made.contains(n))
                .count();
            eprintln!(
                "Starting afresh: removed the {removed} entries a previous demo made in {}{}.",
                dir.display(),
                if kept > 0 {
                    format!(" (kept the {kept} others, which it did not make)")
                } else {
                    String::new()
                }
            );
        } else if !names.is_empty() {
            anyhow::bail!(
                "{} is not empty and is not a demo's folder (it has no {MARKER}): the demo writes only into an empty folder or one an earlier demo made; pass another with --dir",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let before: Vec<String> = entries(dir)?.into_iter().filter(|n| n != MARKER).collect();
    let made: Vec<String> = MADE
        .iter()
        .map(|n| (*n).to_owned())
        .filter(|n| !before.contains(n))
        .collect();
    write_marker(dir, &made)?;
    Ok((std::fs::canonicalize(dir)?, before))
}

/// The names in a folder.
fn entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The entries a marker lists: plain names in the folder only (never a path that leads
/// elsewhere). A marker of an older demo lists none: it made the known entries.
fn made_by_demo(marker: &str) -> Vec<String> {
    let listed: Vec<String> = marker
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|n| {
            !n.is_empty() && *n != "." && *n != ".." && *n != MARKER && !n.contains(['/', '\\'])
        })
        .map(str::to_owned)
        .collect();
    if listed.is_empty() {
        MADE.iter().map(|n| (*n).to_owned()).collect()
    } else {
        listed
    }
}

/// The known entries plus whatever appeared in the folder since `before` was taken.
fn made_since(dir: &Path, before: &[String]) -> Vec<String> {
    let mut made: Vec<String> = MADE
        .iter()
        .map(|n| (*n).to_owned())
        .filter(|n| !before.contains(n))
        .collect();
    for name in entries(dir).unwrap_or_default() {
        if name != MARKER && !before.contains(&name) && !made.contains(&name) {
            made.push(name);
        }
    }
    made
}

fn write_marker(dir: &Path, made: &[String]) -> anyhow::Result<()> {
    let mut text = format!("{MARKER_HEADER}\n");
    for name in made {
        text.push_str(name);
        text.push('\n');
    }
    let path = dir.join(MARKER);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
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
