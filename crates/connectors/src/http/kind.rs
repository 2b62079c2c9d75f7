//! `type: http`: the node kind of the HTTP API source: its spec read, checked, built and
//! health-checked.

use super::spec::{
    AuthSpec, BreakerSpec, HttpMethod, HttpSourceSpec, PaginationSpec, RateLimitSpec,
};
use crate::spec::{check_schema, schema_config};
use sluice_config::kind::KindOf;
use sluice_config::plan::PlannedNode;
use sluice_config::spec::nodes::{NodeSpec, Role};
use sluice_config::spec::{SchemaPolicy, TimeoutsSpec};
use sluice_config::{BuildContext, Checker, Kind, Link, LinkKind, NodeConfig, Spanned};
use sluice_core::node::{BoxFuture, NodeRunner};
use sluice_core::{ConnectorError, Disposition, ErrorClass, Secret};
use std::collections::BTreeSet;

/// `type: http`.
pub static HTTP: KindOf<HttpSourceSpec> = KindOf::new("http", Role::Source, "HTTP source");

impl NodeConfig for HttpSourceSpec {
    fn kind(&self) -> &'static dyn Kind {
        &HTTP
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn check(&self, node: &NodeSpec, c: &mut Checker<'_>) {
        check_source(c, node, self);
    }

    fn shown(&self) -> serde_json::Value {
        self.shown()
            .unwrap_or_else(|e| serde_json::Value::String(format!("(cannot show: {e})")))
    }

    fn timeouts(&self) -> Option<Option<&TimeoutsSpec>> {
        Some(self.timeouts.as_ref())
    }

    fn schema_policy(&self) -> Option<SchemaPolicy> {
        Some(self.schema_policy.value)
    }

    fn retries_inside(&self) -> bool {
        true
    }

    fn quarantines_drift(&self) -> bool {
        self.schema_policy.value == SchemaPolicy::Quarantine
    }

