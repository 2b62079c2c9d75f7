//! A `serde::Deserializer` over the spanned tree, so that every error (unknown field,
//! wrong type, missing field, unknown enum value, a value type's own parse error) comes out
//! with the position of the key or value it is about.
//!
//! Why not a tagged enum for node types: serde's internally tagged and untagged enums
//! buffer the input into an anonymous `Content` value before choosing a variant, and the
//! positions are lost on the way (vector issue #23008). The loader reads `type:` itself and
//! deserializes the rest into the right struct; the enums used inside the spec are
//! externally tagged (`auth: { bearer: { token: ... } }`), which serde deserializes
//! straight from this deserializer without buffering.
//!
//! **Collecting every error.** A derived `Deserialize` stops at its first error. [`recover`]
//! turns that into "all errors": it deserializes, records the error at its node, removes
//! that node (the key and value of the entry it belongs to are skipped from then on) and
//! tries again, until the value deserializes or nothing more can be removed. A "missing
//! field" caused by such a removal is not reported a second time.

use crate::diag::{Diagnostic, Pos, one_of, suggest};
use crate::yaml::{Entry, Kind, Node, NodeId, Scalar, Style, shorten};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Separates the message, the help line and a character offset in a custom error text
/// (value types use [`error_with_help`] and [`error_at_offset`]).
const SEP: char = '\u{1f}';

/// A `serde` error with a help line.
pub(crate) fn error_with_help<E: de::Error>(
    message: impl fmt::Display,
    help: impl fmt::Display,
) -> E {
    E::custom(format!("{message}{SEP}{help}"))
}

/// A `serde` error about the character at `offset` of a scalar's text.
pub(crate) fn error_at_offset<E: de::Error>(
    message: impl fmt::Display,
    help: impl fmt::Display,
    offset: usize,
) -> E {
    E::custom(format!("{message}{SEP}{help}{SEP}{offset}"))
}

/// Where an error is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At {
    pub(crate) node: NodeId,
    pub(crate) pos: Pos,
    pub(crate) width: usize,
}

/// What went wrong.
#[derive(Debug)]
pub(crate) enum ErrorKind {
    Message {
        message: String,
        help: Option<String>,
        offset: Option<usize>,
    },
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    MissingField {
        field: &'static str,
        /// The field was there but removed by error recovery: already reported.
        consequence: bool,
    },
    InvalidType {
        found: String,
        expected: String,
    },
    /// Caused by error recovery removing what was there: already reported, stays silent.
    Consequence,
}

/// The deserializer's error: a kind and, once known, the node it is about.
#[derive(Debug)]
pub(crate) struct DeError {
    pub(crate) kind: ErrorKind,
    pub(crate) at: Option<At>,
}

impl DeError {
    fn new(kind: ErrorKind) -> Self {
        DeError { kind, at: None }
    }

    fn message(message: impl Into<String>, help: Option<String>) -> Self {
        DeError::new(ErrorKind::Message {
            message: message.into(),
            help,
            offset: None,
        })
    }

