//! `${VAR}`, `${VAR:-default}` and `${file:/path}` in scalar values.
//!
//! Interpolation is pure: it reads variables and file contents from an [`Env`] that the
//! caller filled in. [`Env::capture`] is the one place that does I/O (it reads the process
//! environment and every file the pipeline refers to); tests build an [`Env`] by hand.
//!
//! - `${NAME}`: the variable; an error naming it when it is not set.
//! - `${NAME:-default}`: the default when the variable is unset or empty.
//! - `${file:path}`: the file's contents with one trailing newline removed (secret files
//!   usually end with one). A relative path is relative to the pipeline file's folder.
//! - `$${` writes a literal `${`.
//!
//! Keys are never interpolated, only values.

use crate::diag::{Diagnostic, Pos};
use crate::yaml::{Node, Scalar, Style};
use std::collections::BTreeMap;
use std::path::Path;

/// What interpolation may read: variables and the contents of referenced files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Contents (or the read error) of each `${file:...}` path, keyed as written.
    files: BTreeMap<String, Result<String, String>>,
}

impl Env {
    /// An empty environment: every `${VAR}` without a default is an error.
    pub fn new() -> Self {
        Env::default()
    }

    /// Sets a variable.
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Sets the contents of a file referenced as `${file:path}`.
    pub fn with_file(mut self, path: impl Into<String>, contents: impl Into<String>) -> Self {
        self.files.insert(path.into(), Ok(contents.into()));
        self
    }

    /// Records that a file referenced as `${file:path}` could not be read.
    pub fn with_unreadable_file(
        mut self,
        path: impl Into<String>,
        error: impl Into<String>,
    ) -> Self {
        self.files.insert(path.into(), Err(error.into()));
        self
    }

    /// **Does I/O.** Captures the process environment and reads every file that `text`
    /// refers to with `${file:...}` (relative paths from `base_dir`, the pipeline file's
    /// folder). A file that cannot be read is remembered as such, and reported at the
    /// reference when the pipeline is validated.
    pub fn capture(text: &str, base_dir: &Path) -> Env {
        let mut env = Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            files: BTreeMap::new(),
        };
        for path in file_references(text) {
            let full = base_dir.join(&path);
            let result = std::fs::read_to_string(&full).map_err(|e| e.to_string());
            env.files.insert(path, result);
        }
        env
    }
}

/// Every `${file:...}` path written in `text` (anywhere, comments included), in order,
/// without duplicates. Pure: it only scans the text.
pub fn file_references(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in pieces(text) {
        if let Piece::Reference { inner, .. } = piece {
            if let Some(path) = inner.strip_prefix("file:") {
                if !path.is_empty() && !out.iter().any(|p| p == path) {
                    out.push(path.to_owned());
                }
            }
        }
    }
    out
}

/// A piece of a scalar's text.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    /// Literal text (an escaped `$${` yields `${`).
    Text(&'a str),
    /// `${inner}` starting at this character offset.
    Reference { inner: &'a str, offset: usize },
    /// `${` without its `}`, at this character offset.
    Unterminated { offset: usize },
}

fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut consumed = 0; // bytes of `text` before `rest`
    while let Some(i) = rest.find('$') {
        let after = &rest[i..];
        if after.starts_with("$${") {
            out.push(Piece::Text(&rest[..i]));
            out.push(Piece::Text("${"));
            rest = &rest[i + 3..];
            consumed += i + 3;
        } else if after.starts_with("${") {
            out.push(Piece::Text(&rest[..i]));
            let offset = text[..consumed + i].chars().count();
            match after.find('}') {
                Some(end) => {
                    out.push(Piece::Reference {
                        inner: &after[2..end],
                        offset,
                    });
                    rest = &after[end + 1..];
                    consumed += i + end + 1;
                }
                None => {
                    out.push(Piece::Unterminated { offset });
                    return out;
                }
            }
        } else {
            out.push(Piece::Text(&rest[..i + 1]));
            rest = &rest[i + 1..];
            consumed += i + 1;
        }
    }
    out.push(Piece::Text(rest));
    out
}

/// Interpolates every scalar value of the tree in place, reporting what cannot be
/// resolved at its position.
pub(crate) fn interpolate(root: &mut Node, env: &Env, source: &str, diags: &mut Vec<Diagnostic>) {
    let lines: Vec<&str> = source.lines().collect();
    root.for_each_scalar_mut(&mut |scalar, pos, _| {
        if scalar.text.contains('$') {
            interpolate_scalar(scalar, pos, env, &lines, diags);
        }
    });
}

fn interpolate_scalar(
    scalar: &mut Scalar,
    pos: Pos,
    env: &Env,
    lines: &[&str],
    diags: &mut Vec<Diagnostic>,
) {
    let mut out = String::new();
    let mut replaced = false;
    let pieces = pieces(&scalar.text);
    // Meant to come from outside the file, even when that fails below.
    scalar.interpolated |= pieces
        .iter()
        .any(|p| matches!(p, Piece::Reference { .. } | Piece::Unterminated { .. }));
    for piece in &pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Unterminated { offset } => {
                let at = locate(lines, pos, scalar, *offset, "${");
                diags.push(
                    Diagnostic::error(at, "`${` is not closed with `}`")
                        .with_width(2)
                        .with_help("write `${NAME}`, or `$${` for a literal `${`"),
                );
                scalar.broken = true;
                return;
            }
            Piece::Reference { inner, offset } => {
                let written = format!("${{{inner}}}");
                let at = locate(lines, pos, scalar, *offset, &written);
                let width = written.chars().count();
                match resolve(inner, env) {
                    Ok(value) => {
                        out.push_str(&value);
                        replaced = true;
                    }
                    Err((message, help)) => {
                        diags.push(
                            Diagnostic::error(at, message)
                                .with_width(width)
                                .with_help(help),
                        );
                        scalar.broken = true;
                        return;
                    }
                }
            }
        }
    }
    if replaced || out != scalar.text {
        scalar.text = out;
        scalar.interpolated |= replaced;
    }
}