    fn source_advice(&self, class: ErrorClass) -> Option<String> {
        match class {
            ErrorClass::InvalidRequest => Some("a source's errors are retried or fail it: use `fail` here; for malformed records set `bad_records: skip` or `bad_records: quarantine` on the node".to_owned()),
            ErrorClass::ContractChanged => Some("a source's errors are retried or fail it: use `fail` here; for pages that drift from the schema set `schema_policy: quarantine`, `evolve` or `warn`".to_owned()),
            _ => None,
        }
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
            let config = source_config(self, node);
            let (pipeline, id) = (ctx.pipeline.clone(), node.id.clone());
            let breakers = ctx.shared::<crate::http::BreakerRegistry>();
            let budgets = ctx.rate_budgets();
            let metrics = ctx.shared::<sluice_config::ConnectorMetrics>();
            Ok(NodeRunner::source(move |checkpoint| async move {
                let source = crate::http::HttpSource::new(
                    config,
                    crate::http::HttpSourceContext {
                        pipeline,
                        node: id,
                        checkpoint,
                        breakers: Some(breakers),
                        budgets,
                        metrics: Some(metrics),
                    },
                )?;
                Ok(Box::new(source) as Box<dyn sluice_core::Source>)
            }))
        })
    }

    fn keyset(
        &self,
        node: &PlannedNode,
        ctx: &BuildContext,
    ) -> Option<Box<dyn sluice_config::reconcile::KeySet>> {
        Some(Box::new(crate::http::reread::HttpKeySet::new(
            source_config(self, node),
            ctx.pipeline.clone(),
            node.id.clone(),
            api_link(self.url.value.as_str()),
        )))
    }

    fn probes(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<sluice_config::doctor::Probe> {
        use sluice_config::doctor::{Finding, Probe, ProbeReport};
        let mut config = source_config(self, node);
        // One attempt: doctor says how the link is now, it does not wait it out.
        config.retry.max_attempts = 1;
        let source = crate::http::HttpSource::new(
            config,
            crate::http::HttpSourceContext {
                pipeline: ctx.pipeline.clone(),
                node: node.id.clone(),
                checkpoint: None,
                breakers: None,
                budgets: None,
                metrics: Some(ctx.shared::<sluice_config::ConnectorMetrics>()),
            },
        );
        let endpoints = source.as_ref().map(|s| s.endpoints()).unwrap_or_default();
        vec![Probe {
            kind: LinkKind::Api,
            name: api_link(self.url.value.as_str()),
            endpoints,
            run: Box::pin(async move {
                match source {
                    Ok(mut source) => source.probe().await,
                    Err(e) => ProbeReport {
                        findings: vec![Finding::failed(None, "the source's settings", e)],
                        sample: None,
                    },
                }
            }),
        }]
    }

    fn links(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<Link> {
        let mut config = source_config(self, node);
        // One attempt: the check says how the link is now, it does not wait it out.
        config.retry.max_attempts = 1;
        let source = crate::http::HttpSource::new(
            config,
            crate::http::HttpSourceContext {
                pipeline: ctx.pipeline.clone(),
                node: node.id.clone(),
                checkpoint: None,
                breakers: None,
                budgets: None,
                metrics: Some(ctx.shared::<sluice_config::ConnectorMetrics>()),
            },
        );
        vec![Link {
            kind: LinkKind::Api,
            name: api_link(self.url.value.as_str()),
            check: Box::pin(async move {
                let mut source = source?;
                sluice_core::Source::health(&mut source)
                    .await
                    .map(Option::unwrap_or_default)
            }),
        }]
    }
}

impl crate::http::HttpSourceConfig {
    /// The config of an HTTP source node written as a pipeline file writes it (its
    /// fields, `retry`, `batching`, `timeouts`, ...; `type: http` implied), here as JSON:
    /// checked as `sluice validate` checks a pipeline, with every problem named. For
    /// callers that run a source without a pipeline (tests, benchmarks).
    pub fn from_spec(
        node: serde_json::Value,
    ) -> Result<crate::http::HttpSourceConfig, sluice_config::Invalid> {
        let mut node = node;
        if let Some(fields) = node.as_object_mut() {
            fields.insert("type".into(), serde_json::Value::from("http"));
        }
        let text = format!(
            "pipeline: http_source\nnodes:\n  api: {node}\n  out: {{ type: file_sink, inputs: [api], path: out.ndjson, format: ndjson }}\n"
        );
        let plan = sluice_config::validate(&text, &sluice_config::Env::new(), crate::registry())?;
        let planned = plan
            .node("api")
            .unwrap_or_else(|| unreachable!("the plan has the node it was validated with"));
        let spec = planned
            .config
            .downcast_ref::<HttpSourceSpec>()
            .unwrap_or_else(|| unreachable!("`type: http` is read into its spec"));
        Ok(source_config(spec, planned))
    }
}

/// `scheme://host:port/path` of an API URL, without its query (which may hold a key).
pub(crate) fn api_link(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => url.split('?').next().unwrap_or(url).to_owned(),
    }
}

/// The auth of a request, as the HTTP source and sink send it.
pub(crate) fn auth_config(auth: &AuthSpec) -> crate::http::AuthConfig {
    use crate::http::spec as s;
    match auth {
        s::AuthSpec::Basic(b) => crate::http::AuthConfig::Basic {
            username: b.username.clone(),
            password: b.password.value.clone(),
        },
        s::AuthSpec::Bearer(b) => crate::http::AuthConfig::Bearer {
            token: b.token.value.clone(),
        },
        s::AuthSpec::ApiKey(k) => crate::http::AuthConfig::ApiKey {
            name: k.name.clone(),
            value: k.value.value.clone(),
            location: k.location,
        },
        s::AuthSpec::Oauth2ClientCredentials(o) => {
            crate::http::AuthConfig::Oauth2ClientCredentials(crate::http::OAuth2Config {
                token_url: o.token_url.value.as_str().to_owned(),
                client_id: o.client_id.clone(),
                client_secret: o.client_secret.value.clone(),
                scopes: o.scopes.clone(),
                audience: o.audience.clone(),
                refresh_before: o.refresh_before.value.get(),
                credentials_in: o.credentials_in,
            })
        }
        s::AuthSpec::Hmac(h) => crate::http::AuthConfig::Hmac(crate::http::HmacConfig {
            algorithm: h.algorithm,
            key: h.key.value.clone(),
            key_id: h.key_id.clone(),
            signed_parts: h.signed_parts.iter().map(|p| p.value).collect(),
            signature_header: h.signature_header.clone(),
            timestamp_header: h.timestamp_header.clone(),
            key_id_header: h.key_id_header.clone(),
            encoding: h.encoding,
        }),
    }
}

