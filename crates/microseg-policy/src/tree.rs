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

    /// Adds an entry; false (and nothing added) when the key is already there.
    pub fn insert(&mut self, key: Scalar, value: Node) -> bool {
        if self.get_node(key.as_str()).is_some() {
            return false;
        }
        self.entries.push((key, value));
        true
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

    pub fn keys(&self) -> impl Iterator<Item = &Scalar> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Scalar, &Node)> {
        self.entries.iter().map(|(k, v)| (k, v))
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
