//! From text to the typed spec: parse the tree, interpolate, read the top-level sections
//! through serde, and read each node through the registry.

use crate::de::{Filter, Spanned, recover};
use crate::diag::{Diagnostic, Pos};
use crate::interp::{Env, interpolate};
use crate::spec::PipelineSpec;
use crate::spec::nodes::{Nodes, read_node};
use crate::values::check_name;
use crate::yaml::{self, Kind};
use std::collections::BTreeSet;

/// What the loader could read, for the checks that follow.
pub(crate) struct Loaded {
    /// The spec, when its top-level sections could be read. Its nodes are those that could
    /// be read.
    pub(crate) spec: Option<PipelineSpec>,
    /// Every node id written in the file (read or not), so that references to a node that
    /// had errors are not reported as unknown as well.
    pub(crate) all_ids: BTreeSet<String>,
    /// Node ids that were read without any error.
    pub(crate) clean: BTreeSet<String>,
}

pub(crate) fn load(
    text: &str,
    env: &Env,
    registry: &crate::kind::Registry,
    diags: &mut Vec<Diagnostic>,
) -> Option<Loaded> {
    let mut tree = yaml::parse(text, diags)?;
    interpolate(&mut tree, env, text, diags);
    let lines: Vec<&str> = text.lines().collect();
    if !matches!(tree.kind, Kind::Map(_)) {
        diags.push(
            Diagnostic::error(tree.pos, format!("a pipeline is a mapping, found {}", tree.describe()))
                .with_help("start with `pipeline: <name>` and a `nodes:` mapping; see pipelines/quickstart.yaml"),
        );
        return None;
    }
    let spec = recover::<PipelineSpec>(&tree, &lines, Filter::All, &[], diags);

    let mut loaded = Loaded {
        spec: None,
        all_ids: BTreeSet::new(),
        clean: BTreeSet::new(),
    };
    let mut nodes = Nodes::default();
    match tree.get("nodes") {
        None => diags.push(
            Diagnostic::error(Pos::START, "the pipeline has no `nodes`").with_help(
                "add `nodes:` with at least a source and a sink; see pipelines/quickstart.yaml",
            ),
        ),
        Some(n)
            if matches!(&n.kind, Kind::Scalar(s) if s.is_null())
                || matches!(&n.kind, Kind::Map(entries) if entries.is_empty()) =>
        {
            let (pos, width) = n.label();
            diags.push(
                Diagnostic::error(pos, "`nodes` is empty")
                    .with_width(width)
                    .with_help("add at least a source and a sink; see pipelines/quickstart.yaml"),
            );
        }
        Some(n) if !matches!(n.kind, Kind::Map(_)) => {
            diags.push(
                Diagnostic::error(
                    n.pos,
                    format!(
                        "`nodes` must be a mapping from id to node, found {}",
                        n.describe()
                    ),
                )
                .with_width(n.width)
                .with_help("write `nodes:` then each node as `id: { type: ..., ... }`"),
            );
        }
        Some(n) => {
            for entry in n.entries() {
                let id_text = entry.name().to_owned();
                let id = Spanned {
                    value: id_text.clone(),
                    pos: entry.key.pos,
                    width: entry.key.width,
                    interpolated: false,
                };
                let mut ok = true;
                if let Err(e) = check_name(&id_text, "node id") {
                    diags.push(
                        Diagnostic::error(id.pos, e.message)
                            .with_width(id.width)
                            .with_help(e.help),
                    );
                    ok = false;
                }
                loaded.all_ids.insert(id_text.clone());
                let read = read_node(registry, id, &entry.value, &lines, diags);
                if read.ok && ok {
                    loaded.clean.insert(id_text);
                }
                if let Some(spec) = read.spec {
                    nodes.0.push(spec);
                }
            }
        }
    }
    loaded.spec = spec.map(|mut s| {
        s.nodes = nodes;
        s
    });
    Some(loaded)
}
