//! A model of the Kubernetes HPA controller (`pkg/controller/podautoscaler`) for the one HPA ebb
//! owns: External metrics of type AverageValue or Value, read as milli-values; the replica count
//! per metric with the tolerance; the maximum over the metrics (a failing metric blocks a
//! scale-down, all failing block everything); `minReplicas`/`maxReplicas`; and either the
//! controller's path without `behavior` (300 s scale-down stabilization, scale-up limited to
//! `max(2 × current, 4)` per sync) or the `behavior` path (stabilization windows over the
//! recommendation history, rate limits by policies over their period, counted from the replica
//! count at the period's start, `selectPolicy` Max/Min/Disabled). Pure: the simulation hands in
//! the time, the replica count and the served values, and gets the count the HPA writes.
//!
//! Not modelled: pod readiness (a Value metric multiplies by every current replica, the HPA by
//! its ready pods), missing pods, CPU initialization periods.

use ebb_crds::MetricType;
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// The HPA controller's default tolerance (`--horizontal-pod-autoscaler-tolerance`).
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// The controller's default scale-down stabilization (`--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DEFAULT_DOWNSCALE_WINDOW_SECS: i64 = 300;

/// How the policies of one direction combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the largest change (the default).
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One scaling policy: at most `value` pods or percent per `period_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `Pods` (true) or `Percent` (false).
    pub pods: bool,
    /// The value.
    pub value: i32,
    /// `periodSeconds`.
    pub period_secs: i64,
}

/// The scaling rules of one direction, defaults filled in as the API server and controller do.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// `stabilizationWindowSeconds`.
    pub window_secs: i64,
    /// `selectPolicy`.
    pub select: Select,
    /// `policies`.
    pub policies: Vec<Policy>,
    /// `tolerance` (Kubernetes ≥ 1.33), else the controller's.
    pub tolerance: Option<f64>,
}

impl Rules {
    /// Kubernetes' scale-up defaults: no stabilization, 100 % or 4 pods per 15 s, the larger.
    pub fn default_up() -> Rules {
        Rules {
            window_secs: 0,
            select: Select::Max,
            policies: vec![
                Policy {
                    pods: false,
                    value: 100,
                    period_secs: 15,
                },
                Policy {
                    pods: true,
                    value: 4,
                    period_secs: 15,
                },
            ],
            tolerance: None,
        }
    }

    /// Kubernetes' scale-down defaults: a 300 s window, 100 % per 15 s.
    pub fn default_down() -> Rules {
        Rules {
            window_secs: DEFAULT_DOWNSCALE_WINDOW_SECS,
            select: Select::Max,
            policies: vec![Policy {
                pods: false,
                value: 100,
                period_secs: 15,
            }],
            tolerance: None,
        }
    }

    /// The rules as written, each missing field taken from `default`.
    fn from_api(r: Option<&HPAScalingRules>, default: Rules) -> Rules {
        let Some(r) = r else { return default };
        let select = match r.select_policy.as_deref() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        };
        let policies = match &r.policies {
            Some(p) => p
                .iter()
                .map(|p| Policy {
                    pods: p.type_ == "Pods",
                    value: p.value,
                    period_secs: i64::from(p.period_seconds.max(0)),
                })
                .collect(),
            None => default.policies,
        };
        Rules {
            window_secs: r
                .stabilization_window_seconds
                .map_or(default.window_secs, |s| i64::from(s.max(0))),
            select,
            policies,
            tolerance: r
                .tolerance
                .as_ref()
                .and_then(|q| ebb_scalers::common::quantity::parse_quantity(&q.0)),
        }
    }

    fn longest_period(&self) -> i64 {
        self.policies.iter().map(|p| p.period_secs).max().unwrap_or(0)
    }
}

/// The HPA's `behavior`: absent (the controller's older path), or both directions' rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// No `behavior` on the HPA.
    Unset,
    /// `behavior`, defaults filled in.
    Set {
        /// `scaleUp`.
        up: Rules,
        /// `scaleDown`.
        down: Rules,
    },
}

impl Behavior {
    /// From the HPA spec's `behavior`.
    pub fn from_api(b: Option<&HorizontalPodAutoscalerBehavior>) -> Behavior {
        match b {
            None => Behavior::Unset,
            Some(b) => Behavior::Set {
                up: Rules::from_api(b.scale_up.as_ref(), Rules::default_up()),
                down: Rules::from_api(b.scale_down.as_ref(), Rules::default_down()),
            },
        }
    }
}

/// One External metric of the HPA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaMetricSpec {
    /// The target, as its quantity's milli-value.
    pub target_milli: i64,
    /// AverageValue or Value.
    pub metric_type: MetricType,
}

/// The HPA's spec, as the model needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaSpec {
    /// `minReplicas` (at least 1 for ebb's HPA).
    pub min: i32,
    /// `maxReplicas`.
    pub max: i32,
    /// The metrics.
    pub metrics: Vec<HpaMetricSpec>,
    /// `behavior`.
    pub behavior: Behavior,
    /// The controller's tolerance.
    pub tolerance: f64,
}

/// A value as the HPA reads it: the quantity's milli-value (the adapter rounds to milli
/// precision; negative and non-finite values are served as 0).
pub fn milli(value: f64) -> i64 {
    if !value.is_finite() || value <= 0.0 {
        return 0;
    }
    (value * 1000.0).round().min(i64::MAX as f64) as i64
}

fn within(ratio: f64, up: f64, down: f64) -> bool {
    (1.0 - down) <= ratio && ratio <= (1.0 + up)
}

/// The replica count one metric asks for (`GetExternalPerPodMetricReplicas` for AverageValue,
/// `GetExternalMetricReplicas` for Value, every current replica counted as ready).
pub fn metric_replicas(
    spec: HpaMetricSpec,
    usage_milli: i64,
    current: i32,
    up_tol: f64,
    down_tol: f64,
) -> i32 {
    let target = spec.target_milli.max(1) as f64;
    let usage = usage_milli as f64;
    let current_f = f64::from(current);
    let (ratio, wanted) = match spec.metric_type {
        MetricType::AverageValue => (usage / (target * current_f), (usage / target).ceil()),
        MetricType::Value => (usage / target, (usage / target * current_f).ceil()),
    };
    if current > 0 && within(ratio, up_tol, down_tol) {
        current
    } else if current == 0 && spec.metric_type == MetricType::Value {
        (usage / target).ceil().min(f64::from(i32::MAX)) as i32
    } else {
        wanted.min(f64::from(i32::MAX)) as i32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamped {
    value: i32,
    at_ms: i64,
}

/// Why the HPA did what it did at a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncNote {
    /// The target is at 0: scaling is disabled (ebb owns 0↔1).
    ScalingDisabled,
    /// No metric could be read, or one failed and the others would scale down.
    MetricsFailed,
    /// A count was computed (possibly the current one).
    Computed,
}

/// The outcome of one HPA sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sync {
    /// The metrics' recommendation (before stabilization and limits), when computed.
    pub recommended: Option<i32>,
    /// The count the HPA wants after stabilization and limits (the current one when it does
    /// not scale).
    pub desired: i32,
    /// Why.
    pub note: SyncNote,
}

/// The HPA controller's memory of one HPA: recommendations and scale events.
#[derive(Debug, Clone, Default)]
pub struct HpaState {
    recommendations: Vec<Stamped>,
    up_events: Vec<Stamped>,
    down_events: Vec<Stamped>,
}

impl HpaState {
    /// One sync at `now_ms` with the target at `current` replicas and each metric's served
    /// milli-value (`None`: the adapter answered with an error). The caller writes
    /// [`Sync::desired`] when it differs from `current`.
    pub fn sync(&mut self, spec: &HpaSpec, now_ms: i64, current: i32, usage: &[Option<i64>]) -> Sync {
        if self.recommendations.is_empty() {
            self.recommendations.push(Stamped {
                value: current,
                at_ms: now_ms,
            });
        }
        let unchanged = |note| Sync {
            recommended: None,
            desired: current,
            note,
        };
        if current == 0 && spec.min != 0 {
            return unchanged(SyncNote::ScalingDisabled);
        }
        let desired = if current > spec.max {
            spec.max
        } else if current < spec.min {
            spec.min
        } else {
            let (up_tol, down_tol) = match &spec.behavior {
                Behavior::Set { up, down } => (
                    up.tolerance.unwrap_or(spec.tolerance),
                    down.tolerance.unwrap_or(spec.tolerance),
                ),
                Behavior::Unset => (spec.tolerance, spec.tolerance),
            };
            let mut best: Option<i32> = None;
            let mut invalid = 0;
            for (m, u) in spec.metrics.iter().zip(usage) {
                match u {
                    Some(u) => {
                        let r = metric_replicas(*m, *u, current, up_tol, down_tol);
                        best = Some(best.map_or(r, |b| b.max(r)));
                    }
                    None => invalid += 1,
                }
            }
            invalid += spec.metrics.len().saturating_sub(usage.len());
            let Some(recommended) = best.filter(|r| invalid == 0 || *r >= current) else {
                return unchanged(SyncNote::MetricsFailed);
            };
            let desired = match &spec.behavior {
                Behavior::Unset => self.normalize_legacy(spec, now_ms, current, recommended),
                Behavior::Set { up, down } => {
                    self.normalize_with(spec, up, down, now_ms, current, recommended)
                }
            };
            if desired != current
                && let Behavior::Set { up, down } = &spec.behavior
            {
                self.store_event(up, down, now_ms, current, desired);
            }
            return Sync {
                recommended: Some(recommended),
                desired,
                note: SyncNote::Computed,
            };
        };
        Sync {
            recommended: None,
            desired,
            note: SyncNote::Computed,
        }
    }

    /// Without `behavior`: the highest recommendation of the last 300 s, then at most
    /// `max(2 × current, 4)`, within min and max.
    fn normalize_legacy(&mut self, spec: &HpaSpec, now_ms: i64, current: i32, recommended: i32) -> i32 {
        let cutoff = now_ms - DEFAULT_DOWNSCALE_WINDOW_SECS * 1000;
        let mut stabilized = recommended;
        let mut old = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at_ms < cutoff {
                old = Some(i);
            } else {
                stabilized = stabilized.max(r.value);
            }
        }
        self.remember(old, recommended, now_ms);
        let up_limit = (f64::from(current) * 2.0).max(4.0) as i32;
        let max = spec.max.min(up_limit);
        if stabilized < spec.min {
            spec.min
        } else if stabilized > max {
            max
        } else {
            stabilized
        }
    }

    fn remember(&mut self, old: Option<usize>, value: i32, now_ms: i64) {
        let stamped = Stamped { value, at_ms: now_ms };
        match old.and_then(|i| self.recommendations.get_mut(i)) {
            Some(slot) => *slot = stamped,
            None => self.recommendations.push(stamped),
        }
    }

    /// With `behavior`: the stabilization window of the direction over the recommendation
    /// history, then the rate limits.
    fn normalize_with(
        &mut self,
        spec: &HpaSpec,
        up: &Rules,
        down: &Rules,
        now_ms: i64,
        current: i32,
        recommended: i32,
    ) -> i32 {
        let scaling_up = recommended >= current;
        let window = if scaling_up {
            up.window_secs
        } else {
            down.window_secs
        };
        let cutoff = now_ms - window * 1000;
        let obsolete = now_ms - up.window_secs.max(down.window_secs) * 1000;
        let mut stabilized = recommended;
        let mut old = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at_ms > cutoff {
                stabilized = if scaling_up {
                    stabilized.min(r.value)
                } else {
                    stabilized.max(r.value)
                };
            }
            if r.at_ms < obsolete {
                old = Some(i);
            }
        }
        self.remember(old, recommended, now_ms);
        if stabilized > current {
            let limit = self.up_limit(up, now_ms, current).max(current);
            stabilized.min(spec.max.min(limit))
        } else if stabilized < current {
            let limit = self.down_limit(down, now_ms, current).min(current);
            stabilized.max(spec.min.max(limit))
        } else {
            stabilized
        }
    }

    fn changed_within(events: &[Stamped], period_secs: i64, now_ms: i64) -> i32 {
        let cutoff = now_ms - period_secs * 1000;
        events
            .iter()
            .filter(|e| e.at_ms > cutoff)
            .map(|e| e.value)
            .fold(0i32, i32::saturating_add)
    }

    /// The most replicas the scale-up policies allow now.
    fn up_limit(&self, rules: &Rules, now_ms: i64, current: i32) -> i32 {
        let mut result = match rules.select {
            Select::Disabled => return current,
            Select::Min => i32::MAX,
            Select::Max => i32::MIN,
        };
        for p in &rules.policies {
            let start = current - Self::changed_within(&self.up_events, p.period_secs, now_ms)
                + Self::changed_within(&self.down_events, p.period_secs, now_ms);
            let proposed = if p.pods {
                start.saturating_add(p.value)
            } else {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            };
            result = match rules.select {
                Select::Min => result.min(proposed),
                _ => result.max(proposed),
            };
        }
        if rules.policies.is_empty() {
            current
        } else {
            result
        }
    }

    /// The fewest replicas the scale-down policies allow now.
    fn down_limit(&self, rules: &Rules, now_ms: i64, current: i32) -> i32 {
        let mut result = match rules.select {
            Select::Disabled => return current,
            Select::Min => i32::MIN,
            Select::Max => i32::MAX,
        };
        for p in &rules.policies {
            let start = current + Self::changed_within(&self.down_events, p.period_secs, now_ms)
                - Self::changed_within(&self.up_events, p.period_secs, now_ms);
            let proposed = if p.pods {
                start.saturating_sub(p.value)
            } else {
                (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
            };
            result = match rules.select {
                Select::Min => result.max(proposed),
                _ => result.min(proposed),
            };
        }
        if rules.policies.is_empty() {
            current
        } else {
            result
        }
    }

    /// Remembers a scale event, reusing the slot of one older than the direction's longest
    /// policy period.
    fn store_event(&mut self, up: &Rules, down: &Rules, now_ms: i64, from: i32, to: i32) {
        let (events, rules, change) = if to > from {
            (&mut self.up_events, up, to - from)
        } else {
            (&mut self.down_events, down, from - to)
        };
        let cutoff = now_ms - rules.longest_period() * 1000;
        let event = Stamped {
            value: change,
            at_ms: now_ms,
        };
        match events.iter().rposition(|e| e.at_ms < cutoff) {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avg(target: i64) -> HpaMetricSpec {
        HpaMetricSpec {
            target_milli: target * 1000,
            metric_type: MetricType::AverageValue,
        }
    }

    fn spec(behavior: Behavior) -> HpaSpec {
        HpaSpec {
            min: 1,
            max: 100,
            metrics: vec![avg(10)],
            behavior,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    fn defaults() -> Behavior {
        Behavior::Set {
            up: Rules::default_up(),
            down: Rules::default_down(),
        }
    }

    fn v(x: f64) -> Vec<Option<i64>> {
        vec![Some(milli(x))]
    }

    #[test]
    fn tolerance_keeps_the_count_within_ten_percent() {
        // 4 replicas, target 10: 43 is a ratio of 1.075 (kept), 45 of 1.125 (ceil(4.5) = 5).
        assert_eq!(metric_replicas(avg(10), milli(43.0), 4, 0.1, 0.1), 4);
        assert_eq!(metric_replicas(avg(10), milli(45.0), 4, 0.1, 0.1), 5);
        // 37 is 0.925: kept; 35 is 0.875: ceil(3.5) = 4... which is the current count.
        assert_eq!(metric_replicas(avg(10), milli(37.0), 4, 0.1, 0.1), 4);
        assert_eq!(metric_replicas(avg(10), milli(25.0), 4, 0.1, 0.1), 3);
        // Value: ratio 2 with 3 replicas gives ceil(2 × 3) = 6; within tolerance the count stays.
        let value = HpaMetricSpec {
            target_milli: 10_000,
            metric_type: MetricType::Value,
        };
        assert_eq!(metric_replicas(value, milli(20.0), 3, 0.1, 0.1), 6);
        assert_eq!(metric_replicas(value, milli(10.5), 3, 0.1, 0.1), 3);
    }

    #[test]
    fn the_highest_metric_wins_and_a_failing_one_blocks_scale_down() {
        let mut s = spec(Behavior::Set {
            up: Rules::default_up(),
            down: Rules {
                window_secs: 0,
                ..Rules::default_down()
            },
        });
        s.metrics = vec![avg(10), avg(10)];
        let mut h = HpaState::default();
        assert_eq!(
            h.sync(&s, 0, 2, &[Some(milli(30.0)), Some(milli(50.0))]).desired,
            5
        );
        // One failing, the other wants fewer: no scale-down.
        let out = h.sync(&s, 15_000, 5, &[None, Some(milli(10.0))]);
        assert_eq!((out.desired, out.note), (5, SyncNote::MetricsFailed));
        // One failing, the other wants more: scale up.
        assert_eq!(h.sync(&s, 30_000, 5, &[None, Some(milli(80.0))]).desired, 8);
        assert_eq!(h.sync(&s, 45_000, 8, &[None, None]).note, SyncNote::MetricsFailed);
    }

    #[test]
    fn default_scale_up_is_the_larger_of_100_percent_and_4_pods_per_15s() {
        let s = spec(defaults());
        let mut h = HpaState::default();
        // 1 → wants 50: max(2, 1 + 4) = 5.
        assert_eq!(h.sync(&s, 0, 1, &v(500.0)).desired, 5);
        // 5 s later, same period: the period started at 1, so still 5.
        assert_eq!(h.sync(&s, 5_000, 5, &v(500.0)).desired, 5);
        // 15 s after the first event: the period starts at 5: max(10, 9) = 10.
        assert_eq!(h.sync(&s, 15_000, 5, &v(500.0)).desired, 10);
        assert_eq!(h.sync(&s, 30_000, 10, &v(500.0)).desired, 20);
        assert_eq!(h.sync(&s, 45_000, 20, &v(500.0)).desired, 40);
        assert_eq!(h.sync(&s, 60_000, 40, &v(500.0)).desired, 50);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let s = spec(defaults());
        let mut h = HpaState::default();
        assert_eq!(h.sync(&s, 0, 5, &v(50.0)).desired, 5);
        // Load gone: the window holds 5 while the 5 recorded at t=0 is less than 300 s old (a
        // recommendation counts when strictly after now − window).
        for t in (15..300).step_by(15) {
            assert_eq!(h.sync(&s, t * 1000, 5, &v(10.0)).desired, 5, "t={t}");
        }
        assert_eq!(h.sync(&s, 300_000, 5, &v(10.0)).desired, 1);
    }

    #[test]
    fn scale_down_policies_limit_the_rate() {
        let s = spec(Behavior::Set {
            up: Rules::default_up(),
            down: Rules {
                window_secs: 0,
                select: Select::Max,
                policies: vec![Policy {
                    pods: true,
                    value: 2,
                    period_secs: 60,
                }],
                tolerance: None,
            },
        });
        let mut h = HpaState::default();
        assert_eq!(h.sync(&s, 0, 10, &v(10.0)).desired, 8);
        // Within the 60 s period: the period started at 10, so 8 is the floor.
        assert_eq!(h.sync(&s, 30_000, 8, &v(10.0)).desired, 8);
        assert_eq!(h.sync(&s, 61_000, 8, &v(10.0)).desired, 6);
    }

    #[test]
    fn select_min_and_disabled() {
        let mut up = Rules::default_up();
        up.select = Select::Min;
        let s = spec(Behavior::Set {
            up,
            down: Rules::default_down(),
        });
        // min(2 × 3, 3 + 4) = 6.
        assert_eq!(HpaState::default().sync(&s, 0, 3, &v(500.0)).desired, 6);
        let mut up = Rules::default_up();
        up.select = Select::Disabled;
        let s = spec(Behavior::Set {
            up,
            down: Rules::default_down(),
        });
        assert_eq!(HpaState::default().sync(&s, 0, 3, &v(500.0)).desired, 3);
    }

    #[test]
    fn without_behavior_the_older_path_applies() {
        let s = spec(Behavior::Unset);
        let mut h = HpaState::default();
        // max(2 × 1, 4) = 4 (the behavior defaults would allow 5).
        assert_eq!(h.sync(&s, 0, 1, &v(500.0)).desired, 4);
        assert_eq!(h.sync(&s, 15_000, 4, &v(500.0)).desired, 8);
        // Scale-down stabilized for 300 s after the last high recommendation (t=15).
        assert_eq!(
            h.sync(&s, 30_000, 8, &v(10.0)).desired,
            16,
            "the 50s of the window, at most 2 × 8"
        );
        let mut h = HpaState::default();
        h.sync(&s, 0, 8, &v(80.0));
        assert_eq!(h.sync(&s, 299_000, 8, &v(10.0)).desired, 8);
        assert_eq!(h.sync(&s, 301_000, 8, &v(10.0)).desired, 1);
    }

    #[test]
    fn zero_replicas_disable_the_hpa_and_bounds_apply() {
        let s = spec(defaults());
        let out = HpaState::default().sync(&s, 0, 0, &v(500.0));
        assert_eq!((out.desired, out.note), (0, SyncNote::ScalingDisabled));
        let mut s = spec(defaults());
        s.max = 3;
        assert_eq!(HpaState::default().sync(&s, 0, 7, &v(500.0)).desired, 3);
        assert_eq!(HpaState::default().sync(&s, 0, 2, &v(500.0)).desired, 3);
    }

    #[test]
    fn behavior_defaults_fill_missing_fields() {
        let b: HorizontalPodAutoscalerBehavior = serde_json::from_value(serde_json::json!({
            "scaleDown": {"stabilizationWindowSeconds": 10},
            "scaleUp": {"selectPolicy": "Disabled"}
        }))
        .unwrap();
        let Behavior::Set { up, down } = Behavior::from_api(Some(&b)) else {
            panic!("set")
        };
        assert_eq!(
            (up.select, up.window_secs, up.policies.len()),
            (Select::Disabled, 0, 2)
        );
        assert_eq!(
            (down.window_secs, down.policies),
            (10, Rules::default_down().policies)
        );
        assert_eq!(Behavior::from_api(None), Behavior::Unset);
    }
}
