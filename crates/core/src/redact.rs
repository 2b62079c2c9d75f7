//! What of a URL is secret, and the URL without it: one set of rules for every message,
//! evidence snippet, listing and log line.
//!
//! A URL's password and the value of every query parameter are secret unless the
//! parameter is declared public. The user info of `scheme://user:pass@host` ends at the
//! **last** `@` before the host (a raw `@` in a password is legal for URL parsers), as
//! the WHATWG URL standard and the `url` crate read it.
//!
//! ```
//! use sluice_core::redact::{redact_url, redact_url_except};
//! assert_eq!(
//!     redact_url("postgres://app:hunter2@EXTRA@db:5432/x?sslmode=require"),
//!     "postgres://app:***@db:5432/x?sslmode=***"
//! );
//! assert_eq!(
//!     redact_url_except("https://api.example.com/v1?page=2&key=k3y", |p| p == "page"),
//!     "https://api.example.com/v1?page=2&key=***"
//! );
//! ```

use crate::Secret;

/// The mask written in place of a secret.
pub const MASK: &str = "***";

/// The URL with its password and every query value replaced by `***`.
pub fn redact_url(url: &str) -> String {
    redact_url_except(url, |_| false)
}

/// The URL with its password replaced by `***`, and every query value too except those
/// of the parameters `public` accepts (it is given the decoded parameter name). Values
/// that are only template variables (`{{page}}`) print as written: they hold no secret.
pub fn redact_url_except(url: &str, public: impl Fn(&str) -> bool) -> String {
    let parts = Parts::of(url);
    let mut out = String::with_capacity(url.len());
    out.push_str(parts.head);
    if let Some(userinfo) = parts.userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
            }
            None => out.push_str(userinfo),
        }
        out.push('@');
    }
    out.push_str(parts.host_and_path);
    if let Some(query) = parts.query {
        out.push('?');
        let pieces: Vec<String> = query
            .split('&')
            .map(|piece| match piece.split_once('=') {
                Some((name, value)) if shows(name, value, &public) => piece.to_owned(),
                Some((name, _)) => format!("{name}={MASK}"),
                None => piece.to_owned(),
            })
            .collect();
        out.push_str(&pieces.join("&"));
    }
    out.push_str(parts.fragment);
    out
}

/// The secret parts of a URL, each as written and decoded: its password, and the values
/// of its query parameters that `public` does not accept. Redacting these from free text
/// catches a driver or server that quotes one of them alone.
pub fn url_secrets(url: &str, public: impl Fn(&str) -> bool) -> Vec<Secret> {
    let parts = Parts::of(url);
    let mut out = Vec::new();
    let mut add = |raw: &str| {
        for text in [raw.to_owned(), percent_decode(raw)] {
            if !text.is_empty() && !out.iter().any(|s: &Secret| s.expose() == text) {
                out.push(Secret::new(text));
            }
        }
    };
    if let Some((_, password)) = parts.userinfo.and_then(|u| u.split_once(':')) {
        add(password);
    }
    if let Some(query) = parts.query {
        for piece in query.split('&') {
            if let Some((name, value)) = piece.split_once('=')
                && !shows(name, value, &public)
            {
                add(value);
            }
        }
    }
    out
}

/// Whether a value is only template variables (`{{page}}`, `{{a}}-{{b}}` is not).
pub fn is_template_only(value: &str) -> bool {
    let v = value.trim();
    v.starts_with("{{") && v.ends_with("}}") && v[2..v.len() - 2].find(['{', '}']).is_none()
}

fn shows(name: &str, value: &str, public: &impl Fn(&str) -> bool) -> bool {
    value.is_empty() || value == MASK || is_template_only(value) || public(&percent_decode(name))
}

/// `%XX` escapes decoded (and `+` as a space, as in query strings); invalid escapes stay.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pieces of a URL: `scheme://`, the user info (before the last `@` of the
/// authority), `host[:port]/path`, the query (without `?`), the fragment (with `#`).
struct Parts<'a> {
    head: &'a str,
    userinfo: Option<&'a str>,
    host_and_path: &'a str,
    query: Option<&'a str>,
    fragment: &'a str,
}

impl<'a> Parts<'a> {
    fn of(url: &'a str) -> Parts<'a> {
        let (head, rest) = match url.find("://") {
            Some(i) => url.split_at(i + 3),
            None => ("", url),
        };
        let (rest, fragment) = match rest.find('#') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (userinfo, rest) = match rest[..authority_end].rfind('@') {
            Some(at) if !head.is_empty() => (Some(&rest[..at]), &rest[at + 1..]),
            _ => (None, rest),
        };
        let (host_and_path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        Parts {
            head,
            userinfo,
            host_and_path,
            query,
            fragment,
        }
    }
}

/// `text` with every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) written `%XX`.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` as `application/x-www-form-urlencoded` writes it (a space is `+`).
pub(crate) fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_userinfo_ends_at_the_last_at_sign() {
        assert_eq!(
            redact_url("postgres://u:hunter2@EXTRA@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        // An `@` after the authority is not user info.
        assert_eq!(
            redact_url("https://h/p@x?mail=a@b"),
            "https://h/p@x?mail=***"
        );
    }

    #[test]
    fn every_query_value_is_masked_unless_public() {
        assert_eq!(
            redact_url("postgres://u:p@h/db?password=pw&sslmode=require#f"),
            "postgres://u:***@h/db?password=***&sslmode=***#f"
        );
        assert_eq!(
            redact_url_except("https://h/x?page={{page}}&a=1&b=&c&access_token=t", |n| n
                == "a"),
            "https://h/x?page={{page}}&a=1&b=&c&access_token=***"
        );
        assert_eq!(
            redact_url_except("https://h/x?a%20b=1", |n| n == "a b"),
            "https://h/x?a%20b=1"
        );
    }

    #[test]
    fn secrets_of_a_url_come_raw_and_decoded() {
        let s: Vec<String> = url_secrets("postgres://u:p%40ss@h/db?password=x%2By&page=2", |n| {
            n == "page"
        })
        .iter()
        .map(|s| s.expose().to_owned())
        .collect();
        assert_eq!(s, ["p%40ss", "p@ss", "x%2By", "x+y"]);
    }

    #[test]
    fn bad_input_does_not_panic() {
        for t in [
            "",
            "%",
            "%4",
            "a%zz",
            "://",
            "x://@",
            "x://:@?&=#",
            "é%C3%A9",
        ] {
            let _ = redact_url(t);
            let _ = url_secrets(t, |_| false);
            let _ = percent_decode(t);
        }
        assert_eq!(percent_decode("%C3%A9+%4"), "é %4");
    }
}
