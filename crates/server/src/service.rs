//! The service: the pipelines served (one slot each, with its worker and its schedule),
//! the state stores they use, and what a run does.

use chrono::{DateTime, TimeZone, Utc};
use sluice_buffer::Buffer;
use sluice_config::spec::{CatchUp, Overlap, Schedule};
use sluice_engine::build::{self, BuildContext};
use sluice_engine::{Executor, ReplayReport, RunSummary};
use sluice_state::{FailedBatchFilter, RunStatus, StateStore, Trigger, now_ms};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog::{self, Loaded};
use crate::metrics::Metrics;
use crate::owner::{self, NotTaken};
use crate::{ServeError, ServeOptions};

/// The checkpoint row (in place of a node id) that keeps a cron pipeline's last tick:
/// `{"tick": <ms since the epoch>}`. Node ids never start with `@`.
pub(crate) const TICK_ENTRY: &str = "@tick";

/// At most this many runs for the ticks missed while down (`catch_up: all`).
const MAX_CATCH_UP: usize = 100;

/// The pause between realtime runs that found data, so that a `sluice replay --wait`
/// or `sluice run --once --wait` beside the service gets its turn.
const HANDOVER_GAP: Duration = Duration::from_millis(200);

/// How a run or replay asked of a worker ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// It ran.
    Ran(Box<RunSummary>),
    /// A replay ran.
    Replayed(Box<ReplayReport>),
    /// It did not start: why (the lease is held elsewhere, parked, stopping).
    Skipped(String),
    /// It could not start or failed outside of a node.
    Failed(sluice_core::ErrorClass, String),
}

/// What a worker is asked to do.
pub(crate) enum Request {
    Run {
        trigger: Trigger,
        done: Option<oneshot::Sender<Outcome>>,
    },
    Replay {
        filter: FailedBatchFilter,
        done: oneshot::Sender<Outcome>,
    },
}

/// A run going on.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Running {
    pub(crate) trigger: Trigger,
    pub(crate) since: i64,
}

/// One pipeline served.
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) store: StateStore,
    pub(crate) state_url: String,
    current: RwLock<Arc<Loaded>>,
    /// A broken edit of the file: why its last good version still runs.
    pub(crate) reload_error: Mutex<Option<String>>,
    pub(crate) running: Mutex<Option<Running>>,
    queued: AtomicUsize,
    pub(crate) next_run: Mutex<Option<i64>>,
    pub(crate) last_skip: Mutex<Option<String>>,
    tx: mpsc::UnboundedSender<Request>,
    /// Cancelled when the pipeline is no longer served (its file deleted, or stopping).
    pub(crate) cancel: CancellationToken,
    /// Cancels the current schedule loop (replaced on reload).
    schedule: Mutex<CancellationToken>,
    /// With a shared (PostgreSQL) store and the embedded buffer: the lease that keeps
    /// other workers from serving the pipeline (its buffer is on this machine only).
    guard: Mutex<Option<sluice_state::Lease>>,
    /// Held by a run (or replay) from taking the pipeline to releasing it, and by a link
    /// check when no run goes on: a check opens the embedded buffer (locking it) and
    /// must not make a run starting meanwhile find its own buffer taken.
    turn: tokio::sync::Mutex<()>,
}

impl Slot {
    /// The version new runs use.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("slot").clone()
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.running.lock().expect("slot").is_some() || self.queued.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Hands a request to the worker; `false` once the pipeline is no longer served.
    pub(crate) fn enqueue(&self, request: Request) -> bool {
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(request).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn dequeued(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    fn skipped(&self, why: String) {
        *self.last_skip.lock().expect("slot") = Some(why);
    }
}

/// The service's shared state.
pub(crate) struct Service {
    paths: Vec<PathBuf>,
    state_override: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) ctx: BuildContext,
    lease_ttl: Duration,
    stores: tokio::sync::Mutex<BTreeMap<String, StateStore>>,
    /// The `sluice serve` locks of the SQLite stores (one worker each).
    serve_locks: Mutex<Vec<std::fs::File>>,
    pub(crate) slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Files that do not validate (or clash), with why.
    pub(crate) invalid: RwLock<BTreeMap<PathBuf, String>>,
    pub(crate) metrics: Arc<Metrics>,
    /// Cancelled on stop: no new runs.
    pub(crate) stopping: CancellationToken,
    /// Cancelled when the stop timeout passed: runs stop gracefully.
    abort: CancellationToken,
    workers: Mutex<Vec<JoinHandle<()>>>,
    started: AtomicBool,
    ready: AtomicBool,
    /// One rescan at a time.
    rescanning: tokio::sync::Mutex<()>,
    /// The last link check of each pipeline: when (ms) and each link.
    pub(crate) links: RwLock<BTreeMap<String, (i64, Vec<serde_json::Value>)>>,
    /// Per pipeline, the links this service saw down (link key -> since, ms).
    down_since: tokio::sync::Mutex<BTreeMap<String, std::collections::HashMap<String, i64>>>,
    /// The service's default alert channels (`--alerts FILE`).
    default_alerts: Option<sluice_config::spec::AlertsSpec>,
}

impl Service {
    pub(crate) fn new(opts: &ServeOptions) -> Arc<Service> {
        Arc::new(Service {
            paths: opts.paths.clone(),
            state_override: opts.state.clone(),
            token: opts.token.clone(),
            ctx: BuildContext::default(),
            lease_ttl: opts.lease_ttl,
            stores: tokio::sync::Mutex::default(),
            serve_locks: Mutex::default(),
            slots: RwLock::default(),
            invalid: RwLock::default(),
            metrics: Arc::new(Metrics::new()),
            stopping: CancellationToken::new(),
            abort: CancellationToken::new(),
            workers: Mutex::default(),
            started: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            rescanning: tokio::sync::Mutex::default(),
            links: RwLock::default(),
            down_since: tokio::sync::Mutex::default(),
            default_alerts: opts.alerts.clone(),
        })
    }

