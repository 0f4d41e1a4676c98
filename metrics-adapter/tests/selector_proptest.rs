//! Property tests of the label-selector parser: no panics on any input, and rendered selectors
//! parse back into the requirements they were rendered from.

use ebb_metrics_adapter::selector::{Operator, Requirement, Selector};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,10}[a-zA-Z0-9])?"
}

fn key() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-z0-9]{1,6}(\\.[a-z0-9]{1,6}){0,2}"),
        name(),
    )
        .prop_map(|(prefix, name)| match prefix {
            Some(prefix) => format!("{prefix}/{name}"),
            None => name,
        })
        .prop_filter("keywords are not keys of set-based requirements", |k| {
            k != "in" && k != "notin"
        })
}

fn requirement() -> impl Strategy<Value = (Requirement, String)> {
    let space = || prop_oneof![Just(""), Just(" "), Just("  ")];
    (
        key(),
        0..8u8,
        proptest::collection::vec(name(), 1..4),
        any::<i32>(),
        space(),
        space(),
    )
        .prop_map(|(key, op, values, n, s1, s2)| {
            let one = values[0].clone();
            let mut set = values.clone();
            set.sort();
            set.dedup();
            let (operator, values, text) = match op {
                0 => (
                    Operator::Equals,
                    vec![one.clone()],
                    format!("{key}{s1}={s2}{one}"),
                ),
                1 => (
                    Operator::Equals,
                    vec![one.clone()],
                    format!("{key}{s1}=={s2}{one}"),
                ),
                2 => (
                    Operator::NotEquals,
                    vec![one.clone()],
                    format!("{key}{s1}!={s2}{one}"),
                ),
                3 => (
                    Operator::In,
                    set,
                    format!("{key} in{s1}({s2}{}{s1})", values.join(",")),
                ),
                4 => (
                    Operator::NotIn,
                    set,
                    format!("{key}{s2} notin ({}){s1}", values.join(&format!(",{s1}"))),
                ),
                5 => (Operator::Exists, Vec::new(), format!("{s1}{key}{s2}")),
                6 => (Operator::DoesNotExist, Vec::new(), format!("!{s1}{key}")),
                _ => (
                    Operator::GreaterThan,
                    vec![n.to_string()],
                    format!("{key}>{s1}{n}"),
                ),
            };
            (
                Requirement {
                    key,
                    operator,
                    values,
                },
                text,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(input in any::<String>()) {
        let _ = Selector::parse(&input);
    }

    #[test]
    fn token_soup_never_panics(input in "[a-z0-9./_ =!(),<>-]{0,40}|(in|notin|=|==|!=|!|\\(|\\)|,| |a|b/c|<|>){0,20}") {
        if let Ok(selector) = Selector::parse(&input) {
            // Whatever parses is well-formed.
            for r in selector.requirements() {
                prop_assert!(!r.key.is_empty());
                match r.operator {
                    Operator::In | Operator::NotIn => prop_assert!(!r.values.is_empty()),
                    Operator::Exists | Operator::DoesNotExist => prop_assert!(r.values.is_empty()),
                    _ => prop_assert_eq!(r.values.len(), 1),
                }
            }
        }
    }

    #[test]
    fn rendered_selectors_round_trip(parts in proptest::collection::vec(requirement(), 0..5)) {
        let text = parts.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(",");
        let selector = Selector::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        let expected: Vec<Requirement> = parts.into_iter().map(|(r, _)| r).collect();
        prop_assert_eq!(selector.requirements(), expected.as_slice(), "{}", text);
    }
}
