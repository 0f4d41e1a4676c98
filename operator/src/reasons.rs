//! Every reason ebb records, in one place: the Events' reasons here (and the annotation
//! generator's in [`crate::generate`]), the conditions' reasons in [`ebb_crds::conditions::reason`]
//! (ScaledObject) and [`JOB_CONDITION_REASONS`] (ScaledJob). docs/troubleshooting.md explains each;
//! a test keeps it complete.

use crate::generate::{plan, worker};

/// Event (Normal): a trigger became active at 0 (or idle) replicas and ebb scaled the target up.
pub const ACTIVATED: &str = "Activated";
/// Event (Normal): every trigger stayed inactive for the cooldown; ebb scaled the target to 0.
pub const SCALED_TO_ZERO: &str = "ScaledToZero";
/// Event (Normal): as [`SCALED_TO_ZERO`], to `idleReplicaCount`.
pub const SCALED_TO_IDLE: &str = "ScaledToIdle";
/// Event (Normal): the target was below `minReplicaCount`; ebb raised it.
pub const SCALED_TO_MIN: &str = "ScaledToMin";
/// Event (Normal): the fallback count was written to the target.
pub const FALLBACK_REPLICAS: &str = "FallbackReplicas";
/// Event (Normal): `paused-replicas` was written to the target.
pub const PAUSED_REPLICAS: &str = "PausedReplicas";
/// Event (Warning): the API refused a `/scale` write; the note names the target and the error.
pub const SCALE_WRITE_FAILED: &str = "ScaleWriteFailed";
/// Event (Warning): a trigger started failing; the note has its error.
pub const TRIGGER_FAILING: &str = "TriggerFailing";
/// Event (Normal): a failing trigger answers again.
pub const TRIGGER_RECOVERED: &str = "TriggerRecovered";
/// Event (Warning): triggers failed `failureThreshold` polls in a row; the fallback applies.
pub const FALLBACK_ENGAGED: &str = "FallbackEngaged";
/// Event (Normal): the triggers recovered; the fallback no longer applies.
pub const FALLBACK_CLEARED: &str = "FallbackCleared";
/// Event (Normal): the object was paused (`paused` or `paused-replicas`).
pub const PAUSED: &str = "Paused";
/// Event (Normal): the pause annotations are gone.
pub const UNPAUSED: &str = "Unpaused";
/// Event (Warning): the ScaledObject is invalid (the note says why); it is not scaled.
pub const SCALED_OBJECT_CHECK_FAILED: &str = ebb_crds::conditions::reason::SCALED_OBJECT_CHECK_FAILED;
/// Event (Warning): another ScaledObject, or an HPA ebb does not own, scales the same target.
pub const TARGET_CONFLICT: &str = ebb_crds::conditions::reason::TARGET_CONFLICT;
/// Event (Normal): the ScaledObject was deleted and the target got its original replica count
/// back (`restoreToOriginalReplicaCount`).
pub const REPLICAS_RESTORED: &str = "ReplicasRestored";
/// Event (Normal): a ScaledJob tick created Jobs.
pub const JOBS_CREATED: &str = "JobsCreated";
/// Event (Warning): the API refused Job creates.
pub const JOB_CREATE_FAILED: &str = "JobCreateFailed";
/// Event (Normal): a ScaledJob's triggers became active.
pub const SCALED_JOB_ACTIVE: &str = "ScaledJobActive";
/// Event (Normal): no trigger of a ScaledJob is active any more.
pub const SCALED_JOB_INACTIVE: &str = "ScaledJobInactive";
/// Event (Warning) and Ready reason: the ScaledJob is invalid.
pub const SCALED_JOB_CHECK_FAILED: &str = "ScaledJobCheckFailed";

