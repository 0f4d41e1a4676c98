//! Label selectors (`labelSelector=`), parsed as the metrics adapter parses them.
//!
//! Invariants: no panic; every requirement is well formed (a valid key; one value for `=`, `!=`,
//! `>`, `<`; a sorted, de-duplicated, non-empty set for `in`/`notin`; none for `exists`/`!`;
//! integers for `>`/`<`); the pinned values and equality labels agree with the requirements; and
//! a selector rendered back to text parses to the same selector.

use ebb_metrics_adapter::selector::{Operator, Requirement, Selector};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(selector) = Selector::parse(text) else {
        return;
    };
    for requirement in selector.requirements() {
        check_requirement(requirement);
    }
    let labels = selector.equality_labels();
    for (key, value) in &labels {
        assert!(
            selector.pinned_values(key).any(|v| v == value),
            "label {key}={value} is not pinned"
        );
    }
    assert_eq!(selector.is_empty(), selector.requirements().is_empty());
    let rendered = render(&selector);
    let again = Selector::parse(&rendered)
        .unwrap_or_else(|e| panic!("{text:?} rendered as {rendered:?} does not parse: {e}"));
    assert_eq!(again, selector, "{text:?} rendered as {rendered:?}");
}

fn check_requirement(r: &Requirement) {
    let key_ok = !r.key.is_empty()
        && r.key.len() <= 253 + 1 + 63
        && r.key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    assert!(key_ok, "invalid key {:?}", r.key);
    let value_ok =
        |v: &String| v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    match r.operator {
        Operator::Exists | Operator::DoesNotExist => assert!(r.values.is_empty()),
        Operator::Equals | Operator::NotEquals => {
            assert_eq!(r.values.len(), 1);
            assert!(r.values.iter().all(value_ok), "{r:?}");
        }
        Operator::GreaterThan | Operator::LessThan => {
            assert_eq!(r.values.len(), 1);
            assert!(r.values[0].parse::<i64>().is_ok(), "{r:?}");
        }
        Operator::In | Operator::NotIn => {
            assert!(!r.values.is_empty());
            assert!(
                r.values.windows(2).all(|w| w[0] < w[1]),
                "{r:?} not sorted and unique"
            );
            assert!(r.values.iter().all(value_ok), "{r:?}");
        }
    }
    match (r.operator, r.values.as_slice()) {
        (Operator::Equals | Operator::In, [v]) => assert_eq!(r.pinned_value(), Some(v.as_str())),
        _ => assert_eq!(r.pinned_value(), None),
    }
}

/// The selector in the canonical form of the grammar.
pub fn render(selector: &Selector) -> String {
    let parts: Vec<String> = selector
        .requirements()
        .iter()
        .map(|r| {
            let key = &r.key;
            let first = r.values.first().map_or("", String::as_str);
            match r.operator {
                Operator::Exists => key.clone(),
                Operator::DoesNotExist => format!("!{key}"),
                Operator::Equals => format!("{key}={first}"),
                Operator::NotEquals => format!("{key}!={first}"),
                Operator::GreaterThan => format!("{key}>{first}"),
                Operator::LessThan => format!("{key}<{first}"),
                Operator::In | Operator::NotIn => {
                    // Sorted, so an empty value comes first: `(,a)`; alone it is `(,)`.
                    let set = match r.values.as_slice() {
                        [only] if only.is_empty() => ",".to_string(),
                        values => values.join(","),
                    };
                    format!("{key} {} ({set})", r.operator)
                }
            }
        })
        .collect();
    parts.join(",")
}