    /// Where a pipeline's alerts go: its own `alerts:` when it has channels, else the
    /// service's default channels (`--alerts FILE`), else the log.
    pub(crate) fn alerts_for(&self, plan: &sluice_config::Plan) -> sluice_config::spec::AlertsSpec {
        match &self.default_alerts {
            Some(default) if plan.alerts.channels.is_empty() => default.clone(),
            _ => plan.alerts.clone(),
        }
    }

    /// A built pipeline as the service runs it: its alerts to the default channels when
    /// it has none of its own; its gate's alerts naming its file.
    fn serving(
        &self,
        mut pipeline: sluice_engine::Pipeline,
        loaded: &Loaded,
    ) -> sluice_engine::Pipeline {
        pipeline.alerts = self.alerts_for(&loaded.plan);
        if let Some(gate) = &mut pipeline.gate {
            gate.file = Some(loaded.file.display().to_string());
        }
        pipeline
    }

    /// A pipeline file that does not validate (or clashes): a `pipeline_invalid` alert
    /// to the service's default channels, once per file while it stays so (a reminder
    /// every `repeat_every`). Delivered off the rescan's path.
    async fn file_invalid(&self, file: &std::path::Path, message: &str) {
        let Some(spec) = self.default_alerts.clone() else {
            return;
        };
        let store = self.stores().await.into_iter().next();
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let summary: Vec<&str> = message.lines().take(2).collect();
        let alert = sluice_state::AlertRow {
            pipeline: name,
            node: None,
            kind: sluice_state::AlertKind::PipelineInvalid,
            class: Some(sluice_core::ErrorClass::InvalidRequest),
            severity: sluice_state::AlertSeverity::Warning,
            message: summary.join(": "),
            at: now_ms(),
        };
        let next = format!("sluice validate {}", file.display());
        let subject = file.display().to_string();
        tokio::spawn(async move {
            match store {
                Some(store) => {
                    sluice_engine::alerts::raise_condition(&spec, &alert, &subject, &next, &store)
                        .await
                }
                None => sluice_engine::alerts::deliver_unrecorded(&spec, &alert, &next).await,
            }
        });
    }

    /// A file that validates again: its `pipeline_invalid` condition is cleared.
    async fn file_valid(&self, file: &std::path::Path) {
        if self.default_alerts.is_none() {
            return;
        }
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for store in self.stores().await {
            let _ = store
                .close_conditions(
                    &name,
                    Some(&file.display().to_string()),
                    sluice_state::AlertKind::PipelineInvalid,
                )
                .await;
        }
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.stopping.is_cancelled()
    }

    pub(crate) fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.read().expect("slots").get(name).cloned()
    }

    pub(crate) fn all_slots(&self) -> Vec<Arc<Slot>> {
        self.slots
            .read()
            .expect("slots")
            .values()
            .cloned()
            .collect()
    }

    /// Every distinct state store in use (the API reads runs and failed batches there).
    pub(crate) async fn stores(&self) -> Vec<StateStore> {
        self.stores.lock().await.values().cloned().collect()
    }

