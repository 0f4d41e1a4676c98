//! [`ConfigErrors`]: every problem found while turning one trigger's parsed parameters into its
//! scaler's typed config, reported at once. Each scaler brings its own problem type (naming the
//! parameter, never quoting a secret); the collection, its text and its conversion into a
//! [`crate::ScalerError`] are written here once.

use std::fmt;

/// Every problem found converting one trigger's parameters, shown as
/// `<trigger type>: <problem>; <problem>…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors<P> {
    /// The trigger type, e.g. `kafka`.
    pub trigger_type: &'static str,
    /// The problems, in the order found (never empty).
    pub problems: Vec<P>,
}

impl<P> ConfigErrors<P> {
    /// `Ok(())` when `problems` is empty, else the error holding them.
    pub fn check(trigger_type: &'static str, problems: Vec<P>) -> Result<(), Self> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self {
                trigger_type,
                problems,
            })
        }
    }
}

impl<P: fmt::Display> fmt::Display for ConfigErrors<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.trigger_type)?;
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl<P: fmt::Debug + fmt::Display> std::error::Error for ConfigErrors<P> {}

impl<P: fmt::Display> From<ConfigErrors<P>> for crate::ScalerError {
    fn from(e: ConfigErrors<P>) -> Self {
        crate::ScalerError::InvalidConfig(e.to_string())
    }
}

/// Records `missing(name)` in `problems` when `value` is `None`; passes `value` through.
pub fn need<T, P>(problems: &mut Vec<P>, value: Option<T>, missing: impl FnOnce() -> P) -> Option<T> {
    if value.is_none() {
        problems.push(missing());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_shown_after_the_type() {
        let e =
            ConfigErrors::check("kafka", vec!["topic has no value", "lagThreshold must be > 0"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kafka: topic has no value; lagThreshold must be > 0"
        );
        let s: crate::ScalerError = e.into();
        assert_eq!(
            s.to_string(),
            "invalid scaler configuration: kafka: topic has no value; lagThreshold must be > 0"
        );
        assert!(ConfigErrors::<&str>::check("kafka", vec![]).is_ok());
    }

    #[test]
    fn need_records_only_what_is_missing() {
        let mut problems = Vec::new();
        assert_eq!(need(&mut problems, Some(3), || "a"), Some(3));
        assert_eq!(need::<i32, _>(&mut problems, None, || "b"), None);
        assert_eq!(problems, ["b"]);
    }
}
