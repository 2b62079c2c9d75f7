//! Health-gated flow: while a link the pipeline needs is down, its sources read nothing.
//!
//! One [`Gate`] per run. Under `when_link_down: pause`, a sink that wrote in this run
//! and whose write now fails with a `network` or `dependency` error checks its database
//! links (the kind's own `links` checks, as
//! `sluice health` does): if one is down, the sink closes the gate, raises `link_down`,
//! and checks again every [`GateSpec::probe_every`] (with jitter) until the link answers;
//! then it opens the gate, raises `link_recovered` with the downtime and writes the same
//! batch again (its retry budget untouched). A source awaits the open gate before each
//! read. The Kafka buffer is gated the same way, by its sources' publishes and its
//! consumers' reads. The buffer's `max_lag` raises `backlog`, and under
//! `when_link_down: buffer` pauses the sources too. Each pause is in the run record (an
//! attempt at the source when it pauses and when it goes on, with the cause and length)
//! and in the events ([`EventKind::Paused`], [`EventKind::Resumed`]).

use futures::future::BoxFuture;
use sluice_buffer::Buffer;
use sluice_config::spec::{AlertsSpec, WhenLinkDown};
use sluice_config::{Link, LinkKind};
use sluice_core::{BreakerNote, ConnectorError, ErrorClass};
use sluice_state::{AlertKind, AlertRow, AlertSeverity, StateStore, now_ms};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::EventKind;
use crate::alerts::{self, AlertQueue};
use crate::deliver::NodeCtx;

/// How long one link check may take before the link counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a source compares the backlog with `max_lag` (and, paused by it, checks
/// again).
const LAG_EVERY: Duration = Duration::from_secs(1);

/// A node's link checks, made anew at each probe (the kind's `links`).
pub type LinkProbe = Arc<dyn Fn() -> Vec<Link> + Send + Sync>;

/// How a pipeline's flow is gated (built from the plan; `None` on a [`crate::Pipeline`]
/// runs ungated).
#[derive(Clone)]
pub struct GateSpec {
    /// `pause` or `buffer`.
    pub when_link_down: WhenLinkDown,
    /// The buffer's `max_lag`, in batches.
    pub max_lag: Option<u64>,
    /// The buffer's `max_lag` as the age of the oldest batch waiting.
    pub max_lag_age: Option<Duration>,
    /// How often a link found down is checked again (jittered by up to a fifth).
    pub probe_every: Duration,
    /// The buffer as `sluice health` names it (`kafka 127.0.0.1:9092`).
    pub buffer_link: String,
    /// Each sink's link checks, by node id.
    pub probes: HashMap<String, LinkProbe>,
    /// The pipeline file's name, for the `next` command of alerts.
    pub file: Option<String>,
}

impl std::fmt::Debug for GateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateSpec")
            .field("when_link_down", &self.when_link_down)
            .field("max_lag", &self.max_lag)
            .field("max_lag_age", &self.max_lag_age)
            .field("probe_every", &self.probe_every)
            .finish_non_exhaustive()
    }
}

/// The condition key of a link, the same for the run's gate, `sluice health` and the
/// monitor of `sluice serve`: one alert per link whoever sees it down.
pub fn link_key(kind: LinkKind, link: &str) -> String {
    format!("{kind} {link}")
}

/// The condition key of a host's circuit breaker (`breaker api.example.com:443`).
pub fn breaker_key(host: &str) -> String {
    format!("breaker {host}")
}

/// A link found down.
#[derive(Debug, Clone)]
struct Down {
    kind: LinkKind,
    link: String,
    error: ConnectorError,
}

/// Why the gate is closed, per node that closed it.
#[derive(Debug, Clone)]
struct Closed {
    node: String,
    link: String,
    class: ErrorClass,
    message: String,
}

/// What waiting for a link came to.
pub(crate) enum Held {
    /// The links answer: the failure is the write's own, handled by its class.
    Up,
    /// The link was down and answers again: try the batch again.
    Recovered,
    /// The run was stopped while waiting.
    Cancelled,
}

