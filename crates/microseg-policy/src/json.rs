//! JSON text read straight into the node tree the YAML readers build, without positions.
//! JSON parses an order of magnitude faster than YAML; callers use this only for text
//! that turns out valid and fall back to the YAML path (with positions) for diagnostics.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::tree::{keys_distinct, Mapping, Node, Scalar, Sequence, Span};

/// The tree of a JSON document; `None` when the text is not JSON or repeats a key in an
/// object (the YAML path then reports it, with its position).
pub(crate) fn document(text: &str) -> Option<Node> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if !trimmed.starts_with('{') && !trimmed.starts_with('[') {
        return None;
    }
    serde_json::from_str::<JsonNode>(trimmed).ok().map(|n| n.0)
}

struct JsonNode(Node);

/// JSON strings are quoted scalars: never read as numbers, booleans or null.
fn scalar(value: impl Into<compact_str::CompactString>, plain: bool) -> JsonNode {
    JsonNode(Node::Scalar(Scalar::new(Span::blank(), value, plain)))
}

impl<'de> serde::Deserialize<'de> for JsonNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonNode, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = JsonNode;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<JsonNode, E> {
        Ok(scalar("null", true))
    }

    fn visit_bool<E>(self, b: bool) -> Result<JsonNode, E> {
        Ok(scalar(if b { "true" } else { "false" }, true))
    }

    fn visit_i64<E>(self, n: i64) -> Result<JsonNode, E> {
        Ok(scalar(n.to_string(), true))
    }

    fn visit_u64<E>(self, n: u64) -> Result<JsonNode, E> {
        Ok(scalar(n.to_string(), true))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<JsonNode, E> {
        // Written the way serde_json writes its numbers.
        let n = serde_json::Number::from_f64(n).ok_or_else(|| E::custom("not a number"))?;
        Ok(scalar(n.to_string(), true))
    }

    fn visit_str<E>(self, s: &str) -> Result<JsonNode, E> {
        Ok(scalar(s, false))
    }

    fn visit_string<E>(self, s: String) -> Result<JsonNode, E> {
        Ok(scalar(s, false))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonNode, A::Error> {
        let mut items = Vec::new();
        while let Some(JsonNode(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(JsonNode(Node::Sequence(Sequence::new(
            Span::blank(),
            items,
        ))))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonNode, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let JsonNode(value) = map.next_value()?;
            entries.push((Scalar::new(Span::blank(), key, false), value));
        }
        if !keys_distinct(&entries) {
            return Err(de::Error::custom("duplicate key"));
        }
        Ok(JsonNode(Node::Mapping(Mapping::from_entries(
            Span::blank(),
            entries,
        ))))
    }
}