    /// The state store at `url`, opened once. A SQLite store is locked for this service:
    /// a second `sluice serve` on it is refused (one worker on SQLite).
    async fn store(&self, url: &str) -> Result<StateStore, ServeError> {
        let mut stores = self.stores.lock().await;
        if let Some(store) = stores.get(url) {
            return Ok(store.clone());
        }
        let store = StateStore::open(url).await?;
        if let Some(db) = store.sqlite_path() {
            let mut dir = db.as_os_str().to_owned();
            dir.push(".locks");
            let path = PathBuf::from(dir).join(".serve.lock");
            let refused = |why: String| {
                ServeError::Refused(format!(
                    "the state store {} is SQLite, and {why}: with a SQLite state store (or the embedded buffer) one `sluice serve` works at a time; stop the other, or share the work with a PostgreSQL state store and a Kafka buffer (docs/operations.md, \"Several workers\")",
                    sluice_state::redact_url(url)
                ))
            };
            let file = sluice_core::flock::open_lock_file(&path).map_err(|e| {
                refused(format!(
                    "its lock file {} cannot be used: {e}",
                    path.display()
                ))
            })?;
            match sluice_core::flock::try_lock(&file, sluice_core::flock::LockMode::Exclusive) {
                Ok(true) => {
                    use std::io::Write;
                    let _ = file.set_len(0);
                    let _ = writeln!(&file, "sluice serve, pid {}", std::process::id());
                    self.serve_locks.lock().expect("locks").push(file);
                }
                Ok(false) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    return Err(refused(format!(
                        "another `sluice serve` uses it ({})",
                        holder.trim()
                    )));
                }
                Err(e) => return Err(refused(format!("its lock file {}: {e}", path.display()))),
            }
        }
        stores.insert(url.to_owned(), store.clone());
        Ok(store)
    }

    /// Reads every file again and brings the slots in line: new files start, deleted ones
    /// stop (a run in flight finishes), edited ones swap their version in for the next
    /// run, broken edits keep the running version. `initial`: errors opening a state
    /// store are fatal (else they make the file invalid).
    pub(crate) async fn rescan(self: &Arc<Self>, initial: bool) -> Result<(), ServeError> {
        let _one = self.rescanning.lock().await;
        let files = catalog::files_of(&self.paths);
        // Deleted files: their pipelines are no longer served.
        let gone: Vec<Arc<Slot>> = self
            .all_slots()
            .into_iter()
            .filter(|s| !files.contains(&s.current().file))
            .collect();
        for slot in gone {
            tracing::info!(pipeline = %slot.name, file = %slot.current().file.display(), "the file is gone: the pipeline is no longer served (a run in flight finishes)");
            self.remove(&slot);
        }
        self.invalid
            .write()
            .expect("invalid")
            .retain(|f, _| files.contains(f));
        for file in &files {
            let existing = self
                .all_slots()
                .into_iter()
                .find(|s| s.current().file == *file);
            match catalog::load_file(file) {
                Err(message) => {
                    match &existing {
                        Some(slot) => {
                            let new = {
                                let mut kept = slot.reload_error.lock().expect("slot");
                                let new = kept.as_deref() != Some(message.as_str());
                                if new {
                                    tracing::warn!(pipeline = %slot.name, "the edit does not validate: the running version is kept\n{message}");
                                }
                                *kept = Some(message.clone());
                                new
                            };
                            if new {
                                self.file_invalid(file, &message).await;
                            }
                        }
                        None => {
                            let known = self.invalid.read().expect("invalid").get(file).cloned();
                            if known.as_deref() != Some(message.as_str()) {
                                tracing::error!("not served:\n{message}");
                                self.file_invalid(file, &message).await;
                            }
                        }
                    }
                    self.invalid
                        .write()
                        .expect("invalid")
                        .insert(file.clone(), message);
                }
                Ok(loaded) => {
                    let name = loaded.plan.pipeline.clone();
                    let url = self.state_url(&loaded);
                    if let Some(slot) = &existing {
                        if slot.name == name && slot.state_url == url {
                            self.update(slot, loaded);
                            let was = self.invalid.write().expect("invalid").remove(file);
                            if was.is_some() {
                                self.file_valid(file).await;
                            }
                            continue;
                        }
                        // Renamed, or moved to another state store: a new pipeline.
                        tracing::info!(pipeline = %slot.name, "renamed or moved to another state store: served anew");
                        self.remove(slot);
                    }
                    if let Some(other) = self.slot(&name) {
                        let message = format!(
                            "`{}` defines pipeline `{name}`, which `{}` defines already: a pipeline name is served once; rename one",
                            file.display(),
                            other.current().file.display()
                        );
                        let known = self.invalid.read().expect("invalid").get(file).cloned();
                        if known.as_deref() != Some(message.as_str()) {
                            tracing::error!("not served: {message}");
                        }
                        self.invalid
                            .write()
                            .expect("invalid")
                            .insert(file.clone(), message);
                        continue;
                    }
                    match self.add(loaded, &url).await {
                        Ok(()) => {
                            let was = self.invalid.write().expect("invalid").remove(file);
                            if was.is_some() {
                                self.file_valid(file).await;
                            }
                        }
                        Err(e) if initial => return Err(e),
                        Err(e) => {
                            let message = format!("`{}`: {e}", file.display());
                            tracing::error!("not served: {message}");
                            self.invalid
                                .write()
                                .expect("invalid")
                                .insert(file.clone(), message);
                        }
                    }
                }
            }
        }
        let loaded = self.slots.read().expect("slots").len();
        let invalid = self.invalid.read().expect("invalid").len();
        self.metrics.catalog(loaded, invalid);
        if loaded == 0 {
            let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
            tracing::warn!(
                "no pipeline is served from {} ({invalid} file(s) do not validate); files added or fixed there are picked up",
                paths.join(", ")
            );
        }
        Ok(())
    }

    fn state_url(&self, loaded: &Loaded) -> String {
        match &self.state_override {
            Some(url) => url.clone(),
            None => self.ctx.database_url(loaded.plan.state.expose()),
        }
    }

    /// A new pipeline: its slot, its worker and (once started) its schedule.
    async fn add(self: &Arc<Self>, loaded: Loaded, url: &str) -> Result<(), ServeError> {
        let store = self.store(url).await?;
        let name = loaded.plan.pipeline.clone();
        let path = std::fs::canonicalize(&loaded.file).unwrap_or_else(|_| loaded.file.clone());
        store
            .register_pipeline(&name, &path.display().to_string())
            .await?;
        let guard = self.guard(&store, &loaded).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let slot = Arc::new(Slot {
            name: name.clone(),
            store,
            state_url: url.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
            reload_error: Mutex::default(),
            running: Mutex::default(),
            queued: AtomicUsize::new(0),
            next_run: Mutex::default(),
            last_skip: Mutex::default(),
            tx,
            cancel: self.stopping.child_token(),
            schedule: Mutex::new(CancellationToken::new()),
            guard: Mutex::new(guard),
            turn: tokio::sync::Mutex::new(()),
        });
        tracing::info!(pipeline = %name, schedule = %describe_schedule(&slot.current().plan.schedule), "serving");
        self.slots
            .write()
            .expect("slots")
            .insert(name, slot.clone());
        let worker = tokio::spawn(worker(self.clone(), slot.clone(), rx));
        let mut workers = self.workers.lock().expect("workers");
        // Workers of pipelines no longer served have ended.
        workers.retain(|w| !w.is_finished());
        workers.push(worker);
        drop(workers);
        if self.started.load(Ordering::SeqCst) {
            self.start_schedule(&slot);
        }
        Ok(())
    }

    /// A file edited (or touched): its new version serves the next run.
    fn update(self: &Arc<Self>, slot: &Arc<Slot>, loaded: Loaded) {
        if slot.reload_error.lock().expect("slot").take().is_some() {
            tracing::info!(pipeline = %slot.name, "the file validates again");
        }
        let old = slot.current();
        if old.text == loaded.text {
            return;
        }
        let schedule_changed = old.plan.schedule != loaded.plan.schedule;
        *slot.current.write().expect("slot") = Arc::new(loaded);
        tracing::info!(pipeline = %slot.name, "reloaded: the next run uses the new version (a run in flight finishes on its own)");
        if schedule_changed && self.started.load(Ordering::SeqCst) {
            tracing::info!(pipeline = %slot.name, schedule = %describe_schedule(&slot.current().plan.schedule), "new schedule");
            self.start_schedule(slot);
        }
    }

    /// A pipeline with the embedded buffer is served by one worker: on a store shared by
    /// several (PostgreSQL), a lease `@serve/<pipeline>` held as long as it is served
    /// keeps the others off (on SQLite, the store's own lock does).
    async fn guard(
        &self,
        store: &StateStore,
        loaded: &Loaded,
    ) -> Result<Option<sluice_state::Lease>, ServeError> {
        let name = &loaded.plan.pipeline;
        if store.sqlite_path().is_some()
            || !matches!(
                loaded.plan.buffer,
                sluice_config::spec::BufferSpec::Embedded(_)
            )
        {
            return Ok(None);
        }
        match store
            .acquire_lease(&format!("@serve/{name}"), self.lease_ttl)
            .await
        {
            Ok(lease) => Ok(Some(lease)),
            Err(sluice_state::StateError::LeaseHeld { holder, .. }) => {
                Err(ServeError::Refused(format!(
                    "pipeline `{name}` uses the embedded buffer, which lives on one machine, and another `sluice serve` serves it ({holder}): with the embedded buffer one worker serves a pipeline; give it a Kafka buffer (`buffer: {{ kafka: ... }}`) to share it between workers"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks every link of a pipeline now (as `sluice health`): sets the `sluice_link_up`
    /// gauges and keeps the result for `GET /pipelines/{name}`. `true` when all are up.
    pub(crate) async fn check_links(&self, slot: &Slot) -> (bool, Vec<serde_json::Value>) {
        use serde_json::json;
        let loaded = slot.current();
        // While a run goes on it holds the buffer (the check says "in use": up); else the
        // check holds the pipeline's turn, so a run waits for it rather than find its
        // buffer locked.
        let _turn = slot.turn.try_lock().ok();
        let checks = sluice_engine::health::check_links(&loaded.plan, &self.ctx).await;
        let mut all_up = true;
        let links: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                self.metrics
                    .link(&slot.name, c.kind.as_str(), &c.link, c.is_up());
                all_up &= c.is_up();
                match &c.result {
                    Ok(latency) => json!({
                        "kind": c.kind.as_str(), "link": c.link, "nodes": c.nodes,
                        "up": true, "latency_ms": latency.as_millis() as u64,
                    }),
                    Err(e) => {
                        tracing::warn!(pipeline = %slot.name, link = %c.link, class = %e.class, "link down: {}", e.message);
                        json!({
                            "kind": c.kind.as_str(), "link": c.link, "nodes": c.nodes,
                            "up": false, "class": e.class.as_str(), "error": e.message,
                        })
                    }
                }
            })
            .collect();
        let at = now_ms();
        crate::web::note_links(&slot.name, at, &links);
        self.links
            .write()
            .expect("links")
            .insert(slot.name.clone(), (at, links.clone()));
        // Each consuming node's backlog (Kafka: its group's lag) between runs too; a run
        // going on measures it when it ends.
        if _turn.is_some()
            && let Ok(buffer) = build::open_buffer(&loaded.plan, &self.ctx)
        {
            self.measure_backlog(&loaded.plan, &buffer).await;
        }
        // The monitor's alerts: a link down once (then reminders), its recovery with the
        // downtime; the state store's conditions dedup them with `sluice health --watch`
        // and the runs' gates.
        drop(_turn);
        let next = format!("sluice health {}", loaded.file.display());
        let mut down = self.down_since.lock().await;
        let seen = down.entry(slot.name.clone()).or_default();
        let alerts = self.alerts_for(&loaded.plan);
        sluice_engine::health::report_links(
            Some(&slot.store),
            &slot.name,
            &alerts,
            &next,
            &checks,
            seen,
        )
        .await;
        (all_up, links)
    }

    /// Checks every pipeline's links every `every` (give or take a fifth), until stopped.
    pub(crate) async fn watch_links(self: Arc<Self>, every: Duration) {
        loop {
            for slot in self.all_slots() {
                if self.stopping.is_cancelled() {
                    return;
                }
                self.check_links(&slot).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(sluice_engine::gate::jitter(every)) => {}
                _ = self.stopping.cancelled() => return,
            }
        }
    }

    fn remove(&self, slot: &Arc<Slot>) {
        slot.cancel.cancel();
        self.links.write().expect("links").remove(&slot.name);
        if let Some(guard) = slot.guard.lock().expect("slot").take() {
            tokio::spawn(async move {
                let _ = guard.release().await;
            });
        }
        self.slots.write().expect("slots").remove(&slot.name);
        self.metrics.forget(&slot.name);
    }

    /// Starts every pipeline's schedule.
    pub(crate) fn start_all(self: &Arc<Self>) {
        self.started.store(true, Ordering::SeqCst);
        for slot in self.all_slots() {
            self.start_schedule(&slot);
        }
    }

    /// (Re)starts a slot's schedule loop.
    fn start_schedule(self: &Arc<Self>, slot: &Arc<Slot>) {
        let cancel = slot.cancel.child_token();
        let old = std::mem::replace(&mut *slot.schedule.lock().expect("slot"), cancel.clone());
        old.cancel();
        *slot.next_run.lock().expect("slot") = None;
        let schedule = slot.current().plan.schedule.clone();
        tokio::spawn(crate::helping::help_loop(
            self.clone(),
            slot.clone(),
            cancel.clone(),
        ));
        let (svc, slot) = (self.clone(), slot.clone());
        match schedule {
            Schedule::Manual => {}
            Schedule::Cron {
                cron,
                timezone,
                catch_up,
                overlap,
            } => {
                let tz = timezone.map_or(chrono_tz::UTC, |t| t.value.0);
                let cron = cron.value.schedule().clone();
                tokio::spawn(async move {
                    cron_loop(svc, slot, cron, tz, catch_up, overlap, cancel).await;
                });
            }
            Schedule::Realtime(r) => {
                let poll = r.poll_interval.value.get();
                tokio::spawn(async move { realtime_loop(slot, poll, cancel).await });
            }
        }
    }

    /// Stops: no new runs; runs in flight go on for up to `timeout`, then are stopped
    /// gracefully (batches in hand committed); leases released as each run ends.
    pub(crate) async fn stop(&self, timeout: Duration) {
        self.stopping.cancel();
        let workers: Vec<JoinHandle<()>> = std::mem::take(&mut *self.workers.lock().expect("w"));
        let mut all = join_workers(workers);
        tokio::select! {
            _ = &mut all => {
                self.release_guards().await;
                return;
            }
            _ = tokio::time::sleep(timeout) => {}
        }
        tracing::warn!(
            ?timeout,
            "runs still going after the stop timeout: stopping them (batches in hand are committed; the next run resumes from the checkpoints)"
        );
        self.abort.cancel();
        // A task that does not listen (a long `command`) may not stop: as long again,
        // then the service exits anyway, as on a second signal (checkpoints and ledgers
        // keep that safe; leases are freed by the OS or expire).
        tokio::select! {
            _ = &mut all => {}
            _ = tokio::time::sleep(timeout) => {
                tracing::warn!("runs still going after twice the stop timeout: exiting without them (the next run resumes from the checkpoints)");
            }
        }
        self.release_guards().await;
    }

    async fn release_guards(&self) {
        for slot in self.all_slots() {
            let guard = slot.guard.lock().expect("slot").take();
            if let Some(guard) = guard {
                let _ = guard.release().await;
            }
        }
    }

    /// Runs (or replays) one request of `slot`'s worker.
    async fn handle(&self, slot: &Slot, request: Request) {
        match request {
            Request::Run { trigger, done } => {
                let outcome = self.run(slot, trigger).await;
                if let Some(done) = done {
                    let _ = done.send(outcome);
                }
            }
            Request::Replay { filter, done } => {
                let outcome = self.replay(slot, filter).await;
                let _ = done.send(outcome);
            }
        }
    }

    /// One run of the pipeline, through the same path as `sluice run`.
    async fn run(&self, slot: &Slot, trigger: Trigger) -> Outcome {
        let name = slot.name.as_str();
        // This run keeps this version, whatever reload brings meanwhile.
        let loaded = slot.current();
        let plan = &loaded.plan;
        if matches!(trigger, Trigger::Cron | Trigger::Realtime) {
            match slot.store.parked_until(name).await {
                Ok(Some(at)) if at > now_ms() => {
                    let why = format!(
                        "parked by a rate limit until {}: no scheduled run before",
                        time(at)
                    );
                    tracing::info!(pipeline = %name, "run skipped: {why}");
                    self.metrics.run_skipped(name, "parked");
                    slot.skipped(why.clone());
                    return Outcome::Skipped(why);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pipeline = %name, error = %e, "cannot read whether the pipeline is parked")
                }
            }
        }
        let mut waited = false;
        let (_turn, owned) = loop {
            let turn = slot.turn.lock().await;
            match owner::take(&slot.store, plan, &self.ctx, self.lease_ttl).await {
                Ok(owned) => break (turn, Ok(owned)),
                // A tick another worker's run is still on: under `overlap: queue` it runs
                // once that run ends, as on one worker.
                Err(NotTaken::Held(why)) if queues(plan, trigger) => {
                    drop(turn);
                    if !waited {
                        tracing::info!(pipeline = %name, "the tick runs once the run on another worker ends (overlap: queue): {why}");
                        waited = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(QUEUE_POLL) => continue,
                        _ = slot.cancel.cancelled() => {
                            return Outcome::Skipped("the service is stopping, or the pipeline is no longer served".into());
                        }
                    }
                }
                Err(e) => break (turn, Err(e)),
            }
        };
        let owned = match owned {
            Ok(owned) => owned,
            Err(NotTaken::Held(why)) => {
                // A realtime pipeline held by another worker would say so at every poll.
                let again = slot.last_skip.lock().expect("slot").as_deref() == Some(&why);
                if again {
                    tracing::debug!(pipeline = %name, %trigger, "run skipped: {why}");
                } else {
                    tracing::warn!(pipeline = %name, %trigger, "run skipped: {why}");
                }
                self.metrics.run_skipped(name, "lease_held");
                slot.skipped(why.clone());
                return Outcome::Skipped(why);
            }
            Err(NotTaken::Failed(class, why)) => {
                tracing::error!(pipeline = %name, %trigger, class = %class, "run not started: {why}");
                self.metrics.run_skipped(name, "error");
                slot.skipped(why.clone());
                return Outcome::Failed(class, why);
            }
        };
        *slot.running.lock().expect("slot") = Some(Running {
            trigger,
            since: now_ms(),
        });
        self.metrics.in_flight(name, true);
        let (events, logger) = self.event_logger(name);
        let exec = Executor::new(owned.store.clone(), owned.buffer.clone())
            .with_events(events)
            .with_shutdown(self.abort.child_token());
        tracing::info!(pipeline = %name, %trigger, "run starting");
        let result = match build::build_pipeline(
            plan,
            &self.ctx.with_rate_budgets(slot.store.rate_budgets()),
        )
        .await
        {
            Ok(pipeline) => exec
                .run(self.serving(pipeline, &loaded), trigger)
                .await
                .map_err(|e| (e.class(), e.to_string())),
            Err(e) => Err((e.class(), e.to_string())),
        };
        drop(exec);
        self.measure_backlog(plan, &owned.buffer).await;
        owned.release().await;
        let _ = logger.await;
        *slot.running.lock().expect("slot") = None;
        self.metrics.in_flight(name, false);
        match result {
            Ok(summary) => {
                self.metrics.run_finished(&summary, trigger);
                let level_ok = matches!(summary.status, RunStatus::Succeeded);
                let cause = summary
                    .nodes
                    .iter()
                    .find_map(|n| n.error.as_ref().map(|e| format!(": node `{}`: {e}", n.id)))
                    .unwrap_or_default();
                if level_ok {
                    tracing::info!(pipeline = %name, run = %summary.run_id, %trigger, status = %summary.status, elapsed = ?summary.elapsed, "run finished");
                } else {
                    tracing::warn!(pipeline = %name, run = %summary.run_id, %trigger, status = %summary.status, "run finished{cause}");
                }
                Outcome::Ran(Box::new(summary))
            }
            Err((class, why)) => {
                tracing::error!(pipeline = %name, %trigger, class = %class, "run failed: {why}");
                self.metrics.run_skipped(name, "error");
                Outcome::Failed(class, why)
            }
        }
    }

    /// What each consuming node left unconsumed in the buffer, per input, for the
    /// metrics (a topic not made yet has nothing to say).
    async fn measure_backlog(&self, plan: &sluice_config::Plan, buffer: &Arc<dyn Buffer>) {
        let namespace = match build::topic_prefix(&plan.buffer) {
            Some(prefix) => format!("{prefix}.{}", plan.pipeline),
            None => plan.pipeline.clone(),
        };
        for node in &plan.nodes {
            let group = sluice_engine::group_name(&namespace, &node.id);
            for input in &node.inputs {
                let topic = sluice_engine::topic_name(&namespace, input);
                match buffer.lag(&topic, &group).await {
                    Ok(batches) => self
                        .metrics
                        .backlog(&plan.pipeline, &node.id, input, batches),
                    Err(e) => {
                        tracing::debug!(pipeline = %plan.pipeline, node = %node.id, error = %e, "no backlog measured")
                    }
                }
                if let Ok(Some(bytes)) = buffer.backlog_bytes(&topic, &group).await {
                    self.metrics
                        .backlog_bytes(&plan.pipeline, &node.id, input, bytes);
                }
                if let Ok(oldest) = buffer.oldest_uncommitted(&topic, &group).await {
                    let age = oldest.map_or(0.0, |at| (now_ms() - at).max(0) as f64 / 1000.0);
                    self.metrics
                        .backlog_age(&plan.pipeline, &node.id, input, age);
                }
            }
        }
    }

    /// A replay of the pipeline's failed batches, as `sluice replay` does.
    async fn replay(&self, slot: &Slot, mut filter: FailedBatchFilter) -> Outcome {
        let name = slot.name.as_str();
        let loaded = slot.current();
        let plan = &loaded.plan;
        filter.pipeline = None;
        let _turn = slot.turn.lock().await;
        let owned = match owner::take(&slot.store, plan, &self.ctx, self.lease_ttl).await {
            Ok(owned) => owned,
            Err(NotTaken::Held(why)) => return Outcome::Skipped(why),
            Err(NotTaken::Failed(class, why)) => return Outcome::Failed(class, why),
        };
        *slot.running.lock().expect("slot") = Some(Running {
            trigger: Trigger::Replay,
            since: now_ms(),
        });
        let (events, logger) = self.event_logger(name);
        let exec = Executor::new(owned.store.clone(), owned.buffer.clone())
            .with_events(events)
            .with_shutdown(self.abort.child_token());
        let result = match build::build_pipeline(
            plan,
            &self.ctx.with_rate_budgets(slot.store.rate_budgets()),
        )
        .await
        {
            Ok(pipeline) => sluice_engine::replay(&exec, self.serving(pipeline, &loaded), filter)
                .await
                .map_err(|e| (e.class(), e.to_string())),
            Err(e) => Err((e.class(), e.to_string())),
        };
        drop(exec);
        owned.release().await;
        let _ = logger.await;
        *slot.running.lock().expect("slot") = None;
        match result {
            Ok(report) => {
                if let Some(summary) = &report.downstream {
                    self.metrics.run_finished(summary, Trigger::Replay);
                }
                tracing::info!(pipeline = %name, run = %report.run_id, delivered = report.delivered.len(), failed_again = report.failed_again.len(), "replay finished");
                Outcome::Replayed(Box::new(report))
            }
            Err((class, why)) => Outcome::Failed(class, why),
        }
    }

    /// A channel for a run's events: each is counted in the metrics and, when it tells a
    /// failure handled, logged.
    fn event_logger(
        &self,
        pipeline: &str,
    ) -> (mpsc::UnboundedSender<sluice_engine::Event>, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<sluice_engine::Event>();
        let pipeline = pipeline.to_owned();
        let metrics = self.metrics.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                crate::web::note_event(&pipeline, &event);
                metrics.event(&pipeline, &event.node, &event.kind);
                if let Some(text) = event.kind.describe() {
                    tracing::info!(pipeline = %pipeline, node = %event.node, "{text}");
                }
            }
        });
        (tx, task)
    }
}

