//! `sluice doctor`: the troubleshooting flow of docs/troubleshooting.md, walked for each
//! link of a pipeline, naming the cause with its class, its evidence and its remedy.
//!
//! For each link, in order: (1) the **symptom**, the last run's failure of the link's
//! nodes, from the state store; (2) the **network**, each address resolved, a TCP
//! connection timed, the TLS handshake (trust, expiry, host name), the proxy variables
//! and the clock offset from the server's `Date`; then the kind's own checks
//! ([`sluice_config::NodeConfig::probes`]): (3) **auth**, (4) **parameters** (one request
//! as the pipeline makes it), (5) **dependencies** (databases, brokers, the state store);
//! for a source that read a sample, (6) **logic**, the transforms downstream run on it,
//! and (7) **upstream**, the sample's shape against the schema its last good run stored.
//! The detail stops at a link's first failing step. Nothing is written, checkpointed or
//! alerted.
//!
//! [`diagnose`] returns a [`DoctorReport`]; the binary prints it (text or JSON) and a
//! service can serve the same JSON.

use futures::future::join_all;
use sluice_config::doctor::{Endpoint, Finding, Probe, ProbeReport, Step};
use sluice_config::plan::Plan;
use sluice_config::{Link, LinkKind};
use sluice_core::node::NodeRunner;
use sluice_core::{ConnectorError, Disposition, ErrorClass};
use sluice_state::StateStore;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::build::BuildContext;

/// How long a network check (a lookup, a connection, a handshake) may take.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a kind's probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// A clock further than this from the server's breaks signatures that carry a time.
const CLOCK_TOLERANCE: Duration = Duration::from_secs(300);
/// Records of the sample compared and run through transforms.
const SAMPLE: usize = 100;
/// Where the remedies come from, word for word.
const TROUBLESHOOTING: &str = include_str!("../../../docs/troubleshooting.md");
/// The page's path, as messages link it.
pub const TROUBLESHOOTING_PAGE: &str = "docs/troubleshooting.md";

/// What to diagnose.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// Only this node's links.
    pub node: Option<String>,
    /// The run whose failure is the symptom (else the pipeline's latest run); only the
    /// links of the nodes that failed in it, unless `node` says otherwise.
    pub run: Option<String>,
}

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Its checks passed.
    Passed,
    /// One failed.
    Failed,
    /// Shown for information (the symptom).
    Info,
    /// Nothing to check for this link.
    NotApplicable,
    /// Not checked: an earlier step failed.
    NotChecked,
}

impl Status {
    /// `passed`, `FAILED`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Info => "info",
            Status::NotApplicable => "n/a",
            Status::NotChecked => "not checked",
        }
    }
}

/// One step of one link.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Which.
    pub step: Step,
    /// How it went.
    pub status: Status,
    /// What was checked and found, in order (the failed one last).
    pub checks: Vec<Finding>,
}

impl StepReport {
    /// The failure, if the step failed.
    pub fn failure(&self) -> Option<&ConnectorError> {
        self.checks.iter().find_map(|c| c.outcome.as_ref().err())
    }
}

/// One link, walked through the seven steps.
#[derive(Debug, Clone)]
pub struct LinkReport {
    /// What kind of link.
    pub kind: LinkKind,
    /// What it is, without secrets.
    pub name: String,
    /// The nodes that use it (empty for the buffer and the state store).
    pub nodes: Vec<String>,
    /// The seven steps, in order.
    pub steps: Vec<StepReport>,
}

impl LinkReport {
    /// The first step that failed.
    pub fn failed(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.status == Status::Failed)
    }
}

/// What `sluice doctor` found.
#[derive(Debug, Clone)]
pub struct DoctorReport {
    /// The pipeline.
    pub pipeline: String,
    /// The run shown as the symptom, if any.
    pub run: Option<String>,
    /// Its status (`failed`, `succeeded`, ...).
    pub run_status: Option<String>,
    /// Each link.
    pub links: Vec<LinkReport>,
}

impl DoctorReport {
    /// Whether every step of every link passed.
    pub fn healthy(&self) -> bool {
        self.links.iter().all(|l| l.failed().is_none())
    }