/// Every Event reason ebb records.
pub const EVENT_REASONS: &[&str] = &[
    ACTIVATED,
    SCALED_TO_ZERO,
    SCALED_TO_IDLE,
    SCALED_TO_MIN,
    FALLBACK_REPLICAS,
    PAUSED_REPLICAS,
    SCALE_WRITE_FAILED,
    TRIGGER_FAILING,
    TRIGGER_RECOVERED,
    FALLBACK_ENGAGED,
    FALLBACK_CLEARED,
    PAUSED,
    UNPAUSED,
    SCALED_OBJECT_CHECK_FAILED,
    TARGET_CONFLICT,
    REPLICAS_RESTORED,
    JOBS_CREATED,
    JOB_CREATE_FAILED,
    SCALED_JOB_ACTIVE,
    SCALED_JOB_INACTIVE,
    SCALED_JOB_CHECK_FAILED,
    plan::GENERATED,
    plan::UPDATED,
    plan::REMOVED,
    plan::INVALID,
    plan::IGNORED,
    plan::WARNINGS,
    plan::REVERTED,
    worker::WRITE_FAILED,
];

/// ScaledJob Ready reason: valid and polling.
pub const SCALED_JOB_READY: &str = "ScaledJobReady";
/// ScaledJob Paused reason: `autoscaling.ebb.dev/paused` holds Job creation.
pub const SCALED_JOB_PAUSED: &str = "ScaledJobPaused";
/// ScaledJob Paused reason (status False): Jobs are created.
pub const SCALED_JOB_UNPAUSED: &str = "ScaledJobUnpaused";

/// Every reason of a ScaledJob's conditions (the others are ScaledObject's own).
pub const JOB_CONDITION_REASONS: &[&str] = &[
    SCALED_JOB_READY,
    SCALED_JOB_CHECK_FAILED,
    SCALED_JOB_PAUSED,
    SCALED_JOB_UNPAUSED,
    ebb_crds::conditions::reason::TRIGGER_ERROR,
    ebb_crds::conditions::reason::SCALER_ACTIVE,
    ebb_crds::conditions::reason::SCALER_NOT_ACTIVE,
];

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_crds::conditions::reason as so;

    const TROUBLESHOOTING: &str = include_str!("../../docs/troubleshooting.md");

    /// Every ScaledObject condition reason in crds/src/conditions.rs.
    const OBJECT_CONDITION_REASONS: &[&str] = &[
        so::SCALED_OBJECT_READY,
        so::SCALED_OBJECT_CHECK_FAILED,
        so::TRIGGER_ERROR,
        so::PARTIAL_TRIGGER_ERROR,
        so::TARGET_CONFLICT,
        so::SCALER_ACTIVE,
        so::SCALER_NOT_ACTIVE,
        so::SCALER_COOLDOWN,
        so::UNKNOWN_STATE,
        so::FALLBACK_EXISTS,
        so::NO_FALLBACK_FOUND,
        so::SCALED_OBJECT_PAUSED,
        so::SCALED_OBJECT_UNPAUSED,
    ];

    #[test]
    fn the_troubleshooting_guide_explains_every_reason_in_a_table_row() {
        let rows: Vec<&str> = TROUBLESHOOTING.lines().filter(|l| l.starts_with('|')).collect();
        let missing: Vec<&&str> = EVENT_REASONS
            .iter()
            .chain(JOB_CONDITION_REASONS)
            .chain(OBJECT_CONDITION_REASONS)
            .filter(|r| !rows.iter().any(|row| row.starts_with(&format!("| `{r}`"))))
            .collect();
        assert!(missing.is_empty(), "not in docs/troubleshooting.md: {missing:?}");
    }

    #[test]
    fn event_reasons_are_distinct_camel_case_words() {
        let mut seen = std::collections::BTreeSet::new();
        for r in EVENT_REASONS {
            assert!(seen.insert(r), "{r} twice");
            assert!(r.chars().next().is_some_and(|c| c.is_ascii_uppercase()), "{r}");
            assert!(r.chars().all(|c| c.is_ascii_alphanumeric()), "{r}");
        }
    }
}
