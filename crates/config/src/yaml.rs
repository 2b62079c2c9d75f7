//! A small YAML node tree that remembers where every key and value was written.
//!
//! Built from `saphyr-parser` events. Mappings keep their entries in file order; a
//! duplicate key is a diagnostic (YAML parsers usually keep the last one silently, which
//! would hide a duplicated node id). Anchors and aliases are expanded, and `<<` merge keys
//! are applied, with a bound on the size of the expansion.

use crate::diag::{Diagnostic, Pos};
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

/// Identifies a node within one tree (keys are nodes too).
pub(crate) type NodeId = u32;

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Plain: `abc`, `42`, `true`, or nothing at all (null).
    Plain,
    /// Single- or double-quoted: always a string.
    Quoted,
    /// A `|` or `>` block: always a string.
    Block,
}

/// A scalar: its text after YAML unescaping and `${...}` interpolation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar {
    pub(crate) text: String,
    pub(crate) style: Style,
    /// Whether `${...}` interpolation replaced part of the text.
    pub(crate) interpolated: bool,
    /// Whether interpolation failed (reported): the value is left out, not checked again.
    pub(crate) broken: bool,
}

impl Scalar {
    /// A plain scalar that YAML reads as null: nothing, `~` or `null`.
    pub(crate) fn is_null(&self) -> bool {
        self.style == Style::Plain
            && !self.interpolated
            && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }
}

/// The shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A mapping entry. The key is a scalar node, so it has its own id and position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) key: Node,
    pub(crate) value: Node,
}

impl Entry {
    /// The key's text.
    pub(crate) fn name(&self) -> &str {
        match &self.key.kind {
            Kind::Scalar(s) => &s.text,
            _ => "",
        }
    }
}

/// A node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) id: NodeId,
    /// Where the node starts.
    pub(crate) pos: Pos,
    /// Characters to underline: the scalar's length on its line, else 1.
    pub(crate) width: usize,
    /// For a mapping value: where its key is (where "missing field" errors point).
    pub(crate) key_pos: Option<(Pos, usize)>,
    pub(crate) kind: Kind,
}

impl Node {
    /// The entries of a mapping, or none.
    pub(crate) fn entries(&self) -> &[Entry] {
        match &self.kind {
            Kind::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The value under `key` in a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.entries()
            .iter()
            .find(|e| e.name() == key)
            .map(|e| &e.value)
    }

    /// The scalar, if this is one.
    pub(crate) fn scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Where errors about this node as a whole (a missing field) point: its key if it has
    /// one, else itself.
    pub(crate) fn label(&self) -> (Pos, usize) {
        self.key_pos.unwrap_or((self.pos, self.width))
    }

    /// A short description for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Scalar(s) if s.is_null() => "nothing (an empty value)".to_owned(),
            Kind::Scalar(s) => format!("`{}`", shorten(&s.text)),
            Kind::Seq(_) => "a list".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
        }
    }

    /// Calls `f` on every scalar value (not keys), depth first.
    pub(crate) fn for_each_scalar_mut(&mut self, f: &mut dyn FnMut(&mut Scalar, Pos, usize)) {
        let (pos, width) = (self.pos, self.width);
        match &mut self.kind {
            Kind::Scalar(s) => f(s, pos, width),
            Kind::Seq(items) => items.iter_mut().for_each(|n| n.for_each_scalar_mut(f)),
            Kind::Map(entries) => entries
                .iter_mut()
                .for_each(|e| e.value.for_each_scalar_mut(f)),
        }
    }
}

/// The ids of the scalars below `node` whose interpolation failed.
pub(crate) fn broken_ids(node: &Node, out: &mut std::collections::HashSet<NodeId>) {
    match &node.kind {
        Kind::Scalar(s) if s.broken => {
            out.insert(node.id);
        }
        Kind::Scalar(_) => {}
        Kind::Seq(items) => items.iter().for_each(|n| broken_ids(n, out)),
        Kind::Map(entries) => entries.iter().for_each(|e| broken_ids(&e.value, out)),
    }
}

/// Shortens long values in messages.
pub(crate) fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out.replace('\n', "\\n")
}

/// The biggest tree an alias expansion may produce ("billion laughs" guard).
const MAX_NODES: usize = 100_000;

/// The deepest nesting of lists and mappings. A pipeline needs a dozen levels; the bound
/// keeps every recursive walk of the tree (checks, deserialization, dropping it) far
/// from the end of the stack, whatever the file holds (`- - - - …` 150000 times).
pub(crate) const MAX_DEPTH: usize = 64;

