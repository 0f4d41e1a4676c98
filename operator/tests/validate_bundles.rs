//! `ebb validate` on whole bundles: auth params and env resolved from the files given, exactly as
//! the operator resolves them in the cluster, and no secret value in any output.

use ebb_operator::cli::validate::{BundleReport, CheckOptions, check_documents_with, read_documents};

const SECRET_VALUES: &[&str] = &[
    "s3cr3t-Kafka-PW",
    "svc-orders",
    "amqp://guest:Rabb1tPass@rabbit:5672/vh",
    "Rabb1tPass",
];

fn check(yaml: &str, strict: bool) -> BundleReport {
    check_documents_with(
        &read_documents("bundle.yaml", yaml).unwrap(),
        CheckOptions {
            strict,
            ..CheckOptions::default()
        },
    )
}

/// Every output a user can see: the JSON report, problem lines and warnings.
fn all_output(report: &BundleReport) -> String {
    let mut out = serde_json::to_string(report).unwrap();
    out.push_str(&report.problem_lines().join("\n"));
    out.push_str(&report.warning_lines().join("\n"));
    out
}

fn assert_no_secrets(report: &BundleReport) {
    let out = all_output(report);
    for s in SECRET_VALUES {
        assert!(!out.contains(s), "secret {s:?} leaked in:\n{out}");
    }
}

const KAFKA_SO: &str = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {name: orders, namespace: shop}
spec:
  scaleTargetRef: {name: orders}
  triggers:
  - type: kafka
    metadata: {bootstrapServers: "k:9092", consumerGroup: orders, topic: orders, sasl: scram_sha512}
    authenticationRef: {name: kafka-auth}
---
apiVersion: ebb.dev/v1alpha1
kind: TriggerAuthentication
metadata: {name: kafka-auth, namespace: shop}
spec:
  secretTargetRef:
  - {parameter: username, name: kafka-secret, key: user}
  - {parameter: password, name: kafka-secret, key: pass}
"#;

// base64("svc-orders") and base64("s3cr3t-Kafka-PW")
const KAFKA_SECRET: &str = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: kafka-secret, namespace: shop}
data: {user: c3ZjLW9yZGVycw==, pass: czNjcjN0LUthZmthLVBX}
"#;

#[test]
fn kafka_sasl_from_a_secret() {
    let r = check(&format!("{KAFKA_SO}{KAFKA_SECRET}"), true);
    assert!(r.is_valid(), "{:?}", r.problem_lines());
    let params = r.objects[0].triggers[0].params.as_ref().unwrap();
    assert_eq!(params["username"]["from"], "authParams");
    assert_eq!(
        params["username"]["value"], "<redacted>",
        "values from Secrets are redacted"
    );
    assert_eq!(params["password"]["value"], "<redacted>");
    assert_no_secrets(&r);
}

#[test]
fn a_missing_secret_warns_and_strict_makes_it_an_error() {
    let r = check(KAFKA_SO, false);
    assert!(r.is_valid(), "{:?}", r.problem_lines());
    let warnings = r.warning_lines().join("\n");
    assert!(
        warnings.contains("Secret shop/kafka-secret is not in the input"),
        "{warnings}"
    );
    let strict = check(KAFKA_SO, true);
    assert!(!strict.is_valid());
    assert!(
        strict.problem_lines()[0]
            .contains("spec.triggers[0]: TriggerAuthentication shop/kafka-auth secretTargetRef[0]"),
        "{:?}",
        strict.problem_lines()
    );
}

#[test]
fn a_key_missing_from_a_present_secret_is_an_error() {
    let bundle = format!("{KAFKA_SO}{}", KAFKA_SECRET.replace("pass: ", "passwd: "));
    let r = check(&bundle, false);
    assert!(!r.is_valid());
    let lines = r.problem_lines().join("\n");
    assert!(lines.contains("has no key \"pass\""), "{lines}");
    assert_no_secrets(&r);
}

const RABBIT_SO: &str = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {name: thumbs}
spec:
  scaleTargetRef: {name: thumbs}
  triggers:
  - type: rabbitmq
    metadata: {queueName: thumbs, hostFromEnv: RABBIT_URL}
"#;

#[test]
fn rabbitmq_host_from_the_containers_plain_env() {
    let deployment = r#"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: thumbs}
spec:
  selector: {matchLabels: {app: thumbs}}
  template:
    metadata: {labels: {app: thumbs}}
    spec:
      containers:
      - name: sidecar
        image: s
      - name: worker
        image: w
        env:
        - {name: RABBIT_URL, value: "amqp://guest:Rabb1tPass@rabbit:5672/vh"}
"#;
    // The first container has no such variable: the trigger fails to resolve.
    let r = check(&format!("{RABBIT_SO}{deployment}"), false);
    assert!(!r.is_valid());
    assert!(
        r.problem_lines().join("\n").contains("RABBIT_URL"),
        "{:?}",
        r.problem_lines()
    );
    // envSourceContainerName picks the right one.
    let so = RABBIT_SO.replace(
        "{name: thumbs}\n  triggers",
        "{name: thumbs, envSourceContainerName: worker}\n  triggers",
    );
    let r = check(&format!("{so}{deployment}"), true);
    assert!(r.is_valid(), "{:?}", r.problem_lines());
    let host = &r.objects[0].triggers[0].params.as_ref().unwrap()["host"];
    assert_eq!(host["from"], "env");
    assert_eq!(
        host["value"], "amqp://<redacted>@rabbit:5672/vh",
        "credentials in URLs are masked"
    );
    assert_no_secrets(&r);
}