    /// The diagnostic for this error; `extra_fields` widen the "did you mean" candidates
    /// for unknown fields (a node's common fields beside its type's own).
    pub(crate) fn to_diagnostic(&self, extra_fields: &[&str]) -> Diagnostic {
        let (pos, width) = self.at.map(|a| (a.pos, a.width)).unwrap_or((Pos::START, 1));
        let d = match &self.kind {
            ErrorKind::Message { message, help, .. } => {
                let d = Diagnostic::error(pos, message.clone());
                match help {
                    Some(h) => d.with_help(h.clone()),
                    None => d,
                }
            }
            ErrorKind::UnknownField { field, expected } => {
                let mut known: Vec<&str> = expected.to_vec();
                known.extend(
                    extra_fields
                        .iter()
                        .copied()
                        .filter(|f| !expected.contains(f)),
                );
                match suggest(field, known.iter().copied()) {
                    Some(near) => Diagnostic::error(
                        pos,
                        format!("unknown field `{field}`, did you mean `{near}`?"),
                    ),
                    None => Diagnostic::error(pos, format!("unknown field `{field}`")),
                }
                .with_help(if known.is_empty() {
                    "this mapping takes no fields".to_owned()
                } else {
                    format!("the fields here are: {}", known.join(", "))
                })
            }
            ErrorKind::UnknownVariant { variant, expected } => match synonym(variant, expected)
                .or_else(|| suggest(variant, expected.iter().copied()))
            {
                Some(near) => Diagnostic::error(
                    pos,
                    format!("unknown value `{variant}`, did you mean `{near}`?"),
                ),
                None => Diagnostic::error(pos, format!("unknown value `{variant}`")),
            }
            .with_help(format!("expected {}", one_of(expected))),
            ErrorKind::MissingField { field, .. } => {
                Diagnostic::error(pos, format!("missing field `{field}`"))
                    .with_help(format!("add `{field}:` to this mapping"))
            }
            ErrorKind::InvalidType { found, expected } => {
                let d = Diagnostic::error(pos, format!("expected {expected}, found {found}"));
                match expected.as_str() {
                    "a list" => d.with_help("write a list as `[a, b]`, or one `- item` per line below the key"),
                    "a mapping" => d.with_help("write `field: value` pairs, indented below the key or as `{ field: value }`"),
                    _ => d,
                }
            }
            ErrorKind::Consequence => Diagnostic::error(pos, "this value is incomplete"),
        };
        d.with_width(width)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_diagnostic(&[]).message)
    }
}

impl std::error::Error for DeError {}

/// Words people write for a value that has another name here.
fn synonym(word: &str, expected: &[&'static str]) -> Option<&'static str> {
    let meant = match word.to_ascii_lowercase().as_str() {
        "timeout" | "timeouts" | "connection" | "dns" | "tls" => "network",
        "throttled" | "throttle" | "too_many_requests" | "429" => "rate_limited",
        "unauthorized" | "401" => "auth",
        "forbidden" | "403" => "permission",
        "drop" | "ignore" | "discard" => "skip",
        "abort" | "stop" | "error" => "fail",
        "dead_letter" | "dlq" | "park" => "quarantine",
        "schema_drift" | "drift" => "contract_changed",
        "server_error" | "unavailable" | "5xx" => "dependency",
        "too_large" | "413" => "payload_too_large",
        _ => return None,
    };
    expected.iter().copied().find(|e| *e == meant)
}

/// Friendlier names for what serde expected.
fn expected_text(expected: &str) -> String {
    match expected {
        e if e.starts_with("struct ") || e == "a map" => "a mapping".to_owned(),
        "a sequence" => "a list".to_owned(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "`true` or `false`".to_owned(),
        "a character" => "a single character".to_owned(),
        e => e.to_owned(),
    }
}

fn unexpected_text(u: &de::Unexpected<'_>) -> String {
    use de::Unexpected as U;
    match u {
        U::Bool(b) => format!("`{b}`"),
        U::Unsigned(n) => format!("`{n}`"),
        U::Signed(n) => format!("`{n}`"),
        U::Float(n) => format!("`{n}`"),
        U::Char(c) => format!("`{c}`"),
        U::Str(s) => format!("`{}`", shorten(s)),
        U::Unit => "nothing (an empty value)".to_owned(),
        U::Map => "a mapping".to_owned(),
        U::Seq => "a list".to_owned(),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let text = msg.to_string();
        let mut parts = text.split(SEP);
        let message = parts.next().unwrap_or_default().to_owned();
        let help = parts.next().map(str::to_owned);
        let offset = parts.next().and_then(|o| o.parse().ok());
        DeError::new(ErrorKind::Message {
            message,
            help,
            offset,
        })
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(ErrorKind::InvalidType {
            found: unexpected_text(&unexp),
            expected: expected_text(&exp.to_string()),
        })
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::message(
            format!(
                "invalid value {}: expected {}",
                unexpected_text(&unexp),
                expected_text(&exp.to_string())
            ),
            None,
        )
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(ErrorKind::UnknownField {
            field: field.to_owned(),
            expected,
        })
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(ErrorKind::UnknownVariant {
            variant: variant.to_owned(),
            expected,
        })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::new(ErrorKind::MissingField {
            field,
            consequence: false,
        })
    }
}

/// Shared state of one deserialization pass.
pub(crate) struct Ctx<'a> {
    /// Nodes removed by error recovery: skipped as if they were not written.
    pub(crate) removed: &'a HashSet<NodeId>,
    /// The source lines, to place errors at an offset inside a scalar.
    pub(crate) lines: &'a [&'a str],
}

/// Which keys of the top mapping a deserialization sees (a node's mapping is read twice:
/// once for the fields every node has, once for its type's own fields).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Filter {
    All,
    Only(&'static [&'static str]),
    Except(&'static [&'static str]),
}

