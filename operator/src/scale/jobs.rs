//! How many Jobs a ScaledJob creates this tick: [`decide_jobs`], a pure function of the trigger
//! readings, the Jobs that exist and the ScaledJob's policy. The executor (the ScaledJob's loop)
//! counts Jobs from a watch-fed index and creates what this says; nothing here deletes a Job.
//!
//! KEDA's algorithm (`pkg/scaling/executor/scale_jobs.go`, `pkg/scaling/scaledjob/metrics.go`),
//! with its over- and under-provisioning fixed (each difference is a test below):
//! 1. Each trigger gives a queue length and a target; its wanted jobs are `queue / target`, at
//!    most `maxReplicaCount`. The active triggers combine by `multipleScalersCalculation` (max:
//!    the trigger with the longest queue; min: the shortest; avg; sum). The object is active when
//!    a trigger is, or when `minReplicaCount` > 0. `maxScale` = ceil(wanted), at most the max.
//! 2. Below `minReplicaCount` running Jobs, the missing ones are created, whatever the triggers
//!    say. Above it, the strategy decides with `r` = running − min (the min Jobs wait for work; the
//!    others are the queue's):
//!    - default: `maxScale − r`;
//!    - custom: `maxScale − deduction − floor(r × percentage)`;
//!    - accurate: `maxScale − pending` (the pending Jobs will take queued messages; the running
//!      ones took theirs already);
//!    - eager: `maxScale`, filling free slots at once.
//!
//!    and at most `ceil(queue)` Jobs (one per message) except under eager.
//! 3. **ebb's caps** (KEDA's bugs): never more than `maxReplicaCount − running` Jobs, so running
//!    Jobs never exceed the max (KEDA's custom strategy and its min-replica offset could, #6148);
//!    pending Jobs are part of the running ones and are not subtracted twice (KEDA's eager
//!    strategy did, under-provisioning); a trigger that fails makes the tick create nothing beyond
//!    the `minReplicaCount` floor (KEDA went on with the other triggers, which for `min` and `avg`
//!    can over-provision); paused creates nothing.

/// One trigger's reading this tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JobReading {
    /// The trigger answered.
    Value {
        /// Its metric: messages waiting.
        queue_length: f64,
        /// Messages per Job (the trigger's target; > 0).
        target: f64,
        /// Above its activation threshold.
        active: bool,
    },
    /// The trigger failed: the queue is unknown.
    Failed,
}

/// The Jobs of a ScaledJob, from the Job index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobCounts {
    /// Jobs not finished (neither Complete nor Failed), pending ones included.
    pub running: i64,
    /// Of those, Jobs whose pods have not started (or not met `pendingPodConditions`).
    pub pending: i64,
}

/// `scalingStrategy.strategy`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// `maxScale − running`.
    Default,
    /// `maxScale − deduction − running × percentage`.
    Custom {
        /// `customScalingQueueLengthDeduction`.
        deduction: i64,
        /// `customScalingRunningJobPercentage`.
        running_percentage: f64,
    },
    /// `maxScale − pending`.
    Accurate,
    /// Every free slot up to `maxScale`.
    Eager,
}

/// `scalingStrategy.multipleScalersCalculation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Calculation {
    /// The trigger with the longest queue.
    #[default]
    Max,
    /// The trigger with the shortest queue.
    Min,
    /// The average of the active triggers.
    Avg,
    /// The sum of the active triggers.
    Sum,
}

/// What a ScaledJob's spec says about creating Jobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobPolicy {
    /// `minReplicaCount`.
    pub min: i64,
    /// `maxReplicaCount`.
    pub max: i64,
    /// `scalingStrategy.strategy` and its parameters.
    pub strategy: Strategy,
    /// `scalingStrategy.multipleScalersCalculation`.
    pub calculation: Calculation,
}

/// Why a tick creates what it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobReason {
    /// Paused: nothing is created.
    Paused,
    /// A trigger failed: only the `minReplicaCount` floor is kept.
    TriggerFailed,
    /// No trigger is active and no minimum is set.
    Inactive,
    /// Fewer Jobs run than `minReplicaCount`.
    BelowMin,
    /// The strategy's answer.
    Strategy,
    /// The strategy wanted more, but `maxReplicaCount` Jobs would run.
    CappedAtMax,
}

/// A tick's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobDecision {
    /// Jobs to create now (≥ 0).
    pub create: i64,
    /// Whether a trigger is active (`None`: unknown, a trigger failed and none is active).
    pub active: Option<bool>,
    /// Messages waiting, combined (ceil).
    pub queue_length: i64,
    /// Jobs the queue wants (ceil, at most the max).
    pub max_scale: i64,
    /// Why.
    pub reason: JobReason,
}

