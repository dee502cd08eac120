//! A quick reader for the plain YAML that policy files are made of: block mappings and
//! lists, one-line flow collections, plain and quoted one-line scalars, comments.
//!
//! The general loader spends most of a large file's time on its token machinery; this
//! reader takes a few passes over the lines instead. It returns the same tree the loader
//! would (values, quoting, scalar positions) or `None` for anything outside that subset
//! (anchors, tags, block scalars, multi-line scalars and flows, escapes, tabs, non-ASCII
//! text, duplicate keys...), and the caller then uses the loader. Positions of lists and
//! mappings are approximate, so callers redo a file with the loader when it has errors.

use crate::tree::{keys_distinct, Mapping, Node, Scalar, Sequence, Span};

/// Deeper nesting than this is left to the loader.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy)]
struct Line<'a> {
    /// 1-based line number in the chunk.
    no: usize,
    indent: usize,
    /// The line after its indentation.
    text: &'a str,
}

struct Reader<'a> {
    /// The chunk's lines not read yet, numbered from 0; read one at a time, so that no
    /// vector of all lines is built (400,000 lines in a 100,000-rule file).
    rest: std::iter::Enumerate<std::str::Split<'a, char>>,
    /// The next line with content, if any.
    current: Option<Line<'a>>,
    /// A line outside the subset was met: the document goes to the loader.
    refused: bool,
    depth: usize,
    scratch: Scratch,
}

/// Children of the collections being read, stacked: each collection takes its own off the
/// top when it ends, into a vector of exactly its size (growing vectors one push at a
/// time would leave a quarter to three quarters of a large file's tree unused).
#[derive(Default)]
struct Scratch {
    nodes: Vec<Node>,
    entries: Vec<(Scalar, Node)>,
}

impl Scratch {
    /// The mapping begun at `base`; `None` when a key repeats (the loader reports it).
    fn mapping(&mut self, span: Span, base: usize) -> Option<Node> {
        // Checked once the mapping is complete: checking each key as it comes would
        // compare it with every earlier one, quadratic in a large label map.
        if !keys_distinct(&self.entries[base..]) {
            return None;
        }
        let entries = self.entries.drain(base..).collect();
        Some(Node::Mapping(Mapping::from_entries(span, entries)))
    }

    fn sequence(&mut self, span: Span, base: usize) -> Node {
        Node::Sequence(Sequence::new(span, self.nodes.drain(base..).collect()))
    }
}

/// The tree of one document, or `None` when it is outside the subset.
pub(crate) fn parse(chunk: &str) -> Option<Node> {
    // Printable ASCII and line breaks only: the loader refuses other control characters,
    // or stops reading at a NUL.
    // In blocks without an early exit, which the compiler vectorizes.
    for block in chunk.as_bytes().chunks(64) {
        let mut bad = false;
        for &b in block {
            bad |= b != b'\n' && !(0x20..0x7f).contains(&b);
        }
        if bad {
            return None;
        }
    }
    let mut r = Reader {
        rest: chunk.split('\n').enumerate(),
        current: None,
        refused: false,
        depth: 0,
        scratch: Scratch::default(),
    };
    r.advance();
    let first = r.current?;
    let node = r.block(first.indent)?;
    (r.current.is_none() && !r.refused).then_some(node)
}

fn marker(line: &Line, col0: usize) -> Span {
    Span::at(line.no, line.indent + col0 + 1)
}

fn scalar(line: &Line, col0: usize, value: &str, plain: bool) -> Node {
    Node::Scalar(Scalar::new(marker(line, col0), value, plain))
}

