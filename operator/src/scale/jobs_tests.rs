use super::*;
use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as _;

fn one(queue: f64) -> Vec<JobReading> {
    vec![JobReading::Value {
        queue_length: queue,
        target: 1.0,
        active: queue > 0.0,
    }]
}

fn policy(max: i64, strategy: Strategy) -> JobPolicy {
    JobPolicy {
        min: 0,
        max,
        strategy,
        calculation: Calculation::Max,
    }
}

fn create(queue: f64, running: i64, pending: i64, max: i64, strategy: Strategy) -> i64 {
    decide_jobs(
        &one(queue),
        JobCounts { running, pending },
        &policy(max, strategy),
        false,
    )
    .create
}

const CUSTOM: Strategy = Strategy::Custom {
    deduction: 1,
    running_percentage: 0.5,
};

// KEDA's own strategy cases (`scale_jobs_test.go`: maxScale, running, pending, max → effective
// max scale), with the queue equal to maxScale and one message per Job, so that the created count
// is the effective max scale. Cases where KEDA reports more pending than running Jobs cannot
// happen (pending Jobs are running ones) and are left out.
#[test]
fn kedas_strategy_examples_hold() {
    let cases: &[(Strategy, f64, i64, i64, i64, i64)] = &[
        (Strategy::Default, 3.0, 2, 0, 5, 1),
        (Strategy::Default, 2.0, 0, 0, 5, 2),
        (CUSTOM, 3.0, 2, 0, 5, 1),
        (CUSTOM, 10.0, 0, 0, 10, 9),
        (Strategy::Accurate, 3.0, 2, 0, 5, 3),
        (Strategy::Accurate, 5.0, 2, 0, 5, 3),
        (Strategy::Accurate, 3.0, 4, 2, 10, 1),
        (Strategy::Accurate, 5.0, 4, 2, 5, 1),
        (Strategy::Accurate, 3.0, 3, 3, 5, 0),
        (Strategy::Accurate, 15.0, 15, 15, 20, 0),
        (Strategy::Accurate, 10.0, 10, 10, 15, 0),
        (Strategy::Accurate, 20.0, 15, 10, 20, 5),
        (Strategy::Eager, 4.0, 3, 0, 10, 4),
        (Strategy::Eager, 4.0, 7, 0, 10, 3),
        (Strategy::Eager, 15.0, 0, 0, 10, 10),
    ];
    for &(strategy, queue, running, pending, max, want) in cases {
        assert_eq!(
            create(queue, running, pending, max, strategy),
            want,
            "{strategy:?} queue {queue} running {running} pending {pending} max {max}"
        );
    }
}

#[test]
fn the_minimum_is_kept_whatever_the_triggers_say() {
    let p = JobPolicy {
        min: 2,
        ..policy(10, Strategy::Default)
    };
    let none = JobCounts::default();
    let d = decide_jobs(&one(0.0), none, &p, false);
    assert_eq!((d.create, d.reason), (2, JobReason::BelowMin));
    let d = decide_jobs(
        &one(0.0),
        JobCounts {
            running: 1,
            pending: 0,
        },
        &p,
        false,
    );
    assert_eq!(d.create, 1);
    // At the minimum, the queue's Jobs come on top of the waiting ones (KEDA: running − min).
    let d = decide_jobs(
        &one(2.0),
        JobCounts {
            running: 2,
            pending: 0,
        },
        &p,
        false,
    );
    assert_eq!((d.create, d.reason), (2, JobReason::Strategy));
    // Even when the triggers fail: the floor is not the trigger's to decide.
    let d = decide_jobs(
        &[JobReading::Failed],
        JobCounts {
            running: 1,
            pending: 0,
        },
        &p,
        false,
    );
    assert_eq!(
        (d.create, d.reason, d.active),
        (1, JobReason::TriggerFailed, None)
    );
}

