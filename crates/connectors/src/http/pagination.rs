//! Where the next page is: page numbers, offsets, cursors, next URLs, `Link` headers; and
//! when paging stops (empty page, `has_more: false`, total reached, a page already read,
//! max pages).
//!
//! A next-page URL the API gives is kept without its secrets (see [`Pager::hide`]): the
//! position goes to checkpoints, the failed-batch store and logs. The request puts them
//! back from the config ([`refill`]).

use super::classify::Redactor;
use super::config::{PaginationConfig, StopConfig};
use super::template::Vars;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json_path::JsonPath;
use sluice_core::SourcePosition;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use url::Url;

/// The value that stands, in a kept next-page URL, for a secret the API copied into it.
pub(crate) const MASKED: &str = "***";

/// A pagination style, compiled.
#[derive(Debug, Clone)]
pub(crate) enum Style {
    None,
    PageNumber {
        param: String,
        start: u64,
        size_param: Option<String>,
    },
    OffsetLimit {
        offset_param: String,
        limit_param: String,
    },
    Cursor {
        path: JsonPath,
        param: String,
    },
    NextUrl {
        path: JsonPath,
    },
    LinkHeader,
}

/// Where the next request goes. Serialized in checkpoints (`next`), so that a run cut
/// short goes on from there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Position {
    /// The first request of a style whose later requests depend on answers.
    First,
    /// A page number, and the page size asked (when the API takes one).
    Page { page: u64, size: Option<u64> },
    /// A record offset and the limit asked.
    Offset { offset: u64, limit: u64 },
    /// A cursor given by the API.
    Cursor(String),
    /// A URL given by the API, without its secrets: the API key's query parameter left
    /// out, and every other query value holding a secret written `***` (see
    /// [`Pager::hide`]).
    Url(String),
}

/// What a page said about paging.
pub(crate) struct PageMeta<'a> {
    pub(crate) records: usize,
    pub(crate) doc: Option<&'a Value>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) url: &'a Url,
}

#[derive(Debug, Clone)]
pub(crate) struct Stop {
    empty_page: bool,
    has_more: Option<JsonPath>,
    total: Option<JsonPath>,
}

pub(crate) struct Pager {
    pub(crate) style: Style,
    pub(crate) pos: Position,
    stop: Stop,
    /// Records read so far in this run (for `stop.total`).
    pub(crate) records: u64,
    /// Query parameters that carry a credential (an API key in the query), lower case:
    /// left out of the URLs the API gives. The request adds them again.
    hidden: Vec<String>,
    /// Query parameters whose values print (never masked in a kept URL), lower case.
    public: Vec<String>,
    /// A hash of every position read in this run: paging stops at one read before. At
    /// most `max_pages` entries.
    seen: HashSet<u64>,
}

fn path(p: &str) -> Result<JsonPath, String> {
    JsonPath::parse(p).map_err(|e| format!("`{p}` is not a JSON path ({e})"))
}

impl Pager {
    pub(crate) fn new(cfg: &PaginationConfig, stop: &StopConfig) -> Result<Self, String> {
        let (style, pos) = match cfg {
            PaginationConfig::None => (Style::None, Position::First),
            PaginationConfig::PageNumber(c) => (
                Style::PageNumber {
                    param: c.param.clone(),
                    start: c.start,
                    size_param: c.size_param.clone(),
                },
                Position::Page {
                    page: c.start,
                    size: c.size.map(u64::from),
                },
            ),
            PaginationConfig::OffsetLimit(c) => (
                Style::OffsetLimit {
                    offset_param: c.offset_param.clone(),
                    limit_param: c.limit_param.clone(),
                },
                Position::Offset {
                    offset: 0,
                    limit: u64::from(c.limit.max(1)),
                },
            ),
            PaginationConfig::Cursor(c) => (
                Style::Cursor {
                    path: path(&c.path)?,
                    param: c.param.clone(),
                },
                Position::First,
            ),
            PaginationConfig::NextUrl(c) => (
                Style::NextUrl {
                    path: path(&c.path)?,
                },
                Position::First,
            ),
            PaginationConfig::LinkHeader => (Style::LinkHeader, Position::First),
        };
        let stop = Stop {
            empty_page: stop.empty_page,
            has_more: stop.has_more.as_deref().map(path).transpose()?,
            total: stop.total.as_deref().map(path).transpose()?,
        };
        Ok(Pager {
            style,
            pos,
            stop,
            records: 0,
            hidden: Vec::new(),
            public: Vec::new(),
            seen: HashSet::new(),
        })
    }

