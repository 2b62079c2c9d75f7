//! Nodes: the fields every node has, the node types, and the registry from the YAML
//! `type:` string to the struct its fields are read into.

pub mod file;
pub mod http;
pub mod sql;
pub mod task;
pub mod transform;

use crate::de::{Filter, Spanned, recover};
use crate::diag::{Diagnostic, one_of, suggest};
use crate::spec::policy::{BatchingSpec, OnErrorSpec, RetrySpec};
use crate::values::Dialect;
use crate::yaml::Node;
use file::{FileSink, FileSource};
use http::{HttpSink, HttpSource};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Deserializer, IgnoredAny};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use sql::{SqlSink, SqlSource};
use std::borrow::Cow;
use std::fmt;
use task::{CommandTask, SqlTask};
use transform::TransformSpec;

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
    /// Batch limits (else `defaults.batching`). Not for tasks.
    pub batching: Option<Spanned<BatchingSpec>>,
    /// Disposition per error class (else `defaults.on_error`, then Sluice's defaults).
    /// Sources and tasks only `retry` or `fail` (an HTTP source's malformed records: see
    /// `bad_records`).
    #[serde(default)]
    #[schemars(example = &serde_json::json!({"invalid_request": "quarantine", "dependency": "retry"}))]
    pub on_error: OnErrorSpec,
    /// A task run if a later node fails after this one completed: compensations run in
    /// reverse order of completion (a saga).
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

/// A task: a node type that does something once, also usable as `compensate`.
///
/// ```yaml
/// compensate: { command: { program: ./scripts/rollback.sh, args: ["{{run_id}}"] } }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskSpec {
    /// Statements on a database.
    SqlTask(SqlTask),
    /// A program.
    Command(CommandTask),
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

/// The node types: the values of `type:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeType {
    /// An HTTP API source.
    Http,
    /// An HTTP endpoint sink.
    HttpSink,
    /// A PostgreSQL source (`query`) or sink (`table`).
    Postgres,
    /// A MySQL/MariaDB source (`query`) or sink (`table`).
    Mysql,
    /// A SQLite source (`query`) or sink (`table`).
    Sqlite,
    /// A file source.
    File,
    /// A file sink.
    FileSink,
    /// Declarative operations on batches.
    Transform,
    /// Statements on a database, once.
    SqlTask,
    /// A program, once.
    Command,
}

impl NodeType {
    /// Every type, in the order of the documentation.
    pub const ALL: [NodeType; 10] = [
        NodeType::Http,
        NodeType::HttpSink,
        NodeType::Postgres,
        NodeType::Mysql,
        NodeType::Sqlite,
        NodeType::File,
        NodeType::FileSink,
        NodeType::Transform,
        NodeType::SqlTask,
        NodeType::Command,
    ];

    /// The `type:` string.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Http => "http",
            NodeType::HttpSink => "http_sink",
            NodeType::Postgres => "postgres",
            NodeType::Mysql => "mysql",
            NodeType::Sqlite => "sqlite",
            NodeType::File => "file",
            NodeType::FileSink => "file_sink",
            NodeType::Transform => "transform",
            NodeType::SqlTask => "sql_task",
            NodeType::Command => "command",
        }
    }

    /// The type named `name`.
    pub fn from_name(name: &str) -> Option<NodeType> {
        NodeType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    fn dialect(self) -> Option<Dialect> {
        match self {
            NodeType::Postgres => Some(Dialect::Postgres),
            NodeType::Mysql => Some(Dialect::Mysql),
            NodeType::Sqlite => Some(Dialect::Sqlite),
            _ => None,
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's type-specific configuration.
// A spec is built once per load and held by reference: boxing variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `http`.
    Http(HttpSource),
    /// `http_sink`.
    HttpSink(HttpSink),
    /// `postgres`/`mysql`/`sqlite` with `query`.
    SqlSource(SqlSource),
    /// `postgres`/`mysql`/`sqlite` with `table`.
    SqlSink(SqlSink),
    /// `file`.
    File(FileSource),
    /// `file_sink`.
    FileSink(FileSink),
    /// `transform`.
    Transform(TransformSpec),
    /// `sql_task`.
    SqlTask(SqlTask),
    /// `command`.
    Command(CommandTask),
}

/// Each kind as its spec serializes; the HTTP kinds with their `public:` list applied
/// (every other header, query and body value prints as `***`).
impl Serialize for NodeKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        match self {
            NodeKind::Http(x) => x.shown().map_err(S::Error::custom)?.serialize(s),
            NodeKind::HttpSink(x) => x.shown().map_err(S::Error::custom)?.serialize(s),
            NodeKind::SqlSource(x) => x.serialize(s),
            NodeKind::SqlSink(x) => x.serialize(s),
            NodeKind::File(x) => x.serialize(s),
            NodeKind::FileSink(x) => x.serialize(s),
            NodeKind::Transform(x) => x.serialize(s),
            NodeKind::SqlTask(x) => x.serialize(s),
            NodeKind::Command(x) => x.serialize(s),
        }
    }
}

