//! `type: transform`: the node kind of declarative operations on batches.

use super::CompiledTransform;
use super::spec::{TransformOp, TransformSpec};
use sluice_config::kind::KindOf;
use sluice_config::plan::PlannedNode;
use sluice_config::spec::nodes::{NodeSpec, Role};
use sluice_config::{BuildContext, Checker, Kind, Link, NodeConfig, Spanned};
use sluice_core::ConnectorError;
use sluice_core::node::{BoxFuture, NodeRunner};
use std::collections::BTreeMap;

/// `type: transform`.
pub static TRANSFORM: KindOf<TransformSpec> =
    KindOf::new("transform", Role::Transform, "transform");

impl NodeConfig for TransformSpec {
    fn kind(&self) -> &'static dyn Kind {
        &TRANSFORM
    }

    fn column_before(&self, name: &str) -> Option<String> {
        let mut name = name.to_owned();
        for op in self.ops.value.iter().rev() {
            match &op.value {
                TransformOp::Rename(map) => {
                    if let Some((old, _)) = map.0.iter().find(|(_, new)| new.value == name) {
                        name = old.value.clone();
                    }
                }
                TransformOp::Add(add) if add.column.value == name => return None,
                TransformOp::Flatten(f) => {
                    // `customer_id` from the struct `customer`: no input column of its own.
                    let parent = f.column.as_ref().map(|c| c.value.as_str());
                    if parent.is_some_and(|p| name.starts_with(&format!("{p}{}", f.separator))) {
                        return None;
                    }
                }
                _ => {}
            }
        }
        Some(name)
    }

    fn role(&self) -> Role {
        Role::Transform
    }

    fn check(&self, _node: &NodeSpec, c: &mut Checker<'_>) {
        check_ops(c, self);
    }

    fn shown(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn build<'a>(
        &'a self,
        _node: &'a PlannedNode,
        _ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
        Box::pin(async move {
            let transform = CompiledTransform::compile(self, std::time::SystemTime::now())?;
            Ok(NodeRunner::Transform(Box::new(transform)))
        })
    }

    fn links(&self, _node: &PlannedNode, _ctx: &BuildContext) -> Vec<Link> {
        // Pure computation: nothing outside to depend on.
        Vec::new()
    }
}

fn check_ops(c: &mut Checker<'_>, t: &TransformSpec) {
    if t.ops.value.is_empty() {
        c.error_at(
            &t.ops,
            "`ops` is empty",
            "list at least one operation, e.g. `- select: [id, name]`",
        );
    }
    let mut renamed: BTreeMap<&str, &Spanned<String>> = BTreeMap::new();
    for op in &t.ops.value {
        match &op.value {
            TransformOp::Select(cols) | TransformOp::Drop(cols) => {
                if cols.is_empty() {
                    c.error_at(
                        op,
                        format!("`{}` lists no column", op.value.name()),
                        "list the columns, e.g. `[id, name]`",
                    );
                }
                c.unique(cols, "column");
            }
            TransformOp::Rename(map) => {
                for (from, to) in map.iter() {
                    if to.value.trim().is_empty() {
                        c.error_at(
                            to,
                            format!("`{}` is renamed to nothing", from.value),
                            "write the new name",
                        );
                    }
                    if let Some(first) = renamed.insert(&to.value, from) {
                        c.error_at(
                            to,
                            format!(
                                "`{}` and `{}` are both renamed to `{}`",
                                first.value, from.value, to.value
                            ),
                            "two columns cannot take the same name",
                        );
                    }
                }
            }
            TransformOp::Cast(map) if map.is_empty() => c.error_at(
                op,
                "`cast` lists no column",
                "write `cast: { column: type }`",
            ),
            TransformOp::Cast(_) => {}
            TransformOp::Filter(e) => {
                if !e.value.is_predicate() {
                    c.error_at(e, format!("`{}` is not a condition", e.value), "a filter keeps the records for which it is true: compare something, e.g. `amount > 0`");
                }
            }
            TransformOp::Add(a) => {
                if a.column.value.trim().is_empty() {
                    c.error_at(&a.column, "`column` is empty", "name the new column");
                }
                match (&a.value, &a.expr) {
                    (Some(_), Some(e)) => {
                        c.error_at(e, "`add` takes `value` or `expr`, not both", "keep one")
                    }
                    (None, None) => c.error_at(
                        &a.column,
                        "`add` needs `value` (a constant) or `expr` (computed per record)",
                        "e.g. `add: { column: source, value: shop }`",
                    ),
                    _ => {}
                }
            }
            TransformOp::Flatten(f) => {
                if f.separator.is_empty() {
                    c.error_at(op, "`separator` is empty", "use `_` or `.`");
                }
            }
        }
    }
}
