//! The checks of single values and of policies, which every section and every node kind
//! uses: the [`Checker`]'s vocabulary.

use super::Checker;
use crate::de::Spanned;
use crate::diag::{Diagnostic, Pos, suggest};
use crate::spec::{BatchingSpec, RetrySpec, TimeoutsSpec};
use crate::values::{Duration, RedactedMap, SecretValue, is_sensitive_key};
use std::collections::BTreeSet;

/// Template variables of `{{name}}` form in `text`, with their character offsets.
fn template_vars(text: &str) -> Result<Vec<(String, usize)>, usize> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut base = 0;
    while let Some(start) = rest.find("{{") {
        let offset = text[..base + start].chars().count();
        let Some(end) = rest[start..].find("}}") else {
            return Err(offset);
        };
        out.push((rest[start + 2..start + end].trim().to_owned(), offset));
        base += start + end + 2;
        rest = &rest[start + end + 2..];
    }
    Ok(out)
}

/// Every variable any template may use, for "did you mean".
const ALL_VARIABLES: &[&str] = &[
    "page",
    "page_size",
    "offset",
    "limit",
    "cursor",
    "watermark",
    "run_id",
    "pipeline",
    "date",
];

impl Checker<'_> {
    // -----------------------------------------------------------------------------------
    // Policies

    // -----------------------------------------------------------------------------------
    // Top-level sections

    // -----------------------------------------------------------------------------------
    // Nodes
}