/// The combined queue length and wanted Jobs (before ceil), and whether any trigger is active.
fn combine(readings: &[JobReading], calculation: Calculation, max: i64) -> (f64, f64, bool) {
    let active: Vec<(f64, f64)> = readings
        .iter()
        .filter_map(|r| match *r {
            JobReading::Value {
                queue_length,
                target,
                active: true,
            } if queue_length.is_finite() && target.is_finite() && target > 0.0 => {
                let queue = queue_length.max(0.0);
                Some((queue, (queue / target).min(max as f64)))
            }
            _ => None,
        })
        .collect();
    if active.is_empty() {
        return (0.0, 0.0, false);
    }
    let n = active.len() as f64;
    let (queue, wanted) = match calculation {
        Calculation::Max => active
            .iter()
            .copied()
            .fold((f64::MIN, 0.0), |best, x| if x.0 > best.0 { x } else { best }),
        Calculation::Min => active
            .iter()
            .copied()
            .fold((f64::MAX, 0.0), |best, x| if x.0 < best.0 { x } else { best }),
        Calculation::Avg => {
            let (q, w) = active.iter().fold((0.0, 0.0), |s, x| (s.0 + x.0, s.1 + x.1));
            (q / n, w / n)
        }
        Calculation::Sum => active.iter().fold((0.0, 0.0), |s, x| (s.0 + x.0, s.1 + x.1)),
    };
    (queue, wanted.min(max as f64), true)
}

/// Converts a non-negative float to a count, saturating (NaN is 0).
fn ceil_count(x: f64) -> i64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= i64::MAX as f64 {
        i64::MAX
    } else {
        x.ceil() as i64
    }
}

/// The Jobs to create this tick.
pub fn decide_jobs(
    readings: &[JobReading],
    counts: JobCounts,
    policy: &JobPolicy,
    paused: bool,
) -> JobDecision {
    let max = policy.max.max(0);
    let min = policy.min.clamp(0, max);
    let running = counts.running.max(0);
    let pending = counts.pending.clamp(0, running);
    let failed = readings.iter().any(|r| matches!(r, JobReading::Failed));
    let (queue, wanted, any_active) = combine(readings, policy.calculation, max);
    let queue_length = ceil_count(queue);
    let max_scale = ceil_count(wanted).min(max);
    let active = match (any_active, failed) {
        (true, _) => Some(true),
        (false, true) => None,
        (false, false) => Some(false),
    };
    let decision = |create: i64, reason| JobDecision {
        create: create.max(0),
        active,
        queue_length,
        max_scale,
        reason,
    };
    let room = (max - running).max(0);
    let floor = (min - running).max(0);
    if paused {
        return decision(0, JobReason::Paused);
    }
    if failed {
        return decision(floor, JobReason::TriggerFailed);
    }
    if floor > 0 {
        return decision(floor, JobReason::BelowMin);
    }
    if !any_active && min == 0 {
        return decision(0, JobReason::Inactive);
    }
    // The Jobs beyond the minimum are the queue's.
    let r = running - min;
    let wanted_now = match policy.strategy {
        Strategy::Default => max_scale - r,
        Strategy::Custom {
            deduction,
            running_percentage,
        } => {
            let pct = if running_percentage.is_finite() {
                running_percentage.clamp(0.0, 1.0)
            } else {
                0.0
            };
            max_scale
                .saturating_sub(deduction.max(0))
                .saturating_sub((r as f64 * pct).floor() as i64)
        }
        Strategy::Accurate => max_scale - pending,
        Strategy::Eager => max_scale,
    };
    // One Job per message at most (KEDA's `scaleTo`), except eager, which fills slots.
    let per_message = match policy.strategy {
        Strategy::Eager => wanted_now,
        _ => wanted_now.min(queue_length),
    };
    if per_message > room {
        decision(room, JobReason::CappedAtMax)
    } else {
        decision(per_message, JobReason::Strategy)
    }
}

/// The finished Jobs to delete so that at most `limit` remain: the oldest first (by the time they
/// ended, then by name; a Job without a time counts as oldest). `finished` holds `(name, ended at)`
/// of one kind (Complete or Failed).
pub fn over_history_limit(finished: &[(String, Option<String>)], limit: i64) -> Vec<String> {
    let keep = usize::try_from(limit.max(0)).unwrap_or(usize::MAX);
    if finished.len() <= keep {
        return Vec::new();
    }
    let mut by_age: Vec<&(String, Option<String>)> = finished.iter().collect();
    // RFC 3339 times in UTC ("Z") sort as text.
    by_age.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    by_age
        .into_iter()
        .take(finished.len() - keep)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The unfinished Jobs `rollout.strategy: default` deletes when the ScaledJob changed: those
/// created from an older generation (a Job without a generation is left alone).
pub fn superseded(jobs: &[(String, bool, Option<i64>)], generation: i64) -> Vec<String> {
    jobs.iter()
        .filter(|(_, finished, g)| !finished && g.is_some_and(|g| g < generation))
        .map(|(name, _, _)| name.clone())
        .collect()
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
