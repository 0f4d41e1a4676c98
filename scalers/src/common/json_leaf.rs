//! [`Leaf`]: one JSON value read for what it is, without building what it contains. A number,
//! string, boolean or null is kept; an array is counted and an object noted, their contents
//! skipped as they are parsed. Scalers decode answers into small typed structs whose fields are
//! `Leaf`s (RabbitMQ's queue statistics) or walk to one `Leaf` (metrics-api's `valueLocation`),
//! so a tenant's large or deep document costs parsing time, not a tree in memory.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One JSON value, its contents skipped when it is an array or an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number (as `f64`).
    Number(f64),
    /// A string.
    String(String),
    /// An array of this many items.
    Array(usize),
    /// An object.
    Object,
}

impl Leaf {
    /// What the value is, for messages (`the number 12`, `the string "abc"`, `an array (3
    /// items)`); strings are cut to 64 characters.
    pub fn describe(&self) -> String {
        match self {
            Leaf::Null => "null".to_string(),
            Leaf::Bool(b) => format!("a boolean ({b})"),
            Leaf::Number(n) => format!("the number {n}"),
            Leaf::String(s) => format!("the string {:?}", truncated(s)),
            Leaf::Array(n) => format!("an array ({n} items)"),
            Leaf::Object => "an object".to_string(),
        }
    }
}

/// `s` cut to 64 characters, with `…` when cut.
pub fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

impl<'de> Deserialize<'de> for Leaf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LeafVisitor)
    }
}

/// Builds a [`Leaf`] from whatever value comes; shared with path walks that stop at a leaf.
pub struct LeafVisitor;

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Leaf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Leaf, E> {
        Ok(Leaf::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Leaf, E> {
        Ok(Leaf::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Leaf, E> {
        Ok(Leaf::Number(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Leaf, E> {
        Ok(Leaf::Number(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Leaf, E> {
        Ok(Leaf::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Leaf, E> {
        Ok(Leaf::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Leaf, E> {
        Ok(Leaf::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Leaf, E> {
        Ok(Leaf::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Leaf, D::Error> {
        Leaf::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf, A::Error> {
        let mut n = 0usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Leaf::Array(n))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Leaf::Object)
    }
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Leaf>` field: a field that
/// is there is `Some`, even when it is `null` (`Some(Leaf::Null)`); only a missing one is `None`.
pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Leaf>, D::Error> {
    Leaf::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_keep_scalars_and_skip_contents() {
        let read = |s: &str| serde_json::from_str::<Leaf>(s).unwrap();
        assert_eq!(read("null"), Leaf::Null);
        assert_eq!(read("true"), Leaf::Bool(true));
        assert_eq!(read("-3"), Leaf::Number(-3.0));
        assert_eq!(read("18446744073709551615"), Leaf::Number(u64::MAX as f64));
        assert_eq!(read("1.5"), Leaf::Number(1.5));
        assert_eq!(read(r#""a\"b""#), Leaf::String("a\"b".into()));
        assert_eq!(read(r#"[1, [2, 3], {"a": []}]"#), Leaf::Array(3));
        assert_eq!(read(r#"{"a": {"b": [1]}}"#), Leaf::Object);
        assert!(serde_json::from_str::<Leaf>("[1,").is_err());
        // `the string "` + 64 characters + `…"`.
        assert_eq!(
            read(&format!("\"{}\"", "x".repeat(70)))
                .describe()
                .chars()
                .count(),
            78
        );
    }

    #[test]
    fn present_tells_null_from_missing() {
        #[derive(serde::Deserialize)]
        struct S {
            #[serde(default, deserialize_with = "present")]
            a: Option<Leaf>,
        }
        let s: S = serde_json::from_str(r#"{"a": null}"#).unwrap();
        assert_eq!(s.a, Some(Leaf::Null));
        let s: S = serde_json::from_str(r#"{"b": 1}"#).unwrap();
        assert_eq!(s.a, None);
    }
}
