//! A quick reader for the plain YAML that policy files are made of: block mappings and
//! lists, one-line flow collections, plain and quoted one-line scalars, comments.
//!
//! The general loader spends most of a large file's time on its token machinery; this
//! reader takes a few passes over the lines instead. It returns the same tree the loader
//! would (values, quoting, scalar positions) or `None` for anything outside that subset
//! (anchors, tags, block scalars, multi-line scalars and flows, escapes, tabs, non-ASCII
//! text, duplicate keys...), and the caller then uses the loader. Positions of lists and
//! mappings are approximate, so callers redo a file with the loader when it has errors.

use crate::tree::{Mapping, Node, Scalar, Sequence, Span};

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
    lines: Vec<Line<'a>>,
    next: usize,
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
    /// Adds a mapping entry; false when the mapping begun at `base` has the key already.
    fn entry(&mut self, base: usize, key: Scalar, value: Node) -> bool {
        if self.entries[base..]
            .iter()
            .any(|(k, _)| k.as_str() == key.as_str())
        {
            return false;
        }
        self.entries.push((key, value));
        true
    }

    fn mapping(&mut self, span: Span, base: usize) -> Node {
        Node::Mapping(Mapping::from_entries(
            span,
            self.entries.drain(base..).collect(),
        ))
    }

    fn sequence(&mut self, span: Span, base: usize) -> Node {
        Node::Sequence(Sequence::new(span, self.nodes.drain(base..).collect()))
    }
}

