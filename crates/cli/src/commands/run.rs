//! `sluice run FILE`: runs a pipeline now (and on its schedule unless `--once`), with a
//! live progress display and a summary table.

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_config::Plan;
use sluice_config::spec::Schedule;
use sluice_engine::build::{self, BuildContext};
use sluice_engine::{Event, EventKind, Executor, RunSummary};
use sluice_state::{RunStatus, Trigger};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{PipelineFile, owner};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The pipeline file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Run once and exit, even if the pipeline has a cron or realtime schedule.
    #[arg(long)]
    once: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Plain log lines instead of the live display, even on a terminal.
    #[arg(long)]
    plain: bool,
    /// When another process runs this pipeline, wait for it to finish instead of exiting
    /// (exit code 75).
    #[arg(long)]
    wait: bool,
}

/// The exit code of a run: 0 succeeded, 1 failed, 3 partially succeeded (something was
/// quarantined), 4 rate limited (a source parked until its API's quota resets), 130
/// cancelled.
pub(crate) fn exit_code(status: RunStatus) -> ExitCode {
    match status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::PartiallySucceeded => ExitCode::from(3),
        RunStatus::RateLimited => ExitCode::from(4),
        RunStatus::Cancelled => ExitCode::from(130),
        _ => ExitCode::from(1),
    }
}

/// The pause between realtime runs that found data: long enough for a waiting process to
/// take the pipeline (see `owner::take`, which polls every 50 ms).
const HANDOVER_GAP: Duration = Duration::from_millis(200);

/// First SIGINT/SIGTERM: stop gracefully; second: abort.
fn handle_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        eprintln!(
            "sluice: stopping: no new batches are read; batches in flight are finished and committed (press Ctrl-C again to abort)"
        );
        shutdown.cancel();
        // A second signal aborts at once; the next run resumes from checkpoints and the
        // ledgers prevent duplicates.
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("sluice: aborted");
        std::process::exit(130);
    });
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let file = PipelineFile::read(&args.file)?;
    let plan = file.plan()?;
    let ctx = BuildContext::default();
    let store = build::open_state(&plan, &ctx).await?;
    // On a PostgreSQL store the HTTP sources share their rate-limit budgets with every
    // other process reading the same APIs.
    let ctx = ctx.with_rate_budgets(store.rate_budgets());
    let path = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
    store
        .register_pipeline(&plan.pipeline, &path.display().to_string())
        .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    handle_signals(shutdown.clone());
    let live = !args.plain && !args.json && std::io::stderr().is_terminal();
    let printer = tokio::spawn(show_progress(rx, live));
    let scheduled = !args.once && !matches!(plan.schedule, Schedule::Manual);

    let mut last = None;
    // Whether the last run's sources found something new (realtime: then go on at once).
    let mut found = false;
    // A run parked by a rate limit: no run of the pipeline before its resume time.
    let mut parked = store.parked_until(&plan.pipeline).await?;
    if let Some(at) = parked {
        if scheduled {
            eprintln!(
                "sluice: `{}` is parked by a rate limit until {}; the first run waits until then",
                plan.pipeline,
                super::state::time(at)
            );
            if !sleep_until_ms(at, &shutdown).await {
                drop(tx);
                let _ = printer.await;
                return Ok(exit_code(RunStatus::Cancelled));
            }
        } else {
            eprintln!(
                "sluice: note: the last run of `{}` was parked by a rate limit until {}; running now may be rate limited again",
                plan.pipeline,
                super::state::time(at)
            );
        }
    }
    // A run's alerts are delivered off its path (a slow channel does not hold the next
    // run); the process waits for them before it exits.
    let alert_queue = sluice_engine::alerts::AlertQueue::default();
    let outcome = loop {
        // Each run owns the pipeline (its lease, its buffer) and gives it up when done, so
        // that a `sluice replay` or `sluice run --once --wait` gets its turn between runs.
        let owned = match owner::take(&store, &plan, &ctx, args.wait.then_some(&shutdown)).await {
            Ok(Some(owned)) => Some(owned),
            Ok(None) => break Ok(last.unwrap_or(RunStatus::Cancelled)),
            Err(e) if scheduled && owner::is_held(&e) => {
                eprintln!("sluice: this run is skipped: {e:#}");
                None
            }
            Err(e) => break Err(e),
        };
        if let Some(owned) = owned {
            let exec = Executor::new(owned.store.clone(), owned.buffer.clone())
                .with_events(tx.clone())
                .with_shutdown(shutdown.clone())
                .with_alert_queue(alert_queue.clone());
            let result = run_once(&exec, &plan, &ctx).await;
            drop(exec);
            owned.release().await;
            let summary = match result {
                Ok(summary) => summary,
                Err(e) => break Err(e),
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print_summary(&summary, &plan, &args.file);
            }
            last = Some(summary.status);
            parked = summary.resume_at;
            found = summary
                .nodes
                .iter()
                .any(|n| n.role == "source" && n.counts.records_out > 0);
        }
        if !scheduled || shutdown.is_cancelled() {
            break Ok(last.unwrap_or(RunStatus::Cancelled));
        }
        let wait = match &plan.schedule {
            Schedule::Manual => break Ok(last.unwrap_or(RunStatus::Cancelled)),
            Schedule::Cron { cron, timezone, .. } => {
                let tz = timezone.as_ref().map_or(chrono_tz::UTC, |t| t.value.0);
                let next = cron
                    .value
                    .schedule()
                    .upcoming(tz)
                    .next()
                    .context("the cron schedule has no next time")?;
                let wait = (next.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .unwrap_or_default();
                eprintln!(
                    "sluice: next run at {next} (in {}s); Ctrl-C to stop",
                    wait.as_secs()
                );
                wait
            }
            // Back to back while there is data; `poll_interval` only once a run found
            // nothing new. The short gap lets a process waiting for the pipeline
            // (`replay --wait`, which polls faster) take its turn.
            Schedule::Realtime(r) if found && last == Some(RunStatus::Succeeded) => {
                r.poll_interval.value.get().min(HANDOVER_GAP)
            }
            Schedule::Realtime(r) => r.poll_interval.value.get(),
        };
        // A parked run's API is not asked again before its quota resets.
        let wait = match parked.take() {
            Some(at) => {
                let until =
                    Duration::from_millis(u64::try_from(at - sluice_state::now_ms()).unwrap_or(0));
                if until > wait {
                    eprintln!(
                        "sluice: parked by a rate limit: the next run waits until {}",
                        super::state::time(at)
                    );
                }
                wait.max(until)
            }
            None => wait,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break Ok(last.unwrap_or(RunStatus::Cancelled)),
        }
    };
    alert_queue.finish().await;
    drop(tx);
    let _ = printer.await;
    Ok(exit_code(outcome?))
}

