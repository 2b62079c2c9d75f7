//! The pages and the forms that change things.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_config::spec::nodes::Role;
use sluice_state::{FailedBatchFilter, FailedBatchRow, RunRow, RunStatus, StateError, now_ms};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::oneshot;

use super::dag::{self, NodeState};
use super::html::{Viewer, badge, esc, page, took, url_part, when};
use super::{Form, Refused, Web, WebState, html_response};
use crate::service::{Outcome, Request, Slot, describe_schedule};

/// Runs drawn in a pipeline's sparkline.
const SPARK_RUNS: i64 = 20;
/// Runs listed on a page.
const RUNS_PAGE: i64 = 50;
/// Failed batches listed on a page.
const FAILED_PAGE: usize = 200;
/// Records of a failed batch shown.
const RECORDS_SHOWN: usize = 200;
/// Alerts listed.
const ALERTS_SHOWN: i64 = 50;

fn ok_page(
    viewer: (Viewer, Option<HeaderValue>),
    title: &str,
    refresh: Option<u32>,
    body: &str,
) -> Response {
    let (viewer, cookie) = viewer;
    let mut r = html_response(StatusCode::OK, page(title, &viewer, refresh, body));
    if let Some(c) = cookie {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

fn error_page(web: &Web, headers: &HeaderMap, status: StatusCode, message: &str) -> Response {
    let (viewer, _) = web.viewer(headers);
    html_response(
        status,
        page(
            status.canonical_reason().unwrap_or("Error"),
            &viewer,
            None,
            &format!(r#"<p class="error">{}</p>"#, esc(message)),
        ),
    )
}

fn state_error(web: &Web, headers: &HeaderMap, e: StateError) -> Response {
    let status = match e {
        StateError::NotFound { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error_page(web, headers, status, &e.to_string())
}

fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
        )],
    )
        .into_response()
}

fn refused(web: &Web, headers: &HeaderMap, r: Refused) -> Response {
    error_page(web, headers, r.0, &r.1)
}

fn duration_of(run: &RunRow) -> Option<i64> {
    run.finished_at.map(|f| f - run.started_at)
}

/// The records a run delivered: what its sinks wrote (what its sources read, without sinks).
fn records_of(slot: &Slot, nodes: &[sluice_state::NodeRunRow]) -> i64 {
    let plan = slot.current().plan.clone();
    let role = |id: &str| plan.nodes.iter().find(|n| n.id == id).map(|n| n.role);
    let sinks: i64 = nodes
        .iter()
        .filter(|n| role(&n.node) == Some(Role::Sink))
        .map(|n| n.counts.records_out)
        .sum();
    if sinks > 0 {
        return sinks;
    }
    nodes
        .iter()
        .filter(|n| role(&n.node) == Some(Role::Source))
        .map(|n| n.counts.records_out)
        .sum()
}

fn links_cell(web: &Web, name: &str) -> String {
    match web.svc.links.read().expect("links").get(name) {
        None => r#"<span class="muted">not checked yet</span>"#.to_owned(),
        Some((_, links)) => {
            let up = links.iter().filter(|l| l["up"] == true).count();
            let down = links.len() - up;
            if down == 0 {
                format!(r#"<span class="badge st-succeeded">{up} up</span>"#)
            } else {
                format!(
                    r#"<span class="badge st-failed">{down} down</span> <span class="muted">{up} up</span>"#
                )
            }
        }
    }
}

pub(super) async fn pipelines(State(web): WebState, headers: HeaderMap) -> Response {
    let mut rows = String::new();
    let mut any_running = false;
    for slot in web.svc.all_slots() {
        let plan = slot.current().plan.clone();
        let recent = slot
            .store
            .runs(Some(&slot.name), SPARK_RUNS)
            .await
            .unwrap_or_default();
        let mut points = Vec::new();
        let mut last_records = None;
        for (i, r) in recent.iter().enumerate().rev() {
            let Some(ms) = duration_of(r) else { continue };
            let records = match slot.store.run(&r.id).await {
                Ok((_, nodes, _)) => records_of(&slot, &nodes),
                Err(_) => 0,
            };
            if i == 0 {
                last_records = Some(records);
            }
            points.push((records, ms));
        }
        let running = slot.running.lock().expect("slot").clone();
        any_running |= running.is_some();
        let last = match recent.first() {
            Some(r) => format!(
                r#"<a href="/ui/runs/{}">{}</a> {} <span class="muted">{}</span>{}"#,
                esc(&url_part(&r.id)),
                esc(&when(Some(r.started_at))),
                badge(r.status.as_str()),
                duration_of(r).map_or_else(|| "running".to_owned(), took),
                last_records.map_or_else(String::new, |n| format!(
                    r#" · <span class="num">{n}</span> records"#
                )),
            ),
            None => r#"<span class="muted">never</span>"#.to_owned(),
        };
        let next = match &running {
            Some(r) => format!("{} since {}", badge("running"), esc(&when(Some(r.since)))),
            None => esc(&when(*slot.next_run.lock().expect("slot"))),
        };
        let description = plan.description.as_deref().map_or_else(String::new, |d| {
            format!(r#"<div class="muted">{}</div>"#, esc(d))
        });
        rows.push_str(&format!(
            r#"<tr data-pipeline="{name}"><td><a class="strong" href="/ui/pipelines/{href}">{name}</a>{description}</td><td>{schedule}</td><td>{next}</td><td>{last}</td><td>{links}</td><td>{spark}</td></tr>
"#,
            name = esc(&slot.name),
            href = esc(&url_part(&slot.name)),
            schedule = esc(&describe_schedule(&plan.schedule)),
            links = links_cell(&web, &slot.name),
            spark = dag::sparkline(&points),
        ));
    }
    let invalid: String = web
        .svc
        .invalid
        .read()
        .expect("invalid")
        .iter()
        .map(|(file, error)| {
            format!(
                "<li><code>{}</code><pre>{}</pre></li>",
                esc(&file.display().to_string()),
                esc(error)
            )
        })
        .collect();
    let invalid = if invalid.is_empty() {
        String::new()
    } else {
        format!(r#"<h2>Files that do not validate</h2><ul class="invalid">{invalid}</ul>"#)
    };
    let body = format!(
        r#"<table class="list"><thead><tr><th>pipeline</th><th>schedule</th><th>next run</th><th>last run</th><th>links</th><th>recent runs</th></tr></thead><tbody>
{rows}</tbody></table>{invalid}"#
    );
    ok_page(
        web.viewer(&headers),
        "Pipelines",
        any_running.then_some(3),
        &body,
    )
}

pub(super) async fn pipeline(
    State(web): WebState,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(slot) = web.svc.slot(&name) else {
        return error_page(
            &web,
            &headers,
            StatusCode::NOT_FOUND,
            &format!("no pipeline `{name}` is served"),
        );
    };
    let viewer = web.viewer(&headers);
    let plan = slot.current().plan.clone();
    let recent = match slot.store.runs(Some(&name), RUNS_PAGE).await {
        Ok(r) => r,
        Err(e) => return state_error(&web, &headers, e),
    };
    let shown = recent.first().cloned();
    let (nodes, attempts) = match &shown {
        Some(r) => match slot.store.run(&r.id).await {
            Ok((_, n, a)) => (n, a),
            Err(e) => return state_error(&web, &headers, e),
        },
        None => (Vec::new(), Vec::new()),
    };
    let mut states: BTreeMap<String, NodeState<'_>> = BTreeMap::new();
    for n in &nodes {
        states.entry(n.node.clone()).or_default().row = Some(n);
    }
    for a in &attempts {
        *states
            .entry(a.node.clone())
            .or_default()
            .retries
            .entry(a.class.as_str().to_owned())
            .or_default() += 1;
    }
    let running = slot.running.lock().expect("slot").clone();
    let run_now = viewer.0.form(
        &format!("/ui/pipelines/{}/run", url_part(&name)),
        "",
        "Run now",
        "primary",
    );
    let shown_text = match &shown {
        Some(r) => format!(
            r#"Coloured by <a href="/ui/runs/{}">the run of {}</a> {}."#,
            esc(&url_part(&r.id)),
            esc(&when(Some(r.started_at))),
            badge(r.status.as_str())
        ),
        None => "Not run yet.".to_owned(),
    };
    let mut runs = String::new();
    for r in &recent {
        runs.push_str(&run_row(r));
    }
    let links = match web.svc.links.read().expect("links").get(&name) {
        Some((at, links)) => format!(
            r#"<p class="muted">checked {}</p><ul class="links">{}</ul>"#,
            esc(&when(Some(*at))),
            links.iter().map(link_item).collect::<String>()
        ),
        None => r#"<p class="muted">not checked yet</p>"#.to_owned(),
    };
    let body = format!(
        r#"<p>{description}</p>
<dl class="facts"><dt>schedule</dt><dd>{schedule}</dd><dt>next run</dt><dd>{next}</dd><dt>file</dt><dd><code>{file}</code></dd></dl>
<p>{run_now} <a class="button" href="/ui/failed?pipeline={href}">Failed batches</a></p>
<h2>Graph</h2><p>{shown_text}</p>
<div class="dag-wrap">{svg}</div>
<p class="legend"><span class="badge st-succeeded">succeeded</span> <span class="badge st-partially_succeeded">partially succeeded</span> <span class="badge st-failed">failed</span> <span class="badge st-running">running</span> <span class="badge st-skipped">skipped</span> <span class="badge st-none">not run</span> · solid: data · dashed: runs after · dotted: compensation · a dashed amber border: records quarantined</p>
<h2>Links</h2>{links}
<h2>Recent runs</h2>
<table class="list"><thead><tr><th>run</th><th>trigger</th><th>status</th><th>started</th><th>duration</th><th>error</th></tr></thead><tbody>{runs}</tbody></table>
<p><a href="/ui/runs?pipeline={href}">all runs</a></p>
<h2>Plan</h2><pre>{plan_text}</pre>"#,
        description = esc(plan.description.as_deref().unwrap_or("")),
        schedule = esc(&describe_schedule(&plan.schedule)),
        next = match &running {
            Some(r) => format!(
                "{} ({}) since {}",
                badge("running"),
                esc(r.trigger.as_str()),
                esc(&when(Some(r.since)))
            ),
            None => esc(&when(*slot.next_run.lock().expect("slot"))),
        },
        file = esc(&slot.current().file.display().to_string()),
        href = esc(&url_part(&name)),
        svg = dag::svg(&plan, &states),
        plan_text = esc(&plan.to_text()),
    );
    let live = running.is_some()
        || shown
            .as_ref()
            .is_some_and(|r| r.status == RunStatus::Running);
    ok_page(
        viewer,
        &format!("Pipeline {name}"),
        live.then_some(2),
        &body,
    )
}

fn link_item(l: &serde_json::Value) -> String {
    link_item_of(l, "")
}

/// A link, with its latency history when `pipeline` is given.
fn link_item_of(l: &serde_json::Value, pipeline: &str) -> String {
    let history = if pipeline.is_empty() {
        String::new()
    } else {
        dag::latency(&super::checks_of(
            pipeline,
            l["link"].as_str().unwrap_or(""),
        ))
    };
    let s = |k: &str| l[k].as_str().unwrap_or("").to_owned();
    let nodes = l["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    if l["up"] == true {
        format!(
            r#"<li>{} <code>{}</code> <span class="muted">{} · nodes {} · {} ms</span> {history}</li>"#,
            badge("up"),
            esc(&s("link")),
            esc(&s("kind")),
            esc(&nodes),
            l["latency_ms"].as_u64().unwrap_or(0)
        )
    } else {
        format!(
            r#"<li>{} <code>{}</code> <span class="muted">{} · nodes {}</span> [{}] {} {history}</li>"#,
            badge("down"),
            esc(&s("link")),
            esc(&s("kind")),
            esc(&nodes),
            esc(&s("class")),
            esc(&s("error"))
        )
    }
}

fn run_row(r: &RunRow) -> String {
    format!(
        r#"<tr><td><a href="/ui/runs/{href}"><code>{id}</code></a> <a class="muted" href="/ui/pipelines/{phref}">{pipeline}</a></td><td>{trigger}</td><td>{status}</td><td>{started}</td><td>{took}</td><td class="error">{error}</td></tr>
"#,
        href = esc(&url_part(&r.id)),
        id = esc(&r.id),
        phref = esc(&url_part(&r.pipeline)),
        pipeline = esc(&r.pipeline),
        trigger = esc(r.trigger.as_str()),
        status = badge(r.status.as_str()),
        started = esc(&when(Some(r.started_at))),
        took = duration_of(r).map_or_else(|| "—".to_owned(), took),
        error = esc(r.error.as_deref().unwrap_or("")),
    )
}

pub(super) async fn run_now(
    State(web): WebState,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Err(r) = web.check_change(&headers, &form) {
        return refused(&web, &headers, r);
    }
    let Some(slot) = web.svc.slot(&name) else {
        return error_page(
            &web,
            &headers,
            StatusCode::NOT_FOUND,
            &format!("no pipeline `{name}` is served"),
        );
    };
    if web.svc.stopping.is_cancelled() {
        return error_page(
            &web,
            &headers,
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is stopping",
        );
    }
    if slot.queued() == 0 {
        slot.enqueue(Request::Run {
            trigger: sluice_state::Trigger::Manual,
            done: None,
        });
    }
    see_other(&format!("/ui/pipelines/{}", url_part(&name)))
}

#[derive(Debug, Deserialize)]
pub(super) struct RunsQuery {
    pipeline: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn runs(
    State(web): WebState,
    Query(q): Query<RunsQuery>,
    headers: HeaderMap,
) -> Response {
    let limit = q.limit.unwrap_or(RUNS_PAGE).clamp(1, 1000);
    let mut all: Vec<RunRow> = Vec::new();
    for store in web.svc.stores().await {
        match store.runs(q.pipeline.as_deref(), limit).await {
            Ok(r) => all.extend(r),
            Err(e) => return state_error(&web, &headers, e),
        }
    }
    all.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
    all.dedup_by(|a, b| a.id == b.id);
    all.truncate(limit as usize);
    let rows: String = all.iter().map(run_row).collect();
    let more = if all.len() as i64 == limit && limit < 1000 {
        format!(
            r#"<p><a href="/ui/runs?{}limit={}">older runs</a></p>"#,
            q.pipeline.as_deref().map_or_else(String::new, |p| format!(
                "pipeline={}&amp;",
                esc(&url_part(p))
            )),
            (limit * 4).min(1000)
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<table class="list"><thead><tr><th>run</th><th>trigger</th><th>status</th><th>started</th><th>duration</th><th>error</th></tr></thead><tbody>{rows}</tbody></table>{more}"#
    );
    let live = all.iter().any(|r| r.status == RunStatus::Running);
    ok_page(web.viewer(&headers), "Runs", live.then_some(3), &body)
}

pub(super) async fn run(
    State(web): WebState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut found = None;
    for store in web.svc.stores().await {
        match store.run(&id).await {
            Ok(r) => {
                found = Some(r);
                break;
            }
            Err(StateError::NotFound { .. }) => continue,
            Err(e) => return state_error(&web, &headers, e),
        }
    }
    let Some((run, nodes, attempts)) = found else {
        return error_page(
            &web,
            &headers,
            StatusCode::NOT_FOUND,
            &format!("no run `{id}` in the state store"),
        );
    };
    let end = run.finished_at.unwrap_or_else(now_ms);
    let events = super::events_between(&run.pipeline, run.started_at, end + 1);
    let mut node_rows = String::new();
    for n in &nodes {
        let started = events
            .iter()
            .find(|e| e.node == n.node && e.kind == "started")
            .map(|e| e.at);
        let finished = events
            .iter()
            .find(|e| e.node == n.node && e.kind == "finished")
            .map(|e| e.at);
        let timing = match (started, finished) {
            (Some(s), Some(f)) => format!(
                "{} → {} ({})",
                esc(&when(Some(s))),
                esc(&when(Some(f))),
                took(f - s)
            ),
            (Some(s), None) => format!("since {}", esc(&when(Some(s)))),
            _ => "—".to_owned(),
        };
        let c = &n.counts;
        node_rows.push_str(&format!(
            r#"<tr data-node="{node}"><td><code>{node}</code></td><td>{status}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{timing}</td><td class="error">{error}</td></tr>
"#,
            c.records_in, c.records_out, c.batches, c.retries, c.quarantined, c.duplicates,
            node = esc(&n.node),
            status = badge(n.status.as_str()),
            error = esc(&match (&n.error_class, &n.error) {
                (Some(class), Some(e)) => format!("[{class}] {e}"),
                (None, Some(e)) => e.clone(),
                _ => String::new(),
            }),
        ));
    }
    let mut attempt_rows = String::new();
    for a in &attempts {
        attempt_rows.push_str(&format!(
            r#"<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><pre>{}</pre></td><td>{}</td></tr>
"#,
            esc(&when(Some(a.at))),
            esc(&a.node),
            badge(a.class.as_str()),
            esc(&a.detail),
            esc(&sluice_engine::doctor::remedy(a.class)),
        ));
    }
    let attempts_table = if attempts.is_empty() {
        r#"<p class="muted">none</p>"#.to_owned()
    } else {
        format!(
            r#"<table class="list"><thead><tr><th>at</th><th>node</th><th>class</th><th>what happened (redacted evidence)</th><th>remedy</th></tr></thead><tbody>{attempt_rows}</tbody></table>"#
        )
    };
    let timeline = if events.is_empty() {
        r#"<p class="muted">no events kept for this run (the timeline keeps the runs this service made since it started)</p>"#.to_owned()
    } else {
        format!(
            r#"<ol class="timeline">{}</ol>"#,
            events
                .iter()
                .map(|e| format!(
                    r#"<li class="ev-{}"><span class="muted">{}</span> <code>{}</code> {}</li>"#,
                    esc(e.kind),
                    esc(&when(Some(e.at))),
                    esc(&e.node),
                    esc(&e.text)
                ))
                .collect::<String>()
        )
    };
    let body = format!(
        r#"<dl class="facts"><dt>pipeline</dt><dd><a href="/ui/pipelines/{phref}">{pipeline}</a></dd><dt>status</dt><dd>{status}</dd><dt>trigger</dt><dd>{trigger}</dd><dt>started</dt><dd>{started}</dd><dt>finished</dt><dd>{finished}</dd><dt>duration</dt><dd>{took}</dd><dt>error</dt><dd class="error">{error}</dd></dl>
<p><a class="button" href="/ui/failed?run={rhref}&amp;all=true">Failed batches of this run</a></p>
<h2>Nodes</h2>
<table class="list"><thead><tr><th>node</th><th>status</th><th>in</th><th>out</th><th>batches</th><th>retries</th><th>quarantined</th><th>duplicates</th><th>timing</th><th>error</th></tr></thead><tbody>{node_rows}</tbody></table>
<h2>Failed attempts</h2>{attempts_table}
<h2>Events</h2>{timeline}"#,
        phref = esc(&url_part(&run.pipeline)),
        pipeline = esc(&run.pipeline),
        status = badge(run.status.as_str()),
        trigger = esc(run.trigger.as_str()),
        started = esc(&when(Some(run.started_at))),
        finished = esc(&when(run.finished_at)),
        took = duration_of(&run).map_or_else(|| "running".to_owned(), took),
        error = esc(run.error.as_deref().unwrap_or("")),
        rhref = esc(&url_part(&run.id)),
    );
    let live = run.status == RunStatus::Running;
    ok_page(
        web.viewer(&headers),
        &format!("Run {}", run.id),
        live.then_some(2),
        &body,
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct FailedQuery {
    pipeline: Option<String>,
    node: Option<String>,
    class: Option<String>,
    run: Option<String>,
    since: Option<String>,
    #[serde(default)]
    all: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn since_ms(text: &str) -> Result<i64, String> {
    let ago = sluice_config::values::Duration::from_str(text)
        .map_err(|e| format!("since `{text}`: {e} (say `2h`, `30m`, `1d`)"))?;
    Ok(now_ms() - ago.get().as_millis() as i64)
}

pub(super) async fn failed(
    State(web): WebState,
    Query(q): Query<FailedQuery>,
    headers: HeaderMap,
) -> Response {
    let viewer = web.viewer(&headers);
    let since = match nonempty(&q.since) {
        Some(t) => match since_ms(&t) {
            Ok(ms) => Some(ms),
            Err(e) => return error_page(&web, &headers, StatusCode::BAD_REQUEST, &e),
        },
        None => None,
    };
    let include_resolved = q.all.as_deref().is_some_and(|a| a == "true" || a == "on");
    let filter = FailedBatchFilter {
        pipeline: nonempty(&q.pipeline),
        node: nonempty(&q.node),
        run_id: nonempty(&q.run),
        since,
        include_resolved,
        ..FailedBatchFilter::default()
    };
    let class = nonempty(&q.class);
    let mut all: Vec<FailedBatchRow> = Vec::new();
    for store in web.svc.stores().await {
        match store.failed_batches(&filter, false).await {
            Ok(r) => all.extend(r),
            Err(e) => return state_error(&web, &headers, e),
        }
    }
    all.retain(|b| class.as_deref().is_none_or(|c| b.class.as_str() == c));
    all.sort_by(|a, b| {
        b.last_failed_at
            .cmp(&a.last_failed_at)
            .then(a.id.cmp(&b.id))
    });
    let total = all.len();
    all.truncate(FAILED_PAGE);
    let pipelines: Vec<String> = web.svc.all_slots().iter().map(|s| s.name.clone()).collect();
    let option = |v: &str, sel: &Option<String>| {
        format!(
            r#"<option value="{0}"{1}>{0}</option>"#,
            esc(v),
            if sel.as_deref() == Some(v) {
                " selected"
            } else {
                ""
            }
        )
    };
    let classes: String = sluice_core::ErrorClass::ALL
        .iter()
        .map(|c| option(c.as_str(), &class))
        .collect();
    let filters = format!(
        r#"<form method="get" action="/ui/failed" class="filters">
<label>pipeline <select name="pipeline"><option value="">any</option>{}</select></label>
<label>node <input name="node" value="{}" size="10"></label>
<label>class <select name="class"><option value="">any</option>{classes}</select></label>
<label>since <input name="since" value="{}" size="6" placeholder="2h"></label>
<label><input type="checkbox" name="all" value="true"{}> resolved too</label>
<button type="submit">Filter</button></form>"#,
        pipelines
            .iter()
            .map(|p| option(p, &filter.pipeline))
            .collect::<String>(),
        esc(filter.node.as_deref().unwrap_or("")),
        esc(q.since.as_deref().unwrap_or("")),
        if include_resolved { " checked" } else { "" },
    );
    let mut rows = String::new();
    for b in &all {
        let select = if b.resolved_at.is_none() && viewer.0.may_change {
            format!(
                r#"<input type="checkbox" name="batch" value="{}" form="replay-selection" data-pipeline="{}" aria-label="select">"#,
                esc(&format!("{}:{}", b.pipeline, b.id)),
                esc(&b.pipeline)
            )
        } else {
            String::new()
        };
        rows.push_str(&format!(
            r#"<tr data-batch="{id}"><td>{select}</td><td><a href="/ui/failed/{href}"><code>{short}</code></a></td><td>{pipeline}</td><td><code>{node}</code></td><td>{class}</td><td class="num">{rows}</td><td class="num">{attempts}</td><td>{last}</td><td>{resolved}</td><td class="error">{error}</td></tr>
"#,
            id = esc(&b.id),
            href = esc(&url_part(&b.id)),
            short = esc(&b.id.chars().take(16).collect::<String>()),
            pipeline = esc(&b.pipeline),
            node = esc(&b.node),
            class = badge(b.class.as_str()),
            rows = b.rows,
            attempts = b.attempts,
            last = esc(&when(Some(b.last_failed_at))),
            resolved = b.resolved_at.map_or_else(|| badge("waiting"), |at| format!("{} {}", badge("resolved"), esc(&when(Some(at))))),
            error = esc(&b.error),
        ));
    }
    let shown = if total > all.len() {
        format!(
            r#"<p class="muted">the latest {} of {total}: filter to see others</p>"#,
            all.len()
        )
    } else {
        format!(r#"<p class="muted">{total} batch(es)</p>"#)
    };
    let actions = if viewer.0.may_change {
        let pipeline_field = |p: &str| {
            format!(
                r#"<input type="hidden" name="pipeline" value="{}">"#,
                esc(p)
            )
        };
        let all_since = match &filter.pipeline {
            Some(p) => format!(
                r#"<form method="post" action="/ui/replay" class="inline">{}{}<label>replay all of <b>{}</b> failed since <input name="since" size="6" value="{}" placeholder="24h"></label> <button type="submit" class="primary">Replay all since</button></form>"#,
                viewer.0.csrf_field(),
                pipeline_field(p),
                esc(p),
                esc(q.since.as_deref().unwrap_or("")),
            ),
            None => r#"<span class="muted">choose a pipeline to replay all its batches since a time</span>"#.to_owned(),
        };
        format!(
            r#"<div class="actions"><form method="post" action="/ui/replay" id="replay-selection" class="inline">{}<button type="submit" class="primary">Replay the selected</button></form> <label class="muted"><input type="checkbox" id="select-all"> select all</label> · {all_since}</div>"#,
            viewer.0.csrf_field()
        )
    } else {
        r#"<p><a class="button muted" href="/ui/login">Sign in with the token to replay or drop</a></p>"#.to_owned()
    };
    let body = format!(
        r#"{filters}{shown}{actions}
<table class="list"><thead><tr><th></th><th>batch</th><th>pipeline</th><th>node</th><th>class</th><th>records</th><th>attempts</th><th>last failed</th><th>state</th><th>error</th></tr></thead><tbody>{rows}</tbody></table>"#
    );
    ok_page(viewer, "Failed batches", None, &body)
}

pub(super) async fn failed_one(
    State(web): WebState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let viewer = web.viewer(&headers);
    let filter = FailedBatchFilter {
        id: Some(id.clone()),
        include_resolved: true,
        ..FailedBatchFilter::default()
    };
    let mut found = Vec::new();
    for store in web.svc.stores().await {
        match store.failed_batches(&filter, true).await {
            Ok(r) => found.extend(r),
            Err(e) => return state_error(&web, &headers, e),
        }
    }
    if found.is_empty() {
        return error_page(
            &web,
            &headers,
            StatusCode::NOT_FOUND,
            &format!("no failed batch `{id}` (it may have been dropped)"),
        );
    }
    let mut body = String::new();
    for b in &found {
        let replay = if b.resolved_at.is_none() {
            viewer.0.form(
                "/ui/replay",
                &format!(
                    r#"<input type="hidden" name="pipeline" value="{}"><input type="hidden" name="batch" value="{}">"#,
                    esc(&b.pipeline),
                    esc(&format!("{}:{}", b.pipeline, b.id))
                ),
                "Replay this batch",
                "primary",
            )
        } else {
            String::new()
        };
        let drop = if viewer.0.may_change {
            format!(
                r#"<form method="post" action="/ui/failed/{}/drop" class="inline drop">{}<label><input type="checkbox" name="confirm" value="yes" required> yes, delete its records for good</label> <button type="submit" class="danger" data-confirm="Drop this failed batch? Its records are deleted and cannot be replayed.">Drop</button></form>"#,
                esc(&url_part(&b.id)),
                viewer.0.csrf_field()
            )
        } else {
            String::new()
        };
        let table = records_table(&b.payload);
        body.push_str(&format!(
            r#"<dl class="facts"><dt>pipeline</dt><dd><a href="/ui/pipelines/{phref}">{pipeline}</a></dd><dt>node</dt><dd><code>{node}</code></dd><dt>last run</dt><dd><a href="/ui/runs/{rhref}"><code>{run}</code></a></dd><dt>class</dt><dd>{class}</dd><dt>records</dt><dd>{rows}</dd><dt>attempts</dt><dd>{attempts}</dd><dt>failed</dt><dd>first {first}, last {last}</dd><dt>state</dt><dd>{state}</dd></dl>
<p>{replay} {drop}</p>
<h2>Error</h2><pre class="error">{error}</pre>
<p class="muted">remedy: {remedy}</p>
<h2>Evidence (redacted)</h2><pre>{evidence}</pre>
<h2>Records</h2>{table}"#,
            phref = esc(&url_part(&b.pipeline)),
            pipeline = esc(&b.pipeline),
            node = esc(&b.node),
            rhref = esc(&url_part(&b.run_id)),
            run = esc(&b.run_id),
            class = badge(b.class.as_str()),
            rows = b.rows,
            attempts = b.attempts,
            first = esc(&when(Some(b.first_failed_at))),
            last = esc(&when(Some(b.last_failed_at))),
            state = b.resolved_at.map_or_else(|| badge("waiting"), |at| format!("{} {}", badge("resolved"), esc(&when(Some(at))))),
            error = esc(&b.error),
            remedy = esc(&sluice_engine::doctor::remedy(b.class)),
            evidence = esc(b.evidence.as_deref().unwrap_or("none kept")),
        ));
    }
    ok_page(viewer, &format!("Failed batch {id}"), None, &body)
}

/// The kept records as an HTML table (the first [`RECORDS_SHOWN`]).
fn records_table(payload: &[u8]) -> String {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let decoded = sluice_buffer::wire::Message::from_frame(payload)
        .and_then(|m| sluice_buffer::wire::decode(&m));
    let batch = match decoded {
        Ok(d) => d.batch.records,
        Err(e) => {
            return format!(
                r#"<p class="error">the kept payload does not decode: {}</p>"#,
                esc(&e.to_string())
            );
        }
    };
    let options = FormatOptions::default().with_null("null");
    let formatters: Result<Vec<_>, _> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect();
    let formatters = match formatters {
        Ok(f) => f,
        Err(e) => return format!(r#"<p class="error">{}</p>"#, esc(&e.to_string())),
    };
    let head: String = batch
        .schema()
        .fields()
        .iter()
        .map(|f| format!("<th>{}</th>", esc(f.name())))
        .collect();
    let mut rows = String::new();
    for row in 0..batch.num_rows().min(RECORDS_SHOWN) {
        rows.push_str("<tr>");
        for f in &formatters {
            rows.push_str(&format!("<td>{}</td>", esc(&f.value(row).to_string())));
        }
        rows.push_str("</tr>\n");
    }
    let more = if batch.num_rows() > RECORDS_SHOWN {
        format!(
            r#"<p class="muted">the first {RECORDS_SHOWN} of {} records</p>"#,
            batch.num_rows()
        )
    } else {
        String::new()
    };
    format!(
        r#"<div class="scroll"><table class="list records"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{more}"#
    )
}

/// `POST /ui/replay`: the selected batches (`batch`, repeated, `pipeline:id`), or every
/// batch of `pipeline` failed `since` a time (or all of it).
pub(super) async fn replay(State(web): WebState, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Err(r) = web.check_change(&headers, &form) {
        return refused(&web, &headers, r);
    }
    let selected: Vec<(String, String)> = form
        .all("batch")
        .iter()
        .filter_map(|b| b.split_once(':'))
        .map(|(p, id)| (p.to_owned(), id.to_owned()))
        .collect();
    let mut jobs: Vec<(String, FailedBatchFilter)> = Vec::new();
    if !selected.is_empty() {
        for (p, id) in selected {
            jobs.push((
                p,
                FailedBatchFilter {
                    id: Some(id),
                    ..FailedBatchFilter::default()
                },
            ));
        }
    } else if let Some(p) = form.get("pipeline").filter(|p| !p.is_empty()) {
        let since = match form.get("since").map(str::trim).filter(|s| !s.is_empty()) {
            Some(t) => match since_ms(t) {
                Ok(ms) => Some(ms),
                Err(e) => return error_page(&web, &headers, StatusCode::BAD_REQUEST, &e),
            },
            None => None,
        };
        jobs.push((
            p.to_owned(),
            FailedBatchFilter {
                since,
                ..FailedBatchFilter::default()
            },
        ));
    } else {
        return error_page(
            &web,
            &headers,
            StatusCode::BAD_REQUEST,
            "nothing to replay: select batches, or name a pipeline",
        );
    }
    let mut lines = String::new();
    let mut last_pipeline = String::new();
    for (pipeline, filter) in jobs {
        last_pipeline.clone_from(&pipeline);
        lines.push_str(&replay_one(&web, &pipeline, filter).await);
    }
    let (viewer, cookie) = web.viewer(&headers);
    let body = format!(
        r#"<ul class="report">{lines}</ul><p><a class="button" href="/ui/failed?pipeline={}">Back to the failed batches</a></p>"#,
        esc(&url_part(&last_pipeline))
    );
    let mut r = html_response(StatusCode::OK, page("Replay", &viewer, None, &body));
    if let Some(c) = cookie {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

async fn replay_one(web: &Arc<Web>, pipeline: &str, filter: FailedBatchFilter) -> String {
    let Some(slot) = web.svc.slot(pipeline) else {
        return format!(
            r#"<li class="error">no pipeline `{}` is served</li>"#,
            esc(pipeline)
        );
    };
    let (done, outcome) = oneshot::channel();
    if !slot.enqueue(Request::Replay { filter, done }) {
        return format!(
            r#"<li class="error">`{}` is no longer served</li>"#,
            esc(pipeline)
        );
    }
    match outcome.await {
        Ok(Outcome::Replayed(report)) => {
            let mut out = String::new();
            for (id, rows) in &report.delivered {
                out.push_str(&format!(
                    r#"<li>{} <code>{}</code> ({rows} records) of {}</li>"#,
                    badge("delivered"),
                    esc(id),
                    esc(pipeline)
                ));
            }
            for (id, why) in report.failed_again.iter().chain(&report.not_replayable) {
                out.push_str(&format!(
                    r#"<li>{} <code>{}</code>: {}</li>"#,
                    badge("failed"),
                    esc(id),
                    esc(why)
                ));
            }
            if out.is_empty() {
                out = format!(
                    r#"<li class="muted">nothing to replay in {}</li>"#,
                    esc(pipeline)
                );
            }
            out.push_str(&format!(
                r#"<li class="muted">replay run <a href="/ui/runs/{}"><code>{}</code></a></li>"#,
                esc(&url_part(&report.run_id)),
                esc(&report.run_id)
            ));
            out
        }
        Ok(Outcome::Skipped(why)) | Ok(Outcome::Failed(_, why)) => {
            format!(r#"<li class="error">{}: {}</li>"#, esc(pipeline), esc(&why))
        }
        Ok(Outcome::Ran(_)) | Err(_) => {
            r#"<li class="error">the replay was not run: the service is stopping</li>"#.to_owned()
        }
    }
}

pub(super) async fn drop_batch(
    State(web): WebState,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Err(r) = web.check_change(&headers, &form) {
        return refused(&web, &headers, r);
    }
    if form.get("confirm") != Some("yes") {
        return error_page(
            &web,
            &headers,
            StatusCode::BAD_REQUEST,
            "tick the confirmation to drop a batch: its records are deleted for good",
        );
    }
    let mut dropped = 0;
    for store in web.svc.stores().await {
        match store.drop_failed(&id).await {
            Ok(n) => dropped += n,
            Err(StateError::NotFound { .. }) => {}
            Err(e) => return state_error(&web, &headers, e),
        }
    }
    if dropped == 0 {
        return error_page(
            &web,
            &headers,
            StatusCode::NOT_FOUND,
            &format!("no failed batch `{id}`"),
        );
    }
    tracing::info!(batch = %id, "failed batch dropped from the web view");
    see_other("/ui/failed")
}

pub(super) async fn links(State(web): WebState, headers: HeaderMap) -> Response {
    let mut body = String::from("<h2>Links</h2>");
    let checked = web.svc.links.read().expect("links").clone();
    if checked.is_empty() {
        body.push_str(r#"<p class="muted">not checked yet (every --health-interval; GET /health checks now)</p>"#);
    }
    for (pipeline, (at, links)) in &checked {
        body.push_str(&format!(
            r#"<h3><a href="/ui/pipelines/{}">{}</a> <span class="muted">checked {}</span></h3><ul class="links">{}</ul>"#,
            esc(&url_part(pipeline)),
            esc(pipeline),
            esc(&when(Some(*at))),
            links
                .iter()
                .map(|l| link_item_of(l, pipeline))
                .collect::<String>()
        ));
    }
    body.push_str("<h2>Alerts</h2>");
    let mut rows = String::new();
    for store in web.svc.stores().await {
        let alerts = match store.alerts_with_ids(ALERTS_SHOWN).await {
            Ok(a) => a,
            Err(e) => return state_error(&web, &headers, e),
        };
        for (id, a) in alerts {
            let deliveries = store.deliveries(&id).await.unwrap_or_default();
            let delivered: String = if deliveries.is_empty() {
                r#"<span class="muted">no channel</span>"#.to_owned()
            } else {
                deliveries
                    .iter()
                    .map(|d| {
                        format!(
                            r#"<div>{} {} <span class="muted">{} attempt(s)</span> {}</div>"#,
                            esc(&d.channel),
                            badge(d.status.as_str()),
                            d.attempts,
                            esc(d.error.as_deref().unwrap_or(""))
                        )
                    })
                    .collect()
            };
            rows.push_str(&format!(
                r#"<tr><td>{}</td><td><a href="/ui/pipelines/{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>
"#,
                esc(&when(Some(a.at))),
                esc(&url_part(&a.pipeline)),
                esc(&a.pipeline),
                esc(a.kind.as_str()),
                badge(a.severity.as_str()),
                esc(&a.message),
                delivered
            ));
        }
    }
    if rows.is_empty() {
        body.push_str(r#"<p class="muted">no alerts</p>"#);
    } else {
        body.push_str(&format!(
            r#"<table class="list"><thead><tr><th>at</th><th>pipeline</th><th>kind</th><th>severity</th><th>message</th><th>delivered to</th></tr></thead><tbody>{rows}</tbody></table>"#
        ));
    }
    ok_page(web.viewer(&headers), "Links and alerts", None, &body)
}

pub(super) async fn login_form(State(web): WebState, headers: HeaderMap) -> Response {
    let body = if web.token_set() {
        r#"<form method="post" action="/ui/login" class="login"><label>API token <input type="password" name="token" autocomplete="current-password" required autofocus></label> <button type="submit" class="primary">Sign in</button></form>
<p class="muted">The token of <code>sluice serve</code> (its --token-file or SLUICE_API_TOKEN). Signing in sets a session cookie (HttpOnly, SameSite=Strict) for 12 hours.</p>"#
    } else {
        r#"<p>No API token is set: on this loopback address, anyone who reaches the pages may run and replay.</p>"#
    };
    ok_page(web.viewer(&headers), "Sign in", None, body)
}

pub(super) async fn login(State(web): WebState, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = super::same_origin(&headers) {
        return refused(&web, &headers, r);
    }
    let form = Form::parse(&body);
    if !web.token_matches(form.get("token").unwrap_or("")) {
        tracing::warn!("a sign-in to the web view with a wrong token");
        return error_page(
            &web,
            &headers,
            StatusCode::FORBIDDEN,
            "that is not the API token `sluice serve` was given",
        );
    }
    let cookie = web.new_session();
    let mut r = see_other("/");
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}

pub(super) async fn logout(State(web): WebState, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Err(r) = web.check_change(&headers, &form) {
        return refused(&web, &headers, r);
    }
    web.end_session(&headers);
    let mut r = see_other("/");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sluice_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}