impl Filter {
    fn allows(self, key: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Only(keys) => keys.contains(&key),
            Filter::Except(keys) => !keys.contains(&key),
        }
    }
}

/// Deserializes one node.
pub(crate) struct NodeDe<'a> {
    node: &'a Node,
    ctx: &'a Ctx<'a>,
    filter: Filter,
}

impl<'a> NodeDe<'a> {
    pub(crate) fn new(node: &'a Node, ctx: &'a Ctx<'a>, filter: Filter) -> Self {
        NodeDe { node, ctx, filter }
    }

    fn live(&self, entry: &Entry) -> bool {
        !self.ctx.removed.contains(&entry.key.id) && !self.ctx.removed.contains(&entry.value.id)
    }

    /// Places an error that has no position yet at this node.
    fn place(&self, mut e: DeError) -> DeError {
        if e.at.is_some() {
            return e;
        }
        let (mut pos, mut width) = (self.node.pos, self.node.width);
        match &mut e.kind {
            ErrorKind::MissingField { field, consequence } => {
                (pos, width) = self.node.label();
                *consequence = self
                    .node
                    .entries()
                    .iter()
                    .any(|entry| entry.name() == *field && !self.live(entry));
            }
            ErrorKind::Message {
                offset: Some(offset),
                ..
            } => {
                if let Some(p) = self.offset_pos(*offset) {
                    pos = p;
                    width = 1;
                }
            }
            _ => {}
        }
        e.at = Some(At {
            node: self.node.id,
            pos,
            width,
        });
        e
    }

    /// The position of character `offset` of this scalar, when the scalar is written on
    /// its line exactly as its text reads (no escapes, no folding, no interpolation).
    fn offset_pos(&self, offset: usize) -> Option<Pos> {
        let scalar = self.node.scalar()?;
        if scalar.interpolated || scalar.style == Style::Block {
            return None;
        }
        let line = self.ctx.lines.get(self.node.pos.line - 1)?;
        let skip = usize::from(scalar.style == Style::Quoted);
        let start = self.node.pos.column - 1 + skip;
        let written: String = line.chars().skip(start).collect();
        written
            .starts_with(scalar.text.as_str())
            .then(|| Pos::new(self.node.pos.line, start + offset + 1))
    }

    fn scalar(&self) -> Option<&'a Scalar> {
        self.node.scalar()
    }

    fn invalid(&self, expected: &str) -> DeError {
        DeError::new(ErrorKind::InvalidType {
            found: self.node.describe(),
            expected: expected.to_owned(),
        })
    }

    fn text(&self, expected: &str) -> Result<&'a str, DeError> {
        match self.scalar() {
            Some(s) if !s.is_null() => Ok(&s.text),
            _ => Err(self.invalid(expected)),
        }
    }

    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text("a whole number").map_err(|e| self.place(e))?;
        let r = if let Ok(n) = text.parse::<u64>() {
            visitor.visit_u64(n)
        } else if let Ok(n) = text.parse::<i64>() {
            visitor.visit_i64(n)
        } else {
            return Err(self.place(self.invalid("a whole number")));
        };
        r.map_err(|e| self.place(e))
    }

    fn float<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text("a number").map_err(|e| self.place(e))?;
        match text.parse::<f64>() {
            Ok(n) if looks_like_float(text) => visitor.visit_f64(n).map_err(|e| self.place(e)),
            _ => Err(self.place(self.invalid("a number"))),
        }
    }

    fn map_access(&self, entries: &'a [Entry]) -> MapDe<'a> {
        MapDe {
            entries: entries.iter(),
            ctx: self.ctx,
            filter: self.filter,
            removed: self.ctx.removed,
            value: None,
        }
    }
}

