//! # sluice-config
//!
//! Pipeline YAML in, a validated [`Plan`] (or every problem, each at its line and column)
//! out.
//!
//! ```
//! use sluice_config::{Env, validate};
//!
//! let yaml = r#"
//! pipeline: quickstart
//! nodes:
//!   users:
//!     type: http
//!     url: https://api.example.com/users
//!     records: { path: $.data }
//!   db:
//!     type: sqlite
//!     inputs: [users]
//!     url: sqlite://users.db
//!     table: users
//! "#;
//! let plan = validate(yaml, &Env::new()).expect("valid");
//! assert_eq!(plan.nodes[0].id, "users");
//! assert_eq!(plan.edges[0].topic.as_deref(), Some("quickstart.users"));
//!
//! let broken = yaml.replace("records:", "recrods:");
//! let err = validate(&broken, &Env::new()).unwrap_err();
//! let d = &err.diagnostics()[0];
//! assert_eq!((d.pos.line, d.pos.column), (7, 5));
//! assert_eq!(d.message, "unknown field `recrods`, did you mean `records`?");
//! ```
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
//!    types are dispatched on `type:` by hand (one `match`: the registry in
//!    [`spec::nodes`]) rather than with a serde tagged enum, whose buffering loses
//!    positions. A recovery loop removes each broken value and deserializes again, so
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

mod check;
mod de;
pub mod diag;
pub mod expr;
mod interp;
mod load;
pub mod plan;
pub mod schema;
pub mod spec;
pub mod values;
mod yaml;

pub use de::Spanned;
pub use diag::{Diagnostic, Pos, Severity};
pub use interp::{Env, file_references};
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

