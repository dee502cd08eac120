//! The one YAML writer: any JSON value, and Policies, as YAML that this crate's readers
//! read back to the same value.
//!
//! Block style, two spaces a level; a short collection of scalars goes on one line in
//! flow style (`{app: web}`, `[80, 443]`). A string is written plain only when no YAML
//! reader could take it for anything else (a number, a boolean, null, a date...);
//! otherwise double-quoted, with every control or invisible formatting character
//! escaped. A multi-line string that needs no escape is a literal block (`|`).

use std::borrow::Cow;
use std::fmt::Write;

use serde_json::Value;

use crate::model::*;

/// What is written: mappings keep the order they are built in (a `serde_json::Map`
/// sorts its keys; a Policy reads better in its documented order).
enum Tree<'a> {
    /// Written as it is: a number, `true`, `false` or `null`.
    Literal(String),
    Str(Cow<'a, str>),
    Map(Vec<(Cow<'a, str>, Tree<'a>)>),
    List(Vec<Tree<'a>>),
}

impl<'a> From<&'a Value> for Tree<'a> {
    fn from(v: &'a Value) -> Tree<'a> {
        match v {
            Value::String(s) => Tree::Str(Cow::Borrowed(s)),
            Value::Array(a) => Tree::List(a.iter().map(Tree::from).collect()),
            Value::Object(m) => Tree::Map(
                m.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Tree::from(v)))
                    .collect(),
            ),
            other => Tree::Literal(other.to_string()),
        }
    }
}

/// One YAML document for `value`, ending in a newline.
pub fn value_to_yaml(value: &Value) -> String {
    let mut out = String::new();
    document(&Tree::from(value), &mut out);
    out
}

/// Multi-document YAML, one Policy per document.
pub fn policies_to_yaml(policies: &[Policy]) -> String {
    let mut out = String::new();
    for (i, p) in policies.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        document(&policy(p), &mut out);
    }
    out
}

// ---- writing -------------------------------------------------------------------------

/// Longest collection written on one line.
const FLOW_WIDTH: usize = 60;

fn document(t: &Tree, out: &mut String) {
    match t {
        Tree::Map(entries) if !entries.is_empty() => mapping(entries, 0, false, out),
        Tree::List(items) if !items.is_empty() => list(items, 0, out),
        _ => {
            // A scalar alone: no blank before it.
            let mut line = String::new();
            after_marker(t, 0, &mut line);
            out.push_str(line.strip_prefix(' ').unwrap_or(&line));
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Entries of a mapping whose keys start at column `indent`; with `inline`, the first
/// key goes on the current line (after a list's "- ").
fn mapping(entries: &[(Cow<str>, Tree)], indent: usize, inline: bool, out: &mut String) {
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 || !inline {
            pad(out, indent);
        }
        scalar(key, out);
        out.push(':');
        after_marker(value, indent, out);
    }
}

/// Items of a list whose dashes are at column `indent`.
fn list(items: &[Tree], indent: usize, out: &mut String) {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item {
            Tree::Map(entries) if !entries.is_empty() && flow(item).is_none() => {
                out.push(' ');
                mapping(entries, indent + 2, true, out);
            }
            _ => after_marker(item, indent, out),
        }
    }
}

/// A value after its key's colon or its list item's dash (the key or dash at column
/// `indent`), to the end of its last line.
fn after_marker(t: &Tree, indent: usize, out: &mut String) {
    if let Some(line) = flow(t) {
        out.push(' ');
        out.push_str(&line);
        out.push('\n');
        return;
    }
    match t {
        Tree::Str(s) => literal_block(s, indent + 2, out),
        Tree::Map(entries) => {
            out.push('\n');
            mapping(entries, indent + 2, false, out);
        }
        Tree::List(items) => {
            out.push('\n');
            list(items, indent + 2, out);
        }
        Tree::Literal(_) => unreachable!("a literal always fits on its line"),
    }
}

/// The value on one line, when it goes there: a scalar that is not a literal block, an
/// empty collection, or a short one of scalars.
fn flow(t: &Tree) -> Option<String> {
    let mut line = String::new();
    match t {
        Tree::Literal(s) => line.push_str(s),
        Tree::Str(s) if is_literal_block(s) => return None,
        Tree::Str(s) => scalar(s, &mut line),
        Tree::Map(entries) => {
            line.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    line.push_str(", ");
                }
                scalar(k, &mut line);
                line.push_str(": ");
                flow_scalar(v, &mut line)?;
                if line.len() > FLOW_WIDTH {
                    return None;
                }
            }
            line.push('}');
        }
        Tree::List(items) => {
            line.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    line.push_str(", ");
                }
                flow_scalar(v, &mut line)?;
                if line.len() > FLOW_WIDTH {
                    return None;
                }
            }
            line.push(']');
        }
    }
    let collection =
        matches!(t, Tree::Map(e) if !e.is_empty()) || matches!(t, Tree::List(i) if !i.is_empty());
    (!collection || line.len() <= FLOW_WIDTH).then_some(line)
}

/// A one-line scalar or an empty collection inside a flow collection; None for anything
/// else.
fn flow_scalar(t: &Tree, out: &mut String) -> Option<()> {
    match t {
        Tree::Literal(s) => out.push_str(s),
        Tree::Str(s) if is_literal_block(s) => return None,
        Tree::Str(s) => scalar(s, out),
        Tree::Map(e) if e.is_empty() => out.push_str("{}"),
        Tree::List(i) if i.is_empty() => out.push_str("[]"),
        _ => return None,
    }
    Some(())
}

/// A string on one line: plain when safe, else double-quoted.
fn scalar(s: &str, out: &mut String) {
    if is_plain(s) {
        out.push_str(s);
    } else {
        double_quoted(s, out);
    }
}