/// Waits for every worker.
fn join_workers(
    handles: Vec<JoinHandle<()>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        for h in handles {
            let _ = h.await;
        }
    })
}

/// How often a queued tick tries the lease another worker's run holds.
const QUEUE_POLL: Duration = Duration::from_millis(500);

/// Whether a run that finds the pipeline's lease held waits for it: a cron tick under
/// `overlap: queue`.
fn queues(plan: &sluice_config::Plan, trigger: Trigger) -> bool {
    trigger == Trigger::Cron
        && matches!(
            plan.schedule,
            Schedule::Cron {
                overlap: Overlap::Queue,
                ..
            }
        )
}

/// A pipeline's worker: its runs and replays, one at a time, until it is no longer
/// served; a run in flight always finishes.
async fn worker(svc: Arc<Service>, slot: Arc<Slot>, mut rx: mpsc::UnboundedReceiver<Request>) {
    loop {
        let request = tokio::select! {
            biased;
            _ = slot.cancel.cancelled() => break,
            r = rx.recv() => match r { Some(r) => r, None => break },
        };
        slot.dequeued();
        if slot.cancel.is_cancelled() {
            refuse(request);
            break;
        }
        svc.handle(&slot, request).await;
    }
    // Requests still waiting are answered: the pipeline is no longer served.
    rx.close();
    while let Ok(request) = rx.try_recv() {
        slot.dequeued();
        refuse(request);
    }
}

