//! The scale loop's decisions, as pure functions: activation (0→1), scale to idle or zero after the
//! cooldown, fallback, pause precedence and the replica floor, and everything that follows from
//! them in one tick. No I/O: the loop samples the triggers and reads the target's replica count,
//! hands both to [`decide`], and executes the returned [`Outcome`] — the `/scale` write, the values
//! the metrics adapter serves (the HPA fallback value included), the Events to record and the
//! transitions to report.
//!
//! Rules (KEDA's, with its known bugs fixed):
//! 1. `paused-replicas: N` holds N; `paused` freezes replicas. Both win over everything else.
//! 2. After `failureThreshold` consecutive polls with a failing trigger, the fallback count applies,
//!    also at 0 replicas (KEDA does not).
//! 3. Any active trigger (or `force-activation`) at 0 / idle replicas → `max(minReplicaCount, 1)`.
//! 4. A failing trigger is *unknown*, never *inactive*: errors never start a scale-down.
//! 5. Every trigger inactive for `cooldownPeriod` since the last activity (or, before any activity,
//!    `initialCooldownPeriod` since creation) → `idleReplicaCount`, or 0 when `minReplicaCount` is 0.
//!    A push-capable trigger that was active at the last poll and is inactive now stopped being
//!    active just before this poll: the cooldown starts now, not at the last periodic poll.
//! 6. `minReplicaCount ≥ 1` is a floor; `maxReplicaCount` a ceiling; `paused-scale-in/out` block
//!    that direction.
//! 7. With `advanced.scalingModifiers` the formula's result ([`crate::scale::composite`]) stands
//!    for the triggers: active strictly above `activationTarget`, failed when it has no value
//!    (rule 4 then holds), and it is the one value the HPA reads, fallback values included.

use std::time::Duration;

use ebb_crds::{Fallback, FallbackBehavior, MetricType};
use jiff::Timestamp;

use crate::reasons;
use crate::scale::composite::{Composite, CompositeValue, composite_of, composite_state};
use crate::scale::outcome::{
    Activity, Decision, EventKind, EventNote, MetricSlot, MetricWrite, Outcome, Reason, ReplicaWrite,
    TriggerTransition,
};

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
    /// Whether `failures` consecutive failed polls engage the fallback (never without one).
    pub fn fallback_engaged(&self, failures: u32) -> bool {
        failures > 0
            && self
                .fallback
                .as_ref()
                .is_some_and(|f| failures >= f.failure_threshold.max(1) as u32)
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
    /// Whether the object is paused as a whole (the HPA is removed, and triggers are not
    /// sampled, while so).
    pub fn is_paused(&self) -> bool {
        self.paused || self.paused_replicas.is_some()
    }
}

/// What the loop remembers of one ScaledObject between polls; all a new loop needs to start from
/// (the rest of [`TickMemory`] starts empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoopMemory {
    /// Last time a trigger was seen active.
    pub last_active: Option<Timestamp>,
    /// Polls in a row in which a trigger failed.
    pub consecutive_failures: u32,
}

/// What the loop remembers of one trigger between polls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TriggerMemory {
    /// Consecutive failed polls of this trigger.
    pub failures: u32,
    /// The last error, while the trigger fails (never contains secrets).
    pub error: Option<String>,
    /// Whether the last poll saw it active.
    pub was_active: bool,
}

/// Everything [`decide`] keeps between ticks of one loop.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TickMemory {
    /// The object's memory (activity time, failure count).
    pub object: LoopMemory,
    /// Per trigger, in the config's order (resized when the triggers change).
    pub triggers: Vec<TriggerMemory>,
    /// The activity at the last decision, for [`crate::scale::outcome::Transitions::activity`].
    pub activity: Option<Activity>,
    /// Whether the object was paused at the last decision, for [`crate::scale::outcome::Transitions::pause`].
    pub paused: Option<bool>,
    /// Per trigger, what the loop logged of its failures ([`decide`] does not read it).
    pub failure_logs: Vec<crate::scale::failure_log::FailureLog>,
}

impl From<LoopMemory> for TickMemory {
    fn from(object: LoopMemory) -> Self {
        TickMemory {
            object,
            ..TickMemory::default()
        }
    }
}

/// One trigger's result in one poll.
#[derive(Debug, Clone, PartialEq)]
pub enum PollResult {
    /// The source answered.
    Sampled {
        /// The metric value.
        value: f64,
        /// Above the activation threshold.
        active: bool,
    },
    /// The source could not be read; the message never contains secrets.
    Failed(String),
    /// Not sampled (the object is paused).
    Skipped,
}

/// One trigger as [`decide`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerPoll<'a> {
    /// Its metric name (Events name it).
    pub metric_name: &'a str,
    /// Its HPA target value (the fallback value the adapter serves derives from it, see
    /// [`fallback_metric_value`]).
    pub target: f64,
    /// Its HPA target type.
    pub metric_type: MetricType,
    /// Whether its scaler pushes activity changes between polls.
    pub pushes_activity: bool,
    /// This poll's result.
    pub result: PollResult,
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
    /// The target's current replica count; `None` when it could not be read (then only the
    /// triggers' part of the outcome is decided).
    pub current: Option<i32>,
    /// Each trigger's poll, in the config's order.
    pub triggers: &'a [TriggerPoll<'a>],
    /// `force-activation`.
    pub force_activation: bool,
    /// Pause annotations.
    pub pause: PauseState,
    /// The target as Events name it, e.g. `Deployment web`.
    pub target: &'a str,
    /// `advanced.scalingModifiers`: activity comes from the formula's result, and the HPA reads
    /// the composite instead of the triggers' values.
    pub composite: Option<&'a Composite>,
}

