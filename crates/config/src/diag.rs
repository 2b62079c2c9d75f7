//! Diagnostics: what is wrong, where, and what to do about it.
//!
//! A [`Diagnostic`] holds a 1-based line and column, a message and an optional help line.
//! [`render`] prints a list of them the way rustc does:
//!
//! ```text
//! pipelines/orders.yaml:12:5: error: unknown field `paginaton`, did you mean `pagination`?
//!    |
//! 12 |     paginaton:
//!    |     ^^^^^^^^^
//!    = help: the fields of an `http` node are: url, method, headers, ...
//! ```

use serde::Serialize;
use std::fmt;

/// A position in the pipeline file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl Pos {
    /// The start of the file.
    pub const START: Pos = Pos { line: 1, column: 1 };

    /// A position from 1-based line and column.
    pub fn new(line: usize, column: usize) -> Pos {
        Pos {
            line: line.max(1),
            column: column.max(1),
        }
    }
}

impl Default for Pos {
    fn default() -> Self {
        Pos::START
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// How bad a diagnostic is. Errors make a pipeline invalid; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The pipeline cannot run.
    Error,
    /// The pipeline can run, but probably not as intended.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding about a pipeline file, with its position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where it is.
    #[serde(flatten)]
    pub pos: Pos,
    /// How many characters the caret line underlines (at least 1).
    #[serde(skip)]
    pub width: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// The underlined text is a secret: the quoted line shows `*` in its place.
    #[serde(skip)]
    pub masked: bool,
}

impl Diagnostic {
    /// An error at `pos`.
    pub fn error(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            pos,
            width: 1,
            message: message.into(),
            help: None,
            masked: false,
        }
    }

    /// A warning at `pos`.
    pub fn warning(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(pos, message)
        }
    }

    /// Adds the help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets how many characters to underline.
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = width.max(1);
        self
    }

    /// Marks the underlined text as a secret, never quoted.
    pub fn masked(mut self) -> Self {
        self.masked = true;
        self
    }

    /// Whether this diagnostic makes the pipeline invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Sorts by position (errors before warnings at the same place), removes exact duplicates
/// and moves positions past the end of the text onto its last line, so that every
/// diagnostic points at a line that exists.
pub(crate) fn normalize(diags: &mut Vec<Diagnostic>, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    for d in diags.iter_mut() {
        if lines.is_empty() {
            d.pos = Pos::START;
            continue;
        }
        if d.pos.line > lines.len() {
            let last = lines.len();
            d.pos = Pos::new(last, lines[last - 1].chars().count() + 1);
        }
        let len = lines[d.pos.line - 1].chars().count();
        d.pos.column = d.pos.column.min(len + 1);
    }
    diags.sort_by(|a, b| (a.pos, a.severity, &a.message).cmp(&(b.pos, b.severity, &b.message)));
    diags.dedup_by(|a, b| a.pos == b.pos && a.severity == b.severity && a.message == b.message);
}

/// Renders diagnostics as text: `file:line:col: severity: message`, the source line, a
/// caret under the column and the help line.
pub fn render(file: &str, text: &str, diags: &[Diagnostic]) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for d in diags {
        out.push_str(&format!(
            "{file}:{}:{}: {}: {}\n",
            d.pos.line, d.pos.column, d.severity, d.message
        ));
        if let Some(line) = lines.get(d.pos.line.saturating_sub(1)) {
            let number = d.pos.line.to_string();
            let gutter = " ".repeat(number.len());
            out.push_str(&format!("{gutter} |\n"));
            let shown: String = if d.masked {
                let from = d.pos.column.saturating_sub(1);
                line.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i >= from && i < from + d.width {
                            '*'
                        } else {
                            c
                        }
                    })
                    .collect()
            } else {
                (*line).to_owned()
            };
            out.push_str(&format!("{number} | {shown}\n"));
            // Keep tabs in the padding so the caret lines up under tabbed text.
            let pad: String = line
                .chars()
                .take(d.pos.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let available = line.chars().count().saturating_sub(d.pos.column - 1);
            let width = d.width.min(available.max(1)).max(1);
            out.push_str(&format!("{gutter} | {pad}{}\n", "^".repeat(width)));
            if let Some(help) = &d.help {
                out.push_str(&format!("{gutter} = help: {help}\n"));
            }
        } else if let Some(help) = &d.help {
            out.push_str(&format!("  = help: {help}\n"));
        }
    }
    out
}

/// One diagnostic as JSON for editors and CI: the file name plus [`Diagnostic`]'s fields.
#[derive(Debug, Clone, Serialize)]
pub struct JsonDiagnostic<'a> {
    /// The file as named on the command line.
    pub file: &'a str,
    /// The diagnostic.
    #[serde(flatten)]
    pub diagnostic: &'a Diagnostic,
}

/// Counts errors and warnings.
pub fn count(diags: &[Diagnostic]) -> (usize, usize) {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    (errors, diags.len() - errors)
}

/// The nearest of `candidates` to `word`, if it is near enough to be a plausible typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter(|c| !c.is_empty() && *c != word)
        .map(|c| {
            let distance = strsim::damerau_levenshtein(&word_lower, &c.to_ascii_lowercase());
            (distance, c)
        })
        .filter(|(distance, c)| {
            let longest = word.chars().count().max(c.chars().count());
            *distance <= (longest / 3).max(1) && *distance < longest
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// `` `a`, `b` or `c` ``, for messages.
pub fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc() {
        let text = "a: 1\nnodes:\n  paginaton: x\n";
        let d = Diagnostic::error(Pos::new(3, 3), "unknown field `paginaton`")
            .with_width(9)
            .with_help("did you mean `pagination`?");
        let out = render("p.yaml", text, &[d]);
        assert_eq!(
            out,
            "p.yaml:3:3: error: unknown field `paginaton`\n  |\n3 |   paginaton: x\n  |   ^^^^^^^^^\n  = help: did you mean `pagination`?\n"
        );
    }

    #[test]
    fn caret_never_runs_past_the_line() {
        let d = Diagnostic::error(Pos::new(1, 4), "x").with_width(50);
        let out = render("f", "abcde", &[d]);
        assert!(out.contains("|    ^^\n"), "{out}");
    }

    #[test]
    fn suggestions_need_to_be_close() {
        let fields = ["pagination", "records", "url"];
        assert_eq!(suggest("paginaton", fields), Some("pagination"));
        assert_eq!(suggest("recrods", fields), Some("records"));
        assert_eq!(suggest("zzz", fields), None);
        assert_eq!(suggest("uri", fields), Some("url"));
        assert_eq!(suggest("x", ["y"]), None);
    }

    #[test]
    fn normalize_clamps_and_sorts() {
        let mut d = vec![
            Diagnostic::error(Pos::new(9, 1), "late"),
            Diagnostic::error(Pos::new(1, 2), "early"),
            Diagnostic::error(Pos::new(1, 2), "early"),
        ];
        normalize(&mut d, "ab\ncd\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].message, "early");
        assert_eq!(d[1].pos, Pos::new(2, 3));
    }

    #[test]
    fn one_of_reads_well() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