#[test]
fn ebb_never_runs_more_than_the_max() {
    // KEDA's custom strategy caps at max, not at max − running: 5 running, max 5, queue 5,
    // percentage 0 → KEDA creates 5 more (10 running). ebb creates none.
    let custom0 = Strategy::Custom {
        deduction: 0,
        running_percentage: 0.0,
    };
    let d = decide_jobs(
        &one(5.0),
        JobCounts {
            running: 5,
            pending: 0,
        },
        &policy(5, custom0),
        false,
    );
    assert_eq!((d.create, d.reason), (0, JobReason::CappedAtMax));
    // KEDA's min offset: min 3, max 5, 3 running, queue 5 → default 5 − 0 = 5 → 8 running. ebb: 2.
    let p = JobPolicy {
        min: 3,
        ..policy(5, Strategy::Default)
    };
    let d = decide_jobs(
        &one(5.0),
        JobCounts {
            running: 3,
            pending: 0,
        },
        &p,
        false,
    );
    assert_eq!((d.create, d.reason), (2, JobReason::CappedAtMax));
}

#[test]
fn ebbs_eager_does_not_count_pending_jobs_twice() {
    // 5 running of which 3 pending, max 10, 4 messages: KEDA min(10 − 5 − 3, 4) = 2; ebb fills
    // the 5 free slots up to the 4 the queue wants.
    assert_eq!(create(4.0, 5, 3, 10, Strategy::Eager), 4);
}

#[test]
fn a_failing_trigger_creates_nothing_and_pause_holds_creation() {
    let readings = [
        JobReading::Value {
            queue_length: 50.0,
            target: 1.0,
            active: true,
        },
        JobReading::Failed,
    ];
    let d = decide_jobs(
        &readings,
        JobCounts::default(),
        &policy(10, Strategy::Default),
        false,
    );
    assert_eq!(
        (d.create, d.reason, d.active),
        (0, JobReason::TriggerFailed, Some(true))
    );
    let d = decide_jobs(
        &one(50.0),
        JobCounts::default(),
        &policy(10, Strategy::Default),
        true,
    );
    assert_eq!((d.create, d.reason), (0, JobReason::Paused));
}

#[test]
fn triggers_combine_as_multiple_scalers_calculation_says() {
    let readings = [
        JobReading::Value {
            queue_length: 10.0,
            target: 2.0,
            active: true,
        },
        JobReading::Value {
            queue_length: 4.0,
            target: 1.0,
            active: true,
        },
        JobReading::Value {
            queue_length: 100.0,
            target: 1.0,
            active: false,
        },
    ];
    let with = |calculation| {
        let p = JobPolicy {
            calculation,
            ..policy(20, Strategy::Default)
        };
        let d = decide_jobs(&readings, JobCounts::default(), &p, false);
        (d.queue_length, d.max_scale, d.create)
    };
    // Inactive triggers take no part (the 100 above).
    assert_eq!(with(Calculation::Max), (10, 5, 5));
    assert_eq!(with(Calculation::Min), (4, 4, 4));
    assert_eq!(with(Calculation::Avg), (7, 5, 5)); // (5 + 4) / 2 = 4.5 → 5
    assert_eq!(with(Calculation::Sum), (14, 9, 9));
}

#[test]
fn at_rest_nothing_is_created() {
    let d = decide_jobs(
        &one(0.0),
        JobCounts::default(),
        &policy(10, Strategy::Accurate),
        false,
    );
    assert_eq!(
        (d.create, d.reason, d.active),
        (0, JobReason::Inactive, Some(false))
    );
}

#[test]
fn history_limits_delete_the_oldest_finished_jobs() {
    let finished = vec![
        ("c".to_string(), Some("2026-01-03T00:00:00Z".to_string())),
        ("a".to_string(), Some("2026-01-01T00:00:00Z".to_string())),
        ("x".to_string(), None),
        ("b".to_string(), Some("2026-01-02T00:00:00Z".to_string())),
    ];
    assert_eq!(over_history_limit(&finished, 2), ["x", "a"]);
    assert_eq!(over_history_limit(&finished, 0), ["x", "a", "b", "c"]);
    assert!(over_history_limit(&finished, 4).is_empty());
    assert!(over_history_limit(&finished, 100).is_empty());
}

#[test]
fn a_default_rollout_deletes_only_running_jobs_of_older_generations() {
    let jobs = vec![
        ("old-running".to_string(), false, Some(1)),
        ("old-done".to_string(), true, Some(1)),
        ("current".to_string(), false, Some(2)),
        ("unknown".to_string(), false, None),
    ];
    assert_eq!(superseded(&jobs, 2), ["old-running"]);
    assert!(superseded(&jobs, 1).is_empty());
}

