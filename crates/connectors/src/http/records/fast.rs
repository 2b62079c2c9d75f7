//! The fast path from page bytes to Arrow, for the common page: every record an object
//! whose values fit the schema as it stands (declared, or inferred from earlier pages),
//! in scalar or JSON-text columns.
//!
//! The page is never turned into a tree of `serde_json::Value`s: the records are located
//! as slices of the body in one validating pass ([`Scan`]), each record's members are
//! matched to the columns by name, and each value is parsed
//! straight into its column's Arrow builder. JSON-text columns and the records' digests
//! are written by [`canonical_text`], which gives the very bytes `serde_json` would write for
//! the `Value` the general path builds, so that a page gives the same batch, the same
//! batch id and the same JSON text whichever path read it.
//!
//! Anything else (a record that is not an object, a value of another type than its
//! column, a new or missing field, a number `float64` would round, a nested column) makes
//! [`FastColumns::convert`] answer `None`, and the page takes the general path, which
//! applies the schema policy and the bad-record policy as it always did.

use super::{EXACT_MARK, RecordTexts, Shape, marked, may_round, parse, settle, unmark_all};
use arrow::array::timezone::Tz;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use arrow::datatypes::{Date32Type, SchemaRef};
use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Where the records are, for the fast path: the root array, NDJSON lines, or a path of
/// plain member names (`$.data.items`). Other JSON paths (wildcards, filters, indexes)
/// take the general path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawAt {
    Root,
    Ndjson,
    Members(Vec<String>),
}

impl RawAt {
    /// The fast locator of a `records:` setting, when it has one.
    pub(crate) fn of(cfg: &crate::http::config::RecordsConfig) -> Option<RawAt> {
        use crate::http::config::RecordsConfig;
        match cfg {
            RecordsConfig::Root => Some(RawAt::Root),
            RecordsConfig::Ndjson => Some(RawAt::Ndjson),
            RecordsConfig::Path(p) => {
                let rest = p.trim().strip_prefix('$')?;
                let mut keys = Vec::new();
                for part in rest.split('.').skip(1) {
                    let plain = !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if !plain {
                        return None;
                    }
                    keys.push(part.to_owned());
                }
                // `$` alone, or `$foo`: not a plain member path.
                if keys.is_empty() || !rest.starts_with('.') {
                    return None;
                }
                Some(RawAt::Members(keys))
            }
        }
    }
}

/// The records of a page, each as its members (slices of the body), and the envelope
/// around them.
pub(crate) struct RawPage<'a> {
    /// Every record's members, one after the other.
    members: Vec<Member<'a>>,
    /// Where each record's members end in `members`, and its text when that is its
    /// digest text already.
    ends: Vec<End<'a>>,
    /// The document with the records replaced by `null` (a member path only), as the
    /// general path leaves it for pagination.
    pub(crate) doc: Option<Value>,
}

impl<'a> RawPage<'a> {
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Each record's members, in the order of the page, and its text when the record is
    /// written as [`canonical_text`] writes it.
    fn records(&self) -> impl Iterator<Item = (&[Member<'a>], Option<&'a str>)> {
        self.ends.iter().scan(0, |start, end| {
            let r = &self.members[*start..end.members];
            *start = end.members;
            Some((r, end.canonical))
        })
    }
}

/// The end of a record in [`RawPage::members`].
#[derive(Debug, Clone, Copy)]
struct End<'a> {
    members: usize,
    /// The record's text, when it is exactly its digest text: compact, keys strictly
    /// ascending (no duplicates), no escapes in them, every value canonical.
    canonical: Option<&'a str>,
}

/// A member of an object: its key (borrowed from the body unless it has escapes) and its
/// value.
type Member<'a> = (Key<'a>, Val<'a>);

/// A member's value: its text (a slice of the body, valid JSON, no space around it), and
/// whether the scan that found it saw it written as [`canonical_text`] writes it (then it
/// is copied, not checked again).
#[derive(Debug, Clone, Copy)]
struct Val<'a> {
    text: &'a str,
    canonical: bool,
}

/// An object key, borrowed from the body when it has no escapes. (`Cow<str>`'s own
/// `Deserialize` always copies.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Appends an object's members to a vector (a nested object, for [`canonical_at`]).
struct MembersInto<'v, 'a>(&'v mut Vec<Member<'a>>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for MembersInto<'_, 'a> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for MembersInto<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some((key, raw)) = map.next_entry::<Key<'a>, &'a RawValue>()? {
            let text = raw.get().trim_ascii();
            self.0.push((
                key,
                Val {
                    text,
                    canonical: false,
                },
            ));
        }
        Ok(())
    }
}

/// An object's members in a vector of their own (nested values, for [`canonical_text`]).
fn members_of(text: &str) -> Option<Vec<Member<'_>>> {
    let mut out = Vec::with_capacity(8);
    let mut de = serde_json::Deserializer::from_str(text);
    MembersInto(&mut out).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(out)
}