fn refuse(request: Request) {
    let why = "the service is stopping, or the pipeline is no longer served".to_owned();
    match request {
        Request::Run {
            done: Some(done), ..
        } => {
            let _ = done.send(Outcome::Skipped(why));
        }
        Request::Replay { done, .. } => {
            let _ = done.send(Outcome::Skipped(why));
        }
        Request::Run { done: None, .. } => {}
    }
}

/// The last tick of a cron pipeline kept in the state store (ms since the epoch).
pub(crate) async fn last_tick(store: &StateStore, pipeline: &str) -> Option<i64> {
    match store.checkpoint(pipeline, TICK_ENTRY).await {
        Ok(value) => value.and_then(|v| v["tick"].as_i64()),
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "cannot read the last tick");
            None
        }
    }
}

/// Claims a tick in the state store: `true` when it is this worker's to run. A store
/// that cannot be reached: the tick runs (the run lease still keeps runs apart).
async fn claim(store: &StateStore, pipeline: &str, tick: i64) -> bool {
    match store.claim_tick(pipeline, TICK_ENTRY, tick).await {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::warn!(pipeline, error = %e, "cannot keep the last tick (missed ticks may not be caught up after a restart)");
            true
        }
    }
}

/// The runs for the ticks missed while down, by the `catch_up` policy.
fn catch_up_missed(slot: &Slot, missed: &[DateTime<Utc>], catch_up: CatchUp) {
    let name = &slot.name;
    let Some(latest) = missed.last() else { return };
    let n = missed.len();
    let many = if n > MAX_CATCH_UP {
        format!("more than {MAX_CATCH_UP}")
    } else {
        n.to_string()
    };
    match catch_up {
        CatchUp::None => {
            tracing::info!(pipeline = %name, "{many} tick(s) missed while the service was down, the latest at {latest}: not caught up (catch_up: none)");
        }
        CatchUp::Last => {
            tracing::info!(pipeline = %name, "{many} tick(s) missed while the service was down, the latest at {latest}: one run now (catch_up: last)");
            slot.enqueue(Request::Run {
                trigger: Trigger::Cron,
                done: None,
            });
        }
        CatchUp::All => {
            let runs = n.min(MAX_CATCH_UP);
            tracing::info!(pipeline = %name, "{many} tick(s) missed while the service was down: {runs} run(s) now, one after another (catch_up: all)");
            for _ in 0..runs {
                slot.enqueue(Request::Run {
                    trigger: Trigger::Cron,
                    done: None,
                });
            }
        }
    }
}