/// A run's gate (see the module).
pub(crate) struct Gate {
    spec: GateSpec,
    closed: watch::Sender<BTreeMap<String, Closed>>,
    alerts: AlertsSpec,
    store: StateStore,
    pipeline: String,
    queue: AlertQueue,
    buffer: Arc<dyn Buffer>,
    /// The consumer groups reading each source's topic.
    consumers: HashMap<String, Vec<String>>,
    /// When each open breaker (by host) was last weighed against
    /// `alerts.breaker_open_for` past it: the state store is asked at most once a second.
    breakers: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Gate {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        spec: GateSpec,
        alerts: AlertsSpec,
        store: StateStore,
        pipeline: String,
        queue: AlertQueue,
        buffer: Arc<dyn Buffer>,
        consumers: HashMap<String, Vec<String>>,
    ) -> Self {
        Gate {
            spec,
            closed: watch::Sender::new(BTreeMap::new()),
            alerts,
            store,
            pipeline,
            queue,
            buffer,
            consumers,
            breakers: std::sync::Mutex::default(),
        }
    }

    /// A connector's event, as it happens: a circuit breaker open longer than
    /// `alerts.breaker_open_for` raises `breaker_open` (a condition, once while it
    /// holds); the breaker closing clears it with a `recovered` alert. Never waits: the
    /// alerts go through the run's queue.
    pub(crate) fn connector_event(&self, node: &str, event: &sluice_core::ConnectorEvent) {
        let Some(note) = &event.breaker else {
            return;
        };
        match note {
            BreakerNote::Open { host, since } => {
                let held = std::time::SystemTime::now()
                    .duration_since(*since)
                    .unwrap_or_default();
                let bound = self.alerts.breaker_open_for.value.get();
                if held < bound {
                    return;
                }
                {
                    let mut last = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
                    if last.get(host).is_some_and(|t| t.elapsed() < LAG_EVERY) {
                        return;
                    }
                    last.insert(host.clone(), Instant::now());
                }
                let since_ms = since
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let alert = AlertRow {
                    pipeline: self.pipeline.clone(),
                    node: Some(node.to_owned()),
                    kind: AlertKind::BreakerOpen,
                    class: Some(ErrorClass::Dependency),
                    severity: AlertSeverity::Critical,
                    message: format!(
                        "node `{node}`: the circuit breaker for {host} has been open for {} (since {}), longer than `breaker_open_for` ({}): the API keeps failing",
                        alerts::message::span(held.as_millis() as i64),
                        alerts::message::time(since_ms),
                        self.alerts.breaker_open_for.value
                    ),
                    at: now_ms(),
                };
                let (spec, store, subject) =
                    (self.alerts.clone(), self.store.clone(), breaker_key(host));
                self.queue.push(async move {
                    alerts::raise_condition(&spec, &alert, &subject, "sluice runs", &store).await;
                });
            }
            BreakerNote::Closed { host } => {
                self.breakers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(host);
                let (spec, store, pipeline, node, host) = (
                    self.alerts.clone(),
                    self.store.clone(),
                    self.pipeline.clone(),
                    node.to_owned(),
                    host.clone(),
                );
                self.queue.push(async move {
                    let subject = breaker_key(&host);
                    alerts::clear(
                        &spec,
                        &store,
                        &pipeline,
                        Some(&subject),
                        AlertKind::BreakerOpen,
                        |_, held| {
                            Some((
                                AlertRow {
                                    pipeline: pipeline.clone(),
                                    node: Some(node.clone()),
                                    kind: AlertKind::Recovered,
                                    class: None,
                                    severity: AlertSeverity::Info,
                                    message: format!(
                                        "node `{node}`: the circuit breaker for {host} closed (its probes succeeded); it had been reported open for {}",
                                        alerts::message::span(held)
                                    ),
                                    at: now_ms(),
                                },
                                "sluice runs".to_owned(),
                            ))
                        },
                    )
                    .await;
                });
            }
        }
    }

