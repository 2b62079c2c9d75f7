//! `type: postgres`, `mysql` and `sqlite`: one node kind per engine, each a source (with
//! `query`) or a sink (with `table`).

use super::spec::{SqlSinkSpec, SqlSourceSpec, WriteMode};
use sluice_config::doctor::{Endpoint, Probe};
use sluice_config::kind::schema_of;
use sluice_config::plan::PlannedNode;
use sluice_config::spec::nodes::{NodeSpec, Role};
use sluice_config::spec::{SchemaPolicy, TimeoutsSpec};
use sluice_config::values::{DatabaseUrl, Dialect};
use sluice_config::{
    BuildContext, Checker, Diagnostic, Fields, Kind, Link, LinkKind, NodeConfig, Spanned,
};
use sluice_core::ConnectorError;
use sluice_core::node::{BoxFuture, NodeRunner};
use std::sync::Arc;

/// `type: postgres`, `type: mysql` or `type: sqlite`.
pub struct SqlKind(pub Dialect);

/// `type: postgres`.
pub static POSTGRES: SqlKind = SqlKind(Dialect::Postgres);
/// `type: mysql` (MySQL and MariaDB).
pub static MYSQL: SqlKind = SqlKind(Dialect::Mysql);
/// `type: sqlite`.
pub static SQLITE: SqlKind = SqlKind(Dialect::Sqlite);

fn kind_of(dialect: Dialect) -> &'static SqlKind {
    match dialect {
        Dialect::Postgres => &POSTGRES,
        Dialect::Mysql => &MYSQL,
        Dialect::Sqlite => &SQLITE,
    }
}

impl Kind for SqlKind {
    fn name(&self) -> &'static str {
        match self.0 {
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
            Dialect::Sqlite => "sqlite",
        }
    }

    fn roles(&self) -> &'static [Role] {
        &[Role::Source, Role::Sink]
    }

    fn read(&self, fields: &mut Fields<'_>) -> Option<Arc<dyn NodeConfig>> {
        let ty = self.name();
        match (fields.has("query"), fields.place_of("table")) {
            (true, None) => fields.read::<SqlSourceSpec>().map(|mut s| {
                s.dialect = self.0;
                Arc::new(s) as Arc<dyn NodeConfig>
            }),
            (false, Some(_)) => fields.read::<SqlSinkSpec>().map(|mut s| {
                s.dialect = self.0;
                Arc::new(s) as Arc<dyn NodeConfig>
            }),
            (true, Some((pos, width))) => {
                fields.report(
                    Diagnostic::error(pos, format!("a `{ty}` node reads (`query`) or writes (`table`), not both"))
                        .with_width(width)
                        .with_help("make two nodes: one with `query` (a source), one with `table` and `inputs` (a sink)"),
                );
                None
            }
            (false, None) => {
                // `tabel:` or `qurey:`: the typo, not the field it stands for, is what
                // is wrong.
                if let Some((written, near, pos, width)) = fields.misspelt(&["query", "table"]) {
                    fields.report(
                        Diagnostic::error(pos, format!("unknown field `{written}`, did you mean `{near}`?"))
                            .with_width(width)
                            .with_help("a source has `query: SELECT ...`; a sink has `table: name` and `inputs: [...]`"),
                    );
                    return None;
                }
                let (pos, width) = fields.place();
                fields.report(
                    Diagnostic::error(pos, format!("a `{ty}` node needs `query` (to read) or `table` (to write)"))
                        .with_width(width)
                        .with_help("a source has `query: SELECT ...`; a sink has `table: name` and `inputs: [...]`"),
                );
                None
            }
        }
    }

    fn schemas(&self, generator: &mut schemars::SchemaGenerator) -> Vec<schemars::Schema> {
        vec![
            schema_of::<SqlSourceSpec>(generator),
            schema_of::<SqlSinkSpec>(generator),
        ]
    }
}

