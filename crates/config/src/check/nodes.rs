//! A node's common fields (`retry`, `batching`, `on_error`, `compensate`) and what its
//! role allows; then its kind's own checks ([`NodeConfig::check`]).

use super::Checker;
use crate::kind::NodeConfig;
use crate::spec::OnErrorSpec;
use crate::spec::nodes::{NodeSpec, Role};
use sluice_core::{Disposition, ErrorClass};

impl Checker<'_> {
    /// The checks of a node: its common fields, then its kind's own.
    pub(super) fn node(&mut self, node: &NodeSpec) {
        let id = node.id.value.as_str();
        let role = node.kind.role();
        if let Some(r) = &node.common.retry {
            self.retry(r);
        }
        if let Some(b) = &node.common.batching {
            match role {
                Role::Task => self.error_at(
                    b,
                    format!("`{id}` is a task: it has no batches"),
                    "remove `batching`",
                ),
                // Batches are cut where records are read; the nodes after a source
                // carry them as they are, so a limit here would do nothing.
                Role::Transform | Role::Sink => self.error_at(
                    b,
                    format!("`{id}` is a {role}: batches are cut at the sources, where the records are read"),
                    "set `batching` on the source that feeds it, or in `defaults` (which applies to every source)",
                ),
                Role::Source => self.batching(b),
            }
        }
        self.on_error(&node.common.on_error, Some(node));
        if let Some(c) = &node.common.compensate {
            c.value.config.check(node, self);
        }
        node.kind.check(node, self);
    }

    /// `on_error` entries that cannot make sense. `node` is `None` in `defaults` (what a
    /// node cannot apply of those becomes `fail` in its plan, see [`disposition_acts`]).
    pub(super) fn on_error(&mut self, on_error: &OnErrorSpec, node: Option<&NodeSpec>) {
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
                _ if node
                    .is_some_and(|n| !disposition_acts(n.kind.as_ref(), class.value, d.value)) =>
                {
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
}

/// `an HTTP source`, `a postgres sink`, `a transform`, `a command task`, for messages.
pub(super) fn a_kind(node: &NodeSpec) -> String {
    let what = node.kind.kind().what(node.kind.role());
    // "an HTTP source", "an SQL task", "a postgres sink".
    let article = if what.starts_with(['a', 'e', 'i', 'o', 'u', 'H', 'S']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {what}")
}

/// Whether the engine (or the node's connector) applies `disposition` to the node's
/// `class` failures. Transforms and sinks consume batches and apply every disposition to
/// the batch at hand. A source or a task has no batch: the engine retries it or fails it
/// (`crates/engine/src/run.rs`); only a source that keeps its drifting pages itself (an
/// HTTP source under `schema_policy: quarantine`) quarantines. A source's malformed
/// records go through its `bad_records`, not `on_error`.
pub(super) fn disposition_acts(
    kind: &dyn NodeConfig,
    class: ErrorClass,
    disposition: Disposition,
) -> bool {
    match kind.role() {
        Role::Transform | Role::Sink => true,
        Role::Source | Role::Task => match disposition {
            Disposition::Retry | Disposition::Fail => true,
            Disposition::Quarantine => {
                class == ErrorClass::ContractChanged && kind.quarantines_drift()
            }
            Disposition::Split | Disposition::Skip => false,
        },
    }
}

/// The error and its help for a disposition the node cannot apply.
pub(super) fn cannot_apply(
    node: &NodeSpec,
    class: ErrorClass,
    disposition: Disposition,
) -> (String, String) {
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
    if let Some(advice) = node.kind.source_advice(class) {
        return (message, advice);
    }
    let help = match class {
        ErrorClass::InvalidRequest => format!("a source's errors are retried or fail it: use `fail` here; a `{}` source fails on a malformed record, naming it", node.node_type),
        ErrorClass::ContractChanged if node.kind.schema_policy().is_some() => "a source's errors are retried or fail it: use `fail` here; to take new fields set `schema_policy: evolve` or `warn`".to_owned(),
        ErrorClass::PayloadTooLarge => "batches are split where they are consumed (transforms and sinks); a source's errors are retried or fail it: use `fail` here".to_owned(),
        _ => "a source's errors are retried or fail it: use `retry` or `fail`".to_owned(),
    };
    (message, help)
}
