//! `ebb validate` for ScaledJobs: the cross-field rules, the triggers compiled as the operator
//! will compile them (`<param>FromEnv` reads the Job template's container), and warnings for
//! settings that are accepted but do nothing or cannot work.

use ebb_crds::validation::validate_scaled_job_spec;
use ebb_crds::{JobScalingStrategy, ScaledJob};

use crate::cli::trigger_report::report_triggers;
use crate::cli::validate::{BundleObjects, CheckOptions, ObjectReport, Problem};
use crate::compile::triggers::compile_scaled_job;

/// Adds a typed ScaledJob's findings to `report`: the spec rules, each trigger, and warnings.
pub(crate) fn check_scaled_job(
    sj: &ScaledJob,
    report: &mut ObjectReport,
    bundle: &BundleObjects,
    options: CheckOptions,
) {
    report
        .problems
        .extend(validate_scaled_job_spec(&sj.spec).into_iter().map(Problem::from));
    report.warnings.extend(spec_warnings(sj));
    let namespace = sj.metadata.namespace.as_deref().unwrap_or("default");
    let compiled = futures::executor::block_on(compile_scaled_job(bundle, namespace, sj));
    report_triggers(&sj.spec.triggers, compiled, report, options);
}

/// Settings that the schema accepts but that are ignored, deprecated, or make every Job fail.
fn spec_warnings(sj: &ScaledJob) -> Vec<String> {
    let mut out = Vec::new();
    if sj.spec.rollout_strategy.is_some() {
        out.push(
            "spec.rolloutStrategy: deprecated, use rollout.strategy (rolloutStrategy wins while it is set)"
                .to_string(),
        );
    }
    let strategy = &sj.spec.scaling_strategy;
    if strategy.strategy != JobScalingStrategy::Custom {
        for (set, field) in [
            (
                strategy.custom_scaling_queue_length_deduction.is_some(),
                "customScalingQueueLengthDeduction",
            ),
            (
                strategy.custom_scaling_running_job_percentage.is_some(),
                "customScalingRunningJobPercentage",
            ),
        ] {
            if set {
                out.push(format!(
                    "spec.scalingStrategy.{field}: ignored unless scalingStrategy.strategy is custom"
                ));
            }
        }
    }
    let restart = sj
        .spec
        .job_target_ref
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref());
    if !matches!(restart, Some("Never" | "OnFailure")) {
        out.push(format!(
            "spec.jobTargetRef.template.spec.restartPolicy: the API server creates Jobs only with Never or OnFailure, got {}",
            restart.map(|r| format!("{r:?}")).unwrap_or_else(|| "none".into())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::cli::validate::{BundleReport, CheckedKind, check_documents, read_documents};

    fn check(yaml: &str) -> BundleReport {
        check_documents(&read_documents("t.yaml", yaml).unwrap())
    }

    const JOB: &str = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledJob
metadata: {name: batch, namespace: jobs}
spec:
  envSourceContainerName: worker
  jobTargetRef:
    template:
      spec:
        restartPolicy: Never
        containers:
        - name: sidecar
          image: busybox
        - name: worker
          image: busybox
          env:
          - {name: RABBIT_URL, value: "http://user:Pa55word@rabbit:15672/"}
  triggers:
  - type: rabbitmq
    metadata: {queueName: work, hostFromEnv: RABBIT_URL, mode: QueueLength, value: "1"}
"#;

    #[test]
    fn a_valid_job_is_normalised_and_its_trigger_reads_the_job_container_env() {
        let r = check(JOB);
        assert!(r.is_valid(), "{:?}", r.problem_lines());
        let o = &r.objects[0];
        assert_eq!(o.kind, Some(CheckedKind::ScaledJob));
        assert!(o.warnings.is_empty(), "{:?}", o.warnings);
        let n = o.normalized.as_ref().unwrap();
        assert_eq!(n["spec"]["pollingInterval"], 30);
        assert_eq!(n["spec"]["successfulJobsHistoryLimit"], 100);
        assert_eq!(n["spec"]["failedJobsHistoryLimit"], 100);
        assert_eq!(n["spec"]["maxReplicaCount"], 100);
        assert_eq!(n["spec"]["scalingStrategy"]["strategy"], "default");
        assert_eq!(n["spec"]["scalingStrategy"]["multipleScalersCalculation"], "max");
        assert_eq!(o.triggers.len(), 1);
        assert!(o.triggers[0].metric_name.is_some());
        // The host came from the container env; its password never reaches the output.
        let out = serde_json::to_string(&o.triggers).unwrap();
        assert!(!out.contains("Pa55word"), "{out}");
    }

    #[test]
    fn from_env_reads_the_named_container_or_the_first() {
        // The first container (sidecar) has no RABBIT_URL.
        let r = check(&JOB.replace("  envSourceContainerName: worker\n", ""));
        let lines = r.problem_lines();
        assert!(!lines.is_empty());
        assert!(lines.iter().all(|l| l.contains("spec.triggers[0]")), "{lines:?}");
        let r = check(&JOB.replace("envSourceContainerName: worker", "envSourceContainerName: nope"));
        let lines = r.problem_lines();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("ScaledJob jobs/batch jobTargetRef.template has no container \"nope\"")),
            "{lines:?}"
        );
    }

    #[test]
    fn each_rule_is_one_problem_naming_the_field() {
        let cases = [
            (
                "  minReplicaCount: 5\n  maxReplicaCount: 2\n",
                "spec.minReplicaCount",
            ),
            (
                "  scalingStrategy: {strategy: greedy}\n",
                "spec.scalingStrategy.strategy",
            ),
            (
                "  scalingStrategy: {strategy: custom, customScalingRunningJobPercentage: \"1.5\"}\n",
                "spec.scalingStrategy.customScalingRunningJobPercentage",
            ),
            ("  failedJobsHistoryLimit: -1\n", "spec.failedJobsHistoryLimit"),
        ];
        for (extra, field) in cases {
            let yaml = JOB.replace("  triggers:\n", &format!("{extra}  triggers:\n"));
            let lines = check(&yaml).problem_lines();
            assert_eq!(lines.len(), 1, "{extra}: {lines:?}");
            assert!(
                lines[0].starts_with(&format!("t.yaml#1: ScaledJob jobs/batch: {field}: ")),
                "{lines:?}"
            );
        }
        let no_job = check(
            "apiVersion: ebb.dev/v1alpha1\nkind: ScaledJob\nmetadata: {name: b}\nspec:\n  triggers: [{type: cron, metadata: {}}]\n",
        );
        let lines = no_job.problem_lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("spec.jobTargetRef"), "{lines:?}");
    }

    #[test]
    fn ignored_deprecated_and_unworkable_settings_are_warned_about() {
        let yaml = JOB
            .replace(
                "  triggers:\n",
                "  rolloutStrategy: gradual\n  scalingStrategy: {strategy: accurate, customScalingQueueLengthDeduction: 1}\n  triggers:\n",
            )
            .replace("restartPolicy: Never", "restartPolicy: Always");
        let r = check(&yaml);
        assert!(r.is_valid(), "{:?}", r.problem_lines());
        let w = r.warning_lines().join("\n");
        assert!(w.contains("spec.rolloutStrategy: deprecated"), "{w}");
        assert!(
            w.contains("spec.scalingStrategy.customScalingQueueLengthDeduction: ignored"),
            "{w}"
        );
        assert!(w.contains("restartPolicy"), "{w}");
    }

    #[test]
    fn keda_scaled_jobs_and_annotations_are_accepted_with_warnings() {
        let yaml = JOB.replace("ebb.dev/v1alpha1", "keda.sh/v1alpha1").replace(
            "metadata: {name: batch, namespace: jobs}",
            "metadata: {name: batch, namespace: jobs, annotations: {scaledjob.keda.sh/job-excluded-labels: a}}",
        );
        let r = check(&yaml);
        assert!(r.is_valid(), "{:?}", r.problem_lines());
        let w = r.warning_lines().join("\n");
        assert!(w.contains("KEDA apiVersion keda.sh/v1alpha1"), "{w}");
        assert!(
            w.contains("ebb reads scaledjob.ebb.dev/job-excluded-labels"),
            "{w}"
        );
    }

    proptest::proptest! {
        // Arbitrary metadata and strategy text in a well-formed ScaledJob never panic.
        #[test]
        fn arbitrary_input_never_panics(
            ty in proptest::sample::select(vec!["kafka", "rabbitmq", "aws-sqs-queue", "nope"]),
            meta in proptest::collection::btree_map("[a-zA-Z]{1,20}", ".{0,30}", 0..8),
            percentage in ".{0,8}",
        ) {
            let doc = serde_json::json!({"apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledJob",
                "metadata": {"name": "p"}, "spec": {"jobTargetRef": {"template": {}},
                "scalingStrategy": {"strategy": "custom", "customScalingRunningJobPercentage": percentage},
                "triggers": [{"type": ty, "metadata": meta}]}});
            let r = check_documents(&[crate::cli::validate::InputDocument { source: "p".into(), value: doc }]);
            proptest::prop_assert_eq!(r.objects.len(), 1);
        }
    }
}
