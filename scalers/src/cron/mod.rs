//! The `cron` trigger: `desiredReplicas` while a window given by two cron expressions is open,
//! 0 otherwise, in an IANA time zone. No server: the value is a pure function of the
//! configuration and the clock ([`window::window_at`]).
//!
//! [`spec`] reads the expressions (robfig/cron's five-field grammar, as KEDA), [`window`] decides
//! the state at an instant, [`scaler`] samples the clock and runs the activity timer. Time zones
//! come from the IANA database bundled into the binary (the image has no `/usr/share/zoneinfo`).

pub mod scaler;
pub mod spec;
pub mod window;

use std::sync::{Arc, OnceLock};

use jiff::tz::{TimeZone, TimeZoneDatabase};

pub use scaler::{Clock, CronScaler, SystemClock};
pub use spec::{CronSpec, SpecError};
pub use window::{CronWindow, WindowState, window_at};

use crate::params::{ConfigErrors, DeclDocs, Param, ParamError, ParsedParams, ScalerDecl, Thresholds};

/// The longest time zone name accepted.
const MAX_ZONE_LEN: usize = 64;

/// Every parameter of the cron trigger.
pub static PARAMS: &[Param] = &[
    Param::string("timezone")
        .required()
        .doc("IANA time zone whose wall clock `start` and `end` read, e.g. `Europe/Berlin` or `Etc/UTC`."),
    Param::string("start").required().doc(
        "Five-field cron expression (minute hour day-of-month month day-of-week) at which the window opens.",
    ),
    Param::string("end")
        .required()
        .doc("Five-field cron expression at which the window closes."),
    Param::int("desiredReplicas")
        .required()
        .min(1.0)
        .doc("Replicas while the window is open (the metric's value, at the HPA target 1); 0 outside it."),
];

/// The cron trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "cron",
    params: PARAMS,
    rules: &[],
    check,
    metric_detail,
    thresholds,
    warnings: crate::params::no_warnings,
    docs: DeclDocs {
        summary: "Scales to `desiredReplicas` while a window given by two cron expressions is open, and to 0 (or `minReplicaCount`) outside it.",
        checks: &[
            "`timezone` must name a zone of the IANA time zone database (bundled into ebb).",
            "`start` and `end` must be five-field cron expressions as robfig/cron's standard parser reads them (`*`, `?`, numbers, `jan`–`dec`, `sun`–`sat`, ranges, steps, lists; no `@daily`, no seconds field, no `CRON_TZ=` prefix), and must fire on some day.",
            "`start` and `end` must not be the same schedule.",
            "The window is open when the next `end` comes no later than the next `start`: it may cross midnight, and a `start` and an `end` at the same instant close it.",
        ],
        example_metadata: &[
            ("timezone", "Europe/Berlin"),
            ("start", "0 8 * * 1-5"),
            ("end", "0 18 * * 1-5"),
            ("desiredReplicas", "5"),
        ],
        example_auth: &[],
        keda_differences: &[
            "A wall-clock time that a spring-forward skips fires at the transition, and one that a fall-back repeats fires once; robfig/cron skips the former, so KEDA's window stays open (or closed) for a whole day around it.",
            "An unknown `timezone`, an expression that never fires (`0 0 30 2 *`), a `desiredReplicas` below 1 and two expressions written differently for the same schedule are refused when the trigger is parsed; KEDA fails at every poll, reports a negative value, or keeps the window open for good.",
            "`CRON_TZ=` prefixes and `timezone: Local` are refused: the zone is always `timezone`.",
            "The window opening or closing wakes the object at once (a timer), not at its next poll.",
        ],
    },
};

/// The IANA time zone database bundled into ebb, read once.
fn database() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// The time zone named `name`, from the bundled database (never the host's).
pub fn time_zone(name: &str) -> Result<TimeZone, ConfigProblem> {
    let unknown = || ConfigProblem::UnknownZone(name.chars().take(MAX_ZONE_LEN).collect());
    if name.is_empty() || name.len() > MAX_ZONE_LEN || name.eq_ignore_ascii_case("local") {
        return Err(unknown());
    }
    database().get(name).map_err(|_| unknown())
}