/// The HTTP source's config from the node's spec (retry and batching come from the plan's
/// effective values, so `defaults` apply too).
pub(crate) fn source_config(
    spec: &HttpSourceSpec,
    node: &PlannedNode,
) -> crate::http::HttpSourceConfig {
    use crate::http::spec as s;

    let mut c = crate::http::HttpSourceConfig::new(spec.url.value.as_str());
    c.method = spec.method;
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
    c.auth = spec.auth.as_ref().map(|a| auth_config(&a.value));
    c.pagination = match &spec.pagination {
        s::PaginationSpec::None => crate::http::PaginationConfig::None,
        s::PaginationSpec::PageNumber(p) => {
            crate::http::PaginationConfig::PageNumber(crate::http::PageNumberConfig {
                param: p.param.clone(),
                start: p.start,
                size_param: p.size_param.clone(),
                size: p.size.as_ref().map(|s| s.value),
            })
        }
        s::PaginationSpec::OffsetLimit(p) => {
            crate::http::PaginationConfig::OffsetLimit(crate::http::OffsetLimitConfig {
                offset_param: p.offset_param.clone(),
                limit_param: p.limit_param.clone(),
                limit: p.limit.value,
            })
        }
        s::PaginationSpec::Cursor(p) => {
            crate::http::PaginationConfig::Cursor(crate::http::CursorConfig {
                path: p.path.value.to_string(),
                param: p.param.clone(),
            })
        }
        s::PaginationSpec::NextUrl(p) => {
            crate::http::PaginationConfig::NextUrl(crate::http::NextUrlConfig {
                path: p.path.value.to_string(),
            })
        }
        s::PaginationSpec::LinkHeader => crate::http::PaginationConfig::LinkHeader,
    };
    if let Some(stop) = &spec.stop {
        c.stop = crate::http::StopConfig {
            empty_page: stop.value.empty_page,
            has_more: stop.value.has_more.as_ref().map(|p| p.value.to_string()),
            total: stop.value.total.as_ref().map(|p| p.value.to_string()),
        };
    }
    if let Some(max) = &spec.max_pages {
        c.max_pages = max.value;
    }
    if let Some(prefetch) = spec.prefetch {
        c.prefetch = prefetch;
    }
    if let Some(max) = &spec.max_response_bytes {
        c.max_response_bytes = usize::try_from(max.value.bytes()).unwrap_or(usize::MAX);
    }
    c.records = match &spec.records {
        s::RecordsSpec::Root => crate::http::RecordsConfig::Root,
        s::RecordsSpec::Ndjson => crate::http::RecordsConfig::Ndjson,
        s::RecordsSpec::Path(p) => crate::http::RecordsConfig::Path(p.value.to_string()),
    };
    c.incremental = spec
        .incremental
        .as_ref()
        .map(|i| crate::http::IncrementalConfig {
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
    c.rate_limit_signal =
        spec.rate_limit_signal
            .as_ref()
            .map(|s| crate::http::RateLimitSignalConfig {
                path: s.value.path.value.to_string(),
                equals: s.value.equals.clone(),
                reset: s.value.reset.as_ref().map(|r| r.value.to_string()),
            });
    if let Some(b) = &spec.breaker {
        c.breaker = crate::http::BreakerConfig {
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
        c.batching.max_wait = b.max_wait.get();
    }
    c.schema = schema_config(&spec.schema);
    c.nested = spec.nested;
    c.bad_records = spec.bad_records;
    c.schema_policy = spec.schema_policy.value;
    c
}

pub(crate) fn check_source(c: &mut Checker<'_>, node: &NodeSpec, h: &HttpSourceSpec) {
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
            _ => "an HTTP source's templates take pagination and watermark variables".to_owned(),
        }
    };
    let mut used = c.templates(h.url.value.as_str(), h.url.pos, &allowed, &why);
    for (_, v) in h.query.entries() {
        used.extend(c.templates(&v.value, v.pos, &allowed, &why));
    }
    for (_, v) in h.headers.entries() {
        used.extend(c.templates(&v.value, v.pos, &allowed, &why));
    }
    if let Some(body) = &h.body {
        let mut strings = Vec::new();
        collect_strings(&body.value, &mut strings);
        for s in strings {
            used.extend(c.templates(&s, body.pos, &allowed, &why));
        }
        if h.method == HttpMethod::GET {
            c.error_at(
                body,
                "a `GET` request has no body",
                "set `method: POST`, or move the values to `query`",
            );
        }
    }
    if let Some(a) = &h.auth {
        auth(c, a, plain_http(h.url.value.as_str()));
        if h.headers.get_exposed("Authorization").is_some()
            || h.headers.get_exposed("authorization").is_some()
        {
            c.warning(
                a.pos,
                a.width,
                "both `auth` and an `Authorization` header are set",
                "`auth` sets the header: remove it from `headers`",
            );
        }
    }
    c.redacted_map(&h.headers, "header");
    header_names(c, &h.headers);
    c.redacted_map(&h.query, "query parameter");
    for host in &h.allowed_hosts {
        if !is_host_entry(&host.value) {
            c.error_at(
                host,
                format!("`{}` is not a host name", host.value),
                "write `host` or `host:port`, e.g. `api2.example.com` (no scheme, no path)",
            );
        }
    }
    match &h.pagination {
        PaginationSpec::None => {
            if let Some(stop) = &h.stop {
                c.error_at(
                    stop,
                    "`stop` applies to paginated requests, and this node has `pagination: none`",
                    "set `pagination`, or remove `stop`",
                );
            }
            if let Some(m) = &h.max_pages {
                c.error_at(m, "`max_pages` applies to paginated requests, and this node has `pagination: none`", "set `pagination`, or remove `max_pages`");
            }
        }
        PaginationSpec::PageNumber(p) => match (&p.size_param, &p.size) {
            (Some(_), None) => c.error_at(
                &node.id,
                "`size_param` is set without `size`",
                "add `size: 100` (the page size to ask for)",
            ),
            (None, Some(s)) => c.error_at(
                s,
                "`size` is set without `size_param`",
                "add `size_param: per_page` (the query parameter of the page size)",
            ),
            (Some(_), Some(s)) => c.at_least(s, 1, "size"),
            (None, None) => {}
        },
        PaginationSpec::OffsetLimit(o) => c.at_least(&o.limit, 1, "limit"),
        _ => {}
    }
    if let Some(m) = &h.max_pages {
        c.at_least(m, 1, "max_pages");
    }
    if let Some(m) = &h.max_response_bytes
        && m.value.bytes() == 0
    {
        c.error_at(
            m,
            "`max_response_bytes` must be more than zero",
            "e.g. `max_response_bytes: 64MiB` (the default is 256MiB)",
        );
    }
    if let Some(inc) = &h.incremental {
        if inc.value.param.is_none() && !used.iter().any(|v| v == "watermark") {
            c.error_at(inc, "the watermark is never sent", "set `param:` (the query parameter for it), or write `{{watermark}}` in `url`, `query` or `body`");
        }
        if inc.value.field.value.trim().is_empty() {
            c.error_at(
                &inc.value.field,
                "`field` is empty",
                "name the record field that orders records, e.g. `updated_at`",
            );
        }
    }
    rate_limit(c, &h.rate_limit);
    breaker(c, &h.breaker);
    c.timeouts(&h.timeouts);
    check_schema(c, &h.schema);
    // `schema_policy` and `on_error.contract_changed` must agree.
    if let Some(d) = node.common.on_error.get(ErrorClass::ContractChanged) {
        let implied = match h.schema_policy.value {
            SchemaPolicy::Quarantine => Some(Disposition::Quarantine),
            SchemaPolicy::Fail => None,
            SchemaPolicy::Evolve | SchemaPolicy::Warn => None,
        };
        if implied.is_some_and(|i| i != d.value) {
            c.error_at(
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

pub(crate) fn auth(c: &mut Checker<'_>, auth: &Spanned<AuthSpec>, plain_http: bool) {
    match &auth.value {
        AuthSpec::Basic(b) => c.secret(&b.password, "password"),
        AuthSpec::Bearer(b) => c.secret(&b.token, "token"),
        AuthSpec::ApiKey(k) => {
            if k.name.trim().is_empty() {
                c.error_at(
                    auth,
                    "the API key's `name` is empty",
                    "name the header or query parameter, e.g. `name: X-Api-Key`",
                );
            }
            c.secret(&k.value, "value");
        }
        AuthSpec::Oauth2ClientCredentials(o) => {
            c.secret(&o.client_secret, "client_secret");
            c.positive_duration(&o.refresh_before, "refresh_before");
        }
        AuthSpec::Hmac(h) => {
            c.secret(&h.key, "key");
            if h.signed_parts.is_empty() {
                c.error_at(
                    auth,
                    "`signed_parts` is empty: nothing would be signed",
                    "e.g. `signed_parts: [method, path, timestamp, body]`",
                );
            }
            let mut seen = BTreeSet::new();
            for part in &h.signed_parts {
                if !seen.insert(format!("{:?}", part.value)) {
                    c.error_at(part, "this part is listed twice", "remove the second one");
                }
            }
            for (field, name) in [
                ("signature_header", &h.signature_header),
                ("timestamp_header", &h.timestamp_header),
                ("key_id_header", &h.key_id_header),
            ] {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    c.error_at(
                        auth,
                        format!("`{field}`: `{name}` is not a valid header name"),
                        "header names are letters, digits and `-`, e.g. `X-Signature`",
                    );
                }
            }
        }
    }
    if plain_http {
        c.warning(
            auth.pos,
            auth.width,
            "credentials would be sent over plain `http://`",
            "use an `https://` URL",
        );
    }
}

pub(crate) fn rate_limit(c: &mut Checker<'_>, r: &Option<RateLimitSpec>) {
    let Some(r) = r else { return };
    if let Some(rps) = &r.requests_per_second
        && !(rps.value.is_finite() && rps.value > 0.0)
    {
        c.error_at(
            rps,
            format!(
                "`requests_per_second` must be more than zero, found {}",
                rps.value
            ),
            "e.g. `requests_per_second: 5` or `0.5` for one request every two seconds",
        );
    }
    c.at_least(&r.burst, 1, "burst");
    c.at_least(&r.concurrency, 1, "concurrency");
    if r.concurrency.value > 1 {
        c.warning(
            r.concurrency.pos,
            r.concurrency.width,
            format!(
                "`concurrency: {}` sends no more requests at once: a source has one request in flight (with `prefetch`, the next page's while the page before is processed), a sink one batch",
                r.concurrency.value
            ),
            "remove it; to read faster, raise `requests_per_second` or `burst` within the API's limits",
        );
    }
    c.positive_duration(&r.max_retry_after, "max_retry_after");
}

pub(crate) fn breaker(c: &mut Checker<'_>, b: &Option<BreakerSpec>) {
    let Some(b) = b else { return };
    c.positive_duration(&b.window, "window");
    c.positive_duration(&b.open_for, "open_for");
    c.at_least(&b.min_requests, 1, "min_requests");
    c.at_least(&b.half_open_probes, 1, "half_open_probes");
    let ratio = &b.failure_ratio;
    if !(ratio.value > 0.0 && ratio.value <= 1.0) {
        c.error_at(
            ratio,
            format!(
                "`failure_ratio` must be more than 0 and at most 1, found {}",
                ratio.value
            ),
            "the share of failed requests that opens the breaker, e.g. `failure_ratio: 0.5`",
        );
    }
}

/// Whether an `allowed_hosts` entry is `host` or `host:port`, and nothing more.
pub(crate) fn is_host_entry(entry: &str) -> bool {
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

/// Every header's name can be sent.
pub(crate) fn header_names(c: &mut Checker<'_>, headers: &sluice_config::values::SecretMap) {
    for (k, _) in headers.entries() {
        if reqwest::header::HeaderName::from_bytes(k.value.as_bytes()).is_err() {
            c.error_at(
                k,
                format!("`{}` is not a valid header name", k.value),
                "header names are letters, digits and `-`, e.g. `X-Api-Key`",
            );
        }
    }
}

/// Whether credentials to this URL would cross a network in clear text: `http://` to a
/// host other than the loopback interface.
/// Whether credentials to this URL would cross a network in clear text: `http://` to a
/// host other than the loopback interface.
pub(crate) fn plain_http(url: &str) -> bool {
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
}
