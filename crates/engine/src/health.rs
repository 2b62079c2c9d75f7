//! Link checks (`sluice health`): every API, database, folder, buffer and state store a
//! pipeline depends on, checked the way the run would use it, each failure given its
//! class. Each node's links come from its kind (`NodeConfig::links`, which checks through
//! the built source or sink); the buffer and the state store are the pipeline's own.

use futures::future::join_all;
use sluice_config::LinkKind;
use sluice_config::plan::Plan;
use sluice_core::{ConnectorError, ErrorClass};
use sluice_state::StateStore;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::build::{self, BuildContext};

/// How long one check may take before its link counts as down (`network`).
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// One link of a pipeline and how its check went.
#[derive(Debug, Clone)]
pub struct LinkCheck {
    /// What kind of link.
    pub kind: LinkKind,
    /// What is checked, without secrets: `127.0.0.1:5432/sluice (PostgreSQL)`.
    pub link: String,
    /// The nodes that use it (empty for the buffer and the state store).
    pub nodes: Vec<String>,
    /// Its latency, or why it is down.
    pub result: Result<Duration, ConnectorError>,
}

impl LinkCheck {
    /// Whether the link answered.
    pub fn is_up(&self) -> bool {
        self.result.is_ok()
    }
}

type Check = Pin<Box<dyn Future<Output = Result<Duration, ConnectorError>> + Send>>;

/// A link to check: what, who uses it, how.
struct Probe {
    kind: LinkKind,
    link: String,
    nodes: Vec<String>,
    check: Check,
}

/// Checks every link of the plan at once: each HTTP source's first request (with its
/// auth), each database (connect and `SELECT 1`), the buffer (and, for Kafka, each
/// broker on its own and the pipeline's partitions' leaders), the state store. Links used
/// by several nodes are checked once. Nothing is read on, written or checkpointed.
pub async fn check_links(plan: &Plan, ctx: &BuildContext) -> Vec<LinkCheck> {
    let mut probes: BTreeMap<(LinkKind, String), Probe> = BTreeMap::new();
    let mut add = |kind: LinkKind, link: String, node: Option<&str>, check: Check| {
        let probe = probes.entry((kind, link.clone())).or_insert(Probe {
            kind,
            link,
            nodes: Vec::new(),
            check,
        });
        if let Some(node) = node
            && !probe.nodes.iter().any(|n| n == node)
        {
            probe.nodes.push(node.to_owned());
        }
    };
    let ctx = &ctx.for_pipeline(&plan.pipeline);
    for node in &plan.nodes {
        let compensate = node.compensate.iter().map(|t| &t.config);
        for config in std::iter::once(&node.config).chain(compensate) {
            for link in config.links(node, ctx) {
                add(link.kind, link.name, Some(&node.id), link.check);
            }
        }
    }
    for link in own_links(plan, ctx) {
        add(link.kind, link.name, None, link.check);
    }

    let checks = probes.into_values().map(|p| async move {
        let result = match tokio::time::timeout(CHECK_TIMEOUT, p.check).await {
            Ok(r) => r,
            Err(_) => Err(ConnectorError::new(
                ErrorClass::Network,
                format!(
                    "no answer within {}s: check that the host is reachable from here (firewall, proxy, DNS)",
                    CHECK_TIMEOUT.as_secs()
                ),
            )),
        };
        LinkCheck {
            kind: p.kind,
            link: p.link,
            nodes: p.nodes,
            result,
        }
    });
    join_all(checks).await
}