    /// Whether a link is down right now (the sources are to pause).
    pub(crate) fn is_closed(&self) -> bool {
        self.pauses() && !self.closed.borrow().is_empty()
    }

    fn pauses(&self) -> bool {
        self.spec.when_link_down == WhenLinkDown::Pause
    }

    fn next(&self) -> String {
        match &self.spec.file {
            Some(file) => format!("sluice health {file}"),
            None => "sluice alerts".to_owned(),
        }
    }

    /// Under `pause`, a sink's write failed with `error`: if one of its links is down,
    /// waits for it (see the module).
    pub(crate) async fn hold_sink(&self, ctx: &mut NodeCtx, error: &ConnectorError) -> Held {
        if !self.pauses() || !matches!(error.class, ErrorClass::Network | ErrorClass::Dependency) {
            return Held::Up;
        }
        let Some(probe) = self.spec.probes.get(&ctx.node).cloned() else {
            return Held::Up;
        };
        let check = move || -> BoxFuture<'static, Option<Down>> {
            let links = probe();
            Box::pin(first_down(links))
        };
        self.hold(ctx, check, false).await
    }

    /// Under `pause`, the buffer failed with `error`: if it is down, waits for it.
    pub(crate) async fn hold_buffer(&self, ctx: &mut NodeCtx, error: &ConnectorError) -> Held {
        if !self.pauses() || !matches!(error.class, ErrorClass::Network | ErrorClass::Dependency) {
            return Held::Up;
        }
        self.hold(ctx, self.buffer_check(), false).await
    }

    /// How often a link found down is checked again; under `pause`, a source whose
    /// publish is not acknowledged within it checks the buffer (see
    /// [`Gate::hold_unacked`]). `None` when the flow does not pause.
    pub(crate) fn ack_patience(&self) -> Option<Duration> {
        self.pauses().then_some(self.spec.probe_every)
    }

    /// Under `pause`, a source's publish is not acknowledged yet (Kafka's producer
    /// queues while the brokers are down and reports nothing before its delivery
    /// timeout): if the buffer is down, the source pauses until it answers, the run
    /// records the pause at the source, and `link_down` (then `link_recovered`) goes out.
    pub(crate) async fn hold_unacked(&self, ctx: &mut NodeCtx) -> Held {
        if !self.pauses() {
            return Held::Up;
        }
        self.hold(ctx, self.buffer_check(), true).await
    }

    /// The buffer's health check, as a link check.
    fn buffer_check(&self) -> impl Fn() -> BoxFuture<'static, Option<Down>> + use<> {
        let (buffer, link) = (self.buffer.clone(), self.spec.buffer_link.clone());
        move || -> BoxFuture<'static, Option<Down>> {
            let (buffer, link) = (buffer.clone(), link.clone());
            Box::pin(async move {
                let result = tokio::time::timeout(PROBE_TIMEOUT, buffer.health()).await;
                let error = match result {
                    Ok(Ok(_)) => return None,
                    Ok(Err(e)) => ConnectorError::from(e),
                    Err(_) => timed_out(),
                };
                Some(Down {
                    kind: LinkKind::Buffer,
                    link,
                    error,
                })
            })
        }
    }

    /// Waits while `check` finds a link down (see the module). `source`: the node
    /// waiting is a source, whose wait is recorded as its pause (`paused: ...`,
    /// `resumed after ...`), as the other sources record theirs.
    async fn hold<F>(&self, ctx: &mut NodeCtx, check: F, source: bool) -> Held
    where
        F: Fn() -> BoxFuture<'static, Option<Down>>,
    {
        let Some(down) = check().await else {
            return Held::Up;
        };
        let key = link_key(down.kind, &down.link);
        let started = Instant::now();
        tracing::warn!(pipeline = %self.pipeline, node = %ctx.node, link = %down.link, class = %down.error.class, "link down: the sources pause until it answers (when_link_down: pause): {}", down.error.message);
        self.closed.send_modify(|c| {
            c.insert(
                ctx.node.clone(),
                Closed {
                    node: ctx.node.clone(),
                    link: key.clone(),
                    class: down.error.class,
                    message: down.error.message.clone(),
                },
            );
        });
        ctx.emit(EventKind::LinkWentDown {
            link: key.clone(),
            class: down.error.class,
            message: down.error.message.clone(),
        });
        let why = format!(
            "{key} is down ({}: {})",
            down.error.class, down.error.message
        );
        if source {
            ctx.emit(EventKind::Paused {
                cause: why.clone(),
                class: down.error.class,
            });
            ctx.record_attempt(&ConnectorError::new(
                down.error.class,
                format!("paused: {why}; no reads until it answers (when_link_down: pause)"),
            ))
            .await;
        } else {
            ctx.record_attempt(&ConnectorError::new(
                down.error.class,
                format!(
                    "{key} is down: {}; the node waits for it and the sources pause (when_link_down: pause)",
                    down.error.message
                ),
            ))
            .await;
        }
        let alert = AlertRow {
            pipeline: self.pipeline.clone(),
            node: Some(ctx.node.clone()),
            kind: AlertKind::LinkDown,
            class: Some(down.error.class),
            severity: AlertSeverity::Critical,
            message: format!("{key} is down: {}", down.error.message),
            at: now_ms(),
        };
        let (spec, store, next, subject) = (
            self.alerts.clone(),
            self.store.clone(),
            self.next(),
            key.clone(),
        );
        self.queue.push(async move {
            alerts::raise_condition(&spec, &alert, &subject, &next, &store).await;
        });
        let outcome = loop {
            let wait = jitter(self.spec.probe_every);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = ctx.cancel.cancelled() => break Held::Cancelled,
            }
            match check().await {
                None => break Held::Recovered,
                Some(again) => {
                    tracing::debug!(node = %ctx.node, link = %key, "still down: {}", again.error.message)
                }
            }
        };
        self.closed.send_modify(|c| match outcome {
            // The link answers: every node held by it (each probes on its own clock)
            // stops holding the gate closed now, not at its own next probe.
            Held::Recovered => c.retain(|node, closed| *node != ctx.node && closed.link != key),
            _ => {
                c.remove(&ctx.node);
            }
        });
        let held = started.elapsed();
        if let Held::Cancelled = outcome {
            return outcome;
        }
        tracing::info!(pipeline = %self.pipeline, node = %ctx.node, link = %key, "link up again after {:.1}s: the flow goes on", held.as_secs_f64());
        ctx.emit(EventKind::LinkCameBack {
            link: key.clone(),
            down_for: held,
        });
        if source {
            self.resumed(ctx, down.error.class, &why, held).await;
        }
        let (spec, store, next, pipeline, node) = (
            self.alerts.clone(),
            self.store.clone(),
            self.next(),
            self.pipeline.clone(),
            ctx.node.clone(),
        );
        self.queue.push(async move {
            alerts::clear(
                &spec,
                &store,
                &pipeline,
                Some(&key),
                AlertKind::LinkDown,
                |_, since| {
                    Some((
                        AlertRow {
                            pipeline: pipeline.clone(),
                            node: Some(node.clone()),
                            kind: AlertKind::LinkRecovered,
                            class: None,
                            severity: AlertSeverity::Info,
                            message: format!(
                                "{key} is up again after {} down",
                                alerts::message::span(since)
                            ),
                            at: now_ms(),
                        },
                        next.clone(),
                    ))
                },
            )
            .await;
        });
        outcome
    }

    /// Before a source's read: waits while the gate is closed (under `pause`), or while
    /// the backlog is above `max_lag` (under `buffer`). `false` when the run was stopped
    /// meanwhile. `lag_checked` is when the source last compared the backlog.
    pub(crate) async fn before_read(&self, ctx: &mut NodeCtx, lag_checked: &mut Instant) -> bool {
        if self.pauses() && !self.wait_open(ctx).await {
            return false;
        }
        let bounded = self.spec.max_lag.is_some() || self.spec.max_lag_age.is_some();
        if bounded && lag_checked.elapsed() >= LAG_EVERY {
            *lag_checked = Instant::now();
            return self.check_lag(ctx).await;
        }
        true
    }

    async fn wait_open(&self, ctx: &mut NodeCtx) -> bool {
        let mut rx = self.closed.subscribe();
        let first = rx.borrow_and_update().values().next().cloned();
        let Some(cause) = first else {
            return true;
        };
        let started = Instant::now();
        let why = format!(
            "node `{}`: {} is down ({}: {})",
            cause.node, cause.link, cause.class, cause.message
        );
        tracing::info!(pipeline = %self.pipeline, node = %ctx.node, "source paused: {why}");
        ctx.emit(EventKind::Paused {
            cause: why.clone(),
            class: cause.class,
        });
        ctx.record_attempt(&ConnectorError::new(
            cause.class,
            format!("paused: {why}; no reads until it answers (when_link_down: pause)"),
        ))
        .await;
        loop {
            if rx.borrow_and_update().is_empty() {
                break;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = ctx.cancel.cancelled() => return false,
            }
        }
        self.resumed(ctx, cause.class, &why, started.elapsed())
            .await;
        true
    }

    async fn resumed(&self, ctx: &mut NodeCtx, class: ErrorClass, why: &str, paused: Duration) {
        tracing::info!(pipeline = %self.pipeline, node = %ctx.node, "source resumed after {:.1}s paused", paused.as_secs_f64());
        ctx.emit(EventKind::Resumed { paused });
        ctx.record_attempt(&ConnectorError::new(
            class,
            format!(
                "resumed after {:.1}s paused ({} ms): {why}",
                paused.as_secs_f64(),
                paused.as_millis()
            ),
        ))
        .await;
    }

    /// The backlog of the source's topic against `max_lag`: above it, a `backlog` alert
    /// (once while it holds), and under `buffer` a pause until it is back under.
    async fn check_lag(&self, ctx: &mut NodeCtx) -> bool {
        let topic = crate::topic_name(&ctx.namespace, &ctx.node);
        let Some(over) = self.over_lag(&topic).await else {
            alerts::clear(
                &self.alerts,
                &self.store,
                &self.pipeline,
                Some(&topic),
                AlertKind::Backlog,
                |_, _| None,
            )
            .await;
            return true;
        };
        let alert = AlertRow {
            pipeline: self.pipeline.clone(),
            node: Some(ctx.node.clone()),
            kind: AlertKind::Backlog,
            class: None,
            severity: AlertSeverity::Warning,
            message: format!("the backlog of `{}` in the buffer: {over}", ctx.node),
            at: now_ms(),
        };
        let (spec, store, next, subject) = (
            self.alerts.clone(),
            self.store.clone(),
            self.next(),
            topic.clone(),
        );
        self.queue.push(async move {
            alerts::raise_condition(&spec, &alert, &subject, &next, &store).await;
        });
        if self.pauses() {
            return true;
        }
        let why = format!("the backlog of `{}`: {over}", ctx.node);
        let started = Instant::now();
        ctx.emit(EventKind::Paused {
            cause: why.clone(),
            class: ErrorClass::Dependency,
        });
        ctx.record_attempt(&ConnectorError::new(
            ErrorClass::Dependency,
            format!("paused: {why}; no reads until it is under (when_link_down: buffer)"),
        ))
        .await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LAG_EVERY) => {}
                _ = ctx.cancel.cancelled() => return false,
            }
            if self.over_lag(&topic).await.is_none() {
                break;
            }
        }
        self.resumed(ctx, ErrorClass::Dependency, &why, started.elapsed())
            .await;
        true
    }

    /// How the backlog of the groups reading `topic` is above `max_lag` (the largest
    /// number of batches waiting, the oldest batch waiting), if it is.
    async fn over_lag(&self, topic: &str) -> Option<String> {
        let source = topic.rsplit('.').next().unwrap_or(topic);
        let groups = self.consumers.get(source)?;
        let mut over = Vec::new();
        if let Some(max) = self.spec.max_lag {
            let mut worst = 0;
            for group in groups {
                match self.buffer.lag(topic, group).await {
                    Ok(lag) => worst = worst.max(lag),
                    Err(e) => {
                        tracing::debug!(topic, group, error = %e, "cannot read the backlog");
                    }
                }
            }
            if worst > max {
                over.push(format!(
                    "{worst} batch(es) wait, above `max_lag` ({max} batches)"
                ));
            }
        }
        if let Some(max_age) = self.spec.max_lag_age {
            let mut oldest: Option<i64> = None;
            for group in groups {
                match self.buffer.oldest_uncommitted(topic, group).await {
                    Ok(Some(at)) => oldest = Some(oldest.map_or(at, |o| o.min(at))),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(topic, group, error = %e, "cannot read the oldest batch waiting");
                    }
                }
            }
            let max_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
            if let Some(at) = oldest
                && now_ms() - at > max_ms
            {
                over.push(format!(
                    "the oldest batch waiting was created {} ago (at {}), above `max_lag` ({})",
                    alerts::message::span(now_ms() - at),
                    alerts::message::time(at),
                    sluice_config::values::Duration(max_age)
                ));
            }
        }
        (!over.is_empty()).then(|| over.join("; "))
    }
}

