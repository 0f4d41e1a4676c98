//! Error text for messages: an error and the chain of its `source()`s as one line.
//!
//! Library errors (hyper, lapin, async-nats, the AWS SDK) often say little at the top
//! ("client error (Connect)") and the useful part ("connection refused") in a source, so scalers
//! show the whole chain. A message already contained in an earlier one is left out, so wrappers
//! that repeat their source's text do not make it appear twice.

use std::error::Error as StdError;

/// `error: source: source…` — the error's message followed by each of its sources, skipping any
/// message already contained in an earlier part.
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    append_sources(&mut parts, error.source());
    parts.join(": ")
}

/// `source: source…` — only the sources of `error` (its own message left out, for wrappers whose
/// text is noise), or `unknown error` when it has none.
pub fn source_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    append_sources(&mut parts, error.source());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        inner: Option<Box<Layer>>,
    }

    fn chain(texts: &[&'static str]) -> Layer {
        let mut inner = None;
        for text in texts.iter().rev() {
            inner = Some(Box::new(Layer { text, inner }));
        }
        *inner.expect("at least one layer")
    }

    #[test]
    fn joins_every_source() {
        let e = chain(&[
            "client error (Connect)",
            "tcp connect error",
            "Connection refused",
        ]);
        assert_eq!(
            error_chain(&e),
            "client error (Connect): tcp connect error: Connection refused"
        );
        assert_eq!(source_chain(&e), "tcp connect error: Connection refused");
    }

    #[test]
    fn repeated_or_contained_messages_appear_once() {
        let e = chain(&["io error: refused", "refused", "refused"]);
        assert_eq!(error_chain(&e), "io error: refused");
        let e = chain(&["outer", "inner", "inner"]);
        assert_eq!(source_chain(&e), "inner");
    }

    #[test]
    fn no_sources() {
        let e = chain(&["alone"]);
        assert_eq!(error_chain(&e), "alone");
        assert_eq!(source_chain(&e), "unknown error");
    }
}
