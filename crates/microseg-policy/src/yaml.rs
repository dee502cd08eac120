//! YAML document loading and typed access to nodes with positioned errors.

use std::borrow::Cow;

use crate::diagnostics::Diagnostic;
use crate::model::Origin;
use crate::tree::{Mapping, Node, Scalar, Span};
use marked_yaml::loader::{parse_yaml_with_options, LoadError, LoaderOptions};

/// One document of a file, with the line it starts on (0-based offset).
pub(crate) struct Document {
    pub node: Node,
    pub line_off: usize,
}

/// Collects diagnostics for one file and maps node positions to file positions.
pub(crate) struct Ctx<'f> {
    pub file: &'f str,
    pub line_off: usize,
    pub diags: Vec<Diagnostic>,
}

fn is_separator(line: &str) -> bool {
    (line.starts_with("---") || line.starts_with("..."))
        && line[3..].chars().next().is_none_or(char::is_whitespace)
}

fn is_blank(chunk: &str) -> bool {
    chunk.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t.starts_with('%')
    })
}

/// Splits a multi-document stream on `---` lines and parses each document.
/// marked-yaml only loads a single document, so the split is done here.
/// With `fast`, each document is first tried with [`crate::fast_yaml`]; the second value
/// tells whether any was read that way (its list and mapping positions are approximate).
pub(crate) fn load_documents(
    file: &str,
    text: &str,
    diags: &mut Vec<Diagnostic>,
    fast: bool,
) -> (Vec<Document>, bool) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = &*lone_cr_as_lf(text);
    // The loader stops reading at a NUL, without an error: what follows would be left out
    // silently (rules included).
    if let Some(at) = text.find('\0') {
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line = text[..at].matches('\n').count() + 1;
        let col = text[line_start..at].chars().count() + 1;
        diags.push(Diagnostic::new(
            file,
            line,
            col,
            "a NUL character is not allowed",
        ));
        return (Vec::new(), false);
    }
    // Separator lines: (line index, byte offset of the line, byte offset after it).
    let mut separators = Vec::new();
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if is_separator(line.trim_end_matches(['\n', '\r'])) {
            separators.push((i, offset, offset + line.len()));
        }
        offset += line.len();
    }
    // Documents as slices of the text, not copies of a large file. One that starts with
    // content on its "---" line is copied, that line padded to keep columns; its line
    // offset is then that of the marker line.
    let mut chunks: Vec<(usize, Cow<str>)> = Vec::new();
    let (mut start, mut start_line) = (0, 0);
    for (k, &(i, line_start, line_end)) in separators.iter().enumerate() {
        chunks.push((start_line, Cow::Borrowed(&text[start..line_start])));
        let end = separators.get(k + 1).map_or(text.len(), |s| s.1);
        let rest = text[line_start..line_end]
            .strip_prefix("---")
            .unwrap_or("")
            .trim_end_matches(['\n', '\r']);
        if rest.trim().is_empty() {
            (start, start_line) = (line_end, i + 1);
        } else {
            chunks.push((
                i,
                Cow::Owned(format!("   {rest}\n{}", &text[line_end..end])),
            ));
            (start, start_line) = (end, 0);
        }
    }
    if start < text.len() {
        chunks.push((start_line, Cow::Borrowed(&text[start..])));
    }
    let mut docs = Vec::new();
    let mut fast_used = false;
    for (line_off, chunk) in chunks {
        if is_blank(&chunk) {
            continue;
        }
        if fast {
            if let Some(node) = crate::fast_yaml::parse(&chunk) {
                fast_used = true;
                docs.push(Document { node, line_off });
                continue;
            }
        }
        if let Some((line, col)) = too_deeply_nested(&chunk) {
            let msg = format!(
                "nested deeper than {MAX_NESTING_COLUMNS} columns of indentation and \"- \" \
                 markers: not a policy file"
            );
            diags.push(Diagnostic::new(file, line + line_off, col, msg));
            continue;
        }
        match parse_chunk(&chunk) {
            Ok(node) => docs.push(Document { node, line_off }),
            Err((line, col, msg)) => {
                let (line, col) = inside_chunk(&chunk, line, col);
                diags.push(Diagnostic::new(file, line + line_off, col, msg))
            }
        }
    }
    (docs, fast_used)
}

/// The loader puts an error at the end of input, and a value left empty there (`kind:`
/// as the last line), on the line after the last one when the text does not end in a
/// newline, and some errors at the end of input a column past the last line's end: neither
/// is in the file, so point just past that line's end instead.
fn inside_chunk(chunk: &str, line: usize, col: usize) -> (usize, usize) {
    inside(&line_starts(chunk), chunk, line, col)
}

