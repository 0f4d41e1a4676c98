//! Reading the metric from the fetched document: the JSON value at a dotted `valueLocation`
//! (`queue.depth`; a whole-number segment indexes an array: `items.0.count`), which may be a JSON
//! number or a string holding a number or a Kubernetes quantity (`"10"`, `"1.5"`, `"500m"`,
//! `"2Ki"`), as in KEDA.
//!
//! The path is walked over the document's text in one pass per segment: at each level only the
//! matching member or item is kept (as its raw text), every other one is skipped as it is
//! parsed, and the value found is read as a [`Leaf`]. No tree of the document is built, so the
//! memory a tenant's document costs is its bytes (capped at
//! [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES)), whatever its shape.

use std::fmt;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::common::json_leaf::{Leaf, LeafVisitor, truncated};
use crate::common::quantity::parse_quantity;

/// Why no number could be read at a `valueLocation`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The path leads nowhere.
    #[error("valueLocation {path:?}: {problem}")]
    Missing {
        /// The whole path.
        path: String,
        /// Which segment failed and why.
        problem: String,
    },
    /// The path leads to something that is not a number or a numeric string.
    #[error(
        "valueLocation {path:?} points to {found}, not a number or a string holding a number or quantity"
    )]
    NotNumeric {
        /// The whole path.
        path: String,
        /// What is there, e.g. `a boolean`, `the string "abc"`.
        found: String,
    },
    /// The document is not valid JSON.
    #[error("{problem}")]
    NotJson {
        /// What is wrong, without quoting the document.
        problem: String,
    },
    /// The number there is not finite.
    #[error("valueLocation {path:?} points to {value}, which is not a finite number")]
    NotFinite {
        /// The whole path.
        path: String,
        /// The value as found.
        value: String,
    },
}

/// What one step of a path finds at one level.
enum Step<'de> {
    /// The member or item named by the segment, as raw text.
    Found(&'de RawValue),
    /// An object without that key.
    NoKey,
    /// An array of this many items, too short for the index.
    OutOfRange(usize, usize),
    /// An array, and the segment is not an index.
    NotAnIndex,
    /// Not a container: the value itself.
    Leaf(Leaf),
}

/// Visits one level, keeping only the member or item `segment` names (the last one, when an
/// object repeats a key, as a parsed tree would) and skipping the rest as it is parsed.
struct StepVisitor<'p> {
    segment: &'p str,
}

impl<'de> Visitor<'de> for StepVisitor<'_> {
    type Value = Step<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Step<'de>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.segment {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found.map_or(Step::NoKey, Step::Found))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Step<'de>, A::Error> {
        let index = array_index(self.segment);
        let (mut n, mut found) = (0usize, None);
        loop {
            if index == Some(n) {
                match seq.next_element::<&'de RawValue>()? {
                    Some(item) => found = Some(item),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            n += 1;
        }
        Ok(match (index, found) {
            (_, Some(item)) => Step::Found(item),
            (Some(i), None) => Step::OutOfRange(i, n),
            (None, _) => Step::NotAnIndex,
        })
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Step<'de>, E> {
        LeafVisitor.visit_bool(v).map(Step::Leaf)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Step<'de>, E> {
        LeafVisitor.visit_i64(v).map(Step::Leaf)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Step<'de>, E> {
        LeafVisitor.visit_u64(v).map(Step::Leaf)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Step<'de>, E> {
        LeafVisitor.visit_f64(v).map(Step::Leaf)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Step<'de>, E> {
        LeafVisitor.visit_str(v).map(Step::Leaf)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Step<'de>, E> {
        Ok(Step::Leaf(Leaf::Null))
    }
}

fn not_json(e: &serde_json::Error) -> ValueError {
    ValueError::NotJson {
        problem: crate::common::http::json_problem(e),
    }
}

/// Parses `text` (one JSON value) with `visitor`, requiring nothing after it.
fn visit<'de, V: Visitor<'de>>(text: &'de str, visitor: V) -> Result<V::Value, ValueError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = de.deserialize_any(visitor).map_err(|e| not_json(&e))?;
    de.end().map_err(|e| not_json(&e))?;
    Ok(value)
}

/// The value at a dotted `path` in the JSON document `doc`, read as a [`Leaf`] (a whole-number
/// segment indexes an array). Never panics, whatever the document or path; a document that is
/// not JSON is [`ValueError::NotJson`].
pub fn lookup(doc: &str, path: &str) -> Result<Leaf, ValueError> {
    let mut current: &str = doc;
    let mut walked = String::new();
    for segment in path.split('.') {
        let here = if walked.is_empty() {
            "the document".to_string()
        } else {
            format!("{walked:?}")
        };
        let problem = match visit(current, StepVisitor { segment })? {
            Step::Found(raw) => {
                current = raw.get();
                None
            }
            Step::NoKey => Some(format!("no key {segment:?} in the object at {here}")),
            Step::OutOfRange(i, n) => Some(format!(
                "index {i} is out of range for the array at {here} ({n} items)"
            )),
            Step::NotAnIndex => Some(format!("{segment:?} is not an index into the array at {here}")),
            Step::Leaf(leaf) => Some(format!("{here} is {}, which has no {segment:?}", leaf.describe())),
        };
        if let Some(problem) = problem {
            return Err(ValueError::Missing {
                path: path.to_string(),
                problem,
            });
        }
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(segment);
    }
    visit(current, LeafVisitor)
}