/// Parses `text` into a tree. Syntax errors end the parse (YAML cannot be resumed after
/// one); other findings (duplicate keys, non-string keys, a second document) are reported
/// and parsing goes on.
pub(crate) fn parse(text: &str, diags: &mut Vec<Diagnostic>) -> Option<Node> {
    let mut builder = Builder {
        next_id: 0,
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        diags,
        documents: 0,
        nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(event) = parser.next_event() {
        match event {
            Ok((event, span)) => {
                if !builder.event(event, span) {
                    return None;
                }
            }
            Err(err) => {
                let marker = Pos::new(err.marker().line(), err.marker().col() + 1);
                let pos = if err.info().contains("tab") {
                    tab_near(text, marker.line).unwrap_or(marker)
                } else {
                    marker
                };
                let d = Diagnostic::error(pos, format!("invalid YAML: {}", err.info()));
                builder.diags.push(with_syntax_help(d, err.info()));
                return None;
            }
        }
    }
    if builder.root.is_none() {
        builder.diags.push(
            Diagnostic::error(Pos::START, "the file holds no pipeline (it is empty)")
                .with_help("start with `pipeline: <name>` and a `nodes:` mapping; see pipelines/quickstart.yaml"),
        );
    }
    builder.root
}

/// Where the tab is that a tab error is about. The parser reports some of them where the
/// previous token ended (the end of the scalar on the line before, a block scalar's `|`)
/// or just after the tab: the first tab in a line's indentation from the reported line
/// on (a few lines at most), else the first tab on the reported line.
fn tab_near(text: &str, line: usize) -> Option<Pos> {
    let lines: Vec<&str> = text.lines().skip(line.saturating_sub(1)).take(4).collect();
    let in_indent = lines.iter().enumerate().find_map(|(i, l)| {
        l.chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .position(|c| c == '\t')
            .map(|col| Pos::new(line + i, col + 1))
    });
    in_indent.or_else(|| {
        let col = lines.first()?.chars().position(|c| c == '\t')?;
        Some(Pos::new(line, col + 1))
    })
}

fn with_syntax_help(d: Diagnostic, info: &str) -> Diagnostic {
    let help = if info.contains("mapping values are not allowed") {
        "check the indentation of this line, and quote values that contain `: `"
    } else if info.contains("did not find expected") || info.contains("while parsing") {
        "check the indentation and that every `[`, `{` and quote is closed"
    } else if info.contains("tab") {
        "YAML indents with spaces, not tabs"
    } else {
        "check the indentation and quoting around this position"
    };
    d.with_help(help)
}

enum Frame {
    Seq {
        node: Node,
        items: Vec<Node>,
        anchor: usize,
    },
    Map {
        node: Node,
        entries: Vec<Entry>,
        pending_key: Option<Node>,
        anchor: usize,
        /// Entries brought in by `<<` merge keys, applied at the end.
        merged: Vec<Entry>,
    },
}

struct Builder<'d> {
    next_id: NodeId,
    anchors: HashMap<usize, Node>,
    stack: Vec<Frame>,
    root: Option<Node>,
    diags: &'d mut Vec<Diagnostic>,
    documents: usize,
    nodes: usize,
}

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

fn width_of(span: &Span) -> usize {
    if span.end.line() == span.start.line() {
        span.end.col().saturating_sub(span.start.col()).max(1)
    } else {
        1
    }
}

