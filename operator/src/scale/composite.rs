//! `advanced.scalingModifiers`: the triggers' values combined by the formula into the one metric
//! the HPA reads (`composite-metric`), and the object's activity taken from it. Pure: the loop
//! and the metrics adapter hand in what the triggers said, and get the composite back.
//!
//! KEDA's rules, from `pkg/scaling/modifiers` and `pkg/fallback`:
//! - each trigger's value is bound to its `name`; the object is active when the result is
//!   strictly above `activationTarget`;
//! - a failing trigger makes the composite unknown (the HPA holds, ebb never scales to zero on
//!   it), except under `fallback.behavior: scalingModifiers` once the trigger has failed
//!   `failureThreshold` polls in a row: it is then nil in the formula (`a ?? b` uses `b`);
//! - a nil result is `fallback.replicas` (× `target`, so the HPA computes `replicas`); without a
//!   fallback it is an error;
//! - an evaluation error (a division by zero, a nil in arithmetic) is like a failing trigger.

use ebb_crds::formula::{Formula, FormulaError, binding_names};
use ebb_crds::{Fallback, FallbackBehavior, MetricType, ScaledObjectSpec};

use crate::scale::decision::{Observation, PollResult, TickMemory, TriggerState};

/// The compiled `scalingModifiers` of a ScaledObject.
#[derive(Debug, Clone, PartialEq)]
pub struct Composite {
    /// The formula, its values bound in the loop's trigger order.
    pub formula: Formula,
    /// `target`.
    pub target: f64,
    /// `activationTarget`.
    pub activation: f64,
    /// `metricType`.
    pub metric_type: MetricType,
}

/// Why a spec's `scalingModifiers` cannot be used (`validate_spec` reports the same problems
/// with their field; this is for callers that compile without validating first).
#[derive(Debug, thiserror::Error)]
pub enum CompositeError {
    /// The formula does not compile.
    #[error("spec.advanced.scalingModifiers.formula: {0}")]
    Formula(#[from] FormulaError),
    /// `target` or `activationTarget` is not a number.
    #[error("spec.advanced.scalingModifiers.{field}: not a usable number: {value:?}")]
    Number {
        /// `target` or `activationTarget`.
        field: &'static str,
        /// As written.
        value: String,
    },
}

impl Composite {
    /// Compiles `spec`'s `scalingModifiers` for the triggers `used` (indices into
    /// `spec.triggers`, in the loop's order); `None` without scalingModifiers.
    pub fn from_spec(spec: &ScaledObjectSpec, used: &[usize]) -> Option<Result<Composite, CompositeError>> {
        let m = spec.advanced.as_ref()?.scaling_modifiers.as_ref()?;
        let all = binding_names(&spec.triggers);
        let names: Vec<&str> = used.iter().map(|i| all.get(*i).copied().unwrap_or("")).collect();
        let number = |field: &'static str, value: &str| {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| CompositeError::Number {
                    field,
                    value: value.to_string(),
                })
        };
        Some((|| {
            Ok(Composite {
                formula: Formula::compile(&m.formula, &names)?,
                target: number("target", &m.target)?,
                activation: number("activationTarget", &m.activation_target)?,
                metric_type: m.metric_type,
            })
        })())
    }
}

/// What one trigger said, as the composite sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input<'a> {
    /// The source answered.
    Value(f64),
    /// The source failed; `failures` polls in a row so far (this one included).
    Failed {
        /// The trigger's metric name, for the message.
        metric: &'a str,
        /// Consecutive failed polls.
        failures: u32,
    },
    /// Not sampled (paused).
    Skipped,
}

/// The composite of one poll.
#[derive(Debug, Clone, PartialEq)]
pub enum CompositeValue {
    /// The formula's result.
    Value {
        /// The value the HPA reads.
        value: f64,
        /// Whether a failing trigger was replaced by nil to get it (the value then stands in for
        /// a fallback: the adapter keeps serving it when a refresh fails).
        substituted: bool,
    },
    /// The formula gave nil and a fallback is configured: `fallback.replicas` apply.
    NilFallback,
    /// No value: a trigger failed (and is not substituted), or the evaluation failed.
    Failed(String),
    /// Not evaluated (paused).
    Skipped,
}

impl CompositeValue {
    /// The value compared with `activationTarget`: the result, or `fallback.replicas × target`
    /// for a nil result (what KEDA serves then); `None` when there is none.
    pub fn activation_value(&self, c: &Composite, fallback: Option<&Fallback>) -> Option<f64> {
        match self {
            CompositeValue::Value { value, .. } => Some(*value),
            CompositeValue::NilFallback => fallback.map(|f| f64::from(f.replicas.max(0)) * c.target),
            CompositeValue::Failed(_) | CompositeValue::Skipped => None,
        }
    }

