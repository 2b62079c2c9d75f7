//! `type: file` (records read from local files) and `type: file_sink` (batches written
//! to a file): their specs read, checked, built and health-checked.

use super::spec::{FileFormat, FileSinkSpec, FileSourceSpec};
use crate::spec::check_schema;
use sluice_config::kind::KindOf;
use sluice_config::plan::PlannedNode;
use sluice_config::spec::SchemaPolicy;
use sluice_config::spec::nodes::{NodeSpec, Role};
use sluice_config::{BuildContext, Checker, Kind, Link, LinkKind, NodeConfig};
use sluice_core::node::{BoxFuture, NodeRunner};
use sluice_core::{ConnectorError, Sink, Source};

/// `type: file`.
pub static FILE: KindOf<FileSourceSpec> = KindOf::new("file", Role::Source, "file source");

/// `type: file_sink`.
pub static FILE_SINK: KindOf<FileSinkSpec> = KindOf::new("file_sink", Role::Sink, "file sink");

impl NodeConfig for FileSourceSpec {
    fn kind(&self) -> &'static dyn Kind {
        &FILE
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn check(&self, _node: &NodeSpec, c: &mut Checker<'_>) {
        let f = self;
        if f.path.value.trim().is_empty() {
            c.error_at(
                &f.path,
                "`path` is empty",
                "name the file or a glob, e.g. `data/*.ndjson`",
            );
        }
        if let (Some(csv), false) = (&f.csv, f.format == FileFormat::Csv) {
            c.error_at(
                csv,
                format!(
                    "`csv` options apply to `format: csv`, this is `{}`",
                    f.format.as_str()
                ),
                "remove `csv`, or set `format: csv`",
            );
        }
        check_schema(c, &f.schema);
        if f.schema_policy.value == SchemaPolicy::Quarantine {
            c.error_at(
                        &f.schema_policy,
                        "the `file` source cannot quarantine records that differ from the schema",
                        "use `fail` (the read stops, naming the fields and the line), or `evolve` or `warn` to take the new fields",
                    );
        }
    }

    fn shown(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn schema_policy(&self) -> Option<SchemaPolicy> {
        Some(self.schema_policy.value)
    }

    fn declared_columns(&self) -> Option<Vec<String>> {
        self.schema.declared()
    }

    fn build<'a>(
        &'a self,
        node: &'a PlannedNode,
        ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
        Box::pin(async move {
            let config = source_config(self, node, ctx);
            let (pipeline, id) = (ctx.pipeline.clone(), node.id.clone());
            Ok(NodeRunner::source(move |checkpoint| async move {
                let source = super::FileSource::new(config, &pipeline, &id, checkpoint)?;
                Ok(Box::new(source) as Box<dyn Source>)
            }))
        })
    }

    fn links(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<Link> {
        let config = source_config(self, node, ctx);
        let (pipeline, id) = (ctx.pipeline.clone(), node.id.clone());
        vec![Link {
            kind: LinkKind::Files,
            name: ctx.path(&self.path.value).display().to_string(),
            check: Box::pin(async move {
                let mut source = super::FileSource::new(config, &pipeline, &id, None)?;
                source.health().await.map(Option::unwrap_or_default)
            }),
        }]
    }
}

impl NodeConfig for FileSinkSpec {
    fn kind(&self) -> &'static dyn Kind {
        &FILE_SINK
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn check(&self, _node: &NodeSpec, c: &mut Checker<'_>) {
        let f = self;
        if f.path.value.trim().is_empty() {
            c.error_at(
                &f.path,
                "`path` is empty",
                "name the file to write, e.g. `out/orders.ndjson`",
            );
        }
        if let (Some(csv), false) = (&f.csv, f.format == FileFormat::Csv) {
            c.error_at(
                csv,
                format!(
                    "`csv` options apply to `format: csv`, this is `{}`",
                    f.format.as_str()
                ),
                "remove `csv`, or set `format: csv`",
            );
        }
        c.templates(&f.path.value, f.path.pos, &["run_id", "date"], &|_| {
            "a file path may use `{{run_id}}` and `{{date}}`".to_owned()
        });
    }

    fn shown(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn build<'a>(
        &'a self,
        node: &'a PlannedNode,
        ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
        Box::pin(async move {
            let sink = super::FileSink::new(sink_config(self, ctx), &ctx.pipeline, &node.id)?;
            Ok(NodeRunner::Sink(Box::new(sink)))
        })
    }

    fn links(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<Link> {
        let sink = super::FileSink::new(sink_config(self, ctx), &ctx.pipeline, &node.id);
        vec![Link {
            kind: LinkKind::Files,
            name: ctx.path(&self.path.value).display().to_string(),
            check: Box::pin(async move { sink?.health().await }),
        }]
    }
}

/// The file source's config from the node's spec; a relative path starts at `base_dir`.
fn source_config(
    spec: &FileSourceSpec,
    node: &PlannedNode,
    ctx: &BuildContext,
) -> super::FileSourceConfig {
    let mut c = super::FileSourceConfig::new(ctx.path(&spec.path.value), file_format(spec.format));
    if let Some(csv) = &spec.csv {
        c.csv = csv_options(&csv.value);
    }
    c.schema = crate::spec::schema_config(&spec.schema);
    c.nested = spec.nested;
    c.schema_policy = spec.schema_policy.value;
    if let Some(b) = &node.batching {
        c.max_rows = (b.max_rows as usize).max(1);
        c.max_bytes = (b.max_bytes.bytes() as usize).max(1);
        c.max_wait = b.max_wait.get();
    }
    if let Some(m) = &spec.max_record_bytes {
        c.max_record_bytes = usize::try_from(m.value.bytes())
            .unwrap_or(usize::MAX)
            .max(1);
    }
    c.bad_records = spec.bad_records;
    c
}

fn file_format(f: super::spec::FileFormat) -> super::FileFormat {
    f
}

fn csv_options(o: &super::spec::CsvOptions) -> super::CsvOptions {
    super::CsvOptions {
        delimiter: o.delimiter,
        header: o.header,
        quote: o.quote,
    }
}

/// The file sink's config from the node's spec; a relative path starts at `base_dir`.
fn sink_config(spec: &FileSinkSpec, ctx: &BuildContext) -> super::FileSinkConfig {
    let mut c = super::FileSinkConfig::new(ctx.path(&spec.path.value), file_format(spec.format));
    c.mode = spec.mode;
    if let Some(csv) = &spec.csv {
        c.csv = csv_options(&csv.value);
    }
    c
}
