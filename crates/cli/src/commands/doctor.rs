//! `sluice doctor FILE`: the troubleshooting flow of docs/troubleshooting.md, walked for
//! each link of a pipeline (the work is `sluice_engine::doctor`; this prints it).

use clap::Args;
use sluice_engine::build::BuildContext;
use sluice_engine::doctor::{self, DoctorOptions, DoctorReport, Status};
use std::path::PathBuf;
use std::process::ExitCode;

use super::PipelineFile;

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// The pipeline file to diagnose.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Only this node's links.
    #[arg(long, short = 'n', value_name = "NODE")]
    node: Option<String>,
    /// The run whose failure to explain (default: the latest run); only the links of the
    /// nodes that failed in it.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let file = PipelineFile::read(&args.file)?;
    let plan = file.plan()?;
    if let Some(node) = &args.node
        && !plan.nodes.iter().any(|n| &n.id == node)
    {
        anyhow::bail!(
            "`{}` has no node `{node}` (its nodes: {})",
            file.name,
            plan.nodes
                .iter()
                .map(|n| n.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(run) = &args.run {
        let url =
            sluice_engine::build::resolve_sqlite(plan.state.expose(), std::path::Path::new("."));
        let store = sluice_state::StateStore::open(&url).await?;
        store.run(run).await?;
    }
    let options = DoctorOptions {
        node: args.node.clone(),
        run: args.run.clone(),
    };
    let report = doctor::diagnose(&plan, &BuildContext::default(), &options).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print(&report);
    }
    Ok(if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print(report: &DoctorReport) {
    println!(
        "sluice doctor: pipeline {}{}",
        report.pipeline,
        report
            .run
            .as_deref()
            .map(|r| format!(", symptom from run {r}"))
            .unwrap_or_default()
    );
    let pad = " ".repeat(28);
    for link in &report.links {
        let nodes = if link.nodes.is_empty() {
            String::new()
        } else {
            format!(" (nodes: {})", link.nodes.join(", "))
        };
        let verdict = match link.failed() {
            Some(s) => format!(
                "FAILED at step {} ({}){}",
                s.step.number(),
                s.step,
                s.failure()
                    .map(|e| format!(" [{}]", e.class))
                    .unwrap_or_default()
            ),
            None => "ok".to_owned(),
        };
        println!("\n{} {}{nodes}: {verdict}", link.kind, link.name);
        for s in &link.steps {
            let status = match s.status {
                Status::Failed => "FAILED",
                other => other.as_str(),
            };
            let head = format!(
                "  {} {:<12} {:<11}",
                s.step.number(),
                s.step.as_str(),
                status
            );
            if s.checks.is_empty() {
                println!("{}", head.trim_end());
                continue;
            }
            for (i, c) in s.checks.iter().enumerate() {
                let lead = if i == 0 { head.as_str() } else { pad.as_str() };
                match &c.outcome {
                    Ok(found) => println!("{lead}{}: {found}", c.checked),
                    Err(e) => {
                        println!("{lead}{}: [{}] {}", c.checked, e.class, e.message);
                        if let Some(ev) = &e.evidence {
                            for (j, line) in ev.lines().enumerate() {
                                let label = if j == 0 { "evidence: " } else { "          " };
                                println!("{pad}{label}{line}");
                            }
                        }
                        println!("{pad}remedy:   {}", doctor::remedy(e.class));
                        println!("{pad}see:      {}", doctor::remedy_link(e.class));
                    }
                }
            }
        }
    }
    let failed: Vec<_> = report
        .links
        .iter()
        .filter(|l| l.failed().is_some())
        .collect();
    if failed.is_empty() {
        println!("\nall {} link(s) passed every step", report.links.len());
        if let (Some(run), Some(status)) = (&report.run, &report.run_status)
            && status != "succeeded"
        {
            println!(
                "run {run} ended {status}, but every check passes now: its cause is gone or was transient (`sluice runs show {run}`); `sluice failed list` shows what waits for `sluice replay`"
            );
        }
    } else {
        println!(
            "\n{} of {} link(s) failed: {}",
            failed.len(),
            report.links.len(),
            failed
                .iter()
                .map(|l| {
                    let s = l.failed().expect("filtered on failed");
                    format!(
                        "{} {} at step {} ({}){}",
                        l.kind,
                        l.name,
                        s.step.number(),
                        s.step,
                        s.failure()
                            .map(|e| format!(" [{}]", e.class))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}
