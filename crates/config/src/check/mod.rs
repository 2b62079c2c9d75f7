//! The checks that look at more than one value, and the plan.
//!
//! - [`fields`]: single values and policies (ranges, template variables, secrets written
//!   in clear, `retry`, `batching`, `timeouts`): the vocabulary every kind's checks use;
//! - [`frame`]: the top-level sections (state store, schedule, buffer, `alerts`);
//! - [`nodes`]: each node's common fields and what its role allows, then its kind's own
//!   checks ([`NodeConfig::check`](crate::kind::NodeConfig::check));
//! - [`graph`]: unknown ids, roles of edges, cycles, data that reaches no sink;
//! - [`effective`]: effective policies, execution order, topics: the [`Plan`].

mod effective;
mod fields;
mod frame;
mod graph;
mod nodes;

use crate::diag::Diagnostic;
use crate::load::Loaded;
use crate::plan::Plan;

/// What checks report to: every kind's [`NodeConfig::check`](crate::kind::NodeConfig::check)
/// gets one, with the helpers of [`fields`] (errors and warnings at a place, template
/// variables, secrets written in clear, ranges).
pub struct Checker<'a> {
    pub(crate) lines: Vec<&'a str>,
    pub(crate) diags: &'a mut Vec<Diagnostic>,
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
    effective::plan(&mut c, &spec, &g)
}