impl NodeConfig for SqlSourceSpec {
    fn kind(&self) -> &'static dyn Kind {
        kind_of(self.dialect)
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn check(&self, _node: &NodeSpec, c: &mut Checker<'_>) {
        let s = self;
        dialect(c, &s.url, s.dialect);
        if s.query.value.trim().is_empty() {
            c.error_at(
                &s.query,
                "`query` is empty",
                "write the SELECT that reads the rows",
            );
        }
        // The same count the source binds by: uses in strings, quoted names and comments
        // are not parameters.
        let uses = super::source::count_watermark_uses(&s.query.value) > 0;
        match (&s.watermark, uses) {
            (Some(w), false) => c.error_at(
                &w.column,
                "the query does not use `:watermark`",
                "add a condition such as `WHERE updated_at > :watermark`, or remove `watermark`",
            ),
            (None, true) => {
                let at = c.find(s.query.pos, ":watermark");
                c.error(
                    at,
                    10,
                    "the query uses `:watermark` but the node has no `watermark`",
                    "add `watermark: { column: updated_at }`",
                );
            }
            _ => {}
        }
        c.at_least(&s.fetch_size, 1, "fetch_size");
        if s.fetch_size.pos != sluice_config::Pos::START {
            c.warning(
                s.fetch_size.pos,
                s.fetch_size.width,
                "`fetch_size` has no effect: the rows stream from the server as the source reads them, and batches are cut by `batching`",
                "remove it; to change the batches, set `batching: { max_rows, max_bytes }` on this node",
            );
        }
        c.timeouts(&s.timeouts);
    }

    fn shown(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn timeouts(&self) -> Option<Option<&TimeoutsSpec>> {
        Some(self.timeouts.as_ref())
    }

    fn build<'a>(
        &'a self,
        node: &'a PlannedNode,
        ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
        Box::pin(async move {
            let config = source_config(self, node, ctx);
            config.validate()?;
            let (pipeline, id) = (ctx.pipeline.clone(), node.id.clone());
            Ok(NodeRunner::source(move |checkpoint| async move {
                super::build_source(config, &pipeline, &id, checkpoint).await
            }))
        })
    }

    fn links(&self, _node: &PlannedNode, ctx: &BuildContext) -> Vec<Link> {
        vec![database_link(&self.url.value, ctx)]
    }

    fn keyset(
        &self,
        node: &PlannedNode,
        ctx: &BuildContext,
    ) -> Option<Box<dyn sluice_config::reconcile::KeySet>> {
        let config = source_config(self, node, ctx);
        // Everything the source holds: `:watermark` is its initial value.
        let initial = config.watermark.as_ref().map(|w| match &w.initial {
            serde_json::Value::String(s) => super::doctor::literal(s),
            other => other.to_string(),
        });
        let query = super::source::rewrite_watermark(&config.query, |_| {
            initial.clone().unwrap_or_else(|| "NULL".to_owned())
        });
        Some(Box::new(super::reconcile::SqlKeySet::new(
            config.url.expose().to_owned(),
            self.url.value.to_string(),
            super::reconcile::From::Query(query),
            std::time::Duration::from_millis(config.connect_timeout_ms),
            config.watermark.as_ref().map(|w| w.column.clone()),
        )))
    }

    fn probes(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<Probe> {
        let config = source_config(self, node, ctx);
        let timeout = std::time::Duration::from_millis(config.connect_timeout_ms);
        vec![Probe {
            kind: LinkKind::Database,
            name: self.url.value.to_string(),
            endpoints: database_endpoints(&self.url.value),
            run: Box::pin(super::doctor::source_probe(
                config,
                ctx.pipeline.clone(),
                node.id.clone(),
                timeout,
            )),
        }]
    }
}

impl NodeConfig for SqlSinkSpec {
    fn kind(&self) -> &'static dyn Kind {
        kind_of(self.dialect)
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn check(&self, _node: &NodeSpec, c: &mut Checker<'_>) {
        let s = self;
        dialect(c, &s.url, s.dialect);
        if s.table.value.trim().is_empty() {
            c.error_at(
                &s.table,
                "`table` is empty",
                "name the table to write, e.g. `table: orders`",
            );
        }
        match (s.mode.value, s.key.first()) {
            (WriteMode::Upsert, None) => c.error_at(
                &s.mode,
                "`mode: upsert` needs `key`",
                "add the key columns: `key: [id]`",
            ),
            (WriteMode::Append | WriteMode::Replace, Some(k)) => c.error_at(
                k,
                "`key` is only used by `mode: upsert`",
                "remove `key`, or set `mode: upsert`",
            ),
            _ => {}
        }
        c.unique(&s.key, "key column");
        c.at_least(&s.max_connections, 1, "max_connections");
        c.timeouts(&s.timeouts);
    }

