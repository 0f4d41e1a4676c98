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
fn crds_prints_four_definitions() {
    let out = ebb(&["crds"], "");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .matches("kind: CustomResourceDefinition")
            .count(),
        4
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

/// KEDA ScaledJobs as KEDA's documentation writes them, with only what ebb needs to read them:
/// a RabbitMQ queue consumer, an SQS job with the accurate strategy and pending-pod conditions,
/// and a Kafka job with the custom strategy.
const KEDA_SCALED_JOBS: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: rabbitmq-consumer
  namespace: default
spec:
  jobTargetRef:
    parallelism: 1
    completions: 1
    activeDeadlineSeconds: 600
    backoffLimit: 6
    template:
      spec:
        containers:
        - name: rabbitmq-client
          image: ghcr.io/kedacore/rabbitmq-client:v1.0
          imagePullPolicy: Always
          command: ["receive", "amqp://user:PASSWORD@rabbitmq.default.svc.cluster.local:5672", "job"]
          envFrom:
          - secretRef:
              name: rabbitmq-consumer-secrets
        restartPolicy: Never
  pollingInterval: 10
  maxReplicaCount: 30
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 2
  triggers:
  - type: rabbitmq
    metadata:
      queueName: hello
      hostFromEnv: RABBITMQ_URL
      mode: QueueLength
      value: "1"
---
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: sqs-consumer
spec:
  jobTargetRef:
    template:
      spec:
        containers:
        - name: worker
          image: worker:latest
        restartPolicy: OnFailure
    backoffLimit: 4
  pollingInterval: 30
  maxReplicaCount: 50
  scalingStrategy:
    strategy: accurate
    pendingPodConditions:
    - Ready
    - PodScheduled
  triggers:
  - type: aws-sqs-queue
    metadata:
      queueURL: https://sqs.eu-west-1.amazonaws.com/account_id/QueueName
      queueLength: "5"
      awsRegion: eu-west-1
    authenticationRef:
      name: keda-trigger-auth-aws-role
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: keda-trigger-auth-aws-role
spec:
  podIdentity:
    provider: aws
---
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: kafka-batch
spec:
  jobTargetRef:
    template:
      spec:
        containers:
        - name: consumer
          image: consumer:latest
        restartPolicy: Never
  rollout:
    strategy: gradual
    propagationPolicy: foreground
  scalingStrategy:
    strategy: custom
    customScalingQueueLengthDeduction: 1
    customScalingRunningJobPercentage: "0.5"
    multipleScalersCalculation: max
  triggers:
  - type: kafka
    metadata:
      bootstrapServers: kafka.svc:9092
      consumerGroup: batch
      topic: orders
      lagThreshold: "5"
"#;

#[test]
fn keda_scaled_jobs_validate_with_a_keda_warning() {
    let out = ebb(&["validate", "--warnings", "-"], KEDA_SCALED_JOBS);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report_of(&out);
    let jobs: Vec<&serde_json::Value> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "ScaledJob")
        .collect();
    assert_eq!(jobs.len(), 3);
    for job in &jobs {
        assert_eq!(job["valid"], true, "{job}");
        assert!(
            job["warnings"].as_array().unwrap().iter().any(|w| w
                .as_str()
                .unwrap()
                .starts_with("KEDA apiVersion keda.sh/v1alpha1")),
            "{job}"
        );
        assert_eq!(job["normalized"]["apiVersion"], "ebb.dev/v1alpha1");
        assert!(job["triggers"][0]["metricName"].is_string(), "{job}");
    }
    // The defaults KEDA documents, applied where the manifest leaves them out.
    let sqs = &jobs[1]["normalized"]["spec"];
    assert_eq!(sqs["successfulJobsHistoryLimit"], 100);
    assert_eq!(sqs["minReplicaCount"], 0);
    assert_eq!(sqs["scalingStrategy"]["pendingPodConditions"][1], "PodScheduled");
    // The RabbitMQ host comes from a Secret that is not in the input: said, not an error.
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("ScaledJob default/rabbitmq-consumer: warning: spec.triggers[0]: Secret default/rabbitmq-consumer-secrets (envFrom of ScaledJob default/rabbitmq-consumer jobTargetRef.template) is not in the input"),
        "{stderr}"
    );
}

#[test]
fn invalid_scaled_jobs_exit_1_with_one_line_naming_the_field() {
    let base = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: bad}
spec:
  jobTargetRef:
    template:
      spec:
        containers: [{name: c, image: busybox}]
        restartPolicy: Never
  EXTRA
  triggers:
  - type: kafka
    metadata: {bootstrapServers: "k:9092", consumerGroup: g, topic: t}
"#;
    let cases = [
        (
            "minReplicaCount: 5\n  maxReplicaCount: 2",
            "spec.minReplicaCount: minReplicaCount (5) must be less than or equal to maxReplicaCount (2)",
        ),
        (
            "scalingStrategy: {strategy: greedy}",
            "spec.scalingStrategy.strategy: must be one of",
        ),
        (
            "scalingStrategy: {strategy: custom, customScalingRunningJobPercentage: \"150%\"}",
            "spec.scalingStrategy.customScalingRunningJobPercentage: must be a number between 0 and 1",
        ),
        (
            "rollout: {strategy: eventually}",
            "spec.rollout.strategy: must be one of",
        ),
    ];
    for (extra, want) in cases {
        let out = ebb(&["validate", "-"], &base.replace("EXTRA", extra));
        assert_eq!(out.status.code(), Some(1), "{extra}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains(": warning: ")).collect();
        assert_eq!(lines.len(), 1, "{extra}: {stderr}");
        assert!(
            lines[0].starts_with(&format!("-#1: ScaledJob default/bad: {want}")),
            "{extra}: {stderr}"
        );
    }
    let no_job = "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: bad}\nspec:\n  triggers: [{type: cron, metadata: {}}]\n";
    let out = ebb(&["validate", "-"], no_job);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains(": warning: ")).collect();
    assert_eq!(
        lines,
        ["-#1: ScaledJob default/bad: spec.jobTargetRef: is required"],
        "{stderr}"
    );
}
