//! The scale loop's decisions, as pure functions: activation (0→1), scale to idle or zero after the
//! cooldown, fallback, pause precedence and the replica floor. No I/O: the loop feeds in what it
//! observed and writes `/scale` only when [`Decision::write_replicas`] says so.
//!
//! Rules (KEDA's, with its known bugs fixed):
//! 1. `paused-replicas: N` holds N; `paused` freezes replicas. Both win over everything else.
//! 2. After `failureThreshold` consecutive polls with a failing trigger, the fallback count applies,
//!    also at 0 replicas (KEDA does not).
//! 3. Any active trigger (or `force-activation`) at 0 / idle replicas → `max(minReplicaCount, 1)`.
//! 4. A failing trigger is *unknown*, never *inactive*: errors never start a scale-down.
//! 5. Every trigger inactive for `cooldownPeriod` since the last activity (or, before any activity,
//!    `initialCooldownPeriod` since creation) → `idleReplicaCount`, or 0 when `minReplicaCount` is 0.
//! 6. `minReplicaCount ≥ 1` is a floor; `maxReplicaCount` a ceiling; `paused-scale-in/out` block
//!    that direction.

use std::time::Duration;

use ebb_crds::{Fallback, FallbackBehavior};
use jiff::Timestamp;

/// What one trigger said in one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerState {
    /// Value above its activation threshold.
    Active,
    /// Value at or below its activation threshold.
    Inactive,
    /// The source could not be read.
    Failed,
}

/// The scaling-relevant part of a ScaledObject's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingSpec {
    /// `minReplicaCount`.
    pub min: i32,
    /// `maxReplicaCount`.
    pub max: i32,
    /// `idleReplicaCount`.
    pub idle: Option<i32>,
    /// `cooldownPeriod`.
    pub cooldown: Duration,
    /// `initialCooldownPeriod`.
    pub initial_cooldown: Duration,
    /// `fallback`.
    pub fallback: Option<Fallback>,
}

impl ScalingSpec {
    /// Reads the scaling fields of a ScaledObject spec.
    pub fn from_spec(spec: &ebb_crds::ScaledObjectSpec) -> Self {
        let secs = |s: i32| Duration::from_secs(s.max(0) as u64);
        ScalingSpec {
            min: spec.min_replica_count,
            max: spec.max_replica_count,
            idle: spec.idle_replica_count,
            cooldown: secs(spec.cooldown_period),
            initial_cooldown: secs(spec.initial_cooldown_period),
            fallback: spec.fallback.clone(),
        }
    }
    /// Replicas while active at the bottom: `max(minReplicaCount, 1)`.
    pub fn active_floor(&self) -> i32 {
        self.min.max(1)
    }
    /// Replicas while inactive after the cooldown, when ebb scales in at all.
    pub fn inactive_target(&self) -> Option<i32> {
        match self.idle {
            Some(idle) => Some(idle),
            None if self.min == 0 => Some(0),
            None => None,
        }
    }
}

/// Pause annotations, already read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PauseState {
    /// `paused-replicas: N`.
    pub paused_replicas: Option<i32>,
    /// `paused`.
    pub paused: bool,
    /// `paused-scale-in`.
    pub scale_in_paused: bool,
    /// `paused-scale-out`.
    pub scale_out_paused: bool,
}

impl PauseState {
    /// Whether the object is paused as a whole (the HPA is removed while so).
    pub fn is_paused(&self) -> bool {
        self.paused || self.paused_replicas.is_some()
    }
}

/// What the loop remembers between polls of one ScaledObject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoopMemory {
    /// Last time a trigger was seen active.
    pub last_active: Option<Timestamp>,
    /// Polls in a row in which a trigger failed.
    pub consecutive_failures: u32,
}

/// Everything one decision needs.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// Now.
    pub now: Timestamp,
    /// The ScaledObject's creation time.
    pub created: Timestamp,
    /// Its scaling spec.
    pub spec: &'a ScalingSpec,
    /// The target's current replica count.
    pub current: i32,
    /// Each trigger's state in this poll.
    pub triggers: &'a [TriggerState],
    /// `force-activation`.
    pub force_activation: bool,
    /// Pause annotations.
    pub pause: PauseState,
}