/// A cron pipeline's schedule: catch up the ticks missed while down, then a run at each
/// tick (by the overlap policy when the previous run still runs).
async fn cron_loop(
    svc: Arc<Service>,
    slot: Arc<Slot>,
    cron: cron::Schedule,
    tz: chrono_tz::Tz,
    catch_up: CatchUp,
    overlap: Overlap,
    cancel: CancellationToken,
) {
    let name = slot.name.clone();
    let now = Utc::now();
    let mut from: DateTime<Utc> = now;
    match last_tick(&slot.store, &name).await {
        Some(last) => {
            let last = Utc
                .timestamp_millis_opt(last)
                .single()
                .unwrap_or(now)
                .with_timezone(&tz);
            let missed: Vec<DateTime<Utc>> = cron
                .after(&last)
                .map(|t| t.with_timezone(&Utc))
                .take_while(|t| *t <= now)
                .take(MAX_CATCH_UP + 1)
                .collect();
            if let Some(latest) = missed.last() {
                from = from.max(*latest);
                if claim(&slot.store, &name, latest.timestamp_millis()).await {
                    catch_up_missed(&slot, &missed, catch_up);
                } else {
                    tracing::info!(pipeline = %name, "the ticks missed while down were caught up by another worker");
                }
            }
        }
        // Never ran under `sluice serve`: nothing was missed; from now on, ticks count.
        None => {
            claim(&slot.store, &name, now.timestamp_millis()).await;
        }
    }
    loop {
        let base = from.max(Utc::now()).with_timezone(&tz);
        let Some(next) = cron.after(&base).next() else {
            tracing::warn!(pipeline = %name, "the cron schedule has no next time: no more runs");
            return;
        };
        let next = next.with_timezone(&Utc);
        *slot.next_run.lock().expect("slot") = Some(next.timestamp_millis());
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        from = next;
        // Of several workers sharing the state store, one claims each tick.
        if !claim(&slot.store, &name, next.timestamp_millis()).await {
            tracing::debug!(pipeline = %name, "the tick at {next} was claimed by another worker");
            continue;
        }
        if !slot.is_busy() {
            slot.enqueue(Request::Run {
                trigger: Trigger::Cron,
                done: None,
            });
            continue;
        }
        match overlap {
            Overlap::Skip => {
                let why = format!(
                    "the tick at {next} is skipped: the previous run still runs (overlap: skip)"
                );
                tracing::warn!(pipeline = %name, "{why}");
                svc.metrics.run_skipped(&name, "overlap");
                slot.skipped(why);
            }
            Overlap::Queue if slot.queued() > 0 => {
                tracing::info!(pipeline = %name, "the tick at {next} joins the run already waiting (overlap: queue)");
            }
            Overlap::Queue => {
                tracing::info!(pipeline = %name, "the tick at {next} runs once the previous run ends (overlap: queue)");
                slot.enqueue(Request::Run {
                    trigger: Trigger::Cron,
                    done: None,
                });
            }
        }
    }
}

