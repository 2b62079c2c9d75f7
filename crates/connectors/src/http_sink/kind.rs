//! `type: http_sink`: the node kind of the HTTP sink: its spec read, checked, built and
//! health-checked.

use super::spec::{HttpSinkSpec, SinkFormat};
use crate::http::kind::{api_link, auth, header_names, plain_http, rate_limit};
use sluice_config::kind::KindOf;
use sluice_config::plan::PlannedNode;
use sluice_config::spec::TimeoutsSpec;
use sluice_config::spec::nodes::{NodeSpec, Role};
use sluice_config::{BuildContext, Checker, Kind, Link, LinkKind, NodeConfig};
use sluice_core::node::{BoxFuture, NodeRunner};
use sluice_core::{ConnectorError, Secret, Sink};

/// `type: http_sink`.
pub static HTTP_SINK: KindOf<HttpSinkSpec> = KindOf::new("http_sink", Role::Sink, "HTTP sink");

impl NodeConfig for HttpSinkSpec {
    fn kind(&self) -> &'static dyn Kind {
        &HTTP_SINK
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn check(&self, _node: &NodeSpec, c: &mut Checker<'_>) {
        let s = self;
        if let Some(a) = &s.auth {
            auth(c, a, plain_http(s.url.value.as_str()));
        }
        if let (Some(w), SinkFormat::Ndjson) = (&s.wrap_key, s.format) {
            c.error_at(
                w,
                "`wrap_key` applies to `format: json_array`",
                "remove `wrap_key`, or use `format: json_array`",
            );
        }
        c.templates(s.url.value.as_str(), s.url.pos, &[], &|_| {
            "an HTTP sink's URL takes no variables".to_owned()
        });
        rate_limit(c, &s.rate_limit);
        c.timeouts(&s.timeouts);
        c.redacted_map(&s.headers, "header");
        header_names(c, &s.headers);
    }

    fn shown(&self) -> serde_json::Value {
        self.shown()
            .unwrap_or_else(|e| serde_json::Value::String(format!("(cannot show: {e})")))
    }

    fn timeouts(&self) -> Option<Option<&TimeoutsSpec>> {
        Some(self.timeouts.as_ref())
    }

    fn build<'a>(
        &'a self,
        node: &'a PlannedNode,
        _ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
        Box::pin(async move {
            let sink = super::HttpSink::new(sink_config(self, node))?;
            Ok(NodeRunner::Sink(Box::new(sink)))
        })
    }

    fn links(&self, node: &PlannedNode, _ctx: &BuildContext) -> Vec<Link> {
        let sink = super::HttpSink::new(sink_config(self, node));
        vec![Link {
            kind: LinkKind::Api,
            name: api_link(self.url.value.as_str()),
            check: Box::pin(async move { sink?.health().await }),
        }]
    }
}

/// The HTTP sink's config from the node's spec (auth mapped as the HTTP source's).
fn sink_config(spec: &HttpSinkSpec, node: &PlannedNode) -> crate::http_sink::HttpSinkConfig {
    let mut c = crate::http_sink::HttpSinkConfig::new(spec.url.value.as_str());
    c.method = spec.method;
    c.headers = spec
        .headers
        .iter_exposed()
        .map(|(k, v)| (k.to_owned(), Secret::new(v)))
        .collect();
    c.public = spec.public.clone();
    c.auth = spec
        .auth
        .as_ref()
        .map(|a| crate::http::kind::auth_config(&a.value));
    c.format = spec.format;
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
