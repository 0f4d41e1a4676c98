//! Cross-field spec rules: the CRD's CEL rules, plus the ones no schema can state, checked in Rust.
//!
//! Not every cluster evaluates CEL (`x-kubernetes-validations` needs Kubernetes ≥ 1.25), and
//! `ebb validate` runs with no cluster at all, so the operator and the CLI both call [`validate_spec`]
//! (ScaledObject) and [`validate_scaled_job_spec`] (ScaledJob).

use std::collections::BTreeSet;
use std::fmt;

use crate::{FallbackBehavior, JobScalingStrategy, ScaledJobSpec, ScaledObjectSpec, Trigger};

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

/// `minReplicaCount` above `maxReplicaCount` (the rule ScaledObjects and ScaledJobs share).
fn min_above_max(min: i32, max: i32) -> Option<FieldError> {
    (min > max).then(|| {
        FieldError::new(
            "spec.minReplicaCount",
            format!("minReplicaCount ({min}) must be less than or equal to maxReplicaCount ({max})"),
        )
    })
}

/// Checks the cross-field rules of a ScaledObject spec (the ones a CEL rule or no schema at all
/// expresses). Types, minimums and enums are the schema's job ([`crate::schema_check`]); trigger
/// metadata is checked by the scalers crate.
pub fn validate_spec(spec: &ScaledObjectSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    errors.extend(min_above_max(spec.min_replica_count, spec.max_replica_count));
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
    duplicate_trigger_names(&spec.triggers, &mut errors);
    if let Some(modifiers) = spec.advanced.as_ref().and_then(|a| a.scaling_modifiers.as_ref()) {
        if modifiers.formula.trim().is_empty() {
            errors.push(FieldError::new(
                "spec.advanced.scalingModifiers.formula",
                "must not be empty",
            ));
        } else if let Some(Err(e)) = crate::formula::compile_spec(spec) {
            errors.push(FieldError::new(
                "spec.advanced.scalingModifiers.formula",
                e.to_string(),
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
    } else if spec
        .fallback
        .as_ref()
        .is_some_and(|f| f.behavior == FallbackBehavior::ScalingModifiers)
    {
        errors.push(FieldError::new(
            "spec.fallback.behavior",
            "scalingModifiers needs advanced.scalingModifiers.formula",
        ));
    }
    errors
}

/// Checks the cross-field rules of a ScaledJob spec: the CRD's CEL rules (minReplicaCount ≤
/// maxReplicaCount; with the custom strategy, customScalingRunningJobPercentage is a number in
/// [0, 1]) and unique trigger names. Types, minimums and enums are the schema's job.
pub fn validate_scaled_job_spec(spec: &ScaledJobSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    errors.extend(min_above_max(spec.min_replica_count, spec.max_replica_count));
    let strategy = &spec.scaling_strategy;
    if strategy.strategy == JobScalingStrategy::Custom
        && let Some(text) = &strategy.custom_scaling_running_job_percentage
        && parse_fraction(text).is_none()
    {
        errors.push(FieldError::new(
            "spec.scalingStrategy.customScalingRunningJobPercentage",
            format!("must be a number between 0 and 1 when the strategy is custom, got {text:?}"),
        ));
    }
    duplicate_trigger_names(&spec.triggers, &mut errors);
    errors
}

/// A decimal number in [0, 1] written as text, as the CRD's CEL rule accepts it: an optional
/// sign, digits with an optional point, an optional exponent; no spaces, `inf` or `NaN`.
pub fn parse_fraction(text: &str) -> Option<f64> {
    let decimal = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'));
    let value: f64 = text.parse().ok().filter(|_| decimal)?;
    (0.0..=1.0).contains(&value).then_some(value)
}

fn duplicate_trigger_names(triggers: &[Trigger], errors: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (i, t) in triggers.iter().enumerate() {
        if let Some(name) = &t.name
            && !names.insert(name.as_str())
        {
            errors.push(FieldError::new(
                format!("spec.triggers[{i}].name"),
                format!("trigger name {name:?} is used twice"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fallback, FallbackBehavior, Trigger};
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
        assert_eq!(s.triggers[0].metric_type, crate::TriggerMetricType::AverageValue);
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
            s.triggers[0].metric_type = crate::TriggerMetricType::Value;
            s.fallback = Some(Fallback {
                failure_threshold: 3,
                replicas: 2,
                behavior,
            });
            assert!(validate_spec(&s).is_empty(), "{behavior:?}");
        }
    }

    fn modifiers(formula: &str, behavior: Option<FallbackBehavior>) -> ScaledObjectSpec {
        serde_json::from_value(serde_json::json!({
            "scaleTargetRef": {"name": "worker"},
            "advanced": {"scalingModifiers": {"formula": formula, "target": "5"}},
            "fallback": behavior.map(|b| serde_json::json!({"failureThreshold": 3, "replicas": 2, "behavior": b})),
            "triggers": [{"type": "rabbitmq", "name": "a", "metadata": {}},
                         {"type": "nats-jetstream", "name": "b", "metadata": {}}]
        }))
        .unwrap()
    }

    #[test]
    fn the_formula_is_compiled_against_the_trigger_names() {
        assert!(validate_spec(&modifiers("(a + b) / 2", None)).is_empty());
        assert!(
            validate_spec(&modifiers(
                "a ?? b ?? 8",
                Some(FallbackBehavior::ScalingModifiers)
            ))
            .is_empty()
        );
        let errors = validate_spec(&modifiers("a + c", None));
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "spec.advanced.scalingModifiers.formula: \"c\" is not the name of a trigger (triggers: a, b)"
        );
        let errors = validate_spec(&modifiers("(a + ", None));
        assert_eq!(errors[0].field, "spec.advanced.scalingModifiers.formula");
        assert!(
            errors[0].message.starts_with("syntax error at character 6"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn the_scaling_modifiers_fallback_needs_a_formula() {
        let mut s = spec(0, 3, None);
        s.fallback = Some(Fallback {
            failure_threshold: 3,
            replicas: 2,
            behavior: FallbackBehavior::ScalingModifiers,
        });
        assert_eq!(validate_spec(&s)[0].field, "spec.fallback.behavior");
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

#[cfg(test)]
mod scaled_job_tests {
    use super::*;
    use proptest::prelude::*;

    fn job_spec(min: i32, max: i32, strategy: &str, percentage: Option<&str>) -> ScaledJobSpec {
        serde_json::from_value(serde_json::json!({
            "jobTargetRef": {"template": {"spec": {"containers": [{"name": "c"}]}}},
            "minReplicaCount": min, "maxReplicaCount": max,
            "scalingStrategy": {"strategy": strategy, "customScalingRunningJobPercentage": percentage},
            "triggers": [{"type": "rabbitmq", "metadata": {}}]
        }))
        .unwrap()
    }

    #[test]
    fn min_above_max_names_the_field() {
        let errors = validate_scaled_job_spec(&job_spec(5, 2, "default", None));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.minReplicaCount");
        assert!(validate_scaled_job_spec(&job_spec(2, 2, "default", None)).is_empty());
    }

    #[test]
    fn the_running_job_percentage_is_checked_only_for_custom() {
        for good in ["0", "1", "0.5", "1.0", ".25", "5e-1", "+0.5"] {
            assert!(
                validate_scaled_job_spec(&job_spec(0, 5, "custom", Some(good))).is_empty(),
                "{good}"
            );
        }
        for bad in ["1.5", "-0.1", "half", "", " 0.5", "NaN", "inf", "0x1"] {
            let errors = validate_scaled_job_spec(&job_spec(0, 5, "custom", Some(bad)));
            assert_eq!(
                errors[0].field, "spec.scalingStrategy.customScalingRunningJobPercentage",
                "{bad}"
            );
        }
        // KEDA ignores it under the other strategies, and so does ebb.
        assert!(validate_scaled_job_spec(&job_spec(0, 5, "accurate", Some("half"))).is_empty());
    }

    #[test]
    fn duplicate_trigger_names_are_rejected() {
        let mut s = job_spec(0, 5, "default", None);
        let mut t = s.triggers[0].clone();
        t.name = Some("q".into());
        s.triggers = vec![t.clone(), t];
        assert_eq!(validate_scaled_job_spec(&s)[0].field, "spec.triggers[1].name");
    }

    proptest! {
        // Any text never panics the percentage check, and what passes is a fraction.
        #[test]
        fn fractions_are_in_range(text in ".{0,12}") {
            if let Some(v) = parse_fraction(&text) {
                prop_assert!((0.0..=1.0).contains(&v));
            }
        }
        // A number written in decimal passes exactly when it is in [0, 1].
        #[test]
        fn decimal_numbers_pass_when_in_range(v in -2.0f64..2.0) {
            prop_assert_eq!(parse_fraction(&v.to_string()).is_some(), (0.0..=1.0).contains(&v));
        }
    }
}