/// A realtime pipeline: runs back to back while they find data; `poll` after one that
/// found nothing (or could not run).
async fn realtime_loop(slot: Arc<Slot>, poll: Duration, cancel: CancellationToken) {
    loop {
        let (done, outcome) = oneshot::channel();
        if !slot.enqueue(Request::Run {
            trigger: Trigger::Realtime,
            done: Some(done),
        }) {
            return;
        }
        *slot.next_run.lock().expect("slot") = Some(now_ms());
        let outcome = tokio::select! {
            o = outcome => o.ok(),
            _ = cancel.cancelled() => return,
        };
        let wait = match outcome {
            Some(Outcome::Ran(summary)) => {
                let found = summary
                    .nodes
                    .iter()
                    .any(|n| n.role == "source" && n.counts.records_out > 0);
                match summary.resume_at {
                    Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
                    None if found && summary.status == RunStatus::Succeeded => {
                        poll.min(HANDOVER_GAP)
                    }
                    None => poll,
                }
            }
            _ => poll,
        };
        *slot.next_run.lock().expect("slot") = Some(now_ms() + wait.as_millis() as i64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// `2026-12-01 08:54:41 UTC`.
pub(crate) fn time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A schedule in a few words, for the log.
pub(crate) fn describe_schedule(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Manual => "manual (runs through the API)".to_owned(),
        Schedule::Cron {
            cron,
            timezone,
            catch_up,
            overlap,
        } => format!(
            "cron `{}` ({}), catch_up {}, overlap {}",
            cron.value.as_written(),
            timezone
                .as_ref()
                .map_or("UTC".to_owned(), |t| t.value.to_string()),
            catch_up.as_str(),
            overlap.as_str()
        ),
        Schedule::Realtime(r) => format!("realtime, polling every {}", r.poll_interval.value),
    }
}