/// Runs every check; the first link down, if any.
async fn first_down(links: Vec<Link>) -> Option<Down> {
    let checks = links.into_iter().map(|l| async move {
        let result = match tokio::time::timeout(PROBE_TIMEOUT, l.check).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        };
        result.err().map(|error| Down {
            kind: l.kind,
            link: l.name,
            error,
        })
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .next()
}

fn timed_out() -> ConnectorError {
    ConnectorError::new(
        ErrorClass::Network,
        format!(
            "no answer within {}s: check that the host is reachable from here (firewall, proxy, DNS)",
            PROBE_TIMEOUT.as_secs()
        ),
    )
}

/// `every`, give or take a fifth: probes of several pipelines do not fall in step.
pub fn jitter(every: Duration) -> Duration {
    use rand::Rng;
    let spread = every.as_millis() as u64 / 5;
    if spread == 0 {
        return every;
    }
    let offset = rand::rng().random_range(0..=2 * spread);
    (every + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth() {
        let every = Duration::from_secs(10);
        for _ in 0..100 {
            let j = jitter(every);
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
        assert_eq!(jitter(Duration::from_millis(3)), Duration::from_millis(3));
    }

    fn buffer_of(max_lag: &str) -> Result<sluice_config::spec::BufferSpec, String> {
        crate::build::plan_with_buffer(&format!("embedded: {{ max_lag: {max_lag} }}"))
            .map(|plan| plan.buffer)
    }

    #[test]
    fn max_lag_is_batches_an_age_or_both() {
        let batches = buffer_of("10000").unwrap();
        assert_eq!(batches.max_lag(), Some(10000));
        assert_eq!(batches.max_lag_age(), None);
        let age = buffer_of("10m").unwrap();
        assert_eq!(age.max_lag(), None);
        assert_eq!(age.max_lag_age(), Some(Duration::from_secs(600)));
        let both = buffer_of("{ batches: 5, age: 30s }").unwrap();
        assert_eq!(both.max_lag(), Some(5));
        assert_eq!(both.max_lag_age(), Some(Duration::from_secs(30)));
        for bad in ["0", "0s", "-3", "\"ten\"", "1.5", "{}", "{ rows: 3 }"] {
            assert!(
                buffer_of(bad).is_err(),
                "`max_lag: {bad}` should not validate"
            );
        }
    }
}
