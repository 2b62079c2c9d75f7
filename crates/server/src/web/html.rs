//! HTML pieces. Every value that comes from a pipeline file, the state store or a request
//! goes through [`esc`] before it is written into a page; markup is only ever built from
//! fixed strings. A small escape function rather than a template crate: the pages are a
//! few hundred lines of markup, and this keeps the build free of a proc-macro crate.

use crate::service::time;

/// `text`, safe inside an element or a quoted attribute value.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as one path segment or query value of a URL (then [`esc`] it into an attribute).
pub(crate) fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A time in ms since the epoch, or a dash.
pub(crate) fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "—".to_owned(), time)
}

/// A duration in ms, shortly: `850 ms`, `3.2 s`, `4 min 05 s`.
pub(crate) fn took(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// A status as a coloured badge.
pub(crate) fn badge(status: &str) -> String {
    format!(
        r#"<span class="badge st-{0}">{1}</span>"#,
        esc(status),
        esc(&status.replace('_', " "))
    )
}

/// Who looks at the page: signed in (may change things) or not, and the form token.
pub(crate) struct Viewer {
    /// May run, replay and drop.
    pub(crate) may_change: bool,
    /// The CSRF token of the session (forms carry it).
    pub(crate) csrf: Option<String>,
    /// A token is needed to change things.
    pub(crate) token_set: bool,
}

impl Viewer {
    /// The hidden field every mutating form carries.
    pub(crate) fn csrf_field(&self) -> String {
        format!(
            r#"<input type="hidden" name="csrf" value="{}">"#,
            esc(self.csrf.as_deref().unwrap_or(""))
        )
    }

    /// A form that changes something, or why it is not offered.
    pub(crate) fn form(&self, action: &str, fields: &str, button: &str, class: &str) -> String {
        if !self.may_change {
            return format!(
                r#"<a class="button muted" href="/ui/login">{} (sign in with the token)</a>"#,
                esc(button)
            );
        }
        format!(
            r#"<form method="post" action="{}" class="inline">{}{}<button type="submit" class="{}">{}</button></form>"#,
            esc(action),
            self.csrf_field(),
            fields,
            esc(class),
            esc(button)
        )
    }
}

/// A whole page.
pub(crate) fn page(title: &str, viewer: &Viewer, refresh: Option<u32>, body: &str) -> String {
    let refresh = refresh.map_or_else(String::new, |s| {
        format!(r#"<meta http-equiv="refresh" content="{s}">"#)
    });
    let who = if !viewer.token_set {
        r#"<span class="who">no token set: open on this loopback address</span>"#.to_owned()
    } else if viewer.may_change {
        format!(
            r#"<form method="post" action="/ui/logout" class="inline who">{}<button type="submit" class="link">sign out</button></form>"#,
            viewer.csrf_field()
        )
    } else {
        r#"<a class="who" href="/ui/login">sign in</a>"#.to_owned()
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{title} · sluice</title><link rel="stylesheet" href="/ui/assets/style.css"><script src="/ui/assets/app.js" defer></script></head>
<body><header><a class="brand" href="/">sluice</a><nav><a href="/">Pipelines</a><a href="/ui/runs">Runs</a><a href="/ui/failed">Failed batches</a><a href="/ui/links">Links and alerts</a></nav>{who}</header>
<main><h1>{title}</h1>
{body}
</main></body></html>
"#,
        title = esc(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_open_markup() {
        assert_eq!(
            esc(r#"<script>alert("x&'y")</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;&#39;y&quot;)&lt;/script&gt;"
        );
        assert_eq!(url_part("a b/<c>"), "a%20b%2F%3Cc%3E");
    }
}