/// One reason the parsed parameters make no [`CronWindow`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A parameter has no value (e.g. still unresolved).
    #[error("{0} has no value")]
    Missing(&'static str),
    /// The zone is not in the database.
    #[error("unknown time zone {0:?}: name one of the IANA database, e.g. Europe/Berlin")]
    UnknownZone(String),
    /// An expression does not parse.
    #[error("{error}")]
    Expression {
        /// `start` or `end`.
        param: &'static str,
        /// Why.
        error: SpecError,
    },
    /// An expression matches no calendar day.
    #[error("never fires (no day of the year matches)")]
    NeverFires(&'static str),
    /// `start` and `end` are the same schedule.
    #[error("start and end are the same schedule, so the window would never open")]
    SameSchedule,
}

impl ConfigProblem {
    /// The parameter the problem is about.
    pub fn param(&self) -> &'static str {
        match self {
            Self::Missing(p) | Self::NeverFires(p) => p,
            Self::Expression { param, .. } => param,
            Self::UnknownZone(_) => "timezone",
            Self::SameSchedule => "end",
        }
    }
}

impl TryFrom<&ParsedParams> for CronWindow {
    type Error = ConfigErrors<ConfigProblem>;

    fn try_from(p: &ParsedParams) -> Result<Self, Self::Error> {
        let mut problems = Vec::new();
        let tz = match p.str("timezone") {
            Some(name) => time_zone(name).map_err(|e| problems.push(e)).ok(),
            None => {
                problems.push(ConfigProblem::Missing("timezone"));
                None
            }
        };
        let mut expression = |param: &'static str| match p.str(param).map(CronSpec::parse) {
            Some(Ok(spec)) if spec.fires_on_some_day() => Some(spec),
            Some(Ok(_)) => {
                problems.push(ConfigProblem::NeverFires(param));
                None
            }
            Some(Err(error)) => {
                problems.push(ConfigProblem::Expression { param, error });
                None
            }
            None => {
                problems.push(ConfigProblem::Missing(param));
                None
            }
        };
        let (start, end) = (expression("start"), expression("end"));
        if start.is_some() && start == end {
            problems.push(ConfigProblem::SameSchedule);
        }
        let desired_replicas = p.int("desiredReplicas");
        if desired_replicas.is_none() {
            problems.push(ConfigProblem::Missing("desiredReplicas"));
        }
        match (tz, start, end, desired_replicas) {
            (Some(tz), Some(start), Some(end), Some(desired_replicas)) if problems.is_empty() => Ok(Self {
                tz,
                start,
                end,
                desired_replicas,
            }),
            _ => Err(ConfigErrors {
                trigger_type: "cron",
                problems,
            }),
        }
    }
}

fn check(p: &ParsedParams) -> Vec<ParamError> {
    match CronWindow::try_from(p) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .iter()
            // A value still unresolved offline is not a problem of the trigger.
            .filter(|problem| !matches!(problem, ConfigProblem::Missing(_)))
            .map(|problem| ParamError::new(problem.param(), problem.to_string()))
            .collect(),
    }
}

/// The HPA target is 1, so the HPA's replica count is the value: `desiredReplicas` in the window.
fn thresholds(_: &ParsedParams) -> Thresholds {
    Thresholds {
        target: 1.0,
        activation: 0.0,
    }
}

/// KEDA's metric name detail: `cron-<zone>-<start>-<end>`, spaces removed, `*` as `x`, `/` as
/// `Sl`, `?` as `Qm`, `,` as `Cm`.
fn metric_detail(p: &ParsedParams) -> String {
    let squash = |s: &str| {
        s.replace(' ', "")
            .replace('*', "x")
            .replace('/', "Sl")
            .replace('?', "Qm")
            .replace(',', "Cm")
    };
    format!(
        "cron-{}-{}-{}",
        p.str("timezone").unwrap_or_default(),
        squash(p.str("start").unwrap_or_default()),
        squash(p.str("end").unwrap_or_default())
    )
}