impl Checker<'_> {
    pub fn error(
        &mut self,
        pos: Pos,
        width: usize,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags.push(
            Diagnostic::error(pos, message)
                .with_width(width)
                .with_help(help),
        );
    }

    /// A warning about a secret written in clear: its text is masked where it is quoted.
    pub fn secret_warning(
        &mut self,
        pos: Pos,
        width: usize,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.warning(pos, width, message, help);
        if let Some(d) = self.diags.last_mut() {
            d.masked = true;
        }
    }

    pub fn warning(
        &mut self,
        pos: Pos,
        width: usize,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags.push(
            Diagnostic::warning(pos, message)
                .with_width(width)
                .with_help(help),
        );
    }

    pub fn error_at<T>(
        &mut self,
        at: &Spanned<T>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.error(at.pos, at.width, message, help);
    }

    /// Where `needle` is written, searching from `pos` on (a few lines at most).
    pub fn find(&self, pos: Pos, needle: &str) -> Pos {
        for (i, line) in self.lines.iter().enumerate().skip(pos.line - 1).take(50) {
            let from = if i + 1 == pos.line { pos.column - 1 } else { 0 };
            let tail: String = line.chars().skip(from).collect();
            if let Some(byte) = tail.find(needle) {
                return Pos::new(i + 1, from + tail[..byte].chars().count() + 1);
            }
        }
        pos
    }

    pub fn secret(&mut self, value: &SecretValue, field: &str) {
        if !value.interpolated && !value.value.expose().is_empty() {
            self.secret_warning(
                value.pos,
                value.width,
                format!("`{field}` is written in clear in the pipeline file"),
                "read it from the environment or a file instead: `${NAME}` or `${file:/run/secrets/name}`",
            );
        }
    }

    pub fn redacted_map(&mut self, map: &RedactedMap, what: &str) {
        for (k, v) in map.entries() {
            if is_sensitive_key(&k.value) && !v.interpolated && !v.value.is_empty() {
                self.secret_warning(
                    v.pos,
                    v.width,
                    format!("the {what} `{}` is written in clear in the pipeline file", k.value),
                    "read it from the environment or a file instead: `${NAME}` or `${file:/run/secrets/name}`",
                );
            }
        }
    }

    /// Checks `{{variables}}` in `text` against `allowed`; `why` explains the others.
    pub fn templates(
        &mut self,
        text: &str,
        pos: Pos,
        allowed: &[&str],
        why: &dyn Fn(&str) -> String,
    ) -> Vec<String> {
        let vars = match template_vars(text) {
            Ok(v) => v,
            Err(_) => {
                let at = self.find(pos, "{{");
                self.error(
                    at,
                    2,
                    "`{{` is not closed with `}}`",
                    "write template variables as `{{name}}`",
                );
                return Vec::new();
            }
        };
        let mut used = Vec::new();
        for (name, _) in vars {
            let written = format!("{{{{{name}}}}}");
            if allowed.contains(&name.as_str()) {
                used.push(name);
                continue;
            }
            let at = self.find(pos, &written);
            let width = written.chars().count();
            if ALL_VARIABLES.contains(&name.as_str()) {
                self.error(
                    at,
                    width,
                    format!("`{written}` has no value here"),
                    why(&name),
                );
            } else {
                let message = match suggest(&name, ALL_VARIABLES.iter().copied()) {
                    Some(near) => format!(
                        "unknown template variable `{written}`, did you mean `{{{{{near}}}}}`?"
                    ),
                    None => format!("unknown template variable `{written}`"),
                };
                let help = if allowed.is_empty() {
                    "no template variables are set here".to_owned()
                } else {
                    format!("the variables here are: {}", allowed.join(", "))
                };
                self.error(at, width, message, help);
            }
        }
        used
    }

    pub fn positive(&mut self, d: &Option<Spanned<Duration>>, field: &str) {
        if let Some(d) = d {
            self.positive_duration(d, field);
        }
    }

    pub fn positive_duration(&mut self, d: &Spanned<Duration>, field: &str) {
        if d.value.is_zero() {
            self.error_at(
                d,
                format!("`{field}` must be more than zero"),
                format!("e.g. `{field}: 30s`"),
            );
        }
    }

    pub fn at_least<T: PartialOrd + Copy + std::fmt::Display>(
        &mut self,
        v: &Spanned<T>,
        min: T,
        field: &str,
    ) {
        if v.value < min {
            self.error_at(
                v,
                format!("`{field}` must be at least {min}, found {}", v.value),
                format!("set `{field}` to {min} or more"),
            );
        }
    }

    pub fn unique(&mut self, items: &[Spanned<String>], what: &str) {
        let mut seen = BTreeSet::new();
        for item in items {
            if !seen.insert(item.value.as_str()) {
                self.error_at(
                    item,
                    format!("{what} `{}` is listed twice", item.value),
                    "remove the second one",
                );
            }
        }
    }

    pub fn retry(&mut self, r: &RetrySpec) {
        if let Some(a) = &r.max_attempts {
            self.at_least(a, 1, "max_attempts");
        }
        if let Some(m) = &r.multiplier {
            if !(m.value.is_finite() && m.value >= 1.0) {
                self.error_at(
                    m,
                    format!("`multiplier` must be at least 1, found {}", m.value),
                    "`2` doubles the backoff cap after each attempt; `1` keeps it constant",
                );
            }
        }
        self.positive(&r.max_elapsed, "max_elapsed");
        self.positive(&r.max_backoff, "max_backoff");
        if let (Some(i), Some(m)) = (&r.initial_backoff, &r.max_backoff) {
            if i.value > m.value {
                self.error_at(i, format!("`initial_backoff` ({}) is longer than `max_backoff` ({})", i.value, m.value), "the first backoff cannot exceed the cap of every backoff: lower `initial_backoff` or raise `max_backoff`");
            }
        }
    }

    pub fn batching(&mut self, b: &BatchingSpec) {
        if let Some(r) = &b.max_rows {
            self.at_least(r, 1, "max_rows");
        }
        if let Some(s) = &b.max_bytes {
            if s.value.bytes() < 1024 {
                self.error_at(
                    s,
                    format!("`max_bytes` must be at least 1KiB, found {}", s.value),
                    "batches are at least one record: e.g. `max_bytes: 4MiB`",
                );
            }
        }
        self.positive(&b.max_wait, "max_wait");
    }

    pub fn timeouts(&mut self, t: &Option<TimeoutsSpec>) {
        if let Some(t) = t {
            self.positive(&t.connect, "connect");
            self.positive(&t.request, "request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_variables() {
        assert_eq!(
            template_vars("a{{page}}b{{ cursor }}").unwrap(),
            vec![("page".to_owned(), 1), ("cursor".to_owned(), 10)]
        );
        assert_eq!(template_vars("x {{page").unwrap_err(), 2);
        assert!(template_vars("none").unwrap().is_empty());
    }
}
