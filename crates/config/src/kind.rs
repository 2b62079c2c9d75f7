//! The seam between a pipeline file and the connectors: what a node kind must provide.
//!
//! A node kind (`type: http`, `type: postgres`, ...) is one [`Kind`], defined in its
//! connector's folder in `sluice-connectors` together with its spec, and listed once in
//! that crate's registry. This crate reads the frame of a pipeline (its name, schedule,
//! buffer, defaults, alerts and the fields every node has) and hands each node's own
//! fields to its kind through [`Fields`]; the kind returns its validated spec as a
//! [`NodeConfig`], which checks itself, says how it runs ([`NodeConfig::build`]) and which
//! links it depends on ([`NodeConfig::links`]).
//!
//! Nothing here names a kind: every place that needs to know about kinds asks the
//! [`Registry`] or the node's [`NodeConfig`].

use crate::check::Checker;
use crate::de::{Filter, recover};
use crate::diag::{Diagnostic, Pos};
use crate::plan::PlannedNode;
use crate::spec::nodes::{NodeSpec, Role};
use crate::spec::{SchemaPolicy, TimeoutsSpec};
use crate::yaml::Node;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use sluice_core::node::{BoxFuture, NodeRunner};
use sluice_core::{ConnectorError, ErrorClass};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A node kind: one value of `type:`.
pub trait Kind: Send + Sync + 'static {
    /// The `type:` value.
    fn name(&self) -> &'static str;
    /// The roles its nodes can take (a SQL kind reads or writes; most kinds do one).
    fn roles(&self) -> &'static [Role];
    /// How messages name a node of this kind in `role`: `HTTP source`, `SQL task`.
    fn what(&self, role: Role) -> String {
        format!("{} {role}", self.name())
    }
    /// Reads the kind's own fields; reports what is wrong to `fields`. `None` when the
    /// fields could not be read at all.
    fn read(&self, fields: &mut Fields<'_>) -> Option<Arc<dyn NodeConfig>>;
    /// The JSON Schema of its fields, one per role it can take, in the order of
    /// [`Kind::roles`].
    fn schemas(&self, generator: &mut SchemaGenerator) -> Vec<Schema>;
}

/// The common kind: one role, its fields read into the spec `T` (which is its
/// [`NodeConfig`]). Declared as a static in the kind's folder:
///
/// ```ignore
/// pub static HTTP: KindOf<HttpSourceSpec> = KindOf::new("http", Role::Source, "HTTP source");
/// ```
pub struct KindOf<T> {
    name: &'static str,
    role: Role,
    what: &'static str,
    spec: PhantomData<fn() -> T>,
}

impl<T> KindOf<T> {
    /// The kind `type: <name>`, whose nodes take `role`; `what` names one in messages
    /// (`HTTP source`, `SQL task`).
    pub const fn new(name: &'static str, role: Role, what: &'static str) -> Self {
        KindOf {
            name,
            role,
            what,
            spec: PhantomData,
        }
    }
}

impl<T: NodeConfig + DeserializeOwned + JsonSchema> Kind for KindOf<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn roles(&self) -> &'static [Role] {
        match self.role {
            Role::Source => &[Role::Source],
            Role::Transform => &[Role::Transform],
            Role::Sink => &[Role::Sink],
            Role::Task => &[Role::Task],
        }
    }

    fn what(&self, _role: Role) -> String {
        self.what.to_owned()
    }

    fn read(&self, fields: &mut Fields<'_>) -> Option<Arc<dyn NodeConfig>> {
        fields.config::<T>()
    }

    fn schemas(&self, generator: &mut SchemaGenerator) -> Vec<Schema> {
        vec![schema_of::<T>(generator)]
    }
}

