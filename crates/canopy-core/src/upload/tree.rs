//! A YAML value tree that remembers where each scalar came from.
//!
//! `serde_json::Value` would do for everything but one thing: YAML types `version: 1.10` as the
//! float `1.1`, and the schema wants a string there. Turning the float back into text would
//! silently give `"1.1"` (and make versions 1.1 and 1.10 collide), so the tree keeps the byte
//! span of every scalar and the string is cut from the source text instead. The spans come from
//! serde-saphyr's [`Spanned`]; parsing still goes through [`crate::yaml`], so all of its limits
//! (depth, aliases, nodes, documents) apply.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: NodeValue,
    /// Byte range of the node's source text, where the parser reported it.
    span: Option<(usize, usize)>,
}

/// The shape of a node. Mapping keys are nodes too: YAML allows any key (values files with
/// `{{ }}` templates produce flow-mapping keys), and the order of keys is kept.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeValue {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The source text of a scalar, if its span is known and lies inside `src`.
    pub(crate) fn raw<'s>(&self, src: &'s str) -> Option<&'s str> {
        let (start, len) = self.span?;
        let text = src.get(start..start.checked_add(len)?)?;
        (!text.is_empty()).then_some(text)
    }

    /// The scalar as text: strings as they are, numbers and booleans as written in the source
    /// (`1.10` stays `1.10`), `None` for null and collections.
    pub(crate) fn scalar_text(&self, src: &str) -> Option<String> {
        match &self.value {
            NodeValue::String(s) => Some(s.clone()),
            NodeValue::Bool(b) => Some(
                self.plain_raw(src)
                    .unwrap_or(if *b { "true" } else { "false" })
                    .to_string(),
            ),
            NodeValue::Number(n) => Some(
                self.plain_raw(src)
                    .map_or_else(|| n.to_string(), str::to_string),
            ),
            _ => None,
        }
    }

    /// The raw text when it is a plain scalar (no quotes, tags or anchors around it), which is
    /// the only case where it equals what YAML typed as a number or boolean.
    fn plain_raw<'s>(&self, src: &'s str) -> Option<&'s str> {
        let raw = self.raw(src)?.trim();
        let plain = !raw.is_empty()
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'));
        plain.then_some(raw)
    }

    /// A mapping key as a string (non-string keys as their text, complex keys as JSON).
    pub(crate) fn key_string(&self, src: &str) -> String {
        match &self.value {
            NodeValue::Null => "null".to_string(),
            NodeValue::Seq(_) | NodeValue::Map(_) => self.to_json(src).to_string(),
            _ => self.scalar_text(src).unwrap_or_default(),
        }
    }

    /// The value of key `key` when this node is a mapping.
    pub(crate) fn get(&self, key: &str, src: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| {
                    matches!(&k.value, NodeValue::String(s) if s == key) || k.key_string(src) == key
                })
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Plain conversion to JSON (YAML types kept; keys as strings; the last duplicate key wins,
    /// though the parser already refuses duplicates).
    pub(crate) fn to_json(&self, src: &str) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Number(n) => Value::Number(n.clone()),
            NodeValue::String(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(|n| n.to_json(src)).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_string(src), v.to_json(src)))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// Nodes deeper than this carry no span. Spans are only needed for entity fields (the deepest,
/// `profiles[i].parameterTemplates[j].suggestedValues[k]`, sits at depth 6), and the
/// span-tracking path costs several times the stack per level of a plain one; without the cut,
/// a document within [`crate::yaml::MAX_DEPTH`] could overflow a 2 MiB thread stack in a debug
/// build.
const SPANNED_DEPTH: usize = 8;

thread_local! {
    /// Nesting depth of the node being deserialized on this thread.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Counts one level of nesting for as long as it lives (also when deserialization fails).
struct DepthGuard;

impl DepthGuard {
    fn enter() -> (DepthGuard, usize) {
        let depth = DEPTH.get();
        DEPTH.set(depth + 1);
        (DepthGuard, depth)
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get().saturating_sub(1));
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (_guard, depth) = DepthGuard::enter();
        if depth >= SPANNED_DEPTH {
            return Ok(Node {
                value: NodeValue::deserialize(d)?,
                span: None,
            });
        }
        let spanned = Spanned::<NodeValue>::deserialize(d)?;
        // `defined` is where the text is (for an alias: the anchored node it repeats).
        let span = spanned.defined.span();
        let span = match (span.byte_offset(), span.byte_len()) {
            (Some(o), Some(l)) => usize::try_from(o).ok().zip(usize::try_from(l).ok()),
            _ => None,
        };
        Ok(Node {
            value: spanned.value,
            span,
        })
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        NodeValue::deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        NodeValue::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeValue, E> {
        Ok(NodeValue::Number(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<NodeValue, E> {
        Ok(i64::try_from(v).map_or_else(
            |_| NodeValue::String(v.to_string()),
            |v| NodeValue::Number(v.into()),
        ))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<NodeValue, E> {
        Ok(u64::try_from(v).map_or_else(
            |_| NodeValue::String(v.to_string()),
            |v| NodeValue::Number(v.into()),
        ))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeValue, E> {
        // Non-finite floats (`.inf`, `.nan`) have no JSON form; keep their text.
        Ok(serde_json::Number::from_f64(v)
            .map_or_else(|| NodeValue::String(v.to_string()), NodeValue::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<NodeValue, E> {
        Ok(NodeValue::String(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(NodeValue::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(NodeValue::Map(entries))
    }
}

/// Parses every document of `text` under the limits of [`crate::yaml`].
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, String> {
    crate::yaml::parse_documents_as::<Node>(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_source_text() {
        let src = "version: 1.10\nchart: 2\nflag: true\nq: \"1.5\"\nlist: [1.0, 007]\n";
        let docs = parse(src).unwrap();
        let d = &docs[0];
        assert_eq!(
            d.get("version", src).unwrap().scalar_text(src).unwrap(),
            "1.10"
        );
        assert_eq!(d.get("chart", src).unwrap().scalar_text(src).unwrap(), "2");
        assert_eq!(
            d.get("flag", src).unwrap().scalar_text(src).unwrap(),
            "true"
        );
        assert_eq!(d.get("q", src).unwrap().scalar_text(src).unwrap(), "1.5");
        let NodeValue::Seq(items) = &d.get("list", src).unwrap().value else {
            panic!("not a list")
        };
        assert_eq!(items[0].scalar_text(src).unwrap(), "1.0");
        assert_eq!(items[1].scalar_text(src).unwrap(), "007");
    }

    #[test]
    fn aliases_and_template_keys() {
        let src = "a: &x 1.20\nb: *x\n{{ .Values.x }}: 3\n";
        let docs = parse(src).unwrap();
        let d = &docs[0];
        assert_eq!(d.get("b", src).unwrap().scalar_text(src).unwrap(), "1.20");
        let json = d.to_json(src);
        assert_eq!(json["a"], serde_json::json!(1.2));
        assert_eq!(json.as_object().unwrap().len(), 3);
    }

    #[test]
    fn multi_documents() {
        let src = "# header\n---\na: 1\n---\nb: 2\n";
        assert_eq!(parse(src).unwrap().len(), 2);
    }
}
