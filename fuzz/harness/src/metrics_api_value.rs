//! The metrics-api scaler's `valueLocation` lookup over a fetched document: [`lookup`] and
//! [`value_at`], fuzzing both the path and the document.
//!
//! Input: the path, a newline, then the document.
//!
//! Invariants: no panic; the streaming lookup agrees with a walk over the parsed
//! `serde_json::Value` tree (same leaf found, or nothing, and a document is `NotJson` exactly when
//! it is not well-formed JSON); [`value_at`] only ever returns a finite number, and returns the number
//! found when the leaf is a finite JSON number.

use ebb_scalers::common::json_leaf::Leaf;
use ebb_scalers::metrics_api::value::{ValueError, lookup, value_at};
use serde_json::Value;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, doc) = text.split_once('\n').unwrap_or((text, ""));
    let found = lookup(doc, path);
    let tree = serde_json::from_str::<Value>(doc);
    match (&found, &tree) {
        (Err(ValueError::NotJson { .. }), Err(_)) => {}
        (Err(ValueError::NotJson { problem }), Ok(_)) => {
            panic!("the document parses as a tree but lookup says: {problem}")
        }
        // The streaming walk scans the members it skips without converting them, so a document
        // that is well-formed JSON but holds, in a skipped member, something a tree refuses (a
        // number beyond f64, a lone surrogate escape) is no error to it.
        (_, Err(_)) if serde_json::from_str::<serde::de::IgnoredAny>(doc).is_ok() => {}
        (_, Err(e)) => panic!("the document does not parse ({e}) but lookup found {found:?}"),
        (_, Ok(tree)) => {
            let expected = walk(tree, path).map(leaf_of);
            match (&found, &expected) {
                (Ok(leaf), Some(want)) => assert!(same_leaf(leaf, want), "{leaf:?} != {want:?}"),
                (Err(ValueError::Missing { .. }), None) => {}
                _ => panic!("lookup {found:?}, tree walk {expected:?}"),
            }
        }
    }
    match value_at(doc, path) {
        Ok(v) => {
            assert!(v.is_finite(), "{v}");
            if let Ok(Leaf::Number(n)) = &found {
                assert_eq!(v.to_bits(), n.to_bits());
            }
        }
        Err(ValueError::NotFinite { .. } | ValueError::NotNumeric { .. }) => {
            assert!(found.is_ok(), "a leaf was found: {found:?}");
        }
        Err(ValueError::Missing { .. } | ValueError::NotJson { .. }) => {
            assert!(found.is_err(), "no leaf was found: {found:?}");
        }
    }
}

/// The value at `path` in `tree`: object members by key, array items by a whole-number segment.
fn walk<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(tree, |value, segment| match value {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => {
            if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            items.get(segment.parse::<usize>().ok()?)
        }
        _ => None,
    })
}

fn leaf_of(value: &Value) -> Leaf {
    match value {
        Value::Null => Leaf::Null,
        Value::Bool(b) => Leaf::Bool(*b),
        Value::Number(n) => Leaf::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Leaf::String(s.clone()),
        Value::Array(items) => Leaf::Array(items.len()),
        Value::Object(_) => Leaf::Object,
    }
}

fn same_leaf(a: &Leaf, b: &Leaf) -> bool {
    match (a, b) {
        (Leaf::Number(x), Leaf::Number(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}
