use super::*;
use crate::cli::validate::{check_documents, read_documents};

fn run(yaml: &str, options: MigrateOptions) -> Migration {
    migrate(&read_documents("in.yaml", yaml).unwrap(), options)
}

fn lines(m: &Migration) -> Vec<String> {
    m.findings.iter().map(ToString::to_string).collect()
}

const KEDA_SO: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: orders
  namespace: shop
  uid: 5d1c
  resourceVersion: "812"
  creationTimestamp: "2025-01-01T00:00:00Z"
  generation: 3
  finalizers: [finalizer.keda.sh]
  labels: {scaledobject.keda.sh/name: orders, team: a}
  annotations:
    autoscaling.keda.sh/paused-replicas: "2"
    autoscaling.keda.sh/paused-scale-in: "true"
    scaledobject.keda.sh/transfer-hpa-ownership: "true"
    validations.keda.sh/hpa-ownership: "true"
    scaledobject.keda.sh/hpa-excluded-labels: team
    kubectl.kubernetes.io/last-applied-configuration: "{}"
    note: kept
spec:
  scaleTargetRef: {name: orders}
  triggers:
  - type: kafka
    metadata: {bootstrapServers: "k:9092", consumerGroup: g, topic: t}
  - type: datadog
    metadata: {query: "sum:trace.hits{*}", queryValue: "7"}
status:
  originalReplicaCount: 3
"#;

#[test]
fn a_scaled_object_is_rewritten_with_every_change_named() {
    let m = run(KEDA_SO, MigrateOptions::default());
    assert_eq!(m.converted, 1);
    let so = &m.documents[0].value;
    assert_eq!(so["apiVersion"], "ebb.dev/v1alpha1");
    assert!(so.get("status").is_none());
    let meta = &so["metadata"];
    for gone in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "finalizers",
    ] {
        assert!(meta.get(gone).is_none(), "{gone}: {meta}");
    }
    assert_eq!(meta["labels"], json!({"team": "a"}));
    assert_eq!(
        meta["annotations"],
        json!({
            "autoscaling.ebb.dev/paused-replicas": "2",
            "autoscaling.ebb.dev/paused-scale-in": "true",
            "scaledobject.ebb.dev/transfer-hpa-ownership": "true",
            "scaledobject.keda.sh/hpa-excluded-labels": "team",
            "note": "kept",
        })
    );
    assert_eq!(
        so["spec"],
        serde_json::from_str::<Json>(
            r#"{"scaleTargetRef":{"name":"orders"},"triggers":[
        {"type":"kafka","metadata":{"bootstrapServers":"k:9092","consumerGroup":"g","topic":"t"}},
        {"type":"datadog","metadata":{"query":"sum:trace.hits{*}","queryValue":"7"}}]}"#
        )
        .unwrap()
    );
    let lines = lines(&m);
    let at = "in.yaml#1: ScaledObject shop/orders: ";
    for expected in [
        "apiVersion: keda.sh/v1alpha1 -> ebb.dev/v1alpha1",
        "status: removed (ebb writes its own)",
        "metadata: removed server-set fields uid, resourceVersion, creationTimestamp, generation",
        "metadata.finalizers: removed KEDA's finalizer",
        "metadata.labels.scaledobject.keda.sh/name: removed (KEDA sets it on its objects)",
        "metadata.annotations.autoscaling.keda.sh/paused-replicas: renamed to autoscaling.ebb.dev/paused-replicas",
        "metadata.annotations.scaledobject.keda.sh/transfer-hpa-ownership: renamed to scaledobject.ebb.dev/transfer-hpa-ownership",
        "metadata.annotations.kubectl.kubernetes.io/last-applied-configuration: removed (it describes the KEDA object)",
        "metadata.annotations.scaledobject.keda.sh/hpa-excluded-labels: unsupported: ebb has no equivalent; left as it is and ignored",
    ] {
        assert!(
            lines.contains(&format!("{at}{expected}")),
            "{expected}\n{lines:#?}"
        );
    }
    assert!(lines.iter().any(|l| l.starts_with(&format!(
        "{at}metadata.annotations.validations.keda.sh/hpa-ownership: removed: ebb has no admission webhook"
    ))));
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{at}spec.triggers[1].type: unsupported: trigger type \"datadog\" is not supported by ebb (it supports kafka,"
        ))),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("triggers[0]")),
        "kafka is supported"
    );
    assert!(m.has_unsupported());
}

#[test]
fn supported_objects_convert_without_unsupported_findings_and_validate() {
    let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: q, namespace: shop, annotations: {autoscaling.keda.sh/paused: "true"}}
spec:
  scaleTargetRef: {name: q}
  triggers:
  - type: rabbitmq
    metadata: {protocol: http, host: "http://r:15672/", queueName: q, mode: QueueLength, value: "5"}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: j, namespace: shop, annotations: {scaledjob.keda.sh/job-excluded-labels: team}}
spec:
  jobTargetRef: {template: {spec: {containers: [{name: c, image: busybox}], restartPolicy: Never}}}
  triggers:
  - type: aws-sqs-queue
    metadata: {queueURL: q, awsRegion: eu-west-1}
    authenticationRef: {name: aws}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: aws, namespace: shop}
spec:
  podIdentity: {provider: aws, roleArn: "arn:aws:iam::1:role/r"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: q, namespace: shop}
