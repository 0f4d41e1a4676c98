//! Annotation and label keys that steer the operator (KEDA's keys under ebb's prefix).

/// Stop scaling and leave replicas as they are.
pub const PAUSED: &str = "autoscaling.ebb.dev/paused";
/// Scale to N and hold there.
pub const PAUSED_REPLICAS: &str = "autoscaling.ebb.dev/paused-replicas";
/// Disable scaling in (HPA scale-down and N→0/idle).
pub const PAUSED_SCALE_IN: &str = "autoscaling.ebb.dev/paused-scale-in";
/// Disable scaling out (HPA scale-up and 0→1).
pub const PAUSED_SCALE_OUT: &str = "autoscaling.ebb.dev/paused-scale-out";
/// Treat the object as active whatever the triggers say.
pub const FORCE_ACTIVATION: &str = "autoscaling.ebb.dev/force-activation";
/// Adopt an existing HPA that already targets the workload.
pub const TRANSFER_HPA_OWNERSHIP: &str = "scaledobject.ebb.dev/transfer-hpa-ownership";
/// Label on the HPA's metric selector, naming the ScaledObject a metric belongs to.
pub const SCALED_OBJECT_NAME_LABEL: &str = "scaledobject.ebb.dev/name";
/// On a ScaledJob: comma-separated label keys of the ScaledJob not copied onto the Jobs it creates.
pub const SCALED_JOB_EXCLUDED_LABELS: &str = "scaledjob.ebb.dev/job-excluded-labels";
/// Label on every Job a ScaledJob creates, naming the ScaledJob.
pub const SCALED_JOB_NAME_LABEL: &str = "scaledjob.ebb.dev/name";

/// Reads a boolean annotation the way KEDA does: absent is `false`, `"false"` is `false`,
/// any other value counts as `true`.
pub fn flag(annotations: Option<&std::collections::BTreeMap<String, String>>, key: &str) -> bool {
    match annotations.and_then(|a| a.get(key)) {
        None => false,
        Some(v) => !v.trim().eq_ignore_ascii_case("false"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn flags_follow_keda_truthiness() {
        let mut a = BTreeMap::new();
        assert!(!flag(Some(&a), PAUSED));
        assert!(!flag(None, PAUSED));
        a.insert(PAUSED.to_string(), "true".to_string());
        assert!(flag(Some(&a), PAUSED));
        a.insert(PAUSED.to_string(), "False".to_string());
        assert!(!flag(Some(&a), PAUSED));
        a.insert(PAUSED.to_string(), "yes".to_string());
        assert!(flag(Some(&a), PAUSED));
    }
}