/// Whether `s` written plain reads back as this string in any YAML reader (1.1 or
/// 1.2): names, labels, addresses. Anything else is quoted.
fn is_plain(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    let simple = (first.is_ascii_alphanumeric() || first == b'/')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(c));
    // YAML 1.1's booleans and null, and what reads as a number ("inf", "nan").
    let special = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
    ) || s.parse::<f64>().is_ok();
    // From a digit only what no schema reads as a number or date: an IPv4 address, a
    // CIDR.
    let numeric_looking =
        first.is_ascii_digit() && !s.contains('/') && s.parse::<std::net::Ipv4Addr>().is_err();
    simple && !special && !numeric_looking
}

/// What a terminal must not show raw (as diagnostics escape it), and what a YAML stream
/// may not carry raw besides: the BOM and the non-characters.
fn needs_escape(c: char) -> bool {
    crate::diagnostics::needs_escape(c) || matches!(c, '\u{feff}' | '\u{fffe}' | '\u{ffff}')
}

fn double_quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A multi-line string that reads back the same as a literal block: nothing to escape,
/// a first line that sets the indentation (not empty, no leading blank), and at most
/// one final line break (`|` keeps one, `|-` none).
fn is_literal_block(s: &str) -> bool {
    let body = s.strip_suffix('\n').unwrap_or(s);
    body.contains('\n')
        && !body.ends_with('\n')
        && !body.starts_with([' ', '\t', '\n'])
        && !s
            .chars()
            .any(|c| c != '\n' && (c == '\t' || needs_escape(c)))
}

fn literal_block(s: &str, indent: usize, out: &mut String) {
    let body = s.strip_suffix('\n');
    out.push_str(if body.is_some() { " |\n" } else { " |-\n" });
    for line in body.unwrap_or(s).split('\n') {
        // Empty lines stay empty: no trailing blanks.
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

// ---- Policies ------------------------------------------------------------------------

fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Tree<'a>)>) -> Tree<'a> {
    Tree::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Cow::Borrowed(k), v))
            .collect(),
    )
}

fn text(s: impl ToString) -> Tree<'static> {
    Tree::Str(Cow::Owned(s.to_string()))
}

fn number(n: impl ToString) -> Tree<'static> {
    Tree::Literal(n.to_string())
}

fn selector(sel: &LabelSelector) -> Tree<'_> {
    let mut entries = Vec::new();
    if !sel.match_labels.is_empty() {
        let labels = sel
            .match_labels
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Tree::Str(Cow::Borrowed(v))))
            .collect();
        entries.push(("matchLabels", Tree::Map(labels)));
    }
    if !sel.match_expressions.is_empty() {
        let requirements = sel.match_expressions.iter().map(|r| {
            let mut e = vec![
                ("key", Tree::Str(Cow::Borrowed(&r.key))),
                ("operator", text(r.operator)),
            ];
            if !r.values.is_empty() {
                let values = r.values.iter().map(|v| Tree::Str(Cow::Borrowed(v)));
                e.push(("values", Tree::List(values.collect())));
            }
            map(e)
        });
        entries.push(("matchExpressions", Tree::List(requirements.collect())));
    }
    map(entries)
}

fn port_range(r: &PortRange, entries: &mut Vec<(&str, Tree)>) {
    entries.push(("port", number(r.start)));
    if r.start != r.end {
        entries.push(("endPort", number(r.end)));
    }
}

fn peer(p: &Peer) -> Tree<'_> {
    match p {
        Peer::Selector(s) => map([("selector", selector(s))]),
        Peer::Cidr { cidr, except } => {
            let mut e = vec![("cidr", text(cidr))];
            if !except.is_empty() {
                e.push(("except", Tree::List(except.iter().map(text).collect())));
            }
            map(e)
        }
    }
}

fn rule<'a>(r: &'a Rule, peer_key: &'a str) -> Tree<'a> {
    let mut e = vec![("action", text(r.action))];
    if !r.peers.is_empty() {
        e.push((peer_key, Tree::List(r.peers.iter().map(peer).collect())));
    }
    if !r.ports.is_empty() {
        let ports = r.ports.iter().map(|pm| {
            let protocol = protocol_name(pm.protocol).map_or_else(|| number(pm.protocol), text);
            let mut p = vec![("protocol", protocol)];
            if let Some(range) = &pm.ports {
                port_range(range, &mut p);
            }
            map(p)
        });
        e.push(("ports", Tree::List(ports.collect())));
    }
    if !r.source_ports.is_empty() {
        let ports = r.source_ports.iter().map(|range| {
            let mut p = Vec::new();
            port_range(range, &mut p);
            map(p)
        });
        e.push(("sourcePorts", Tree::List(ports.collect())));
    }
    map(e)
}

fn policy(p: &Policy) -> Tree<'_> {
    let mut spec = vec![
        ("selector", selector(&p.selector)),
        ("priority", number(p.priority)),
        ("mode", text(p.mode)),
    ];
    for (key, rules, peer_key) in [("ingress", &p.ingress, "from"), ("egress", &p.egress, "to")] {
        if let Some(rules) = rules {
            let rules = rules.iter().map(|r| rule(r, peer_key)).collect();
            spec.push((key, Tree::List(rules)));
        }
    }
    map([
        ("apiVersion", text(crate::API_VERSION)),
        ("kind", text("Policy")),
        (
            "metadata",
            map([("name", Tree::Str(Cow::Borrowed(&p.name)))]),
        ),
        ("spec", map(spec)),
    ])
}

#[cfg(test)]
#[path = "emit_tests.rs"]
mod tests;