/// A node's validated kind-specific spec: what a [`Kind`] read.
pub trait NodeConfig: fmt::Debug + Send + Sync + Any {
    /// The `type:` value it was read from.
    fn kind(&self) -> &'static dyn Kind;
    /// What the node does with data.
    fn role(&self) -> Role;
    /// The checks that look at more than one field (ranges, fields that go together,
    /// template variables, secrets written in clear). `node` is the whole node (its id and
    /// common fields).
    fn check(&self, node: &NodeSpec, checker: &mut Checker<'_>);
    /// The spec as `plan --json` shows it: every secret as `***`.
    fn shown(&self) -> serde_json::Value;
    /// One line saying what it does, without secrets (a `compensate` line of `plan`).
    fn summary(&self) -> String {
        self.kind().name().to_owned()
    }
    /// The columns a source declares (`schema: { columns: ... }`), in order.
    fn declared_columns(&self) -> Option<Vec<String>> {
        None
    }
    /// Lines the text plan shows under the node, given each input's declared columns.
    fn plan_notes(&self, inputs: &[(&str, Option<Vec<String>>)]) -> Vec<String> {
        let _ = inputs;
        Vec::new()
    }
    /// Its `timeouts` when the kind has them (`Some(None)`: it has them, unset).
    fn timeouts(&self) -> Option<Option<&TimeoutsSpec>> {
        None
    }
    /// Its `schema_policy` when the kind has one.
    fn schema_policy(&self) -> Option<SchemaPolicy> {
        None
    }
    /// Whether the connector spends the retry budget itself (an HTTP source retries each
    /// request: it knows `Retry-After`, token refreshes and page shrinking).
    fn retries_inside(&self) -> bool {
        false
    }
    /// Whether a source keeps the records its `schema_policy: quarantine` rejects itself
    /// (so `on_error.contract_changed: quarantine` makes sense on it).
    fn quarantines_drift(&self) -> bool {
        false
    }
    /// What to write instead of `on_error.<class>` on a source of this kind (a source has
    /// no batch to quarantine or skip): `None` for the general advice.
    fn source_advice(&self, class: ErrorClass) -> Option<String> {
        let _ = class;
        None
    }
    /// What runs the node.
    fn build<'a>(
        &'a self,
        node: &'a PlannedNode,
        ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>>;
    /// The links the node depends on, each with its check (`sluice health`).
    fn links(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<Link>;
    /// The links as `sluice doctor` checks them: where each connects, and the kind's own
    /// checks placed at their step of the troubleshooting flow. By default, each of
    /// [`NodeConfig::links`] with its health check and no endpoint.
    fn probes(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<crate::doctor::Probe> {
        self.links(node, ctx)
            .into_iter()
            .map(crate::doctor::Probe::of_link)
            .collect()
    }
    /// `sluice doctor`'s step 6 at a sink: whether a sample's columns (name and Arrow
    /// type, as they reach the node) fit where the node writes them. By default, nothing
    /// to check.
    fn probe_sample<'a>(
        &'a self,
        node: &'a PlannedNode,
        ctx: &'a BuildContext,
        columns: &'a [(String, String)],
    ) -> BoxFuture<'a, Vec<crate::doctor::Finding>> {
        let _ = (node, ctx, columns);
        Box::pin(async { Vec::new() })
    }
    /// The records the node holds (a source) or wrote (a sink), for `sluice reconcile`;
    /// `None` when the kind cannot count or re-read them.
    fn keyset(
        &self,
        node: &PlannedNode,
        ctx: &BuildContext,
    ) -> Option<Box<dyn crate::reconcile::KeySet>> {
        let _ = (node, ctx);
        None
    }
    /// The columns that identify a record at this node (a sink's upsert `key`).
    fn key_columns(&self) -> Vec<String> {
        Vec::new()
    }

    /// The name that the column `name` of this node's output had in its input, for
    /// `sluice reconcile`, which follows a sink's key back to the source through the
    /// transforms between them; `None` when the node makes the column itself. By default
    /// the same name: the node does not rename columns.
    fn column_before(&self, name: &str) -> Option<String> {
        Some(name.to_owned())
    }

    /// Whether several processes, on several machines, may write this sink's batches at
    /// once (`sluice serve` workers helping a run, see docs/operations.md): its target
    /// is reached over the network and its writes are idempotent per batch whatever
    /// their order. Not so for a file, or a table replaced once per load.
    fn shared_writes(&self) -> bool {
        false
    }
}

impl dyn NodeConfig {
    /// The spec as its concrete type.
    pub fn downcast_ref<T: NodeConfig>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref()
    }
}