/// The buffer as its link is named: `kafka 127.0.0.1:9092`, `embedded .sluice/buffer`.
pub fn buffer_link(buffer: &sluice_config::spec::BufferSpec, ctx: &BuildContext) -> String {
    match buffer {
        sluice_config::spec::BufferSpec::Kafka(k) => format!(
            "kafka {}",
            k.brokers
                .value
                .iter()
                .map(|b| b.value.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        sluice_config::spec::BufferSpec::Embedded(e) => {
            format!("embedded {}", ctx.base_dir.join(&e.path).display())
        }
    }
}

/// The pipeline's own links: its buffer and its state store, each with its check.
pub(crate) fn own_links(plan: &Plan, ctx: &BuildContext) -> Vec<sluice_config::Link> {
    let mut out = Vec::new();
    let buffer_link = buffer_link(&plan.buffer, ctx);
    let buffer = build::open_buffer(plan, ctx);
    out.push(sluice_config::Link {
        kind: LinkKind::Buffer,
        name: buffer_link,
        check: Box::pin(async move {
            let started = Instant::now();
            let buffer = match buffer {
                Ok(buffer) => buffer,
                // A run owns the embedded log right now: it is up, and in use.
                Err(build::BuildError::Buffer(sluice_buffer::BufferError::Locked { .. })) => {
                    return Ok(started.elapsed());
                }
                Err(e) => return Err(e.into()),
            };
            Ok(buffer.health().await?)
        }),
    });
    // Kafka's parts one by one: each broker named in `brokers:` on its own, and the
    // pipeline's partitions (each with a leader, every broker of the cluster reachable).
    match build::buffer_parts(plan) {
        Ok(parts) => out.extend(parts.into_iter().map(|part| {
            let check = part.check;
            sluice_config::Link {
                kind: LinkKind::Buffer,
                name: part.name,
                check: Box::pin(async move { Ok(check.await?) }),
            }
        })),
        Err(e) => tracing::debug!(error = %e, "no client for the buffer's parts"),
    }
    let state_url = ctx.database_url(plan.state.expose());
    out.push(sluice_config::Link {
        kind: LinkKind::State,
        name: sluice_state::redact_url(plan.state.expose()),
        check: Box::pin(async move {
            let started = Instant::now();
            StateStore::open(&state_url).await?;
            Ok(started.elapsed())
        }),
    });
    out
}

/// Raises a `link_down` alert for each link down and clears those that answer again,
/// with a `link_recovered` saying how long they were down: the conditions are in the
/// state store (keyed by [`crate::gate::link_key`]), so `sluice health --watch`, the
/// monitor of `sluice serve` and a run's gate alert a link once between them, then remind
/// every `repeat_every`. Without a state store, only this caller's changes alert:
/// `down_since` keeps its own view (link key -> since, ms).
pub async fn report_links(
    store: Option<&StateStore>,
    pipeline: &str,
    spec: &sluice_config::spec::AlertsSpec,
    next: &str,
    checks: &[LinkCheck],
    down_since: &mut std::collections::HashMap<String, i64>,
) {
    use sluice_state::{AlertKind, AlertRow, AlertSeverity, now_ms};
    for c in checks {
        let key = crate::gate::link_key(c.kind, &c.link);
        let was_down = down_since.get(&key).copied();
        match &c.result {
            Err(e) => {
                down_since.entry(key.clone()).or_insert_with(now_ms);
                let row = AlertRow {
                    pipeline: pipeline.to_owned(),
                    node: c.nodes.first().cloned(),
                    kind: AlertKind::LinkDown,
                    class: Some(e.class),
                    severity: AlertSeverity::Critical,
                    message: format!("{key} is down: {}", e.message),
                    at: now_ms(),
                };
                match store {
                    Some(store) => {
                        crate::alerts::raise_condition(spec, &row, &key, next, store).await
                    }
                    None if was_down.is_none() => {
                        crate::alerts::deliver_unrecorded(spec, &row, next).await
                    }
                    None => {}
                }
            }
            Ok(_) => {
                down_since.remove(&key);
                let recovered = |held: i64| AlertRow {
                    pipeline: pipeline.to_owned(),
                    node: c.nodes.first().cloned(),
                    kind: AlertKind::LinkRecovered,
                    class: None,
                    severity: AlertSeverity::Info,
                    message: format!(
                        "{key} is up again after {} down",
                        crate::alerts::message::span(held)
                    ),
                    at: now_ms(),
                };
                match (store, was_down) {
                    (Some(store), _) => {
                        crate::alerts::clear(
                            spec,
                            store,
                            pipeline,
                            Some(&key),
                            AlertKind::LinkDown,
                            |_, held| Some((recovered(held), next.to_owned())),
                        )
                        .await
                    }
                    (None, Some(since)) => {
                        let row = recovered(now_ms() - since);
                        crate::alerts::deliver_unrecorded(spec, &row, next).await
                    }
                    (None, None) => {}
                }
            }
        }
    }
}
