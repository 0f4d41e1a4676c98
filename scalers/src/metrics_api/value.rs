//! Reading the metric from the fetched document: the JSON value at a dotted `valueLocation`
//! (`queue.depth`; a whole-number segment indexes an array: `items.0.count`), which may be a JSON
//! number or a string holding a number or a Kubernetes quantity (`"10"`, `"1.5"`, `"500m"`,
//! `"2Ki"`), as in KEDA.

use serde_json::Value as Json;

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
    /// The number there is not finite.
    #[error("valueLocation {path:?} points to {value}, which is not a finite number")]
    NotFinite {
        /// The whole path.
        path: String,
        /// The value as found.
        value: String,
    },
}

/// The JSON value at a dotted `path` (`a.b`, array indices as whole-number segments: `items.0.n`).
/// Never panics, whatever the document or path.
pub fn lookup<'a>(doc: &'a Json, path: &str) -> Result<&'a Json, ValueError> {
    let mut current = doc;
    let mut walked = String::new();
    for segment in path.split('.') {
        let here = if walked.is_empty() {
            "the document".to_string()
        } else {
            format!("{walked:?}")
        };
        let next = match current {
            Json::Object(map) => map
                .get(segment)
                .ok_or_else(|| format!("no key {segment:?} in the object at {here}")),
            Json::Array(items) => match array_index(segment) {
                Some(i) => items.get(i).ok_or_else(|| {
                    format!(
                        "index {i} is out of range for the array at {here} ({} items)",
                        items.len()
                    )
                }),
                None => Err(format!("{segment:?} is not an index into the array at {here}")),
            },
            other => Err(format!("{here} is {}, which has no {segment:?}", describe(other))),
        };
        current = next.map_err(|problem| ValueError::Missing {
            path: path.to_string(),
            problem,
        })?;
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(segment);
    }
    Ok(current)
}

fn array_index(segment: &str) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// The number at `path`: a JSON number, or a string holding a number or a Kubernetes quantity.
pub fn value_at(doc: &Json, path: &str) -> Result<f64, ValueError> {
    let value = lookup(doc, path)?;
    let not_finite = |shown: String| ValueError::NotFinite {
        path: path.to_string(),
        value: shown,
    };
    match value {
        Json::Number(n) => match n.as_f64() {
            Some(v) if v.is_finite() => Ok(v),
            _ => Err(not_finite(n.to_string())),
        },
        Json::String(s) => match parse_quantity(s) {
            Some(v) if v.is_finite() => Ok(v),
            Some(_) => Err(not_finite(format!("{:?}", truncated(s)))),
            None => Err(ValueError::NotNumeric {
                path: path.to_string(),
                found: describe(value),
            }),
        },
        other => Err(ValueError::NotNumeric {
            path: path.to_string(),
            found: describe(other),
        }),
    }
}

fn describe(value: &Json) -> String {
    match value {
        Json::Null => "null".to_string(),
        Json::Bool(b) => format!("a boolean ({b})"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) => format!("the string {:?}", truncated(s)),
        Json::Array(a) => format!("an array ({} items)", a.len()),
        Json::Object(_) => "an object".to_string(),
    }
}

fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

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
            let _ = lookup(&doc, &path);
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
            prop_assert_eq!(value_at(&doc, &segments.join(".")), Ok(value));
        }
    }
}