impl NodeKind {
    /// What the node does with data.
    pub fn role(&self) -> Role {
        match self {
            NodeKind::Http(_) | NodeKind::SqlSource(_) | NodeKind::File(_) => Role::Source,
            NodeKind::Transform(_) => Role::Transform,
            NodeKind::HttpSink(_) | NodeKind::SqlSink(_) | NodeKind::FileSink(_) => Role::Sink,
            NodeKind::SqlTask(_) | NodeKind::Command(_) => Role::Task,
        }
    }
}

/// The registry: which struct each `type:` is read into. Every node type is here, in one
/// `match`, and nowhere else (the JSON Schema comes from [`kind_schemas`], a `match` over
/// the same enum, so the compiler keeps the two complete).
fn read_kind(
    ty: NodeType,
    node: &Node,
    lines: &[&str],
    diags: &mut Vec<Diagnostic>,
) -> Option<NodeKind> {
    fn read<T: serde::de::DeserializeOwned>(
        node: &Node,
        lines: &[&str],
        diags: &mut Vec<Diagnostic>,
    ) -> Option<T> {
        recover::<T>(node, lines, Filter::Except(COMMON_KEYS), COMMON_KEYS, diags)
    }
    match ty {
        NodeType::Http => read(node, lines, diags).map(NodeKind::Http),
        NodeType::HttpSink => read(node, lines, diags).map(NodeKind::HttpSink),
        NodeType::Postgres | NodeType::Mysql | NodeType::Sqlite => {
            let dialect = ty.dialect().unwrap_or_default();
            match (node.get("query"), node.get("table")) {
                (Some(_), None) => read::<SqlSource>(node, lines, diags).map(|mut s| {
                    s.dialect = dialect;
                    NodeKind::SqlSource(s)
                }),
                (None, Some(_)) => read::<SqlSink>(node, lines, diags).map(|mut s| {
                    s.dialect = dialect;
                    NodeKind::SqlSink(s)
                }),
                (Some(_), Some(table)) => {
                    let (pos, width) = table.label();
                    diags.push(
                        Diagnostic::error(pos, format!("a `{ty}` node reads (`query`) or writes (`table`), not both"))
                            .with_width(width)
                            .with_help("make two nodes: one with `query` (a source), one with `table` and `inputs` (a sink)"),
                    );
                    None
                }
                (None, None) => {
                    let (pos, width) = node.label();
                    diags.push(
                        Diagnostic::error(pos, format!("a `{ty}` node needs `query` (to read) or `table` (to write)"))
                            .with_width(width)
                            .with_help("a source has `query: SELECT ...`; a sink has `table: name` and `inputs: [...]`"),
                    );
                    None
                }
            }
        }
        NodeType::File => read(node, lines, diags).map(NodeKind::File),
        NodeType::FileSink => read(node, lines, diags).map(NodeKind::FileSink),
        NodeType::Transform => read(node, lines, diags).map(NodeKind::Transform),
        NodeType::SqlTask => read(node, lines, diags).map(NodeKind::SqlTask),
        NodeType::Command => read(node, lines, diags).map(NodeKind::Command),
    }
}

