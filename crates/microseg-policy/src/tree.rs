//! The document tree the resource readers walk: scalars, lists and mappings, each with
//! where it starts.
//!
//! Much smaller than the YAML loader's own tree, which matters because fresh memory costs as much as parsing: every page is
//! zeroed by the kernel on first touch. Mappings keep their entries in order, in a vector:
//! resources have a handful of keys, so a scan beats hashing.

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    line: u32,
    col: u32,
}

impl Mark {
    pub fn new(line: usize, col: usize) -> Mark {
        Mark {
            line: line as u32,
            col: col as u32,
        }
    }

    pub fn line(&self) -> usize {
        self.line as usize
    }

    pub fn column(&self) -> usize {
        self.col as usize
    }
}

/// Where a node starts, when known (the JSON reader knows no positions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span(Option<Mark>);

impl Span {
    pub fn at(line: usize, col: usize) -> Span {
        Span(Some(Mark::new(line, col)))
    }

    pub fn blank() -> Span {
        Span(None)
    }

    pub fn start(&self) -> Option<&Mark> {
        self.0.as_ref()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scalar {
    span: Span,
    /// Inline up to 24 bytes: most keys and values need no allocation.
    value: compact_str::CompactString,
    /// Written plain (unquoted): may be read as a number, boolean or null.
    plain: bool,
}

impl Scalar {
    pub fn new(span: Span, value: impl Into<compact_str::CompactString>, plain: bool) -> Scalar {
        Scalar {
            span,
            value: value.into(),
            plain,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    pub fn may_coerce(&self) -> bool {
        self.plain
    }

    pub fn span(&self) -> &Span {
        &self.span
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sequence {
    span: Span,
    items: Vec<Node>,
}

impl Sequence {
    pub fn new(span: Span, items: Vec<Node>) -> Sequence {
        Sequence { span, items }
    }

    pub fn as_slice(&self) -> &[Node] {
        &self.items
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Node> {
        self.items.iter()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    span: Span,
    entries: Vec<(Scalar, Node)>,
}

impl Mapping {
    pub fn new_empty(span: Span) -> Mapping {
        Mapping {
            span,
            entries: Vec::new(),
        }
    }

    /// A mapping of `entries`, whose keys the caller has checked are distinct.
    pub fn from_entries(span: Span, entries: Vec<(Scalar, Node)>) -> Mapping {
        Mapping { span, entries }
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    pub fn get_node(&self, key: &str) -> Option<&Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    pub fn get_key_value(&self, key: &str) -> Option<(&Scalar, &Node)> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(k, v)| (k, v))
    }

    pub fn get_scalar(&self, key: &str) -> Option<&Scalar> {
        match self.get_node(key)? {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Scalar> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Scalar, &Node)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

/// Whether no key of `entries` repeats. A resource's mappings are small and compared
/// pairwise; a large one (a label map can be any size) goes through a hash set, so the
/// check stays linear in the mapping's size.
pub(crate) fn keys_distinct(entries: &[(Scalar, Node)]) -> bool {
    const PAIRWISE_UP_TO: usize = 8;
    if entries.len() <= PAIRWISE_UP_TO {
        return entries.iter().enumerate().all(|(i, (k, _))| {
            entries[..i]
                .iter()
                .all(|(p, _)| Key(p.as_str()) != Key(k.as_str()))
        });
    }
    let mut seen: rustc_hash::FxHashSet<Key> =
        rustc_hash::FxHashSet::with_capacity_and_hasher(entries.len(), Default::default());
    entries.iter().all(|(k, _)| seen.insert(Key(k.as_str())))
}

/// A mapping key as the duplicate check sees it; tests count what the check does with it.
#[derive(Eq)]
struct Key<'a>(&'a str);

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        #[cfg(test)]
        key_work::add();
        self.0 == other.0
    }
}

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        #[cfg(test)]
        key_work::add();
        self.0.hash(state)
    }
}

/// Key comparisons and hashes done by this thread's duplicate checks.
#[cfg(test)]
pub(crate) mod key_work {
    use std::cell::Cell;

    thread_local!(static DONE: Cell<u64> = const { Cell::new(0) });

    pub fn add() {
        DONE.with(|d| d.set(d.get() + 1));
    }

    /// The count so far, and a fresh start.
    pub fn take() -> u64 {
        DONE.with(|d| d.replace(0))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    Scalar(Scalar),
    Sequence(Sequence),
    Mapping(Mapping),
}

impl Node {
    pub fn span(&self) -> &Span {
        match self {
            Node::Scalar(s) => s.span(),
            Node::Sequence(s) => &s.span,
            Node::Mapping(m) => m.span(),
        }
    }
}

fn span_of(s: &marked_yaml::types::Span) -> Span {
    Span(s.start().map(|m| Mark::new(m.line(), m.column())))
}

fn scalar_of(s: &marked_yaml::types::MarkedScalarNode) -> Scalar {
    Scalar::new(span_of(s.span()), s.as_str(), s.may_coerce())
}

impl From<&marked_yaml::types::Node> for Node {
    fn from(n: &marked_yaml::types::Node) -> Node {
        use marked_yaml::types::Node as Y;
        match n {
            Y::Scalar(s) => Node::Scalar(scalar_of(s)),
            Y::Sequence(s) => Node::Sequence(Sequence::new(
                span_of(s.span()),
                s.iter().map(Node::from).collect(),
            )),
            Y::Mapping(m) => Node::Mapping(Mapping {
                span: span_of(m.span()),
                entries: m
                    .iter()
                    .map(|(k, v)| (scalar_of(k), Node::from(v)))
                    .collect(),
            }),
        }
    }
}