fn array_index(segment: &str) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// The number at `path` in the JSON document `doc`: a JSON number, or a string holding a number
/// or a Kubernetes quantity.
pub fn value_at(doc: &str, path: &str) -> Result<f64, ValueError> {
    let value = lookup(doc, path)?;
    let not_finite = |shown: String| ValueError::NotFinite {
        path: path.to_string(),
        value: shown,
    };
    match &value {
        Leaf::Number(n) if n.is_finite() => Ok(*n),
        Leaf::Number(n) => Err(not_finite(n.to_string())),
        Leaf::String(s) => match parse_quantity(s) {
            Some(v) if v.is_finite() => Ok(v),
            Some(_) => Err(not_finite(format!("{:?}", truncated(s)))),
            None => Err(ValueError::NotNumeric {
                path: path.to_string(),
                found: value.describe(),
            }),
        },
        other => Err(ValueError::NotNumeric {
            path: path.to_string(),
            found: other.describe(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value as Json, json};

    fn value_at(doc: &Json, path: &str) -> Result<f64, ValueError> {
        super::value_at(&doc.to_string(), path)
    }

    #[test]
    fn dotted_paths_and_indices() {
        let doc = json!({
            "queue": {"depth": 12},
            "items": [{"count": 1}, {"count": "7"}],
            "m": {"0": 3},
            "deep": [[0, [5.5]]],
        });
        assert_eq!(value_at(&doc, "queue.depth"), Ok(12.0));
        assert_eq!(value_at(&doc, "items.0.count"), Ok(1.0));
        assert_eq!(value_at(&doc, "items.1.count"), Ok(7.0));
        assert_eq!(value_at(&doc, "m.0"), Ok(3.0));
        assert_eq!(value_at(&doc, "deep.0.1.0"), Ok(5.5));
        assert_eq!(
            value_at(&json!(4), "x").map_err(|e| e.to_string()),
            Err("valueLocation \"x\": the document is the number 4, which has no \"x\"".to_string())
        );
    }

    #[test]
    fn missing_paths_say_where() {
        let doc = json!({"queue": {"depth": 12}, "items": [1, 2]});
        let cases = [
            ("queue.size", "no key \"size\" in the object at \"queue\""),
            ("nope", "no key \"nope\" in the object at the document"),
            (
                "items.2",
                "index 2 is out of range for the array at \"items\" (2 items)",
            ),
            ("items.x", "\"x\" is not an index into the array at \"items\""),
            ("items.-1", "\"-1\" is not an index"),
            (
                "queue.depth.x",
                "\"queue.depth\" is the number 12, which has no \"x\"",
            ),
        ];
        for (path, expected) in cases {
            let text = value_at(&doc, path).unwrap_err().to_string();
            assert!(text.contains(expected), "{path}: {text}");
        }
    }

    #[test]
    fn non_numbers_are_errors() {
        let doc = json!({"b": true, "n": null, "o": {}, "a": [], "s": "abc", "nan": "NaN", "inf": "inf", "big": "1e999"});
        for (path, found) in [
            ("b", "a boolean (true)"),
            ("n", "null"),
            ("o", "an object"),
            ("a", "an array (0 items)"),
            ("s", "the string \"abc\""),
            ("nan", "the string \"NaN\""),
            ("inf", "the string \"inf\""),
        ] {
            let err = value_at(&doc, path).unwrap_err();
            assert!(
                matches!(&err, ValueError::NotNumeric { found: f, .. } if f == found),
                "{err}"
            );
        }
        assert!(matches!(value_at(&doc, "big"), Err(ValueError::NotFinite { .. })));
    }

    fn arbitrary_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(Json::from),
            any::<f64>().prop_map(Json::from),
            ".{0,8}".prop_map(Json::String),
            "[0-9.mkKi-]{0,6}".prop_map(Json::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                prop::collection::btree_map("[a-c0-3]{0,2}", inner, 0..6)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        // Any document, any path: a value or an error, never a panic.
        #[test]
        fn lookup_never_panics(doc in arbitrary_json(), path in "[a-c0-3.]{0,12}|.{0,16}") {
            let _ = lookup(&doc.to_string(), &path);
            match value_at(&doc, &path) {
                Ok(v) => prop_assert!(v.is_finite()),
                Err(e) => prop_assert!(e.to_string().starts_with("valueLocation ")),
            }
        }

        // A number placed at a path is found there.
        #[test]
        fn placed_numbers_are_found(
            segments in prop::collection::vec(prop_oneof!["[a-z]{1,6}", (0usize..4).prop_map(|i| i.to_string())], 1..6),
            value in -1e12f64..1e12,
        ) {
            let mut doc = Json::from(value);
            for segment in segments.iter().rev() {
                doc = match segment.parse::<usize>() {
                    Ok(i) => {
                        let mut items = vec![Json::Null; i];
                        items.push(doc);
                        Json::Array(items)
                    }
                    Err(_) => json!({ segment.as_str(): doc }),
                };
            }
            // The document is read back from its text: equal within serde_json's parsing precision.
            let found = value_at(&doc, &segments.join(".")).unwrap();
            prop_assert!((found - value).abs() <= value.abs() * 1e-15, "{} vs {}", found, value);
        }
    }
}