/// The JSON Schemas of a type's fields: one per role the type can take.
fn kind_schemas(ty: NodeType, generator: &mut SchemaGenerator) -> Vec<(String, Schema)> {
    let one = |label: &str, schema: Schema| vec![(label.to_owned(), schema)];
    match ty {
        NodeType::Http => one("source", HttpSource::json_schema(generator)),
        NodeType::HttpSink => one("sink", HttpSink::json_schema(generator)),
        NodeType::Postgres | NodeType::Mysql | NodeType::Sqlite => vec![
            ("source".to_owned(), SqlSource::json_schema(generator)),
            ("sink".to_owned(), SqlSink::json_schema(generator)),
        ],
        NodeType::File => one("source", FileSource::json_schema(generator)),
        NodeType::FileSink => one("sink", FileSink::json_schema(generator)),
        NodeType::Transform => one("transform", TransformSpec::json_schema(generator)),
        NodeType::SqlTask => one("task", SqlTask::json_schema(generator)),
        NodeType::Command => one("task", CommandTask::json_schema(generator)),
    }
}

/// A node: its id, type, common fields and type-specific fields.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// The id (the key in `nodes:`), with its position.
    pub id: Spanned<String>,
    /// The type.
    pub node_type: NodeType,
    /// The fields every node has.
    pub common: NodeCommon,
    /// The type's fields.
    pub kind: NodeKind,
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
    let types: Vec<&str> = NodeType::ALL.iter().map(|t| t.as_str()).collect();
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
    let Some(ty) = NodeType::from_name(&type_name) else {
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
    let common_fields = &COMMON_KEYS[1..];
    let common = recover::<NodeCommon>(node, lines, Filter::Only(common_fields), &[], diags)
        .unwrap_or_default();
    let kind = read_kind(ty, node, lines, diags);
    let ok = diags.len() == before;
    ReadNode {
        spec: kind.map(|kind| NodeSpec {
            id,
            node_type: ty,
            common,
            kind,
        }),
        ok,
    }
}

impl Serialize for Nodes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(rename = "type")]
            ty: NodeType,
            #[serde(flatten)]
            common: &'a NodeCommon,
            #[serde(flatten)]
            kind: &'a NodeKind,
        }
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for n in &self.0 {
            map.serialize_entry(
                &n.id.value,
                &Out {
                    ty: n.node_type,
                    common: &n.common,
                    kind: &n.kind,
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
        let node = generator.subschema_for::<AnyNode>();
        json_schema!({
            "type": "object",
            "description": "The nodes, by id.",
            "propertyNames": {"pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
            "minProperties": 1,
            "additionalProperties": node,
        })
    }
}

/// The schema of one node: one alternative per type (and role).
struct AnyNode;

impl JsonSchema for AnyNode {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Node")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let common = NodeCommon::json_schema(generator);
        let common_props = common.get("properties").cloned().unwrap_or_default();
        let mut alternatives = Vec::new();
        for ty in NodeType::ALL {
            for (role, kind) in kind_schemas(ty, generator) {
                let mut properties = serde_json::Map::new();
                properties.insert(
                    "type".to_owned(),
                    serde_json::json!({"const": ty.as_str(), "description": "The node type."}),
                );
                if let Some(props) = common_props.as_object() {
                    properties.extend(props.clone());
                }
                if let Some(props) = kind.get("properties").and_then(|p| p.as_object()) {
                    properties.extend(props.clone());
                }
                let mut required = vec![serde_json::Value::from("type")];
                if let Some(r) = kind.get("required").and_then(|r| r.as_array()) {
                    required.extend(r.iter().cloned());
                }
                let description = kind.get("description").cloned().unwrap_or_default();
                alternatives.push(serde_json::json!({
                    "title": format!("{} ({role})", ty.as_str()),
                    "description": description,
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": false,
                }));
            }
        }
        json_schema!({
            "description": "A node: `type` and the type's fields, plus the fields every node has.",
            "oneOf": alternatives,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::de::fields_of;

    #[test]
    fn common_keys_match_the_struct() {
        assert_eq!(&COMMON_KEYS[1..], fields_of::<NodeCommon>());
    }

    #[test]
    fn every_type_name_round_trips() {
        for t in NodeType::ALL {
            assert_eq!(NodeType::from_name(t.as_str()), Some(t));
        }
    }
}