/// The JSON Schema of a spec type, for [`Kind::schemas`].
pub fn schema_of<T: schemars::JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

/// What kind of thing a link is (in the order `sluice health` lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkKind {
    /// An HTTP API (a source's or a sink's).
    Api,
    /// The pipeline's buffer.
    Buffer,
    /// A database.
    Database,
    /// A folder or file.
    Files,
    /// A Kafka cluster read or written by a node.
    Kafka,
    /// The state store.
    State,
}

impl LinkKind {
    /// `api`, `database`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Api => "api",
            LinkKind::Database => "database",
            LinkKind::Files => "files",
            LinkKind::Kafka => "kafka",
            LinkKind::Buffer => "buffer",
            LinkKind::State => "state",
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A link a node depends on: what it is (no secrets) and how to check it.
pub struct Link {
    /// What kind of link.
    pub kind: LinkKind,
    /// What is checked, without secrets: `127.0.0.1:5432/sluice (PostgreSQL)`. Links with
    /// the same kind and name are checked once.
    pub name: String,
    /// The check: its latency, or why the link is down.
    pub check: BoxFuture<'static, Result<Duration, ConnectorError>>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The list of node kinds: every place that enumerates kinds loops over it.
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<&'static dyn Kind>,
}

impl Registry {
    /// A registry of these kinds, in the order of the documentation.
    pub fn new(kinds: Vec<&'static dyn Kind>) -> Self {
        Registry { kinds }
    }

    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<&'static dyn Kind> {
        self.kinds.iter().copied().find(|k| k.name() == name)
    }

    /// Every kind, in the order of the documentation.
    pub fn iter(&self) -> impl Iterator<Item = &'static dyn Kind> + '_ {
        self.kinds.iter().copied()
    }

    /// Every `type:` value.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// A node's own fields, as its [`Kind`] reads them.
pub struct Fields<'a> {
    pub(crate) node: &'a Node,
    pub(crate) lines: &'a [&'a str],
    pub(crate) diags: &'a mut Vec<Diagnostic>,
    /// Inside `nodes:` the common fields are read by the loader; inside `compensate:`
    /// there are none.
    pub(crate) filter: Filter,
    pub(crate) extra: &'static [&'static str],
}

impl Fields<'_> {
    /// Reads the fields into `T` (through serde), reporting every error with its place.
    pub fn read<T: DeserializeOwned>(&mut self) -> Option<T> {
        recover::<T>(self.node, self.lines, self.filter, self.extra, self.diags)
    }

    /// Reads the fields into the spec `T`: the node's config.
    pub fn config<T: DeserializeOwned + NodeConfig>(&mut self) -> Option<Arc<dyn NodeConfig>> {
        self.read::<T>()
            .map(|spec| Arc::new(spec) as Arc<dyn NodeConfig>)
    }

    /// Whether the field `key` is written.
    pub fn has(&self, key: &str) -> bool {
        self.node.get(key).is_some()
    }

    /// Where the field `key` is written (its key's position and width).
    pub fn place_of(&self, key: &str) -> Option<(Pos, usize)> {
        self.node.get(key).map(Node::label)
    }

    /// A written field that looks like a misspelling of one of `wanted` (`tabel` for
    /// `table`), with its place and the field it is near: for a kind that chooses its
    /// shape by which fields are present, so that a typo is named rather than reported
    /// as a field missing.
    pub fn misspelt(&self, wanted: &[&'static str]) -> Option<(String, &'static str, Pos, usize)> {
        self.node.entries().iter().find_map(|e| {
            let near = crate::diag::suggest(e.name(), wanted.iter().copied())?;
            let (pos, width) = (e.key.pos, e.key.width);
            Some((e.name().to_owned(), near, pos, width))
        })
    }

    /// Where the node is written.
    pub fn place(&self) -> (Pos, usize) {
        self.node.label()
    }

    /// Reports an error.
    pub fn report(&mut self, diagnostic: Diagnostic) {
        self.diags.push(diagnostic);
    }
}