/// Whether the object is active, for the `Active` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// A trigger is active (or activation is forced).
    Active,
    /// Every trigger is inactive; `in_cooldown` while the cooldown has not run out.
    Inactive {
        /// The cooldown is still running.
        in_cooldown: bool,
    },
    /// A trigger failed and none is active: activity is unknown.
    Unknown,
    /// Paused: triggers are not consulted.
    Paused,
}

/// Why the decision is what it is (for Events, logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `paused-replicas` holds a count.
    PausedReplicas,
    /// `paused` freezes replicas.
    Paused,
    /// The fallback count applies.
    Fallback,
    /// A trigger became active at 0 or idle replicas.
    Activate,
    /// Below `minReplicaCount`.
    RaiseToMin,
    /// Cooldown over, scaling to idle or zero.
    Deactivate,
    /// Nothing for ebb to do (the HPA owns 1↔N).
    Steady,
    /// A change was wanted but the direction is paused.
    DirectionPaused,
}

/// The outcome of one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Write `/scale` to this count (always different from the current count).
    pub write_replicas: Option<i32>,
    /// Activity for the `Active` condition.
    pub activity: Activity,
    /// Whether the fallback is engaged.
    pub fallback: bool,
    /// Why.
    pub reason: Reason,
}

/// Updates the loop memory with this poll and decides. Call once per poll.
pub fn decide(obs: &Observation<'_>, memory: &mut LoopMemory) -> Decision {
    let any_active = obs.triggers.contains(&TriggerState::Active);
    let any_failed = obs.triggers.contains(&TriggerState::Failed);
    // Failures are counted once per poll, however many triggers failed.
    memory.consecutive_failures = if any_failed {
        memory.consecutive_failures.saturating_add(1)
    } else {
        0
    };
    if any_active || obs.force_activation {
        memory.last_active = Some(obs.now);
    }
    let spec = obs.spec;
    let current = obs.current;
    let change = |target: i32, reason: Reason, activity: Activity, fallback: bool| {
        let write_replicas = (target != current).then_some(target);
        Decision {
            write_replicas,
            activity,
            fallback,
            reason,
        }
    };

    if let Some(n) = obs.pause.paused_replicas {
        return change(n.max(0), Reason::PausedReplicas, Activity::Paused, false);
    }
    if obs.pause.paused {
        return Decision {
            write_replicas: None,
            activity: Activity::Paused,
            fallback: false,
            reason: Reason::Paused,
        };
    }

    let activity = if any_active || obs.force_activation {
        Activity::Active
    } else if any_failed {
        Activity::Unknown
    } else {
        Activity::Inactive {
            in_cooldown: !cooldown_over(obs, memory),
        }
    };

    let fallback_engaged = spec
        .fallback
        .as_ref()
        .is_some_and(|f| any_failed && memory.consecutive_failures >= f.failure_threshold.max(1) as u32);
    let (target, reason) = if fallback_engaged {
        let f = spec
            .fallback
            .as_ref()
            .map(|f| fallback_replicas(f, current))
            .unwrap_or(current);
        (f.min(spec.max), Reason::Fallback)
    } else {
        match activity {
            Activity::Active if current == 0 || spec.idle.is_some_and(|idle| current <= idle) => {
                (spec.active_floor(), Reason::Activate)
            }
            Activity::Inactive { in_cooldown: false } => match spec.inactive_target() {
                Some(t) if current > t => (t, Reason::Deactivate),
                _ => (current, Reason::Steady),
            },
            _ => (current, Reason::Steady),
        }
    };
    // The floor: while active (or unknown) minReplicaCount ≥ 1 is never undercut, fallback included;
    // while inactive the floor is idleReplicaCount when set. A count left below it by hand is raised.
    let floor = match (activity, spec.idle) {
        (Activity::Inactive { .. }, Some(idle)) if !fallback_engaged => idle,
        _ => spec.min,
    };
    let (target, reason) = if target < floor {
        let floor_reason = if reason == Reason::Steady {
            Reason::RaiseToMin
        } else {
            reason
        };
        (floor, floor_reason)
    } else {
        (target, reason)
    };
    // The ceiling applies to what ebb writes; a count above max is the HPA's to bring down.
    let target = if reason == Reason::Steady {
        target
    } else {
        target.min(spec.max.max(floor))
    };
    let blocked =
        (target > current && obs.pause.scale_out_paused) || (target < current && obs.pause.scale_in_paused);
    if blocked {
        return Decision {
            write_replicas: None,
            activity,
            fallback: fallback_engaged,
            reason: Reason::DirectionPaused,
        };
    }
    change(target, reason, activity, fallback_engaged)
}