fn looks_like_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let digits = mantissa.chars().filter(char::is_ascii_digit).count();
    let dots = mantissa.chars().filter(|c| *c == '.').count();
    let mantissa_ok =
        digits > 0 && dots <= 1 && mantissa.chars().all(|c| c.is_ascii_digit() || c == '.');
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

/// What YAML 1.2's core schema makes of a plain scalar, for `deserialize_any`.
fn visit_plain<'de, V: Visitor<'de>>(s: &Scalar, visitor: V) -> Result<V::Value, DeError> {
    if s.style != Style::Plain || s.interpolated {
        return visitor.visit_str(&s.text);
    }
    if s.is_null() {
        return visitor.visit_unit();
    }
    match s.text.as_str() {
        "true" | "True" | "TRUE" => return visitor.visit_bool(true),
        "false" | "False" | "FALSE" => return visitor.visit_bool(false),
        _ => {}
    }
    let integer = {
        let body = s.text.strip_prefix(['-', '+']).unwrap_or(&s.text);
        !body.is_empty() && body.chars().all(|c| c.is_ascii_digit())
    };
    if integer {
        if let Ok(n) = s.text.parse::<u64>() {
            return visitor.visit_u64(n);
        }
        if let Ok(n) = s.text.parse::<i64>() {
            return visitor.visit_i64(n);
        }
    }
    if looks_like_float(&s.text) {
        if let Ok(n) = s.text.parse::<f64>() {
            return visitor.visit_f64(n);
        }
    }
    visitor.visit_str(&s.text)
}

macro_rules! integers {
    ($($method:ident),*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.integer(visitor)
        })*
    };
}

impl<'de, 'a> Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Scalar(s) => visit_plain(s, visitor),
            Kind::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                ctx: self.ctx,
            }),
            Kind::Map(entries) => visitor.visit_map(self.map_access(entries)),
        };
        r.map_err(|e| self.place(e))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text("`true` or `false`").map_err(|e| self.place(e))?;
        let value = match text {
            "true" | "True" | "TRUE" => true,
            "false" | "False" | "FALSE" => false,
            _ => return Err(self.place(self.invalid("`true` or `false`"))),
        };
        visitor.visit_bool(value).map_err(|e| self.place(e))
    }

    integers!(
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.float(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.float(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = self.text("a string").map_err(|e| self.place(e))?;
        visitor.visit_str(text).map_err(|e| self.place(e))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(s) if s.is_null() => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(s) if s.is_null() => visitor.visit_unit(),
            _ => Err(self.place(self.invalid("nothing"))),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Seq(items) => visitor
                .visit_seq(SeqDe {
                    items: items.iter(),
                    ctx: self.ctx,
                })
                .map_err(|e| self.place(e)),
            _ => Err(self.place(self.invalid("a list"))),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Map(entries) => visitor
                .visit_map(self.map_access(entries))
                .map_err(|e| self.place(e)),
            // `retry:` with nothing after it: an empty mapping.
            Kind::Scalar(s) if s.is_null() => visitor
                .visit_map(self.map_access(&[]))
                .map_err(|e| self.place(e)),
            _ => Err(self.place(self.invalid("a mapping"))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED {
            return visitor.visit_map(SpannedDe { de: self, step: 0 });
        }
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let expected = one_of(variants);
        let r = match &self.node.kind {
            Kind::Scalar(s) if !s.is_null() => visitor.visit_enum(EnumDe {
                variant: self.node,
                value: None,
                ctx: self.ctx,
            }),
            Kind::Map(entries) => {
                let live: Vec<&Entry> = entries.iter().filter(|e| self.live(e)).collect();
                match live.as_slice() {
                    [entry] => visitor.visit_enum(EnumDe {
                        variant: &entry.key,
                        value: Some(&entry.value),
                        ctx: self.ctx,
                    }),
                    [] if !entries.is_empty() => Err(DeError::new(ErrorKind::Consequence)),
                    [] => Err(error_with_help(
                        "expected one key here, found none",
                        format!("write one of {expected}"),
                    )),
                    more => {
                        let keys: Vec<&str> = more.iter().map(|e| e.name()).collect();
                        Err(error_with_help(
                            format!(
                                "expected one key here, found {}: {}",
                                keys.len(),
                                one_of(&keys)
                            ),
                            format!("choose one of {expected}"),
                        ))
                    }
                }
            }
            _ => Err(DeError::new(ErrorKind::InvalidType {
                found: self.node.describe(),
                expected: format!("one of {expected}"),
            })),
        };
        r.map_err(|e| self.place(e))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

/// Deserializes `node` with `seed`, placing at `node` any error that the value's own
/// `Deserialize` raised after reading it (a duration that does not parse, say).
fn deserialize_at<'de, 'a, S: DeserializeSeed<'de>>(
    seed: S,
    node: &'a Node,
    ctx: &'a Ctx<'a>,
) -> Result<S::Value, DeError> {
    seed.deserialize(NodeDe::new(node, ctx, Filter::All))
        .map_err(|e| NodeDe::new(node, ctx, Filter::All).place(e))
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
    ctx: &'a Ctx<'a>,
}

impl<'de, 'a> de::SeqAccess<'de> for SeqDe<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        for item in self.items.by_ref() {
            if self.ctx.removed.contains(&item.id) {
                continue;
            }
            return deserialize_at(seed, item, self.ctx).map(Some);
        }
        Ok(None)
    }
}

