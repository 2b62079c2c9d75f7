//! The seam between the pipeline file and the node kinds, with kinds of this test's own:
//! sluice-config knows no kind, so whatever a registry lists is read, checked, planned and
//! documented, and nothing else is.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use sluice_config::kind::schema_of;
use sluice_config::plan::PlannedNode;
use sluice_config::spec::nodes::{NodeSpec, Role};
use sluice_config::{
    BuildContext, Checker, Env, Fields, Kind, Link, NodeConfig, Registry, Spanned, validate,
};
use sluice_core::ConnectorError;
use sluice_core::node::{BoxFuture, NodeRunner};
use std::sync::Arc;

/// `type: numbers`: a source of `count` numbers.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Numbers {
    /// How many.
    count: Spanned<u32>,
}

/// `type: shelf`: a sink that keeps what it gets.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Shelf {
    /// Its label.
    label: String,
}

/// `type: ring`: a task.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Ring {
    /// Who to ring.
    who: String,
}

struct NumbersKind;
struct ShelfKind;
struct RingKind;

macro_rules! kind {
    ($kind:ident, $spec:ident, $name:literal, $role:expr) => {
        impl Kind for $kind {
            fn name(&self) -> &'static str {
                $name
            }
            fn roles(&self) -> &'static [Role] {
                &[$role]
            }
            fn read(&self, fields: &mut Fields<'_>) -> Option<Arc<dyn NodeConfig>> {
                fields.config::<$spec>()
            }
            fn schemas(&self, generator: &mut SchemaGenerator) -> Vec<Schema> {
                vec![schema_of::<$spec>(generator)]
            }
        }
    };
}

kind!(NumbersKind, Numbers, "numbers", Role::Source);
kind!(ShelfKind, Shelf, "shelf", Role::Sink);
kind!(RingKind, Ring, "ring", Role::Task);

macro_rules! config {
    ($spec:ident, $kind:ident, $role:expr, |$s:ident, $c:ident| $check:block) => {
        impl NodeConfig for $spec {
            fn kind(&self) -> &'static dyn Kind {
                &$kind
            }
            fn role(&self) -> Role {
                $role
            }
            fn check(&self, _node: &NodeSpec, $c: &mut Checker<'_>) {
                let $s = self;
                $check
            }
            fn shown(&self) -> serde_json::Value {
                serde_json::to_value(self).unwrap_or_default()
            }
            fn build<'a>(
                &'a self,
                _node: &'a PlannedNode,
                _ctx: &'a BuildContext,
            ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
                Box::pin(async { unreachable!("not built in these tests") })
            }
            fn links(&self, _node: &PlannedNode, _ctx: &BuildContext) -> Vec<Link> {
                Vec::new()
            }
        }
    };
}

config!(Numbers, NumbersKind, Role::Source, |s, c| {
    c.at_least(&s.count, 1, "count");
});
config!(Shelf, ShelfKind, Role::Sink, |s, c| {
    let _ = (s, c);
});
config!(Ring, RingKind, Role::Task, |s, c| {
    let _ = (s, c);
});

fn registry() -> Registry {
    Registry::new(vec![&NumbersKind, &ShelfKind, &RingKind])
}

const PIPELINE: &str = "pipeline: toy
nodes:
  src:
    type: numbers
    count: 3
  out:
    type: shelf
    inputs: [src]
    label: top
    compensate: { ring: { who: ops } }
";

#[test]
fn a_registry_of_its_own_is_read_checked_and_planned() {
    let plan = validate(PIPELINE, &Env::new(), &registry())
        .unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
    assert_eq!(plan.nodes[0].kind_label(), "numbers source");
    assert_eq!(plan.nodes[1].role, Role::Sink);
    let spec = plan.nodes[0]
        .config
        .downcast_ref::<Numbers>()
        .expect("numbers");
    assert_eq!(spec.count.value, 3);
    let compensate = plan.nodes[1]
        .compensate
        .as_ref()
        .expect("a compensate task");
    assert_eq!(compensate.config.kind().name(), "ring");
    let text = serde_json::to_string(&plan).unwrap();
    assert!(text.contains("\"ring\":{\"who\":\"ops\"}"), "{text}");
}