fn resolve(inner: &str, env: &Env) -> Result<String, (String, String)> {
    if let Some(path) = inner.strip_prefix("file:") {
        if path.is_empty() {
            return Err((
                "`${file:}` names no file".to_owned(),
                "write `${file:/run/secrets/token}`".to_owned(),
            ));
        }
        return match env.files.get(path) {
            Some(Ok(contents)) => Ok(strip_one_newline(contents).to_owned()),
            Some(Err(error)) => Err((
                format!("cannot read `{path}`: {error}"),
                "check the path (a relative path starts from the pipeline file's folder) and its permissions".to_owned(),
            )),
            None => Err((
                format!("the file `{path}` was not read"),
                "file references are read by the resolve step (`Env::capture`) before validation".to_owned(),
            )),
        };
    }
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    if !is_var_name(name) {
        let help = if name.contains(':') {
            "for a default value write `${NAME:-default}`; for a file write `${file:/path}`"
        } else {
            "variable names are letters, digits and `_`, and do not start with a digit"
        };
        return Err((
            format!("`${{{inner}}}` is not a valid reference"),
            help.to_owned(),
        ));
    }
    match (env.vars.get(name), default) {
        (Some(v), None) => Ok(v.clone()),
        (Some(v), Some(_)) if !v.is_empty() => Ok(v.clone()),
        (_, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err((
            format!("environment variable `{name}` is not set"),
            format!("set it (`export {name}=...`), or give a default: `${{{name}:-value}}`"),
        )),
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn strip_one_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}

/// The position of `written` (a `${...}` at character `offset` of the scalar's text):
/// found on the scalar's first line when the scalar is written there as is, else the
/// scalar's start.
fn locate(lines: &[&str], pos: Pos, scalar: &Scalar, offset: usize, written: &str) -> Pos {
    let Some(line) = lines.get(pos.line - 1) else {
        return pos;
    };
    let skip = match scalar.style {
        Style::Quoted => 1,
        _ => 0,
    };
    let start = pos.column - 1 + skip + offset;
    let tail: String = line.chars().skip(start).collect();
    if tail.starts_with(written) {
        return Pos::new(pos.line, start + 1);
    }
    // Escapes or line folding moved it: search the line from the scalar's start.
    let from: String = line.chars().skip(pos.column - 1).collect();
    match from.find(written) {
        Some(byte) => Pos::new(pos.line, pos.column + from[..byte].chars().count()),
        None => pos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    fn run(text: &str, env: &Env) -> (Option<Node>, Vec<Diagnostic>) {
        let mut d = Vec::new();
        let mut t = yaml::parse(text, &mut d);
        if let Some(t) = &mut t {
            interpolate(t, env, text, &mut d);
        }
        (t, d)
    }

    fn value(t: &Node, key: &str) -> String {
        t.get(key).unwrap().scalar().unwrap().text.clone()
    }

    #[test]
    fn variables_defaults_and_files() {
        let env = Env::new()
            .with_var("HOST", "db.local")
            .with_var("EMPTY", "")
            .with_file("/run/token", "s3cret\n");
        let (t, d) = run(
            "a: postgres://${HOST}:5432/x\nb: ${PORT:-5432}\nc: ${EMPTY:-fallback}\nd: ${file:/run/token}\ne: cost $$5 and $${HOME}\n",
            &env,
        );
        assert!(d.is_empty(), "{d:?}");
        let t = t.unwrap();
        assert_eq!(value(&t, "a"), "postgres://db.local:5432/x");
        assert_eq!(value(&t, "b"), "5432");
        assert_eq!(value(&t, "c"), "fallback");
        assert_eq!(value(&t, "d"), "s3cret");
        assert_eq!(value(&t, "e"), "cost $$5 and ${HOME}");
        assert!(t.get("a").unwrap().scalar().unwrap().interpolated);
        assert!(!t.get("e").unwrap().scalar().unwrap().interpolated);
    }

    #[test]
    fn missing_variable_is_reported_at_the_reference() {
        let (_, d) = run("url: \"https://${API_HOST}/v1\"\n", &Env::new());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message, "environment variable `API_HOST` is not set");
        assert_eq!(d[0].pos, Pos::new(1, 15));
        assert_eq!(d[0].width, 11);
    }

    #[test]
    fn bad_references() {
        let (_, d) = run(
            "a: ${NOPE\nb: ${A:B}\nc: ${file:missing}\n",
            &Env::new().with_unreadable_file("missing", "No such file or directory"),
        );
        let messages: Vec<&str> = d.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "`${` is not closed with `}`",
                "`${A:B}` is not a valid reference",
                "cannot read `missing`: No such file or directory"
            ]
        );
        assert_eq!(d[2].pos, Pos::new(3, 4));
    }

    #[test]
    fn file_references_are_found_in_order() {
        let refs = file_references("a: ${file:/x}\nb: ${file:y} ${file:/x} ${HOME} ${file:}\n");
        assert_eq!(refs, ["/x", "y"]);
    }

    #[test]
    fn capture_reads_referenced_files() {
        let dir =
            std::env::temp_dir().join(format!("sluice-config-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token.txt"), "abc\n").unwrap();
        let env = Env::capture("t: ${file:token.txt}\nu: ${file:nope.txt}\n", &dir);
        assert_eq!(env.files.get("token.txt"), Some(&Ok("abc\n".to_owned())));
        assert!(matches!(env.files.get("nope.txt"), Some(Err(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