/// One pass over a page's text that finds its records' members. Each value is read by
/// [`canonical_value`], which validates the JSON it accepts (compact, sorted, no escapes:
/// what most APIs send) and so learns both where it ends and that it needs no rewriting;
/// a value it refuses is read by `serde_json` instead. Every byte of a value is scanned
/// once, where a `serde_json` visitor (which validates as it skips) and the canonical
/// check after it scanned it twice. The structure between the values (objects, arrays,
/// keys, white space) is JSON's grammar as `serde_json` reads it; anything else is
/// refused (`None`), and the general path says what is wrong.
struct Scan<'a> {
    text: &'a str,
    at: usize,
    scratch: Vec<u8>,
    /// White space was skipped (since the scan of the current object began).
    spaced: bool,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Scan<'a> {
        Scan {
            text,
            at: 0,
            scratch: Vec::new(),
            spaced: false,
        }
    }

    fn space(&mut self) {
        let t = self.text.as_bytes();
        while matches!(t.get(self.at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
            self.spaced = true;
        }
    }

    /// The next byte after white space, consumed.
    fn next(&mut self) -> Option<u8> {
        self.space();
        let b = *self.text.as_bytes().get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// Whether the next byte after white space is `b` (consumed if so).
    fn eat(&mut self, b: u8) -> bool {
        self.space();
        let there = self.text.as_bytes().get(self.at) == Some(&b);
        self.at += usize::from(there);
        there
    }

    /// Whether only white space is left.
    fn at_end(&mut self) -> bool {
        self.space();
        self.at == self.text.len()
    }

    /// A value at `at` (after white space), as `serde_json` reads one.
    fn value(&mut self) -> Option<Val<'a>> {
        self.space();
        let start = self.at;
        if canonical_value(self.text, &mut self.at, 1, &mut self.scratch) {
            return Some(Val {
                text: &self.text[start..self.at],
                canonical: true,
            });
        }
        self.at = start;
        let text = self.serde_value()?;
        Some(Val {
            text,
            canonical: false,
        })
    }

    /// The value at `at`, read by `serde_json` (which validates it), `at` moved past it.
    fn serde_value(&mut self) -> Option<&'a str> {
        let rest = &self.text[self.at..];
        let mut de = serde_json::Deserializer::from_str(rest);
        let raw = <&'a RawValue>::deserialize(&mut de).ok()?.get();
        // A slice of `rest`: where it ends there is where the scan goes on.
        let offset = (raw.as_ptr() as usize).checked_sub(rest.as_ptr() as usize)?;
        self.at += offset + raw.len();
        Some(raw)
    }

    /// An object key at `at` (after white space), and the `:` after it.
    fn key(&mut self) -> Option<Key<'a>> {
        self.space();
        let quote = self.at;
        let key = match plain_string(self.text.as_bytes(), &mut self.at) {
            // Between two ASCII quotes: on char boundaries.
            Some(_) => Key(Cow::Borrowed(&self.text[quote + 1..self.at - 1])),
            None if self.text.as_bytes().get(self.at) == Some(&b'"') => {
                let raw = self.serde_value()?;
                serde_json::from_str::<String>(raw)
                    .ok()
                    .map(|k| Key(Cow::Owned(k)))?
            }
            None => return None,
        };
        self.eat(b':').then_some(key)
    }

    /// An object's members, appended to `out`; its text when that is written as
    /// [`canonical_text`] writes it (see [`End::canonical`]).
    fn object(&mut self, out: &mut Vec<Member<'a>>) -> Option<End<'a>> {
        if !self.eat(b'{') {
            return None;
        }
        let start = self.at - 1;
        self.spaced = false;
        let mut canonical = true;
        let mut previous: Option<&'a str> = None;
        if !self.eat(b'}') {
            loop {
                let key = self.key()?;
                let value = self.value()?;
                canonical &= value.canonical
                    && match &key.0 {
                        Cow::Borrowed(k) => {
                            let ascending =
                                previous.is_none_or(|p| before(p.as_bytes(), k.as_bytes()));
                            previous = Some(k);
                            ascending
                        }
                        Cow::Owned(_) => false,
                    };
                out.push((key, value));
                match self.next()? {
                    b',' => {}
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        Some(End {
            members: out.len(),
            canonical: (canonical && !self.spaced).then(|| &self.text[start..self.at]),
        })
    }

    /// An array of objects, their members appended to `members` and each one's end to
    /// `ends`.
    fn records(&mut self, members: &mut Vec<Member<'a>>, ends: &mut Vec<End<'a>>) -> Option<()> {
        if !self.eat(b'[') {
            return None;
        }
        if self.eat(b']') {
            return Some(());
        }
        loop {
            let end = self.object(members)?;
            ends.push(end);
            match self.next()? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// One level of a member path: the envelope at this level (the records replaced by
    /// `null`), and whether the records were there.
    fn level(
        &mut self,
        keys: &[String],
        members: &mut Vec<Member<'a>>,
        ends: &mut Vec<End<'a>>,
    ) -> Option<(Value, bool)> {
        let Some((first, rest)) = keys.split_first() else {
            self.records(members, ends)?;
            return Some((Value::Null, true));
        };
        let mut envelope = serde_json::Map::new();
        let mut found = false;
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some((Value::Object(envelope), false));
        }
        loop {
            let key = self.key()?.0.into_owned();
            if key == *first {
                if found {
                    // The last of duplicate keys wins in a parsed document: not the plain
                    // case.
                    return None;
                }
                let (inner, there) = self.level(rest, members, ends)?;
                found = there;
                envelope.insert(key, inner);
            } else {
                // The envelope as the general path reads it (numbers `float64` would
                // round as their text).
                let value = self.value()?;
                let (mut v, exact) = parse(value.text.as_bytes()).ok()?;
                if exact {
                    unmark_all(&mut v);
                }
                envelope.insert(key, v);
            }
            match self.next()? {
                b',' => {}
                b'}' => return Some((Value::Object(envelope), found)),
                _ => return None,
            }
        }
    }
}

/// Locates the records of a page in one pass over its body, without building their
/// tree. `None` when the page is not the plain case (not UTF-8 or not JSON, the path
/// missing or not an array of objects): the general path then says what is wrong.
pub(crate) fn locate<'a>(body: &'a [u8], at: &RawAt) -> Option<RawPage<'a>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut members = Vec::with_capacity(body.len() / 24);
    let mut ends = Vec::with_capacity(body.len() / 256);
    let doc = match at {
        RawAt::Root => {
            let mut scan = Scan::new(text);
            scan.records(&mut members, &mut ends)?;
            scan.at_end().then_some(None)?
        }
        RawAt::Ndjson => {
            for line in text.split('\n') {
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                let mut scan = Scan::new(line);
                let end = scan.object(&mut members)?;
                if !scan.at_end() {
                    return None;
                }
                ends.push(end);
            }
            None
        }
        RawAt::Members(keys) => {
            let mut scan = Scan::new(text);
            let (doc, found) = scan.level(keys, &mut members, &mut ends)?;
            if !(found && scan.at_end()) {
                return None;
            }
            Some(doc)
        }
    };
    Some(RawPage { members, ends, doc })
}

/// How [`canonical_text`] writes numbers `float64` would round: as the marked strings the
/// records hold (for digests), or as the numbers they are (JSON text).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Numbers {
    Marked,
    Literal,
}

/// Deeper than this, a value takes the general path (which refuses it as the parser does).
const MAX_DEPTH: usize = 128;

/// Writes `raw` exactly as `serde_json` writes the `Value` the general path parses from
/// it: compact, members sorted by key (the last of duplicates kept), strings escaped as
/// `serde_json` escapes them, numbers as they settle ([`settle`]). `None` when the value
/// is deeper than [`MAX_DEPTH`]; else whether a number was written as its literal where
/// [`Numbers::Marked`] writes a marked string (the two texts differ only then).
#[cfg(test)]
pub(crate) fn canonical(raw: &RawValue, numbers: Numbers, out: &mut Vec<u8>) -> Option<bool> {
    canonical_text(raw.get(), numbers, out, 0)
}

/// [`canonical_at`], but a value that is written so already (compact, keys in order: what
/// `serde_json`, Go and other encoders of sorted maps send) is copied after one scan
/// instead of being taken apart level by level.
fn canonical_text(text: &str, numbers: Numbers, out: &mut Vec<u8>, depth: usize) -> Option<bool> {
    let text = text.trim_ascii();
    if is_canonical(text, depth) {
        out.extend_from_slice(text.as_bytes());
        return Some(false);
    }
    canonical_at(text, numbers, out, depth)
}

/// Whether `text` is exactly what [`canonical_at`] writes for it, in either [`Numbers`]
/// mode: no whitespace, every object's keys strictly ascending (so no duplicates), no
/// escapes in keys or strings, numbers as `serde_json` writes them back and none that
/// `float64` would round. A value it refuses is rewritten, so refusing is always safe.
fn is_canonical(text: &str, depth: usize) -> bool {
    let mut at = 0;
    let mut scratch = Vec::new();
    canonical_value(text, &mut at, depth, &mut scratch) && at == text.len()
}

fn canonical_value(text: &str, at: &mut usize, depth: usize, scratch: &mut Vec<u8>) -> bool {
    let t = text.as_bytes();
    if depth > MAX_DEPTH {
        return false;
    }
    match t.get(*at) {
        Some(b'{') => {
            *at += 1;
            if t.get(*at) == Some(&b'}') {
                *at += 1;
                return true;
            }
            let mut previous: Option<&[u8]> = None;
            loop {
                let Some(key) = plain_string(t, at) else {
                    return false;
                };
                if previous.is_some_and(|p| !before(p, key)) || t.get(*at) != Some(&b':') {
                    return false;
                }
                previous = Some(key);
                *at += 1;
                if !canonical_value(text, at, depth + 1, scratch) {
                    return false;
                }
                match t.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b'}') => {
                        *at += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        Some(b'[') => {
            *at += 1;
            if t.get(*at) == Some(&b']') {
                *at += 1;
                return true;
            }
            loop {
                if !canonical_value(text, at, depth + 1, scratch) {
                    return false;
                }
                match t.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b']') => {
                        *at += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        Some(b'"') => plain_string(t, at).is_some(),
        Some(b't') => word(t, at, b"true"),
        Some(b'f') => word(t, at, b"false"),
        Some(b'n') => word(t, at, b"null"),
        Some(b'-' | b'0'..=b'9') => {
            let start = *at;
            while matches!(
                t.get(*at),
                Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            ) {
                *at += 1;
            }
            // ASCII bytes from `start`: on char boundaries.
            let token = &text[start..*at];
            if plain_number(token.as_bytes()) {
                return true;
            }
            if may_round(token.as_bytes()) {
                return false;
            }
            // Written back as `serde_json` writes the number it parses (not an integer: a
            // float, parsed as the general path's `Value` has it, which is not always the
            // correctly rounded one; out of range is not canonical).
            let Ok(v) = serde_json::from_str::<f64>(token) else {
                return false;
            };
            scratch.clear();
            v.is_finite()
                && serde_json::to_writer(&mut *scratch, &v).is_ok()
                && scratch == token.as_bytes()
        }
        _ => false,
    }
}

/// Whether key `a` sorts before key `b` (byte order, as `str`'s), compared in line: keys
/// are short, shorter than a call of `memcmp` is worth.
#[inline]
fn before(a: &[u8], b: &[u8]) -> bool {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x < y;
        }
    }
    a.len() < b.len()
}

/// Whether two keys are equal, compared in line (see [`before`]).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// A string without escapes or control characters at `at`: its contents, `at` moved past
/// it.
#[inline]
fn plain_string<'t>(t: &'t [u8], at: &mut usize) -> Option<&'t [u8]> {
    if t.get(*at) != Some(&b'"') {
        return None;
    }
    let rest = &t[*at + 1..];
    let end = string_stop(rest)?;
    if rest[end] != b'"' {
        return None;
    }
    *at += end + 2;
    Some(&rest[..end])
}

/// Where the first quote, backslash or control character in `rest` is: eight bytes at a
/// time, then byte by byte.
#[inline]
fn string_stop(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = rest.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is zero (or below 0x20), and in no byte
        // before the first such one: the lowest set bit is the first stop.
        let stops = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w);
        let stops = stops & HIGH;
        if stops != 0 {
            return Some(at + (stops.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|p| at + p)
}

fn word(t: &[u8], at: &mut usize, w: &[u8]) -> bool {
    if t[*at..].starts_with(w) {
        *at += w.len();
        true
    } else {
        false
    }
}

fn canonical_at(text: &str, numbers: Numbers, out: &mut Vec<u8>, depth: usize) -> Option<bool> {
    if depth > MAX_DEPTH {
        return None;
    }
    let text = text.trim_ascii();
    let mut literal = false;
    match text.as_bytes().first()? {
        b'{' => {
            let members = members_of(text)?;
            literal = write_object(&members, numbers, out, depth)?;
        }
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                literal |= canonical_at(v.get(), numbers, out, depth + 1)?;
            }
            out.push(b']');
        }
        b'"' => match text.contains('\\') {
            // Without escapes the text is what `serde_json` writes (it escapes only
            // quotes, backslashes and control characters, which must be escaped here).
            false => out.extend_from_slice(text.as_bytes()),
            true => {
                let s: Cow<'_, str> = serde_json::from_str(text).ok()?;
                serde_json::to_writer(&mut *out, s.as_ref()).ok()?;
            }
        },
        b't' | b'f' | b'n' => out.extend_from_slice(text.as_bytes()),
        _ => literal = write_number(text, numbers, out)?,
    }
    Some(literal)
}