#[test]
fn its_checks_run_and_unknown_kinds_name_the_registry() {
    let zero = PIPELINE.replace("count: 3", "count: 0");
    let e = validate(&zero, &Env::new(), &registry()).unwrap_err();
    assert!(
        e.errors()
            .any(|d| d.message.contains("`count` must be at least 1")),
        "{:#?}",
        e.diagnostics()
    );
    let http = PIPELINE.replace("type: numbers", "type: http");
    let e = validate(&http, &Env::new(), &registry()).unwrap_err();
    let d = e.errors().next().expect("an error");
    assert_eq!(d.message, "unknown node type `http`");
    assert!(
        d.help
            .as_deref()
            .is_some_and(|h| h.contains("`numbers`, `shelf` or `ring`")),
        "{d:?}"
    );
    // A task kind is a `compensate`; a sink kind is not.
    let wrong = PIPELINE.replace("{ ring: { who: ops } }", "{ shelf: { label: x } }");
    let e = validate(&wrong, &Env::new(), &registry()).unwrap_err();
    assert!(
        e.errors().any(|d| d.message == "unknown value `shelf`"),
        "{:#?}",
        e.diagnostics()
    );
}

#[test]
fn the_schema_and_reference_list_exactly_the_registry() {
    let schema = sluice_config::schema::json_schema(&registry()).to_string();
    for kind in ["numbers", "shelf", "ring"] {
        assert!(schema.contains(&format!("\"const\":\"{kind}\"")), "{kind}");
    }
    assert!(!schema.contains("\"const\":\"http\""));
    let doc = sluice_config::schema::reference_markdown(&registry());
    assert!(doc.contains("`type: numbers (source)`"), "{doc}");
    assert!(doc.contains("`ring`"), "{doc}");
}

#[test]
fn nodes_written_as_a_list_or_a_scalar_are_named_as_such() {
    for (nodes, found) in [
        ("nodes:\n  - src: { type: numbers, count: 3 }\n", "a list"),
        ("nodes: [src, out]\n", "a list"),
        ("nodes: 5\n", "`5`"),
    ] {
        let text = format!("pipeline: toy\n{nodes}");
        let e = validate(&text, &Env::new(), &registry()).unwrap_err();
        let d = e.errors().next().expect("an error");
        assert_eq!(
            d.message,
            format!("`nodes` must be a mapping from id to node, found {found}"),
            "{text}"
        );
    }
    let e = validate("pipeline: toy\nnodes: {}\n", &Env::new(), &registry()).unwrap_err();
    assert_eq!(e.errors().next().unwrap().message, "`nodes` is empty");
}

/// `type: either`: reads `left` or `right`, and names a misspelling of either.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Either {
    left: Option<String>,
    right: Option<String>,
}

struct EitherKind;

impl Kind for EitherKind {
    fn name(&self) -> &'static str {
        "either"
    }
    fn roles(&self) -> &'static [Role] {
        &[Role::Source]
    }
    fn read(&self, fields: &mut Fields<'_>) -> Option<Arc<dyn NodeConfig>> {
        if fields.has("left") || fields.has("right") {
            return fields.config::<Either>();
        }
        let (written, near, pos, _) = fields.misspelt(&["left", "right"])?;
        fields.report(sluice_config::Diagnostic::error(
            pos,
            format!("unknown field `{written}`, did you mean `{near}`?"),
        ));
        None
    }
    fn schemas(&self, generator: &mut SchemaGenerator) -> Vec<Schema> {
        vec![schema_of::<Either>(generator)]
    }
}

config!(Either, EitherKind, Role::Source, |s, c| {
    let _ = (s, c);
});

#[test]
fn a_misspelt_field_that_chooses_the_shape_is_found() {
    let registry = Registry::new(vec![&EitherKind, &ShelfKind]);
    let text = "pipeline: toy\nnodes:\n  src:\n    type: either\n    rigth: x\n  out: { type: shelf, inputs: [src], label: top }\n";
    let e = validate(text, &Env::new(), &registry).unwrap_err();
    let d = e.errors().next().expect("an error");
    assert_eq!(d.message, "unknown field `rigth`, did you mean `right`?");
    assert_eq!((d.pos.line, d.pos.column), (5, 5), "{d:?}");
}
