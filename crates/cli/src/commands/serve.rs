//! `sluice serve`: every pipeline of a folder on its schedule, with the JSON API and
//! Prometheus metrics (the service is `sluice_server`; this is its command line).

use anyhow::Context;
use clap::Args;
use sluice_server::{ServeOptions, Server};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Folders of pipeline files (their `*.yaml` and `*.yml`) and pipeline files.
    #[arg(value_name = "DIR|FILE", default_value = ".")]
    paths: Vec<PathBuf>,
    /// Where the API listens. Anything but a loopback address needs a token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// The state store of every pipeline, in place of each one's `state:`.
    #[arg(long, value_name = "URL")]
    state: Option<String>,
    /// A file holding the API token that mutating endpoints require (`Authorization:
    /// Bearer TOKEN`). Else `SLUICE_API_TOKEN`.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// On SIGTERM or Ctrl-C, how long runs in flight may go on before they are stopped
    /// (gracefully: batches in hand are committed). A second signal stops at once.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    stop_timeout: String,
    /// Do not watch the files for changes (no hot reload).
    #[arg(long)]
    no_watch: bool,
    /// Check every link of every pipeline this often (`sluice_link_up` in /metrics);
    /// `off`: only on `GET /health`.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    health_interval: String,
    /// The service's default alert channels: a YAML file with one `alerts:` section, as
    /// in a pipeline (channels, routes by class and severity, `repeat_every`). Used for
    /// the pipelines whose `alerts:` has no channels, and for pipeline files that do not
    /// validate.
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
}

/// Reads and validates `--alerts FILE`.
fn default_alerts(file: &std::path::Path) -> anyhow::Result<sluice_config::spec::AlertsSpec> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the alert file `{name}`"))?;
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    let env = sluice_config::Env::capture(&text, dir);
    match sluice_config::validate_alerts(&text, &env) {
        Ok((alerts, warnings)) => {
            if !warnings.is_empty() {
                eprint!("{}", sluice_config::diag::render(&name, &text, &warnings));
            }
            Ok(alerts)
        }
        Err(invalid) => anyhow::bail!(
            "the alert file `{name}` is invalid:\n{}",
            sluice_config::diag::render(&name, &text, invalid.diagnostics()).trim_end()
        ),
    }
}

/// The token: `--token-file`, else `SLUICE_API_TOKEN`; never printed.
fn token(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    let text = match &args.token_file {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file `{}`", file.display()))?,
        None => std::env::var("SLUICE_API_TOKEN").unwrap_or_default(),
    };
    let token = text.trim().to_owned();
    if token.is_empty() {
        if let Some(file) = &args.token_file {
            anyhow::bail!("the token file `{}` is empty", file.display());
        }
        return Ok(None);
    }
    Ok(Some(token))
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let stop_timeout: sluice_config::values::Duration = args
        .stop_timeout
        .parse()
        .map_err(|e| anyhow::anyhow!("--stop-timeout {}: {e}", args.stop_timeout))?;
    let mut opts = ServeOptions::new(args.paths.clone());
    opts.listen = args.listen;
    opts.state = args.state.clone().or_else(|| {
        std::env::var("SLUICE_STATE")
            .ok()
            .filter(|s| !s.trim().is_empty())
    });
    opts.token = token(&args)?;
    opts.stop_timeout = stop_timeout.get();
    opts.lease_ttl = super::owner::lease_ttl()?;
    opts.watch = !args.no_watch;
    opts.health_interval = match args.health_interval.trim() {
        "off" | "0" | "0s" => None,
        text => Some(
            text.parse::<sluice_config::values::Duration>()
                .map_err(|e| anyhow::anyhow!("--health-interval {text}: {e}"))?
                .get(),
        ),
    };
    opts.alerts = match &args.alerts {
        Some(file) => Some(default_alerts(file)?),
        None => None,
    };
    for path in &opts.paths {
        anyhow::ensure!(
            path.exists(),
            "`{}` does not exist: give folders of pipeline files, or pipeline files",
            path.display()
        );
    }
    let server = Server::start(opts).await?;
    // The address on stdout (a `--listen 127.0.0.1:0` picks a free port): for scripts.
    println!("listening on http://{}", server.local_addr());
    let _ = std::io::stdout().flush();
    let stop = CancellationToken::new();
    handle_signals(stop.clone());
    server.run(stop).await?;
    Ok(ExitCode::SUCCESS)
}

/// First SIGINT/SIGTERM: stop (no new runs; runs in flight finish within the stop
/// timeout, their leases released); second: exit at once (checkpoints and ledgers keep
/// that safe; PostgreSQL leases expire).
fn handle_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot catch SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    stop.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!(
            "sluice serve: stopping: no new runs; runs in flight finish (send the signal again to stop at once)"
        );
        stop.cancel();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("sluice serve: stopped at once (the next runs resume from the checkpoints)");
        std::process::exit(130);
    });
}