/// An object's members as `serde_json` writes its map: sorted by key (stable, so that of
/// equal keys the last, the one a parsed map keeps, is written), compact.
fn write_object(
    members: &[Member<'_>],
    numbers: Numbers,
    out: &mut Vec<u8>,
    depth: usize,
) -> Option<bool> {
    let mut literal = false;
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| members[a].0.cmp(&members[b].0));
    out.push(b'{');
    let mut first = true;
    for (n, &i) in order.iter().enumerate() {
        let (k, v) = &members[i];
        if order.get(n + 1).is_some_and(|&next| members[next].0 == *k) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_key(k, out)?;
        out.push(b':');
        literal |= canonical_at(v.text, numbers, out, depth + 1)?;
    }
    out.push(b'}');
    Some(literal)
}

/// A key as `serde_json` writes it. Borrowed from the body, it had no escapes, so no
/// character that needs one (control characters cannot appear raw in JSON strings).
fn write_key(k: &Key<'_>, out: &mut Vec<u8>) -> Option<()> {
    match &k.0 {
        Cow::Borrowed(s) => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(s) => serde_json::to_writer(&mut *out, s).ok()?,
    }
    Some(())
}

/// An integer literal `serde_json` holds as it is, and writes back unchanged (an `i64` or
/// a `u64`; `-0` is a float there).
fn plain_int(token: &str) -> bool {
    let digits = token.strip_prefix('-').unwrap_or(token);
    let syntax = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && token != "-0";
    syntax && (token.len() <= 18 || token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok())
}

/// A decimal `serde_json` reads exactly and writes back unchanged, told without parsing
/// it: at most 15 significant digits, the last one not 0, no exponent, at least 0.1 and
/// below 10^15 in size. Such a number is one division of integers `f64` holds (so
/// `serde_json` and `str::parse` both read the correctly rounded `f64`), no two of them
/// are the same `f64`, so the shortest text that reads back as it is its own, and in that
/// range it is written without an exponent.
fn plain_decimal(token: &str) -> bool {
    let digits = token.strip_prefix('-').unwrap_or(token);
    let Some((int, frac)) = digits.split_once('.') else {
        return false;
    };
    let significant = if int == "0" { 0 } else { int.len() } + frac.len();
    (int == "0" || !int.starts_with('0'))
        && !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !frac.ends_with('0')
        && (int != "0" || !frac.starts_with('0'))
        && significant <= 15
}

/// `plain_int(token) || plain_decimal(token)`, told in one pass over the token.
fn plain_number(token: &[u8]) -> bool {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    let int_len = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    let int = &digits[..int_len];
    if int.is_empty() || (int[0] == b'0' && int_len > 1) {
        return false;
    }
    let Some((&dot, frac)) = digits[int_len..].split_first() else {
        // All digits: an integer (long ones checked for range as `plain_int` does).
        return token != b"-0"
            && (token.len() <= 18 || std::str::from_utf8(token).is_ok_and(plain_int));
    };
    let zero = int == b"0";
    dot == b'.'
        && frac.iter().all(u8::is_ascii_digit)
        && frac.last().is_some_and(|&d| d != b'0')
        && (!zero || frac[0] != b'0')
        && (if zero { 0 } else { int_len }) + frac.len() <= 15
}

/// The `f64` of a [`plain_decimal`]: its digits as an integer below 10^15 divided by a
/// power of ten up to 10^15, both exact in `f64`, so the one rounding is the division's,
/// which is the correctly rounded value `str::parse` reads too.
fn decimal_value(token: &str) -> f64 {
    const POWERS: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (mut digits, mut after, mut point) = (0u64, 0usize, false);
    for b in token.bytes() {
        match b {
            b'0'..=b'9' => {
                digits = digits * 10 + u64::from(b - b'0');
                after += usize::from(point);
            }
            b'.' => point = true,
            _ => {}
        }
    }
    let v = digits as f64 / POWERS[after.min(15)];
    if token.starts_with('-') { -v } else { v }
}

/// Whether the number was written as its literal where a marked string would differ.
fn write_number(token: &str, numbers: Numbers, out: &mut Vec<u8>) -> Option<bool> {
    if plain_int(token) {
        out.extend_from_slice(token.as_bytes());
        return Some(false);
    }
    let v = number_value(token)?;
    match (&v, numbers) {
        (Value::String(s), Numbers::Literal) => {
            out.extend_from_slice(marked(s)?.as_bytes());
            return Some(true);
        }
        _ => serde_json::to_writer(&mut *out, &v).ok()?,
    }
    Some(false)
}

/// The `Value` the general path makes of a number token: a number, or the marked string
/// of a number `float64` would round.
fn number_value(token: &str) -> Option<Value> {
    if may_round(token.as_bytes()) {
        let mut v = Value::String(format!("{EXACT_MARK}{token}"));
        let mut exact = false;
        settle(&mut v, &mut exact);
        Some(v)
    } else {
        serde_json::from_str(token).ok()
    }
}

