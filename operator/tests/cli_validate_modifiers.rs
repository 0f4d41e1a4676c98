//! `ebb validate` on `advanced.scalingModifiers`: KEDA's documented formulas pass, a formula that
//! does not parse, names no trigger or is not a number is rejected naming the field.
//!
//! The formulas, targets and fallbacks are KEDA's (its ScaledObject docs, its scaling-modifiers
//! and 2.20 fallback e2e tests); the trigger types are ones ebb serves (KEDA's examples use
//! kubernetes-workload and kubernetes-resource triggers, which ebb does not have).

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn ebb(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ebb");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A KEDA ScaledObject with `modifiers` (YAML under `advanced:`), `fallback` (YAML under `spec:`, or
/// empty) and three metrics-api triggers named `names`.
fn scaled_object(name: &str, modifiers: &str, fallback: &str, names: [&str; 3]) -> String {
    let triggers: String = names
        .iter()
        .map(|n| {
            format!(
                "  - type: metrics-api\n    name: {n}\n    metadata:\n      url: http://stats.default.svc/{n}\n      valueLocation: value\n      targetValue: \"2\"\n"
            )
        })
        .collect();
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: {name}}}\nspec:\n  scaleTargetRef: {{name: worker}}\n  minReplicaCount: 0\n  maxReplicaCount: 10\n{fallback}  advanced:\n    scalingModifiers:\n{modifiers}  triggers:\n{triggers}"
    )
}

const DOCS: [&str; 3] = ["trig_one", "trig_two", "trig_three"];

/// KEDA's documented examples.
fn keda_examples() -> String {
    [
        // The ScaledObject spec's example.
        scaled_object(
            "docs-average",
            "      formula: \"(trig_one + trig_two)/2\"\n      target: \"2\"\n      activationTarget: \"2\"\n      metricType: \"AverageValue\"\n",
            "",
            DOCS,
        ),
        // The docs' formula examples.
        scaled_object(
            "docs-ternary",
            "      formula: \"trig_one > 2 ? trig_one + trig_two : 1\"\n      target: \"2\"\n",
            "",
            DOCS,
        ),
        scaled_object(
            "docs-count",
            "      formula: \"count([trig_one,trig_two,trig_three],{#>1}) > 1 ? 5 : 0\"\n      target: \"2\"\n      metricType: Value\n",
            "",
            DOCS,
        ),
        // KEDA's scaling_modifiers e2e test, with its fallback.
        scaled_object(
            "e2e-sum",
            "      formula: metrics_api + kw_trig\n      target: '2'\n      activationTarget: '2'\n",
            "  fallback:\n    replicas: 5\n    failureThreshold: 3\n",
            ["metrics_api", "kw_trig", "spare"],
        ),
        // KEDA 2.20's fallback behavior scalingModifiers e2e test.
        scaled_object(
            "e2e-fallback-chain",
            "      formula: \"primary ?? secondary ?? 8\"\n      target: \"2\"\n",
            "  fallback:\n    failureThreshold: 3\n    replicas: 4\n    behavior: scalingModifiers\n",
            ["primary", "secondary", "spare"],
        ),
    ]
    .join("---\n")
}

#[test]
fn kedas_documented_formulas_validate() {
    let out = ebb(&["validate", "-"], &keda_examples());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 5);
    for o in objects {
        assert_eq!(o["valid"], true, "{o}");
    }
    let fallback = &objects[4]["normalized"]["spec"];
    assert_eq!(fallback["fallback"]["behavior"], "scalingModifiers");
    assert_eq!(
        fallback["advanced"]["scalingModifiers"]["metricType"],
        "AverageValue"
    );
    assert_eq!(fallback["advanced"]["scalingModifiers"]["activationTarget"], "0");
}

/// The one stderr line of an invalid object.
fn rejected(name: &str, modifiers: &str, fallback: &str) -> String {
    let out = ebb(
        &["validate", "-"],
        &scaled_object(name, modifiers, fallback, DOCS),
    );
    assert_eq!(out.status.code(), Some(1), "{name} should be rejected");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0].to_string()
}

#[test]
fn bad_formulas_are_rejected_naming_the_field_and_the_problem() {
    let prefix =
        |name: &str| format!("-#1: ScaledObject default/{name}: spec.advanced.scalingModifiers.formula: ");
    assert_eq!(
        rejected(
            "unknown",
            "      formula: \"trig_one + trig_four\"\n      target: \"2\"\n",
            ""
        ),
        prefix("unknown")
            + "\"trig_four\" is not the name of a trigger (triggers: trig_one, trig_two, trig_three)"
    );
    assert_eq!(
        rejected(
            "syntax",
            "      formula: \"(trig_one + \"\n      target: \"2\"\n",
            ""
        ),
        prefix("syntax") + "syntax error at character 13: unexpected end of formula"
    );
    assert_eq!(
        rejected(
            "boolean",
            "      formula: \"trig_one > 2\"\n      target: \"2\"\n",
            ""
        ),
        prefix("boolean") + "type error: the formula yields a boolean, not a number"
    );
    assert_eq!(
        rejected(
            "function",
            "      formula: \"sqrt(trig_one)\"\n      target: \"2\"\n",
            ""
        ),
        prefix("function")
            + "unknown function \"sqrt\" (available: abs, ceil, floor, round, float, int, min, max, sum, mean, count, all, any, none)"
    );
    let huge = format!("      formula: \"{}\"\n      target: \"2\"\n", "(".repeat(5000));
    assert_eq!(
        rejected("huge", &huge, ""),
        prefix("huge") + "the formula is 5000 bytes long, over the limit of 4096"
    );
}

#[test]
fn the_scaling_modifiers_fallback_needs_a_formula() {
    let yaml = "apiVersion: ebb.dev/v1alpha1\nkind: ScaledObject\nmetadata: {name: nofm}\nspec:\n  scaleTargetRef: {name: worker}\n  fallback: {failureThreshold: 3, replicas: 2, behavior: scalingModifiers}\n  triggers:\n  - type: metrics-api\n    metadata: {url: \"http://s/x\", valueLocation: v, targetValue: \"2\"}\n";
    let out = ebb(&["validate", "-"], yaml);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap().trim_end(),
        "-#1: ScaledObject default/nofm: spec.fallback.behavior: scalingModifiers needs advanced.scalingModifiers.formula"
    );
}