/// Builds a cron scaler on the system clock (see [`crate::registry`]).
pub fn build(
    _factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<Arc<dyn crate::Scaler>, crate::ScalerError> {
    let window = CronWindow::try_from(&trigger.params)?;
    Ok(Arc::new(CronScaler::new(
        window,
        Arc::new(SystemClock),
        trigger.thresholds.target,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_meta;

    const VALID: &[(&str, &str)] = &[
        ("timezone", "Etc/UTC"),
        ("start", "0 0 * * Thu"),
        ("end", "59 23 * * Thu"),
        ("desiredReplicas", "10"),
    ];

    fn with(changes: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut meta: Vec<(&str, &str)> = VALID
            .iter()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
            .copied()
            .collect();
        meta.extend(changes.iter().filter(|(_, v)| !v.is_empty()));
        meta
    }

    #[test]
    fn keda_parse_table() {
        let ok: &[&[(&str, &str)]] = &[
            VALID,
            &with(&[("start", "0 */2 * * *"), ("end", "0 1-23/2 * * *")]),
            &with(&[("start", "0,30 * * * *"), ("end", "15,45 * * * *")]),
            &with(&[
                ("timezone", "Asia/Kolkata"),
                ("start", "30-33 * * * *"),
                ("end", "45 * * * *"),
            ]),
            &with(&[
                ("timezone", "Asia/Kolkata"),
                ("start", "30 * * * *"),
                ("end", "45-50 * * * *"),
            ]),
            &with(&[("timezone", "america/new_york")]),
        ];
        for meta in ok {
            let p = parse_meta(&DECL, meta).unwrap_or_else(|e| panic!("{meta:?}: {e:?}"));
            let w = CronWindow::try_from(&p).unwrap();
            assert!(w.desired_replicas >= 1);
        }
        // (metadata, the parameter named, a word of the message)
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let bad: &[Case] = &[
            (vec![], "timezone", "required"),
            (with(&[("desiredReplicas", "")]), "desiredReplicas", "required"),
            (with(&[("timezone", "")]), "timezone", "required"),
            (with(&[("start", "-30 * * * *")]), "start", "negative"),
            (with(&[("end", "-50 * * * *")]), "end", "negative"),
            (with(&[("end", "50 * * -3 *")]), "end", "negative"),
            (
                with(&[("start", "30 * * * *"), ("end", "30 * * * *")]),
                "end",
                "same schedule",
            ),
            (
                with(&[("start", "30 * * * *"), ("end", "30  *  * * ?")]),
                "end",
                "same schedule",
            ),
            (with(&[("desiredReplicas", "0")]), "desiredReplicas", ""),
            (with(&[("desiredReplicas", "-2")]), "desiredReplicas", ""),
            (with(&[("desiredReplicas", "two")]), "desiredReplicas", ""),
            (
                with(&[("timezone", "Mars/Olympus")]),
                "timezone",
                "unknown time zone",
            ),
            (with(&[("timezone", "Local")]), "timezone", "unknown time zone"),
            (with(&[("start", "@daily")]), "start", "descriptors"),
            (with(&[("start", "0 0 30 2 *")]), "start", "never fires"),
            (with(&[("end", "0 0 * * * *")]), "end", "exactly 5 fields"),
        ];
        for (meta, param, word) in bad {
            let errors = parse_meta(&DECL, meta).unwrap_err();
            assert_eq!(errors[0].param, *param, "{meta:?}: {errors:?}");
            let text = errors[0].to_string();
            assert!(text.contains(word), "{meta:?}: {text}");
        }
    }

    #[test]
    fn metric_names_follow_keda() {
        let name = |meta: &[(&str, &str)], index| {
            let p = parse_meta(&DECL, meta).unwrap();
            crate::metric_name::metric_name(index, &metric_detail(&p))
        };
        // KEDA's names, lower-cased as the API server and ebb have them.
        assert_eq!(name(VALID, 0), "s0-cron-etc-utc-00xxthu-5923xxthu");
        assert_eq!(
            name(&with(&[("start", "0 */2 * * *"), ("end", "0 1-23/2 * * *")]), 1),
            "s1-cron-etc-utc-0xsl2xxx-01-23sl2xxx"
        );
        assert_eq!(
            name(&with(&[("start", "0,30 * * * *"), ("end", "15,45 * * * *")]), 2),
            "s2-cron-etc-utc-0cm30xxxx-15cm45xxxx"
        );
    }

    #[test]
    fn the_zone_database_is_bundled() {
        // The same zones resolve whatever the host has in /usr/share/zoneinfo.
        for zone in [
            "Europe/Berlin",
            "America/New_York",
            "Asia/Kolkata",
            "Etc/UTC",
            "UTC",
        ] {
            assert!(time_zone(zone).is_ok(), "{zone}");
        }
        assert!(database().available().count() > 300);
        let long = "A".repeat(1000);
        let e = time_zone(&long).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
    }

    #[tokio::test]
    async fn builds_and_samples() {
        let trigger = crate::parse_trigger(
            0,
            "cron",
            &VALID
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            trigger.thresholds,
            Thresholds {
                target: 1.0,
                activation: 0.0
            }
        );
        let scaler = build(&crate::ScalerFactory::default(), &trigger).unwrap();
        let s = scaler.sample().await.unwrap();
        assert_eq!(s.value, if s.active { 10.0 } else { 0.0 });
        assert!(scaler.activity_changes().is_some());
    }
}
