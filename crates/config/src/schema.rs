//! The JSON Schema of the pipeline format (for editors and `sluice schema`), and the field
//! reference of `docs/pipeline-reference.md`, generated from it so that it cannot drift
//! from the code.

use crate::kind::Registry;
use crate::spec::PipelineSpec;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;

/// The JSON Schema (draft 2020-12) of a pipeline file whose nodes are of the kinds of
/// `registry`.
pub fn json_schema(registry: &Registry) -> Value {
    let mut generator = schemars::SchemaGenerator::default();
    let (node, task) = crate::spec::nodes::node_schemas(registry, &mut generator);
    let schema = generator.into_root_schema_for::<PipelineSpec>();
    let mut value = schema.to_value();
    if let Some(defs) = value.get_mut("$defs").and_then(Value::as_object_mut) {
        defs.insert("Node".to_owned(), node);
        defs.insert("TaskSpec".to_owned(), task);
    }
    // `nodes` is read by the loader, not serde, so serde calls it optional: it is not.
    if let Some(nodes) = value
        .pointer_mut("/properties/nodes")
        .and_then(Value::as_object_mut)
    {
        nodes.remove("default");
    }
    if let Some(Value::Array(required)) = value.get_mut("required") {
        required.push(Value::from("nodes"));
    }
    value
}

/// Every property name that appears anywhere in the schema.
pub fn property_names(schema: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("properties", Value::Object(props)) => {
                            for (name, schema) in props {
                                out.insert(name.clone());
                                walk(schema, out);
                            }
                        }
                        ("default" | "examples" | "const" | "enum", _) => {}
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(schema, &mut out);
    out
}

/// The markers between which `docs/pipeline-reference.md` holds the generated part.
pub const BEGIN_MARKER: &str =
    "<!-- BEGIN GENERATED REFERENCE: `sluice schema --markdown`; do not edit by hand -->";
/// See [`BEGIN_MARKER`].
pub const END_MARKER: &str = "<!-- END GENERATED REFERENCE -->";

struct Doc<'a> {
    defs: &'a Map<String, Value>,
    out: String,
    queue: VecDeque<String>,
    seen: BTreeSet<String>,
}

fn anchor(name: &str) -> String {
    name.to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
}

fn def_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/$defs/")
}

fn one_line(text: &str) -> String {
    text.replace("\n\n", "<br>")
        .replace('\n', " ")
        .replace('|', "\\|")
}

fn code(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("`{}`", text.replace('|', "\\|").replace('`', "'"))
}