    fn shown(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn timeouts(&self) -> Option<Option<&TimeoutsSpec>> {
        Some(self.timeouts.as_ref())
    }

    fn schema_policy(&self) -> Option<SchemaPolicy> {
        Some(self.schema_policy.value)
    }

    fn plan_notes(&self, inputs: &[(&str, Option<Vec<String>>)]) -> Vec<String> {
        use super::spec::Naming;
        use sluice_core::naming::{NameLimit, resolve};
        if self.naming.value != Naming::SnakeCase {
            return Vec::new();
        }
        let mut out = vec!["naming:   snake_case: lower case, non-alphanumerics to `_`, long or taken names get a hash suffix; recorded in the state store when first seen (`sluice runs show` lists them)".to_owned()];
        let limit = match self.dialect {
            Dialect::Postgres => NameLimit::Bytes(63),
            Dialect::Mysql => NameLimit::Chars(64),
            Dialect::Sqlite => NameLimit::None,
        };
        for (input, declared) in inputs {
            let Some(fields) = declared else { continue };
            let names = resolve(
                &Default::default(),
                fields.iter().map(String::as_str),
                limit,
            );
            let shown: Vec<String> = fields
                .iter()
                .filter_map(|f| names.get(f.as_str()).map(|c| format!("`{f}` -> `{c}`")))
                .collect();
            out.push(format!(
                "columns of {input}'s declared fields (unless earlier runs recorded others): {}",
                shown.join(", ")
            ));
        }
        out
    }

    fn build<'a>(
        &'a self,
        node: &'a PlannedNode,
        ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
        Box::pin(async move {
            let sink = super::build_sink(sink_config(self, node, ctx)).await?;
            Ok(NodeRunner::Sink(sink))
        })
    }

    fn links(&self, _node: &PlannedNode, ctx: &BuildContext) -> Vec<Link> {
        vec![database_link(&self.url.value, ctx)]
    }

    fn keyset(
        &self,
        node: &PlannedNode,
        ctx: &BuildContext,
    ) -> Option<Box<dyn sluice_config::reconcile::KeySet>> {
        let config = sink_config(self, node, ctx);
        Some(Box::new(super::reconcile::SqlKeySet::new(
            config.url.expose().to_owned(),
            self.url.value.to_string(),
            super::reconcile::From::Table(config.table.clone()),
            std::time::Duration::from_millis(config.connect_timeout_ms),
            None,
        )))
    }

    fn probe_sample<'a>(
        &'a self,
        node: &'a PlannedNode,
        ctx: &'a BuildContext,
        columns: &'a [(String, String)],
    ) -> BoxFuture<'a, Vec<sluice_config::doctor::Finding>> {
        Box::pin(super::doctor::sample_fit(
            sink_config(self, node, ctx),
            node.id.clone(),
            columns,
        ))
    }

    fn key_columns(&self) -> Vec<String> {
        self.key.iter().map(|k| k.value.clone()).collect()
    }

    /// A server database (not a SQLite file on one machine), appended or upserted: each
    /// batch's ledger row makes a second write of it a no-op, whoever writes it. A
    /// `replace` empties the table at the load's first batch, which must be one writer's.
    fn shared_writes(&self) -> bool {
        self.url.value.dialect() != Dialect::Sqlite
            && !matches!(self.mode.value, WriteMode::Replace)
    }

    fn probes(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<Probe> {
        let config = sink_config(self, node, ctx);
        vec![Probe {
            kind: LinkKind::Database,
            name: self.url.value.to_string(),
            endpoints: database_endpoints(&self.url.value),
            run: Box::pin(super::doctor::sink_probe(
                config.url.expose().to_owned(),
                config.table.clone(),
                config.create_table,
                std::time::Duration::from_millis(config.connect_timeout_ms),
            )),
        }]
    }
}

/// Where a database listens, for the network step (none for a SQLite file).
fn database_endpoints(url: &DatabaseUrl) -> Vec<Endpoint> {
    let service = match url.dialect() {
        Dialect::Postgres => "PostgreSQL",
        Dialect::Mysql => "MySQL",
        Dialect::Sqlite => "SQLite",
    };
    Endpoint::of_url(url.expose(), service, true)
        .into_iter()
        .collect()
}

/// A database's link: connect and `SELECT 1`, through the sink of its engine (which
/// touches no table).
pub(crate) fn database_link(url: &DatabaseUrl, ctx: &BuildContext) -> Link {
    let resolved = ctx.database_url(url.expose());
    Link {
        kind: LinkKind::Database,
        name: url.to_string(),
        check: Box::pin(async move {
            let sink =
                super::build_sink(super::SqlSinkConfig::new(resolved, "_sluice_health")).await?;
            sink.health().await
        }),
    }
}