#[test]
fn rabbitmq_host_from_env_value_from_a_secret_and_a_config_map() {
    let bundle = format!(
        "{RABBIT_SO}{}",
        r#"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: thumbs}
spec:
  selector: {matchLabels: {app: thumbs}}
  template:
    metadata: {labels: {app: thumbs}}
    spec:
      containers:
      - name: worker
        image: w
        envFrom:
        - configMapRef: {name: rabbit-cfg}
        env:
        - name: RABBIT_URL
          valueFrom: {secretKeyRef: {name: rabbit, key: url}}
---
apiVersion: v1
kind: Secret
metadata: {name: rabbit}
stringData: {url: "amqp://guest:Rabb1tPass@rabbit:5672/vh"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: rabbit-cfg}
data: {QUEUE: thumbs}
"#
    );
    let r = check(&bundle, true);
    assert!(r.is_valid(), "{:?}", r.problem_lines());
    assert_eq!(
        r.objects[0].triggers[0].params.as_ref().unwrap()["host"]["value"],
        "<redacted>"
    );
    assert_no_secrets(&r);
}

#[test]
fn config_map_and_cluster_trigger_authentication() {
    let bundle = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {name: pay, namespace: billing}
spec:
  scaleTargetRef: {name: pay}
  triggers:
  - type: nats-jetstream
    metadata: {account: $G, stream: PAY, consumer: c}
    authenticationRef: {name: nats, kind: ClusterTriggerAuthentication}
---
apiVersion: ebb.dev/v1alpha1
kind: ClusterTriggerAuthentication
metadata: {name: nats}
spec:
  configMapTargetRef:
  - {parameter: natsServerMonitoringEndpoint, name: nats-endpoints, key: monitoring}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: nats-endpoints, namespace: ebb-system}
data: {monitoring: "nats.nats:8222"}
"#;
    let r = check(bundle, true);
    assert!(r.is_valid(), "{:?}", r.problem_lines());
    let p = &r.objects[0].triggers[0].params.as_ref().unwrap()["natsServerMonitoringEndpoint"];
    assert_eq!(p["value"], "nats.nats:8222", "ConfigMap values are not secret");
}

#[test]
fn secret_values_never_appear_in_errors_even_when_invalid() {
    // A secret-sourced value that fails validation must not be echoed back.
    let bundle = format!(
        "{KAFKA_SO}{}",
        r#"
---
apiVersion: v1
kind: Secret
metadata: {name: kafka-secret, namespace: shop}
stringData: {user: svc-orders, pass: s3cr3t-Kafka-PW}
"#
    )
    .replace("- {parameter: username, name: kafka-secret, key: user}", "- {parameter: username, name: kafka-secret, key: user}\n  - {parameter: sasl, name: kafka-secret, key: pass}")
    .replace(", sasl: scram_sha512}", "}");
    let r = check(&bundle, true);
    assert!(!r.is_valid());
    assert!(
        r.problem_lines().join("\n").contains("metadata.sasl"),
        "{:?}",
        r.problem_lines()
    );
    assert_no_secrets(&r);
}

#[test]
fn pod_identity_is_reported_and_checked() {
    let bundle = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {name: q}
spec:
  scaleTargetRef: {name: q}
  triggers:
  - type: aws-sqs-queue
    metadata: {queueURL: orders, awsRegion: eu-west-1}
    authenticationRef: {name: aws}
  - type: metrics-api
    metadata: {url: "http://x/", valueLocation: v, targetValue: "1"}
    authenticationRef: {name: aws}
---
apiVersion: ebb.dev/v1alpha1
kind: TriggerAuthentication
metadata: {name: aws}
spec:
  podIdentity: {provider: aws}
"#;
    let r = check(bundle, true);
    assert!(r.is_valid(), "{:?}", r.problem_lines());
    let triggers = serde_json::to_value(&r.objects[0].triggers).unwrap();
    assert_eq!(triggers[0]["podIdentity"], "aws");
    let warnings = r.warning_lines().join("\n");
    assert!(
        warnings
            .contains("spec.triggers[1].authenticationRef: podIdentity aws is only used by aws-sqs-queue"),
        "{warnings}"
    );
    assert!(
        !warnings.contains("spec.triggers[0].authenticationRef"),
        "{warnings}"
    );
}