/// Sleeps until `at` (milliseconds since the epoch); `false` if stopped before.
async fn sleep_until_ms(at: i64, shutdown: &CancellationToken) -> bool {
    let wait = Duration::from_millis(u64::try_from(at - sluice_state::now_ms()).unwrap_or(0));
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = shutdown.cancelled() => false,
    }
}

pub(crate) async fn run_once(
    exec: &Executor,
    plan: &Plan,
    ctx: &BuildContext,
) -> anyhow::Result<RunSummary> {
    let trigger = match plan.schedule {
        Schedule::Manual => Trigger::Manual,
        Schedule::Cron { .. } => Trigger::Cron,
        Schedule::Realtime(_) => Trigger::Realtime,
    };
    let pipeline = build::build_pipeline(plan, ctx).await?;
    Ok(exec.run(pipeline, trigger).await?)
}

pub(crate) fn print_summary(summary: &RunSummary, plan: &Plan, file: &std::path::Path) {
    eprintln!();
    eprintln!(
        "{:<16} {:<9} {:<20} {:>10} {:>10} {:>8} {:>8} {:>11} {:>10}",
        "NODE", "ROLE", "STATUS", "IN", "OUT", "BATCHES", "RETRIES", "QUARANTINED", "DUPLICATES"
    );
    for n in &summary.nodes {
        eprintln!(
            "{:<16} {:<9} {:<20} {:>10} {:>10} {:>8} {:>8} {:>11} {:>10}",
            n.id,
            n.role,
            n.status.as_str(),
            n.counts.records_in,
            n.counts.records_out,
            n.counts.batches,
            n.counts.retries,
            n.counts.quarantined,
            n.counts.duplicates
        );
        if let Some(e) = &n.error {
            eprintln!("  error: {e}");
        }
    }
    eprintln!(
        "\nrun {} of `{}`: {} in {:.1}s",
        summary.run_id,
        plan.pipeline,
        summary.status,
        summary.elapsed.as_secs_f64()
    );
    // `-f FILE` points the commands at the state store this pipeline uses, wherever its
    // `state:` says it is.
    let f = shell_word(&file.display().to_string());
    if let Some(at) = summary.resume_at {
        eprintln!(
            "  parked until {} (the API's quota resets then): checkpoints are kept; the next run after that time goes on where this one stopped",
            super::state::time(at)
        );
    }
    eprintln!("  details:  sluice runs show {} -f {f}", summary.run_id);
    if summary.nodes.iter().any(|n| n.counts.quarantined > 0) {
        eprintln!(
            "  kept for replay:  sluice failed list --pipeline {} -f {f}",
            plan.pipeline
        );
        eprintln!(
            "  once the cause is fixed:  sluice replay --pipeline {} -f {f}",
            plan.pipeline
        );
    }
}