/// The metrics connectors keep in a process (an HTTP source's request latency and
/// statuses per host, its rate-limit waits, its breakers' states): one Prometheus registry
/// per [`BuildContext`] (`ctx.shared::<ConnectorMetrics>()`), which `sluice serve` exports
/// at `/metrics` beside its own. Nothing here names a kind: each connector registers its
/// metrics once, with [`ConnectorMetrics::get_or_register`].
#[derive(Default)]
pub struct ConnectorMetrics {
    /// The registry the connectors' metrics are in.
    pub registry: prometheus::Registry,
    registered: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl fmt::Debug for ConnectorMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorMetrics").finish_non_exhaustive()
    }
}

impl ConnectorMetrics {
    /// The connector's metrics `T`, made and registered by `make` on first use.
    pub fn get_or_register<T: Send + Sync + 'static>(
        &self,
        make: impl FnOnce(&prometheus::Registry) -> T,
    ) -> Arc<T> {
        let mut map = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(make(&self.registry)));
        Arc::clone(entry)
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("keyed by its own TypeId"))
    }
}

/// What building a node may use beside its spec: where relative paths start, and objects
/// shared by every node of a process (an HTTP host's circuit breaker, say).
#[derive(Clone)]
pub struct BuildContext {
    /// The folder relative paths start from (the working directory by default).
    pub base_dir: PathBuf,
    /// The pipeline's name.
    pub pipeline: String,
    shared: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
    /// Where the pipeline's rate-limit budgets are shared with other processes (its
    /// state store, when that is PostgreSQL); `None`: each node limits itself.
    rate_budgets: Option<Arc<dyn sluice_core::RateBudgets>>,
}

impl Default for BuildContext {
    fn default() -> Self {
        BuildContext {
            base_dir: PathBuf::from("."),
            pipeline: String::new(),
            shared: Arc::default(),
            rate_budgets: None,
        }
    }
}

impl fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext")
            .field("base_dir", &self.base_dir)
            .field("pipeline", &self.pipeline)
            .field("rate_budgets", &self.rate_budgets.is_some())
            .finish_non_exhaustive()
    }
}

impl BuildContext {
    /// A context whose relative paths start at `base_dir`.
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        BuildContext {
            base_dir: base_dir.into(),
            ..BuildContext::default()
        }
    }

    /// The same context (and shared objects) for another pipeline.
    pub fn for_pipeline(&self, pipeline: &str) -> Self {
        BuildContext {
            pipeline: pipeline.to_owned(),
            ..self.clone()
        }
    }

    /// The same context (and shared objects) whose nodes share their rate-limit budgets
    /// through `budgets` (the state store of the pipeline, when it can share them: see
    /// `sluice_state::StateStore::rate_budgets`); `None` keeps each node's own limiter.
    pub fn with_rate_budgets(&self, budgets: Option<Arc<dyn sluice_core::RateBudgets>>) -> Self {
        BuildContext {
            rate_budgets: budgets,
            ..self.clone()
        }
    }

    /// Where a node shares its rate-limit budget with every process reading the same API,
    /// if anywhere.
    pub fn rate_budgets(&self) -> Option<Arc<dyn sluice_core::RateBudgets>> {
        self.rate_budgets.clone()
    }

    /// The process-wide `T` of this context (made on first use): e.g. the circuit breakers
    /// of HTTP hosts, shared by every node and run.
    pub fn shared<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut map = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        Arc::clone(entry)
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("keyed by its own TypeId"))
    }

    /// `path` from `base_dir` when relative.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.base_dir.join(path)
    }

    /// A database URL with a relative `sqlite://` path made relative to `base_dir`.
    pub fn database_url(&self, url: &str) -> String {
        resolve_sqlite(url, &self.base_dir)
    }
}

/// Makes a relative `sqlite://` path relative to `base`.
pub fn resolve_sqlite(url: &str, base: &Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') && !path.starts_with(":memory:") => {
            format!("sqlite://{}", base.join(path).display())
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicU32);

    #[test]
    fn shared_objects_are_one_per_context() {
        let ctx = BuildContext::default();
        let a = ctx.shared::<Counter>();
        a.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let b = ctx.for_pipeline("other").shared::<Counter>();
        assert_eq!(b.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        let fresh = BuildContext::default().shared::<Counter>();
        assert_eq!(fresh.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
