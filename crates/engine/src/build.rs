//! From a validated plan to a runnable [`Pipeline`], its buffer and its state store:
//! the connector registry lives here, as one `match` on the node's kind.

use futures::FutureExt;
use sluice_buffer::{
    Buffer, EmbeddedLog, EmbeddedOptions, FsyncPolicy, KafkaBuffer, KafkaOptions, WireFormat,
};
use sluice_config::plan::{Plan, PlannedNode};
use sluice_config::spec::nodes::{NodeKind, TaskSpec};
use sluice_config::spec::{self, BufferSpec};
use sluice_connectors::{file, http, http_sink, sql};
use sluice_core::{Disposition, ErrorClass, Secret};
use sluice_state::StateStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::pipeline::{Dispositions, NodeDef, NodeRunner, Pipeline, Task};
use crate::tasks::{CommandTask, SqlTask};
use crate::transform::CompiledTransform;

/// A node or the pipeline cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The buffer could not be opened.
    #[error("cannot open the buffer: {0}")]
    Buffer(#[from] sluice_buffer::BufferError),
    /// The state store could not be opened.
    #[error(transparent)]
    State(#[from] sluice_state::StateError),
    /// A node could not be built.
    #[error("node `{node}`: {message}")]
    Node {
        /// The node.
        node: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Where relative paths in the pipeline (the embedded buffer, SQLite files) are resolved.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The folder relative paths start from (the working directory by default).
    pub base_dir: PathBuf,
    /// Circuit breakers shared by every HTTP source, per host, across runs.
    pub breakers: Arc<http::BreakerRegistry>,
}

impl Default for BuildContext {
    fn default() -> Self {
        BuildContext {
            base_dir: PathBuf::from("."),
            breakers: Arc::new(http::BreakerRegistry::new()),
        }
    }
}

/// Opens the plan's state store.
pub async fn open_state(plan: &Plan, ctx: &BuildContext) -> Result<StateStore, BuildError> {
    Ok(StateStore::open(&resolve_sqlite(plan.state.expose(), &ctx.base_dir)).await?)
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

/// Opens the plan's buffer. The embedded log is opened for the pipeline's topics only
/// and locked while open: a second process running the same pipeline on the same folder
/// gets [`BufferError::Locked`](sluice_buffer::BufferError::Locked), naming the holder.
pub fn open_buffer(plan: &Plan, ctx: &BuildContext) -> Result<Arc<dyn Buffer>, BuildError> {
    match &plan.buffer {
        BufferSpec::Embedded(e) => {
            let options = EmbeddedOptions {
                segment_bytes: e.segment_size.value.bytes(),
                fsync: match &e.fsync {
                    spec::FsyncPolicy::EveryBatch => FsyncPolicy::EveryBatch,
                    spec::FsyncPolicy::Interval(every) => FsyncPolicy::Interval(every.value.get()),
                },
                max_message_bytes: e.max_message_size.value.bytes() as usize,
                format: WireFormat::ArrowZstd,
            };
            Ok(Arc::new(EmbeddedLog::open_for(
                ctx.base_dir.join(&e.path),
                &plan.pipeline,
                options,
            )?))
        }
        BufferSpec::Kafka(k) => {
            let mut properties: BTreeMap<String, String> = k
                .properties
                .iter_exposed()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect();
            let arrow_compression = |c: spec::Compression| match c {
                spec::Compression::Zstd => WireFormat::ArrowZstd,
                spec::Compression::Lz4 => WireFormat::ArrowLz4,
                _ => WireFormat::Arrow,
            };
            let format = match k.format {
                spec::WireFormat::Arrow => arrow_compression(k.compression),
                spec::WireFormat::Json => WireFormat::JsonLines,
            };
            // Arrow compresses its own buffers with zstd/lz4; other codecs (and any codec
            // for JSON lines) are applied by librdkafka to whole messages.
            let kafka_codec = match (k.format, k.compression) {
                (spec::WireFormat::Arrow, spec::Compression::Zstd | spec::Compression::Lz4) => None,
                (_, spec::Compression::None) => None,
                (_, c) => Some(format!("{c:?}").to_lowercase()),
            };
            if let Some(codec) = kafka_codec {
                properties.entry("compression.type".into()).or_insert(codec);
            }
            let options = KafkaOptions {
                brokers: k
                    .brokers
                    .value
                    .iter()
                    .map(|b| b.value.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                partitions: k.partitions.value as i32,
                replication: i32::from(k.replication.value),
                retention: Some(k.retention.value.get()),
                message_max_bytes: k.message_max_bytes.value.bytes() as usize,
                format,
                properties,
                ..KafkaOptions::default()
            };
            Ok(Arc::new(KafkaBuffer::new(options)?))
        }
    }
}

/// The topic prefix of the plan's buffer (Kafka's `topic_prefix`), if any.
pub fn topic_prefix(buffer: &BufferSpec) -> Option<String> {
    match buffer {
        BufferSpec::Kafka(k) => Some(k.topic_prefix.value.clone()),
        BufferSpec::Embedded(_) => None,
    }
}

/// Builds a task (a task node's work or a `compensate` action).
pub fn build_task(task: &TaskSpec, ctx: &BuildContext) -> Box<dyn Task> {
    match task {
        TaskSpec::SqlTask(t) => Box::new(SqlTask::new(
            Secret::new(resolve_sqlite(t.url.value.expose(), &ctx.base_dir)),
            t.sql.value.clone(),
            t.timeout.value.get(),
        )),
        TaskSpec::Command(c) => Box::new(CommandTask::new(
            c.program.value.clone(),
            c.args.clone(),
            c.env
                .iter_exposed()
                .map(|(k, v)| (k.to_owned(), Secret::new(v)))
                .collect(),
            c.cwd.as_ref().map(|d| ctx.base_dir.join(d)),
            c.timeout.value.get(),
        )),
    }
}

fn node_error(node: &PlannedNode, message: impl Into<String>) -> BuildError {
    BuildError::Node {
        node: node.id.clone(),
        message: message.into(),
    }
}

/// A declared or inferred schema (HTTP and file sources).
fn schema_config(spec: &sluice_config::spec::nodes::http::SchemaSpec) -> http::SchemaConfig {
    use sluice_config::spec::nodes::http as s;
    match spec {
        s::SchemaSpec::Infer => http::SchemaConfig::Infer,
        s::SchemaSpec::Columns(cols) => http::SchemaConfig::Columns(
            cols.value
                .iter()
                .map(|col| http::ColumnConfig {
                    name: col.name.value.clone(),
                    data_type: match col.data_type {
                        s::ColumnType::Boolean => http::ColumnType::Boolean,
                        s::ColumnType::Int64 => http::ColumnType::Int64,
                        s::ColumnType::Float64 => http::ColumnType::Float64,
                        s::ColumnType::String => http::ColumnType::String,
                        s::ColumnType::Timestamp => http::ColumnType::Timestamp,
                        s::ColumnType::Date => http::ColumnType::Date,
                        s::ColumnType::Json => http::ColumnType::Json,
                    },
                    nullable: col.nullable,
                })
                .collect(),
        ),
    }
}

fn nested_mode(mode: sluice_config::spec::nodes::http::NestedMode) -> http::NestedMode {
    use sluice_config::spec::nodes::http::NestedMode as N;
    match mode {
        N::Struct => http::NestedMode::Struct,
        N::JsonText => http::NestedMode::JsonText,
    }
}

fn schema_policy(policy: sluice_config::spec::nodes::http::SchemaPolicy) -> http::SchemaPolicy {
    use sluice_config::spec::nodes::http::SchemaPolicy as P;
    match policy {
        P::Evolve => http::SchemaPolicy::Evolve,
        P::Warn => http::SchemaPolicy::Warn,
        P::Quarantine => http::SchemaPolicy::Quarantine,
        P::Fail => http::SchemaPolicy::Fail,
    }
}

/// The HTTP source's config from the node's spec (retry and batching come from the plan's
/// effective values, so `defaults` apply too).
pub(crate) fn http_source_config(
    spec: &sluice_config::spec::nodes::http::HttpSource,
    node: &PlannedNode,
) -> http::HttpSourceConfig {
    use sluice_config::spec::nodes::http as s;
    let mut c = http::HttpSourceConfig::new(spec.url.value.as_str());
    c.method = match spec.method {
        s::HttpMethod::GET => http::HttpMethod::GET,
        s::HttpMethod::POST => http::HttpMethod::POST,
    };
    c.headers = spec
        .headers
        .iter_exposed()
        .map(|(k, v)| (k.to_owned(), Secret::new(v)))
        .collect();
    c.query = spec
        .query
        .iter()
        .map(|(k, v)| (k.value.clone(), v.value.clone()))
        .collect();
    c.body = spec.body.as_ref().map(|b| b.value.clone());
    c.public = spec.public.clone();
    c.allowed_hosts = spec.allowed_hosts.iter().map(|h| h.value.clone()).collect();
    c.auth = spec.auth.as_ref().map(|a| match &a.value {
        s::AuthSpec::Basic(b) => http::AuthConfig::Basic {
            username: b.username.clone(),
            password: b.password.value.clone(),
        },
        s::AuthSpec::Bearer(b) => http::AuthConfig::Bearer {
            token: b.token.value.clone(),
        },
        s::AuthSpec::ApiKey(k) => http::AuthConfig::ApiKey {
            name: k.name.clone(),
            value: k.value.value.clone(),
            location: match k.location {
                s::KeyLocation::Header => http::KeyLocation::Header,
                s::KeyLocation::Query => http::KeyLocation::Query,
            },
        },
        s::AuthSpec::Oauth2ClientCredentials(o) => {
            http::AuthConfig::Oauth2ClientCredentials(http::OAuth2Config {
                token_url: o.token_url.value.as_str().to_owned(),
                client_id: o.client_id.clone(),
                client_secret: o.client_secret.value.clone(),
                scopes: o.scopes.clone(),
                audience: o.audience.clone(),
                refresh_before: o.refresh_before.value.get(),
                credentials_in: match o.credentials_in {
                    s::CredentialsIn::BasicHeader => http::CredentialsIn::BasicHeader,
                    s::CredentialsIn::Body => http::CredentialsIn::Body,
                },
            })
        }
        s::AuthSpec::Hmac(h) => http::AuthConfig::Hmac(http::HmacConfig {
            algorithm: match h.algorithm {
                s::HmacAlgorithm::Sha256 => http::HmacAlgorithm::Sha256,
                s::HmacAlgorithm::Sha512 => http::HmacAlgorithm::Sha512,
            },
            key: h.key.value.clone(),
            key_id: h.key_id.clone(),
            signed_parts: h
                .signed_parts
                .iter()
                .map(|p| match p.value {
                    s::SignedPart::Method => http::SignedPart::Method,
                    s::SignedPart::Host => http::SignedPart::Host,
                    s::SignedPart::Path => http::SignedPart::Path,
                    s::SignedPart::Query => http::SignedPart::Query,
                    s::SignedPart::Timestamp => http::SignedPart::Timestamp,
                    s::SignedPart::Body => http::SignedPart::Body,
                })
                .collect(),
            signature_header: h.signature_header.clone(),
            timestamp_header: h.timestamp_header.clone(),
            key_id_header: h.key_id_header.clone(),
            encoding: match h.encoding {
                s::SignatureEncoding::Hex => http::SignatureEncoding::Hex,
                s::SignatureEncoding::Base64 => http::SignatureEncoding::Base64,
            },
        }),
    });
    c.pagination = match &spec.pagination {
        s::PaginationSpec::None => http::PaginationConfig::None,
        s::PaginationSpec::PageNumber(p) => {
            http::PaginationConfig::PageNumber(http::PageNumberConfig {
                param: p.param.clone(),
                start: p.start,
                size_param: p.size_param.clone(),
                size: p.size.as_ref().map(|s| s.value),
            })
        }
        s::PaginationSpec::OffsetLimit(p) => {
            http::PaginationConfig::OffsetLimit(http::OffsetLimitConfig {
                offset_param: p.offset_param.clone(),
                limit_param: p.limit_param.clone(),
                limit: p.limit.value,
            })
        }
        s::PaginationSpec::Cursor(p) => http::PaginationConfig::Cursor(http::CursorConfig {
            path: p.path.value.to_string(),
            param: p.param.clone(),
        }),
        s::PaginationSpec::NextUrl(p) => http::PaginationConfig::NextUrl(http::NextUrlConfig {
            path: p.path.value.to_string(),
        }),
        s::PaginationSpec::LinkHeader => http::PaginationConfig::LinkHeader,
    };
    if let Some(stop) = &spec.stop {
        c.stop = http::StopConfig {
            empty_page: stop.value.empty_page,
            has_more: stop.value.has_more.as_ref().map(|p| p.value.to_string()),
            total: stop.value.total.as_ref().map(|p| p.value.to_string()),
        };
    }
    if let Some(max) = &spec.max_pages {
        c.max_pages = max.value;
    }
    if let Some(max) = &spec.max_response_bytes {
        c.max_response_bytes = usize::try_from(max.value.bytes()).unwrap_or(usize::MAX);
    }
    c.records = match &spec.records {
        s::RecordsSpec::Root => http::RecordsConfig::Root,
        s::RecordsSpec::Ndjson => http::RecordsConfig::Ndjson,
        s::RecordsSpec::Path(p) => http::RecordsConfig::Path(p.value.to_string()),
    };
    c.incremental = spec.incremental.as_ref().map(|i| http::IncrementalConfig {
        field: i.value.field.value.clone(),
        param: i.value.param.clone(),
        lookback: i.value.lookback.as_ref().map(|l| l.value.get()),
        initial: i.value.initial.clone(),
        future_tolerance: i.value.future_tolerance.value.get(),
    });
    if let Some(r) = &spec.rate_limit {
        c.rate_limit.requests_per_second = r.requests_per_second.as_ref().map(|v| v.value);
        c.rate_limit.burst = r.burst.value;
        c.rate_limit.concurrency = r.concurrency.value;
        c.rate_limit.max_retry_after = r.max_retry_after.value.get();
    }
    c.rate_limit_signal = spec
        .rate_limit_signal
        .as_ref()
        .map(|s| http::RateLimitSignalConfig {
            path: s.value.path.value.to_string(),
            equals: s.value.equals.clone(),
            reset: s.value.reset.as_ref().map(|r| r.value.to_string()),
        });
    if let Some(b) = &spec.breaker {
        c.breaker = http::BreakerConfig {
            enabled: b.enabled,
            window: b.window.value.get(),
            min_requests: b.min_requests.value,
            failure_ratio: b.failure_ratio.value,
            open_for: b.open_for.value.get(),
            half_open_probes: b.half_open_probes.value,
        };
    }
    if let Some(t) = &node.timeouts {
        c.timeouts.connect = t.connect.get();
        c.timeouts.request = t.request.get();
    }
    c.retry = node.retry.policy();
    // The connector spends the whole budget (the engine does not retry it again), on the
    // classes the node retries.
    c.retry_on = node
        .on_error
        .iter()
        .filter(|d| d.disposition == Disposition::Retry && d.class != ErrorClass::Auth)
        .map(|d| d.class)
        .collect();
    if let Some(b) = &node.batching {
        c.batching.max_rows = b.max_rows as usize;
        c.batching.max_bytes = b.max_bytes.bytes() as usize;
    }
    c.schema = schema_config(&spec.schema);
    c.nested = nested_mode(spec.nested);
    c.bad_records = match spec.bad_records {
        s::BadRecordPolicy::Fail => http::BadRecordPolicy::Fail,
        s::BadRecordPolicy::Skip => http::BadRecordPolicy::Skip,
        s::BadRecordPolicy::Quarantine => http::BadRecordPolicy::Quarantine,
    };
    c.schema_policy = schema_policy(spec.schema_policy.value);
    c
}

/// The SQL sink's config from the node's spec; a relative SQLite path starts at the
/// pipeline's folder.
fn sql_sink_config(
    spec: &sluice_config::spec::nodes::sql::SqlSink,
    node: &PlannedNode,
    ctx: &BuildContext,
) -> sql::SqlSinkConfig {
    use sluice_config::spec::nodes::http::SchemaPolicy as P;
    use sluice_config::spec::nodes::sql::WriteMode as M;
    let url = resolve_sqlite(spec.url.value.expose(), &ctx.base_dir);
    let mut c = sql::SqlSinkConfig::new(url, spec.table.value.clone());
    c.mode = match spec.mode.value {
        M::Append => sql::WriteMode::Append,
        M::Upsert => sql::WriteMode::Upsert,
        M::Replace => sql::WriteMode::Replace,
    };
    c.key = spec.key.iter().map(|k| k.value.clone()).collect();
    c.create_table = spec.create_table;
    // `quarantine` is the engine's business (the batch goes to the failed-batch store):
    // the sink fails the batch with `contract_changed` and the disposition does the rest.
    c.schema_policy = match spec.schema_policy.value {
        P::Evolve => sql::SchemaPolicy::Evolve,
        P::Warn => sql::SchemaPolicy::Warn,
        P::Quarantine | P::Fail => sql::SchemaPolicy::Fail,
    };
    c.naming = match spec.naming.value {
        sluice_config::spec::nodes::sql::Naming::Verbatim => sluice_core::naming::Naming::Verbatim,
        sluice_config::spec::nodes::sql::Naming::SnakeCase => {
            sluice_core::naming::Naming::SnakeCase
        }
    };
    c.max_connections = spec.max_connections.value;
    if let Some(t) = &node.timeouts {
        c.connect_timeout_ms = millis(t.connect.get());
        c.write_timeout_ms = millis(t.request.get());
    }
    c
}

/// The SQL source's config from the node's spec.
fn sql_source_config(
    spec: &sluice_config::spec::nodes::sql::SqlSource,
    node: &PlannedNode,
    ctx: &BuildContext,
) -> sql::SqlSourceConfig {
    let url = resolve_sqlite(spec.url.value.expose(), &ctx.base_dir);
    let mut c = sql::SqlSourceConfig::new(url, spec.query.value.clone());
    c.watermark = spec.watermark.as_ref().map(|w| sql::WatermarkConfig {
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
    c.batch_rows = spec.fetch_size.value as usize;
    if let Some(b) = &node.batching {
        c.batch_rows = c.batch_rows.min(b.max_rows as usize).max(1);
    }
    if let Some(t) = &node.timeouts {
        c.connect_timeout_ms = millis(t.connect.get());
    }
    c
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The file source's config from the node's spec; a relative path starts at `base_dir`.
fn file_source_config(
    spec: &sluice_config::spec::nodes::file::FileSource,
    node: &PlannedNode,
    ctx: &BuildContext,
) -> file::FileSourceConfig {
    let mut c = file::FileSourceConfig::new(
        ctx.base_dir.join(&spec.path.value),
        file_format(spec.format),
    );
    if let Some(csv) = &spec.csv {
        c.csv = csv_options(&csv.value);
    }
    c.schema = schema_config(&spec.schema);
    c.nested = nested_mode(spec.nested);
    c.schema_policy = schema_policy(spec.schema_policy.value);
    if let Some(b) = &node.batching {
        c.max_rows = (b.max_rows as usize).max(1);
        c.max_bytes = (b.max_bytes.bytes() as usize).max(1);
    }
    if let Some(m) = &spec.max_record_bytes {
        c.max_record_bytes = usize::try_from(m.value.bytes())
            .unwrap_or(usize::MAX)
            .max(1);
    }
    c.bad_records = {
        use sluice_config::spec::nodes::http::BadRecordPolicy as B;
        match spec.bad_records {
            B::Fail => http::BadRecordPolicy::Fail,
            B::Skip => http::BadRecordPolicy::Skip,
            B::Quarantine => http::BadRecordPolicy::Quarantine,
        }
    };
    c
}

fn file_format(f: sluice_config::spec::nodes::file::FileFormat) -> file::FileFormat {
    use sluice_config::spec::nodes::file::FileFormat as F;
    match f {
        F::Ndjson => file::FileFormat::Ndjson,
        F::Csv => file::FileFormat::Csv,
        F::Json => file::FileFormat::Json,
    }
}

fn csv_options(o: &sluice_config::spec::nodes::file::CsvOptions) -> file::CsvOptions {
    file::CsvOptions {
        delimiter: o.delimiter,
        header: o.header,
        quote: o.quote,
    }
}

/// The file sink's config from the node's spec; a relative path starts at `base_dir`.
fn file_sink_config(
    spec: &sluice_config::spec::nodes::file::FileSink,
    ctx: &BuildContext,
) -> file::FileSinkConfig {
    use sluice_config::spec::nodes::file::FileWriteMode as M;
    let mut c = file::FileSinkConfig::new(
        ctx.base_dir.join(&spec.path.value),
        file_format(spec.format),
    );
    c.mode = match spec.mode {
        M::Append => file::FileWriteMode::Append,
        M::Overwrite => file::FileWriteMode::Overwrite,
    };
    if let Some(csv) = &spec.csv {
        c.csv = csv_options(&csv.value);
    }
    c
}

/// The HTTP sink's config from the node's spec (auth mapped as the HTTP source's).
fn http_sink_config(
    spec: &sluice_config::spec::nodes::http::HttpSink,
    node: &PlannedNode,
) -> http_sink::HttpSinkConfig {
    use sluice_config::spec::nodes::http as s;
    let mut c = http_sink::HttpSinkConfig::new(spec.url.value.as_str());
    c.method = match spec.method {
        s::SinkMethod::POST => http_sink::SinkMethod::Post,
        s::SinkMethod::PUT => http_sink::SinkMethod::Put,
        s::SinkMethod::PATCH => http_sink::SinkMethod::Patch,
    };
    c.headers = spec
        .headers
        .iter_exposed()
        .map(|(k, v)| (k.to_owned(), Secret::new(v)))
        .collect();
    c.public = spec.public.clone();
    // The auth mapping is the HTTP source's: map a source spec holding only the auth.
    let as_http = s::HttpSource {
        url: spec.url.clone(),
        method: s::HttpMethod::POST,
        headers: Default::default(),
        query: Default::default(),
        body: None,
        public: Vec::new(),
        allowed_hosts: Vec::new(),
        auth: spec.auth.clone(),
        pagination: Default::default(),
        stop: None,
        max_pages: None,
        records: Default::default(),
        incremental: None,
        rate_limit: None,
        rate_limit_signal: None,
        breaker: None,
        timeouts: None,
        schema: Default::default(),
        nested: Default::default(),
        schema_policy: Default::default(),
        bad_records: Default::default(),
        max_response_bytes: None,
    };
    c.auth = http_source_config(&as_http, node).auth;
    c.format = match spec.format {
        s::SinkFormat::JsonArray => http_sink::SinkFormat::JsonArray,
        s::SinkFormat::Ndjson => http_sink::SinkFormat::Ndjson,
    };
    c.wrap_key = spec.wrap_key.as_ref().map(|k| k.value.clone());
    c.idempotency_header = spec.idempotency_header.clone();
    if let Some(r) = &spec.rate_limit {
        c.rate_limit.requests_per_second = r.requests_per_second.as_ref().map(|v| v.value);
        c.rate_limit.burst = r.burst.value;
        c.rate_limit.concurrency = r.concurrency.value;
        c.rate_limit.max_retry_after = r.max_retry_after.value.get();
    }
    if let Some(t) = &node.timeouts {
        c.timeouts.connect = t.connect.get();
        c.timeouts.request = t.request.get();
    }
    c
}

/// The registry: what runs a node of each kind.
async fn build_runner(
    node: &PlannedNode,
    plan: &Plan,
    ctx: &BuildContext,
) -> Result<NodeRunner, BuildError> {
    match &node.config {
        NodeKind::SqlTask(t) => Ok(NodeRunner::Task(build_task(
            &TaskSpec::SqlTask(t.clone()),
            ctx,
        ))),
        NodeKind::Command(c) => Ok(NodeRunner::Task(build_task(
            &TaskSpec::Command(c.clone()),
            ctx,
        ))),
        NodeKind::Http(spec) => {
            let config = http_source_config(spec, node);
            config
                .validate()
                .map_err(|e| node_error(node, e.to_string()))?;
            let (pipeline, id) = (plan.pipeline.clone(), node.id.clone());
            let breakers = ctx.breakers.clone();
            Ok(NodeRunner::Source(Box::new(move |checkpoint| {
                async move {
                    let source = http::HttpSource::new(
                        config,
                        http::HttpSourceContext {
                            pipeline,
                            node: id,
                            checkpoint,
                            breakers: Some(breakers),
                        },
                    )?;
                    Ok(Box::new(source) as Box<dyn sluice_core::Source>)
                }
                .boxed()
            })))
        }
        NodeKind::SqlSink(spec) => {
            let sink = sql::build_sink(sql_sink_config(spec, node, ctx))
                .await
                .map_err(|e| node_error(node, e.message))?;
            Ok(NodeRunner::Sink(sink))
        }
        NodeKind::SqlSource(spec) => {
            let config = sql_source_config(spec, node, ctx);
            config.validate().map_err(|e| node_error(node, e.message))?;
            let (pipeline, id) = (plan.pipeline.clone(), node.id.clone());
            Ok(NodeRunner::Source(Box::new(move |checkpoint| {
                async move { sql::build_source(config, &pipeline, &id, checkpoint).await }.boxed()
            })))
        }
        NodeKind::Transform(spec) => {
            let transform = CompiledTransform::compile(spec, std::time::SystemTime::now())
                .map_err(|e| node_error(node, e))?;
            Ok(NodeRunner::Transform(Box::new(transform)))
        }
        NodeKind::File(spec) => {
            let config = file_source_config(spec, node, ctx);
            let (pipeline, id) = (plan.pipeline.clone(), node.id.clone());
            Ok(NodeRunner::Source(Box::new(move |checkpoint| {
                async move {
                    let source = file::FileSource::new(config, &pipeline, &id, checkpoint)?;
                    Ok(Box::new(source) as Box<dyn sluice_core::Source>)
                }
                .boxed()
            })))
        }
        NodeKind::FileSink(spec) => {
            let sink = file::FileSink::new(file_sink_config(spec, ctx), &plan.pipeline, &node.id)
                .map_err(|e| node_error(node, e.message))?;
            Ok(NodeRunner::Sink(Box::new(sink)))
        }
        NodeKind::HttpSink(spec) => {
            let sink = http_sink::HttpSink::new(http_sink_config(spec, node))
                .map_err(|e| node_error(node, e.message))?;
            Ok(NodeRunner::Sink(Box::new(sink)))
        }
        #[allow(unreachable_patterns)]
        other => Err(node_error(
            node,
            format!(
                "nodes of type `{}` cannot run in this build yet; `sluice validate` accepts them, but `sluice run` needs a connector",
                node_type_name(other)
            ),
        )),
    }
}

fn node_type_name(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::Http(_) => "http",
        NodeKind::HttpSink(_) => "http_sink",
        NodeKind::SqlSource(_) => "sql source",
        NodeKind::SqlSink(_) => "sql sink",
        NodeKind::File(_) => "file",
        NodeKind::FileSink(_) => "file_sink",
        NodeKind::Transform(_) => "transform",
        NodeKind::SqlTask(_) => "sql_task",
        NodeKind::Command(_) => "command",
    }
}

/// Whether the node's schema policy is `quarantine` (a batch whose shape changed goes to
/// the failed-batch store instead of failing the run).
fn quarantines_drift(kind: &NodeKind) -> bool {
    use sluice_config::spec::nodes::http::SchemaPolicy;
    let policy = match kind {
        NodeKind::SqlSink(s) => Some(s.schema_policy.value),
        NodeKind::Http(h) => Some(h.schema_policy.value),
        _ => None,
    };
    policy == Some(SchemaPolicy::Quarantine)
}

/// Builds the runnable pipeline: every node with its runner, retry policy, dispositions
/// and compensation, in the plan's execution order.
pub async fn build_pipeline(plan: &Plan, ctx: &BuildContext) -> Result<Pipeline, BuildError> {
    let mut nodes = Vec::with_capacity(plan.nodes.len());
    for node in &plan.nodes {
        let mut dispositions = Dispositions::default();
        for d in &node.on_error {
            dispositions.set(d.class, d.disposition);
        }
        if quarantines_drift(&node.config)
            && !node
                .on_error
                .iter()
                .any(|d| d.class == ErrorClass::ContractChanged)
        {
            dispositions.set(ErrorClass::ContractChanged, Disposition::Quarantine);
        }
        nodes.push(NodeDef {
            id: node.id.clone(),
            inputs: node.inputs.clone(),
            after: node.after.clone(),
            retry: node.retry.policy(),
            dispositions,
            runner: build_runner(node, plan, ctx).await?,
            compensate: node.compensate.as_ref().map(|t| build_task(t, ctx)),
        });
    }
    Ok(Pipeline {
        name: plan.pipeline.clone(),
        topic_prefix: topic_prefix(&plan.buffer),
        nodes,
    })
}
