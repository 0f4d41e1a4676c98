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
