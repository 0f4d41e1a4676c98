//! External metric names: `s<trigger index>-<scaler>-<detail>`, lower-case and URL-safe.
//!
//! The API server lower-cases metric names before the adapter sees them, so ebb generates them
//! lower-case from the start; characters KEDA normalises (`/ . : % ( )`) and anything else outside
//! `[a-z0-9-]` become `-`.

/// The one metric of a ScaledObject with `advanced.scalingModifiers` (KEDA's name). Trigger
/// metrics all start with `s<index>-`, so it never collides with one.
pub const COMPOSITE_METRIC_NAME: &str = "composite-metric";

/// Builds the metric name of trigger `index` from its scaler-specific suffix.
pub fn metric_name(index: usize, suffix: &str) -> String {
    let mut out = format!("s{index}-");
    let prefix_len = out.len();
    let mut last_dash = true;
    for c in suffix.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && last_dash {
            continue;
        }
        last_dash = c == '-';
        out.push(c);
    }
    while out.ends_with('-') && out.len() > prefix_len {
        out.pop();
    }
    out.truncate(200);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keda_like_names() {
        assert_eq!(metric_name(0, "kafka-Orders.v1"), "s0-kafka-orders-v1");
        assert_eq!(metric_name(2, "aws-sqs-my_queue"), "s2-aws-sqs-my-queue");
        assert_eq!(
            metric_name(1, "metrics-api-queue.depth"),
            "s1-metrics-api-queue-depth"
        );
    }

    proptest! {
        #[test]
        fn names_are_lowercase_path_safe(i in 0usize..50, s in ".*") {
            let n = metric_name(i, &s);
            let prefix = format!("s{i}-");
            prop_assert!(n.starts_with(&prefix));
            prop_assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            prop_assert!(!n.contains("--"));
        }
    }
}
