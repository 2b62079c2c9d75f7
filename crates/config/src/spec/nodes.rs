//! Nodes: the fields every node has, and how a node's own fields are handed to its kind
//! (see [`crate::kind`]): this module names no kind.

use crate::de::{Filter, Spanned, recover};
use crate::diag::{Diagnostic, one_of, suggest};
use crate::kind::{Fields, NodeConfig, Registry};
use crate::spec::policy::{BatchingSpec, OnErrorSpec, RetrySpec};
use crate::yaml::Node;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Deserializer, IgnoredAny};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Fields every node has, beside `type` and the fields of its type.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeCommon {
    /// What the node is for (shown by `sluice plan`).
    #[schemars(example = &"Orders changed since the last run")]
    pub description: Option<String>,
    /// Data edges: the nodes whose batches this node reads. Sources and tasks take none;
    /// transforms and sinks at least one.
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["orders_api"]))]
    pub inputs: Vec<Spanned<String>>,
    /// Ordering-only edges: this node starts once these nodes succeeded, without reading
    /// their data (e.g. a source after a `sql_task` that prepares a table).
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["prepare_staging"]))]
    pub after: Vec<Spanned<String>>,
    /// Retry policy (else `defaults.retry`).
    pub retry: Option<Spanned<RetrySpec>>,
    /// Batch limits of a source (else `defaults.batching`). Only sources cut batches.
    pub batching: Option<Spanned<BatchingSpec>>,
    /// Disposition per error class (else `defaults.on_error`, then Sluice's defaults).
    /// Sources and tasks only `retry` or `fail` (an HTTP source's malformed records: see
    /// `bad_records`).
    #[serde(default)]
    #[schemars(example = &serde_json::json!({"invalid_request": "quarantine", "dependency": "retry"}))]
    pub on_error: OnErrorSpec,
    /// A task run if a later node fails after this one completed: compensations run in
    /// reverse order of completion (a saga).
    // Read by the loader through the registry (`read_compensate`), not by serde.
    #[serde(default, deserialize_with = "read_later_task")]
    #[schemars(schema_with = "compensate_schema")]
    #[schemars(example = &serde_json::json!({"sql_task": {"url": "${WAREHOUSE_URL}", "sql": "DELETE FROM staging.orders WHERE run_id = '{{run_id}}'"}}))]
    pub compensate: Option<Spanned<TaskSpec>>,
}

/// The keys of a node's mapping that are not its type's own: `type` and the common fields.
pub(crate) const COMMON_KEYS: &[&str] = &[
    "type",
    "description",
    "inputs",
    "after",
    "retry",
    "batching",
    "on_error",
    "compensate",
];

/// The fields serde reads of [`NodeCommon`]: all but `compensate`.
const SERDE_COMMON_KEYS: &[&str] = &[
    "description",
    "inputs",
    "after",
    "retry",
    "batching",
    "on_error",
];

fn read_later_task<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<TaskSpec>>, D::Error> {
    IgnoredAny::deserialize(d)?;
    Ok(None)
}

fn compensate_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"$ref": "#/$defs/TaskSpec"})
}

/// A task used as `compensate`: `{<task type>: {<its fields>}}`.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// The task's spec (its kind's role is `task`).
    pub config: Arc<dyn NodeConfig>,
}

impl PartialEq for TaskSpec {
    fn eq(&self, other: &Self) -> bool {
        self.config.kind().name() == other.config.kind().name()
            && self.config.shown() == other.config.shown()
    }
}

impl Serialize for TaskSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.config.kind().name(), &self.config.shown())?;
        map.end()
    }
}

/// What a node does with data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads from outside; takes no inputs; produces batches.
    Source,
    /// Reads batches, produces batches.
    Transform,
    /// Reads batches, writes them outside; produces none.
    Sink,
    /// Runs once; no data in or out.
    Task,
}

impl Role {
    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Transform => "transform",
            Role::Sink => "sink",
            Role::Task => "task",
        }
    }

    /// Whether the node produces batches (may be a data input).
    pub fn produces_data(self) -> bool {
        matches!(self, Role::Source | Role::Transform)
    }

    /// Whether the node reads batches (must have inputs).
    pub fn consumes_data(self) -> bool {
        matches!(self, Role::Transform | Role::Sink)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node: its id, type, common fields and type-specific fields.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The id (the key in `nodes:`), with its position.
    pub id: Spanned<String>,
    /// The `type:` value.
    pub node_type: &'static str,
    /// The fields every node has.
    pub common: NodeCommon,
    /// The type's fields, read and checked by its kind.
    pub kind: Arc<dyn NodeConfig>,
}

