//! The `sluice` binary: argument parsing, wiring and printing. The work is done in the
//! library crates; this file only connects them to the command line.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Sluice moves data from HTTP APIs, databases and files into databases, through a durable
/// buffer, classifying every failure and losing nothing.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the error classes and what Sluice does with each by default.
    Classes,
    /// Check pipeline files: exit 0 when valid, 1 when not (every problem is printed at
    /// its line and column).
    Validate(commands::validate::ValidateArgs),
    /// Show a pipeline's execution plan: nodes in order, edges and their buffer topics,
    /// each node's effective retry and error policy.
    Plan(commands::plan::PlanArgs),
    /// Print the JSON Schema of pipeline files (for editors), or the field reference.
    Schema(commands::schema::SchemaArgs),
    /// Run a pipeline now (then on its schedule, unless --once). Exit code: 0 succeeded,
    /// 1 failed, 3 partially succeeded (records kept for replay), 4 rate limited (parked
    /// until the API's quota resets), 75 another process runs the pipeline, 130 stopped by
    /// a signal, 2 a usage error.
    Run(commands::run::RunArgs),
    /// List runs, or show one with its nodes and failed attempts.
    Runs(commands::state::RunsArgs),
    /// The failed-batch store: list, show or drop the batches kept for replay.
    Failed(commands::state::FailedArgs),
    /// Re-deliver failed batches from the node where they failed, once the cause is fixed.
    /// Idempotent: running it twice writes nothing twice.
    Replay(commands::replay::ReplayArgs),
    /// Run the quickstart against the flaky mock API with every failure class injected:
    /// no service needed. Shows what Sluice does with each failure.
    Demo(commands::demo::DemoArgs),
    /// Check every link of a pipeline (APIs with their auth, databases, the buffer, the
    /// state store), once or with --watch; broken links raise alerts. Exit 1 if one is down.
    Health(commands::health::HealthArgs),
    /// Walk the troubleshooting flow for each link of a pipeline (symptom, network, auth,
    /// parameters, dependencies, logic, upstream change), naming the cause with its class,
    /// evidence and remedy. Exit 1 if a step fails.
    Doctor(commands::doctor::DoctorArgs),
    /// Compare what each source holds with what its sinks hold: counts, key ranges
    /// checksummed, missing and extra keys, and whether each missing one waits in the
    /// failed-batch store. Exit 1 if they differ.
    Reconcile(commands::reconcile::ReconcileArgs),
    /// List the alerts: failed runs, broken links, recoveries.
    Alerts(commands::health::AlertsArgs),
    /// Run every pipeline of a folder on its schedule (cron with catch-up, realtime,
    /// manual), with a JSON API, Prometheus metrics and hot reload. SIGTERM stops it.
    Serve(commands::serve::ServeArgs),
    /// Serve the flaky mock API (the stand-in for third-party APIs) on 127.0.0.1.
    MockApi(commands::mock_api::MockApiArgs),
}

/// `sluice runs | head`: once the reader has gone, stop quietly, as a program killed by
/// SIGPIPE would (exit 141), instead of panicking on the next line printed.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    // `sluice serve` is a service: its log is its output (what ran, what was skipped).
    let default_log = match cli.command {
        Command::Serve(_) => "warn,sluice_server=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if commands::owner::is_held(&err) {
                ExitCode::from(commands::owner::EXIT_HELD)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Classes => {
            for class in sluice_core::ErrorClass::ALL {
                println!("{:<18} {}", class.as_str(), class.default_disposition());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => commands::validate::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Schema(args) => commands::schema::run(args),
        Command::Run(args) => runtime()?.block_on(commands::run::run(args)),
        Command::Runs(args) => runtime()?.block_on(commands::state::runs(args)),
        Command::Failed(args) => runtime()?.block_on(commands::state::failed(args)),
        Command::Replay(args) => runtime()?.block_on(commands::replay::run(args)),
        Command::Health(args) => runtime()?.block_on(commands::health::run(args)),
        Command::Alerts(args) => runtime()?.block_on(commands::health::alerts(args)),
        Command::Doctor(args) => runtime()?.block_on(commands::doctor::run(args)),
        Command::Reconcile(args) => runtime()?.block_on(commands::reconcile::run(args)),
        Command::Demo(args) => runtime()?.block_on(commands::demo::run(args)),
        Command::Serve(args) => runtime()?.block_on(commands::serve::run(args)),
        Command::MockApi(args) => runtime()?.block_on(commands::mock_api::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
