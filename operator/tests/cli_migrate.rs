//! `ebb migrate` as a user runs it, and `ebb validate` on `kubectl get -o yaml` lists: exit
//! codes, stdout YAML, stderr lines.

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

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// What `kubectl get scaledobjects.keda.sh,hpa -o yaml` prints, trimmed.
const KUBECTL_LIST: &str = r#"
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: keda.sh/v1alpha1
  kind: ScaledObject
  metadata:
    name: orders
    namespace: shop
    uid: 0b5c
    resourceVersion: "4711"
    finalizers: [finalizer.keda.sh]
    annotations: {autoscaling.keda.sh/paused-scale-in: "true"}
  spec:
    scaleTargetRef: {name: orders}
    minReplicaCount: 1
    triggers:
    - type: kafka
      metadata: {bootstrapServers: "kafka:9092", consumerGroup: orders, topic: orders}
  status: {originalReplicaCount: 2}
- apiVersion: autoscaling/v2
  kind: HorizontalPodAutoscaler
  metadata: {name: keda-hpa-orders, namespace: shop}
  spec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: orders}, maxReplicas: 100}
"#;

#[test]
fn a_kubectl_list_converts_to_documents_that_validate() {
    let out = ebb(&["migrate", "--transfer-hpa-ownership", "-"], KUBECTL_LIST);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["apiVersion"], "ebb.dev/v1alpha1");
    assert_eq!(
        docs[0]["metadata"]["annotations"],
        serde_json::json!({
            "autoscaling.ebb.dev/paused-scale-in": "true",
            "scaledobject.ebb.dev/transfer-hpa-ownership": "true"
        })
    );
    assert!(docs[0]["metadata"].get("finalizers").is_none() && docs[0].get("status").is_none());
    assert_eq!(docs[1]["kind"], "HorizontalPodAutoscaler", "passes through");
    assert!(
        err.contains(
            "-#1.items[0]: ScaledObject shop/orders: metadata.annotations.autoscaling.keda.sh/paused-scale-in: renamed to autoscaling.ebb.dev/paused-scale-in"
        ),
        "{err}"
    );
    // The result is what `ebb validate` accepts.
    let checked = ebb(&["validate", "-"], std::str::from_utf8(&out.stdout).unwrap());
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
}

#[test]
fn unsupported_fields_exit_2_and_the_output_file_is_still_written() {
    let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web, namespace: shop}
spec:
  scaleTargetRef: {name: web}
  triggers:
  - type: datadog
    metadata: {query: "sum:trace.hits{*}", queryValue: "7"}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: vault, namespace: shop}
spec:
  hashiCorpVault: {address: "http://vault:8200", authentication: token}
"#;
    let dir = std::env::temp_dir().join(format!("ebb-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("out.yaml");
    let out = ebb(&["migrate", "-o", path.to_str().unwrap(), "-"], yaml);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        written.matches("apiVersion: ebb.dev/v1alpha1").count(),
        2,
        "{written}"
    );
    assert!(!written.contains("hashiCorpVault"));
    assert!(
        err.contains(
            "-#1: ScaledObject shop/web: spec.triggers[0].type: unsupported: trigger type \"datadog\""
        ),
        "{err}"
    );
    assert!(
        err.contains("-#2: TriggerAuthentication shop/vault: spec.hashiCorpVault: unsupported: removed"),
        "{err}"
    );
    assert!(
        err.contains("invalid after migration: -#1: ScaledObject shop/web: spec.triggers[0].type"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_result_that_fails_ebb_checks_exits_3() {
    // Every field is supported, but KEDA accepts what ebb (like KEDA's own parser) rejects.
    let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: q}
spec:
  scaleTargetRef: {name: q}
  triggers:
  - type: kafka
    metadata: {bootstrapServers: "k:9092", consumerGroup: g, version: "1.2.3.4"}
"#;
    let out = ebb(&["migrate", "-"], yaml);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("invalid after migration: -#1: ScaledObject default/q: spec.triggers[0].metadata.version: (kafka) \"1.2.3.4\" is not a Kafka version"),
        "{err}"
    );
}

#[test]
fn nothing_to_convert_is_said() {
    let out = ebb(
        &["migrate", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("nothing converted"), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: ConfigMap"));
}

#[test]
fn validate_checks_the_items_of_a_list() {
    let out = ebb(&["validate", "-"], KUBECTL_LIST);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["objects"][0]["source"], "-#1.items[0]");
    assert_eq!(report["objects"][0]["name"], "orders");
    assert_eq!(
        report["skipped"][0],
        "-#1.items[1]: autoscaling/v2 HorizontalPodAutoscaler keda-hpa-orders"
    );
    // An invalid item fails the run.
    let bad = KUBECTL_LIST.replace("minReplicaCount: 1", "minReplicaCount: -1");
    let out = ebb(&["validate", "-"], &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("-#1.items[0]: ScaledObject shop/orders: spec.minReplicaCount"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_with_nothing_to_check_fails_and_says_so() {
    for input in [
        "apiVersion: v1\nkind: List\nitems: []\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    ] {
        let out = ebb(&["validate", "-"], input);
        assert_eq!(out.status.code(), Some(1), "{input}");
        assert!(stderr(&out).contains("nothing was checked"), "{}", stderr(&out));
    }
}
