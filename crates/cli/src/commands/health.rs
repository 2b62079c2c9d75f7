//! `sluice health FILE`: checks every link of a pipeline (APIs, databases, the buffer, the
//! state store), once or continuously, and raises alerts on broken ones; `sluice alerts`
//! lists them.

use clap::Args;
use sluice_config::Plan;
use sluice_engine::alerts;
use sluice_engine::build::{self, BuildContext};
use sluice_engine::health::{LinkCheck, check_links};
use sluice_state::{AlertKind, AlertRow, StateStore, now_ms};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use super::PipelineFile;
use super::state::{StateArgs, time};

#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// The pipeline file whose links to check.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Check again at this interval (`30s`, `5m`) until Ctrl-C, printing and alerting
    /// only when a link goes down or comes back.
    #[arg(long, value_name = "INTERVAL")]
    watch: Option<String>,
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AlertsArgs {
    /// Only this pipeline's alerts.
    #[arg(long, short = 'p')]
    pipeline: Option<String>,
    /// How many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    #[command(flatten)]
    state: StateArgs,
}

pub(crate) async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let every = match &args.watch {
        Some(text) => Some(
            sluice_config::values::Duration::from_str(text)
                .map_err(|e| anyhow::anyhow!("--watch {text}: {e}"))?
                .get(),
        ),
        None => None,
    };
    let file = PipelineFile::read(&args.file)?;
    let plan = file.plan()?;
    let ctx = BuildContext::default();
    let store = StateStore::open(&build::resolve_sqlite(plan.state.expose(), &ctx.base_dir))
        .await
        .ok();
    let Some(every) = every else {
        let checks = check_links(&plan, &ctx).await;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&json(&checks))?);
        } else {
            print_table(&checks);
        }
        let mut down_since = HashMap::new();
        report(store.as_ref(), &plan, &args.file, &checks, &mut down_since).await;
        let late = freshness(store.as_ref(), &plan, &args.file).await;
        if let Some(late) = late.filter(|_| !args.json) {
            println!("\nLATE: {late}");
        }
        return Ok(if checks.iter().all(LinkCheck::is_up) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    };
    // Watching: a line when a link changes state; alerts for every check, which the state
    // store holds back while the same condition was alerted within `repeat_every`.
    let mut down_since: HashMap<String, i64> = HashMap::new();
    let mut first = true;
    let mut late = false;
    loop {
        let checks = check_links(&plan, &ctx).await;
        if first {
            print_table(&checks);
        } else {
            for c in &checks {
                match (&c.result, down_since.get(&key(c)).copied()) {
                    (Err(_), None) => println!("{} DOWN  {}", stamp(), line(c)),
                    (Ok(_), Some(since)) => println!(
                        "{} UP    {} (after {}s down)",
                        stamp(),
                        line(c),
                        (now_ms() - since) / 1000
                    ),
                    _ => {}
                }
            }
        }
        report(store.as_ref(), &plan, &args.file, &checks, &mut down_since).await;
        // A line when the pipeline turns late or fresh again.
        match (freshness(store.as_ref(), &plan, &args.file).await, late) {
            (Some(why), false) => {
                println!("{} LATE  {why}", stamp());
                late = true;
            }
            (None, true) => {
                println!(
                    "{} FRESH the pipeline succeeded within its freshness bound",
                    stamp()
                );
                late = false;
            }
            _ => {}
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn key(c: &LinkCheck) -> String {
    sluice_engine::gate::link_key(c.kind, &c.link)
}

/// Raises an alert for each link down and clears those that answer again (see
/// [`sluice_engine::health::report_links`]); `down_since` keeps this process's view, for
/// its printed lines.
async fn report(
    store: Option<&StateStore>,
    plan: &Plan,
    file: &Path,
    checks: &[LinkCheck],
    down_since: &mut HashMap<String, i64>,
) {
    let next = format!("sluice health {}", file.display());
    sluice_engine::health::report_links(
        store,
        &plan.pipeline,
        &plan.alerts,
        &next,
        checks,
        down_since,
    )
    .await;
}

/// The pipeline's `freshness:` bound, checked against its last successful run: the text
/// of the `stale` alert, if it is late.
async fn freshness(store: Option<&StateStore>, plan: &Plan, file: &Path) -> Option<String> {
    let (bound, store) = (plan.freshness?, store?);
    let next = format!("sluice runs -f {}", file.display());
    alerts::check_freshness(&plan.alerts, &plan.pipeline, bound.get(), &next, store).await
}

pub(crate) async fn alerts(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let store = args.state.open().await?;
    let alerts: Vec<(String, AlertRow)> = store
        .alerts_with_ids(args.limit.max(1) * 4)
        .await?
        .into_iter()
        .filter(|(_, a)| args.pipeline.as_ref().is_none_or(|p| *p == a.pipeline))
        .take(args.limit.max(1) as usize)
        .collect();
    if alerts.is_empty() {
        println!("no alerts");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<19}  {:<8}  {:<16} {:<14} {:<18} MESSAGE",
        "AT", "SEVERITY", "PIPELINE", "NODE", "CLASS"
    );
    for (id, a) in alerts {
        // The CLASS column names a down link's error class, and otherwise the alert's kind.
        let class = match (a.kind, a.class) {
            (AlertKind::LinkDown, Some(class)) => class.as_str(),
            (kind, _) => kind.as_str(),
        };
        println!(
            "{:<19}  {:<8}  {:<16} {:<14} {:<18} {}",
            time(a.at),
            a.severity.as_str(),
            a.pipeline,
            a.node.as_deref().unwrap_or("-"),
            class,
            a.message
        );
        // Where it went: one line per channel of the pipeline's `alerts:`.
        for d in store.deliveries(&id).await? {
            let attempts = if d.attempts == 1 {
                String::new()
            } else {
                format!(" after {} attempts", d.attempts)
            };
            match &d.error {
                Some(error) => println!(
                    "{:<21}-> {}: {}{attempts}: {error}",
                    "", d.channel, d.status
                ),
                None => println!("{:<21}-> {}: {}{attempts}", "", d.channel, d.status),
            }
        }
        let held = store.suppressed(&id).await?;
        if held > 0 {
            println!(
                "{:<21}-> suppressed: {held} repeat(s) while the condition held (reminders every `repeat_every`)",
                ""
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stamp() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn line(c: &LinkCheck) -> String {
    let nodes = if c.nodes.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.nodes.join(", "))
    };
    match &c.result {
        Ok(took) => format!("{} {}{nodes}: {} ms", c.kind, c.link, took.as_millis()),
        Err(e) => format!("{} {}{nodes}: {e}", c.kind, c.link),
    }
}

fn print_table(checks: &[LinkCheck]) {
    println!(
        "{:<9} {:<48} {:<20} {:<6} {:>9}",
        "LINK", "ADDRESS", "NODES", "STATUS", "LATENCY"
    );
    for c in checks {
        let (status, latency) = match &c.result {
            Ok(took) => ("up", format!("{} ms", took.as_millis())),
            Err(_) => ("DOWN", "-".to_owned()),
        };
        println!(
            "{:<9} {:<48} {:<20} {:<6} {:>9}",
            c.kind,
            c.link,
            c.nodes.join(","),
            status,
            latency
        );
        if let Err(e) = &c.result {
            println!("          {e}");
        }
    }
    let down = checks.iter().filter(|c| !c.is_up()).count();
    if down > 0 {
        println!(
            "\n{down} link(s) down. What to check for each class: docs/troubleshooting.md; alerts: `sluice alerts`"
        );
    }
}

fn json(checks: &[LinkCheck]) -> serde_json::Value {
    serde_json::Value::Array(
        checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "kind": c.kind.as_str(),
                    "link": c.link,
                    "nodes": c.nodes,
                    "up": c.is_up(),
                    "latency_ms": c.result.as_ref().ok().map(|d| d.as_millis() as u64),
                    "class": c.result.as_ref().err().map(|e| e.class.as_str()),
                    "error": c.result.as_ref().err().map(|e| e.message.clone()),
                })
            })
            .collect(),
    )
}
