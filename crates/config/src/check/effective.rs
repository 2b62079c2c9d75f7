//! Effective settings (Sluice's defaults, then `defaults:`, then the node) and the plan.

use super::Checker;
use super::graph::{Graph, execution_order};
use super::nodes::disposition_acts;
use crate::de::Spanned;
use crate::diag::Diagnostic;
use crate::plan::{
    EdgeKind, EffectiveBatching, EffectiveDisposition, EffectiveRetry, EffectiveTimeouts, Plan,
    PlannedEdge, PlannedNode, PolicySource, RetryOwner, topic_name,
};
use crate::spec::nodes::{NodeSpec, Role};
use crate::spec::{BatchingSpec, BufferSpec, PipelineSpec, RetrySpec, SchemaPolicy, TimeoutsSpec};
use sluice_core::{Disposition, ErrorClass};

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
                && node.kind.schema_policy() == Some(SchemaPolicy::Quarantine)
            {
                d.disposition = Disposition::Quarantine;
                d.from = PolicySource::SchemaPolicy;
            }
            if let Some(v) = node.common.on_error.get(class) {
                d.disposition = v.value;
                d.from = PolicySource::Node;
            }
            if !disposition_acts(node.kind.as_ref(), class, d.disposition)
                && d.from != PolicySource::Node
            {
                d.disposition = Disposition::Fail;
                d.from = PolicySource::Role;
            }
            d
        })
        .collect()
}

/// The plan of a pipeline that passed every check: effective policies, execution order,
/// edges and topics. `None` when the merged policies contradict each other (reported).
pub(super) fn plan(c: &mut Checker<'_>, spec: &PipelineSpec, g: &Graph<'_>) -> Option<Plan> {
    let pipeline = spec.pipeline.value.to_string();
    let defaults = &spec.defaults;
    let mut nodes = Vec::new();
    for (i, stage) in execution_order(spec, g) {
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
                by: if n.kind.retries_inside() {
                    RetryOwner::Connector
                } else {
                    RetryOwner::Engine
                },
                ..merge_retry(&[defaults.retry.as_deref(), n.common.retry.as_deref()])
            },
            batching: (role == Role::Source).then(|| {
                merge_batching(&[defaults.batching.as_deref(), n.common.batching.as_deref()])
            }),
            timeouts: n
                .kind
                .timeouts()
                .map(|own| merge_timeouts(&[defaults.timeouts.as_ref(), own])),
            on_error: effective_on_error(spec, n),
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
        freshness: spec.freshness.as_ref().map(|f| f.value),
        when_link_down: spec.when_link_down(),
        nodes,
        edges,
        warnings,
        spec: spec.clone(),
    })
}