spec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}}
"#;
    let input = read_documents("in.yaml", yaml).unwrap();
    let m = migrate(&input, MigrateOptions::default());
    assert_eq!(m.converted, 3);
    assert!(!m.has_unsupported(), "{:#?}", lines(&m));
    assert_eq!(
        m.documents[3].value, input[3].value,
        "other documents pass through"
    );
    assert_eq!(
        m.documents[1].value["metadata"]["annotations"],
        json!({"scaledjob.ebb.dev/job-excluded-labels": "team"})
    );
    let report = check_documents(&m.documents);
    assert!(report.is_valid(), "{:#?}", report.problem_lines());
    assert!(
        report
            .objects
            .iter()
            .all(|o| o.api_version == "ebb.dev/v1alpha1" || o.kind.is_none()),
        "no KEDA apiVersion left"
    );
}

#[test]
fn authentication_stores_and_identities_ebb_lacks_are_removed_and_named() {
    let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ClusterTriggerAuthentication
metadata: {name: vault}
spec:
  secretTargetRef: [{parameter: password, name: s, key: k}]
  hashiCorpVault: {address: "http://v:8200", authentication: token}
  azureKeyVault: {vaultUri: "https://x"}
  gcpSecretManager: {secrets: []}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: wi, namespace: ns}
spec:
  podIdentity: {provider: azure-workload, identityId: x}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: aws, namespace: ns}
spec:
  podIdentity: {provider: aws, identityId: x}
"#;
    let m = run(yaml, MigrateOptions::default());
    assert_eq!(
        m.documents[0].value["spec"],
        json!({"secretTargetRef": [{"parameter": "password", "name": "s", "key": "k"}]})
    );
    assert_eq!(m.documents[1].value["spec"], json!({}));
    assert_eq!(
        m.documents[2].value["spec"],
        json!({"podIdentity": {"provider": "aws"}})
    );
    let unsupported: Vec<String> = m
        .findings
        .iter()
        .filter(|f| f.unsupported)
        .map(|f| format!("{} {}", f.object, f.field))
        .collect();
    assert_eq!(
        unsupported,
        [
            "ClusterTriggerAuthentication vault spec.azureKeyVault",
            "ClusterTriggerAuthentication vault spec.gcpSecretManager",
            "ClusterTriggerAuthentication vault spec.hashiCorpVault",
            "TriggerAuthentication ns/wi spec.podIdentity.provider",
            "TriggerAuthentication ns/aws spec.podIdentity.identityId",
        ]
    );
    assert!(
        m.findings[3..]
            .iter()
            .any(|f| f.message.contains("\"azure-workload\""))
    );
}

#[test]
fn transfer_option_adds_the_annotation_to_scaled_objects_only() {
    let yaml = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: a}
spec: {scaleTargetRef: {name: a}, triggers: [{type: kafka, metadata: {bootstrapServers: "k:9092", consumerGroup: g}}]}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: t}
spec: {}
"#;
    let m = run(
        yaml,
        MigrateOptions {
            transfer_hpa_ownership: true,
        },
    );
    assert_eq!(
        m.documents[0].value["metadata"]["annotations"],
        json!({"scaledobject.ebb.dev/transfer-hpa-ownership": "true"})
    );
    assert!(m.documents[1].value["metadata"].get("annotations").is_none());
    assert!(!m.has_unsupported());
}

#[test]
fn a_list_from_kubectl_is_converted_item_by_item() {
    let yaml = r#"
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: keda.sh/v1alpha1
  kind: ScaledObject
  metadata: {name: a, namespace: n}
  spec: {scaleTargetRef: {name: a}, triggers: [{type: kafka, metadata: {bootstrapServers: "k:9092", consumerGroup: g}}]}
- apiVersion: autoscaling/v2
  kind: HorizontalPodAutoscaler
  metadata: {name: keda-hpa-a, namespace: n}
"#;
    let m = run(yaml, MigrateOptions::default());
    assert_eq!(m.converted, 1);
    assert_eq!(m.documents.len(), 2);
    assert_eq!(m.documents[0].source, "in.yaml#1.items[0]");
    assert_eq!(m.documents[0].value["apiVersion"], "ebb.dev/v1alpha1");
    assert_eq!(m.documents[1].value["kind"], "HorizontalPodAutoscaler");
}

#[test]
fn ebb_objects_and_nothing_keda_pass_through_untouched() {
    let yaml = "apiVersion: ebb.dev/v1alpha1\nkind: ScaledObject\nmetadata: {name: a, annotations: {autoscaling.keda.sh/paused: \"true\"}}\n";
    let m = run(yaml, MigrateOptions::default());
    assert_eq!(m.converted, 0);
    assert!(m.findings.is_empty());
    assert_eq!(
        m.documents[0].value["metadata"]["annotations"]["autoscaling.keda.sh/paused"],
        "true"
    );
}

#[test]
fn an_ebb_annotation_already_given_wins_over_the_keda_one() {
    let yaml = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a, annotations: {autoscaling.keda.sh/paused: \"true\", autoscaling.ebb.dev/paused: \"false\"}}\n";
    let m = run(yaml, MigrateOptions::default());
    assert_eq!(
        m.documents[0].value["metadata"]["annotations"],
        json!({"autoscaling.ebb.dev/paused": "false"})
    );
}