/// Updates the memory with this poll and decides everything the loop does. Call once per poll.
pub fn decide(obs: &Observation<'_>, memory: &mut TickMemory) -> Outcome {
    let mut out = Outcome::default();
    let states = assess_triggers(obs, memory, &mut out);
    let composite = obs.composite.map(|c| (c, composite_of(obs, c, memory)));
    let states = match &composite {
        // With scalingModifiers the formula's result is the object's one state.
        Some((c, value)) => {
            if let CompositeValue::Value { value, substituted } = value {
                out.metrics.push(MetricWrite {
                    metric: MetricSlot::Composite,
                    value: *value,
                    failed: *substituted,
                });
            }
            composite_state(c, value, obs.spec.fallback.as_ref())
                .into_iter()
                .collect()
        }
        None => states,
    };
    let Some(current) = obs.current else {
        return out;
    };
    let was_fallback = obs.spec.fallback_engaged(memory.object.consecutive_failures);
    let decision = replica_rule(obs, current, &states, &mut memory.object);
    let wanted = fallback_count(obs.spec, current);
    let settled = decision.write_replicas.unwrap_or(current);
    match composite {
        // The HPA reads the fallback too: the composite, or each failing trigger, reports the
        // value whose HPA arithmetic gives the count ebb sets.
        Some((c, value)) if decision.fallback || value == CompositeValue::NilFallback => {
            out.metrics.push(MetricWrite {
                metric: MetricSlot::Composite,
                value: fallback_metric_value(c.metric_type, c.target, wanted, settled),
                failed: true,
            });
        }
        Some(_) => {}
        None if decision.fallback => {
            for (i, poll) in obs.triggers.iter().enumerate() {
                if matches!(poll.result, PollResult::Failed(_)) {
                    out.metrics.push(MetricWrite {
                        metric: MetricSlot::Trigger(i),
                        value: fallback_metric_value(poll.metric_type, poll.target, wanted, settled),
                        failed: true,
                    });
                }
            }
        }
        None => {}
    }
    let paused = obs.pause.is_paused();
    if decision.fallback != was_fallback && !paused {
        out.transitions.fallback = Some(decision.fallback);
        out.events.push(if decision.fallback {
            warning(
                reasons::FALLBACK_ENGAGED,
                "triggers keep failing: fallback replicas apply".to_string(),
            )
        } else {
            normal(
                reasons::FALLBACK_CLEARED,
                "triggers recovered: fallback cleared".to_string(),
            )
        });
    }
    if memory.paused.is_some_and(|was| was != paused) {
        out.transitions.pause = Some(paused);
    }
    memory.paused = Some(paused);
    if memory.activity != Some(decision.activity) {
        out.transitions.activity = Some(decision.activity);
    }
    memory.activity = Some(decision.activity);
    out.write = decision
        .write_replicas
        .map(|n| replica_write(current, n, decision.reason, obs.target));
    out.replicas = Some(decision);
    out
}

fn normal(reason: &'static str, note: String) -> EventNote {
    EventNote {
        kind: EventKind::Normal,
        reason,
        note,
    }
}

fn warning(reason: &'static str, note: String) -> EventNote {
    EventNote {
        kind: EventKind::Warning,
        reason,
        note,
    }
}

/// Per trigger: its memory, its failing/recovered transition and Event, the sampled value for the
/// poll cache, and the push-capable deactivation that starts the cooldown. Returns the states of
/// the sampled triggers.
fn assess_triggers(obs: &Observation<'_>, memory: &mut TickMemory, out: &mut Outcome) -> Vec<TriggerState> {
    memory
        .triggers
        .resize(obs.triggers.len(), TriggerMemory::default());
    let mut states = Vec::with_capacity(obs.triggers.len());
    for (i, (poll, mem)) in obs.triggers.iter().zip(memory.triggers.iter_mut()).enumerate() {
        let was_failing = mem.error.is_some();
        let state = match &poll.result {
            PollResult::Skipped => None,
            PollResult::Sampled { value, active } => {
                mem.failures = 0;
                mem.error = None;
                out.metrics.push(MetricWrite {
                    metric: MetricSlot::Trigger(i),
                    value: *value,
                    failed: false,
                });
                if was_failing {
                    out.transitions.triggers.push((i, TriggerTransition::Recovered));
                    out.events.push(normal(
                        reasons::TRIGGER_RECOVERED,
                        format!("trigger {} recovered", poll.metric_name),
                    ));
                }
                Some(if *active {
                    TriggerState::Active
                } else {
                    TriggerState::Inactive
                })
            }
            PollResult::Failed(message) => {
                mem.failures = mem.failures.saturating_add(1);
                if !was_failing {
                    out.transitions.triggers.push((i, TriggerTransition::Failing));
                    out.events.push(warning(
                        reasons::TRIGGER_FAILING,
                        format!("trigger {} failing: {message}", poll.metric_name),
                    ));
                }
                mem.error = Some(message.clone());
                Some(TriggerState::Failed)
            }
        };
        if mem.was_active && state == Some(TriggerState::Inactive) && poll.pushes_activity {
            memory.object.last_active = Some(obs.now);
        }
        mem.was_active = state == Some(TriggerState::Active);
        states.extend(state);
    }
    states
}