/// The URL's engine is the node's, and its password is not written in clear.
pub(crate) fn dialect(c: &mut Checker<'_>, url: &Spanned<DatabaseUrl>, dialect: Dialect) {
    if url.value.dialect() != dialect {
        c.error_at(
            url,
            format!(
                "this is a `{dialect}` node but the URL is for {}",
                url.value.dialect()
            ),
            format!("use a {dialect} URL, or `type: {}`", url.value.dialect()),
        );
    }
    if url.value.has_password() && !url.interpolated {
        c.secret_warning(
            url.pos,
            url.width,
            "the database URL holds a password written in clear",
            "write the password as `${NAME}`, e.g. `postgres://user:${PGPASSWORD}@host/db`",
        );
    }
}

/// The SQL sink's config from the node's spec; a relative SQLite path starts at the
/// pipeline's folder.
fn sink_config(spec: &SqlSinkSpec, node: &PlannedNode, ctx: &BuildContext) -> super::SqlSinkConfig {
    use sluice_config::spec::SchemaPolicy as P;
    let url = ctx.database_url(spec.url.value.expose());
    let mut c = super::SqlSinkConfig::new(url, spec.table.value.clone());
    c.mode = spec.mode.value;
    c.key = spec.key.iter().map(|k| k.value.clone()).collect();
    c.create_table = spec.create_table;
    // `quarantine` is the engine's business (the batch goes to the failed-batch store):
    // the sink fails the batch with `contract_changed` and the disposition does the rest.
    c.schema_policy = match spec.schema_policy.value {
        P::Evolve => super::SchemaPolicy::Evolve,
        P::Warn => super::SchemaPolicy::Warn,
        P::Quarantine | P::Fail => super::SchemaPolicy::Fail,
    };
    c.naming = match spec.naming.value {
        super::spec::Naming::Verbatim => sluice_core::naming::Naming::Verbatim,
        super::spec::Naming::SnakeCase => sluice_core::naming::Naming::SnakeCase,
    };
    c.max_connections = spec.max_connections.value;
    if let Some(t) = &node.timeouts {
        c.connect_timeout_ms = millis(t.connect.get());
        c.write_timeout_ms = millis(t.request.get());
    }
    c
}

/// The SQL source's config from the node's spec.
fn source_config(
    spec: &SqlSourceSpec,
    node: &PlannedNode,
    ctx: &BuildContext,
) -> super::SqlSourceConfig {
    let url = ctx.database_url(spec.url.value.expose());
    let mut c = super::SqlSourceConfig::new(url, spec.query.value.clone());
    c.watermark = spec.watermark.as_ref().map(|w| super::WatermarkConfig {
        column: w.column.value.clone(),
        initial: match &w.initial {
            // A number stays a number, so `WHERE id > :watermark` compares as numbers.
            Some(text) => text
                .parse::<i64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| serde_json::Value::from(text.clone())),
            None => serde_json::Value::from(0),
        },
        future_tolerance: w.future_tolerance.value.get(),
    });
    // Batches are cut by `batching` alone. `fetch_size` has no effect: sqlx streams each
    // dialect's result without a round-trip size (see `SqlSourceSpec::fetch_size`).
    let batching = node.batching.clone().unwrap_or_default();
    c.batch_rows = usize::try_from(batching.max_rows)
        .unwrap_or(usize::MAX)
        .max(1);
    c.batch_bytes = usize::try_from(batching.max_bytes.bytes())
        .unwrap_or(usize::MAX)
        .max(1);
    c.max_wait = batching.max_wait.get();
    if let Some(t) = &node.timeouts {
        c.connect_timeout_ms = millis(t.connect.get());
    }
    c
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The source's batches are cut by `batching` (rows, bytes, wait), never by
    /// `fetch_size`.
    #[test]
    fn batching_cuts_the_source_batches_not_fetch_size() {
        let text = "pipeline: s\nnodes:\n  db:\n    type: sqlite\n    url: sqlite:///tmp/x.db\n    query: SELECT 1\n    fetch_size: 2\n    batching: { max_rows: 500, max_bytes: 64KiB, max_wait: 250ms }\n  out:\n    type: file_sink\n    inputs: [db]\n    path: o.ndjson\n    format: ndjson\n";
        let plan = sluice_config::validate(text, &sluice_config::Env::new(), crate::registry())
            .unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        let node = plan.nodes.iter().find(|n| n.id == "db").unwrap();
        let spec = node.config.downcast_ref::<SqlSourceSpec>().unwrap();
        let c = source_config(spec, node, &BuildContext::default());
        assert_eq!(c.batch_rows, 500);
        assert_eq!(c.batch_bytes, 64 * 1024);
        assert_eq!(c.max_wait, std::time::Duration::from_millis(250));
    }
}
