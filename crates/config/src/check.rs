//! Checks that look at more than one value: ranges, fields that go together, template
//! variables, dispositions that make sense for the node, the graph (unknown ids, cycles,
//! roles of edges, data that reaches no sink), and secrets written in clear. Then the
//! plan: effective policies, execution order, topics.

use crate::de::Spanned;
use crate::diag::{Diagnostic, Pos, suggest};
use crate::load::Loaded;
use crate::plan::{
    EdgeKind, EffectiveBatching, EffectiveDisposition, EffectiveRetry, EffectiveTimeouts, Plan,
    PlannedEdge, PlannedNode, PolicySource, RetryOwner, topic_name,
};
use crate::spec::nodes::file::FileFormat;
use crate::spec::nodes::http::{
    AuthSpec, BreakerSpec, HttpMethod, PaginationSpec, RateLimitSpec, SchemaPolicy, SchemaSpec,
    SinkFormat,
};
use crate::spec::nodes::sql::WriteMode;
use crate::spec::nodes::transform::TransformOp;
use crate::spec::nodes::{NodeKind, NodeSpec, Role, TaskSpec};
use crate::spec::{
    BatchingSpec, BufferSpec, ChannelSpec, FsyncPolicy, OnErrorSpec, PipelineSpec, RetrySpec,
    Schedule, TimeoutsSpec,
};
use crate::values::{Dialect, Duration, RedactedMap, SecretValue, is_sensitive_key};
use petgraph::graph::{DiGraph, NodeIndex};
use sluice_core::{Disposition, ErrorClass};
use std::collections::{BTreeMap, BTreeSet, HashMap};

struct Checker<'a> {
    lines: Vec<&'a str>,
    diags: &'a mut Vec<Diagnostic>,
}

/// Template variables of `{{name}}` form in `text`, with their character offsets.
fn template_vars(text: &str) -> Result<Vec<(String, usize)>, usize> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut base = 0;
    while let Some(start) = rest.find("{{") {
        let offset = text[..base + start].chars().count();
        let Some(end) = rest[start..].find("}}") else {
            return Err(offset);
        };
        out.push((rest[start + 2..start + end].trim().to_owned(), offset));
        base += start + end + 2;
        rest = &rest[start + end + 2..];
    }
    Ok(out)
}

/// Every variable any template may use, for "did you mean".
const ALL_VARIABLES: &[&str] = &[
    "page",
    "page_size",
    "offset",
    "limit",
    "cursor",
    "watermark",
    "run_id",
    "pipeline",
    "date",
];