/// The tree of one document, or `None` when it is outside the subset.
pub(crate) fn parse(chunk: &str) -> Option<Node> {
    if !chunk.is_ascii() || chunk.contains('\t') || chunk.contains('\r') {
        return None;
    }
    let mut lines = Vec::new();
    for (i, raw) in chunk.split('\n').enumerate() {
        let text = raw.trim_start_matches(' ');
        let line = Line {
            no: i + 1,
            indent: raw.len() - text.len(),
            text,
        };
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with('%') || text.starts_with("---") || text.starts_with("...") {
            return None;
        }
        lines.push(line);
    }
    let first = *lines.first()?;
    let mut r = Reader {
        lines,
        next: 0,
        depth: 0,
        scratch: Scratch::default(),
    };
    let node = r.block(first.indent)?;
    (r.next == r.lines.len()).then_some(node)
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
        self.lines.get(self.next).copied()
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
        self.next += 1;
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
                self.next += 1;
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
                self.lines[self.next] = inner;
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
                self.next += 1;
                match self.peek() {
                    // A list may sit in the key's own column.
                    Some(l) if l.indent == indent && is_entry(l.text) => self.block(indent)?,
                    _ => self.nested(indent, &line, col0)?,
                }
            } else {
                self.value_on_line(&line, col0, indent)?
            };
            if !self.scratch.entry(base, key, value) {
                return None;
            }
        }
        Some(self.scratch.mapping(marker(&first, 0), base))
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
            let colon = text
                .find(": ")
                .or_else(|| text.ends_with(':').then(|| text.len() - 1))?;
            if text[..colon].contains(" #") {
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
    if s.contains(": ") || s.ends_with(':') || s.contains(" #") {
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
            let end = s.find(" #").unwrap_or(s.len());
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
            if !sc.entry(base, key, value) {
                return None;
            }
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
        sc.mapping(span, base)
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
mod tests {
    use super::*;
    use marked_yaml::loader::{parse_yaml_with_options, LoaderOptions};

    /// The loader's tree, for comparison.
    fn loader(text: &str) -> Option<Node> {
        let o = || {
            LoaderOptions::default()
                .error_on_duplicate_keys(true)
                .prevent_coercion(true)
        };
        parse_yaml_with_options(0, text, o())
            .or_else(|_| parse_yaml_with_options(0, text, o().toplevel_sequence()))
            .ok()
            .map(|n| Node::from(&n))
    }

    /// Values, quoting and scalar positions must all match.
    fn same(a: &Node, b: &Node) -> bool {
        match (a, b) {
            (Node::Scalar(x), Node::Scalar(y)) => {
                x.as_str() == y.as_str()
                    && x.may_coerce() == y.may_coerce()
                    && (x.as_str().is_empty()
                        || x.span().start().map(|m| (m.line(), m.column()))
                            == y.span().start().map(|m| (m.line(), m.column())))
            }
            (Node::Sequence(x), Node::Sequence(y)) => {
                x.as_slice().len() == y.as_slice().len()
                    && x.iter().zip(y.iter()).all(|(p, q)| same(p, q))
            }
            (Node::Mapping(x), Node::Mapping(y)) => {
                x.keys().count() == y.keys().count()
                    && x.iter().zip(y.iter()).all(|((k1, v1), (k2, v2))| {
                        same(&Node::Scalar(k1.clone()), &Node::Scalar(k2.clone())) && same(v1, v2)
                    })
            }
            _ => false,
        }
    }

    fn agrees(text: &str) {
        let fast = parse(text);
        let slow = loader(text);
        match (&fast, &slow) {
            (Some(f), Some(s)) => assert!(same(f, s), "trees differ for:\n{text}\n{f:#?}\n{s:#?}"),
            (Some(f), None) => panic!("accepted what the loader refuses:\n{text}\n{f:#?}"),
            _ => {}
        }
    }

    #[test]
    fn policy_files_read_the_same_as_with_the_loader() {
        let text = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: web, labels: {a: 'x''y', \"b\": \"c d\"}}\nspec:\n  selector:\n    matchLabels: {app: web}   # comment\n  priority: 10\n  ingress:\n    - action: allow\n      from: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}, {selector: {matchLabels: {}}}]\n      ports: [{protocol: TCP, port: 80}, {protocol: UDP, port: 1000-2000}]\n    -\n      action: deny\n      from:\n      - cidr: fd00::/64\n      ports: []\n    - action: log\n  egress:\n  - action: allow\n    to:\n      - {cidr: \"::/0\"}\n  empty:\n  nothing: ~\n";
        assert!(parse(text).is_some());
        agrees(text);
    }

    #[test]
    fn what_it_does_not_read_is_left_to_the_loader() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !tag 1\n",
            "a: |\n  text\n",
            "a: one\n  two\n",
            "a: [1,\n 2]\n",
            "a: \"x\\ny\"\n",
            "a: 1\na: 2\n",
            "- - a\n",
            "? a\n: b\n",
            "a: b: c\n",
            "a:\tb\n",
            "just a scalar\n",
        ] {
            assert!(parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn random_documents_in_the_subset_read_the_same_as_with_the_loader() {
        // Small generated documents mixing every construct the reader takes.
        let scalars = [
            "a",
            "TCP",
            "10.0.0.0/8",
            "fd00::1",
            "'q'",
            "\"d d\"",
            "1-2",
            "-1",
            "x:y",
            "''",
        ];
        let mut seed: u64 = 7;
        let mut rnd = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n
        };
        for _ in 0..2000 {
            let mut t = String::new();
            for k in 0..1 + rnd(3) {
                match rnd(4) {
                    0 => t += &format!("k{k}: {}\n", scalars[rnd(scalars.len())]),
                    1 => t += &format!("k{k}: [{}, {{x: {}}}]\n", scalars[rnd(5)], scalars[rnd(5)]),
                    2 => {
                        t += &format!("k{k}:\n");
                        let ind = if rnd(2) == 0 { "" } else { "  " };
                        for j in 0..1 + rnd(3) {
                            t += &format!(
                                "{ind}- n{j}: {}\n{ind}  m: {}\n",
                                scalars[rnd(scalars.len())],
                                scalars[rnd(4)]
                            );
                        }
                    }
                    _ => {
                        t += &format!(
                            "k{k}:   # c\n  inner: {{}}\n  list: []\n  v: {}  # c\n",
                            scalars[rnd(scalars.len())]
                        )
                    }
                }
            }
            agrees(&t);
        }
    }
}