    /// Keeps secrets out of the URLs the API gives: the `hidden` query parameters (an API
    /// key in the query) are left out, and the values of others (but `public` ones) that
    /// hold a secret the redactor knows are written `***`.
    pub(crate) fn hide(
        &mut self,
        hidden: impl IntoIterator<Item = String>,
        public: impl IntoIterator<Item = String>,
    ) {
        self.hidden = hidden.into_iter().map(|p| p.to_ascii_lowercase()).collect();
        self.public = public.into_iter().map(|p| p.to_ascii_lowercase()).collect();
    }

    /// A URL the API gave, as it is kept in a position: without its secrets. A URL with
    /// none is kept exactly as given (a signed link stays valid).
    pub(crate) fn keep_url(&self, url: &Url, redactor: &Redactor) -> String {
        let secret = |v: &str| !v.is_empty() && redactor.text(v) != v;
        let mut url = url.clone();
        if url.password().is_some_and(secret) {
            let _ = url.set_password(None);
        }
        let mut changed = false;
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter_map(|(k, v)| {
                let name = k.to_ascii_lowercase();
                if self.hidden.contains(&name) {
                    changed = true;
                    return None;
                }
                if !self.public.contains(&name) && secret(&v) {
                    changed = true;
                    return Some((k.into_owned(), MASKED.to_owned()));
                }
                Some((k.into_owned(), v.into_owned()))
            })
            .collect();
        if changed {
            if pairs.is_empty() {
                url.set_query(None);
            } else {
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
        }
        url.to_string()
    }

    /// A position as it is kept: a URL without its secrets (a checkpoint written by an
    /// older version may hold them).
    pub(crate) fn kept(&self, pos: Position, redactor: &Redactor) -> Position {
        match pos {
            Position::Url(u) => match Url::parse(&u) {
                Ok(url) => Position::Url(self.keep_url(&url, redactor)),
                Err(_) => Position::Url(u),
            },
            other => other,
        }
    }

    /// Whether the next position is one already read in this run: the page just read
    /// (an API handing the same cursor back) or one before it (a cycle, A → B → A).
    pub(crate) fn repeats(&self, next: &Position) -> bool {
        *next == self.pos || self.seen.contains(&hash_of(next))
    }

    /// Moves to the next position, remembering the one read (and, for the first page of
    /// a URL style, the URL it was read from, so that a link back to it is a repeat).
    pub(crate) fn moved_to(&mut self, next: Position, read_from: &Url, redactor: &Redactor) {
        if self.pos == Position::First
            && matches!(self.style, Style::NextUrl { .. } | Style::LinkHeader)
        {
            let first = Position::Url(self.keep_url(read_from, redactor));
            self.seen.insert(hash_of(&first));
        }
        self.seen.insert(hash_of(&self.pos));
        self.pos = next;
    }

    /// The template variables of the current position.
    pub(crate) fn vars(&self) -> Vars {
        let mut v = Vars::default();
        match &self.pos {
            Position::Page { page, size } => {
                v.page = Some(*page);
                v.page_size = *size;
            }
            Position::Offset { offset, limit } => {
                v.offset = Some(*offset);
                v.limit = Some(*limit);
            }
            Position::Cursor(c) => v.cursor = Some(c.clone()),
            Position::First | Position::Url(_) => {}
        }
        v
    }

    /// Query parameters this position adds, as `(name, variable, value)`: the caller
    /// leaves out those whose variable the templates already place.
    pub(crate) fn params(&self) -> Vec<(String, &'static str, String)> {
        let mut out = Vec::new();
        match (&self.style, &self.pos) {
            (
                Style::PageNumber {
                    param, size_param, ..
                },
                Position::Page { page, size },
            ) => {
                out.push((param.clone(), "page", page.to_string()));
                if let (Some(p), Some(s)) = (size_param, size) {
                    out.push((p.clone(), "page_size", s.to_string()));
                }
            }
            (
                Style::OffsetLimit {
                    offset_param,
                    limit_param,
                },
                Position::Offset { offset, limit },
            ) => {
                out.push((offset_param.clone(), "offset", offset.to_string()));
                out.push((limit_param.clone(), "limit", limit.to_string()));
            }
            (Style::Cursor { param, .. }, Position::Cursor(c)) => {
                out.push((param.clone(), "cursor", c.clone()));
            }
            _ => {}
        }
        out
    }

    /// A URL the API gave for this page, which replaces the configured one.
    pub(crate) fn given_url(&self) -> Option<&str> {
        match &self.pos {
            Position::Url(u) => Some(u),
            _ => None,
        }
    }

    /// The position recorded in batches (their ids derive from it).
    pub(crate) fn source_position(&self, redact: impl Fn(&str) -> String) -> SourcePosition {
        match &self.pos {
            Position::Page { page, .. } => SourcePosition::Page(*page),
            Position::Offset { offset, .. } => SourcePosition::Offset(*offset),
            Position::Cursor(c) => SourcePosition::Cursor(c.clone()),
            Position::Url(u) => SourcePosition::Url(redact(u)),
            Position::First => match self.style {
                Style::Cursor { .. } => SourcePosition::Cursor(String::new()),
                Style::None => SourcePosition::Whole,
                _ => SourcePosition::Page(1),
            },
        }
    }

    /// Whether a 413/504 can be met by asking for fewer records.
    pub(crate) fn shrinkable(&self) -> bool {
        matches!(
            self.pos,
            Position::Page {
                size: Some(2..),
                ..
            } | Position::Offset { limit: 2.., .. }
        )
    }

    /// Halves the page size, keeping the first record of the page where it is. Returns
    /// the new size.
    pub(crate) fn shrink(&mut self) -> Option<u64> {
        match (&self.style, &mut self.pos) {
            (Style::PageNumber { start, .. }, Position::Page { page, size }) => {
                let s = (*size)?;
                if s < 2 {
                    return None;
                }
                let first = page.saturating_sub(*start).saturating_mul(s);
                let new = s / 2;
                *page = *start + first / new;
                *size = Some(new);
                Some(new)
            }
            (_, Position::Offset { limit, .. }) if *limit >= 2 => {
                *limit /= 2;
                Some(*limit)
            }
            _ => None,
        }
    }

    /// The position after this page, or `None` when paging is over. A repeated position
    /// is returned as such: [`Pager::repeats`] tells.
    pub(crate) fn next(&self, page: &PageMeta<'_>, redactor: &Redactor) -> Option<Position> {
        let n = page.records as u64;
        if n == 0
            && (self.stop.empty_page
                || !matches!(
                    self.style,
                    Style::Cursor { .. } | Style::NextUrl { .. } | Style::LinkHeader
                ))
        {
            return None;
        }
        if let (Some(p), Some(doc)) = (&self.stop.has_more, page.doc)
            && p.query(doc).first() == Some(&Value::Bool(false))
        {
            return None;
        }
        if let (Some(p), Some(doc)) = (&self.stop.total, page.doc)
            && let Some(total) = p.query(doc).first().and_then(Value::as_u64)
            && self.records + n >= total
        {
            return None;
        }
        match (&self.style, &self.pos) {
            (Style::None, _) => None,
            (Style::PageNumber { .. }, Position::Page { page, size }) => Some(Position::Page {
                page: page + 1,
                size: *size,
            }),
            (Style::OffsetLimit { .. }, Position::Offset { offset, limit }) => {
                Some(Position::Offset {
                    offset: offset + n,
                    limit: *limit,
                })
            }
            (Style::Cursor { path, .. }, _) => {
                match page.doc.and_then(|d| path.query(d).first().cloned()) {
                    Some(Value::String(s)) if !s.is_empty() => Some(Position::Cursor(s)),
                    Some(Value::Number(n)) => Some(Position::Cursor(n.to_string())),
                    _ => None,
                }
            }
            (Style::NextUrl { path }, _) => {
                let next = page
                    .doc
                    .and_then(|d| path.query(d).first().cloned())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .filter(|s| !s.is_empty())?;
                let url = page.url.join(&next).ok()?;
                Some(Position::Url(self.keep_url(&url, redactor)))
            }
            (Style::LinkHeader, _) => {
                let next = link_next(page.headers)?;
                let url = page.url.join(&next).ok()?;
                Some(Position::Url(self.keep_url(&url, redactor)))
            }
            _ => None,
        }
    }
}

/// A 64-bit hash of a position (the set of positions read holds these, not the URLs).
fn hash_of(pos: &Position) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pos.hash(&mut h);
    h.finish()
}