    /// Whether the object is active: the value strictly above `activationTarget`.
    pub fn is_active(&self, c: &Composite, fallback: Option<&Fallback>) -> Option<bool> {
        self.activation_value(c, fallback).map(|v| v > c.activation)
    }
}

/// Whether a trigger failing for `failures` polls is nil in the formula.
fn substituted(fallback: Option<&Fallback>, failures: u32) -> bool {
    fallback.is_some_and(|f| {
        f.behavior == FallbackBehavior::ScalingModifiers && failures >= f.failure_threshold.max(1) as u32
    })
}

/// Evaluates the formula over one poll's `inputs` (in the loop's trigger order).
pub fn evaluate(c: &Composite, inputs: &[Input<'_>], fallback: Option<&Fallback>) -> CompositeValue {
    let mut values = Vec::with_capacity(inputs.len());
    let mut any_substituted = false;
    for input in inputs {
        match *input {
            Input::Skipped => return CompositeValue::Skipped,
            Input::Value(v) => values.push(Some(v)),
            Input::Failed { failures, .. } if substituted(fallback, failures) => {
                any_substituted = true;
                values.push(None);
            }
            Input::Failed { metric, .. } => {
                return CompositeValue::Failed(format!("trigger {metric} failing"));
            }
        }
    }
    match c.formula.evaluate(&values) {
        Ok(Some(value)) => CompositeValue::Value {
            value,
            substituted: any_substituted,
        },
        Ok(None) if fallback.is_some() => CompositeValue::NilFallback,
        Ok(None) => CompositeValue::Failed("the formula gave nil and no fallback is configured".into()),
        Err(e) => CompositeValue::Failed(format!("formula: {e}")),
    }
}

/// The composite of this poll (the trigger memories already count this poll's failures).
pub(crate) fn composite_of(obs: &Observation<'_>, c: &Composite, memory: &TickMemory) -> CompositeValue {
    let inputs: Vec<Input<'_>> = obs
        .triggers
        .iter()
        .zip(&memory.triggers)
        .map(|(poll, mem)| match &poll.result {
            PollResult::Sampled { value, .. } => Input::Value(*value),
            PollResult::Failed(_) => Input::Failed {
                metric: poll.metric_name,
                failures: mem.failures,
            },
            PollResult::Skipped => Input::Skipped,
        })
        .collect();
    evaluate(c, &inputs, obs.spec.fallback.as_ref())
}

/// The object's state from the composite: active above `activationTarget`, failed without a value.
pub(crate) fn composite_state(
    c: &Composite,
    value: &CompositeValue,
    fallback: Option<&Fallback>,
) -> Option<TriggerState> {
    match value {
        CompositeValue::Skipped => None,
        CompositeValue::Failed(_) => Some(TriggerState::Failed),
        _ => Some(match value.is_active(c, fallback) {
            Some(true) => TriggerState::Active,
            _ => TriggerState::Inactive,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spec(formula: &str, fallback: Option<(&str, i32)>) -> ScaledObjectSpec {
        serde_json::from_value(json!({
            "scaleTargetRef": {"name": "w"},
            "advanced": {"scalingModifiers": {"formula": formula, "target": "5", "activationTarget": "2"}},
            "fallback": fallback.map(|(b, replicas)| json!({"failureThreshold": 2, "replicas": replicas, "behavior": b})),
            "triggers": [{"type": "rabbitmq", "name": "a", "metadata": {}},
                         {"type": "rabbitmq", "name": "b", "metadata": {}}]
        }))
        .unwrap()
    }

    fn compiled(s: &ScaledObjectSpec) -> Composite {
        Composite::from_spec(s, &[0, 1]).unwrap().unwrap()
    }

    fn failed(failures: u32) -> Input<'static> {
        Input::Failed {
            metric: "s0-rabbitmq-q",
            failures,
        }
    }

    #[test]
    fn the_formula_combines_the_triggers_and_decides_activity() {
        let s = spec("(a + b) / 2", None);
        let c = compiled(&s);
        assert_eq!(
            (c.target, c.activation, c.metric_type),
            (5.0, 2.0, MetricType::AverageValue)
        );
        let v = evaluate(&c, &[Input::Value(30.0), Input::Value(10.0)], None);
        assert_eq!(
            v,
            CompositeValue::Value {
                value: 20.0,
                substituted: false
            }
        );
        assert_eq!(v.is_active(&c, None), Some(true));
        let v = evaluate(&c, &[Input::Value(2.0), Input::Value(2.0)], None);
        assert_eq!(
            v.is_active(&c, None),
            Some(false),
            "activation is strictly above 2"
        );
        // The order of `used` binds the names: trigger 1 first.
        let swapped = Composite::from_spec(&spec("a - b", None), &[1, 0])
            .unwrap()
            .unwrap();
        let v = evaluate(&swapped, &[Input::Value(1.0), Input::Value(10.0)], None);
        assert_eq!(v.activation_value(&swapped, None), Some(9.0));
    }

    #[test]
    fn a_failing_trigger_or_evaluation_is_unknown_not_zero() {
        let c = compiled(&spec("a + b", None));
        let v = evaluate(&c, &[Input::Value(3.0), failed(5)], None);
        assert_eq!(v, CompositeValue::Failed("trigger s0-rabbitmq-q failing".into()));
        assert_eq!(v.is_active(&c, None), None);
        let c = compiled(&spec("a / b", None));
        let v = evaluate(&c, &[Input::Value(3.0), Input::Value(0.0)], None);
        assert_eq!(v, CompositeValue::Failed("formula: division by zero".into()));
        // Another fallback behavior does not substitute: the replica fallback handles it.
        let s = spec("a ?? b", Some(("static", 4)));
        let v = evaluate(
            &compiled(&s),
            &[failed(9), Input::Value(1.0)],
            s.fallback.as_ref(),
        );
        assert!(matches!(v, CompositeValue::Failed(_)));
        assert_eq!(
            evaluate(&c, &[Input::Skipped, Input::Value(1.0)], None),
            CompositeValue::Skipped
        );
    }

    #[test]
    fn the_scaling_modifiers_fallback_substitutes_after_the_threshold() {
        let s = spec("a ?? b ?? 8", Some(("scalingModifiers", 4)));
        let (c, f) = (compiled(&s), s.fallback.as_ref());
        // Below failureThreshold (2) the failure is an error, as KEDA's.
        assert!(matches!(
            evaluate(&c, &[failed(1), Input::Value(3.0)], f),
            CompositeValue::Failed(_)
        ));
        assert_eq!(
            evaluate(&c, &[failed(2), Input::Value(3.0)], f),
            CompositeValue::Value {
                value: 3.0,
                substituted: true
            }
        );
        assert_eq!(
            evaluate(&c, &[failed(2), failed(3)], f).activation_value(&c, f),
            Some(8.0)
        );
        // A nil result means fallback.replicas: 4 × target 5 = 20 for the HPA.
        let s = spec("a ?? b", Some(("scalingModifiers", 4)));
        let (c, f) = (compiled(&s), s.fallback.as_ref());
        let v = evaluate(&c, &[failed(2), failed(2)], f);
        assert_eq!(v, CompositeValue::NilFallback);
        assert_eq!(v.activation_value(&c, f), Some(20.0));
        // A nil used in arithmetic is an evaluation error, not a number.
        let s = spec("a + b", Some(("scalingModifiers", 4)));
        let v = evaluate(
            &compiled(&s),
            &[failed(2), Input::Value(1.0)],
            s.fallback.as_ref(),
        );
        assert!(matches!(v, CompositeValue::Failed(e) if e.contains("nil")));
    }

    #[test]
    fn bad_numbers_and_formulas_are_errors_with_their_field() {
        let mut s = spec("a + c", None);
        let e = Composite::from_spec(&s, &[0, 1]).unwrap().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("spec.advanced.scalingModifiers.formula: \"c\""),
            "{e}"
        );
        s = spec("a", None);
        if let Some(m) = s.advanced.as_mut().and_then(|a| a.scaling_modifiers.as_mut()) {
            m.target = "x".into();
        }
        let e = Composite::from_spec(&s, &[0, 1]).unwrap().unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.advanced.scalingModifiers.target: not a usable number: \"x\""
        );
        s.advanced = None;
        assert!(Composite::from_spec(&s, &[0]).is_none());
    }

    proptest! {
        /// Whatever the triggers say, the composite is a finite number, a nil fallback, a
        /// failure or skipped: never a NaN/∞ and never a number when a trigger failed unsubstituted.
        #[test]
        fn never_a_value_from_an_unsubstituted_failure(
            a in proptest::option::of(-1e9f64..1e9), b in proptest::option::of(-1e9f64..1e9),
            failures in 0u32..4, formula in prop::sample::select(vec!["a + b", "a / b", "a ?? b", "max(a, b) ** 2", "a > b ? a : b"]),
        ) {
            let s = spec(formula, Some(("scalingModifiers", 3)));
            let c = compiled(&s);
            let input = |v: Option<f64>| v.map_or(failed(failures), Input::Value);
            let v = evaluate(&c, &[input(a), input(b)], s.fallback.as_ref());
            let any_failed = a.is_none() || b.is_none();
            match v {
                CompositeValue::Value { value, substituted } => {
                    prop_assert!(value.is_finite());
                    prop_assert_eq!(substituted, any_failed);
                    prop_assert!(!any_failed || failures >= 2);
                }
                CompositeValue::NilFallback => prop_assert!(any_failed && failures >= 2),
                CompositeValue::Failed(_) => {}
                CompositeValue::Skipped => prop_assert!(false, "nothing was skipped"),
            }
        }
    }
}