/// Byte offsets where the lines of `text` start.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

fn inside(starts: &[usize], text: &str, line: usize, col: usize) -> (usize, usize) {
    let (line, col) = match line {
        l if l > starts.len() => (starts.len(), usize::MAX),
        l => (l.max(1), col),
    };
    let end = starts.get(line).map_or(text.len(), |next| next - 1);
    let l = &text[starts[line - 1]..end];
    let width = l.strip_suffix('\r').unwrap_or(l).chars().count();
    (line, col.clamp(1, width + 1))
}

/// Every diagnostic of `text` at a position inside it (see [`inside_chunk`]).
pub(crate) fn keep_inside(text: &str, diags: &mut [Diagnostic]) {
    if diags.is_empty() {
        return;
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = &*lone_cr_as_lf(text);
    let starts = line_starts(text);
    for d in diags {
        (d.line, d.col) = inside(&starts, text, d.line, d.col);
    }
}

/// YAML breaks lines at a "\r" alone too, and the loader counts lines so: split documents
/// and count lines the same way, or positions after one point elsewhere. Both are line
/// breaks to YAML, so the documents read the same.
fn lone_cr_as_lf(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let lone = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
    if !text.contains('\r') || !(0..bytes.len()).any(lone) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(if c == '\r' && chars.peek() != Some(&'\n') {
            '\n'
        } else {
            c
        });
    }
    Cow::Owned(out)
}

/// Each block nesting level takes at least one column (indentation) or two (a compact
/// "- "), so this bounds the depth the loader and [`Node::from`] recurse to, far above
/// what any policy needs. Without it, "- - - ... x" overflows the stack and aborts the
/// process (a controller serving `POST /v1/apply`) instead of returning an error. Flow
/// brackets are capped by the YAML parser itself.
const MAX_NESTING_COLUMNS: usize = 512;

/// The first line and column (1-based) where block nesting starts past
/// [`MAX_NESTING_COLUMNS`]; block scalars' text lines count too, which no policy minds.
fn too_deeply_nested(chunk: &str) -> Option<(usize, usize)> {
    for (i, line) in chunk.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut col = bytes.iter().take_while(|&&b| b == b' ').count();
        while col + 1 < bytes.len() && matches!(bytes[col], b'-' | b'?') && bytes[col + 1] == b' ' {
            col += 2;
            col += bytes[col..].iter().take_while(|&&b| b == b' ').count();
        }
        if col > MAX_NESTING_COLUMNS {
            return Some((i + 1, col + 1));
        }
    }
    None
}

fn parse_chunk(chunk: &str) -> Result<Node, (usize, usize, String)> {
    let opts = || {
        LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true)
    };
    // The loader asserts on states it believes unreachable; never let that escape.
    let run = |seq: bool| {
        std::panic::catch_unwind(|| {
            let o = if seq {
                opts().toplevel_sequence()
            } else {
                opts()
            };
            parse_yaml_with_options(0, chunk, o)
        })
        .unwrap_or_else(|_| {
            Err(LoadError::TopLevelMustBeSequence(marked_yaml::Marker::new(
                0, 0, 1, 1,
            )))
        })
    };
    match run(false) {
        Ok(n) => Ok(Node::from(&n)),
        Err(LoadError::TopLevelMustBeMapping(_)) => match run(true) {
            Ok(n) => Ok(Node::from(&n)),
            Err(LoadError::TopLevelMustBeSequence(m)) => Err((
                m.line(),
                m.column(),
                "a document must be a resource (a mapping) or a list of resources".into(),
            )),
            Err(e) => Err(load_error(e)),
        },
        Err(e) => Err(load_error(e)),
    }
}

fn load_error(e: LoadError) -> (usize, usize, String) {
    let (m, msg) = match e {
        LoadError::ScanError(m, se) => (m, format!("invalid YAML: {}", se.info())),
        LoadError::DuplicateKey(d) => {
            let m = d
                .key
                .span()
                .start()
                .copied()
                .unwrap_or_else(|| marked_yaml::Marker::new(0, 0, 1, 1));
            (m, format!("duplicate key \"{}\"", d.key.as_str()))
        }
        LoadError::UnexpectedAnchor(m) => (m, "YAML anchors and aliases are not supported".into()),
        LoadError::UnexpectedTag(m) => (m, "YAML tags are not supported".into()),
        LoadError::MappingKeyMustBeScalar(m) => (m, "mapping keys must be strings".into()),
        LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => (
            m,
            "a document must be a resource (a mapping) or a list of resources".into(),
        ),
    };
    (m.line().max(1), m.column().max(1), msg)
}

