//! # sluice-config
//!
//! Pipeline YAML in, a validated [`Plan`] (or every problem, each at its line and column)
//! out.
//!
//! Which node kinds exist is not this crate's business: [`validate`] takes a [`Registry`]
//! of them (`sluice_connectors::registry()` lists Sluice's; its crate documentation shows
//! a pipeline validated end to end). This crate reads the frame, hands each node's own
//! fields to its kind ([`kind`]), checks what spans several values and builds the plan.
//!
//! ## How it works
//!
//! 1. **Parse with positions** ([`yaml`](crate) module): `saphyr-parser` events become a
//!    small tree of mappings, sequences and scalars, each with its line and column (keys
//!    too). Duplicate keys are errors (YAML loaders usually keep the last silently, which
//!    would hide a duplicated node id).
//! 2. **Interpolate** `${VAR}`, `${VAR:-default}` and `${file:/path}` in scalar values,
//!    from an [`Env`]. Validation is pure: [`Env::capture`] is the separate resolve step
//!    that reads the process environment and the referenced files.
//! 3. **Deserialize** the typed spec ([`spec`]) through a custom `serde::Deserializer`
//!    over the tree, so unknown fields, wrong types, missing fields and unknown enum
//!    values are reported at their key or value, with "did you mean" suggestions. Node
//!    types are dispatched on `type:` by hand, through the [`Registry`] (each kind reads
//!    its own fields through [`kind::Fields`]), rather than with a serde tagged enum,
//!    whose buffering loses positions. A recovery loop removes each broken value and deserializes again, so
//!    every error is reported, not just the first.
//! 4. **Check** what spans several values: ranges, fields that go together, template
//!    variables, dispositions that suit the node, the graph (unknown ids with
//!    suggestions, cycles printed as `a -> b -> a`, edges whose roles do not fit, data
//!    that reaches no sink), and secrets written in clear (a warning).
//! 5. **Plan**: execution order, topics per edge, and each node's effective retry,
//!    batching, timeouts and error dispositions.
//!
//! ## Why saphyr-parser
//!
//! `serde_yaml` is archived and drops positions once a value is deserialized.
//! `saphyr-parser` (the maintained successor of `yaml-rust`/`yaml-rust2`, YAML 1.2,
//! pure Rust) is a pull parser that hands out every event with a [`Span`] of start and
//! end markers (line, column, character index), which is exactly what a position-keeping
//! tree needs, with no document model of its own to convert from. Its `yaml-rust2`
//! sibling exposes the same markers through a push-style receiver; the pull parser keeps
//! the tree builder a plain loop.
//!
//! [`Span`]: saphyr_parser::Span

pub mod check;
mod de;
pub mod diag;
pub mod doctor;
pub mod expr;
mod interp;
pub mod kind;
mod load;
pub mod plan;
pub mod reconcile;
pub mod schema;
pub mod spec;
pub mod values;
mod yaml;

pub use check::Checker;
pub use de::Spanned;
pub use diag::{Diagnostic, Pos, Severity};
pub use interp::{Env, file_references};
pub use kind::{
    BuildContext, ConnectorMetrics, Fields, Kind, Link, LinkKind, NodeConfig, Registry,
};
pub use plan::Plan;
pub use spec::PipelineSpec;

/// The pipeline is invalid: every diagnostic found (errors and warnings), in file order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the pipeline has {errors} error(s)", errors = self.errors().count())]
pub struct Invalid {
    diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    /// Every diagnostic, errors and warnings, in file order.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

/// A service's alert file (`sluice serve --alerts FILE`): an `alerts:` section alone.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceAlerts {
    alerts: spec::AlertsSpec,
}

/// Validates a service's alert file: one `alerts:` section, as in a pipeline (channels,
/// routes by class and severity, `repeat_every`), checked the same way. Returns it with
/// its warnings, or every diagnostic.
pub fn validate_alerts(
    text: &str,
    env: &Env,
) -> Result<(spec::AlertsSpec, Vec<Diagnostic>), Invalid> {
    let mut diags = Vec::new();
    let mut found = None;
    if let Some(mut tree) = yaml::parse(text, &mut diags) {
        interp::interpolate(&mut tree, env, text, &mut diags);
        let lines: Vec<&str> = text.lines().collect();
        let read = de::recover::<ServiceAlerts>(&tree, &lines, de::Filter::All, &[], &mut diags);
        if let Some(read) = read {
            let mut c = Checker {
                lines,
                diags: &mut diags,
            };
            c.alerts_section(&read.alerts, None);
            found = Some(read.alerts);
        }
    }
    diag::normalize(&mut diags, text);
    match found {
        Some(alerts) if !diags.iter().any(Diagnostic::is_error) => Ok((alerts, diags)),
        _ => {
            if !diags.iter().any(Diagnostic::is_error) {
                diags.push(Diagnostic::error(
                    Pos::START,
                    "the alert file could not be read: it holds one `alerts:` section",
                ));
            }
            Err(Invalid { diagnostics: diags })
        }
    }
}

/// Validates a pipeline file's text, its nodes read by the kinds of `registry`. Pure: no
/// I/O; variables and `${file:...}` contents come from `env`. Returns the plan (with its warnings) or every diagnostic.
pub fn validate(text: &str, env: &Env, registry: &Registry) -> Result<Plan, Invalid> {
    let mut diags = Vec::new();
    let plan = load::load(text, env, registry, &mut diags)
        .and_then(|loaded| check::check(loaded, text, &mut diags));
    diag::normalize(&mut diags, text);
    match plan {
        Some(mut plan) if !diags.iter().any(Diagnostic::is_error) => {
            plan.warnings = diags;
            Ok(plan)
        }
        _ => {
            if !diags.iter().any(Diagnostic::is_error) {
                // Unreachable in practice: a plan is only withheld because of an error.
                diags.push(Diagnostic::error(
                    Pos::START,
                    "the pipeline could not be read",
                ));
            }
            Err(Invalid { diagnostics: diags })
        }
    }
}