struct MapDe<'a> {
    entries: std::slice::Iter<'a, Entry>,
    ctx: &'a Ctx<'a>,
    filter: Filter,
    removed: &'a HashSet<NodeId>,
    value: Option<&'a Node>,
}

impl<'de, 'a> de::MapAccess<'de> for MapDe<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for entry in self.entries.by_ref() {
            if self.removed.contains(&entry.key.id)
                || self.removed.contains(&entry.value.id)
                || !self.filter.allows(entry.name())
            {
                continue;
            }
            self.value = Some(&entry.value);
            return deserialize_at(seed, &entry.key, self.ctx).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(value) => deserialize_at(seed, value, self.ctx),
            None => Err(DeError::message("a value was read before its key", None)),
        }
    }
}

struct EnumDe<'a> {
    /// The scalar or key naming the variant.
    variant: &'a Node,
    /// The value of `variant: value`, if written as a one-key mapping.
    value: Option<&'a Node>,
    ctx: &'a Ctx<'a>,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let v = deserialize_at(seed, self.variant, self.ctx)?;
        Ok((v, self))
    }
}

impl<'a> EnumDe<'a> {
    /// `variant` alone stands for `variant: {}`: options all at their defaults.
    fn empty(&self) -> Node {
        Node {
            id: self.variant.id,
            pos: self.variant.pos,
            width: self.variant.width,
            key_pos: Some((self.variant.pos, self.variant.width)),
            kind: Kind::Map(Vec::new()),
        }
    }
}

impl<'de, 'a> de::VariantAccess<'de> for EnumDe<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            Some(v) if !matches!(v.scalar(), Some(s) if s.is_null()) => {
                let name = self
                    .variant
                    .scalar()
                    .map(|s| s.text.as_str())
                    .unwrap_or_default();
                let de = NodeDe::new(v, self.ctx, Filter::All);
                Err(de.place(error_with_help(
                    format!("`{name}` takes no options"),
                    format!("write just `{name}`"),
                )))
            }
            _ => Ok(()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.value {
            Some(v) => deserialize_at(seed, v, self.ctx),
            None => {
                let empty = self.empty();
                let ctx = Ctx {
                    removed: self.ctx.removed,
                    lines: self.ctx.lines,
                };
                deserialize_at(seed, &empty, &ctx)
            }
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Some(v) => NodeDe::new(v, self.ctx, Filter::All).deserialize_seq(visitor),
            None => Err(NodeDe::new(self.variant, self.ctx, Filter::All).invalid("a list")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Some(v) => {
                NodeDe::new(v, self.ctx, Filter::All).deserialize_struct("", fields, visitor)
            }
            None => {
                let empty = self.empty();
                let ctx = Ctx {
                    removed: self.ctx.removed,
                    lines: self.ctx.lines,
                };
                NodeDe::new(&empty, &ctx, Filter::All).deserialize_struct("", fields, visitor)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Spanned<T>

/// The struct name by which [`Spanned`] asks this deserializer for a position.
const SPANNED: &str = "$__sluice_spanned";
const SPANNED_FIELDS: &[&str] = &["$line", "$column", "$width", "$interpolated", "$value"];

/// A value with the position where it was written.
///
/// Compares, hashes, prints and serializes as the value alone.
#[derive(Clone, Default)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written (for a mapping: where its key was written).
    pub pos: Pos,
    /// How many characters it spans on its line.
    pub width: usize,
    /// Whether `${...}` interpolation produced part of it.
    pub interpolated: bool,
}

impl<T> Spanned<T> {
    /// A value with a position.
    pub fn new(value: T, pos: Pos) -> Self {
        Spanned {
            value,
            pos,
            width: 1,
            interpolated: false,
        }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: fmt::Display> fmt::Display for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Spanned<T> {}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
                let mut line = 1;
                let mut column = 1;
                let mut width = 1;
                let mut interpolated = false;
                let mut value = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "$line" => line = map.next_value()?,
                        "$column" => column = map.next_value()?,
                        "$width" => width = map.next_value()?,
                        "$interpolated" => interpolated = map.next_value()?,
                        _ => value = Some(map.next_value()?),
                    }
                }
                let value = value.ok_or_else(|| de::Error::custom("a position without a value"))?;
                Ok(Spanned {
                    value,
                    pos: Pos::new(line, column),
                    width,
                    interpolated,
                })
            }
        }
        deserializer.deserialize_struct(SPANNED, SPANNED_FIELDS, V(std::marker::PhantomData))
    }
}