/// Where a node starts. A block mapping's own mark sits after its first key,
/// so the first key is used instead.
pub(crate) fn start(node: &Node) -> &Span {
    match node {
        Node::Mapping(m) => map_start(m),
        _ => node.span(),
    }
}

pub(crate) fn map_start(m: &Mapping) -> &Span {
    m.keys().next().map_or(m.span(), |k| k.span())
}

pub(crate) fn is_null(node: &Node) -> bool {
    match node {
        Node::Scalar(s) => {
            s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
        }
        _ => false,
    }
}

/// Short description of a node for "found ..." messages.
pub(crate) fn describe(node: &Node) -> String {
    match node {
        Node::Mapping(_) => "a mapping".into(),
        Node::Sequence(_) => "a list".into(),
        Node::Scalar(_) if is_null(node) => "null".into(),
        Node::Scalar(s) => format!("\"{}\"", s.as_str()),
    }
}

impl<'f> Ctx<'f> {
    pub fn new(file: &'f str) -> Ctx<'f> {
        Ctx {
            file,
            line_off: 0,
            diags: Vec::new(),
        }
    }

    pub fn pos(&self, span: &Span) -> (usize, usize) {
        match span.start() {
            Some(m) => (m.line().max(1) + self.line_off, m.column().max(1)),
            None => (1 + self.line_off, 1),
        }
    }

    pub fn origin(&self, node: &Node) -> Origin {
        let (line, col) = self.pos(start(node));
        Origin {
            file: self.file.to_string(),
            line,
            col,
        }
    }

    pub fn err(&mut self, span: &Span, msg: impl Into<String>) {
        let (line, col) = self.pos(span);
        self.diags.push(Diagnostic::new(self.file, line, col, msg));
    }

    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n Mapping> {
        match node {
            Node::Mapping(m) => Some(m),
            _ => {
                self.err(
                    start(node),
                    format!("{what} must be a mapping, found {}", describe(node)),
                );
                None
            }
        }
    }

    /// A list; null counts as empty.
    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match node {
            Node::Sequence(s) => Some(s.as_slice()),
            _ if is_null(node) => Some(&[]),
            _ => {
                self.err(
                    start(node),
                    format!("{what} must be a list, found {}", describe(node)),
                );
                None
            }
        }
    }

    pub fn str<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match node {
            Node::Scalar(s) if !is_null(node) => Some(s.as_str()),
            _ => {
                self.err(
                    start(node),
                    format!("{what} must be a string, found {}", describe(node)),
                );
                None
            }
        }
    }

    /// An integer written as a plain (unquoted) scalar.
    pub fn int(&mut self, node: &Node, what: &str) -> Option<i128> {
        if let Node::Scalar(s) = node {
            if s.may_coerce() {
                if let Ok(n) = s.as_str().parse::<i128>() {
                    return Some(n);
                }
            }
        }
        self.err(
            start(node),
            format!("{what} must be an integer, found {}", describe(node)),
        );
        None
    }

    /// False, with an error at the first entry past `max`, when `items` has more.
    pub fn within(&mut self, items: &[Node], max: usize, what: &str) -> bool {
        match items.get(max) {
            Some(past) => {
                self.err(start(past), too_many(what, items.len(), max));
                false
            }
            None => true,
        }
    }

    /// Reports keys not in `allowed`, at the key's position.
    pub fn check_fields(&mut self, map: &Mapping, what: &str, allowed: &[&str]) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.err(
                    key.span(),
                    format!(
                        "unknown field \"{}\" in {what}; allowed: {}",
                        key.as_str(),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// A required field; reports its absence at the mapping.
    pub fn required<'n>(&mut self, map: &'n Mapping, key: &str, what: &str) -> Option<&'n Node> {
        let n = map.get_node(key);
        if n.is_none() {
            self.err(map_start(map), format!("missing field \"{key}\" in {what}"));
        }
        n
    }
}

pub(crate) fn too_many(what: &str, n: usize, max: usize) -> String {
    format!("{what} has {n} entries; at most {max} are allowed")
}

/// Key/value pairs of a mapping with the key nodes (for positions).
pub(crate) fn entries(map: &Mapping) -> impl Iterator<Item = (&Scalar, &Node)> {
    map.iter()
}
