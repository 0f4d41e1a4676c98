//! Error text for the rabbitmq scaler: library error chains flattened into one line, and secrets
//! scrubbed from broker and library messages.

use std::error::Error as StdError;

/// Replaces every occurrence of a secret with `<redacted>` (defence in depth: neither lapin nor
/// RabbitMQ is known to quote passwords).
pub(super) fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<redacted>"))
}

/// `error: source: source…`, skipping repeated messages.
pub(super) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    append_sources(&mut parts, error.source());
    parts.join(": ")
}

/// The messages of `first` and its sources, or "unknown error".
pub(super) fn source_chain(first: Option<&(dyn StdError + 'static)>) -> String {
    let mut parts = Vec::new();
    append_sources(&mut parts, first);
    if parts.is_empty() {
        "unknown error".to_string()
    } else {
        parts.join(": ")
    }
}

fn append_sources(parts: &mut Vec<String>, mut next: Option<&(dyn StdError + 'static)>) {
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
}
