//! Where the next page is: page numbers, offsets, cursors, next URLs, `Link` headers; and
//! when paging stops (empty page, `has_more: false`, total reached, max pages).

use super::config::{PaginationConfig, StopConfig};
use super::template::Vars;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json_path::JsonPath;
use sluice_core::SourcePosition;
use url::Url;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// A URL given by the API.
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
        })
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

    /// The position after this page, or `None` when paging is over.
    pub(crate) fn next(&self, page: &PageMeta<'_>) -> Option<Position> {
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
            (Style::Cursor { path, .. }, current) => {
                let next = match page.doc.and_then(|d| path.query(d).first().cloned()) {
                    Some(Value::String(s)) if !s.is_empty() => s,
                    Some(Value::Number(n)) => n.to_string(),
                    _ => return None,
                };
                // An API that hands the same cursor back would loop forever.
                (current != &Position::Cursor(next.clone())).then_some(Position::Cursor(next))
            }
            (Style::NextUrl { path }, current) => {
                let next = page
                    .doc
                    .and_then(|d| path.query(d).first().cloned())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .filter(|s| !s.is_empty())?;
                let url = page.url.join(&next).ok()?;
                (current != &Position::Url(url.to_string())).then(|| Position::Url(url.to_string()))
            }
            (Style::LinkHeader, current) => {
                let next = link_next(page.headers)?;
                let url = page.url.join(&next).ok()?;
                (current != &Position::Url(url.to_string())).then(|| Position::Url(url.to_string()))
            }
            _ => None,
        }
    }
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
        let url = Url::parse("https://api.example.com/x?page=2").unwrap();
        let next = p.next(&meta(5, None, &h, &url)).unwrap();
        assert_eq!(
            next,
            Position::Url("https://api.example.com/x?page=3".into())
        );
        p.pos = next;
        assert!(
            p.next(&meta(
                5,
                None,
                &h,
                &Url::parse("https://api.example.com/x?page=3").unwrap()
            ))
            .is_none(),
            "same link again stops"
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
        assert!(p.next(&meta(4, Some(&more), &h, &url)).is_some());
        assert!(p.next(&meta(0, Some(&more), &h, &url)).is_none());
        let done = json!({"meta": {"has_more": false}});
        assert!(p.next(&meta(4, Some(&done), &h, &url)).is_none());
        p.records = 8;
        assert!(
            p.next(&meta(2, Some(&more), &h, &url)).is_none(),
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