    /// The report as JSON (what `--json` prints and a service serves).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let finding = |f: &Finding| match &f.outcome {
            Ok(found) => json!({"checked": f.checked, "ok": true, "found": found}),
            Err(e) => json!({
                "checked": f.checked,
                "ok": false,
                "class": e.class.as_str(),
                "error": e.message,
                "evidence": e.evidence,
                "remedy": remedy(e.class),
                "see": remedy_link(e.class),
            }),
        };
        json!({
            "pipeline": self.pipeline,
            "run": self.run,
            "run_status": self.run_status,
            "healthy": self.healthy(),
            "links": self.links.iter().map(|l| json!({
                "kind": l.kind.as_str(),
                "link": l.name,
                "nodes": l.nodes,
                "ok": l.failed().is_none(),
                "failed_step": l.failed().map(|s| s.step.as_str()),
                "class": l.failed().and_then(|s| s.failure()).map(|e| e.class.as_str()),
                "steps": l.steps.iter().map(|s| json!({
                    "step": s.step.number(),
                    "name": s.step.as_str(),
                    "status": s.status.as_str(),
                    "checks": s.checks.iter().map(finding).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The remedy of a class, in the words of docs/troubleshooting.md (its **Check** line,
/// or its **Change it** line when it has none).
pub fn remedy(class: ErrorClass) -> String {
    let heading = format!("### `{}`", class.as_str());
    let Some(start) = TROUBLESHOOTING.find(&heading) else {
        return String::new();
    };
    let section = &TROUBLESHOOTING[start + heading.len()..];
    let section = &section[..section.find("\n#").unwrap_or(section.len())];
    for label in ["- **Check**:", "- **Change it**:"] {
        if let Some(at) = section.find(label) {
            let rest = &section[at + label.len()..];
            let end = rest.find("\n-").unwrap_or(rest.len());
            return rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        }
    }
    String::new()
}

/// Where the class's remedy is: `docs/troubleshooting.md#network`.
pub fn remedy_link(class: ErrorClass) -> String {
    format!("{TROUBLESHOOTING_PAGE}#{}", class.as_str())
}

/// A batch schema's fingerprint and text, as the run keeps it: `{"field": "Int64", ...}`.
pub fn schema_fingerprint(schema: &arrow::datatypes::Schema) -> (String, String) {
    let fields: serde_json::Map<String, serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string().into()))
        .collect();
    let text = serde_json::Value::Object(fields).to_string();
    let hash = blake3::hash(text.as_bytes()).to_hex();
    (hash[..16].to_owned(), text)
}

/// A probe with the nodes that use its link.
struct Target {
    probe: Probe,
    nodes: Vec<String>,
    /// The source node whose sample feeds steps 6 and 7.
    source: Option<String>,
}

/// Walks the flow for every link of the plan (or those `options` selects).
pub async fn diagnose(plan: &Plan, ctx: &BuildContext, options: &DoctorOptions) -> DoctorReport {
    let ctx = &ctx.for_pipeline(&plan.pipeline);
    let store = StateStore::open(&ctx.database_url(plan.state.expose()))
        .await
        .ok();
    // The symptom: the chosen run, or the latest.
    let mut run = None;
    if let Some(store) = &store {
        let id = match &options.run {
            Some(id) => Some(id.clone()),
            None => store
                .runs(Some(&plan.pipeline), 1)
                .await
                .ok()
                .and_then(|r| r.into_iter().next())
                .map(|r| r.id),
        };
        if let Some(id) = id {
            run = store.run(&id).await.ok();
        }
    }
    let failed_nodes: Option<BTreeSet<String>> = match (&options.run, &run) {
        (Some(_), Some((_, nodes, _))) if options.node.is_none() => Some(
            nodes
                .iter()
                .filter(|n| n.error.is_some())
                .map(|n| n.node.clone())
                .collect(),
        )
        .filter(|s: &BTreeSet<String>| !s.is_empty()),
        _ => None,
    };
    let wanted = |node: &str| {
        options.node.as_deref().is_none_or(|n| n == node)
            && failed_nodes.as_ref().is_none_or(|f| f.contains(node))
    };

    // Each link once, with the nodes that use it.
    let mut targets: BTreeMap<(LinkKind, String), Target> = BTreeMap::new();
    for node in plan.nodes.iter().filter(|n| wanted(&n.id)) {
        let source =
            (node.role == sluice_config::spec::nodes::Role::Source).then(|| node.id.clone());
        for probe in node.config.probes(node, ctx) {
            let key = (probe.kind, probe.name.clone());
            let t = targets.entry(key).or_insert(Target {
                probe,
                nodes: Vec::new(),
                source: source.clone(),
            });
            if !t.nodes.contains(&node.id) {
                t.nodes.push(node.id.clone());
            }
        }
    }
    if options.node.is_none() && failed_nodes.is_none() {
        for link in crate::health::own_links(plan, ctx) {
            let endpoints = own_endpoints(plan, &link);
            let probe = Probe::of_link_at(link, endpoints);
            targets.insert(
                (probe.kind, probe.name.clone()),
                Target {
                    probe,
                    nodes: Vec::new(),
                    source: None,
                },
            );
        }
    }

    let run_ref = run.as_ref();
    let store_ref = store.as_ref();
    let links = join_all(
        targets
            .into_values()
            .map(|t| walk(plan, ctx, t, run_ref, store_ref)),
    )
    .await;
    DoctorReport {
        pipeline: plan.pipeline.clone(),
        run_status: run.as_ref().map(|(r, _, _)| r.status.as_str().to_owned()),
        run: run.map(|(r, _, _)| r.id),
        links,
    }
}

/// The endpoints of the pipeline's own links (the state store, a Kafka buffer).
fn own_endpoints(plan: &Plan, link: &Link) -> Vec<Endpoint> {
    match link.kind {
        LinkKind::State => Endpoint::of_url(plan.state.expose(), "state store database", true)
            .into_iter()
            .collect(),
        LinkKind::Buffer => match &plan.buffer {
            sluice_config::spec::BufferSpec::Kafka(k) => k
                .brokers
                .value
                .iter()
                .filter_map(|b| {
                    Endpoint::of_url(&format!("kafka://{}", b.value), "Kafka broker", true)
                })
                .collect(),
            sluice_config::spec::BufferSpec::Embedded(_) => Vec::new(),
        },
        _ => Vec::new(),
    }
}

type RunRecord = (
    sluice_state::RunRow,
    Vec<sluice_state::NodeRunRow>,
    Vec<sluice_state::AttemptRow>,
);

/// One link through the seven steps, stopping the detail at the first that fails.
async fn walk(
    plan: &Plan,
    ctx: &BuildContext,
    target: Target,
    run: Option<&RunRecord>,
    store: Option<&StateStore>,
) -> LinkReport {
    let Target {
        probe,
        nodes,
        source,
    } = target;
    let mut steps: BTreeMap<Step, StepReport> = Step::ALL
        .iter()
        .map(|&step| {
            (
                step,
                StepReport {
                    step,
                    status: Status::NotApplicable,
                    checks: Vec::new(),
                },
            )
        })
        .collect();
    let mut add = |f: Finding| {
        let s = steps.get_mut(&f.step).expect("every step is in the map");
        match (&f.outcome, s.status) {
            (Err(_), _) => s.status = Status::Failed,
            (Ok(_), Status::NotApplicable) if f.step == Step::Symptom => s.status = Status::Info,
            (Ok(_), Status::NotApplicable) => s.status = Status::Passed,
            _ => {}
        }
        s.checks.push(f);
    };

    // 1. The symptom.
    for f in symptom(run, &nodes) {
        add(f);
    }
    let mut failed = false;
    // 2. The network.
    for endpoint in &probe.endpoints {
        for f in network(endpoint).await {
            failed |= f.outcome.is_err();
            add(f);
        }
        if failed {
            break;
        }
    }
    if !probe.endpoints.is_empty() && !failed {
        add(proxies());
    }
    // 3 to 5: the kind's checks.
    let mut sample = None;
    if !failed {
        let report = match tokio::time::timeout(PROBE_TIMEOUT, probe.run).await {
            Ok(r) => r,
            Err(_) => ProbeReport {
                findings: vec![Finding::failed(
                    None,
                    format!("{} {}", probe.kind, probe.name),
                    ConnectorError::new(
                        ErrorClass::Network,
                        format!(
                            "no answer within {}s: check that the host is reachable from here (firewall, proxy, DNS)",
                            PROBE_TIMEOUT.as_secs()
                        ),
                    ),
                )],
                sample: None,
            },
        };
        for f in report.findings {
            failed |= f.outcome.is_err();
            add(f);
        }
        sample = report.sample;
    }
    // 6 and 7: what a source's sample tells.
    if let (false, Some(records), Some(node)) = (failed, sample, source.as_deref()) {
        let records: Vec<serde_json::Value> = records.into_iter().take(SAMPLE).collect();
        let ours = logic(plan, ctx, node, &records).await;
        let theirs = upstream(store, &plan.pipeline, node, &records).await;
        // A transform or a table that does not fit records the upstream changed is a
        // consequence: the cause is step 7.
        let drifted = theirs.iter().any(|f| f.outcome.is_err());
        for mut f in ours {
            if drifted && let Err(e) = &f.outcome {
                f.outcome = Ok(format!(
                    "[{}] {} (a consequence of the upstream change, step 7)",
                    e.class, e.message
                ));
            }
            failed |= f.outcome.is_err();
            add(f);
        }
        if !failed {
            for f in theirs {
                add(f);
            }
        }
    }
    // Steps after the first failure were not checked.
    let first_failed = steps
        .values()
        .find(|s| s.status == Status::Failed)
        .map(|s| s.step);
    let mut steps: Vec<StepReport> = steps.into_values().collect();
    if let Some(first) = first_failed {
        for s in steps.iter_mut().filter(|s| s.step > first) {
            s.status = Status::NotChecked;
            s.checks.clear();
        }
    }
    LinkReport {
        kind: probe.kind,
        name: probe.name,
        nodes,
        steps,
    }
}

/// Step 1: the run's failure of these nodes, and their failed attempts.
fn symptom(run: Option<&RunRecord>, nodes: &[String]) -> Vec<Finding> {
    let info = |found: String| Finding {
        step: Step::Symptom,
        checked: "the last run".to_owned(),
        outcome: Ok(found),
    };
    let Some((row, node_rows, attempts)) = run else {
        return vec![info("no run recorded for this pipeline".to_owned())];
    };
    let started = chrono_time(row.started_at);
    let mut out = vec![info(format!(
        "run {} started {started}: {}",
        row.id,
        row.status.as_str()
    ))];
    for n in node_rows.iter().filter(|n| nodes.contains(&n.node)) {
        if let Some(error) = &n.error {
            out.push(info(format!(
                "node {} failed with [{}] {error}",
                n.node,
                n.error_class.map_or("?", |c| c.as_str())
            )));
        }
    }
    let mine: Vec<_> = attempts
        .iter()
        .filter(|a| nodes.contains(&a.node))
        .collect();
    if let Some(last) = mine.last() {
        out.push(info(format!(
            "{} failed attempt(s); the last, at {}: [{}] {}",
            mine.len(),
            chrono_time(last.at),
            last.class,
            last.detail
        )));
    }
    out
}

fn chrono_time(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Step 2 for one endpoint: the name resolved (each address), a TCP connection timed, the
/// TLS handshake, and the clock offset from the server's `Date` (for an HTTP endpoint).
/// A refused connection to a dependency (a database, a broker) is that dependency down.
async fn network(e: &Endpoint) -> Vec<Finding> {
    let mut out = Vec::new();
    let address = e.address();
    let timeout = |what: String| {
        ConnectorError::new(
            ErrorClass::Network,
            format!(
                "{what} took longer than {}s: a firewall, a proxy or a VPN may be in the way",
                NETWORK_TIMEOUT.as_secs()
            ),
        )
    };
    // DNS.
    let checked = format!("DNS: {} resolves", e.host);
    let started = Instant::now();
    let addrs: Vec<std::net::SocketAddr> = match tokio::time::timeout(
        NETWORK_TIMEOUT,
        tokio::net::lookup_host(address.clone()),
    )
    .await
    {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(err)) => {
            out.push(Finding::failed(
                    Some(Step::Network),
                    checked,
                    ConnectorError::new(
                        ErrorClass::Network,
                        format!(
                            "the host name {} does not resolve ({err}): check its spelling, then `getent hosts {}` and the DNS settings of this machine",
                            e.host, e.host
                        ),
                    ),
                ));
            return out;
        }
        Err(_) => {
            out.push(Finding::failed(
                Some(Step::Network),
                checked,
                timeout(format!("resolving {}", e.host)),
            ));
            return out;
        }
    };
    out.push(Finding::passed(
        Step::Network,
        checked,
        format!(
            "{} in {} ms",
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_millis()
        ),
    ));
    // TCP, to each address until one answers.
    let checked = format!("TCP: connect to {} ({})", address, e.service);
    let mut stream = None;
    let mut errors = Vec::new();
    for a in &addrs {
        let started = Instant::now();
        match tokio::time::timeout(NETWORK_TIMEOUT, tokio::net::TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                stream = Some((s, started.elapsed(), *a));
                break;
            }
            Ok(Err(err)) => errors.push((*a, err.kind(), err.to_string())),
            Err(_) => errors.push((*a, std::io::ErrorKind::TimedOut, "no answer".to_owned())),
        }
    }
    let Some((stream, took, addr)) = stream else {
        let refused = errors
            .iter()
            .all(|(_, k, _)| *k == std::io::ErrorKind::ConnectionRefused);
        let detail = errors
            .iter()
            .map(|(a, _, m)| format!("{a}: {m}"))
            .collect::<Vec<_>>()
            .join("; ");
        let (step, class, message) = if refused && e.dependency {
            (
                Step::Dependencies,
                ErrorClass::Dependency,
                format!(
                    "{} at {address} refused the connection ({detail}): is it running? nothing listens on that port",
                    e.service
                ),
            )
        } else if refused {
            (
                Step::Network,
                ErrorClass::Network,
                format!(
                    "{} at {address} refused the connection ({detail}): nothing listens on that port; check the URL's port and that the service is up",
                    e.service
                ),
            )
        } else {
            (
                Step::Network,
                ErrorClass::Network,
                format!(
                    "could not connect to {address} ({detail}): a firewall, a proxy or a VPN may be in the way"
                ),
            )
        };
        out.push(Finding::failed(
            Some(step),
            checked,
            ConnectorError::new(class, message),
        ));
        return out;
    };
    out.push(Finding::passed(
        Step::Network,
        checked,
        format!("{addr} connected in {} ms", took.as_millis()),
    ));
    // TLS, then the server's clock.
    let date = if e.tls {
        match crate::doctor_tls::handshake(stream, &e.host, NETWORK_TIMEOUT).await {
            Ok(tls) => {
                out.push(Finding::passed(
                    Step::Network,
                    format!("TLS handshake with {}", e.host),
                    tls.summary,
                ));
                tls.date
            }
            Err(err) => {
                out.push(Finding::failed(
                    Some(Step::Network),
                    format!("TLS handshake with {}", e.host),
                    err,
                ));
                return out;
            }
        }
    } else if e.service == "HTTP API" {
        crate::doctor_tls::plain_date(stream, &e.host, NETWORK_TIMEOUT).await
    } else {
        None
    };
    if let Some(date) = date {
        out.push(clock(date));
    }
    out
}

/// The clock offset against a server's `Date`.
fn clock(date: SystemTime) -> Finding {
    let now = SystemTime::now();
    let (offset, ahead) = match date.duration_since(now) {
        Ok(d) => (d, true),
        Err(e) => (e.duration(), false),
    };
    let checked = "clock offset from the server's `Date`".to_owned();
    let text = format!(
        "this machine is {}s {} the server (`Date` has a one-second resolution)",
        offset.as_secs(),
        if ahead { "behind" } else { "ahead of" }
    );
    if offset > CLOCK_TOLERANCE {
        Finding::failed(
            Some(Step::Network),
            checked,
            ConnectorError::new(
                ErrorClass::Auth,
                format!(
                    "{text}: signatures and tokens that carry a time (HMAC, JWT) are refused past a few minutes; set the clock (NTP)"
                ),
            ),
        )
    } else {
        Finding::passed(Step::Network, checked, text)
    }
}

/// The proxy variables in effect (their values without credentials).
fn proxies() -> Finding {
    let names = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ];
    let set: Vec<String> = names
        .iter()
        .filter_map(|n| {
            let v = std::env::var(n).ok().filter(|v| !v.is_empty())?;
            let shown = match url::Url::parse(&v) {
                Ok(mut u) if u.has_host() => {
                    let _ = u.set_password(None);
                    let _ = u.set_username("");
                    u.to_string()
                }
                _ => v,
            };
            Some(format!("{n}={shown}"))
        })
        .collect();
    Finding::passed(
        Step::Network,
        "proxy variables",
        if set.is_empty() {
            "none set: connections go direct".to_owned()
        } else {
            format!(
                "{} (the checks above connect directly; requests go through the proxy)",
                set.join(", ")
            )
        },
    )
}

/// Step 6: the transforms downstream of `source` run on the sample, in order.
async fn logic(
    plan: &Plan,
    ctx: &BuildContext,
    source: &str,
    records: &[serde_json::Value],
) -> Vec<Finding> {
    use sluice_config::spec::nodes::Role;
    let mut out = Vec::new();
    if records.is_empty() {
        out.push(Finding::passed(
            Step::Logic,
            "the transforms on a sample",
            "the sample is empty: nothing to run them on",
        ));
        return out;
    }
    let batch = match sample_batch(records) {
        Ok(b) => b,
        Err(m) => {
            out.push(Finding::passed(
                Step::Logic,
                "the sample as Arrow records",
                format!("not checked: {m}"),
            ));
            return out;
        }
    };
    // Transforms fed by the source, directly or through other transforms.
    let mut batches: BTreeMap<String, arrow::array::RecordBatch> = BTreeMap::new();
    batches.insert(source.to_owned(), batch);
    let mut ran = 0;
    for node in &plan.nodes {
        let Some(input) = node.inputs.iter().find(|i| batches.contains_key(*i)) else {
            continue;
        };
        let input = batches[input].clone();
        match node.role {
            Role::Transform => {
                let checked = format!(
                    "transform {} on {} sample records",
                    node.id,
                    input.num_rows()
                );
                let mut transform = match node.config.build(node, ctx).await {
                    Ok(NodeRunner::Transform(t)) => t,
                    Ok(_) => continue,
                    Err(e) => {
                        out.push(Finding::failed(Some(Step::Logic), checked, e));
                        return out;
                    }
                };
                ran += 1;
                match transform.apply(input) {
                    Ok(b) => {
                        out.push(Finding::passed(
                            Step::Logic,
                            checked,
                            format!(
                                "{} records out, columns: {}",
                                b.num_rows(),
                                b.schema()
                                    .fields()
                                    .iter()
                                    .map(|f| f.name().as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                        batches.insert(node.id.clone(), b);
                    }
                    Err(e) => {
                        // What a run would do with such a batch: its disposition.
                        let what = node.on_error.iter().find(|d| d.class == e.class).map(|d| {
                            format!(
                                "in a run, node {} would {} such a batch (`on_error.{}: {}`)",
                                node.id,
                                match d.disposition {
                                    Disposition::Quarantine => "keep in the failed-batch store",
                                    Disposition::Skip => "drop",
                                    Disposition::Split => "split",
                                    Disposition::Retry => "retry",
                                    Disposition::Fail => "fail on",
                                },
                                e.class,
                                d.disposition.as_str()
                            )
                        });
                        let e = match (what, e.evidence.clone()) {
                            (Some(w), Some(ev)) => e.with_evidence(format!("{ev}\n{w}")),
                            (Some(w), None) => e.with_evidence(w),
                            (None, _) => e,
                        };
                        out.push(Finding::failed(Some(Step::Logic), checked, e));
                        return out;
                    }
                }
            }
            Role::Sink => {
                let columns: Vec<(String, String)> = input
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().to_string()))
                    .collect();
                out.push(Finding::passed(
                    Step::Logic,
                    format!("what sink {} receives", node.id),
                    format!(
                        "{} columns: {}",
                        columns.len(),
                        columns
                            .iter()
                            .map(|(n, t)| format!("{n} {t}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                for f in node.config.probe_sample(node, ctx, &columns).await {
                    let failed = f.outcome.is_err();
                    out.push(f);
                    if failed {
                        return out;
                    }
                }
            }
            _ => {}
        }
    }
    if ran == 0 {
        out.insert(
            0,
            Finding::passed(
                Step::Logic,
                "the transforms on a sample",
                "no transform between this source and its sinks",
            ),
        );
    }
    out
}

/// The sample as one Arrow batch (types inferred from the records).
fn sample_batch(records: &[serde_json::Value]) -> Result<arrow::array::RecordBatch, String> {
    let schema = arrow::json::reader::infer_json_schema_from_iterator(records.iter().map(Ok))
        .map_err(|e| e.to_string())?;
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::new(schema))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    decoder.serialize(records).map_err(|e| e.to_string())?;
    decoder
        .flush()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no records".to_owned())
}

/// A value's kind, coarse enough to compare a JSON sample with an Arrow schema.
fn json_kind(v: &serde_json::Value) -> Option<&'static str> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::Bool(_) => Some("boolean"),
        serde_json::Value::Number(_) => Some("number"),
        serde_json::Value::String(_) => Some("string"),
        serde_json::Value::Array(_) => Some("array"),
        serde_json::Value::Object(_) => Some("object"),
    }
}

/// The coarse kind of an Arrow type's text (`Int64`, `Utf8`, `Timestamp(...)`).
fn arrow_kind(t: &str) -> Option<&'static str> {
    let t = t.trim();
    if t.starts_with("Int")
        || t.starts_with("UInt")
        || t.starts_with("Float")
        || t.starts_with("Decimal")
    {
        Some("number")
    } else if t.contains("Utf8") || t.starts_with("Timestamp") || t.starts_with("Date") {
        Some("string")
    } else if t == "Boolean" {
        Some("boolean")
    } else if t.starts_with("Struct") || t.starts_with("Map") {
        Some("object")
    } else if t.starts_with("List") || t.starts_with("LargeList") || t.starts_with("FixedSizeList")
    {
        Some("array")
    } else {
        None
    }
}

/// Step 7: the sample's fields and kinds against the schema the last good run stored.
async fn upstream(
    store: Option<&StateStore>,
    pipeline: &str,
    node: &str,
    records: &[serde_json::Value],
) -> Vec<Finding> {
    let checked = format!("the sample's shape against node {node}'s last stored schema");
    let Some(store) = store else {
        return vec![Finding::passed(
            Step::Upstream,
            checked,
            "not checked: the state store is not reachable",
        )];
    };
    let stored = match store.latest_schema(pipeline, node).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return vec![Finding::passed(
                Step::Upstream,
                checked,
                "no schema stored yet (no run delivered a batch): nothing to compare",
            )];
        }
        Err(e) => return vec![Finding::failed(Some(Step::Dependencies), checked, e.into())],
    };
    let (fingerprint, text, at) = stored;
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(&text)
    else {
        return vec![Finding::passed(
            Step::Upstream,
            checked,
            "the stored schema is not readable: nothing to compare",
        )];
    };
    let mut seen: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for r in records {
        if let serde_json::Value::Object(m) = r {
            for (k, v) in m {
                let kinds = seen.entry(k.clone()).or_default();
                if let Some(kind) = json_kind(v) {
                    kinds.insert(kind);
                }
            }
        }
    }
    let mut changes = Vec::new();
    let mut shows: Option<&serde_json::Value> = None;
    let has = |r: &serde_json::Value, k: &str| r.get(k).is_some();
    for (name, ty) in &fields {
        let ty = ty.as_str().unwrap_or_default();
        match seen.get(name) {
            None => {
                changes.push(format!("`{name}` ({ty}) removed"));
                shows = shows.or(records.iter().find(|r| !has(r, name)));
            }
            Some(kinds) => {
                let Some(want) = arrow_kind(ty) else { continue };
                let fits =
                    |k: &&str| *k == want || (want == "string" && matches!(*k, "object" | "array"));
                if let Some(other) = kinds.iter().find(|k| !fits(k)) {
                    changes.push(format!("`{name}` retyped from {ty} ({want}) to {other}"));
                    shows = shows.or(records
                        .iter()
                        .find(|r| r.get(name).and_then(json_kind) == Some(other)));
                }
            }
        }
    }
    for name in seen.keys().filter(|k| !fields.contains_key(*k)) {
        changes.push(format!("`{name}` added"));
        shows = shows.or(records.iter().find(|r| has(r, name)));
    }
    if changes.is_empty() {
        return vec![Finding::passed(
            Step::Upstream,
            checked,
            format!(
                "{} fields as stored (schema {fingerprint}, first seen {})",
                fields.len(),
                chrono_time(at)
            ),
        )];
    }
    let record = shows
        .map(|r| {
            let t = r.to_string();
            if t.len() > 300 {
                format!("{}...", &t[..t.floor_char_boundary_compat(300)])
            } else {
                t
            }
        })
        .unwrap_or_default();
    vec![Finding::failed(
        Some(Step::Upstream),
        checked,
        ConnectorError::new(
            ErrorClass::ContractChanged,
            format!(
                "the upstream changed its records since schema {fingerprint} (first seen {}): {}",
                chrono_time(at),
                changes.join(", ")
            ),
        )
        .with_evidence(format!("a record that shows it: {record}")),
    )]
}

/// `str::floor_char_boundary` (Rust 1.91), for the MSRV.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, at: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, at: usize) -> usize {
        let mut at = at.min(self.len());
        while !self.is_char_boundary(at) {
            at -= 1;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remedies_are_the_troubleshooting_pages_words() {
        for class in ErrorClass::ALL {
            let r = remedy(class);
            assert!(!r.is_empty(), "no remedy for {class}");
            let page: String = TROUBLESHOOTING
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            assert!(page.contains(&r), "{class}: {r}");
        }
        assert!(remedy(ErrorClass::Network).contains("getent hosts"));
        assert_eq!(
            remedy_link(ErrorClass::RateLimited),
            "docs/troubleshooting.md#rate_limited"
        );
    }

    #[test]
    fn coarse_kinds_match_arrow_and_json() {
        assert_eq!(arrow_kind("Int64"), json_kind(&serde_json::json!(3)));
        assert_eq!(arrow_kind("Utf8"), json_kind(&serde_json::json!("x")));
        assert_eq!(
            arrow_kind("Timestamp(Microsecond, Some(\"UTC\"))"),
            Some("string")
        );
    }

    #[tokio::test]
    async fn a_renamed_field_is_named_with_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = StateStore::open(&url).await.unwrap();
        let schema = arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("status", arrow::datatypes::DataType::Utf8, true),
        ]);
        let (fp, text) = schema_fingerprint(&schema);
        store.record_schema("p", "api", &fp, &text).await.unwrap();
        let same = [serde_json::json!({"id": 1, "status": "new"})];
        let f = upstream(Some(&store), "p", "api", &same).await;
        assert!(f[0].outcome.is_ok(), "{f:?}");
        let renamed = [serde_json::json!({"id": "1", "state": "new"})];
        let f = upstream(Some(&store), "p", "api", &renamed).await;
        let e = f[0].outcome.as_ref().unwrap_err();
        assert_eq!(e.class, ErrorClass::ContractChanged);
        assert!(
            e.message.contains("`status` (Utf8) removed"),
            "{}",
            e.message
        );
        assert!(e.message.contains("`state` added"), "{}", e.message);
        assert!(e.message.contains("`id` retyped"), "{}", e.message);
        assert!(e.evidence.as_deref().unwrap().contains("\"state\""));
    }
}