/// Microseconds since the epoch of the one form most APIs send,
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, read without a time zone lookup: `None` for any
/// other text (the caller then asks arrow's parser, whose answer this one equals).
fn rfc3339_utc_micros(s: &[u8]) -> Option<i64> {
    fn digits(s: &[u8]) -> Option<u32> {
        s.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    }
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || s[10] != b'T' {
        return None;
    }
    if s[13] != b':' || s[16] != b':' || s.last() != Some(&b'Z') {
        return None;
    }
    let (year, month, day) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    let (hour, minute, second) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    let fraction = &s[19..s.len() - 1];
    let nanos = match fraction.split_first() {
        None => 0,
        Some((b'.', f)) if (1..=9).contains(&f.len()) => digits(f)? * 10u32.pow(9 - f.len() as u32),
        Some(_) => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    // Year 0 and leap seconds are left to arrow's parser.
    if year == 0 || day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar, in eras of
    // 400 years that begin on 1 March).
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let march_based = i64::from((month + 9) % 12);
    let day_of_year = (153 * march_based + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(seconds * 1_000_000 + i64::from(nanos / 1000))
}

/// A value parsed as the general path parses it (numbers `float64` would round kept as
/// marked text).
fn value_of(text: &str) -> Option<Value> {
    parse(text.as_bytes()).ok().map(|(v, _)| v)
}

/// One column's builder.
enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    UInt(UInt64Builder),
    Float(Float64Builder),
    /// `string` (JSON strings only; other scalars take the general path).
    Str(StringBuilder),
    /// JSON text of any value.
    Json(StringBuilder),
    /// `text`: strings as they are, objects and lists as JSON text (other scalars take
    /// the general path).
    Text(StringBuilder),
    /// A column with no value yet: nulls only.
    Null(StringBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
}

/// The columns of a schema, when the fast path can build them all.
pub(crate) struct FastColumns {
    names: Vec<String>,
    shapes: Vec<Shape>,
    nullable: Vec<bool>,
    /// Inferred: a field the schema does not have is drift (the general path says so).
    strict: bool,
    schema: SchemaRef,
    utc: Tz,
    /// Each text column's bytes per record on the page before (0: none read yet), so that
    /// its builder is sized once instead of growing by doubling (and copying).
    per_record: Mutex<Vec<usize>>,
}

/// A page the fast path built.
pub(crate) struct FastPage {
    pub(crate) batch: RecordBatch,
    /// Each record's JSON text, as the general path's `RecordTexts::of` has it.
    pub(crate) texts: RecordTexts,
    /// The value of the incremental field in each record that has it.
    pub(crate) watermarks: Vec<Value>,
}

impl FastColumns {
    /// `None` when a column is of a shape the fast path does not build (structs, lists,
    /// decimals).
    pub(crate) fn new(
        fields: &[(String, Shape)],
        schema: &SchemaRef,
        declared: bool,
    ) -> Option<FastColumns> {
        let simple = fields.iter().all(|(_, s)| {
            matches!(
                s,
                Shape::Null
                    | Shape::Bool
                    | Shape::Int
                    | Shape::UInt
                    | Shape::Float
                    | Shape::Str
                    | Shape::Text
                    | Shape::Json
                    | Shape::Timestamp
                    | Shape::Date
            )
        });
        if !simple {
            return None;
        }
        Some(FastColumns {
            names: fields.iter().map(|(n, _)| n.clone()).collect(),
            shapes: fields.iter().map(|(_, s)| s.clone()).collect(),
            nullable: schema.fields().iter().map(|f| f.is_nullable()).collect(),
            strict: !declared,
            schema: schema.clone(),
            utc: "UTC".parse().ok()?,
            per_record: Mutex::new(vec![0; fields.len()]),
        })
    }

    fn builders(&self, rows: usize, bytes: usize) -> Vec<Builder> {
        let even = bytes / self.shapes.len().max(1);
        let per_record = self
            .per_record
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        self.shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // As on the page before, an eighth more; never past the page's own size.
                let per = match per_record.get(i) {
                    Some(&n) if n > 0 => (n * rows + n * rows / 8).min(bytes),
                    _ => even,
                };
                (s, per)
            })
            .map(|(s, per)| match s {
                Shape::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
                Shape::Int => Builder::Int(Int64Builder::with_capacity(rows)),
                Shape::UInt => Builder::UInt(UInt64Builder::with_capacity(rows)),
                Shape::Float => Builder::Float(Float64Builder::with_capacity(rows)),
                Shape::Str => Builder::Str(StringBuilder::with_capacity(rows, per)),
                Shape::Json => Builder::Json(StringBuilder::with_capacity(rows, per)),
                Shape::Text => Builder::Text(StringBuilder::with_capacity(rows, per)),
                Shape::Timestamp => Builder::Timestamp(
                    TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
                ),
                Shape::Date => Builder::Date(Date32Builder::with_capacity(rows)),
                _ => Builder::Null(StringBuilder::with_capacity(rows, 0)),
            })
            .collect()
    }

    /// The page as a batch, or `None` when a record does not fit the schema as it is
    /// (the general path then reads the page). `watermark`: the incremental field's
    /// dotted path, whose values come back with the batch.
    pub(crate) fn convert(
        &self,
        page: &RawPage<'_>,
        body_bytes: usize,
        watermark: Option<&str>,
    ) -> Option<FastPage> {
        let rows = page.len();
        let mut builders = self.builders(rows, body_bytes);
        let mut slots: Vec<Option<usize>> = vec![None; self.names.len()];
        let mut seen = vec![false; self.names.len()];
        // The records' texts are the body less its envelope, plus an 8-byte length each
        // (and rarely a little more: a number marked as a string).
        let mut texts_of_records = RecordTexts::with_capacity(body_bytes + rows * 16, rows);
        let mut watermarks = Vec::new();
        let (mark_top, mark_rest) = match watermark {
            Some(p) => match p.split_once('.') {
                Some((top, rest)) => (Some(top), Some(rest)),
                None => (Some(p), None),
            },
            None => (None, None),
        };
        // The JSON text of the record's JSON-text columns, kept for its digest.
        let mut texts = Vec::with_capacity(1024);
        let mut spans: Vec<Option<(usize, usize)>> = Vec::new();
        let mut scratch = Vec::with_capacity(1024);
        let mut order = Vec::new();
        // The column of each member of the record before: records of a page mostly list
        // their fields in one order, so a member's column is looked up once, not compared
        // with every column's name.
        let mut guess: Vec<usize> = Vec::new();
        // Whether the record before had a column for each of its members: then a record
        // whose members all are where `guess` expects them has the same names in the same
        // order, and the digest's key order (`written`) is the one worked out for it.
        let mut written: Vec<usize> = Vec::new();
        let mut before_matched = false;
        for (members, written_so) in page.records() {
            slots.iter_mut().for_each(|s| *s = None);
            let mut mark = None;
            let mut as_before = before_matched && members.len() == guess.len();
            let mut matched_all = true;
            guess.resize(members.len(), usize::MAX);
            for (m, (k, v)) in members.iter().enumerate() {
                let column = match self.names.get(guess[m]) {
                    Some(n) if same(n.as_bytes(), k.0.as_bytes()) => Some(guess[m]),
                    _ => {
                        as_before = false;
                        self.names.iter().position(|n| *n == k.0)
                    }
                };
                if let Some(i) = column {
                    guess[m] = i;
                }
                match column {
                    Some(i) => {
                        slots[i] = Some(m);
                        seen[i] = true;
                    }
                    None if self.strict => return None,
                    None => matched_all = false,
                }
                if mark_top == Some(k.0.as_ref()) {
                    mark = Some(*v);
                }
            }
            texts.clear();
            spans.clear();
            spans.resize(members.len(), None);
            for (i, b) in builders.iter_mut().enumerate() {
                match slots[i] {
                    None => {
                        if !self.nullable[i] {
                            return None;
                        }
                        append_null(b);
                    }
                    Some(m) => {
                        let start = texts.len();
                        let keep = written_so.is_none();
                        let same =
                            self.append(b, members[m].1, self.nullable[i], keep, &mut texts)?;
                        if same && texts.len() > start {
                            spans[m] = Some((start, texts.len()));
                        }
                    }
                }
            }
            // A record written as its digest text: that text, as it is.
            if let Some(text) = written_so {
                texts_of_records.push(text.as_bytes());
                // `written` was not worked out for it.
                before_matched = false;
                if let Some(m) = mark {
                    watermarks.extend(self.watermark(m, mark_rest)?);
                }
                continue;
            }
            // The digest: the record as `serde_json` writes it (keys in order, the last of
            // equal keys), JSON-text columns copied.
            if !as_before {
                order.clear();
                order.extend(0..members.len());
                order.sort_by(|&a, &b| members[a].0.cmp(&members[b].0));
                written.clear();
                for (n, &m) in order.iter().enumerate() {
                    if order
                        .get(n + 1)
                        .is_none_or(|&next| members[next].0 != members[m].0)
                    {
                        written.push(m);
                    }
                }
            }
            before_matched = matched_all;
            scratch.clear();
            scratch.push(b'{');
            for (n, &m) in written.iter().enumerate() {
                let (k, v) = &members[m];
                if n > 0 {
                    scratch.push(b',');
                }
                write_key(k, &mut scratch)?;
                scratch.push(b':');
                match spans[m] {
                    Some((a, b)) => scratch.extend_from_slice(&texts[a..b]),
                    None if v.canonical => scratch.extend_from_slice(v.text.as_bytes()),
                    None => {
                        canonical_text(v.text, Numbers::Marked, &mut scratch, 1)?;
                    }
                }
            }
            scratch.push(b'}');
            texts_of_records.push(&scratch);
            if let Some(m) = mark {
                watermarks.extend(self.watermark(m, mark_rest)?);
            }
        }
        // A field of an inferred schema that no record of the page has: the general path
        // reports it as removed.
        if self.strict && seen.iter().any(|s| !s) {
            return None;
        }
        if rows > 0
            && let Ok(mut per_record) = self.per_record.lock()
        {
            for (n, b) in per_record.iter_mut().zip(&builders) {
                if let Builder::Str(b) | Builder::Json(b) | Builder::Text(b) = b {
                    *n = b.values_slice().len() / rows;
                }
            }
        }
        let columns: Vec<ArrayRef> = builders.into_iter().map(finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns).ok()?;
        Some(FastPage {
            batch,
            texts: texts_of_records,
            watermarks,
        })
    }

    /// The incremental field's value in a record (`m`: its top member; `rest`: the
    /// path below it), when the record has it.
    fn watermark(&self, m: Val<'_>, rest: Option<&str>) -> Option<Option<Value>> {
        let v = value_of(m.text)?;
        Some(match rest {
            None => Some(v),
            Some(rest) => super::field(&v, rest).cloned(),
        })
    }

    /// Appends one value to its column, or `None` when it does not fit as it is. JSON
    /// text goes through `text` (appended, when `keep`: the record's digest is built),
    /// and the answer says whether it is also the value's text in the record's digest.
    fn append(
        &self,
        b: &mut Builder,
        value: Val<'_>,
        nullable: bool,
        keep: bool,
        text: &mut Vec<u8>,
    ) -> Option<bool> {
        let t = value.text;
        if t == "null" {
            if !nullable {
                return None;
            }
            append_null(b);
            return Some(false);
        }
        let first = *t.as_bytes().first()?;
        match b {
            Builder::Bool(b) => match t {
                "true" => b.append_value(true),
                "false" => b.append_value(false),
                _ => return None,
            },
            Builder::Int(b) => {
                if !plain_int(t) {
                    return None;
                }
                b.append_value(t.parse().ok()?);
            }
            Builder::UInt(b) => {
                if !(plain_int(t) && first.is_ascii_digit()) {
                    return None;
                }
                b.append_value(t.parse().ok()?);
            }
            Builder::Float(b) => {
                if !(first == b'-' || first.is_ascii_digit()) {
                    return None;
                }
                let v = if plain_int(t) {
                    // As the general path: an integer to `float64` by `as`.
                    match t.parse::<i64>() {
                        Ok(i) => i as f64,
                        Err(_) => t.parse::<u64>().ok()? as f64,
                    }
                } else if plain_decimal(t) {
                    // The `f64` `serde_json` reads too (see `plain_decimal`).
                    decimal_value(t)
                } else {
                    match number_value(t)? {
                        Value::Number(n) => n.as_f64()?,
                        // A number `float64` rounds: the general path says how.
                        _ => return None,
                    }
                };
                b.append_value(v);
            }
            Builder::Str(b) => b.append_value(string_of(value)?),
            Builder::Text(b) => match first {
                b'"' => b.append_value(string_of(value)?),
                b'{' | b'[' => return json_into(b, value, keep, text),
                _ => return None,
            },
            Builder::Json(b) => return json_into(b, value, keep, text),
            Builder::Timestamp(b) => {
                if first != b'"' {
                    return None;
                }
                let s = string_of(value)?;
                let micros = match rfc3339_utc_micros(s.as_bytes()) {
                    Some(micros) => micros,
                    None => string_to_datetime(&self.utc, &s).ok()?.timestamp_micros(),
                };
                b.append_value(micros);
            }
            Builder::Date(b) => {
                if first != b'"' {
                    return None;
                }
                b.append_value(Date32Type::parse(&string_of(value)?)?);
            }
            Builder::Null(_) => return None,
        }
        Some(false)
    }
}

