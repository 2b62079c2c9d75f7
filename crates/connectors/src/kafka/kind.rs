//! `type: kafka`: the node kind of the Kafka topic source: its spec read, checked, built
//! and health-checked.

use super::spec::KafkaSourceSpec;
use super::{KafkaSource, KafkaSourceConfig};
use crate::spec::check_schema;
use sluice_config::kind::KindOf;
use sluice_config::plan::PlannedNode;
use sluice_config::spec::nodes::{NodeSpec, Role};
use sluice_config::spec::{SchemaPolicy, TimeoutsSpec};
use sluice_config::{BuildContext, Checker, Kind, Link, LinkKind, NodeConfig};
use sluice_core::node::{BoxFuture, NodeRunner};
use sluice_core::{ConnectorError, Source};

/// `type: kafka`.
pub static KAFKA: KindOf<KafkaSourceSpec> = KindOf::new("kafka", Role::Source, "Kafka source");

fn config(spec: &KafkaSourceSpec, node: &PlannedNode) -> KafkaSourceConfig {
    let batching = node.batching.clone().unwrap_or_default();
    let timeouts = node.timeouts.clone().unwrap_or_default();
    KafkaSourceConfig {
        spec: spec.clone(),
        max_rows: usize::try_from(batching.max_rows).unwrap_or(usize::MAX),
        max_bytes: usize::try_from(batching.max_bytes.bytes()).unwrap_or(usize::MAX),
        max_wait: batching.max_wait.get(),
        request_timeout: timeouts.request.get(),
        connect_timeout: timeouts.connect.get(),
    }
}

impl NodeConfig for KafkaSourceSpec {
    fn kind(&self) -> &'static dyn Kind {
        &KAFKA
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn check(&self, _node: &NodeSpec, c: &mut Checker<'_>) {
        c.timeouts(&self.timeouts);
        if self.brokers.value.is_empty() {
            c.error_at(
                &self.brokers,
                "`brokers` is empty",
                "name at least one bootstrap server, e.g. `brokers: [\"127.0.0.1:9092\"]`",
            );
        }
        c.unique(&self.brokers.value, "broker");
        if self.topic.value.trim().is_empty() {
            c.error_at(
                &self.topic,
                "`topic` is empty",
                "name the topic to read, e.g. `topic: orders.events`",
            );
        }
        c.redacted_map(&self.properties, "property");
        for (k, _) in self.properties.entries() {
            if matches!(
                k.value.as_str(),
                "bootstrap.servers" | "group.id" | "enable.auto.commit"
            ) {
                c.error_at(
                    k,
                    format!("`{}` is set by Sluice", k.value),
                    "remove it: `brokers` names the servers, and the offsets are kept in Sluice's checkpoint, not in a consumer group",
                );
            }
        }
        check_schema(c, &self.schema);
        if self.schema_policy.value == SchemaPolicy::Quarantine {
            c.error_at(
                &self.schema_policy,
                "the `kafka` source cannot quarantine records that differ from the schema",
                "use `fail` (the read stops at that message), or `evolve` or `warn` to take the new fields",
            );
        }
        if let Some(m) = &self.max_message_bytes
            && m.value.bytes() == 0
        {
            c.error_at(
                m,
                "`max_message_bytes` must be more than zero",
                "e.g. `max_message_bytes: 4MiB` (the default is 1MiB)",
            );
        }
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

    fn declared_columns(&self) -> Option<Vec<String>> {
        self.schema.declared()
    }

    fn build<'a>(
        &'a self,
        node: &'a PlannedNode,
        ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
        Box::pin(async move {
            let config = config(self, node);
            let (pipeline, id) = (ctx.pipeline.clone(), node.id.clone());
            Ok(NodeRunner::source(move |checkpoint| async move {
                let source = KafkaSource::open(config, &pipeline, &id, checkpoint).await?;
                Ok(Box::new(source) as Box<dyn Source>)
            }))
        })
    }

    fn probes(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<sluice_config::doctor::Probe> {
        let endpoints = self
            .brokers
            .value
            .iter()
            .filter_map(|b| broker_endpoint(&b.value))
            .collect::<Vec<_>>();
        self.links(node, ctx)
            .into_iter()
            .map(|link| sluice_config::doctor::Probe::of_link_at(link, endpoints.clone()))
            .collect()
    }

    fn links(&self, node: &PlannedNode, ctx: &BuildContext) -> Vec<Link> {
        let brokers: Vec<&str> = self
            .brokers
            .value
            .iter()
            .map(|b| b.value.as_str())
            .collect();
        vec![Link {
            kind: LinkKind::Kafka,
            name: format!("kafka {} topic {}", brokers.join(","), self.topic.value),
            check: {
                let (config, pipeline, id) =
                    (config(self, node), ctx.pipeline.clone(), node.id.clone());
                Box::pin(async move {
                    let mut source = KafkaSource::open(config, &pipeline, &id, None).await?;
                    source.health().await.map(Option::unwrap_or_default)
                })
            },
        }]
    }
}

/// A broker's `host:port` as an endpoint of the network step.
pub(crate) fn broker_endpoint(broker: &str) -> Option<sluice_config::doctor::Endpoint> {
    sluice_config::doctor::Endpoint::of_url(&format!("kafka://{broker}"), "Kafka broker", true)
        .filter(|e| e.port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The source's timeouts: `defaults.timeouts`, then its own, field by field.
    #[test]
    fn defaults_timeouts_reach_the_kafka_source() {
        let config_of = |defaults: &str, own: &str| {
            let text = format!(
                "pipeline: k\n{defaults}nodes:\n  events:\n    type: kafka\n    brokers: [\"127.0.0.1:9092\"]\n    topic: t\n{own}  out:\n    type: file_sink\n    inputs: [events]\n    path: o.ndjson\n    format: ndjson\n"
            );
            let plan =
                sluice_config::validate(&text, &sluice_config::Env::new(), crate::registry())
                    .unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
            let node = plan.nodes.iter().find(|n| n.id == "events").unwrap();
            let spec = node.config.downcast_ref::<KafkaSourceSpec>().unwrap();
            let c = config(spec, node);
            (c.connect_timeout, c.request_timeout)
        };
        assert_eq!(
            config_of("", ""),
            (Duration::from_secs(10), Duration::from_secs(30))
        );
        assert_eq!(
            config_of("defaults: { timeouts: { request: 2m } }\n", ""),
            (Duration::from_secs(10), Duration::from_secs(120))
        );
        assert_eq!(
            config_of(
                "defaults: { timeouts: { request: 2m } }\n",
                "    timeouts: { connect: 3s }\n"
            ),
            (Duration::from_secs(3), Duration::from_secs(120))
        );
    }
}