impl PartialEq for NodeSpec {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.node_type == other.node_type
            && self.common == other.common
            && self.kind.shown() == other.kind.shown()
    }
}

/// The `nodes:` mapping, in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Nodes(pub Vec<NodeSpec>);

impl Nodes {
    /// The node with this id.
    pub fn get(&self, id: &str) -> Option<&NodeSpec> {
        self.0.iter().find(|n| n.id.value == id)
    }

    /// The nodes in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, NodeSpec> {
        self.0.iter()
    }
}

/// `nodes:` is read by the loader (node by node, dispatching on `type:`), not by serde:
/// while the rest of the file is deserialized, it is skipped.
pub(crate) fn read_later<'de, D: Deserializer<'de>>(d: D) -> Result<Nodes, D::Error> {
    IgnoredAny::deserialize(d)?;
    Ok(Nodes::default())
}

/// Reads one node (`id: { type: ..., ... }`): the common fields and, through the
/// registry, the type's fields. `None` when its type is unknown or its fields could not be
/// read at all; `ok` is false when any error was reported for it.
pub(crate) struct ReadNode {
    pub(crate) spec: Option<NodeSpec>,
    pub(crate) ok: bool,
}

pub(crate) fn read_node(
    registry: &Registry,
    id: Spanned<String>,
    node: &Node,
    lines: &[&str],
    diags: &mut Vec<Diagnostic>,
) -> ReadNode {
    let before = diags.len();
    let failed = |diags: &mut Vec<Diagnostic>, d: Diagnostic| {
        diags.push(d);
        ReadNode {
            spec: None,
            ok: false,
        }
    };
    if !matches!(node.kind, crate::yaml::Kind::Map(_)) {
        return failed(
            diags,
            Diagnostic::error(
                node.pos,
                format!(
                    "node `{}` must be a mapping, found {}",
                    id.value,
                    node.describe()
                ),
            )
            .with_width(node.width)
            .with_help("write the node's fields under its id, starting with `type:`"),
        );
    }
    let types = registry.names();
    let Some(type_node) = node.get("type") else {
        return failed(
            diags,
            Diagnostic::error(id.pos, format!("node `{}` has no `type`", id.value))
                .with_width(id.width)
                .with_help(format!("add `type:` with one of {}", one_of(&types))),
        );
    };
    let Some(type_name) = type_node
        .scalar()
        .filter(|s| !s.is_null())
        .map(|s| s.text.clone())
    else {
        return failed(
            diags,
            Diagnostic::error(
                type_node.pos,
                format!("expected a node type, found {}", type_node.describe()),
            )
            .with_width(type_node.width)
            .with_help(format!("`type` is one of {}", one_of(&types))),
        );
    };
    let Some(ty) = registry.get(&type_name) else {
        let message = match suggest(&type_name, types.iter().copied()) {
            Some(near) => format!("unknown node type `{type_name}`, did you mean `{near}`?"),
            None => format!("unknown node type `{type_name}`"),
        };
        return failed(
            diags,
            Diagnostic::error(type_node.pos, message)
                .with_width(type_node.width)
                .with_help(format!("the node types are {}", one_of(&types))),
        );
    };
    let mut common =
        recover::<NodeCommon>(node, lines, Filter::Only(SERDE_COMMON_KEYS), &[], diags)
            .unwrap_or_default();
    common.compensate = node
        .get("compensate")
        .and_then(|c| read_compensate(registry, c, lines, diags));
    let kind = ty.read(&mut Fields {
        node,
        lines,
        diags,
        filter: Filter::Except(COMMON_KEYS),
        extra: COMMON_KEYS,
    });
    let ok = diags.len() == before;
    ReadNode {
        spec: kind.map(|kind| NodeSpec {
            id,
            node_type: ty.name(),
            common,
            kind,
        }),
        ok,
    }
}