impl Builder<'_> {
    fn id(&mut self) -> NodeId {
        self.next_id = self.next_id.saturating_add(1);
        self.next_id
    }

    /// Handles one event; `false` stops the parse.
    fn event(&mut self, event: Event<'_>, span: Span) -> bool {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => true,
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    self.diags.push(
                        Diagnostic::error(
                            pos_of(&span),
                            "a pipeline file holds one YAML document, this is a second one",
                        )
                        .with_help(
                            "remove the `---` line and what follows, or move it to its own file",
                        ),
                    );
                    return false;
                }
                true
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
                };
                let node = Node {
                    id: self.id(),
                    pos: pos_of(&span),
                    width: width_of(&span),
                    key_pos: None,
                    kind: Kind::Scalar(Scalar {
                        text: text.into_owned(),
                        style,
                        interpolated: false,
                        broken: false,
                    }),
                };
                self.finish(node, anchor)
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor) {
                Some(original) => {
                    if self.stack.len() + depth(original) > MAX_DEPTH {
                        return self.too_deep(&span);
                    }
                    let mut copy = original.clone();
                    let size = count_nodes(&copy);
                    self.nodes += size;
                    if self.nodes > MAX_NODES {
                        self.diags.push(Diagnostic::error(
                            pos_of(&span),
                            "aliases expand to more than 100000 values",
                        ).with_help("a pipeline file does not need that many; check for aliases that refer to each other"));
                        return false;
                    }
                    self.renumber(&mut copy);
                    self.finish(copy, 0)
                }
                None => {
                    self.diags.push(
                        Diagnostic::error(pos_of(&span), "unknown alias")
                            .with_help("define the anchor (`&name`) before using it (`*name`)"),
                    );
                    false
                }
            },
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.too_deep(&span)
            }
            Event::SequenceStart(anchor, _) => {
                let node = self.container(&span, Kind::Seq(Vec::new()));
                self.stack.push(Frame::Seq {
                    node,
                    items: Vec::new(),
                    anchor,
                });
                true
            }
            Event::MappingStart(anchor, _) => {
                let node = self.container(&span, Kind::Map(Vec::new()));
                self.stack.push(Frame::Map {
                    node,
                    entries: Vec::new(),
                    pending_key: None,
                    anchor,
                    merged: Vec::new(),
                });
                true
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    mut node,
                    items,
                    anchor,
                }) => {
                    node.kind = Kind::Seq(items);
                    self.finish(node, anchor)
                }
                _ => false,
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    mut node,
                    mut entries,
                    anchor,
                    merged,
                    ..
                }) => {
                    for entry in merged {
                        if !entries.iter().any(|e| e.name() == entry.name()) {
                            entries.push(entry);
                        }
                    }
                    node.kind = Kind::Map(entries);
                    self.finish(node, anchor)
                }
                _ => false,
            },
        }
    }

    /// Reports nesting deeper than [`MAX_DEPTH`]; stops the parse.
    fn too_deep(&mut self, span: &Span) -> bool {
        self.diags.push(
            Diagnostic::error(
                pos_of(span),
                format!("values nested deeper than {MAX_DEPTH} levels"),
            )
            .with_help(
                "a pipeline needs far fewer levels: look for a runaway run of `- `, `[` or `{`",
            ),
        );
        false
    }

    fn container(&mut self, span: &Span, kind: Kind) -> Node {
        Node {
            id: self.id(),
            pos: pos_of(span),
            width: 1,
            key_pos: None,
            kind,
        }
    }

    /// Gives an alias copy fresh ids, so removing one copy during error recovery does not
    /// remove the others.
    fn renumber(&mut self, node: &mut Node) {
        node.id = self.id();
        match &mut node.kind {
            Kind::Scalar(_) => {}
            Kind::Seq(items) => items.iter_mut().for_each(|n| self.renumber(n)),
            Kind::Map(entries) => {
                for e in entries {
                    self.renumber(&mut e.key);
                    self.renumber(&mut e.value);
                }
            }
        }
    }

    /// A node is complete: attach it to its parent (or make it the root).
    fn finish(&mut self, node: Node, anchor: usize) -> bool {
        self.nodes += 1;
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let path_is_nodes = self.path_is_nodes();
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                true
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                true
            }
            Some(Frame::Map {
                entries,
                pending_key,
                merged,
                ..
            }) => {
                match pending_key.take() {
                    None => {
                        // This node is a key.
                        match &node.kind {
                            Kind::Scalar(s) if !s.is_null() || s.style != Style::Plain => {
                                *pending_key = Some(node);
                            }
                            _ => {
                                self.diags.push(
                                Diagnostic::error(node.pos, "a key must be a plain name")
                                    .with_help("write keys as `name: value`; lists, mappings and empty keys are not keys"),
                            );
                                // Keep the structure: a placeholder key that no field matches.
                                let mut key = node;
                                key.kind = Kind::Scalar(Scalar {
                                    text: "\u{0}invalid key".to_owned(),
                                    style: Style::Quoted,
                                    interpolated: false,
                                    broken: false,
                                });
                                *pending_key = Some(key);
                            }
                        }
                        true
                    }
                    Some(key) => {
                        let mut value = node;
                        value.key_pos = Some((key.pos, key.width));
                        let entry = Entry { key, value };
                        let name = entry.name().to_owned();
                        if name == "<<" {
                            match &entry.value.kind {
                            Kind::Map(more) => merged.extend(more.iter().cloned()),
                            Kind::Seq(maps) if maps.iter().all(|m| matches!(m.kind, Kind::Map(_))) => {
                                for m in maps {
                                    merged.extend(m.entries().iter().cloned());
                                }
                            }
                            _ => self.diags.push(
                                Diagnostic::error(entry.value.pos, "`<<` merges a mapping (or a list of mappings) into this one")
                                    .with_help("write `<<: *anchor` where `&anchor` names a mapping"),
                            ),
                        }
                            return true;
                        }
                        if name.starts_with('\u{0}') {
                            return true;
                        }
                        if let Some(first) = entries.iter().find(|e| e.name() == name) {
                            let what = if path_is_nodes {
                                format!("duplicate node id `{name}`")
                            } else {
                                format!("duplicate key `{name}`")
                            };
                            self.diags.push(
                            Diagnostic::error(entry.key.pos, what)
                                .with_width(entry.key.width)
                                .with_help(format!(
                                    "`{name}` is already defined at line {}; each key of a mapping must be unique",
                                    first.key.pos.line
                                )),
                        );
                            return true;
                        }
                        entries.push(entry);
                        true
                    }
                }
            }
        }
    }

    /// Whether the mapping being built is the top-level `nodes:` mapping.
    fn path_is_nodes(&self) -> bool {
        if self.stack.len() != 2 {
            return false;
        }
        match &self.stack[0] {
            Frame::Map {
                pending_key: Some(k),
                ..
            } => {
                matches!(&k.kind, Kind::Scalar(s) if s.text == "nodes")
            }
            _ => false,
        }
    }
}