/// Validates a pipeline file's text. Pure: no I/O; variables and `${file:...}` contents
/// come from `env`. Returns the plan (with its warnings) or every diagnostic.
pub fn validate(text: &str, env: &Env) -> Result<Plan, Invalid> {
    let mut diags = Vec::new();
    let plan =
        load::load(text, env, &mut diags).and_then(|loaded| check::check(loaded, text, &mut diags));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PolicySource;
    use sluice_core::{Disposition, ErrorClass};

    const SECRETS: &str = r#"
pipeline: secrets
state: postgres://sluice:${PW}@127.0.0.1:5432/state
buffer:
  kafka:
    brokers: ["127.0.0.1:9092"]
    properties: { sasl.password: "${PW}", security.protocol: SASL_SSL }
nodes:
  api:
    type: http
    url: https://api.example.com/x
    headers: { X-Api-Key: "${PW}" }
    query: { api_key: "${PW}", page_size: "10" }
    auth:
      oauth2_client_credentials: { token_url: "https://a.example.com/t", client_id: me, client_secret: "${file:/run/secret}" }
  db:
    type: postgres
    inputs: [api]
    url: postgres://etl:${PW}@127.0.0.1/db
    table: t
    compensate: { command: { program: ./undo.sh, env: { PGPASSWORD: "${PW}" } } }
"#;

    #[test]
    fn secrets_never_print_from_the_plan() {
        let env = Env::new()
            .with_var("PW", "hunter2")
            .with_file("/run/secret", "s3cr3t\n");
        let plan = validate(SECRETS, &env).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        assert!(plan.warnings.is_empty(), "{:#?}", plan.warnings);
        let shown = [
            format!("{plan:?}"),
            plan.to_text(),
            plan.to_dot(),
            serde_json::to_string(&plan).unwrap(),
        ];
        for text in shown {
            assert!(
                !text.contains("hunter2") && !text.contains("s3cr3t"),
                "{text}"
            );
        }
        // The clear values are still there for the code that sends them.
        let crate::spec::nodes::NodeKind::Http(h) = &plan.node("api").unwrap().config else {
            panic!()
        };
        assert_eq!(h.query.get_exposed("api_key"), Some("hunter2"));
    }

    #[test]
    fn effective_policies_merge_defaults_node_and_schema_policy() {
        let text = r#"
pipeline: merge
defaults:
  retry: { max_attempts: 7, max_backoff: 10s }
  on_error: { dependency: fail, payload_too_large: split }
nodes:
  api:
    type: http
    url: https://api.example.com/x
    schema_policy: quarantine
    retry: { max_attempts: 2 }
    on_error: { invalid_request: fail }
  files: { type: file, path: x.ndjson, format: ndjson }
  db:
    type: sqlite
    inputs: [api, files]
    url: sqlite://x.db
    table: t
"#;
        let plan = validate(text, &Env::new()).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        let api = plan.node("api").unwrap();
        assert_eq!(api.retry.max_attempts, 2);
        assert_eq!(api.retry.max_backoff, crate::values::Duration::secs(10));
        let get = |n: &plan::PlannedNode, c: ErrorClass| {
            n.on_error.iter().find(|d| d.class == c).unwrap().clone()
        };
        assert_eq!(
            get(api, ErrorClass::InvalidRequest).disposition,
            Disposition::Fail
        );
        assert_eq!(
            get(api, ErrorClass::InvalidRequest).from,
            PolicySource::Node
        );
        assert_eq!(
            get(api, ErrorClass::Dependency).from,
            PolicySource::Defaults
        );
        assert_eq!(
            get(api, ErrorClass::ContractChanged).disposition,
            Disposition::Quarantine
        );
        assert_eq!(
            get(api, ErrorClass::ContractChanged).from,
            PolicySource::SchemaPolicy
        );
        // A source cannot split: the inherited `split` becomes `fail`; the sink keeps it.

        assert_eq!(
            get(api, ErrorClass::PayloadTooLarge).disposition,
            Disposition::Fail
        );
        assert_eq!(
            get(api, ErrorClass::PayloadTooLarge).from,
            PolicySource::Role
        );
        let db = plan.node("db").unwrap();
        // Nor can a source quarantine: the `file` source below inherits Sluice's
        // `invalid_request=quarantine` as `fail`; the sink keeps it.
        assert_eq!(
            get(db, ErrorClass::InvalidRequest).disposition,
            Disposition::Quarantine
        );
        let files = plan.node("files").unwrap();
        assert_eq!(
            get(files, ErrorClass::InvalidRequest).disposition,
            Disposition::Fail
        );
        assert_eq!(
            get(files, ErrorClass::InvalidRequest).from,
            PolicySource::Role
        );
        assert_eq!(
            get(db, ErrorClass::PayloadTooLarge).disposition,
            Disposition::Split
        );
        assert_eq!(db.retry.max_attempts, 7);
        assert_eq!(db.retry.policy().max_attempts, 7);
    }

    #[test]
    fn execution_order_is_topological_then_file_order() {
        let text = r#"
pipeline: order
nodes:
  sink_b: { type: file_sink, inputs: [b], path: b.ndjson, format: ndjson }
  b: { type: file, path: b.ndjson, format: ndjson, after: [setup] }
  a: { type: file, path: a.ndjson, format: ndjson }
  sink_a: { type: file_sink, inputs: [a], path: a2.ndjson, format: ndjson }
  setup: { type: command, program: ./setup.sh }
"#;
        let plan = validate(text, &Env::new()).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        let order: Vec<(&str, usize)> = plan
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.stage))
            .collect();
        assert_eq!(
            order,
            [
                ("a", 1),
                ("sink_a", 2),
                ("setup", 1),
                ("b", 2),
                ("sink_b", 3)
            ]
        );
    }

    #[test]
    fn the_pure_validation_reads_files_only_from_the_env() {
        let text = "pipeline: f\nnodes:\n  a: { type: http, url: \"${file:url.txt}\" }\n  b: { type: file_sink, inputs: [a], path: x, format: ndjson }\n";
        let err = validate(text, &Env::new()).unwrap_err();
        assert!(
            err.diagnostics()[0].message.contains("was not read"),
            "{:?}",
            err.diagnostics()
        );
        let env = Env::new().with_file("url.txt", "https://api.example.com/v1\n");
        assert!(validate(text, &env).is_ok());
    }
}