/// Reads `compensate: {<task type>: {...}}` through the task kinds of the registry.
fn read_compensate(
    registry: &Registry,
    node: &Node,
    lines: &[&str],
    diags: &mut Vec<Diagnostic>,
) -> Option<Spanned<TaskSpec>> {
    let tasks: Vec<&str> = registry
        .iter()
        .filter(|k| k.roles() == [Role::Task])
        .map(|k| k.name())
        .collect();
    let entries = match &node.kind {
        crate::yaml::Kind::Map(_) if node.entries().len() == 1 => node.entries(),
        _ => {
            diags.push(
                Diagnostic::error(
                    node.pos,
                    format!("expected one task, found {}", node.describe()),
                )
                .with_width(node.width)
                .with_help(format!(
                    "write `compensate: {{ <task>: {{ ... }} }}` with <task> one of {}",
                    one_of(&tasks)
                )),
            );
            return None;
        }
    };
    let entry = &entries[0];
    let name = entry.name();
    let Some(kind) = registry.get(name).filter(|k| tasks.contains(&k.name())) else {
        diags.push(
            Diagnostic::error(entry.key.pos, format!("unknown value `{name}`"))
                .with_width(entry.key.width)
                .with_help(format!("expected {}", one_of(&tasks))),
        );
        return None;
    };
    let config = kind.read(&mut Fields {
        node: &entry.value,
        lines,
        diags,
        filter: Filter::All,
        extra: &[],
    })?;
    Some(Spanned {
        value: TaskSpec { config },
        pos: node.pos,
        width: node.width,
        interpolated: false,
    })
}

impl Serialize for Nodes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "type")]
            ty: &'a str,
            #[serde(flatten)]
            common: &'a NodeCommon,
            #[serde(flatten)]
            kind: serde_json::Value,
        }
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for n in &self.0 {
            map.serialize_entry(
                &n.id.value,
                &Out {
                    ty: n.node_type,
                    common: &n.common,
                    kind: n.kind.shown(),
                },
            )?;
        }
        map.end()
    }
}

impl JsonSchema for Nodes {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Nodes")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let node = json_schema!({"$ref": "#/$defs/Node"});
        let _ = generator;
        json_schema!({
            "type": "object",
            "description": "The nodes, by id.",
            "propertyNames": {"pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
            "minProperties": 1,
            "additionalProperties": node,
        })
    }
}

/// The schema of one node: one alternative per type and role, each with the common
/// fields (`Node` in the JSON Schema), and of a `compensate` task (`TaskSpec`).
pub(crate) fn node_schemas(
    registry: &Registry,
    generator: &mut SchemaGenerator,
) -> (serde_json::Value, serde_json::Value) {
    let common = NodeCommon::json_schema(generator);
    let mut common_props = common.get("properties").cloned().unwrap_or_default();
    // `compensate` is read by the loader: serde's `default` of it means nothing to users.
    if let Some(c) = common_props
        .get_mut("compensate")
        .and_then(|c| c.as_object_mut())
    {
        c.remove("default");
    }
    let mut alternatives = Vec::new();
    let mut tasks = Vec::new();
    for kind in registry.iter() {
        for (role, schema) in kind.roles().iter().zip(kind.schemas(generator)) {
            let mut properties = serde_json::Map::new();
            properties.insert(
                "type".to_owned(),
                serde_json::json!({"const": kind.name(), "description": "The node type."}),
            );
            if let Some(props) = common_props.as_object() {
                properties.extend(props.clone());
            }
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                properties.extend(props.clone());
            }
            let mut required = vec![serde_json::Value::from("type")];
            if let Some(r) = schema.get("required").and_then(|r| r.as_array()) {
                required.extend(r.iter().cloned());
            }
            let description = schema.get("description").cloned().unwrap_or_default();
            alternatives.push(serde_json::json!({
                "title": format!("{} ({role})", kind.name()),
                "description": description,
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            }));
            if kind.roles() == [Role::Task] {
                let name = schema
                    .get("title")
                    .and_then(|t| t.as_str())
                    .map_or_else(|| kind.name().to_owned(), str::to_owned);
                let reference = serde_json::json!({"$ref": format!("#/$defs/{name}")});
                generator.definitions_mut().insert(name, schema.to_value());
                let mut one = serde_json::Map::new();
                one.insert(kind.name().to_owned(), reference);
                tasks.push(serde_json::json!({
                    "description": description,
                    "type": "object",
                    "properties": one,
                    "required": [kind.name()],
                    "additionalProperties": false,
                }));
            }
        }
    }
    let node = serde_json::json!({
        "description": "A node: `type` and the type's fields, plus the fields every node has.",
        "oneOf": alternatives,
    });
    let task = serde_json::json!({
        "description": "A task: a node type that does something once, also usable as `compensate`.\n\n```yaml\ncompensate: { command: { program: ./scripts/rollback.sh, args: [\"{{run_id}}\"] } }\n```",
        "oneOf": tasks,
    });
    (node, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::de::fields_of;

    #[test]
    fn common_keys_match_the_struct() {
        assert_eq!(&COMMON_KEYS[1..], fields_of::<NodeCommon>());
        assert_eq!(&COMMON_KEYS[1..COMMON_KEYS.len() - 1], SERDE_COMMON_KEYS);
    }
}