/// A value's JSON text into a column, through `text`; whether that is also its text in
/// the record's digest.
fn json_into(
    b: &mut StringBuilder,
    value: Val<'_>,
    keep: bool,
    text: &mut Vec<u8>,
) -> Option<bool> {
    let t = value.text;
    if value.canonical || is_canonical(t, 0) {
        // Copied as it is (see `canonical_text`): text already, no UTF-8 check needed.
        if keep {
            text.extend_from_slice(t.as_bytes());
        }
        b.append_value(t);
        return Some(keep);
    }
    let start = text.len();
    let literal = canonical_at(t, Numbers::Literal, text, 0)?;
    b.append_value(std::str::from_utf8(&text[start..]).ok()?);
    Some(!literal)
}

/// A JSON string's text; `None` when the value is not a string.
fn string_of(value: Val<'_>) -> Option<Cow<'_, str>> {
    let t = value.text;
    if !t.starts_with('"') {
        return None;
    }
    // A canonical string has no escapes (see `plain_string`).
    if value.canonical || !t.contains('\\') {
        return Some(Cow::Borrowed(&t[1..t.len() - 1]));
    }
    serde_json::from_str::<String>(t).ok().map(Cow::Owned)
}

fn append_null(b: &mut Builder) {
    match b {
        Builder::Bool(b) => b.append_null(),
        Builder::Int(b) => b.append_null(),
        Builder::UInt(b) => b.append_null(),
        Builder::Float(b) => b.append_null(),
        Builder::Str(b) | Builder::Json(b) | Builder::Text(b) | Builder::Null(b) => b.append_null(),
        Builder::Timestamp(b) => b.append_null(),
        Builder::Date(b) => b.append_null(),
    }
}

fn finish(b: Builder) -> ArrayRef {
    match b {
        Builder::Bool(mut b) => Arc::new(b.finish()),
        Builder::Int(mut b) => Arc::new(b.finish()),
        Builder::UInt(mut b) => Arc::new(b.finish()),
        Builder::Float(mut b) => Arc::new(b.finish()),
        Builder::Str(mut b)
        | Builder::Json(mut b)
        | Builder::Text(mut b)
        | Builder::Null(mut b) => Arc::new(b.finish()),
        Builder::Timestamp(mut b) => Arc::new(b.finish()),
        Builder::Date(mut b) => Arc::new(b.finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Converter, RecordsAt, extract, json_text};
    use super::*;
    use crate::http::config::{ColumnConfig, ColumnType, NestedMode, RecordsConfig, SchemaConfig};
    use proptest::prelude::*;

    fn raw(t: &str) -> &RawValue {
        serde_json::from_str(t).expect("valid JSON")
    }

    /// `canonical` against what the general path writes for the same text.
    fn same_as_general_path(t: &str) -> Result<(), TestCaseError> {
        let (v, _) = parse(t.as_bytes()).expect("valid JSON");
        let mut marked = Vec::new();
        canonical(raw(t), Numbers::Marked, &mut marked).expect("canonical");
        prop_assert_eq!(
            String::from_utf8(marked).unwrap(),
            serde_json::to_string(&v).unwrap(),
            "{}",
            t
        );
        let mut literal = Vec::new();
        canonical(raw(t), Numbers::Literal, &mut literal).expect("canonical");
        prop_assert_eq!(String::from_utf8(literal).unwrap(), json_text(&v), "{}", t);
        Ok(())
    }

    /// JSON text with numbers of any length, escapes, duplicate keys and spaces anywhere.
    fn json_text_strategy() -> impl Strategy<Value = String> {
        let ws = prop_oneof![Just(""), Just(" "), Just("\n  ")];
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            "-?[1-9][0-9]{17,40}",
            "-?(0|[1-9][0-9]{0,20})\\.[0-9]{1,25}",
            "-?[1-9](\\.[0-9]{1,18})?[eE][+-]?[0-9]{1,3}",
            Just("-0".to_owned()),
            Just("-0.0".to_owned()),
            "\\PC{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""a\/b\u00e9\n\"""#.to_owned()),
        ];
        leaf.prop_recursive(5, 40, 5, move |inner| {
            let ws = ws.clone();
            prop_oneof![
                prop::collection::vec((inner.clone(), ws.clone()), 0..5).prop_map(|items| {
                    let body: Vec<String> = items
                        .into_iter()
                        .map(|(v, w)| format!("{w}{v}{w}"))
                        .collect();
                    format!("[{}]", body.join(","))
                }),
                prop::collection::vec(("[a-c]{0,2}|\\PC{0,3}", inner, ws), 0..6).prop_map(
                    |members| {
                        let body: Vec<String> = members
                            .into_iter()
                            .map(|(k, v, w)| {
                                format!("{w}{}{w}:{w}{v}", serde_json::to_string(&k).unwrap())
                            })
                            .collect();
                        format!("{{{}}}", body.join(","))
                    }
                ),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn canonical_text_is_what_the_general_path_writes(t in json_text_strategy()) {
            same_as_general_path(&t)?;
        }

        /// Text that is compact and sorted already (as `serde_json` writes it) is copied
        /// as it is, and that copy is what the general path writes.
        #[test]
        fn text_written_so_already_is_copied(t in json_text_strategy()) {
            // (Numbers out of `f64`'s range do not parse into a `Value`.)
            let parsed = serde_json::from_str::<Value>(&t);
            prop_assume!(parsed.is_ok());
            same_as_general_path(&serde_json::to_string(&parsed.unwrap()).unwrap())?;
        }

        /// The scan finds every record's members as written (keys unescaped, values as
        /// their text), whatever the white space, escapes and duplicate keys; a value it
        /// calls canonical is one [`canonical_text`] copies as it is.
        #[test]
        fn a_page_is_located_member_by_member(
            records in prop::collection::vec(
                prop::collection::vec((key_strategy(), json_text_strategy()), 0..5),
                0..5,
            ),
            ws in prop_oneof![Just(""), Just(" "), Just("\n\t")],
        ) {
            let (page, expected) = page_of(&records, ws);
            let located = locate(page.as_bytes(), &RawAt::Members(vec!["data".into(), "items".into()]))
                .expect("a valid page is located");
            let found: Vec<Vec<(String, String)>> = located
                .records()
                .map(|(r, _)| r.iter().map(|(k, v)| (k.0.to_string(), v.text.to_owned())).collect())
                .collect();
            prop_assert_eq!(&found, &expected);
            for (members, written_so) in located.records() {
                for (_, v) in members {
                    if v.canonical {
                        prop_assert!(is_canonical(v.text, 0), "{}", v.text);
                    }
                }
                // A record said to be written as its digest is: the general path's text.
                if let Some(text) = written_so {
                    let (v, _) = parse(text.as_bytes()).expect("valid JSON");
                    prop_assert_eq!(serde_json::to_string(&v).unwrap(), text);
                }
            }
            prop_assert_eq!(located.doc, Some(serde_json::json!({"meta": {"n": 1.5}, "data": {"items": null}})));
        }

        /// A record whose keys are in order and whose values are canonical is its own
        /// digest text when written compact, and not with a space anywhere in it.
        #[test]
        fn a_sorted_compact_record_is_its_own_digest(
            members in prop::collection::btree_map("[a-z]{1,6}", json_text_strategy(), 0..6),
            space in prop_oneof![Just(" "), Just("\n")],
            at in any::<prop::sample::Index>(),
        ) {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                .collect();
            let (v, _) = parse(format!("{{{}}}", body.join(",")).as_bytes()).unwrap();
            let record = serde_json::to_string(&v).unwrap();
            let page = format!("[{record}]");
            let located = locate(page.as_bytes(), &RawAt::Root).expect("located");
            let (_, written_so) = located.records().next().expect("a record");
            // Escaped strings are rewritten by the general path, so not copied as they are.
            let expected = is_canonical(&record, 0).then_some(record.as_str());
            prop_assert_eq!(written_so, expected);
            prop_assume!(expected.is_some());
            // The same record with white space between two of its tokens.
            let gaps: Vec<usize> = record
                .char_indices()
                .filter(|&(i, c)| matches!(c, '{' | ':' | ',') && !inside_string(&record, i))
                .map(|(i, _)| i + 1)
                .collect();
            prop_assume!(!gaps.is_empty());
            let gap = gaps[at.index(gaps.len())];
            let spaced = format!("[{}{space}{}]", &record[..gap], &record[gap..]);
            let located = locate(spaced.as_bytes(), &RawAt::Root).expect("located");
            prop_assert_eq!(located.records().next().expect("a record").1, None);
        }

        /// A number told plain in one pass is one `plain_int` or `plain_decimal` says is.
        #[test]
        fn a_plain_number_is_a_plain_int_or_decimal(t in "-?[-0-9.eE+]{0,22}|-?[0-9]{15,21}") {
            prop_assert_eq!(plain_number(t.as_bytes()), plain_int(&t) || plain_decimal(&t), "{}", t);
        }

        /// A plain decimal's value is the one `str::parse` reads.
        #[test]
        fn a_plain_decimal_value_is_the_parsed_one(t in "-?(0|[1-9][0-9]{0,14})\\.[0-9]{1,15}") {
            if plain_decimal(&t) {
                prop_assert_eq!(decimal_value(&t), t.parse::<f64>().unwrap(), "{}", t);
            }
        }

        /// The word-at-a-time scan stops where the byte-by-byte one does.
        #[test]
        fn a_string_stops_where_it_does_byte_by_byte(
            t in prop::collection::vec(prop_oneof![
                Just(b'"'), Just(b'\\'), Just(0x1f), Just(0x20), Just(0x21), Just(0x7f),
                Just(0x80), Just(0xe9), Just(0x00), Just(0x5b), Just(0x5d), Just(b'a'),
            ], 0..40),
            lead in 0..24usize,
        ) {
            let mut t = t;
            t.splice(0..0, std::iter::repeat_n(b'a', lead));
            let expected = t.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(string_stop(&t), expected, "{:?}", t);
        }

        /// The keys compared in line compare as `str`s do.
        #[test]
        fn keys_compare_as_strs_do(a in "[ab\u{e9}]{0,4}", b in "[ab\u{e9}]{0,4}") {
            prop_assert_eq!(before(a.as_bytes(), b.as_bytes()), a < b);
            prop_assert_eq!(same(a.as_bytes(), b.as_bytes()), a == b);
        }

        /// The timestamps read without arrow's parser are read as it reads them.
        #[test]
        fn an_rfc3339_timestamp_is_read_as_arrow_reads_it(
            date in "[0-9]{4}-(0[0-9]|1[0-3])-([0-2][0-9]|3[0-2])",
            time in "([01][0-9]|2[0-5]):[0-6][0-9]:[0-6][0-9]",
            fraction in "(\\.[0-9]{0,11})?",
            zone in prop_oneof![Just("Z"), Just("z"), Just("+00:00"), Just(""), Just("+01:30")],
            separator in prop_oneof![Just("T"), Just("t"), Just(" ")],
        ) {
            let text = format!("{date}{separator}{time}{fraction}{zone}");
            let utc: Tz = "UTC".parse().unwrap();
            let arrow = string_to_datetime(&utc, &text).ok().map(|t| t.timestamp_micros());
            if let Some(micros) = rfc3339_utc_micros(text.as_bytes()) {
                prop_assert_eq!(Some(micros), arrow, "{}", text);
            } else if separator == "T" && zone == "Z" && fraction.len() != 1 && fraction.len() <= 10 {
                // The usual form is read here unless arrow refuses it too (or it is one
                // of the cases left to arrow: year 0, a leap second).
                prop_assert!(arrow.is_none() || date.starts_with("0000") || time.ends_with(":60"), "{}", text);
            }
        }

        /// A decimal told canonical without parsing is one `serde_json` reads as
        /// `str::parse` does and writes back as it is.
        #[test]
        fn a_plain_decimal_reads_and_writes_back_as_it_is(
            t in "-?(0|[1-9][0-9]{0,15})\\.[0-9]{0,16}",
        ) {
            if plain_decimal(&t) {
                let v: f64 = serde_json::from_str(&t).unwrap();
                prop_assert_eq!(v, t.parse::<f64>().unwrap());
                prop_assert_eq!(serde_json::to_string(&v).unwrap(), t);
            }
        }

        /// Whatever a page's bytes, the scan accepts none that `serde_json` refuses.
        #[test]
        fn a_damaged_page_is_never_located(
            records in prop::collection::vec(
                prop::collection::vec((key_strategy(), json_text_strategy()), 1..4),
                1..4,
            ),
            cuts in prop::collection::vec((any::<prop::sample::Index>(), 0..12usize, prop_oneof![
                Just(""), Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"),
                Just("\""), Just("\\"), Just("1"), Just("-"), Just("e"), Just("."), Just("a"),
                Just("\u{1}"), Just(" "), Just(",}"), Just(",]"), Just("0"),
            ]), 1..3),
        ) {
            let (mut page, _) = page_of(&records, "");
            for (at, len, with) in cuts {
                let mut i = at.index(page.len());
                while !page.is_char_boundary(i) {
                    i -= 1;
                }
                let end = (i + len.max(1)..=page.len())
                    .find(|&e| page.is_char_boundary(e))
                    .unwrap_or(page.len());
                page.replace_range(i..end, with);
            }
            let at = RawAt::Members(vec!["data".into(), "items".into()]);
            if locate(page.as_bytes(), &at).is_some() {
                prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&page).is_ok(), "{}", page);
            }
        }
    }

    /// Whether byte `i` of compact JSON text is inside a string.
    fn inside_string(text: &str, i: usize) -> bool {
        let mut inside = false;
        let mut escaped = false;
        for &b in &text.as_bytes()[..i] {
            match (inside, escaped, b) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (_, false, b'"') => inside = !inside,
                _ => {}
            }
        }
        inside
    }

    #[test]
    fn an_rfc3339_timestamp_of_each_kind() {
        let utc: Tz = "UTC".parse().unwrap();
        for text in [
            "2024-01-01T00:00:30Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "1600-02-29T12:00:00.5Z",
            "2000-02-29T23:59:59.123456789Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
        ] {
            let arrow = string_to_datetime(&utc, text).unwrap().timestamp_micros();
            assert_eq!(rfc3339_utc_micros(text.as_bytes()), Some(arrow), "{text}");
        }
        for text in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01 00:00:00Z",
            "0000-01-01T00:00:00Z",
            "２０２４-01-01T00:00:00Z",
        ] {
            assert_eq!(rfc3339_utc_micros(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn what_json_refuses_the_scan_refuses() {
        let at = RawAt::Members(vec!["data".into(), "items".into()]);
        for page in [
            r#"{"data":{"items":[{"a":1},]}}"#,
            r#"{"data":{"items":[{"a":1,}]}}"#,
            r#"{"data":{"items":[{"a":1}]},}"#,
            r#"{"data":{"items":[{"a" 1}]}}"#,
            r#"{"data":{"items":[{"a":01}]}}"#,
            r#"{"data":{"items":[{"a":1.}]}}"#,
            r#"{"data":{"items":[{"a":tru}]}}"#,
            r#"{"data":{"items":[{"a":"x\q"}]}}"#,
            r#"{"data":{"items":[{"a":"x"#,
            r#"{"data":{"items":[{a:1}]}}"#,
            r#"{"data":{"items":[{"a":1}]}} x"#,
            "{\"data\":{\"items\":[{\"a\":\"\u{1}\"}]}}",
        ] {
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(page).is_err(),
                "{page}"
            );
            assert!(locate(page.as_bytes(), &at).is_none(), "{page}");
        }
        // Not the plain case, though valid JSON: the general path reads them.
        for page in [
            r#"{"data":{"items":[1]}}"#,
            r#"{"data":{"items":{}}}"#,
            r#"{"data":{"items":[{}]},"data":{"items":[]}}"#,
            r#"{"data":{}}"#,
        ] {
            assert!(locate(page.as_bytes(), &at).is_none(), "{page}");
        }
    }

    /// A key as written (with escapes now and then) and as meant.
    fn key_strategy() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            "[a-c]{0,2}|\\PC{0,3}".prop_map(|k| (serde_json::to_string(&k).unwrap(), k)),
            Just((r#""\u0061b""#.to_owned(), "ab".to_owned())),
        ]
    }

    /// A page with `records` at `$.data.items` between other members, `ws` between its
    /// tokens, and each record's members as the scan should find them.
    fn page_of(
        records: &[Vec<((String, String), String)>],
        ws: &str,
    ) -> (String, Vec<Vec<(String, String)>>) {
        let mut expected = Vec::new();
        let mut items = Vec::new();
        for record in records {
            let mut members = Vec::new();
            let mut texts = Vec::new();
            for ((written, key), value) in record {
                members.push(format!("{ws}{written}{ws}:{ws}{value}{ws}"));
                texts.push((key.clone(), value.trim_ascii().to_owned()));
            }
            items.push(format!("{ws}{{{}}}{ws}", members.join(",")));
            expected.push(texts);
        }
        let page = format!(
            r#"{ws}{{{ws}"meta"{ws}:{ws}{{"n":1.5}},{ws}"data"{ws}:{ws}{{"items":{ws}[{}]{ws}}}{ws}}}{ws}"#,
            items.join(",")
        );
        (page, expected)
    }

    #[test]
    fn only_text_written_so_already_is_copied_as_it_is() {
        for (t, copied) in [
            (r#"{"a":[1,2.5,"x",null,true,false,{}],"b":{"c":[]}}"#, true),
            (r#"{"b":1,"a":2}"#, false),
            (r#"{"a":1,"a":2}"#, false),
            (r#"{"a": 1}"#, false),
            (r#"["\u00e9"]"#, false),
            ("[1e2]", false),
            ("[1.0]", true),
            ("[1.50]", false),
            ("[-0]", false),
            ("[12345678901234567890123]", false),
            // serde_json parses this to the f64 next to the correctly rounded one, and
            // writes that back as 4.6118345788660295e+37: the text is not what the
            // general path writes (found by the property test).
            ("[4.61183457886603e+37]", false),
            ("[46118345788660301000000000000000000000]", false),
        ] {
            assert_eq!(is_canonical(t, 0), copied, "{t}");
            same_as_general_path(t).unwrap();
        }
    }

    #[test]
    fn canonical_text_of_the_odd_cases() {
        for t in [
            r#"{"b":1,"a":2,"b":3}"#,
            r#"{"k\u0041":"\u00e9\/","kA":0}"#,
            "[1.0, 1e2, -0, 0.1, 12345678901234567890123, 0.12345678901234567890]",
            r#"{ "x" : [ { "z" : null , "y" : true } ] }"#,
        ] {
            same_as_general_path(t).unwrap();
        }
    }

    fn declared() -> SchemaConfig {
        let col = |name: &str, data_type, nullable| ColumnConfig {
            name: name.into(),
            data_type,
            nullable,
        };
        SchemaConfig::Columns(vec![
            col("id", ColumnType::Int64, false),
            col("amount", ColumnType::Float64, true),
            col("name", ColumnType::String, true),
            col("ok", ColumnType::Boolean, true),
            col("at", ColumnType::Timestamp, true),
            col("day", ColumnType::Date, true),
            col("extra", ColumnType::Json, true),
        ])
    }

    /// The page through both paths: the same batch and the same record digests.
    fn both_paths(schema: &SchemaConfig, pages: &[&str]) -> Vec<bool> {
        let at = RecordsAt::new(&RecordsConfig::Path("$.data".into())).unwrap();
        let raw_at = RawAt::of(&RecordsConfig::Path("$.data".into())).unwrap();
        let mut converter = Converter::new(schema, NestedMode::JsonText);
        let mut fast_taken = Vec::new();
        for body in pages {
            let located = locate(body.as_bytes(), &raw_at);
            let fast = located
                .as_ref()
                .and_then(|l| converter.convert_fast(l, body.len(), Some("at")));
            let e = extract(body.as_bytes(), &at).unwrap();
            if let Some(l) = &located {
                assert_eq!(l.doc, e.doc, "the envelope");
            }
            let drift = converter.check(&e.records);
            if drift.is_some() {
                assert!(
                    fast.is_none(),
                    "a page with drift took the fast path: {body}"
                );
                converter.evolve(&e.records);
                fast_taken.push(false);
                continue;
            }
            let texts = super::RecordTexts::of(&e.records);
            let watermarks: Vec<Value> = e
                .records
                .iter()
                .filter_map(|r| r.get("at").cloned())
                .collect();
            let slow = converter.convert(e.records, e.exact).unwrap();
            match fast {
                Some(fast) => {
                    assert!(slow.bad.is_empty(), "{body}");
                    assert_eq!(fast.batch, slow.batch, "{body}");
                    assert_eq!(fast.texts, texts, "{body}");
                    assert_eq!(fast.watermarks, watermarks, "{body}");
                    fast_taken.push(true);
                }
                None => fast_taken.push(false),
            }
        }
        fast_taken
    }

    #[test]
    fn a_declared_page_gives_the_same_batch_on_both_paths() {
        let page = r#"{"data": [
            {"id": 1, "amount": 1.5, "name": "a\u00e9\"q", "ok": true, "at": "2024-01-02T03:04:05Z", "day": "2024-01-02", "extra": {"z": 1, "a": [1.0, "x", 123456789012345678901234]}, "unknown": 1},
            {"id": -9223372036854775808, "amount": 3, "name": null, "ok": false, "at": "2024-01-02T03:04:05.123456+02:00", "day": null, "extra": "text"},
            {"id": 9223372036854775807, "amount": 1e300, "extra": null, "name": "雪"},
            {"id": 4, "amount": -0, "extra": [ ], "name": "", "amount": 0.1}
        ], "meta": {"next": "c", "big": 123456789012345678901234}}"#;
        assert_eq!(both_paths(&declared(), &[page]), vec![true]);
    }

    /// Records of one page mostly list their fields in one order, and the digest's key
    /// order worked out for one record is used again for the next with the same names:
    /// never for a record whose names or order differ (a field unknown to the schema, a
    /// field given twice, one missing, another order).
    #[test]
    fn records_in_changing_field_orders_give_the_same_batch_on_both_paths() {
        let page = r#"{"data": [
            {"id": 1, "name": "a", "amount": 1.5},
            {"id": 2, "name": "b", "amount": 2.5},
            {"id": 3, "aaa": 9, "amount": 3.5},
            {"id": 4, "name": "d", "amount": 4.5},
            {"id": 5, "name": "e", "amount": 5.5},
            {"amount": 6.5, "name": "f", "id": 6},
            {"amount": 7.5, "name": "g", "id": 7},
            {"id": 8, "name": "h", "name": "H"},
            {"id": 9, "name": "i", "name": "I"},
            {"id": 10, "name": "j", "ok": true},
            {"id": 11, "name": "k", "ok": false},
            {"id": 12, "name": "l"}
        ]}"#;
        assert_eq!(both_paths(&declared(), &[page]), vec![true]);
    }

    #[test]
    fn odd_values_take_the_general_path_and_land_the_same() {
        let pages = [
            // A string where an int64 is declared: a bad record for the general path.
            r#"{"data": [{"id": "1"}, {"id": 2}]}"#,
            // A long decimal in a float64 column (float64 rounds it).
            r#"{"data": [{"id": 1, "amount": 0.12345678901234567890}]}"#,
            // A required field missing: drift.
            r#"{"data": [{"amount": 1}]}"#,
            // Not an object.
            r#"{"data": [{"id": 1}, 7]}"#,
            // A timestamp as Unix seconds.
            r#"{"data": [{"id": 1, "at": 1700000000}]}"#,
        ];
        for p in pages {
            assert_eq!(both_paths(&declared(), &[p]), vec![false], "{p}");
        }
    }

    #[test]
    fn an_inferred_schema_takes_the_fast_path_from_its_second_page_until_it_drifts() {
        let first = r#"{"data": [{"id": 1, "name": "a", "tags": [1, 2], "n": null}]}"#;
        let same = r#"{"data": [{"id": 2, "name": "b", "tags": [3], "n": null}]}"#;
        let added = r#"{"data": [{"id": 3, "name": "c", "tags": [], "n": null, "new": 1}]}"#;
        let removed = r#"{"data": [{"id": 4, "tags": [], "n": null, "new": 2}]}"#;
        let retyped = r#"{"data": [{"id": "5", "name": "e", "tags": [], "n": null, "new": 3}]}"#;
        assert_eq!(
            both_paths(
                &SchemaConfig::Infer,
                &[first, same, added, same, removed, retyped]
            ),
            vec![false, true, false, false, false, false]
        );
    }

    #[test]
    fn only_plain_member_paths_are_followed() {
        let of = |p: &str| RawAt::of(&RecordsConfig::Path(p.into()));
        assert_eq!(
            of("$.data.items"),
            Some(RawAt::Members(vec!["data".into(), "items".into()]))
        );
        assert_eq!(of("$.data[*]"), None);
        assert_eq!(of("$..items"), None);
        assert_eq!(of("$"), None);
        assert_eq!(of("$['a b']"), None);
    }
}