/// A kept next-page URL made ready to send: each `***` value is the value of the
/// configured query parameter of that name (`value_of`), or, if none is configured, the
/// parameter is left out (a secret the config does not place in the query). The API key
/// is added by the auth, as on every request.
pub(crate) fn refill(mut url: Url, value_of: impl Fn(&str) -> Option<String>) -> Url {
    if !url.query_pairs().any(|(_, v)| v == MASKED) {
        return url;
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(k, v)| match v == MASKED {
            true => value_of(&k).map(|v| (k.into_owned(), v)),
            false => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url
}

/// The `rel="next"` target of the `Link` headers.
pub(crate) fn link_next(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all("link") {
        let Ok(text) = value.to_str() else { continue };
        for part in text.split(',') {
            let mut pieces = part.split(';');
            let Some(target) = pieces.next() else {
                continue;
            };
            let target = target.trim();
            let Some(url) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
                continue;
            };
            let is_next = pieces.any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=").is_some_and(|r| {
                    r.trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if is_next {
                return Some(url.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::config::{OffsetLimitConfig, PageNumberConfig};
    use reqwest::header::HeaderValue;
    use serde_json::json;

    fn meta<'a>(n: usize, doc: Option<&'a Value>, h: &'a HeaderMap, url: &'a Url) -> PageMeta<'a> {
        PageMeta {
            records: n,
            doc,
            headers: h,
            url,
        }
    }

    #[test]
    fn link_headers_and_next_urls_resolve() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                "<https://a/x?page=1>; rel=\"first\", </x?page=3>; rel=\"next last\"",
            ),
        );
        assert_eq!(link_next(&h).as_deref(), Some("/x?page=3"));
        let mut p = Pager::new(&PaginationConfig::LinkHeader, &StopConfig::default()).unwrap();
        let r = Redactor::default();
        let url = Url::parse("https://api.example.com/x?page=2").unwrap();
        let next = p.next(&meta(5, None, &h, &url), &r).unwrap();
        assert_eq!(
            next,
            Position::Url("https://api.example.com/x?page=3".into())
        );
        assert!(!p.repeats(&next));
        p.moved_to(next, &url, &r);
        let again = p
            .next(
                &meta(
                    5,
                    None,
                    &h,
                    &Url::parse("https://api.example.com/x?page=3").unwrap(),
                ),
                &r,
            )
            .unwrap();
        assert!(p.repeats(&again), "same link again is a repeat");
    }

    fn cursor_pager() -> Pager {
        let cfg = PaginationConfig::Cursor(crate::http::config::CursorConfig {
            path: "$.next".into(),
            param: "cursor".into(),
        });
        Pager::new(&cfg, &StopConfig::default()).unwrap()
    }

    /// A → B → A: the cursor is not the current one, but was read before.
    #[test]
    fn a_cycle_longer_than_one_step_is_a_repeat() {
        let mut p = cursor_pager();
        let (h, r) = (HeaderMap::new(), Redactor::default());
        let url = Url::parse("http://x/").unwrap();
        let mut read = Vec::new();
        for answer in ["A", "B", "C", "A"] {
            let doc = json!({"next": answer});
            let next = p.next(&meta(1, Some(&doc), &h, &url), &r).unwrap();
            if p.repeats(&next) {
                break;
            }
            read.push(answer);
            p.moved_to(next, &url, &r);
        }
        assert_eq!(read, ["A", "B", "C"], "the second A is a repeat");
        assert!(p.repeats(&Position::Cursor("B".into())));
        assert!(!p.repeats(&Position::Cursor("D".into())));
    }

    /// The API key's parameter is left out of a kept URL, another secret value is
    /// `***`; a URL without secrets is kept byte for byte.
    #[test]
    fn kept_urls_hold_no_secret_and_refill_from_the_config() {
        let mut p = Pager::new(&PaginationConfig::LinkHeader, &StopConfig::default()).unwrap();
        p.hide(vec!["API_KEY".to_owned()], vec!["page".to_owned()]);
        let r = Redactor::new(
            vec![
                sluice_core::Secret::new("k3y-s3cret"),
                sluice_core::Secret::new("tok-9876"),
            ],
            vec!["api_key".to_owned()],
        );
        let url =
            Url::parse("https://a.example/x?page=2&api_key=k3y-s3cret&token=tok-9876&q=a%20b")
                .unwrap();
        let kept = p.keep_url(&url, &r);
        assert_eq!(kept, "https://a.example/x?page=2&token=***&q=a+b");
        let plain = Url::parse("https://a.example/x?page=2&q=a%20b").unwrap();
        assert_eq!(p.keep_url(&plain, &r), plain.as_str());
        let sent = refill(Url::parse(&kept).unwrap(), |n| {
            (n == "token").then(|| "tok-9876".to_owned())
        });
        assert_eq!(
            sent.as_str(),
            "https://a.example/x?page=2&token=tok-9876&q=a+b"
        );
        let sent = refill(Url::parse(&kept).unwrap(), |_| None);
        assert_eq!(sent.as_str(), "https://a.example/x?page=2&q=a+b");
        assert_eq!(
            p.kept(Position::Url(url.to_string()), &r),
            Position::Url(kept)
        );
    }

    #[test]
    fn stop_conditions_end_paging() {
        let cfg = PaginationConfig::PageNumber(PageNumberConfig {
            param: "page".into(),
            start: 1,
            size_param: None,
            size: None,
        });
        let stop = StopConfig {
            empty_page: true,
            has_more: Some("$.meta.has_more".into()),
            total: Some("$.meta.total".into()),
        };
        let mut p = Pager::new(&cfg, &stop).unwrap();
        let h = HeaderMap::new();
        let url = Url::parse("http://x/").unwrap();
        let more = json!({"meta": {"has_more": true, "total": 10}});
        let r = Redactor::default();
        assert!(p.next(&meta(4, Some(&more), &h, &url), &r).is_some());
        assert!(p.next(&meta(0, Some(&more), &h, &url), &r).is_none());
        let done = json!({"meta": {"has_more": false}});
        assert!(p.next(&meta(4, Some(&done), &h, &url), &r).is_none());
        p.records = 8;
        assert!(
            p.next(&meta(2, Some(&more), &h, &url), &r).is_none(),
            "total reached"
        );
    }

    #[test]
    fn shrinking_keeps_the_first_record_in_place() {
        let cfg = PaginationConfig::PageNumber(PageNumberConfig {
            param: "page".into(),
            start: 1,
            size_param: Some("per_page".into()),
            size: Some(100),
        });
        let mut p = Pager::new(&cfg, &StopConfig::default()).unwrap();
        p.pos = Position::Page {
            page: 3,
            size: Some(100),
        };
        assert_eq!(p.shrink(), Some(50));
        assert_eq!(
            p.pos,
            Position::Page {
                page: 5,
                size: Some(50)
            },
            "record 200 starts page 5 of 50"
        );
        let cfg = PaginationConfig::OffsetLimit(OffsetLimitConfig {
            offset_param: "o".into(),
            limit_param: "l".into(),
            limit: 3,
        });
        let mut p = Pager::new(&cfg, &StopConfig::default()).unwrap();
        assert_eq!(p.shrink(), Some(1));
        assert!(!p.shrinkable());
    }
}
