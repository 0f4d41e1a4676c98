//! Tests of `ebb explain` ([`super::explain`]) and the reference pages ([`super::scaler_docs`]).

use std::path::PathBuf;

use super::explain::{ExplainError, OutputFormat, explain, type_view};
use super::scaler_docs::{REGENERATE, example_yaml, pages};
use super::validate::{CheckOptions, check_documents_with, read_documents};

#[test]
fn the_list_names_every_type_with_its_summary() {
    let text = explain(None, OutputFormat::Text).unwrap();
    for ty in ebb_scalers::registry::supported_types() {
        let line = text
            .lines()
            .find(|l| l.starts_with(ty) && l[ty.len()..].starts_with("  "))
            .unwrap_or_else(|| panic!("{ty} missing:\n{text}"));
        let summary = ebb_scalers::registry::declaration(ty).unwrap().docs.summary;
        assert!(line.ends_with(summary), "{line}");
    }
    let json: serde_json::Value = serde_json::from_str(&explain(None, OutputFormat::Json).unwrap()).unwrap();
    assert_eq!(json[1]["type"], "rabbitmq");
}

#[test]
fn a_type_shows_every_fact_of_its_parameters() {
    let text = explain(Some("kafka"), OutputFormat::Text).unwrap();
    assert!(
        text.starts_with("kafka: Scales on a Kafka consumer group's lag"),
        "{text}"
    );
    // Required, list, sources including `<name>FromEnv`.
    assert!(text.contains("  bootstrapServers  (list, required)\n"), "{text}");
    assert!(
        text.contains("      from: metadata, bootstrapServersFromEnv\n"),
        "{text}"
    );
    // Default and bounds.
    assert!(
        text.contains("  lagThreshold  (integer, default 10, > 0)\n"),
        "{text}"
    );
    assert!(
        text.contains("  activationLagThreshold  (integer, default 0, >= 0)\n"),
        "{text}"
    );
    // Enum values, secrets and the TriggerAuthentication source.
    assert!(
        text.contains("  offsetResetPolicy  (one of latest, earliest, default latest)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  password  (string, secret)\n      The SASL password.\n      from: TriggerAuthentication\n"
        ),
        "{text}"
    );
    // Rules as sentences, then the scaler's own checks.
    assert!(
        text.contains("  - At most one of `allowIdleConsumers` and `limitToPartitionsWithLag` may be set.\n"),
        "{text}"
    );
    assert!(
        text.contains("  - When `limitToPartitionsWithLag` is true, `topic` must be set too.\n"),
        "{text}"
    );
    assert!(
        text.contains("  - `fullMetadata: false` needs `topic`.\n"),
        "{text}"
    );

    let sqs = explain(Some("aws-sqs-queue"), OutputFormat::Text).unwrap();
    assert!(
        sqs.contains("      deprecated: only meaningful for the deprecated aws-eks identity\n"),
        "{sqs}"
    );
}

#[test]
fn json_and_yaml_carry_the_same_view() {
    let json: serde_json::Value =
        serde_json::from_str(&explain(Some("rabbitmq"), OutputFormat::Json).unwrap()).unwrap();
    let yaml: serde_json::Value =
        serde_saphyr::from_str(&explain(Some("rabbitmq"), OutputFormat::Yaml).unwrap()).unwrap();
    assert_eq!(json, yaml);
    let host = &json["parameters"][0];
    assert_eq!(host["name"], "host");
    assert_eq!(
        host["from"],
        serde_json::json!(["metadata", "TriggerAuthentication", "hostFromEnv"])
    );
    assert_eq!(host["required"], true);
    let queue_length = json["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "queueLength")
        .unwrap();
    assert_eq!(queue_length["deprecated"], "use mode: QueueLength with value");
    assert_eq!(queue_length["bounds"], "> 0");
    let mode = json["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mode")
        .unwrap();
    assert_eq!(mode["type"], "enum");
    assert_eq!(mode["values"][4], "ExpectedQueueConsumptionTime");
}

#[test]
fn an_unknown_type_names_the_known_ones() {
    let e = explain(Some("kafak"), OutputFormat::Text).unwrap_err();
    assert!(matches!(e, ExplainError::UnknownType { .. }));
    assert_eq!(
        e.to_string(),
        "unknown trigger type \"kafak\"; ebb supports kafka, rabbitmq, nats-jetstream, aws-sqs-queue, metrics-api, redis, redis-streams, postgresql, prometheus, cron, cpu, memory, external, external-push"
    );
}

#[test]
fn every_example_passes_ebb_validate() {
    for kind in ebb_scalers::registry::KINDS {
        let view = type_view(kind.declaration);
        let yaml = example_yaml(&view);
        let docs = read_documents("example", &yaml).unwrap_or_else(|e| panic!("{yaml}\n{e}"));
        let report = check_documents_with(&docs, CheckOptions::default());
        assert!(
            report.is_valid(),
            "{}: {:?}\n{yaml}",
            view.trigger_type,
            report.problem_lines()
        );
        let expected = if view.example_auth.is_empty() { 1 } else { 2 };
        assert_eq!(report.objects.len(), expected, "{yaml}");
    }
}

#[test]
fn a_page_has_every_section() {
    let all = pages();
    assert_eq!(all[0].0, "README.md");
    assert!(
        all[0].1.contains("| [`kafka`](kafka.md) | Scales on a Kafka"),
        "{}",
        all[0].1
    );
    let (_, kafka) = all.iter().find(|(name, _)| name == "kafka.md").unwrap();
    for section in [
        "# `kafka`\n",
        "## Parameters\n",
        "| `lagThreshold` | integer, default 10, > 0 | metadata | Target lag per replica",
        "## Rules\n",
        "## Authentication parameters\n",
        "- `password` (secret): The SASL password.\n",
        "## Example\n",
        "kind: TriggerAuthentication",
        "## Differences from KEDA\n",
    ] {
        assert!(kafka.contains(section), "{section:?} missing:\n{kafka}");
    }
    let (_, sqs) = all.iter().find(|(name, _)| name == "aws-sqs-queue.md").unwrap();
    assert!(sqs.contains("**Deprecated:** only meaningful"), "{sqs}");
}

/// The committed pages are what the code generates.
#[test]
fn committed_pages_are_up_to_date() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/scalers");
    for (name, text) in pages() {
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            committed == text,
            "docs/scalers/{name} differs from what the scalers' declarations generate; run `{REGENERATE}` and commit the result"
        );
    }
}