/// KEDA's decision as its code computes it (min 0): the effective max scale and `scaleTo`.
fn keda(strategy: Strategy, max_scale: i64, running: i64, pending: i64, max: i64, queue: i64) -> i64 {
    let (effective, scale_to) = match strategy {
        Strategy::Default => (max_scale - running, queue),
        Strategy::Custom {
            deduction,
            running_percentage,
        } => (
            (max_scale - deduction - (running as f64 * running_percentage) as i64).min(max),
            queue,
        ),
        Strategy::Accurate => {
            if max_scale + running - pending > max {
                (max - running, queue)
            } else {
                (max_scale - pending, queue)
            }
        }
        Strategy::Eager => ((max - running - pending).min(max_scale), max),
    };
    if effective <= 0 {
        0
    } else {
        scale_to.min(effective)
    }
}

fn strategies() -> impl proptest::strategy::Strategy<Value = super::Strategy> {
    prop_oneof![
        Just(Strategy::Default),
        Just(Strategy::Accurate),
        Just(Strategy::Eager),
        (0i64..5, 0.0f64..=1.0).prop_map(|(deduction, running_percentage)| Strategy::Custom {
            deduction,
            running_percentage
        }),
    ]
}

fn readings() -> impl proptest::strategy::Strategy<Value = Vec<JobReading>> {
    proptest::collection::vec(
        prop_oneof![
            4 => (0.0f64..500.0, 0.5f64..20.0, any::<bool>()).prop_map(|(queue_length, target, active)| {
                JobReading::Value { queue_length, target, active }
            }),
            1 => Just(JobReading::Failed),
        ],
        0..4,
    )
}

proptest! {
    #[test]
    fn invariants_hold(
        readings in readings(),
        strategy in strategies(),
        calc in prop_oneof![Just(Calculation::Max), Just(Calculation::Min), Just(Calculation::Avg), Just(Calculation::Sum)],
        max in 0i64..50, min in 0i64..10, running in 0i64..60, pending_share in 0.0f64..=1.0, paused in any::<bool>(),
    ) {
        let pending = (running as f64 * pending_share) as i64;
        let p = JobPolicy { min, max, strategy, calculation: calc };
        let d = decide_jobs(&readings, JobCounts { running, pending }, &p, paused);
        prop_assert!(d.create >= 0);
        // Never more than the max running (nothing is created at or over it).
        prop_assert!(running + d.create <= max.max(running), "{d:?}");
        let floor = (min.min(max) - running).max(0);
        if paused {
            prop_assert_eq!(d.create, 0);
        } else if readings.iter().any(|r| matches!(r, JobReading::Failed)) {
            prop_assert!(d.create <= floor, "a failing trigger created {} Jobs", d.create);
        }
        prop_assert!(d.max_scale <= max.max(0));
        if strategy == Strategy::Accurate && d.reason == JobReason::Strategy {
            prop_assert!(d.create <= (d.max_scale - pending).max(0), "pending Jobs are counted: {d:?}");
        }
    }

    // Where KEDA is right (min 0, no failure, a count KEDA could not push over the max), ebb
    // decides as KEDA does; elsewhere ebb creates at most what KEDA would have, capped at the max.
    #[test]
    fn agrees_with_keda_where_keda_is_right(
        queue in 0.0f64..300.0, target in 0.5f64..10.0,
        strategy in strategies(), max in 1i64..40, running in 0i64..40, pending_share in 0.0f64..=1.0,
    ) {
        let pending = (running as f64 * pending_share) as i64;
        let reading = [JobReading::Value { queue_length: queue, target, active: queue > 0.0 }];
        let d = decide_jobs(&reading, JobCounts { running, pending }, &policy(max, strategy), false);
        let max_scale = ((queue / target).min(max as f64)).ceil() as i64;
        let queue_len = queue.ceil() as i64;
        let theirs = if queue > 0.0 { keda(strategy, max_scale, running, pending, max, queue_len) } else { 0 };
        let room = (max - running).max(0);
        match strategy {
            Strategy::Eager if pending > 0 => prop_assert!(d.create >= theirs.min(room)),
            _ => prop_assert_eq!(d.create, theirs.min(room), "keda {}", theirs),
        }
    }
}
