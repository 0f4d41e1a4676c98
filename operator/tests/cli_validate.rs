//! `ebb validate` as a user runs it: exit codes, stdout JSON, stderr lines.

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

#[test]
fn every_example_validates() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = ebb(&args, "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["valid"] == true)
    );
}

#[test]
fn invalid_object_exits_1_with_one_line_per_problem() {
    let yaml = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {name: bad}
spec:
  scaleTargetRef: {name: w}
  pollingInterval: 0
  triggers:
  - type: aws-sqs-queue
    metadata: {queueURL: orders, queueLength: "many"}
"#;
    let out = ebb(&["validate", "-"], yaml);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "-#1: ScaledObject default/bad: spec.pollingInterval: must be greater than or equal to 1, got 0",
            "-#1: ScaledObject default/bad: spec.triggers[0].metadata.queueLength: (aws-sqs-queue) must be a whole number, got \"many\"",
            "-#1: ScaledObject default/bad: spec.triggers[0].metadata.awsRegion: (aws-sqs-queue) is required (set it in metadata or the TriggerAuthentication)",
        ]
    );
}

#[test]
fn invalid_yaml_exits_1_without_panicking() {
    let out = ebb(&["validate", "-"], "kind: [\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert!(
        stderr.contains("invalid YAML") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn crds_prints_three_definitions() {
    let out = ebb(&["crds"], "");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .matches("kind: CustomResourceDefinition")
            .count(),
        3
    );
}

const ANNOTATED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
  namespace: shop
  annotations:
    autoscaling.ebb.dev/trigger: kafka
    autoscaling.ebb.dev/max-replicas: "20"
    autoscaling.ebb.dev/authentication-ref: kafka-auth
    kafka.autoscaling.ebb.dev/bootstrapServers: "k:9092"
    kafka.autoscaling.ebb.dev/consumerGroup: orders
    kafka.autoscaling.ebb.dev/topic: orders
    kafka.autoscaling.ebb.dev/sasl: scram_sha512
spec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}}}
---
apiVersion: ebb.dev/v1alpha1
kind: TriggerAuthentication
metadata: {name: kafka-auth, namespace: shop}
spec:
  secretTargetRef:
  - {parameter: username, name: kafka-secret, key: user}
  - {parameter: password, name: kafka-secret, key: pass}
---
apiVersion: v1
kind: Secret
metadata: {name: kafka-secret, namespace: shop}
data: {user: c3ZjLW9yZGVycw==, pass: czNjcjN0LUthZmthLVBX}
"#;

fn report_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

#[test]
fn an_annotated_deployment_prints_the_scaled_object_it_generates() {
    let out = ebb(&["validate", "--warnings", "-"], ANNOTATED);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let report = report_of(&out);
    let deployment = &report["objects"][0];
    assert_eq!(deployment["kind"], "Deployment");
    let so = &deployment["generated"];
    assert_eq!(so["metadata"]["name"], "orders-deployment");
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], "orders");
    assert_eq!(so["spec"]["maxReplicaCount"], 20);
    assert_eq!(so["spec"]["pollingInterval"], 30, "KEDA's defaults applied");
    assert_eq!(
        so["spec"]["triggers"][0]["authenticationRef"]["name"],
        "kafka-auth"
    );
    // The credentials resolved from the Secret in the input never reach any output.
    let all = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    for secret in ["svc-orders", "s3cr3t-Kafka-PW"] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
}

#[test]
fn invalid_annotations_exit_1_naming_each_annotation() {
    let yaml = ANNOTATED
        .replace(
            "autoscaling.ebb.dev/max-replicas: \"20\"",
            "autoscaling.ebb.dev/max-replicas: \"lots\"",
        )
        .replace(
            "kafka.autoscaling.ebb.dev/topic: orders",
            "kafka.autoscaling.ebb.dev/topic: orders\n    kafka.autoscaling.ebb.dev/lagThreshold: \"-5\"",
        );
    let out = ebb(&["validate", "-"], &yaml);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        ["-#1: Deployment shop/orders: autoscaling.ebb.dev/max-replicas: \"lots\" is not a whole number"],
    );
    // Once the annotations parse, the trigger's parameters are checked and named the same way.
    let yaml = yaml.replace("\"lots\"", "\"20\"");
    let out = ebb(&["validate", "-"], &yaml);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert!(
        stderr.starts_with("-#1: Deployment shop/orders: kafka.autoscaling.ebb.dev/lagThreshold: (kafka) "),
        "{stderr}"
    );
    assert!(report_of(&out)["objects"][0].get("generated").is_none());
}

#[test]
fn a_written_scaled_object_on_the_same_deployment_wins() {
    let yaml = format!(
        "{ANNOTATED}---\napiVersion: ebb.dev/v1alpha1\nkind: ScaledObject\nmetadata: {{name: handmade, namespace: shop}}\n\
         spec:\n  scaleTargetRef: {{name: orders}}\n  triggers:\n  - type: metrics-api\n    \
         metadata: {{url: 'http://s/', valueLocation: v, targetValue: '1'}}\n"
    );
    let out = ebb(&["validate", "--warnings", "-"], &yaml);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert!(
        stderr.contains(
            "Deployment shop/orders: warning: scaling annotations ignored: ScaledObject shop/handmade targets this Deployment"
        ),
        "{stderr}"
    );
    assert!(report_of(&out)["objects"][0].get("generated").is_none());
}
