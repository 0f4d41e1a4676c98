//! Secrets scrubbed from broker and library messages (the error chains themselves come from
//! [`common::errors`](crate::common::errors)).

/// Replaces every occurrence of a secret with `<redacted>` (defence in depth: neither lapin nor
/// RabbitMQ is known to quote passwords).
pub(super) fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<redacted>"))
}