/// Levels of lists and mappings in `node` (a scalar is 0). Trees are at most
/// [`MAX_DEPTH`] deep, so the recursion is bounded.
fn depth(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar(_) => 0,
        Kind::Seq(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Kind::Map(entries) => 1 + entries.iter().map(|e| depth(&e.value)).max().unwrap_or(0),
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.kind {
        Kind::Scalar(_) => 0,
        Kind::Seq(items) => items.iter().map(count_nodes).sum(),
        Kind::Map(entries) => entries.iter().map(|e| 1 + count_nodes(&e.value)).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> (Option<Node>, Vec<Diagnostic>) {
        let mut d = Vec::new();
        let t = parse(text, &mut d);
        (t, d)
    }

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let (t, d) = tree("pipeline: x\nnodes:\n  api:\n    type: \"http\"\n");
        assert!(d.is_empty(), "{d:?}");
        let t = t.unwrap();
        let api = t.get("nodes").unwrap().get("api").unwrap();
        assert_eq!(api.key_pos.unwrap().0, Pos::new(3, 3));
        let ty = api.get("type").unwrap();
        assert_eq!(ty.pos, Pos::new(4, 11));
        assert_eq!(ty.width, 6);
        assert_eq!(ty.scalar().unwrap().style, Style::Quoted);
    }

    #[test]
    fn duplicate_node_ids_are_reported_at_the_second() {
        let (_, d) = tree("nodes:\n  a: 1\n  a: 2\nx: 1\nx: 2\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].message, "duplicate node id `a`");
        assert_eq!(d[0].pos, Pos::new(3, 3));
        assert!(d[0].help.as_ref().unwrap().contains("line 2"));
        assert_eq!(d[1].message, "duplicate key `x`");
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_a_positioned_error() {
        for text in [
            format!("{}x", "- ".repeat(150_000)),
            format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("a: {}{}", "{b: ".repeat(100_000), "}".repeat(100_000)),
        ] {
            let (t, d) = tree(&text);
            assert!(t.is_none());
            assert_eq!(d.len(), 1, "{d:?}");
            // Flow collections may meet the parser's own limit first: a positioned error too.
            assert!(
                d[0].message.contains("nested deeper than 64")
                    || d[0].message.contains("recursion limit exceeded"),
                "{d:?}"
            );
        }
        // As deep as allowed parses.
        let ok = format!("{}x", "- ".repeat(MAX_DEPTH));
        let (t, d) = tree(&ok);
        assert!(t.is_some() && d.is_empty(), "{d:?}");
        // An alias may not go past the limit either.
        let half = MAX_DEPTH / 2 + 1;
        let deep = format!("{}1{}", "[".repeat(half), "]".repeat(half));
        let text = format!(
            "a: &x {deep}\nb: {}*x{}\n",
            "[".repeat(half),
            "]".repeat(half)
        );
        let (t, d) = tree(&text);
        assert!(t.is_none(), "{d:?}");
        assert!(d[0].message.contains("nested deeper"), "{d:?}");
    }

    #[test]
    fn aliases_and_merge_keys_expand() {
        let (t, d) = tree("base: &b {a: 1, b: 2}\nuse:\n  <<: *b\n  b: 3\n");
        assert!(d.is_empty(), "{d:?}");
        let t = t.unwrap();
        let u = t.get("use").unwrap();
        assert_eq!(u.get("a").unwrap().scalar().unwrap().text, "1");
        assert_eq!(u.get("b").unwrap().scalar().unwrap().text, "3");
    }

    #[test]
    fn syntax_errors_have_a_position_and_help() {
        let (t, d) = tree("a: 1\n b: 2\n");
        assert!(t.is_none());
        assert_eq!(d[0].pos, Pos::new(2, 3));
        assert!(d[0].help.is_some());
    }

    #[test]
    fn empty_and_multi_document_files_are_errors() {
        assert!(tree("").1[0].message.contains("empty"));
        assert!(tree("# only a comment\n").1[0].message.contains("empty"));
        let (_, d) = tree("a: 1\n---\nb: 2\n");
        assert!(d[0].message.contains("second"), "{d:?}");
    }

    #[test]
    fn alias_bombs_are_stopped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let (t, d) = tree(&text);
        assert!(t.is_none());
        assert!(d[0].message.contains("100000"), "{d:?}");
    }
}