/// A path as one shell word (quoted when it needs to be).
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':'))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[derive(Default)]
struct Live {
    records: usize,
    batches: usize,
    retries: usize,
    quarantined: usize,
    started: Option<Instant>,
    last: String,
}

impl Live {
    fn line(&self, node: &str) -> String {
        let rate = self
            .started
            .map(|s| self.records as f64 / s.elapsed().as_secs_f64().max(0.001))
            .unwrap_or(0.0);
        format!(
            "{node:<16} {:>10} rec {:>6} batches {:>9.0} rec/s  retries {:<4} quarantined {:<6} {}",
            self.records, self.batches, rate, self.retries, self.quarantined, self.last
        )
    }
}

/// The class of a failure an event tells was handled (or not), if any.
fn event_class(kind: &EventKind) -> Option<sluice_core::ErrorClass> {
    match kind {
        EventKind::Retried { class, .. }
        | EventKind::Split { class, .. }
        | EventKind::Quarantined { class, .. }
        | EventKind::Skipped { class, .. }
        | EventKind::LinkWentDown { class, .. }
        | EventKind::Paused { class, .. }
        | EventKind::Connector {
            class: Some(class), ..
        } => Some(*class),
        _ => None,
    }
}

/// Events seen per error class, by [`show_progress`].
pub(crate) type ClassTally = std::collections::BTreeMap<sluice_core::ErrorClass, usize>;

/// Shows events: a live line per node on a terminal (each handled failure printed above
/// the lines as it happens), plain log lines otherwise. Returns how many events of each
/// error class it saw.
pub(crate) async fn show_progress(
    mut rx: mpsc::UnboundedReceiver<Event>,
    live: bool,
) -> ClassTally {
    let mut tally = ClassTally::new();
    let multi = MultiProgress::with_draw_target(if live {
        ProgressDrawTarget::stderr_with_hz(8)
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{spinner} {wide_msg}").expect("a valid template");
    let mut bars: HashMap<String, (ProgressBar, Live)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => break },
            _ = tick.tick() => {
                for (node, (bar, state)) in &bars {
                    bar.set_message(state.line(node));
                }
                continue;
            }
        };
        let (bar, state) = bars.entry(event.node.clone()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
            bar.enable_steady_tick(Duration::from_millis(120));
            (bar, Live::default())
        });
        state.started.get_or_insert_with(Instant::now);
        let class = event_class(&event.kind);
        if let Some(class) = class {
            *tally.entry(class).or_default() += 1;
        }
        match &event.kind {
            EventKind::BatchRead { rows } | EventKind::BatchWritten { rows } => {
                state.records += rows;
                state.batches += 1;
            }
            EventKind::Retried { .. } => state.retries += 1,
            // A retry inside the connector.
            EventKind::Connector { retry: true, .. } => state.retries += 1,
            EventKind::Quarantined { rows, .. } => state.quarantined += rows,
            _ => {}
        }
        if let Some(text) = event.kind.describe() {
            if live {
                if class.is_some()
                    || matches!(
                        event.kind,
                        EventKind::Compensated { .. }
                            | EventKind::LinkCameBack { .. }
                            | EventKind::Resumed { .. }
                    )
                {
                    let _ = multi.println(format!(
                        "{} {:<16} {text}",
                        chrono::Local::now().format("%H:%M:%S"),
                        event.node
                    ));
                }
                state.last = text.chars().take(90).collect();
                if let EventKind::NodeFinished { .. } = event.kind {
                    bar.finish_with_message(state.line(&event.node));
                    continue;
                }
            } else {
                eprintln!(
                    "{} {:<16} {text}",
                    chrono::Local::now().format("%H:%M:%S"),
                    event.node
                );
            }
        }
        bar.set_message(state.line(&event.node));
    }
    for (bar, _) in bars.values() {
        bar.finish();
    }
    tally
}