/// The `/scale` write of a decision, with its metric label and Event.
fn replica_write(from: i32, replicas: i32, reason: Reason, target: &str) -> ReplicaWrite {
    let (action, event_reason) = match reason {
        Reason::Activate => ("activate", reasons::ACTIVATED),
        Reason::Deactivate if replicas == 0 => ("deactivate", reasons::SCALED_TO_ZERO),
        Reason::Deactivate => ("deactivate", reasons::SCALED_TO_IDLE),
        Reason::Fallback => ("fallback", reasons::FALLBACK_REPLICAS),
        Reason::PausedReplicas => ("pause", reasons::PAUSED_REPLICAS),
        _ => ("floor", reasons::SCALED_TO_MIN),
    };
    ReplicaWrite {
        from,
        replicas,
        action,
        event: normal(
            event_reason,
            format!("scaled {target} from {from} to {replicas} replicas"),
        ),
    }
}

/// The replica rules (see the module docs) for the sampled trigger states; updates the object's
/// failure count and last activity.
fn replica_rule(
    obs: &Observation<'_>,
    current: i32,
    states: &[TriggerState],
    memory: &mut LoopMemory,
) -> Decision {
    let any_active = states.contains(&TriggerState::Active);
    let any_failed = states.contains(&TriggerState::Failed);
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
        (fallback_count(spec, current), Reason::Fallback)
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
        FallbackBehavior::Static | FallbackBehavior::ScalingModifiers => replicas,
        FallbackBehavior::CurrentReplicas => current,
        FallbackBehavior::CurrentReplicasIfHigher => current.max(replicas),
        FallbackBehavior::CurrentReplicasIfLower => current.min(replicas),
    }
}

/// The count the fallback sets: [`fallback_replicas`] within `minReplicaCount` and
/// `maxReplicaCount` (the bounds [`decide`] applies to every count it writes).
fn fallback_count(spec: &ScalingSpec, current: i32) -> i32 {
    let wanted = spec
        .fallback
        .as_ref()
        .map(|f| fallback_replicas(f, current))
        .unwrap_or(current);
    wanted.min(spec.max).max(spec.min).min(spec.max.max(spec.min))
}

