//! Cross-field spec rules: the CRD's CEL rules, plus the ones no schema can state, checked in Rust.
//!
//! Not every cluster evaluates CEL (`x-kubernetes-validations` needs Kubernetes ≥ 1.25), and
//! `ebb validate` runs with no cluster at all, so the operator and the CLI both call [`validate_spec`].

use std::collections::BTreeSet;
use std::fmt;

use crate::ScaledObjectSpec;

/// One problem in a spec, located by its field path (for example `spec.triggers[1].name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, from the object root.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// Creates a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks the cross-field rules of a ScaledObject spec (the ones a CEL rule or no schema at all
/// expresses). Types, minimums and enums are the schema's job ([`crate::schema_check`]); trigger
/// metadata is checked by the scalers crate.
pub fn validate_spec(spec: &ScaledObjectSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if spec.min_replica_count > spec.max_replica_count {
        errors.push(FieldError::new(
            "spec.minReplicaCount",
            format!(
                "minReplicaCount ({}) must be less than or equal to maxReplicaCount ({})",
                spec.min_replica_count, spec.max_replica_count
            ),
        ));
    }
    if let Some(idle) = spec.idle_replica_count
        && idle >= spec.min_replica_count
    {
        errors.push(FieldError::new(
            "spec.idleReplicaCount",
            format!(
                "idleReplicaCount ({idle}) must be less than minReplicaCount ({})",
                spec.min_replica_count
            ),
        ));
    }
    let mut names = BTreeSet::new();
    for (i, t) in spec.triggers.iter().enumerate() {
        if let Some(name) = &t.name
            && !names.insert(name.as_str())
        {
            errors.push(FieldError::new(
                format!("spec.triggers[{i}].name"),
                format!("trigger name {name:?} is used twice"),
            ));
        }
    }
    if let Some(modifiers) = spec.advanced.as_ref().and_then(|a| a.scaling_modifiers.as_ref()) {
        if modifiers.formula.trim().is_empty() {
            errors.push(FieldError::new(
                "spec.advanced.scalingModifiers.formula",
                "must not be empty",
            ));
        }
        match modifiers.target.trim().parse::<f64>() {
            Ok(t) if t > 0.0 && t.is_finite() => {}
            _ => errors.push(FieldError::new(
                "spec.advanced.scalingModifiers.target",
                format!("must be a number greater than 0, got {:?}", modifiers.target),
            )),
        }
        if modifiers
            .activation_target
            .trim()
            .parse::<f64>()
            .map(|v| !v.is_finite())
            .unwrap_or(true)
        {
            errors.push(FieldError::new(
                "spec.advanced.scalingModifiers.activationTarget",
                format!("must be a number, got {:?}", modifiers.activation_target),
            ));
        }
        if spec.triggers.iter().any(|t| t.name.is_none()) {
            errors.push(FieldError::new(
                "spec.triggers",
                "every trigger needs a name when scalingModifiers is set",
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fallback, FallbackBehavior, MetricType, Trigger};
    use proptest::prelude::*;

    fn spec(min: i32, max: i32, idle: Option<i32>) -> ScaledObjectSpec {
        serde_json::from_value(serde_json::json!({
            "scaleTargetRef": {"name": "worker"},
            "minReplicaCount": min, "maxReplicaCount": max, "idleReplicaCount": idle,
            "triggers": [{"type": "metrics-api", "metadata": {}}]
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_kedas() {
        let s: ScaledObjectSpec = serde_json::from_value(serde_json::json!({
            "scaleTargetRef": {"name": "w"}, "triggers": [{"type": "kafka", "metadata": {}}]
        }))
        .unwrap();
        assert_eq!(
            (s.polling_interval, s.cooldown_period, s.initial_cooldown_period),
            (30, 300, 0)
        );
        assert_eq!(
            (s.min_replica_count, s.max_replica_count, s.idle_replica_count),
            (0, 100, None)
        );
        assert_eq!(s.triggers[0].metric_type, MetricType::AverageValue);
        assert!(!s.triggers[0].use_cached_metrics);
        assert!(validate_spec(&s).is_empty());
    }

    #[test]
    fn min_above_max_names_the_field() {
        let errors = validate_spec(&spec(5, 2, None));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.minReplicaCount");
    }

    #[test]
    fn idle_must_be_below_min() {
        assert_eq!(
            validate_spec(&spec(0, 3, Some(0)))[0].field,
            "spec.idleReplicaCount"
        );
        assert!(validate_spec(&spec(1, 3, Some(0))).is_empty());
    }

    #[test]
    fn duplicate_trigger_names_are_rejected() {
        let mut s = spec(0, 3, None);
        let mut t: Trigger = s.triggers[0].clone();
        t.name = Some("a".into());
        s.triggers = vec![t.clone(), t];
        assert_eq!(validate_spec(&s)[0].field, "spec.triggers[1].name");
    }

    #[test]
    fn fallback_is_accepted_on_value_triggers() {
        // Unlike KEDA, which rejects it: ebb serves target × fallback / replicas for a Value
        // trigger in fallback, which holds the HPA at exactly the fallback count.
        for behavior in [FallbackBehavior::Static, FallbackBehavior::CurrentReplicas] {
            let mut s = spec(0, 3, None);
            s.triggers[0].metric_type = MetricType::Value;
            s.fallback = Some(Fallback {
                failure_threshold: 3,
                replicas: 2,
                behavior,
            });
            assert!(validate_spec(&s).is_empty(), "{behavior:?}");
        }
    }

    proptest! {
        // The Rust rules agree with the CEL rules for every min/max/idle combination.
        #[test]
        fn rust_rules_match_cel_rules(min in 0i32..20, max in 1i32..20, idle in proptest::option::of(0i32..20)) {
            let cel_ok = min <= max && idle.is_none_or(|i| i < min);
            prop_assert_eq!(validate_spec(&spec(min, max, idle)).is_empty(), cel_ok);
        }
    }
}
