//! `{{page}}`-style template variables in URLs, query values, headers and bodies.

use serde_json::Value;

/// The values of one request's template variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Vars {
    pub(crate) page: Option<u64>,
    pub(crate) page_size: Option<u64>,
    pub(crate) offset: Option<u64>,
    pub(crate) limit: Option<u64>,
    pub(crate) cursor: Option<String>,
    pub(crate) watermark: Option<String>,
}

impl Vars {
    /// Placeholder values, for validating templated URLs without I/O.
    pub(crate) fn probe() -> Self {
        Vars {
            page: Some(1),
            page_size: Some(1),
            offset: Some(0),
            limit: Some(1),
            cursor: Some("c".into()),
            watermark: Some("w".into()),
        }
    }

    fn get(&self, name: &str) -> Option<Value> {
        match name {
            "page" => self.page.map(Value::from),
            "page_size" => self.page_size.map(Value::from),
            "offset" => self.offset.map(Value::from),
            "limit" => self.limit.map(Value::from),
            "cursor" => self.cursor.clone().map(Value::from),
            "watermark" => self.watermark.clone().map(Value::from),
            _ => None,
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Replaces each `{{name}}` (spaces allowed inside the braces) with its value; a
/// variable without a value (or an unknown one) becomes empty.
pub(crate) fn render_str(template: &str, vars: &Vars) -> String {
    if !template.contains("{{") {
        return template.to_owned();
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                if let Some(v) = vars.get(name) {
                    out.push_str(&text(&v));
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Renders every string in a JSON body. A string that is exactly one variable takes the
/// variable's JSON type (`"{{page}}"` → `3`), and `null` when it has no value.
pub(crate) fn render_json(template: &Value, vars: &Vars) -> Value {
    match template {
        Value::String(s) => {
            let t = s.trim();
            if let Some(inner) = t.strip_prefix("{{").and_then(|x| x.strip_suffix("}}"))
                && !inner.contains("{{")
            {
                return vars.get(inner.trim()).unwrap_or(Value::Null);
            }
            Value::String(render_str(s, vars))
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| render_json(v, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), render_json(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_and_bodies_render() {
        let vars = Vars {
            page: Some(3),
            watermark: Some("2024-01-01T00:00:00Z".into()),
            ..Vars::default()
        };
        assert_eq!(
            render_str("/x?p={{ page }}&c={{cursor}}&w={{watermark}}", &vars),
            "/x?p=3&c=&w=2024-01-01T00:00:00Z"
        );
        assert_eq!(render_str("{{unterminated", &vars), "{{unterminated");
        let body = json!({"page": "{{page}}", "f": {"since": "{{watermark}}", "c": "{{cursor}}"}, "s": "p{{page}}"});
        assert_eq!(
            render_json(&body, &vars),
            json!({"page": 3, "f": {"since": "2024-01-01T00:00:00Z", "c": null}, "s": "p3"})
        );
    }
}