/// The value a failing trigger reports to the HPA while the fallback holds, such that the HPA's
/// arithmetic gives `fallback` replicas, `settled` being the target's count once this tick's
/// `/scale` write is done (the loop writes the fallback count itself, so normally `fallback`).
///
/// With current replicas `N`, value `M`, target `T` and tolerance 0.1, the HPA computes:
/// - AverageValue: `ceil(M / T)`, independent of `N` (kept at `N` when `M / (T·N)` is within the
///   tolerance of 1). `M = fallback × T` gives `fallback`, KEDA's value.
/// - Value: `ceil(ready × M / T)`, where `ready` is the number of *ready pods* the HPA counts
///   itself, unless `M / T` is within the tolerance of 1, in which case it keeps `N`. A value
///   proportional to the fallback (KEDA's `fallback × T`, not allowed there for Value metrics)
///   is multiplied again by the pods, which ran the workload to `maxReplicaCount`; and since
///   `ready` is unknown to ebb and moves during a scale-up, no value gives `fallback` through that
///   multiplication reliably. `M = T × fallback / settled` instead: when the count is settled
///   (`settled == fallback`) that is exactly `T`, a ratio of exactly 1, so the HPA keeps the count
///   ebb wrote whatever its ready pods. Only while a paused direction keeps ebb from writing does
///   the ratio differ from 1; the HPA's same direction is disabled then too.
pub fn fallback_metric_value(metric_type: MetricType, target: f64, fallback: i32, settled: i32) -> f64 {
    match metric_type {
        MetricType::AverageValue => fallback as f64 * target,
        MetricType::Value if fallback == settled => target,
        MetricType::Value => target * fallback as f64 / settled.max(1) as f64,
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
    use crate::scale::outcome::Transitions;
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

    const NAMES: [&str; 4] = ["s0-a", "s1-b", "s2-c", "s3-d"];

    /// Polls with these states: an active trigger reads 5, an inactive one 0; each has target 10.
    fn polls(states: &[TriggerState]) -> Vec<TriggerPoll<'static>> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| TriggerPoll {
                metric_name: NAMES[i % NAMES.len()],
                target: 10.0,
                metric_type: MetricType::AverageValue,
                pushes_activity: false,
                result: match s {
                    Active => PollResult::Sampled {
                        value: 5.0,
                        active: true,
                    },
                    Inactive => PollResult::Sampled {
                        value: 0.0,
                        active: false,
                    },
                    Failed => PollResult::Failed("boom".into()),
                },
            })
            .collect()
    }

    fn observe<'a>(
        spec: &'a ScalingSpec,
        now: i64,
        current: i32,
        triggers: &'a [TriggerPoll<'a>],
        force_activation: bool,
        pause: PauseState,
    ) -> Observation<'a> {
        Observation {
            now: t(now),
            created: t(0),
            spec,
            current: Some(current),
            triggers,
            force_activation,
            pause,
            target: "Deployment w",
            composite: None,
        }
    }

    fn memory(last_active: Option<Timestamp>) -> TickMemory {
        TickMemory::from(LoopMemory {
            last_active,
            consecutive_failures: 0,
        })
    }

    fn outcome(
        spec: &ScalingSpec,
        now: i64,
        current: i32,
        triggers: &[TriggerState],
        memory: &mut TickMemory,
    ) -> Outcome {
        let p = polls(triggers);
        decide(
            &observe(spec, now, current, &p, false, PauseState::default()),
            memory,
        )
    }

    fn run(
        spec: &ScalingSpec,
        now: i64,
        current: i32,
        triggers: &[TriggerState],
        memory: &mut TickMemory,
    ) -> Decision {
        outcome(spec, now, current, triggers, memory)
            .replicas
            .expect("a decision when the count is known")
    }

    #[test]
    fn activates_from_zero_to_min_or_one() {
        let mut m = TickMemory::default();
        assert_eq!(
            run(&spec(0, 10, None), 10, 0, &[Inactive, Active], &mut m).write_replicas,
            Some(1)
        );
        assert_eq!(m.object.last_active, Some(t(10)));
        let mut m = TickMemory::default();
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
        let mut m = TickMemory::default();
        let p = polls(&[Inactive]);
        let obs = observe(&s, 5, 0, &p, true, PauseState::default());
        assert_eq!(decide(&obs, &mut m).write.map(|w| w.replicas), Some(1));
    }

    #[test]
    fn scales_to_zero_only_after_the_cooldown() {
        let s = spec(0, 10, None);
        let mut m = TickMemory::default();
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
        let mut m = memory(Some(t(0)));
        assert_eq!(run(&s, 1000, 5, &[Inactive], &mut m).write_replicas, Some(1));
        // Active again at idle: back to min.
        assert_eq!(run(&s, 1001, 1, &[Active], &mut m).write_replicas, Some(2));
    }

    #[test]
    fn initial_cooldown_applies_before_any_activity() {
        let mut s = spec(0, 10, None);
        s.initial_cooldown = Duration::from_secs(60);
        let mut m = TickMemory::default();
        assert_eq!(run(&s, 30, 3, &[Inactive], &mut m).write_replicas, None);
        assert_eq!(run(&s, 61, 3, &[Inactive], &mut m).write_replicas, Some(0));
    }

    #[test]
    fn errors_never_scale_in() {
        let s = spec(0, 10, None);
        let mut m = memory(Some(t(0)));
        let d = run(&s, 10_000, 3, &[Inactive, Failed], &mut m);
        assert_eq!((d.write_replicas, d.activity), (None, Activity::Unknown));
        assert_eq!(m.object.consecutive_failures, 1);
    }

    #[test]
    fn min_above_zero_is_a_floor() {
        let s = spec(2, 10, None);
        let mut m = memory(Some(t(0)));
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
        let mut m = TickMemory::default();
        assert_eq!(run(&s, 1, 0, &[Failed], &mut m).write_replicas, None);
        assert_eq!(run(&s, 2, 0, &[Failed, Failed], &mut m).write_replicas, None);
        let d = run(&s, 3, 0, &[Failed], &mut m);
        assert_eq!(
            (d.write_replicas, d.fallback, d.reason),
            (Some(4), true, Reason::Fallback)
        );
        // Recovery clears the counter and the fallback.
        let d = run(&s, 4, 4, &[Active], &mut m);
        assert_eq!((d.fallback, m.object.consecutive_failures), (false, 0));
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
        let mut m = TickMemory::default();
        let both = PauseState {
            paused_replicas: Some(2),
            paused: true,
            ..Default::default()
        };
        let failed = polls(&[Failed]);
        let active = polls(&[Active]);
        let d = |o: &Observation<'_>, m: &mut TickMemory| decide(o, m).replicas.unwrap();
        assert_eq!(
            d(&observe(&s, 1, 0, &failed, false, both), &mut m).write_replicas,
            Some(2)
        );
        let paused = PauseState {
            paused: true,
            ..Default::default()
        };
        assert_eq!(
            d(&observe(&s, 1, 0, &active, false, paused), &mut m).write_replicas,
            None
        );
        let no_out = PauseState {
            scale_out_paused: true,
            ..Default::default()
        };
        let d = d(&observe(&s, 1, 0, &active, false, no_out), &mut m);
        assert_eq!((d.write_replicas, d.reason), (None, Reason::DirectionPaused));
    }

    #[test]
    fn scale_in_pause_blocks_scale_to_zero() {
        let s = spec(0, 10, None);
        let mut m = memory(Some(t(0)));
        let p = polls(&[Inactive]);
        let pause = PauseState {
            scale_in_paused: true,
            ..Default::default()
        };
        let obs = observe(&s, 10_000, 3, &p, false, pause);
        assert_eq!(decide(&obs, &mut m).write, None);
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
            -> (ScalingSpec, i32, Vec<TriggerState>, TickMemory, i64, bool, PauseState) {
            let idle = idle_off.and_then(|o| (min - o >= 0).then_some(min - o));
            let mut s = spec(min, (min + extra).max(1), idle);
            s.fallback = fallback;
            let memory = TickMemory::from(LoopMemory { last_active: last_active.map(t), consecutive_failures: failures });
            let pause = PauseState { paused_replicas: pause.0, paused: pause.1, scale_in_paused: pause.2, scale_out_paused: pause.3 };
            (s, current, triggers, memory, now, force, pause)
        }
    }

    proptest! {
        #[test]
        fn invariants((s, current, triggers, mut memory, now, force, pause) in scenario()) {
            let p = polls(&triggers);
            let obs = observe(&s, now, current, &p, force, pause);
            let out = decide(&obs, &mut memory);
            let d = out.replicas.expect("a decision when the count is known");
            prop_assert_eq!(out.write.as_ref().map(|w| w.replicas), d.write_replicas);
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
                prop_assert_eq!(memory.object.last_active, Some(t(now)));
            }
            prop_assert_eq!(memory.object.consecutive_failures == 0, !any_failed);
        }
    }

    fn with_fallback(threshold: i32, replicas: i32) -> ScalingSpec {
        let mut s = spec(0, 10, None);
        s.fallback = Some(Fallback {
            failure_threshold: threshold,
            replicas,
            behavior: FallbackBehavior::Static,
        });
        s
    }

    fn reasons(out: &Outcome) -> Vec<&'static str> {
        out.events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn trigger_failing_and_recovered_are_reported_once() {
        let s = spec(0, 10, None);
        let mut m = TickMemory::default();
        let out = outcome(&s, 1, 1, &[Active, Failed], &mut m);
        assert_eq!(out.transitions.triggers, vec![(1, TriggerTransition::Failing)]);
        assert_eq!(
            out.events,
            vec![EventNote {
                kind: EventKind::Warning,
                reason: "TriggerFailing",
                note: "trigger s1-b failing: boom".into(),
            }]
        );
        assert_eq!(m.triggers[1].failures, 1);
        assert_eq!(m.triggers[1].error.as_deref(), Some("boom"));
        // Still failing: no second Event, the count goes on.
        let out = outcome(&s, 2, 1, &[Active, Failed], &mut m);
        assert!(out.events.is_empty() && out.transitions.triggers.is_empty());
        assert_eq!(m.triggers[1].failures, 2);
        let out = outcome(&s, 3, 1, &[Active, Inactive], &mut m);
        assert_eq!(out.transitions.triggers, vec![(1, TriggerTransition::Recovered)]);
        assert_eq!(reasons(&out), vec!["TriggerRecovered"]);
        assert_eq!(out.events[0].note, "trigger s1-b recovered");
        assert_eq!((m.triggers[1].failures, m.triggers[1].error.clone()), (0, None));
    }

    #[test]
    fn sampled_values_go_to_the_poll_cache_failed_ones_do_not() {
        let s = spec(0, 10, None);
        let mut m = TickMemory::default();
        let out = outcome(&s, 1, 1, &[Active, Failed, Inactive], &mut m);
        assert_eq!(
            out.metrics,
            vec![
                MetricWrite {
                    metric: MetricSlot::Trigger(0),
                    value: 5.0,
                    failed: false
                },
                MetricWrite {
                    metric: MetricSlot::Trigger(2),
                    value: 0.0,
                    failed: false
                },
            ]
        );
    }

    #[test]
    fn fallback_engages_serves_its_value_and_clears() {
        let s = with_fallback(2, 4);
        let mut m = TickMemory::default();
        let out = outcome(&s, 1, 1, &[Failed, Active], &mut m);
        assert_eq!(out.transitions.fallback, None);
        assert!(out.metrics.iter().all(|w| !w.failed), "below the threshold");
        let out = outcome(&s, 2, 1, &[Failed, Active], &mut m);
        assert_eq!(out.transitions.fallback, Some(true));
        assert_eq!(reasons(&out), vec!["FallbackEngaged"]);
        assert_eq!(out.events[0].kind, EventKind::Warning);
        // The failing trigger reports 4 replicas × its target of 10 to the HPA.
        assert!(out.metrics.contains(&MetricWrite {
            metric: MetricSlot::Trigger(0),
            value: 40.0,
            failed: true
        }));
        let w = out.write.expect("fallback writes 4");
        assert_eq!(
            (w.from, w.replicas, w.action, w.event.reason),
            (1, 4, "fallback", "FallbackReplicas")
        );
        assert_eq!(w.event.note, "scaled Deployment w from 1 to 4 replicas");
        // Engaged and still failing: no new Event.
        let out = outcome(&s, 3, 4, &[Failed, Active], &mut m);
        assert!(out.events.is_empty() && out.transitions.fallback.is_none());
        let out = outcome(&s, 4, 4, &[Active, Active], &mut m);
        assert_eq!(out.transitions.fallback, Some(false));
        assert_eq!(reasons(&out), vec!["TriggerRecovered", "FallbackCleared"]);
        assert!(out.metrics.iter().all(|w| !w.failed));
    }

    /// The HPA's count for one External metric, as kube-controller-manager's replica calculator
    /// computes it (tolerance 0.1), from the value served and the target (both milli-quantities,
    /// as the adapter serves them and the HPA holds them), the scale's `spec.replicas` and the
    /// pods the HPA counts as ready; clamped to the HPA's bounds.
    fn hpa_desired(
        metric_type: MetricType,
        value: f64,
        target: f64,
        replicas: i32,
        ready: i32,
        (min, max): (i32, i32),
    ) -> i32 {
        let milli = |v: f64| (v * 1000.0).round();
        let (m, t) = (milli(value), milli(target));
        let within_tolerance = |ratio: f64| (1.0 - ratio).abs() <= 0.1;
        let desired = match metric_type {
            MetricType::AverageValue if within_tolerance(m / (t * replicas as f64)) => replicas,
            MetricType::AverageValue => (m / t).ceil() as i32,
            MetricType::Value if within_tolerance(m / t) => replicas,
            MetricType::Value => ((m / t) * ready as f64).ceil() as i32,
        };
        desired.clamp(min.max(1), max)
    }

    /// One tick with an engaged fallback (one failing trigger of target `target`, threshold 1):
    /// the count the target holds after the tick and the value served for the trigger.
    fn fallback_tick(s: &ScalingSpec, current: i32, metric_type: MetricType, target: f64) -> (i32, f64) {
        let p = [TriggerPoll {
            target,
            metric_type,
            ..polls(&[Failed]).remove(0)
        }];
        let out = decide(
            &observe(s, 10, current, &p, false, PauseState::default()),
            &mut TickMemory::default(),
        );
        let settled = out.write.map_or(current, |w| w.replicas);
        let served = out.metrics.iter().find(|w| w.failed).expect("a fallback value");
        (settled, served.value)
    }

    #[test]
    fn a_value_trigger_in_fallback_holds_the_fallback_count() {
        // currentReplicas at 3 replicas, target 10, 3 ready pods: KEDA's replicas × target (30)
        // made a Value HPA want ceil(3 × 30/10) = 9, then 27, … up to maxReplicaCount.
        let mut s = with_fallback(1, 0);
        s.max = 50;
        s.fallback.as_mut().unwrap().behavior = FallbackBehavior::CurrentReplicas;
        let (settled, value) = fallback_tick(&s, 3, MetricType::Value, 10.0);
        assert_eq!((settled, value), (3, 10.0));
        assert_eq!(hpa_desired(MetricType::Value, value, 10.0, 3, 3, (0, 50)), 3);
        // The same trigger as AverageValue still serves fallback × target.
        assert_eq!(fallback_tick(&s, 3, MetricType::AverageValue, 10.0), (3, 30.0));
        // Static 6 from 2 replicas: ebb writes 6 and serves the target itself.
        s.fallback.as_mut().unwrap().behavior = FallbackBehavior::Static;
        s.fallback.as_mut().unwrap().replicas = 6;
        assert_eq!(fallback_tick(&s, 2, MetricType::Value, 10.0), (6, 10.0));
    }

    #[test]
    fn fallback_metric_value_for_a_count_not_yet_written() {
        assert_eq!(fallback_metric_value(MetricType::AverageValue, 2.5, 4, 1), 10.0);
        assert_eq!(fallback_metric_value(MetricType::Value, 2.5, 4, 4), 2.5);
        assert_eq!(fallback_metric_value(MetricType::Value, 2.5, 4, 2), 5.0);
        assert_eq!(fallback_metric_value(MetricType::Value, 2.5, 4, 0), 10.0);
    }

    proptest! {
        // Whatever the behavior, bounds, target and the HPA's ready-pod count, the HPA's own
        // arithmetic on the served fallback value keeps exactly the count ebb set (the fallback
        // count within min and max), for both metric types.
        #[test]
        fn the_hpa_keeps_the_fallback_count(
            fallback in fallback(), current in 1i32..20, min in 0i32..4, max in 1i32..25,
            ready_share in 0.0f64..2.0, target in prop_oneof![Just(1.0), Just(10.0), Just(0.5), Just(7.3), Just(250.0)],
            value_metric: bool,
        ) {
            let Some(mut fallback) = fallback else { return Ok(()) };
            fallback.failure_threshold = 1;
            let mut s = spec(min, max.max(min), None);
            s.fallback = Some(fallback.clone());
            let metric_type = if value_metric { MetricType::Value } else { MetricType::AverageValue };
            let (settled, value) = fallback_tick(&s, current, metric_type, target);
            let wanted = fallback_replicas(&fallback, current).clamp(s.min, s.max);
            prop_assert_eq!(settled, wanted);
            // At 0 the HPA is idle (ebb owns 0↔1).
            if settled > 0 {
                // Ready pods: fewer while new pods start, more during a surge rollout.
                let ready = (settled as f64 * ready_share).round() as i32;
                let hpa = hpa_desired(metric_type, value, target, settled, ready, (s.min, s.max));
                prop_assert_eq!(hpa, settled, "served {} for target {}", value, target);
            }
        }
    }

    #[test]
    fn scale_events_name_the_reason() {
        let s = spec(0, 10, None);
        let mut m = TickMemory::default();
        let w = outcome(&s, 100, 0, &[Active], &mut m).write.unwrap();
        assert_eq!(
            (w.action, w.event.reason, w.replicas),
            ("activate", "Activated", 1)
        );
        assert_eq!(w.event.kind, EventKind::Normal);
        let w = outcome(&s, 1000, 3, &[Inactive], &mut m).write.unwrap();
        assert_eq!(
            (w.action, w.event.reason, w.replicas),
            ("deactivate", "ScaledToZero", 0)
        );
        let idle = spec(2, 10, Some(1));
        let w = outcome(&idle, 2000, 3, &[Inactive], &mut m).write.unwrap();
        assert_eq!(w.event.reason, "ScaledToIdle");
        let floor = spec(2, 10, None);
        let w = outcome(&floor, 2001, 0, &[Inactive], &mut m).write.unwrap();
        assert_eq!((w.action, w.event.reason), ("floor", "ScaledToMin"));
    }

    #[test]
    fn an_unknown_count_decides_only_the_triggers() {
        let s = with_fallback(1, 4);
        let mut m = memory(Some(t(0)));
        let p = polls(&[Failed, Active]);
        let mut obs = observe(&s, 10, 0, &p, false, PauseState::default());
        obs.current = None;
        let out = decide(&obs, &mut m);
        assert_eq!((out.replicas, out.write.clone()), (None, None));
        assert_eq!(reasons(&out), vec!["TriggerFailing"]);
        assert_eq!(out.metrics.len(), 1, "the sampled value only, no fallback value");
        assert_eq!(m.object, memory(Some(t(0))).object, "the object's memory waits");
        assert_eq!(m.triggers[0].failures, 1);
    }

    #[test]
    fn a_pushed_deactivation_starts_the_cooldown_now() {
        let s = spec(0, 10, None);
        let sample = |active: bool, pushes_activity: bool| TriggerPoll {
            metric_name: "s0-a",
            target: 1.0,
            metric_type: MetricType::AverageValue,
            pushes_activity,
            result: PollResult::Sampled { value: 0.0, active },
        };
        for pushes in [true, false] {
            let mut m = TickMemory::default();
            let active = [sample(true, pushes)];
            decide(&observe(&s, 10, 1, &active, false, PauseState::default()), &mut m);
            let inactive = [sample(false, pushes)];
            decide(
                &observe(&s, 50, 1, &inactive, false, PauseState::default()),
                &mut m,
            );
            let expected = if pushes { t(50) } else { t(10) };
            assert_eq!(m.object.last_active, Some(expected), "pushes: {pushes}");
        }
    }

    #[test]
    fn paused_skips_triggers_and_reports_pause_transitions() {
        let s = with_fallback(1, 4);
        let mut m = TickMemory::default();
        let out = outcome(&s, 1, 2, &[Failed], &mut m);
        assert_eq!(
            out.transitions.pause, None,
            "nothing to compare with at the first tick"
        );
        assert_eq!(out.transitions.activity, Some(Activity::Unknown));
        assert_eq!(out.transitions.fallback, Some(true));
        let skipped = [TriggerPoll {
            result: PollResult::Skipped,
            ..polls(&[Failed]).remove(0)
        }];
        let paused = PauseState {
            paused: true,
            ..Default::default()
        };
        let out = decide(&observe(&s, 2, 2, &skipped, false, paused), &mut m);
        assert_eq!(out.transitions.pause, Some(true));
        assert_eq!(out.transitions.activity, Some(Activity::Paused));
        // The fallback is not announced as cleared while paused, and nothing is served for it.
        assert_eq!((out.transitions.fallback, out.write.clone()), (None, None));
        assert!(out.events.is_empty() && out.metrics.is_empty());
        // The trigger's health is kept as last seen.
        assert_eq!(m.triggers[0].error.as_deref(), Some("boom"));
        let out = outcome(&s, 3, 2, &[Active], &mut m);
        assert_eq!(out.transitions.pause, Some(false));
        assert_eq!(out.transitions.activity, Some(Activity::Active));
        let out = outcome(&s, 4, 2, &[Active], &mut m);
        assert_eq!(out.transitions, Transitions::default());
    }

    proptest! {
        #[test]
        fn the_outcome_follows_the_decision((s, current, triggers, mut memory, now, force, pause) in scenario()) {
            let before = memory.clone();
            let p = polls(&triggers);
            let obs = observe(&s, now, current, &p, force, pause);
            let out = decide(&obs, &mut memory);
            let d = out.replicas.unwrap();
            // Every sampled value goes to the poll cache, fallback values only while engaged and
            // only for failing triggers.
            for (i, state) in triggers.iter().enumerate() {
                let written: Vec<&MetricWrite> = out.metrics.iter().filter(|w| w.metric == MetricSlot::Trigger(i)).collect();
                match state {
                    Failed if d.fallback => {
                        // AverageValue: the count the fallback sets (within min and max) × target.
                        let f = fallback_count(&s, current);
                        let expected = MetricWrite { metric: MetricSlot::Trigger(i), value: f as f64 * 10.0, failed: true };
                        prop_assert_eq!(written, vec![&expected]);
                    }
                    Failed => prop_assert!(written.is_empty()),
                    _ if pause.is_paused() => {}
                    _ => prop_assert_eq!(written.len(), 1),
                }
            }
            // One failing Event per trigger that newly fails (the memory starts without errors).
            let failing = out.events.iter().filter(|e| e.reason == "TriggerFailing").count();
            prop_assert_eq!(failing, triggers.iter().filter(|t| **t == Failed).count());
            let was = s.fallback_engaged(before.object.consecutive_failures);
            let fallback_event = out.events.iter().any(|e| e.reason.starts_with("Fallback"));
            prop_assert_eq!(fallback_event, d.fallback != was && !pause.is_paused());
            prop_assert_eq!(out.transitions.activity, Some(d.activity));
            prop_assert_eq!(memory.triggers.len(), triggers.len());
        }
    }

    fn composite(formula: &str, fallback: Option<Fallback>) -> (ScalingSpec, Composite) {
        let so: ebb_crds::ScaledObjectSpec = serde_json::from_value(serde_json::json!({
            "scaleTargetRef": {"name": "w"},
            "advanced": {"scalingModifiers": {"formula": formula, "target": "5", "activationTarget": "2"}},
            "triggers": [{"type": "x", "name": "a", "metadata": {}}, {"type": "x", "name": "b", "metadata": {}}]
        }))
        .unwrap();
        let c = Composite::from_spec(&so, &[0, 1]).unwrap().unwrap();
        let mut s = spec(0, 10, None);
        s.fallback = fallback;
        (s, c)
    }

    fn sampled(value: f64) -> PollResult {
        // The per-trigger activity is deliberately the opposite of what the formula says.
        PollResult::Sampled {
            value,
            active: value < 2.0,
        }
    }

    fn decide_composite(
        s: &ScalingSpec,
        c: &Composite,
        now: i64,
        current: i32,
        results: [PollResult; 2],
        m: &mut TickMemory,
    ) -> Outcome {
        let mut p = polls(&[Inactive, Inactive]);
        for (poll, r) in p.iter_mut().zip(results) {
            poll.result = r;
        }
        let mut o = observe(s, now, current, &p, false, PauseState::default());
        o.composite = Some(c);
        decide(&o, m)
    }

    fn composite_writes(out: &Outcome) -> Vec<(f64, bool)> {
        out.metrics
            .iter()
            .filter(|w| w.metric == MetricSlot::Composite)
            .map(|w| (w.value, w.failed))
            .collect()
    }

    #[test]
    fn the_composite_decides_activation_and_is_what_the_hpa_reads() {
        let (s, c) = composite("a + b", None);
        let mut m = TickMemory::default();
        // 1 + 1.5 = 2.5 > activationTarget 2: active, although neither trigger is.
        let out = decide_composite(&s, &c, 10, 0, [sampled(1.0), sampled(1.5)], &mut m);
        assert_eq!(out.write.as_ref().map(|w| w.replicas), Some(1));
        assert_eq!(composite_writes(&out), vec![(2.5, false)]);
        // 1 + 1 = 2, not above 2: inactive although both triggers are; the cooldown runs from the
        // last activity (t=10), so at t=400 the object goes to zero.
        let out = decide_composite(&s, &c, 400, 3, [sampled(1.0), sampled(1.0)], &mut m);
        assert_eq!(
            out.replicas.map(|d| d.activity),
            Some(Activity::Inactive { in_cooldown: false })
        );
        assert_eq!(out.write.as_ref().map(|w| w.replicas), Some(0));
    }

    #[test]
    fn a_failing_composite_never_scales_to_zero() {
        let (s, c) = composite("a / b", None);
        let mut m = TickMemory::default();
        for results in [
            [sampled(1.0), PollResult::Failed("down".into())],
            [sampled(1.0), sampled(0.0)],
        ] {
            let out = decide_composite(&s, &c, 1000, 3, results, &mut m);
            let d = out.replicas.unwrap();
            assert_eq!((d.activity, d.write_replicas), (Activity::Unknown, None));
            assert!(
                composite_writes(&out).is_empty(),
                "the HPA holds on its last value or an error"
            );
        }
    }

    #[test]
    fn replica_fallback_serves_the_composite_fallback_value() {
        let f = Fallback {
            failure_threshold: 2,
            replicas: 4,
            behavior: FallbackBehavior::Static,
        };
        let (s, c) = composite("a + b", Some(f));
        let mut m = TickMemory::default();
        let fail = || [sampled(1.0), PollResult::Failed("down".into())];
        let out = decide_composite(&s, &c, 1, 2, fail(), &mut m);
        assert!(out.metrics.iter().all(|w| !w.failed), "below the threshold");
        let out = decide_composite(&s, &c, 2, 2, fail(), &mut m);
        assert_eq!(out.write.as_ref().map(|w| w.replicas), Some(4));
        // 4 replicas × target 5; no per-trigger fallback value (the HPA does not read them).
        assert_eq!(composite_writes(&out), vec![(20.0, true)]);
        assert!(
            out.metrics
                .iter()
                .all(|w| w.metric == MetricSlot::Composite || !w.failed)
        );
    }

    #[test]
    fn scaling_modifiers_fallback_substitutes_failing_triggers() {
        let f = Fallback {
            failure_threshold: 2,
            replicas: 4,
            behavior: FallbackBehavior::ScalingModifiers,
        };
        let (s, c) = composite("a ?? b * 3", Some(f.clone()));
        let mut m = TickMemory::default();
        let fail = || [PollResult::Failed("down".into()), sampled(5.0)];
        let out = decide_composite(&s, &c, 1, 2, fail(), &mut m);
        assert_eq!(
            out.replicas.unwrap().activity,
            Activity::Unknown,
            "below the threshold"
        );
        let out = decide_composite(&s, &c, 2, 2, fail(), &mut m);
        let d = out.replicas.unwrap();
        assert_eq!(
            (d.activity, d.fallback, d.write_replicas),
            (Activity::Active, false, None)
        );
        assert_eq!(composite_writes(&out), vec![(15.0, true)]);
        // Both failing: nil, so fallback.replicas, also from zero.
        let (s, c) = composite("a ?? b", Some(f));
        let mut m = TickMemory::default();
        let both = || {
            [
                PollResult::Failed("down".into()),
                PollResult::Failed("down".into()),
            ]
        };
        decide_composite(&s, &c, 1, 0, both(), &mut m);
        let out = decide_composite(&s, &c, 2, 0, both(), &mut m);
        assert_eq!(
            out.write.as_ref().map(|w| w.replicas),
            Some(1),
            "activated: 4 × 5 > 2"
        );
        assert_eq!(composite_writes(&out), vec![(20.0, true)]);
    }
}