/// The fallback count for the current replica count, by behavior.
pub fn fallback_replicas(fallback: &Fallback, current: i32) -> i32 {
    let replicas = fallback.replicas.max(0);
    match fallback.behavior {
        FallbackBehavior::Static => replicas,
        FallbackBehavior::CurrentReplicas => current,
        FallbackBehavior::CurrentReplicasIfHigher => current.max(replicas),
        FallbackBehavior::CurrentReplicasIfLower => current.min(replicas),
    }
}

/// Whether scale-in may happen now: `cooldownPeriod` after the last activity, or before any
/// activity, `initialCooldownPeriod` after creation.
fn cooldown_over(obs: &Observation<'_>, memory: &LoopMemory) -> bool {
    let (since, wait) = match memory.last_active {
        Some(t) => (t, obs.spec.cooldown),
        None => (obs.created, obs.spec.initial_cooldown),
    };
    let elapsed = obs.now.duration_since(since);
    elapsed.is_positive() && elapsed.unsigned_abs() >= wait || wait.is_zero()
}

/// The replica count to restore when a ScaledObject is deleted, if any.
pub fn restore_on_delete(restore: bool, original: Option<i32>, current: i32) -> Option<i32> {
    match (restore, original) {
        (true, Some(o)) if o != current => Some(o),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TriggerState::*;
    use proptest::prelude::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn spec(min: i32, max: i32, idle: Option<i32>) -> ScalingSpec {
        ScalingSpec {
            min,
            max,
            idle,
            cooldown: Duration::from_secs(300),
            initial_cooldown: Duration::ZERO,
            fallback: None,
        }
    }

    fn run(
        spec: &ScalingSpec,
        now: i64,
        current: i32,
        triggers: &[TriggerState],
        memory: &mut LoopMemory,
    ) -> Decision {
        let obs = Observation {
            now: t(now),
            created: t(0),
            spec,
            current,
            triggers,
            force_activation: false,
            pause: PauseState::default(),
        };
        decide(&obs, memory)
    }

    #[test]
    fn activates_from_zero_to_min_or_one() {
        let mut m = LoopMemory::default();
        assert_eq!(
            run(&spec(0, 10, None), 10, 0, &[Inactive, Active], &mut m).write_replicas,
            Some(1)
        );
        assert_eq!(m.last_active, Some(t(10)));
        let mut m = LoopMemory::default();
        assert_eq!(
            run(&spec(3, 10, Some(0)), 10, 0, &[Active], &mut m).write_replicas,
            Some(3)
        );
        // Above 0 the HPA owns the count.
        assert_eq!(
            run(&spec(0, 10, None), 11, 4, &[Active], &mut m).write_replicas,
            None
        );
    }

    #[test]
    fn activation_equal_to_threshold_is_the_scalers_business_force_activation_is_ours() {
        let s = spec(0, 10, None);
        let mut m = LoopMemory::default();
        let obs = Observation {
            now: t(5),
            created: t(0),
            spec: &s,
            current: 0,
            triggers: &[Inactive],
            force_activation: true,
            pause: PauseState::default(),
        };
        assert_eq!(decide(&obs, &mut m).write_replicas, Some(1));
    }

    #[test]
    fn scales_to_zero_only_after_the_cooldown() {
        let s = spec(0, 10, None);
        let mut m = LoopMemory::default();
        run(&s, 100, 0, &[Active], &mut m);
        let d = run(&s, 200, 2, &[Inactive], &mut m);
        assert_eq!(
            (d.write_replicas, d.activity),
            (None, Activity::Inactive { in_cooldown: true })
        );
        let d = run(&s, 400, 2, &[Inactive], &mut m);
        assert_eq!((d.write_replicas, d.reason), (Some(0), Reason::Deactivate));
    }

    #[test]
    fn idle_replica_count_is_the_inactive_target() {
        let s = spec(2, 10, Some(1));
        let mut m = LoopMemory {
            last_active: Some(t(0)),
            consecutive_failures: 0,
        };
        assert_eq!(run(&s, 1000, 5, &[Inactive], &mut m).write_replicas, Some(1));
        // Active again at idle: back to min.
        assert_eq!(run(&s, 1001, 1, &[Active], &mut m).write_replicas, Some(2));
    }

    #[test]
    fn initial_cooldown_applies_before_any_activity() {
        let mut s = spec(0, 10, None);
        s.initial_cooldown = Duration::from_secs(60);
        let mut m = LoopMemory::default();
        assert_eq!(run(&s, 30, 3, &[Inactive], &mut m).write_replicas, None);
        assert_eq!(run(&s, 61, 3, &[Inactive], &mut m).write_replicas, Some(0));
    }

    #[test]
    fn errors_never_scale_in() {
        let s = spec(0, 10, None);
        let mut m = LoopMemory {
            last_active: Some(t(0)),
            consecutive_failures: 0,
        };
        let d = run(&s, 10_000, 3, &[Inactive, Failed], &mut m);
        assert_eq!((d.write_replicas, d.activity), (None, Activity::Unknown));
        assert_eq!(m.consecutive_failures, 1);
    }

    #[test]
    fn min_above_zero_is_a_floor() {
        let s = spec(2, 10, None);
        let mut m = LoopMemory {
            last_active: Some(t(0)),
            consecutive_failures: 0,
        };
        assert_eq!(run(&s, 10_000, 2, &[Inactive], &mut m).write_replicas, None);
        let d = run(&s, 10_001, 0, &[Inactive], &mut m);
        assert_eq!((d.write_replicas, d.reason), (Some(2), Reason::RaiseToMin));
    }

    #[test]
    fn fallback_after_threshold_also_from_zero() {
        let mut s = spec(0, 10, None);
        s.fallback = Some(Fallback {
            failure_threshold: 3,
            replicas: 4,
            behavior: FallbackBehavior::Static,
        });
        let mut m = LoopMemory::default();
        assert_eq!(run(&s, 1, 0, &[Failed], &mut m).write_replicas, None);
        assert_eq!(run(&s, 2, 0, &[Failed, Failed], &mut m).write_replicas, None);
        let d = run(&s, 3, 0, &[Failed], &mut m);
        assert_eq!(
            (d.write_replicas, d.fallback, d.reason),
            (Some(4), true, Reason::Fallback)
        );
        // Recovery clears the counter and the fallback.
        let d = run(&s, 4, 4, &[Active], &mut m);
        assert_eq!((d.fallback, m.consecutive_failures), (false, 0));
    }

    #[test]
    fn fallback_behaviors() {
        let f = |behavior| Fallback {
            failure_threshold: 1,
            replicas: 5,
            behavior,
        };
        assert_eq!(fallback_replicas(&f(FallbackBehavior::Static), 2), 5);
        assert_eq!(fallback_replicas(&f(FallbackBehavior::CurrentReplicas), 2), 2);
        assert_eq!(
            fallback_replicas(&f(FallbackBehavior::CurrentReplicasIfHigher), 2),
            5
        );
        assert_eq!(
            fallback_replicas(&f(FallbackBehavior::CurrentReplicasIfHigher), 7),
            7
        );
        assert_eq!(
            fallback_replicas(&f(FallbackBehavior::CurrentReplicasIfLower), 2),
            2
        );
        assert_eq!(
            fallback_replicas(&f(FallbackBehavior::CurrentReplicasIfLower), 7),
            5
        );
    }

    #[test]
    fn pause_precedence() {
        let mut s = spec(0, 10, None);
        s.fallback = Some(Fallback {
            failure_threshold: 1,
            replicas: 4,
            behavior: FallbackBehavior::Static,
        });
        let mut m = LoopMemory::default();
        let both = PauseState {
            paused_replicas: Some(2),
            paused: true,
            ..Default::default()
        };
        let obs = |pause, triggers: &'static [TriggerState]| Observation {
            now: t(1),
            created: t(0),
            spec: &s,
            current: 0,
            triggers,
            force_activation: false,
            pause,
        };
        assert_eq!(decide(&obs(both, &[Failed]), &mut m).write_replicas, Some(2));
        let paused = PauseState {
            paused: true,
            ..Default::default()
        };
        assert_eq!(decide(&obs(paused, &[Active]), &mut m).write_replicas, None);
        let no_out = PauseState {
            scale_out_paused: true,
            ..Default::default()
        };
        let d = decide(&obs(no_out, &[Active]), &mut m);
        assert_eq!((d.write_replicas, d.reason), (None, Reason::DirectionPaused));
    }

    #[test]
    fn scale_in_pause_blocks_scale_to_zero() {
        let s = spec(0, 10, None);
        let mut m = LoopMemory {
            last_active: Some(t(0)),
            consecutive_failures: 0,
        };
        let obs = Observation {
            now: t(10_000),
            created: t(0),
            spec: &s,
            current: 3,
            triggers: &[Inactive],
            force_activation: false,
            pause: PauseState {
                scale_in_paused: true,
                ..Default::default()
            },
        };
        assert_eq!(decide(&obs, &mut m).write_replicas, None);
    }

    #[test]
    fn restore_only_when_asked_and_known() {
        assert_eq!(restore_on_delete(true, Some(3), 0), Some(3));
        assert_eq!(restore_on_delete(true, Some(3), 3), None);
        assert_eq!(restore_on_delete(false, Some(3), 0), None);
        assert_eq!(restore_on_delete(true, None, 0), None);
    }

    fn trigger_state() -> impl Strategy<Value = TriggerState> {
        prop_oneof![Just(Active), Just(Inactive), Just(Failed)]
    }

    fn fallback() -> impl Strategy<Value = Option<Fallback>> {
        proptest::option::of(
            (0i32..5, 0i32..20, 0usize..4).prop_map(|(failure_threshold, replicas, b)| Fallback {
                failure_threshold,
                replicas,
                behavior: [
                    FallbackBehavior::Static,
                    FallbackBehavior::CurrentReplicas,
                    FallbackBehavior::CurrentReplicasIfHigher,
                    FallbackBehavior::CurrentReplicasIfLower,
                ][b],
            }),
        )
    }

    prop_compose! {
        fn scenario()(min in 0i32..5, extra in 0i32..10, idle_off in proptest::option::of(1i32..5),
                      fallback in fallback(), current in 0i32..20,
                      triggers in proptest::collection::vec(trigger_state(), 1..4),
                      last_active in proptest::option::of(0i64..2000), now in 0i64..4000,
                      failures in 0u32..6, force in any::<bool>(),
                      pause in (proptest::option::of(0i32..20), any::<bool>(), any::<bool>(), any::<bool>()))
            -> (ScalingSpec, i32, Vec<TriggerState>, LoopMemory, i64, bool, PauseState) {
            let idle = idle_off.and_then(|o| (min - o >= 0).then_some(min - o));
            let mut s = spec(min, (min + extra).max(1), idle);
            s.fallback = fallback;
            let memory = LoopMemory { last_active: last_active.map(t), consecutive_failures: failures };
            let pause = PauseState { paused_replicas: pause.0, paused: pause.1, scale_in_paused: pause.2, scale_out_paused: pause.3 };
            (s, current, triggers, memory, now, force, pause)
        }
    }

    proptest! {
        #[test]
        fn invariants((s, current, triggers, mut memory, now, force, pause) in scenario()) {
            let obs = Observation { now: t(now), created: t(0), spec: &s, current, triggers: &triggers, force_activation: force, pause };
            let d = decide(&obs, &mut memory);
            let any_failed = triggers.contains(&Failed);
            if let Some(n) = pause.paused_replicas {
                prop_assert_eq!(d.write_replicas, (n != current).then_some(n));
                return Ok(());
            }
            if pause.paused {
                prop_assert_eq!(d.write_replicas, None);
                return Ok(());
            }
            if let Some(n) = d.write_replicas {
                prop_assert_ne!(n, current);
                // Errors never cause a scale-in unless an engaged fallback asks for it.
                if any_failed && n < current {
                    prop_assert!(d.fallback, "scale-in on error without fallback: {:?}", d);
                }
                // Never below a min of 1 or more, never above max.
                let inactive_at_idle = s.idle.is_some() && matches!(d.activity, Activity::Inactive { .. }) && !d.fallback;
                if s.min >= 1 && !inactive_at_idle { prop_assert!(n >= s.min, "{:?}", d); }
                prop_assert!(n <= s.max.max(s.min));
                if pause.scale_out_paused { prop_assert!(n < current); }
                if pause.scale_in_paused { prop_assert!(n > current); }
            }
            if triggers.contains(&Active) || force {
                prop_assert_eq!(memory.last_active, Some(t(now)));
            }
            prop_assert_eq!(memory.consecutive_failures == 0, !any_failed);
        }
    }
}