impl Checker<'_> {
    fn error(
        &mut self,
        pos: Pos,
        width: usize,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags.push(
            Diagnostic::error(pos, message)
                .with_width(width)
                .with_help(help),
        );
    }

    /// A warning about a secret written in clear: its text is masked where it is quoted.
    fn secret_warning(
        &mut self,
        pos: Pos,
        width: usize,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.warning(pos, width, message, help);
        if let Some(d) = self.diags.last_mut() {
            d.masked = true;
        }
    }

    fn warning(
        &mut self,
        pos: Pos,
        width: usize,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags.push(
            Diagnostic::warning(pos, message)
                .with_width(width)
                .with_help(help),
        );
    }

    fn error_at<T>(
        &mut self,
        at: &Spanned<T>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.error(at.pos, at.width, message, help);
    }

    /// Where `needle` is written, searching from `pos` on (a few lines at most).
    fn find(&self, pos: Pos, needle: &str) -> Pos {
        for (i, line) in self.lines.iter().enumerate().skip(pos.line - 1).take(50) {
            let from = if i + 1 == pos.line { pos.column - 1 } else { 0 };
            let tail: String = line.chars().skip(from).collect();
            if let Some(byte) = tail.find(needle) {
                return Pos::new(i + 1, from + tail[..byte].chars().count() + 1);
            }
        }
        pos
    }

    fn secret(&mut self, value: &SecretValue, field: &str) {
        if !value.interpolated && !value.value.expose().is_empty() {
            self.secret_warning(
                value.pos,
                value.width,
                format!("`{field}` is written in clear in the pipeline file"),
                "read it from the environment or a file instead: `${NAME}` or `${file:/run/secrets/name}`",
            );
        }
    }

    fn redacted_map(&mut self, map: &RedactedMap, what: &str) {
        for (k, v) in map.entries() {
            if is_sensitive_key(&k.value) && !v.interpolated && !v.value.is_empty() {
                self.secret_warning(
                    v.pos,
                    v.width,
                    format!("the {what} `{}` is written in clear in the pipeline file", k.value),
                    "read it from the environment or a file instead: `${NAME}` or `${file:/run/secrets/name}`",
                );
            }
        }
    }

    /// Checks `{{variables}}` in `text` against `allowed`; `why` explains the others.
    fn templates(
        &mut self,
        text: &str,
        pos: Pos,
        allowed: &[&str],
        why: &dyn Fn(&str) -> String,
    ) -> Vec<String> {
        let vars = match template_vars(text) {
            Ok(v) => v,
            Err(_) => {
                let at = self.find(pos, "{{");
                self.error(
                    at,
                    2,
                    "`{{` is not closed with `}}`",
                    "write template variables as `{{name}}`",
                );
                return Vec::new();
            }
        };
        let mut used = Vec::new();
        for (name, _) in vars {
            let written = format!("{{{{{name}}}}}");
            if allowed.contains(&name.as_str()) {
                used.push(name);
                continue;
            }
            let at = self.find(pos, &written);
            let width = written.chars().count();
            if ALL_VARIABLES.contains(&name.as_str()) {
                self.error(
                    at,
                    width,
                    format!("`{written}` has no value here"),
                    why(&name),
                );
            } else {
                let message = match suggest(&name, ALL_VARIABLES.iter().copied()) {
                    Some(near) => format!(
                        "unknown template variable `{written}`, did you mean `{{{{{near}}}}}`?"
                    ),
                    None => format!("unknown template variable `{written}`"),
                };
                let help = if allowed.is_empty() {
                    "no template variables are set here".to_owned()
                } else {
                    format!("the variables here are: {}", allowed.join(", "))
                };
                self.error(at, width, message, help);
            }
        }
        used
    }

    fn positive(&mut self, d: &Option<Spanned<Duration>>, field: &str) {
        if let Some(d) = d {
            self.positive_duration(d, field);
        }
    }

    fn positive_duration(&mut self, d: &Spanned<Duration>, field: &str) {
        if d.value.is_zero() {
            self.error_at(
                d,
                format!("`{field}` must be more than zero"),
                format!("e.g. `{field}: 30s`"),
            );
        }
    }

    fn at_least<T: PartialOrd + Copy + std::fmt::Display>(
        &mut self,
        v: &Spanned<T>,
        min: T,
        field: &str,
    ) {
        if v.value < min {
            self.error_at(
                v,
                format!("`{field}` must be at least {min}, found {}", v.value),
                format!("set `{field}` to {min} or more"),
            );
        }
    }

    // -----------------------------------------------------------------------------------
    // Policies

    fn retry(&mut self, r: &RetrySpec) {
        if let Some(a) = &r.max_attempts {
            self.at_least(a, 1, "max_attempts");
        }
        if let Some(m) = &r.multiplier {
            if !(m.value.is_finite() && m.value >= 1.0) {
                self.error_at(
                    m,
                    format!("`multiplier` must be at least 1, found {}", m.value),
                    "`2` doubles the backoff cap after each attempt; `1` keeps it constant",
                );
            }
        }
        self.positive(&r.max_elapsed, "max_elapsed");
        self.positive(&r.max_backoff, "max_backoff");
        if let (Some(i), Some(m)) = (&r.initial_backoff, &r.max_backoff) {
            if i.value > m.value {
                self.error_at(i, format!("`initial_backoff` ({}) is longer than `max_backoff` ({})", i.value, m.value), "the first backoff cannot exceed the cap of every backoff: lower `initial_backoff` or raise `max_backoff`");
            }
        }
    }

    fn batching(&mut self, b: &BatchingSpec) {
        if let Some(r) = &b.max_rows {
            self.at_least(r, 1, "max_rows");
        }
        if let Some(s) = &b.max_bytes {
            if s.value.bytes() < 1024 {
                self.error_at(
                    s,
                    format!("`max_bytes` must be at least 1KiB, found {}", s.value),
                    "batches are at least one record: e.g. `max_bytes: 4MiB`",
                );
            }
        }
    }

    fn timeouts(&mut self, t: &Option<TimeoutsSpec>) {
        if let Some(t) = t {
            self.positive(&t.connect, "connect");
            self.positive(&t.request, "request");
        }
    }

    fn rate_limit(&mut self, r: &Option<RateLimitSpec>) {
        let Some(r) = r else { return };
        if let Some(rps) = &r.requests_per_second
            && !(rps.value.is_finite() && rps.value > 0.0)
        {
            self.error_at(
                rps,
                format!(
                    "`requests_per_second` must be more than zero, found {}",
                    rps.value
                ),
                "e.g. `requests_per_second: 5` or `0.5` for one request every two seconds",
            );
        }
        self.at_least(&r.burst, 1, "burst");
        self.at_least(&r.concurrency, 1, "concurrency");
        self.positive_duration(&r.max_retry_after, "max_retry_after");
    }

    fn breaker(&mut self, b: &Option<BreakerSpec>) {
        let Some(b) = b else { return };
        self.positive_duration(&b.window, "window");
        self.positive_duration(&b.open_for, "open_for");
        self.at_least(&b.min_requests, 1, "min_requests");
        self.at_least(&b.half_open_probes, 1, "half_open_probes");
        let ratio = &b.failure_ratio;
        if !(ratio.value > 0.0 && ratio.value <= 1.0) {
            self.error_at(
                ratio,
                format!(
                    "`failure_ratio` must be more than 0 and at most 1, found {}",
                    ratio.value
                ),
                "the share of failed requests that opens the breaker, e.g. `failure_ratio: 0.5`",
            );
        }
    }

    /// `on_error` entries that cannot make sense. `node` is `None` in `defaults` (what a
    /// node cannot apply of those becomes `fail` in its plan, see [`disposition_acts`]).
    fn on_error(&mut self, on_error: &OnErrorSpec, node: Option<&NodeSpec>) {
        for (class, d) in &on_error.0 {
            match d.value {
                Disposition::Split
                    if !matches!(
                        class.value,
                        ErrorClass::PayloadTooLarge | ErrorClass::InvalidRequest
                    ) =>
                {
                    self.error_at(d, format!("`split` does not help with `{}` errors", class.value), "splitting a batch helps when the batch itself is the problem: `payload_too_large` (too big) or `invalid_request` (to isolate bad records)");
                }
                _ if node.is_some_and(|n| !disposition_acts(&n.kind, class.value, d.value)) => {
                    let n = node.expect("checked just above");
                    let (message, help) = cannot_apply(n, class.value, d.value);
                    self.error_at(d, message, help);
                }
                Disposition::Retry
                    if matches!(
                        class.value,
                        ErrorClass::Permission
                            | ErrorClass::InvalidRequest
                            | ErrorClass::PayloadTooLarge
                            | ErrorClass::ContractChanged
                    ) =>
                {
                    let help = match class.value {
                        ErrorClass::PayloadTooLarge => {
                            "the same payload will be too large again: use `split`"
                        }
                        ErrorClass::InvalidRequest => {
                            "the same request will be rejected again: use `quarantine`, `split` or `skip`"
                        }
                        _ => {
                            "the same request will fail again: use `fail` (and an alert) or `quarantine`"
                        }
                    };
                    self.warning(
                        d.pos,
                        d.width,
                        format!(
                            "retrying `{}` errors repeats a request that will fail the same way",
                            class.value
                        ),
                        help,
                    );
                }
                _ => {}
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Top-level sections

    fn header(&mut self, spec: &PipelineSpec, ids: &BTreeSet<String>) {
        let state = &spec.state;
        if state.value.dialect() == Dialect::Mysql {
            self.error_at(
                state,
                "the state store runs on SQLite or PostgreSQL, not MySQL",
                "use `sqlite://.sluice/state.db` (one machine) or `postgres://...` (many workers)",
            );
        }
        if state.value.has_password() && !state.interpolated {
            self.secret_warning(state.pos, state.width, "the state store URL holds a password written in clear", "write the password as `${NAME}` (e.g. `postgres://sluice:${SLUICE_STATE_PASSWORD}@host/db`)");
        }
        if let Schedule::Realtime(r) = &spec.schedule {
            self.positive_duration(&r.poll_interval, "poll_interval");
        }
        self.buffer(&spec.buffer, spec);
        if let Some(r) = &spec.defaults.retry {
            self.retry(r);
        }
        if let Some(b) = &spec.defaults.batching {
            self.batching(b);
        }
        self.timeouts(&spec.defaults.timeouts);
        self.on_error(&spec.defaults.on_error, None);
        self.alerts(spec, ids);
    }

    fn buffer(&mut self, buffer: &BufferSpec, spec: &PipelineSpec) {
        match buffer {
            BufferSpec::Embedded(e) => {
                if e.segment_size.value.bytes() < 64 * 1024 {
                    self.error_at(
                        &e.segment_size,
                        format!(
                            "`segment_size` must be at least 64KiB, found {}",
                            e.segment_size.value
                        ),
                        "e.g. `segment_size: 64MiB`",
                    );
                }
                if e.max_message_size.value > e.segment_size.value {
                    self.error_at(&e.max_message_size, format!("`max_message_size` ({}) is larger than `segment_size` ({})", e.max_message_size.value, e.segment_size.value), "an entry must fit in a segment: lower `max_message_size` or raise `segment_size`");
                }
                if let FsyncPolicy::Interval(d) = &e.fsync {
                    self.positive_duration(d, "interval");
                }
            }
            BufferSpec::Kafka(k) => {
                if k.brokers.value.is_empty() {
                    self.error_at(
                        &k.brokers,
                        "`brokers` is empty",
                        "list at least one broker: `brokers: [\"127.0.0.1:9092\"]`",
                    );
                }
                for b in &k.brokers.value {
                    let port_ok = b.value.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok()
                    });
                    if !port_ok {
                        self.error_at(
                            b,
                            format!("broker `{}` is not `host:port`", b.value),
                            "write brokers as `host:port`, e.g. `127.0.0.1:9092`",
                        );
                    }
                }
                let prefix = &k.topic_prefix;
                if prefix.value.is_empty()
                    || !prefix
                        .value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    self.error_at(
                        prefix,
                        format!("invalid topic prefix `{}`", prefix.value),
                        "Kafka topic names are letters, digits, `.`, `_` and `-`",
                    );
                }
                self.at_least(&k.partitions, 1, "partitions");
                self.at_least(&k.replication, 1, "replication");
                self.positive_duration(&k.retention, "retention");
                let max = &k.message_max_bytes;
                if max.value.bytes() < 1000 || max.value.bytes() > 1_000_000_000 {
                    self.error_at(
                        max,
                        format!(
                            "`message_max_bytes` must be between 1000 bytes and 1GB, found {}",
                            max.value
                        ),
                        "librdkafka accepts 1000..1000000000; the broker's default is 1MiB",
                    );
                }
                for (key, _) in k.properties.entries() {
                    let reserved = match key.value.as_str() {
                        "bootstrap.servers" | "metadata.broker.list" => Some("set by `brokers`"),
                        "message.max.bytes" => Some("set by `message_max_bytes`"),
                        "compression.type" | "compression.codec" => Some("set by `compression`"),
                        "enable.idempotence" | "acks" | "request.required.acks" => Some(
                            "Sluice sets `enable.idempotence=true` and `acks=all` so that no acknowledged batch is lost",
                        ),
                        "group.id" => {
                            Some("Sluice names consumer groups per node (see `sluice plan`)")
                        }
                        "enable.auto.commit" | "enable.auto.offset.store" => Some(
                            "Sluice commits offsets itself, after the downstream node succeeded",
                        ),
                        _ => None,
                    };
                    if let Some(why) = reserved {
                        self.error_at(
                            key,
                            format!("the librdkafka property `{}` cannot be set here", key.value),
                            why,
                        );
                    }
                }
                self.redacted_map(&k.properties, "librdkafka property");
                for node in spec.nodes.iter() {
                    let topic =
                        topic_name(buffer, &spec.pipeline.value.to_string(), &node.id.value);
                    if topic.len() > 249 {
                        self.error_at(
                            &node.id,
                            format!(
                                "the topic name `{topic}` is longer than Kafka's 249 characters"
                            ),
                            "shorten the topic prefix, the pipeline name or this node id",
                        );
                    }
                }
            }
        }
    }

    fn alerts(&mut self, spec: &PipelineSpec, ids: &BTreeSet<String>) {
        let alerts = &spec.alerts;
        let names: Vec<&str> = alerts
            .channels
            .iter()
            .map(|(k, _)| k.value.as_str())
            .collect();
        for (name, channel) in alerts.channels.iter() {
            if let Err(e) = crate::values::check_name(&name.value, "channel name") {
                self.error_at(name, e.message, e.help);
            }
            match channel {
                ChannelSpec::Log(_) => {}
                ChannelSpec::Webhook(w) => {
                    self.redacted_map(&w.headers, "header");
                    self.positive_duration(&w.timeout, "timeout");
                }
                ChannelSpec::Command(c) => {
                    if c.program.value.trim().is_empty() {
                        self.error_at(
                            &c.program,
                            "`program` is empty",
                            "name the program to run, e.g. `./scripts/page-oncall.sh`",
                        );
                    }
                    self.positive_duration(&c.timeout, "timeout");
                }
            }
            if !alerts.routes.is_empty()
                && !alerts.routes.iter().any(|r| r.channel.value == name.value)
            {
                self.warning(
                    name.pos,
                    name.width,
                    format!(
                        "alert channel `{}` has no route, so it receives nothing",
                        name.value
                    ),
                    "add a route `{ channel: ... }`, or remove the channel",
                );
            }
        }
        for route in &alerts.routes {
            if !names.contains(&route.channel.value.as_str()) {
                let help = match suggest(&route.channel.value, names.iter().copied()) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None if names.is_empty() => "define it under `alerts.channels`".to_owned(),
                    None => format!("the channels are: {}", names.join(", ")),
                };
                self.error_at(
                    &route.channel,
                    format!("unknown alert channel `{}`", route.channel.value),
                    help,
                );
            }
            for node in &route.nodes {
                if !ids.contains(&node.value) {
                    let help = suggest(&node.value, ids.iter().map(String::as_str)).map_or_else(
                        || "list ids of `nodes`".to_owned(),
                        |n| format!("did you mean `{n}`?"),
                    );
                    self.error_at(node, format!("unknown node `{}`", node.value), help);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Nodes

    fn node(&mut self, node: &NodeSpec) {
        let id = node.id.value.as_str();
        let role = node.kind.role();
        if let Some(r) = &node.common.retry {
            self.retry(r);
        }
        if let Some(b) = &node.common.batching {
            if role == Role::Task {
                self.error_at(
                    b,
                    format!("`{id}` is a task: it has no batches"),
                    "remove `batching`",
                );
            } else {
                self.batching(b);
            }
        }
        self.on_error(&node.common.on_error, Some(node));
        if let Some(c) = &node.common.compensate {
            self.task(&c.value);
        }
        match &node.kind {
            NodeKind::Http(h) => self.http_source(node, h),
            NodeKind::HttpSink(s) => {
                if let Some(a) = &s.auth {
                    self.auth(a, plain_http(s.url.value.as_str()));
                }
                if let (Some(w), SinkFormat::Ndjson) = (&s.wrap_key, s.format) {
                    self.error_at(
                        w,
                        "`wrap_key` applies to `format: json_array`",
                        "remove `wrap_key`, or use `format: json_array`",
                    );
                }
                self.templates(s.url.value.as_str(), s.url.pos, &[], &|_| {
                    "an HTTP sink's URL takes no variables".to_owned()
                });
                self.rate_limit(&s.rate_limit);
                self.timeouts(&s.timeouts);
                self.redacted_map(&s.headers, "header");
            }
            NodeKind::SqlSource(s) => {
                self.dialect(&s.url, s.dialect);
                if s.query.value.trim().is_empty() {
                    self.error_at(
                        &s.query,
                        "`query` is empty",
                        "write the SELECT that reads the rows",
                    );
                }
                let uses = s.query.value.contains(":watermark");
                match (&s.watermark, uses) {
                    (Some(w), false) => self.error_at(&w.column, "the query does not use `:watermark`", "add a condition such as `WHERE updated_at > :watermark`, or remove `watermark`"),
                    (None, true) => {
                        let at = self.find(s.query.pos, ":watermark");
                        self.error(at, 10, "the query uses `:watermark` but the node has no `watermark`", "add `watermark: { column: updated_at }`");
                    }
                    _ => {}
                }
                self.at_least(&s.fetch_size, 1, "fetch_size");
                self.timeouts(&s.timeouts);
            }
            NodeKind::SqlSink(s) => {
                self.dialect(&s.url, s.dialect);
                if s.table.value.trim().is_empty() {
                    self.error_at(
                        &s.table,
                        "`table` is empty",
                        "name the table to write, e.g. `table: orders`",
                    );
                }
                match (s.mode.value, s.key.first()) {
                    (WriteMode::Upsert, None) => self.error_at(
                        &s.mode,
                        "`mode: upsert` needs `key`",
                        "add the key columns: `key: [id]`",
                    ),
                    (WriteMode::Append | WriteMode::Replace, Some(k)) => self.error_at(
                        k,
                        "`key` is only used by `mode: upsert`",
                        "remove `key`, or set `mode: upsert`",
                    ),
                    _ => {}
                }
                self.unique(&s.key, "key column");
                self.at_least(&s.max_connections, 1, "max_connections");
                self.timeouts(&s.timeouts);
            }
            NodeKind::File(f) => {
                if f.path.value.trim().is_empty() {
                    self.error_at(
                        &f.path,
                        "`path` is empty",
                        "name the file or a glob, e.g. `data/*.ndjson`",
                    );
                }
                if let (Some(csv), false) = (&f.csv, f.format == FileFormat::Csv) {
                    self.error_at(
                        csv,
                        format!(
                            "`csv` options apply to `format: csv`, this is `{}`",
                            f.format.as_str()
                        ),
                        "remove `csv`, or set `format: csv`",
                    );
                }
                self.schema(&f.schema);
                if f.schema_policy.value == SchemaPolicy::Quarantine {
                    self.error_at(
                        &f.schema_policy,
                        "the `file` source cannot quarantine records that differ from the schema",
                        "use `fail` (the read stops, naming the fields and the line), or `evolve` or `warn` to take the new fields",
                    );
                }
            }
            NodeKind::FileSink(f) => {
                if f.path.value.trim().is_empty() {
                    self.error_at(
                        &f.path,
                        "`path` is empty",
                        "name the file to write, e.g. `out/orders.ndjson`",
                    );
                }
                if let (Some(csv), false) = (&f.csv, f.format == FileFormat::Csv) {
                    self.error_at(
                        csv,
                        format!(
                            "`csv` options apply to `format: csv`, this is `{}`",
                            f.format.as_str()
                        ),
                        "remove `csv`, or set `format: csv`",
                    );
                }
                self.templates(&f.path.value, f.path.pos, &["run_id", "date"], &|_| {
                    "a file path may use `{{run_id}}` and `{{date}}`".to_owned()
                });
            }
            NodeKind::Transform(t) => self.transform(t),
            NodeKind::SqlTask(_) | NodeKind::Command(_) => {
                if let Some(task) = as_task(&node.kind) {
                    self.task(&task);
                }
            }
        }
    }

    fn unique(&mut self, items: &[Spanned<String>], what: &str) {
        let mut seen = BTreeSet::new();
        for item in items {
            if !seen.insert(item.value.as_str()) {
                self.error_at(
                    item,
                    format!("{what} `{}` is listed twice", item.value),
                    "remove the second one",
                );
            }
        }
    }

    fn dialect(&mut self, url: &Spanned<crate::values::DatabaseUrl>, dialect: Dialect) {
        if url.value.dialect() != dialect {
            self.error_at(
                url,
                format!(
                    "this is a `{dialect}` node but the URL is for {}",
                    url.value.dialect()
                ),
                format!("use a {dialect} URL, or `type: {}`", url.value.dialect()),
            );
        }
        if url.value.has_password() && !url.interpolated {
            self.secret_warning(
                url.pos,
                url.width,
                "the database URL holds a password written in clear",
                "write the password as `${NAME}`, e.g. `postgres://user:${PGPASSWORD}@host/db`",
            );
        }
    }

    fn task(&mut self, task: &TaskSpec) {
        let why = |_: &str| "tasks may use `{{run_id}}` and `{{pipeline}}`".to_owned();
        match task {
            TaskSpec::SqlTask(t) => {
                if t.sql.value.trim().is_empty() {
                    self.error_at(&t.sql, "`sql` is empty", "write the statements to run");
                }
                if t.url.value.has_password() && !t.url.interpolated {
                    self.secret_warning(t.url.pos, t.url.width, "the database URL holds a password written in clear", "write the password as `${NAME}`, e.g. `postgres://user:${PGPASSWORD}@host/db`");
                }
                self.templates(&t.sql.value, t.sql.pos, &["run_id", "pipeline"], &why);
                self.positive_duration(&t.timeout, "timeout");
            }
            TaskSpec::Command(c) => {
                if c.program.value.trim().is_empty() {
                    self.error_at(
                        &c.program,
                        "`program` is empty",
                        "name the program to run, e.g. `./scripts/refresh.sh`",
                    );
                }
                for arg in &c.args {
                    self.templates(arg, c.program.pos, &["run_id", "pipeline"], &why);
                }
                self.redacted_map(&c.env, "environment variable");
                self.positive_duration(&c.timeout, "timeout");
            }
        }
    }

    fn auth(&mut self, auth: &Spanned<AuthSpec>, plain_http: bool) {
        match &auth.value {
            AuthSpec::Basic(b) => self.secret(&b.password, "password"),
            AuthSpec::Bearer(b) => self.secret(&b.token, "token"),
            AuthSpec::ApiKey(k) => {
                if k.name.trim().is_empty() {
                    self.error_at(
                        auth,
                        "the API key's `name` is empty",
                        "name the header or query parameter, e.g. `name: X-Api-Key`",
                    );
                }
                self.secret(&k.value, "value");
            }
            AuthSpec::Oauth2ClientCredentials(o) => {
                self.secret(&o.client_secret, "client_secret");
                self.positive_duration(&o.refresh_before, "refresh_before");
            }
            AuthSpec::Hmac(h) => {
                self.secret(&h.key, "key");
                if h.signed_parts.is_empty() {
                    self.error_at(
                        auth,
                        "`signed_parts` is empty: nothing would be signed",
                        "e.g. `signed_parts: [method, path, timestamp, body]`",
                    );
                }
                let mut seen = BTreeSet::new();
                for part in &h.signed_parts {
                    if !seen.insert(format!("{:?}", part.value)) {
                        self.error_at(part, "this part is listed twice", "remove the second one");
                    }
                }
            }
        }
        if plain_http {
            self.warning(
                auth.pos,
                auth.width,
                "credentials would be sent over plain `http://`",
                "use an `https://` URL",
            );
        }
    }

    fn schema(&mut self, schema: &SchemaSpec) {
        if let SchemaSpec::Columns(columns) = schema {
            if columns.value.is_empty() {
                self.error_at(
                    columns,
                    "`columns` is empty",
                    "declare at least one column, or write `schema: infer`",
                );
            }
            let names: Vec<Spanned<String>> =
                columns.value.iter().map(|c| c.name.clone()).collect();
            self.unique(&names, "column");
        }
    }

    fn http_source(&mut self, node: &NodeSpec, h: &crate::spec::nodes::http::HttpSource) {
        let mut allowed: Vec<&str> = h.pagination.variables().to_vec();
        if h.incremental.is_some() {
            allowed.push("watermark");
        }
        let pagination = h.pagination.name();
        let why = move |name: &str| -> String {
            match name {
                "watermark" => "`{{watermark}}` is set by `incremental`".to_owned(),
                "page" | "page_size" => format!(
                    "`{{{{{name}}}}}` is set by `pagination: page_number`, this node uses `{pagination}`"
                ),
                "offset" | "limit" => format!(
                    "`{{{{{name}}}}}` is set by `pagination: offset_limit`, this node uses `{pagination}`"
                ),
                "cursor" => format!(
                    "`{{{{cursor}}}}` is set by `pagination: cursor`, this node uses `{pagination}`"
                ),
                _ => {
                    "an HTTP source's templates take pagination and watermark variables".to_owned()
                }
            }
        };
        let mut used = self.templates(h.url.value.as_str(), h.url.pos, &allowed, &why);
        for (_, v) in h.query.entries() {
            used.extend(self.templates(&v.value, v.pos, &allowed, &why));
        }
        for (_, v) in h.headers.entries() {
            used.extend(self.templates(&v.value, v.pos, &allowed, &why));
        }
        if let Some(body) = &h.body {
            let mut strings = Vec::new();
            collect_strings(&body.value, &mut strings);
            for s in strings {
                used.extend(self.templates(&s, body.pos, &allowed, &why));
            }
            if h.method == HttpMethod::GET {
                self.error_at(
                    body,
                    "a `GET` request has no body",
                    "set `method: POST`, or move the values to `query`",
                );
            }
        }
        if let Some(a) = &h.auth {
            self.auth(a, plain_http(h.url.value.as_str()));
            if h.headers.get_exposed("Authorization").is_some()
                || h.headers.get_exposed("authorization").is_some()
            {
                self.warning(
                    a.pos,
                    a.width,
                    "both `auth` and an `Authorization` header are set",
                    "`auth` sets the header: remove it from `headers`",
                );
            }
        }
        self.redacted_map(&h.headers, "header");
        self.redacted_map(&h.query, "query parameter");
        for host in &h.allowed_hosts {
            if !is_host_entry(&host.value) {
                self.error_at(
                    host,
                    format!("`{}` is not a host name", host.value),
                    "write `host` or `host:port`, e.g. `api2.example.com` (no scheme, no path)",
                );
            }
        }
        match &h.pagination {
            PaginationSpec::None => {
                if let Some(stop) = &h.stop {
                    self.error_at(stop, "`stop` applies to paginated requests, and this node has `pagination: none`", "set `pagination`, or remove `stop`");
                }
                if let Some(m) = &h.max_pages {
                    self.error_at(m, "`max_pages` applies to paginated requests, and this node has `pagination: none`", "set `pagination`, or remove `max_pages`");
                }
            }
            PaginationSpec::PageNumber(p) => match (&p.size_param, &p.size) {
                (Some(_), None) => self.error_at(
                    &node.id,
                    "`size_param` is set without `size`",
                    "add `size: 100` (the page size to ask for)",
                ),
                (None, Some(s)) => self.error_at(
                    s,
                    "`size` is set without `size_param`",
                    "add `size_param: per_page` (the query parameter of the page size)",
                ),
                (Some(_), Some(s)) => self.at_least(s, 1, "size"),
                (None, None) => {}
            },
            PaginationSpec::OffsetLimit(o) => self.at_least(&o.limit, 1, "limit"),
            _ => {}
        }
        if let Some(m) = &h.max_pages {
            self.at_least(m, 1, "max_pages");
        }
        if let Some(m) = &h.max_response_bytes
            && m.value.bytes() == 0
        {
            self.error_at(
                m,
                "`max_response_bytes` must be more than zero",
                "e.g. `max_response_bytes: 64MiB` (the default is 256MiB)",
            );
        }
        if let Some(inc) = &h.incremental {
            if inc.value.param.is_none() && !used.iter().any(|v| v == "watermark") {
                self.error_at(inc, "the watermark is never sent", "set `param:` (the query parameter for it), or write `{{watermark}}` in `url`, `query` or `body`");
            }
            if inc.value.field.value.trim().is_empty() {
                self.error_at(
                    &inc.value.field,
                    "`field` is empty",
                    "name the record field that orders records, e.g. `updated_at`",
                );
            }
        }
        self.rate_limit(&h.rate_limit);
        self.breaker(&h.breaker);
        self.timeouts(&h.timeouts);
        self.schema(&h.schema);
        // `schema_policy` and `on_error.contract_changed` must agree.
        if let Some(d) = node.common.on_error.get(ErrorClass::ContractChanged) {
            let implied = match h.schema_policy.value {
                SchemaPolicy::Quarantine => Some(Disposition::Quarantine),
                SchemaPolicy::Fail => None,
                SchemaPolicy::Evolve | SchemaPolicy::Warn => None,
            };
            if implied.is_some_and(|i| i != d.value) {
                self.error_at(
                    d,
                    format!(
                        "`schema_policy: quarantine` and `contract_changed: {}` disagree",
                        d.value
                    ),
                    "keep one of them: `schema_policy` decides what schema drift does",
                );
            }
        }
    }

    fn transform(&mut self, t: &crate::spec::nodes::transform::TransformSpec) {
        if t.ops.value.is_empty() {
            self.error_at(
                &t.ops,
                "`ops` is empty",
                "list at least one operation, e.g. `- select: [id, name]`",
            );
        }
        let mut renamed: BTreeMap<&str, &Spanned<String>> = BTreeMap::new();
        for op in &t.ops.value {
            match &op.value {
                TransformOp::Select(cols) | TransformOp::Drop(cols) => {
                    if cols.is_empty() {
                        self.error_at(
                            op,
                            format!("`{}` lists no column", op.value.name()),
                            "list the columns, e.g. `[id, name]`",
                        );
                    }
                    self.unique(cols, "column");
                }
                TransformOp::Rename(map) => {
                    for (from, to) in map.iter() {
                        if to.value.trim().is_empty() {
                            self.error_at(
                                to,
                                format!("`{}` is renamed to nothing", from.value),
                                "write the new name",
                            );
                        }
                        if let Some(first) = renamed.insert(&to.value, from) {
                            self.error_at(
                                to,
                                format!(
                                    "`{}` and `{}` are both renamed to `{}`",
                                    first.value, from.value, to.value
                                ),
                                "two columns cannot take the same name",
                            );
                        }
                    }
                }
                TransformOp::Cast(map) if map.is_empty() => self.error_at(
                    op,
                    "`cast` lists no column",
                    "write `cast: { column: type }`",
                ),
                TransformOp::Cast(_) => {}
                TransformOp::Filter(e) => {
                    if !e.value.is_predicate() {
                        self.error_at(e, format!("`{}` is not a condition", e.value), "a filter keeps the records for which it is true: compare something, e.g. `amount > 0`");
                    }
                }
                TransformOp::Add(a) => {
                    if a.column.value.trim().is_empty() {
                        self.error_at(&a.column, "`column` is empty", "name the new column");
                    }
                    match (&a.value, &a.expr) {
                        (Some(_), Some(e)) => {
                            self.error_at(e, "`add` takes `value` or `expr`, not both", "keep one")
                        }
                        (None, None) => self.error_at(
                            &a.column,
                            "`add` needs `value` (a constant) or `expr` (computed per record)",
                            "e.g. `add: { column: source, value: shop }`",
                        ),
                        _ => {}
                    }
                }
                TransformOp::Flatten(f) => {
                    if f.separator.is_empty() {
                        self.error_at(op, "`separator` is empty", "use `_` or `.`");
                    }
                }
            }
        }
    }
}

/// `an HTTP source`, `a postgres sink`, `a transform`, `a command task`, for messages.
fn a_kind(node: &NodeSpec) -> String {
    use crate::spec::nodes::NodeType;
    let role = node.kind.role();
    let what = match node.node_type {
        NodeType::Http | NodeType::HttpSink => format!("HTTP {role}"),
        NodeType::File | NodeType::FileSink => format!("file {role}"),
        NodeType::Transform => "transform".to_owned(),
        NodeType::SqlTask => "SQL task".to_owned(),
        other => format!("{other} {role}"),
    };
    // "an HTTP source", "an SQL task", "a postgres sink".
    let article = if what.starts_with(['a', 'e', 'i', 'o', 'u', 'H', 'S']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {what}")
}

fn as_task(kind: &NodeKind) -> Option<TaskSpec> {
    match kind {
        NodeKind::SqlTask(t) => Some(TaskSpec::SqlTask(t.clone())),
        NodeKind::Command(c) => Some(TaskSpec::Command(c.clone())),
        _ => None,
    }
}

/// Whether an `allowed_hosts` entry is `host` or `host:port`, and nothing more.
fn is_host_entry(entry: &str) -> bool {
    !entry.is_empty()
        && !entry.contains(['/', '?', '#', '@', '\\'])
        && !entry.chars().any(char::is_whitespace)
        && url::Url::parse(&format!("http://{entry}/")).is_ok_and(|u| u.host_str().is_some())
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// The graph

struct Graph<'s> {
    graph: DiGraph<&'s str, EdgeKind>,
    index: HashMap<&'s str, NodeIndex>,
    /// The reference that made each edge (for positions).
    refs: HashMap<(NodeIndex, NodeIndex), &'s Spanned<String>>,
}

impl Checker<'_> {
    /// Reference, role and cycle checks. Returns the graph of the nodes that were read.
    fn graph<'s>(&mut self, spec: &'s PipelineSpec, loaded: &Loaded) -> Graph<'s> {
        let mut g = Graph {
            graph: DiGraph::new(),
            index: HashMap::new(),
            refs: HashMap::new(),
        };
        for n in spec.nodes.iter() {
            let i = g.graph.add_node(n.id.value.as_str());
            g.index.insert(n.id.value.as_str(), i);
        }
        let ids: Vec<&str> = loaded.all_ids.iter().map(String::as_str).collect();
        for n in spec.nodes.iter() {
            let me = g.index[n.id.value.as_str()];
            let role = n.kind.role();
            let clean = loaded.clean.contains(&n.id.value);
            for (list, kind) in [
                (&n.common.inputs, EdgeKind::Data),
                (&n.common.after, EdgeKind::Order),
            ] {
                let field = if kind == EdgeKind::Data {
                    "inputs"
                } else {
                    "after"
                };
                let mut seen = BTreeSet::new();
                for r in list {
                    if r.value == n.id.value {
                        self.error_at(
                            r,
                            format!("`{}` lists itself in `{field}`", r.value),
                            "a node cannot depend on itself",
                        );
                        continue;
                    }
                    if !seen.insert(r.value.as_str()) {
                        self.error_at(
                            r,
                            format!("`{}` is listed twice in `{field}`", r.value),
                            "remove the second one",
                        );
                        continue;
                    }
                    if kind == EdgeKind::Order && n.common.inputs.iter().any(|i| i.value == r.value)
                    {
                        self.error_at(
                            r,
                            format!("`{}` is already an input of `{}`", r.value, n.id.value),
                            "an input also orders the nodes: remove it from `after`",
                        );
                        continue;
                    }
                    let Some(&other) = g.index.get(r.value.as_str()) else {
                        if !loaded.all_ids.contains(&r.value) {
                            let help = match suggest(&r.value, ids.iter().copied()) {
                                Some(near) => format!("did you mean `{near}`?"),
                                None => format!("the nodes are: {}", ids.join(", ")),
                            };
                            self.error_at(
                                r,
                                format!("unknown node `{}` in `{field}`", r.value),
                                help,
                            );
                        }
                        continue;
                    };
                    if kind == EdgeKind::Data {
                        let other_spec = spec.nodes.get(&r.value);
                        if let Some(o) = other_spec.filter(|o| !o.kind.role().produces_data()) {
                            self.error_at(
                                r,
                                format!(
                                    "`{}` is {}: it produces no data to read",
                                    r.value,
                                    a_kind(o)
                                ),
                                format!(
                                    "to run after it without reading data, use `after: [{}]`",
                                    r.value
                                ),
                            );
                            continue;
                        }
                    }
                    g.graph.add_edge(other, me, kind);
                    g.refs.insert((other, me), r);
                }
            }
            if let Some(first) = n.common.inputs.first() {
                if matches!(role, Role::Source | Role::Task) {
                    let help = match role {
                        Role::Task => {
                            "a task takes no data; to run it after other nodes use `after: [...]`"
                        }
                        _ => {
                            "a source reads from outside; to start it after another node use `after: [...]`"
                        }
                    };
                    self.error_at(
                        first,
                        format!("`{}` is {}: it takes no `inputs`", n.id.value, a_kind(n)),
                        help,
                    );
                }
            } else if role.consumes_data() && clean {
                self.error_at(
                    &n.id,
                    format!("`{}` is {} but has no `inputs`", n.id.value, a_kind(n)),
                    "add `inputs: [...]` with the nodes whose data it reads",
                );
            }
        }
        self.cycles(&g);
        g
    }

    fn cycles(&mut self, g: &Graph<'_>) {
        for scc in petgraph::algo::tarjan_scc(&g.graph) {
            if scc.len() < 2 {
                continue;
            }
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            // Start from the member written first, walk edges inside the component.
            let Some(&start) = members.iter().next() else {
                continue;
            };
            let mut path = vec![start];
            let mut visited = BTreeSet::from([start]);
            let mut current = start;
            let closing = loop {
                let next = g
                    .graph
                    .neighbors(current)
                    .filter(|n| members.contains(n))
                    .min_by_key(|n| (*n != start, n.index()));
                let Some(next) = next else { break None };
                if next == start || visited.contains(&next) {
                    let from = path.iter().position(|p| *p == next).unwrap_or(0);
                    path.drain(..from);
                    break Some((current, next));
                }
                visited.insert(next);
                path.push(next);
                current = next;
            };
            let Some((last, first)) = closing else {
                continue;
            };
            let mut names: Vec<&str> = path.iter().map(|i| g.graph[*i]).collect();
            names.push(g.graph[first]);
            let Some(r) = g.refs.get(&(last, first)) else {
                continue;
            };
            self.error_at(
                r,
                format!("cycle: {}", names.join(" -> ")),
                "a pipeline is a DAG: remove one of these `inputs`/`after` references",
            );
        }
    }

    /// Data from a source or transform must reach a sink.
    fn reach_sinks(&mut self, spec: &PipelineSpec, g: &Graph<'_>) {
        let mut reaches: BTreeSet<NodeIndex> = BTreeSet::new();
        let mut stack: Vec<NodeIndex> = spec
            .nodes
            .iter()
            .filter(|n| n.kind.role() == Role::Sink)
            .map(|n| g.index[n.id.value.as_str()])
            .collect();
        while let Some(i) = stack.pop() {
            if !reaches.insert(i) {
                continue;
            }
            for e in g.graph.edges_directed(i, petgraph::Direction::Incoming) {
                if *e.weight() == EdgeKind::Data {
                    stack.push(petgraph::visit::EdgeRef::source(&e));
                }
            }
        }
        for n in spec.nodes.iter() {
            if n.kind.role().produces_data() && !reaches.contains(&g.index[n.id.value.as_str()]) {
                self.error_at(
                    &n.id,
                    format!("the data of `{}` reaches no sink", n.id.value),
                    format!("add a sink with `inputs: [{}]` (or a transform that leads to one), or remove the node", n.id.value),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Effective settings and the plan

/// Overwrites `target` with a layer's value when the layer sets one.
fn overlay<T: Copy>(target: &mut T, layer: &Option<Spanned<T>>) {
    if let Some(v) = layer {
        *target = v.value;
    }
}

fn merge_retry(layers: &[Option<&RetrySpec>]) -> EffectiveRetry {
    let mut r = EffectiveRetry::default();
    for l in layers.iter().flatten() {
        overlay(&mut r.max_attempts, &l.max_attempts);
        overlay(&mut r.initial_backoff, &l.initial_backoff);
        overlay(&mut r.max_backoff, &l.max_backoff);
        overlay(&mut r.multiplier, &l.multiplier);
        overlay(&mut r.max_elapsed, &l.max_elapsed);
    }
    r
}

fn merge_batching(layers: &[Option<&BatchingSpec>]) -> EffectiveBatching {
    let mut b = EffectiveBatching::default();
    for l in layers.iter().flatten() {
        overlay(&mut b.max_rows, &l.max_rows);
        overlay(&mut b.max_bytes, &l.max_bytes);
        overlay(&mut b.max_wait, &l.max_wait);
    }
    b
}

fn merge_timeouts(layers: &[Option<&TimeoutsSpec>]) -> EffectiveTimeouts {
    let mut t = EffectiveTimeouts::default();
    for l in layers.iter().flatten() {
        overlay(&mut t.connect, &l.connect);
        overlay(&mut t.request, &l.request);
    }
    t
}

fn node_timeouts(kind: &NodeKind) -> Option<Option<&TimeoutsSpec>> {
    match kind {
        NodeKind::Http(h) => Some(h.timeouts.as_ref()),
        NodeKind::HttpSink(h) => Some(h.timeouts.as_ref()),
        NodeKind::SqlSource(s) => Some(s.timeouts.as_ref()),
        NodeKind::SqlSink(s) => Some(s.timeouts.as_ref()),
        _ => None,
    }
}

fn schema_policy(kind: &NodeKind) -> Option<SchemaPolicy> {
    match kind {
        NodeKind::Http(h) => Some(h.schema_policy.value),
        NodeKind::File(f) => Some(f.schema_policy.value),
        NodeKind::SqlSink(s) => Some(s.schema_policy.value),
        _ => None,
    }
}

/// Whether the engine (or the node's connector) applies `disposition` to the node's
/// `class` failures. Transforms and sinks consume batches and apply every disposition to
/// the batch at hand. A source or a task has no batch: the engine retries it or fails it
/// (`crates/engine/src/run.rs`); only an HTTP source under `schema_policy: quarantine`
/// keeps its drifting pages itself. A source's malformed records go through its
/// `bad_records`, not `on_error`.
fn disposition_acts(kind: &NodeKind, class: ErrorClass, disposition: Disposition) -> bool {
    match kind.role() {
        Role::Transform | Role::Sink => true,
        Role::Source | Role::Task => match disposition {
            Disposition::Retry | Disposition::Fail => true,
            Disposition::Quarantine => {
                class == ErrorClass::ContractChanged
                    && matches!(kind, NodeKind::Http(h) if h.schema_policy.value == SchemaPolicy::Quarantine)
            }
            Disposition::Split | Disposition::Skip => false,
        },
    }
}

/// The error and its help for a disposition the node cannot apply.
fn cannot_apply(node: &NodeSpec, class: ErrorClass, disposition: Disposition) -> (String, String) {
    let id = node.id.value.as_str();
    let verb = match disposition {
        Disposition::Split => "split",
        Disposition::Quarantine => "quarantine",
        _ => "skip",
    };
    if node.kind.role() == Role::Task {
        let message = if disposition == Disposition::Skip {
            format!("`{id}` is a task: a failed task cannot be skipped")
        } else {
            format!("`{id}` is a task: it has no batch to {verb}")
        };
        return (
            message,
            "a task is retried or fails (and a failed task fails the run): use `retry` or `fail`"
                .into(),
        );
    }
    let message = format!("`{id}` is a source: it has no batch to {verb}");
    let http = matches!(node.kind, NodeKind::Http(_));
    let help = match class {
        ErrorClass::InvalidRequest if http => "a source's errors are retried or fail it: use `fail` here; for malformed records set `bad_records: skip` or `bad_records: quarantine` on the node".to_owned(),
        ErrorClass::InvalidRequest => format!("a source's errors are retried or fail it: use `fail` here; a `{}` source fails on a malformed record, naming it", node.node_type.as_str()),
        ErrorClass::ContractChanged if http => "a source's errors are retried or fail it: use `fail` here; for pages that drift from the schema set `schema_policy: quarantine`, `evolve` or `warn`".to_owned(),
        ErrorClass::ContractChanged if schema_policy(&node.kind).is_some() => "a source's errors are retried or fail it: use `fail` here; to take new fields set `schema_policy: evolve` or `warn`".to_owned(),
        ErrorClass::PayloadTooLarge => "batches are split where they are consumed (transforms and sinks); a source's errors are retried or fail it: use `fail` here".to_owned(),
        _ => "a source's errors are retried or fail it: use `retry` or `fail`".to_owned(),
    };
    (message, help)
}

fn effective_on_error(spec: &PipelineSpec, node: &NodeSpec) -> Vec<EffectiveDisposition> {
    ErrorClass::ALL
        .into_iter()
        .map(|class| {
            let mut d = EffectiveDisposition {
                class,
                disposition: class.default_disposition(),
                from: PolicySource::Sluice,
            };
            if let Some(v) = spec.defaults.on_error.get(class) {
                d.disposition = v.value;
                d.from = PolicySource::Defaults;
            }
            if class == ErrorClass::ContractChanged
                && schema_policy(&node.kind) == Some(SchemaPolicy::Quarantine)
            {
                d.disposition = Disposition::Quarantine;
                d.from = PolicySource::SchemaPolicy;
            }
            if let Some(v) = node.common.on_error.get(class) {
                d.disposition = v.value;
                d.from = PolicySource::Node;
            }
            if !disposition_acts(&node.kind, class, d.disposition) && d.from != PolicySource::Node {
                d.disposition = Disposition::Fail;
                d.from = PolicySource::Role;
            }
            d
        })
        .collect()
}

/// Kahn's algorithm, taking ready nodes in file order.
fn execution_order(spec: &PipelineSpec, g: &Graph<'_>) -> Vec<(usize, usize)> {
    let n = spec.nodes.0.len();
    let mut indegree: Vec<usize> = (0..n)
        .map(|i| {
            g.graph
                .edges_directed(NodeIndex::new(i), petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut stage = vec![1usize; n];
    let mut ready: BTreeSet<usize> = (0..n).filter(|i| indegree[*i] == 0).collect();
    let mut order = Vec::new();
    while let Some(i) = ready.pop_first() {
        order.push((i, stage[i]));
        for next in g.graph.neighbors(NodeIndex::new(i)) {
            let j = next.index();
            stage[j] = stage[j].max(stage[i] + 1);
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    order
}

/// Runs every check; returns the plan when no error was found.
pub(crate) fn check(loaded: Loaded, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Plan> {
    let Loaded {
        spec,
        all_ids,
        clean,
    } = loaded;
    let errors_before = diags.iter().any(Diagnostic::is_error);
    let mut c = Checker {
        lines: text.lines().collect(),
        diags,
    };
    let spec = spec?;
    c.header(&spec, &all_ids);
    // A node that already had errors is partly read: checking the rest would mostly
    // repeat them (a removed op leaves `ops` empty, say).
    for node in spec.nodes.iter().filter(|n| clean.contains(&n.id.value)) {
        c.node(node);
    }
    let loaded = Loaded {
        spec: None,
        all_ids,
        clean,
    };
    let g = c.graph(&spec, &loaded);
    let any_error = errors_before || c.diags.iter().any(Diagnostic::is_error);
    // Reachability on a partly read pipeline would only repeat earlier errors.
    if !any_error {
        c.reach_sinks(&spec, &g);
    }
    if c.diags.iter().any(Diagnostic::is_error) {
        return None;
    }
    let pipeline = spec.pipeline.value.to_string();
    let defaults = &spec.defaults;
    let mut nodes = Vec::new();
    for (i, stage) in execution_order(&spec, &g) {
        let n = &spec.nodes.0[i];
        let role = n.kind.role();
        nodes.push(PlannedNode {
            id: n.id.value.clone(),
            node_type: n.node_type,
            role,
            stage,
            description: n.common.description.clone(),
            inputs: n.common.inputs.iter().map(|s| s.value.clone()).collect(),
            after: n.common.after.iter().map(|s| s.value.clone()).collect(),
            retry: EffectiveRetry {
                by: match n.kind {
                    NodeKind::Http(_) => RetryOwner::Connector,
                    _ => RetryOwner::Engine,
                },
                ..merge_retry(&[defaults.retry.as_deref(), n.common.retry.as_deref()])
            },
            batching: (role != Role::Task).then(|| {
                merge_batching(&[defaults.batching.as_deref(), n.common.batching.as_deref()])
            }),
            timeouts: node_timeouts(&n.kind)
                .map(|own| merge_timeouts(&[defaults.timeouts.as_ref(), own])),
            on_error: effective_on_error(&spec, n),
            compensate: n.common.compensate.as_ref().map(|c| c.value.clone()),
            config: n.kind.clone(),
        });
    }
    let mut edges = Vec::new();
    for n in &nodes {
        for input in &n.inputs {
            let group = match &spec.buffer {
                BufferSpec::Kafka(k) => format!("{}.{pipeline}.{}", k.topic_prefix.value, n.id),
                BufferSpec::Embedded(_) => format!("{pipeline}.{}", n.id),
            };
            edges.push(PlannedEdge {
                from: input.clone(),
                to: n.id.clone(),
                kind: EdgeKind::Data,
                topic: Some(topic_name(&spec.buffer, &pipeline, input)),
                consumer_group: Some(group),
            });
        }
        for after in &n.after {
            edges.push(PlannedEdge {
                from: after.clone(),
                to: n.id.clone(),
                kind: EdgeKind::Order,
                topic: None,
                consumer_group: None,
            });
        }
    }
    // Effective retry: the first backoff may not exceed the cap once layers are merged.
    for n in &nodes {
        if n.retry.initial_backoff > n.retry.max_backoff {
            let at = spec
                .nodes
                .get(&n.id)
                .map(|s| s.id.clone())
                .unwrap_or_default();
            c.error_at(&at, format!("the effective retry of `{}` starts above its cap: initial_backoff {} > max_backoff {}", n.id, n.retry.initial_backoff, n.retry.max_backoff), "set both in the same place (`defaults.retry` or the node's `retry`)");
        }
    }
    if c.diags.iter().any(Diagnostic::is_error) {
        return None;
    }
    let warnings = c.diags.iter().filter(|d| !d.is_error()).cloned().collect();
    Some(Plan {
        pipeline,
        description: spec.description.clone(),
        schedule: spec.schedule.clone(),
        buffer: spec.buffer.clone(),
        state: spec.state.value.clone(),
        alerts: spec.alerts.clone(),
        nodes,
        edges,
        warnings,
        spec,
    })
}

/// Whether credentials to this URL would cross a network in clear text: `http://` to a
/// host other than the loopback interface.
fn plain_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let loopback = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    !(loopback || host == "localhost")
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_over_http_warn_unless_on_loopback() {
        for url in [
            "http://127.0.0.1:8080/x",
            "http://localhost/x",
            "http://[::1]:80/",
        ] {
            assert!(!super::plain_http(url), "{url}");
        }
        for url in [
            "http://api.example.com/x",
            "http://10.0.0.1/",
            "http://u@127.0.0.1.evil.com/",
        ] {
            assert!(super::plain_http(url), "{url}");
        }
        assert!(!super::plain_http("https://api.example.com/"));
    }

    use super::*;

    #[test]
    fn template_variables() {
        assert_eq!(
            template_vars("a{{page}}b{{ cursor }}").unwrap(),
            vec![("page".to_owned(), 1), ("cursor".to_owned(), 10)]
        );
        assert_eq!(template_vars("x {{page").unwrap_err(), 2);
        assert!(template_vars("none").unwrap().is_empty());
    }
}