struct SpannedDe<'a> {
    de: NodeDe<'a>,
    step: usize,
}

impl<'de, 'a> de::MapAccess<'de> for SpannedDe<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match SPANNED_FIELDS.get(self.step) {
            Some(name) => seed.deserialize((*name).into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self.de.node;
        let (pos, width) = match node.kind {
            Kind::Scalar(_) => (node.pos, node.width),
            _ => node.label(),
        };
        let step = self.step;
        self.step += 1;
        match step {
            0 => seed.deserialize((pos.line as u64).into_deserializer()),
            1 => seed.deserialize((pos.column as u64).into_deserializer()),
            2 => seed.deserialize((width as u64).into_deserializer()),
            3 => {
                let interpolated = node.scalar().is_some_and(|s| s.interpolated);
                seed.deserialize(interpolated.into_deserializer())
            }
            _ => {
                let de = NodeDe {
                    node,
                    ctx: self.de.ctx,
                    filter: self.de.filter,
                };
                let place = NodeDe::new(node, self.de.ctx, Filter::All);
                seed.deserialize(de).map_err(|e| place.place(e))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Recovery

/// Deserializes `T` from `node`, reporting every error it can find (see the module doc).
/// Returns the value when one could be built: with errors reported, it is a value with the
/// broken parts left out, good enough for further checks but not to run.
pub(crate) fn recover<T: DeserializeOwned>(
    node: &Node,
    lines: &[&str],
    filter: Filter,
    extra_fields: &[&str],
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    // Values whose `${...}` failed were reported already: read as if not written.
    let mut removed = HashSet::new();
    crate::yaml::broken_ids(node, &mut removed);
    // Each round removes one more node, so this bounds the rounds by the tree's size;
    // the cap keeps a pathological file from taking long.
    for _ in 0..500 {
        let ctx = Ctx {
            removed: &removed,
            lines,
        };
        match T::deserialize(NodeDe::new(node, &ctx, filter)) {
            Ok(value) => return Some(value),
            Err(err) => {
                let err = NodeDe::new(node, &ctx, filter).place(err);
                let at = err.at.map(|a| a.node).unwrap_or(node.id);
                let top_level = node.entries().iter().any(|e| e.key.id == at);
                let extra = if top_level { extra_fields } else { &[] };
                let consequence = matches!(
                    err.kind,
                    ErrorKind::MissingField {
                        consequence: true,
                        ..
                    } | ErrorKind::Consequence
                );
                if !consequence {
                    diags.push(err.to_diagnostic(extra));
                }
                if at == node.id || !removed.insert(at) {
                    return None;
                }
            }
        }
    }
    None
}

/// The field names of a derived struct, as serde knows them.
#[cfg(test)]
pub(crate) fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Capture(Option<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for &mut Capture {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("capture only"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _v: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("capture only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut capture = Capture(None);
    let _ = T::deserialize(&mut capture);
    capture.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        path: String,
        #[serde(default)]
        size: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        None,
        Cursor(Inner),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        url: Spanned<String>,
        #[serde(default)]
        retries: u32,
        #[serde(default)]
        ratio: f64,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        any: Option<serde_json::Value>,
    }

    fn load<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<Diagnostic>) {
        let mut d = Vec::new();
        let tree = yaml::parse(text, &mut d).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let v = recover(&tree, &lines, Filter::All, &[], &mut d);
        (v, d)
    }

    #[test]
    fn reads_a_well_formed_value() {
        let (v, d) = load::<Outer>(
            "url: http://x\nretries: 3\nratio: 0.5\nmode: {cursor: {path: $.next}}\ntags: [a, 'b']\nany: {n: 1, s: x, f: 1.5, b: true, z: ~}\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let v = v.unwrap();
        assert_eq!(v.url.pos, Pos::new(1, 6));
        assert_eq!(v.url.width, 8);
        assert_eq!(v.retries, 3);
        assert_eq!(v.ratio, 0.5);
        assert_eq!(v.tags, ["a", "b"]);
        assert_eq!(
            v.mode,
            Some(Mode::Cursor(Inner {
                path: "$.next".into(),
                size: 0
            }))
        );
        assert_eq!(
            v.any.unwrap(),
            serde_json::json!({"n": 1, "s": "x", "f": 1.5, "b": true, "z": null})
        );
    }

    #[test]
    fn a_bare_variant_name_means_default_options() {
        let (v, d) = load::<Outer>("url: x\nmode: none\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(v.unwrap().mode, Some(Mode::None));
        let (_, d) = load::<Outer>("url: x\nmode: cursor\n");
        assert_eq!(d[0].message, "missing field `path`");
        assert_eq!(d[0].pos, Pos::new(2, 7));
    }

    #[test]
    fn collects_every_error_with_its_position() {
        let (_, d) = load::<Outer>(
            "retries: many\nratio: 1.2.3\nmod: none\nmode: {cursor: {path: [x], sise: 3}}\ntags: {a: 1}\n",
        );
        let got: Vec<(usize, usize, &str)> = d
            .iter()
            .map(|d| (d.pos.line, d.pos.column, d.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 10, "expected a whole number, found `many`"),
                (2, 8, "expected a number, found `1.2.3`"),
                (3, 1, "unknown field `mod`, did you mean `mode`?"),
                (4, 23, "expected a string, found a list"),
                (4, 28, "unknown field `sise`, did you mean `size`?"),
                (5, 7, "expected a list, found a mapping"),
                (1, 1, "missing field `url`"),
            ]
        );
    }

    #[test]
    fn unknown_enum_values_suggest() {
        let (_, d) = load::<Outer>("url: x\nmode: cursr\n");
        assert_eq!(
            d[0].message,
            "unknown value `cursr`, did you mean `cursor`?"
        );
        assert_eq!(d[0].help.as_deref(), Some("expected `none` or `cursor`"));
        let (_, d) = load::<Outer>("url: x\nmode: {none: , cursor: {path: x}}\n");
        assert!(
            d[0].message.starts_with("expected one key here, found 2"),
            "{d:?}"
        );
    }

    #[test]
    fn out_of_range_numbers_are_errors() {
        let (_, d) = load::<Outer>("url: x\nretries: 99999999999\n");
        assert!(d[0].message.contains("99999999999"), "{d:?}");
        let (_, d) = load::<Outer>("url: x\nretries: -1\n");
        assert!(d[0].message.contains("-1"), "{d:?}");
    }

    #[test]
    fn fields_of_a_struct() {
        assert_eq!(fields_of::<Inner>(), ["path", "size"]);
    }

    #[test]
    fn float_syntax() {
        for ok in ["1", "1.5", "-2.", ".5", "1e3", "+1.5E-3"] {
            assert!(looks_like_float(ok), "{ok}");
        }
        for bad in ["", ".", "1.2.3", "inf", "NaN", "1e", "e3", "0x10"] {
            assert!(!looks_like_float(bad), "{bad}");
        }
    }
}