/// "-" alone or followed by a space: a block list entry.
fn is_entry(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// What follows a value on its line: nothing or a comment.
fn only_comment(rest: &str) -> bool {
    let t = rest.trim_start_matches(' ');
    t.is_empty() || (t.starts_with('#') && (t.len() < rest.len() || rest.is_empty()))
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.current
    }

    /// Moves to the next line with content (blank and comment lines are skipped); a
    /// directive or document marker ends the reading, refused.
    fn advance(&mut self) {
        self.current = None;
        if self.refused {
            return;
        }
        for (i, raw) in self.rest.by_ref() {
            let text = raw.trim_start_matches(' ');
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            if text.starts_with('%') || text.starts_with("---") || text.starts_with("...") {
                self.refused = true;
                return;
            }
            self.current = Some(Line {
                no: i + 1,
                indent: raw.len() - text.len(),
                text,
            });
            return;
        }
    }

    /// The block node whose first line is the next one, at `indent`.
    fn block(&mut self, indent: usize) -> Option<Node> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let line = self.peek().filter(|l| l.indent == indent)?;
        let node = if is_entry(line.text) {
            self.list(indent)
        } else {
            self.mapping(indent)
        };
        self.depth -= 1;
        node
    }

    /// After a key or dash with nothing on its line: the nested block, or null.
    fn nested(&mut self, parent_indent: usize, key_line: &Line, col0: usize) -> Option<Node> {
        match self.peek() {
            Some(l) if l.indent > parent_indent => self.block(l.indent),
            // An empty value: the loader's empty plain scalar (null), placed at the
            // next token, which only the loader knows; errors are reported from its tree.
            _ => Some(scalar(key_line, col0, "", true)),
        }
    }

    /// A value that is the rest of `line` from `col0` (a comment may follow); the next line
    /// must not continue it.
    fn value_on_line(&mut self, line: &Line, col0: usize, indent: usize) -> Option<Node> {
        let (node, end) = inline(line, col0, self.depth, &mut self.scratch)?;
        if !only_comment(&line.text[end..]) {
            return None;
        }
        self.advance();
        if self.peek().is_some_and(|l| l.indent > indent) {
            return None;
        }
        Some(node)
    }

    fn list(&mut self, indent: usize) -> Option<Node> {
        let first = self.peek()?;
        let base = self.scratch.nodes.len();
        while let Some(line) = self.peek() {
            if line.indent != indent || !is_entry(line.text) {
                break;
            }
            let rest = &line.text[1..];
            let value = rest.trim_start_matches(' ');
            let col0 = 1 + rest.len() - value.len();
            if value.is_empty() || value.starts_with('#') {
                self.advance();
                let item = self.nested(indent, &line, col0)?;
                self.scratch.nodes.push(item);
                continue;
            }
            if is_entry(value) || value.starts_with("? ") {
                return None;
            }
            if split_key(value).is_some() {
                // "- key: value": a mapping whose keys sit in the column after the dash.
                let inner = Line {
                    indent: line.indent + col0,
                    text: value,
                    ..line
                };
                self.current = Some(inner);
                let item = self.block(inner.indent)?;
                self.scratch.nodes.push(item);
                continue;
            }
            let node = self.value_on_line(&line, col0, indent)?;
            self.scratch.nodes.push(node);
        }
        Some(self.scratch.sequence(marker(&first, 0), base))
    }

    fn mapping(&mut self, indent: usize) -> Option<Node> {
        let first = self.peek()?;
        let base = self.scratch.entries.len();
        while let Some(line) = self.peek() {
            if line.indent != indent || is_entry(line.text) {
                break;
            }
            let (key, after) = split_key(line.text)?;
            let key = match key_node(&line, key) {
                Some(Node::Scalar(k)) => k,
                _ => return None,
            };
            let rest = &line.text[after..];
            let value_text = rest.trim_start_matches(' ');
            let col0 = after + rest.len() - value_text.len();
            let value = if value_text.is_empty() || value_text.starts_with('#') {
                self.advance();
                match self.peek() {
                    // A list may sit in the key's own column.
                    Some(l) if l.indent == indent && is_entry(l.text) => self.block(indent)?,
                    _ => self.nested(indent, &line, col0)?,
                }
            } else {
                self.value_on_line(&line, col0, indent)?
            };
            self.scratch.entries.push((key, value));
        }
        self.scratch.mapping(marker(&first, 0), base)
    }
}

/// `key: ...` at the start of `text`: the key's text and the index after the colon.
fn split_key(text: &str) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    let end = match b.first()? {
        b'"' | b'\'' => quoted_end(text)?,
        b'[' | b'{' | b'&' | b'*' | b'!' | b'|' | b'>' | b'%' | b'@' | b'`' | b'#' | b'?' => {
            return None
        }
        _ => {
            let colon = find_pair(text, b':', b' ')
                .or_else(|| text.ends_with(':').then(|| text.len() - 1))?;
            if find_pair(&text[..colon], b' ', b'#').is_some() {
                return None;
            }
            colon
        }
    };
    let after = text[end..].strip_prefix(':')?;
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    Some((&text[..end], end + 1))
}

fn key_node(line: &Line, key: &str) -> Option<Node> {
    match key.as_bytes().first()? {
        b'"' | b'\'' => {
            let (node, end) = quoted(line, 0, key)?;
            (end == key.len()).then_some(node)
        }
        _ => {
            let k = key.trim_end_matches(' ');
            plain_ok(k, false).then(|| scalar(line, 0, k, true))
        }
    }
}

/// Where `a` followed by `b` first occurs in `s`: what `str::find` of a two-byte
/// pattern gives, without setting up a substring search for each short value.
fn find_pair(s: &str, a: u8, b: u8) -> Option<usize> {
    s.as_bytes().windows(2).position(|w| w[0] == a && w[1] == b)
}