impl Doc<'_> {
    fn link(&mut self, name: &str) -> String {
        if self.seen.insert(name.to_owned()) {
            self.queue.push_back(name.to_owned());
        }
        format!("[{name}](#{})", anchor(name))
    }

    fn type_of(&mut self, s: &Value) -> String {
        let Some(map) = s.as_object() else {
            return "any value".to_owned();
        };
        if let Some(r) = map.get("$ref").and_then(Value::as_str).and_then(def_name) {
            return self.link(r);
        }
        if let Some(c) = map.get("const") {
            return code(c);
        }
        if let Some(Value::Array(values)) = map.get("enum") {
            let names: Vec<String> = values.iter().map(code).collect();
            return format!("one of {}", names.join(", "));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(alts)) = map.get(key) {
                let mut parts = Vec::new();
                for alt in alts {
                    if alt.get("type").and_then(Value::as_str) == Some("null") {
                        continue;
                    }
                    parts.push(self.type_of(alt));
                }
                return parts.join(" or ");
            }
        }
        if let Some(format) = map.get("format").and_then(Value::as_str) {
            let known = match format {
                "duration" => Some("duration"),
                "byte-size" => Some("size"),
                "secret" => Some("secret string"),
                "uri" => Some("URL"),
                "cron" => Some("cron expression"),
                "timezone" => Some("time zone"),
                "json-path" => Some("JSON path"),
                "expression" => Some("expression"),
                "name" => Some("name"),
                _ => None,
            };
            if let Some(k) = known {
                return k.to_owned();
            }
        }
        let types: Vec<&str> = match map.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            _ => vec![],
        };
        match types.first().copied() {
            Some("array") => {
                let items = map.get("items").cloned().unwrap_or(Value::Null);
                format!("list of {}", self.type_of(&items))
            }
            Some("object") => match map.get("additionalProperties") {
                Some(v @ Value::Object(_)) => format!("map of {}", self.type_of(v)),
                _ => "mapping".to_owned(),
            },
            Some("integer") => "integer".to_owned(),
            Some("number") => "number".to_owned(),
            Some("boolean") => "boolean".to_owned(),
            Some("string") => {
                if map.get("format").and_then(Value::as_str) == Some("char") {
                    "character".to_owned()
                } else {
                    "string".to_owned()
                }
            }
            _ => "any value".to_owned(),
        }
    }

    fn table(
        &mut self,
        props: &Map<String, Value>,
        required: &BTreeSet<String>,
        skip: &BTreeSet<String>,
    ) {
        let _ = writeln!(
            self.out,
            "| field | type | default | example | description |"
        );
        let _ = writeln!(self.out, "|---|---|---|---|---|");
        for (name, prop) in props {
            if skip.contains(name) {
                continue;
            }
            let ty = self.type_of(prop);
            let default = if required.contains(name) {
                "**required**".to_owned()
            } else {
                prop.get("default")
                    .map(code)
                    .unwrap_or_else(|| "—".to_owned())
            };
            let example = prop
                .get("examples")
                .and_then(|e| e.get(0))
                .or_else(|| prop.get("default"))
                .map(code)
                .unwrap_or_else(|| "see the type".to_owned());
            let description = prop
                .get("description")
                .and_then(Value::as_str)
                .map(one_line)
                .unwrap_or_default();
            let _ = writeln!(
                self.out,
                "| `{name}` | {ty} | {default} | {example} | {description} |"
            );
        }
        self.out.push('\n');
    }

    fn required(schema: &Value) -> BTreeSet<String> {
        schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn section(&mut self, name: &str) {
        let Some(schema) = self.defs.get(name).cloned() else {
            return;
        };
        if name == "Node" {
            self.nodes(&schema);
            return;
        }
        let _ = writeln!(self.out, "### {name}\n");
        if let Some(d) = schema.get("description").and_then(Value::as_str) {
            let _ = writeln!(self.out, "{d}\n");
        }
        if let Some(Value::Object(props)) = schema.get("properties") {
            let required = Self::required(&schema);
            self.table(props, &required, &BTreeSet::new());
        } else if let Some(Value::Array(alts)) = schema.get("oneOf").or_else(|| schema.get("anyOf"))
        {
            let _ = writeln!(self.out, "One of:\n");
            for alt in alts {
                let description = alt
                    .get("description")
                    .and_then(Value::as_str)
                    .map(one_line)
                    .unwrap_or_default();
                if let Some(Value::Array(values)) = alt.get("enum") {
                    let names: Vec<String> = values.iter().map(code).collect();
                    let _ = writeln!(self.out, "- {}: {description}", names.join(", "));
                } else if let Some(c) = alt.get("const") {
                    let _ = writeln!(self.out, "- {}: {description}", code(c));
                } else if let Some(Value::Object(props)) = alt.get("properties") {
                    if props.len() == 1 && alt.get("required").is_some() {
                        let (variant, inner) = props
                            .iter()
                            .next()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .unwrap_or_default();
                        let ty = self.type_of(&inner);
                        let _ = writeln!(self.out, "- `{variant}`: {ty} — {description}");
                    } else {
                        let ty = self.type_of(alt);
                        let _ = writeln!(self.out, "- {ty}: {description}");
                        let required = Self::required(alt);
                        let _ = writeln!(self.out);
                        self.table(props, &required, &BTreeSet::new());
                    }
                } else {
                    let ty = self.type_of(alt);
                    let _ = writeln!(self.out, "- {ty}: {description}");
                }
            }
            self.out.push('\n');
        } else {
            let ty = self.type_of(&schema);
            let _ = writeln!(self.out, "A {ty}.\n");
        }
    }

    fn nodes(&mut self, schema: &Value) {
        let _ = writeln!(self.out, "### Node\n");
        let alts = schema
            .get("oneOf")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let common: BTreeSet<String> = crate::spec::nodes::COMMON_KEYS
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        let _ = writeln!(
            self.out,
            "Every node has `type` and the common fields below, plus the fields of its type.\n\n#### Common fields\n"
        );
        if let Some(Value::Object(props)) = alts.first().and_then(|a| a.get("properties")) {
            let only_common: Map<String, Value> = props
                .iter()
                .filter(|(k, _)| common.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            self.table(
                &only_common,
                &BTreeSet::from(["type".to_owned()]),
                &BTreeSet::new(),
            );
        }
        for alt in &alts {
            let title = alt.get("title").and_then(Value::as_str).unwrap_or("node");
            let _ = writeln!(self.out, "#### `type: {title}`\n");
            if let Some(d) = alt.get("description").and_then(Value::as_str) {
                let _ = writeln!(self.out, "{d}\n");
            }
            if let Some(Value::Object(props)) = alt.get("properties") {
                let required = Self::required(alt);
                self.table(props, &required, &common);
            }
        }
    }
}

/// The generated field reference (Markdown): every field of every section and node type,
/// with its type, default, an example and its description.
pub fn reference_markdown(registry: &Registry) -> String {
    let schema = json_schema(registry);
    let empty = Map::new();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut doc = Doc {
        defs,
        out: String::new(),
        queue: VecDeque::new(),
        seen: BTreeSet::new(),
    };
    let _ = writeln!(doc.out, "## Top level\n");
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        let _ = writeln!(doc.out, "{d}\n");
    }
    if let Some(Value::Object(props)) = schema.get("properties") {
        let required = Doc::required(&schema);
        doc.table(props, &required, &BTreeSet::new());
    }
    while let Some(name) = doc.queue.pop_front() {
        doc.section(&name);
    }
    doc.out
}