/// A plain scalar we read the way the loader does.
fn plain_ok(s: &str, flow: bool) -> bool {
    let Some(c) = s.bytes().next() else {
        return false;
    };
    if b"[]{},#&*!|>'\"%@`".contains(&c) {
        return false;
    }
    if matches!(c, b'-' | b'?' | b':') && s.len() == 1 {
        return false;
    }
    if matches!(c, b'?' | b':') {
        return false;
    }
    if find_pair(s, b':', b' ').is_some() || s.ends_with(':') || find_pair(s, b' ', b'#').is_some()
    {
        return false;
    }
    !(flow && s.bytes().any(|b| b"[]{},".contains(&b)))
}

/// Index just past a quoted scalar at the start of `text`.
fn quoted_end(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let q = b[0];
    let mut i = 1;
    while i < b.len() {
        if b[i] == b'\\' && q == b'"' {
            return None;
        }
        if b[i] == q {
            if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// A quoted scalar at `line.text[col0..]`; returns it and the index past it in `s`.
fn quoted(line: &Line, col0: usize, s: &str) -> Option<(Node, usize)> {
    let end = quoted_end(s)?;
    let body = &s[1..end - 1];
    let value = if s.starts_with('\'') {
        body.replace("''", "'")
    } else {
        body.to_string()
    };
    Some((scalar(line, col0, &value, false), end))
}

/// A one-line value starting at `line.text[col0..]`: returns it and the index in
/// `line.text` just past it.
fn inline(line: &Line, col0: usize, depth: usize, sc: &mut Scratch) -> Option<(Node, usize)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let s = &line.text[col0..];
    match s.as_bytes()[0] {
        b'[' | b'{' => flow(line, col0, depth + 1, sc),
        b'"' | b'\'' => quoted(line, col0, s).map(|(n, e)| (n, col0 + e)),
        _ => {
            let end = find_pair(s, b' ', b'#').unwrap_or(s.len());
            let v = s[..end].trim_end_matches(' ');
            plain_ok(v, false).then(|| (scalar(line, col0, v, true), col0 + v.len()))
        }
    }
}

/// A flow list or mapping that closes on its line.
fn flow(line: &Line, col0: usize, depth: usize, sc: &mut Scratch) -> Option<(Node, usize)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let text = line.text;
    let b = text.as_bytes();
    let is_map = b[col0] == b'{';
    let close = if is_map { b'}' } else { b']' };
    let span = marker(line, col0);
    let base = if is_map {
        sc.entries.len()
    } else {
        sc.nodes.len()
    };
    let mut i = col0 + 1;
    let skip = |i: &mut usize| {
        while *i < b.len() && b[*i] == b' ' {
            *i += 1;
        }
    };
    loop {
        skip(&mut i);
        if *b.get(i)? == close {
            i += 1;
            break;
        }
        if is_map {
            let (key, after) = flow_scalar(line, i)?;
            let Node::Scalar(key) = key else {
                return None;
            };
            i = after;
            skip(&mut i);
            if *b.get(i)? != b':' {
                return None;
            }
            i += 1;
            if !matches!(b.get(i), Some(b' ')) {
                return None;
            }
            skip(&mut i);
            let (value, after) = flow_item(line, i, depth, sc)?;
            i = after;
            sc.entries.push((key, value));
        } else {
            let (value, after) = flow_item(line, i, depth, sc)?;
            i = after;
            sc.nodes.push(value);
        }
        skip(&mut i);
        match *b.get(i)? {
            b',' => i += 1,
            c if c == close => {
                i += 1;
                break;
            }
            _ => return None,
        }
    }
    let node = if is_map {
        sc.mapping(span, base)?
    } else {
        sc.sequence(span, base)
    };
    Some((node, i))
}

fn flow_item(line: &Line, i: usize, depth: usize, sc: &mut Scratch) -> Option<(Node, usize)> {
    match line.text.as_bytes().get(i)? {
        b'[' | b'{' => flow(line, i, depth + 1, sc),
        _ => flow_scalar(line, i),
    }
}

/// A scalar inside a flow collection: quoted, or plain up to `,`, a bracket or `: `.
fn flow_scalar(line: &Line, i: usize) -> Option<(Node, usize)> {
    let s = &line.text[i..];
    match s.as_bytes().first()? {
        b'"' | b'\'' => quoted(line, i, s).map(|(n, e)| (n, i + e)),
        _ => {
            let b = s.as_bytes();
            let mut end = 0;
            while end < b.len() {
                let c = b[end];
                if b",[]{}".contains(&c)
                    || (c == b':' && b.get(end + 1).is_none_or(|n| b" ,]}".contains(n)))
                {
                    break;
                }
                end += 1;
            }
            let v = s[..end].trim_end_matches(' ');
            plain_ok(v, true).then(|| (scalar(line, i, v, true), i + v.len()))
        }
    }
}

#[cfg(test)]
#[path = "fast_yaml_tests.rs"]
mod tests;
