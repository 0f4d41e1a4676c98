//! The kafka trigger's arithmetic, free of I/O: a partition's lag, the totals, the replica cap, and
//! the metric value from which the HPA computes exactly the desired replica count.
//!
//! # The replica cap, done right
//!
//! KEDA clamps the *metric* when `totalLag / lagThreshold` (an integer division) exceeds the
//! partition count, and reports the lag otherwise. A lag between `P·T` and `(P+1)·T` is then not
//! clamped, and the HPA's `ceil(lag / T)` asks for `P + 1` replicas (KEDA #4483). ebb computes the
//! replica count itself, [`desired_replicas`] = `min(ceil(lag / T), cap)`, and reports a value `V`
//! with `ceil(V / T) == desired` ([`hpa_metric_value`]), so the HPA never asks for more than the cap.
//!
//! # What the HPA's tolerance still does
//!
//! For an `AverageValue` target the HPA keeps the current replicas `R` when `V / (T·R)` lies within
//! `[0.9, 1.1]`, and takes `ceil(V / T)` otherwise. No value whose ceiling is `desired` can leave
//! that band when `R = desired − 1` and `desired ≥ 11` (it would need `V/T > 1.1·R`), so from
//! close below, a large `desired` is reached only if `R < V/(1.1·T)`; symmetrically a scale-down
//! from close above needs `R > V/(0.9·T)`. This is KEDA #2908 (64 partitions, stuck at 63), and a
//! metric value alone cannot fix it: the HPA's own tolerance (configurable per HPA from Kubernetes
//! 1.33) or a `maxReplicas` equal to the cap would. What the choice of `V` can do:
//!
//! - The HPA's answer is always `R` or `desired`, never anything else (no overshoot).
//! - When the lag is not capped, `V = (desired − 0.05)·T`: scale-up is exact from any `R` up to
//!   `desired = 10`, scale-down is exact from any `R` down to `desired = 9` (with `V = desired·T`
//!   only down to 8). The 0.05 survives the adapter's milli precision for any whole `T`.
//! - When the cap binds, the demand is above the cap, so only scaling up matters: `V = cap·T`, the
//!   largest value whose ceiling is the cap (the same value KEDA reports there, so never worse).

/// What a partition without a committed offset counts as (`offsetResetPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetResetPolicy {
    /// The consumer would start at the end: lag 1 (KEDA's choice), or 0 with
    /// `scaleToZeroOnInvalidOffset`.
    #[default]
    Latest,
    /// The consumer would start at the beginning: the whole log, or 0 with
    /// `scaleToZeroOnInvalidOffset`.
    Earliest,
}

/// How a partition's lag is read: the trigger's policy flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LagPolicy {
    /// `offsetResetPolicy`.
    pub offset_reset: OffsetResetPolicy,
    /// `scaleToZeroOnInvalidOffset`: a partition without a commit counts 0.
    pub scale_to_zero_on_invalid_offset: bool,
    /// `excludePersistentLag`: a partition whose committed offset did not move since the previous
    /// poll counts 0 for the metric (but still counts for activation).
    pub exclude_persistent_lag: bool,
}

/// One partition's lag: for the metric, and with persistent lag included (for activation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionLag {
    /// The lag the metric counts.
    pub lag: i64,
    /// The lag including persistent lag (what activation compares).
    pub lag_with_persistent: i64,
}

/// A partition's lag, as KEDA computes it (`getLagForPartition`), with negative lags clamped to 0.
///
/// - `committed`: the group's committed offset; `None` or a negative value means none.
/// - `log_end`: the partition's log-end offset; `None` when the ListOffsets answer did not
///   include the partition (lag 0, as KEDA does for Event Hubs).
/// - `previous_committed`: the committed offset seen by this trigger's previous poll, for
///   `excludePersistentLag`.
///
/// Order (KEDA's): no commit with `latest` → 1 (0 with `scaleToZeroOnInvalidOffset`) whatever the
/// log end; then a missing log end → 0; then no commit with `earliest` → the log end (0 with
/// `scaleToZeroOnInvalidOffset`); then `log_end − committed`, which counts 0 for the metric when
/// `excludePersistentLag` is set and the commit has not moved since the previous poll.
pub fn partition_lag(
    committed: Option<i64>,
    log_end: Option<i64>,
    previous_committed: Option<i64>,
    policy: &LagPolicy,
) -> PartitionLag {
    let both = |lag: i64| PartitionLag {
        lag,
        lag_with_persistent: lag,
    };
    let committed = committed.filter(|c| *c >= 0);
    if committed.is_none() && policy.offset_reset == OffsetResetPolicy::Latest {
        return both(if policy.scale_to_zero_on_invalid_offset {
            0
        } else {
            1
        });
    }
    let Some(log_end) = log_end else {
        return both(0);
    };
    let Some(committed) = committed else {
        // Earliest.
        return both(if policy.scale_to_zero_on_invalid_offset {
            0
        } else {
            log_end.max(0)
        });
    };
    let lag = log_end.saturating_sub(committed).max(0);
    if policy.exclude_persistent_lag && previous_committed == Some(committed) {
        return PartitionLag {
            lag: 0,
            lag_with_persistent: lag,
        };
    }
    both(lag)
}

/// A trigger's lag over all its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LagSummary {
    /// Total lag the metric counts (persistent lag excluded when asked).
    pub total_lag: i64,
    /// Total lag with persistent lag (what activation compares).
    pub total_lag_with_persistent: i64,
    /// Partitions counted (after `partitionLimitation`).
    pub partitions: u64,
    /// Partitions whose metric lag is above 0.
    pub partitions_with_lag: u64,
}

impl LagSummary {
    /// Adds one partition.
    pub fn add(&mut self, lag: PartitionLag) {
        self.total_lag = self.total_lag.saturating_add(lag.lag.max(0));
        self.total_lag_with_persistent = self
            .total_lag_with_persistent
            .saturating_add(lag.lag_with_persistent.max(0));
        self.partitions += 1;
        if lag.lag > 0 {
            self.partitions_with_lag += 1;
        }
    }

    /// The summary of these partitions.
    pub fn of(lags: impl IntoIterator<Item = PartitionLag>) -> Self {
        let mut summary = Self::default();
        for lag in lags {
            summary.add(lag);
        }
        summary
    }
}

/// Activation: active iff the lag, persistent lag included, is above `activationLagThreshold`.
pub fn is_active(summary: &LagSummary, activation_lag_threshold: i64) -> bool {
    summary.total_lag_with_persistent > activation_lag_threshold
}

/// The flags that shape the replica cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapPolicy {
    /// `allowIdleConsumers`: no cap.
    pub allow_idle_consumers: bool,
    /// `limitToPartitionsWithLag`: the cap is the number of partitions with lag.
    pub limit_to_partitions_with_lag: bool,
    /// `ensureEvenDistributionOfPartitions`: round the replica count up to a factor of the
    /// partition count.
    pub ensure_even_distribution: bool,
}

/// The most replicas worth running: the partition count, the partitions with lag
/// (`limitToPartitionsWithLag`), or none (`allowIdleConsumers`).
pub fn replica_cap(summary: &LagSummary, policy: CapPolicy) -> Option<u64> {
    if policy.limit_to_partitions_with_lag {
        Some(summary.partitions_with_lag)
    } else if policy.allow_idle_consumers {
        None
    } else {
        Some(summary.partitions)
    }
}

/// The smallest factor of `n` that is at least `at_least` (`n` itself when nothing smaller fits;
/// `at_least` when `n` is 0 or smaller than `at_least`).
pub fn next_factor(n: u64, at_least: u64) -> u64 {
    if n == 0 || at_least > n {
        return at_least;
    }
    if at_least <= 1 {
        return 1;
    }
    // Factors come in pairs (f, n/f) around √n: the answer is the smallest of the candidates.
    let mut best = n;
    let mut f = 1u64;
    while f.saturating_mul(f) <= n {
        if n.is_multiple_of(f) {
            let pair = n / f;
            if f >= at_least {
                best = best.min(f);
            }
            if pair >= at_least {
                best = best.min(pair);
            }
        }
        f += 1;
    }
    best
}

/// The replica count the trigger asks for: `min(ceil(total_lag / lag_threshold), cap)`, rounded up
/// to a factor of the partition count with `ensureEvenDistributionOfPartitions` (still within the
/// cap). 0 when there is no lag. With `allowIdleConsumers` and more replicas than partitions, no
/// factor exists and the count is left as it is (KEDA would report 0 there).
pub fn desired_replicas(summary: &LagSummary, lag_threshold: i64, policy: CapPolicy) -> u64 {
    let threshold = lag_threshold.max(1) as u64;
    let lag = summary.total_lag.max(0) as u64;
    let cap = replica_cap(summary, policy);
    let mut desired = lag.div_ceil(threshold);
    if let Some(cap) = cap {
        desired = desired.min(cap);
    }
    if policy.ensure_even_distribution && desired > 0 && desired <= summary.partitions {
        desired = next_factor(summary.partitions, desired);
    }
    if let Some(cap) = cap {
        desired = desired.min(cap);
    }
    desired
}

/// The margin (in units of the threshold) below `desired·T` reported when the cap does not bind;
/// see the module documentation.
pub const UNCAPPED_MARGIN: f64 = 0.05;

/// The metric value for `desired` replicas: 0 for 0; `desired·T` when `capped` (the cap binds);
/// else `(desired − 0.05)·T`. In every case `ceil(value / T) == desired`.
pub fn metric_value_for_replicas(desired: u64, lag_threshold: i64, capped: bool) -> f64 {
    if desired == 0 {
        return 0.0;
    }
    let threshold = lag_threshold.max(1) as f64;
    let desired = desired as f64;
    if capped {
        desired * threshold
    } else {
        (desired - UNCAPPED_MARGIN) * threshold
    }
}

/// The value to report for the HPA (an `AverageValue` target of `lag_threshold`): one from which
/// the HPA's `ceil(V / T)` gives exactly [`desired_replicas`].
pub fn hpa_metric_value(summary: &LagSummary, lag_threshold: i64, policy: CapPolicy) -> f64 {
    let desired = desired_replicas(summary, lag_threshold, policy);
    let threshold = lag_threshold.max(1) as u64;
    let uncapped = (summary.total_lag.max(0) as u64).div_ceil(threshold);
    metric_value_for_replicas(desired, lag_threshold, desired < uncapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The HPA's replica computation for one External metric with an AverageValue target
    /// (`GetExternalPerPodMetricReplicas`), on milli-values as the HPA reads them, tolerance 0.1.
    /// `legacy` is the form before Kubernetes 1.33 (`|1 − ratio| > 0.1`), else the current one
    /// (`0.9 ≤ ratio ≤ 1.1` keeps the replicas).
    fn hpa_desired_with(current: u64, value: f64, target: f64, legacy: bool) -> u64 {
        // The adapter serves milli precision, rounded to nearest.
        let usage = (value * 1000.0).round() as i64;
        let target = (target * 1000.0).round() as i64;
        let ratio = usage as f64 / (target as f64 * current as f64);
        let within = if legacy {
            (1.0 - ratio).abs() <= 0.1
        } else {
            // Kubernetes ≥ 1.33: within when 1 − tolerance ≤ ratio ≤ 1 + tolerance.
            ((1.0 - 0.1)..=(1.0 + 0.1)).contains(&ratio)
        };
        if within {
            current
        } else {
            (usage as f64 / target as f64).ceil() as u64
        }
    }

    /// The HPA model used by the properties: the current form.
    fn hpa_desired(current: u64, value: f64, target: f64) -> u64 {
        hpa_desired_with(current, value, target, false)
    }

    /// KEDA's clamp (`getTotalLag`), for comparison: integer division, metric = lag unless clamped.
    fn keda_metric(total_lag: i64, threshold: i64, partitions: i64) -> f64 {
        if total_lag / threshold > partitions {
            (partitions * threshold) as f64
        } else {
            total_lag as f64
        }
    }

    fn policy(reset: OffsetResetPolicy, zero: bool, persistent: bool) -> LagPolicy {
        LagPolicy {
            offset_reset: reset,
            scale_to_zero_on_invalid_offset: zero,
            exclude_persistent_lag: persistent,
        }
    }

    fn summary(lag: i64, partitions: u64, with_lag: u64) -> LagSummary {
        LagSummary {
            total_lag: lag,
            total_lag_with_persistent: lag,
            partitions,
            partitions_with_lag: with_lag,
        }
    }

    #[test]
    fn partition_lag_follows_keda() {
        use OffsetResetPolicy::*;
        let lag = |c, e, prev, p: LagPolicy| partition_lag(c, e, prev, &p).lag;
        // Committed: end − committed.
        assert_eq!(lag(Some(4), Some(10), None, policy(Latest, false, false)), 6);
        // No commit, latest: 1 (even when the log end is missing), 0 with scaleToZero.
        assert_eq!(lag(None, Some(10), None, policy(Latest, false, false)), 1);
        assert_eq!(lag(Some(-1), None, None, policy(Latest, false, false)), 1);
        assert_eq!(lag(None, Some(10), None, policy(Latest, true, false)), 0);
        // No commit, earliest: the whole log, 0 with scaleToZero.
        assert_eq!(lag(None, Some(10), None, policy(Earliest, false, false)), 10);
        assert_eq!(lag(Some(-1), Some(10), None, policy(Earliest, true, false)), 0);
        // Missing from the ListOffsets answer: 0.
        assert_eq!(lag(Some(3), None, None, policy(Earliest, false, false)), 0);
        assert_eq!(lag(None, None, None, policy(Earliest, false, false)), 0);
        // Negative lag (commit beyond the end) counts 0 instead of subtracting from the rest.
        assert_eq!(lag(Some(12), Some(10), None, policy(Latest, false, false)), 0);
    }

    #[test]
    fn persistent_lag_counts_only_for_activation() {
        let p = policy(OffsetResetPolicy::Latest, false, true);
        // First poll: no previous offset, counts.
        assert_eq!(
            partition_lag(Some(4), Some(10), None, &p),
            PartitionLag {
                lag: 6,
                lag_with_persistent: 6
            }
        );
        // Unchanged since the previous poll: 0 for the metric, 6 for activation.
        assert_eq!(
            partition_lag(Some(4), Some(10), Some(4), &p),
            PartitionLag {
                lag: 0,
                lag_with_persistent: 6
            }
        );
        // Moved: counts again.
        assert_eq!(partition_lag(Some(5), Some(10), Some(4), &p).lag, 5);
        // Without the flag the previous offset is ignored.
        let q = policy(OffsetResetPolicy::Latest, false, false);
        assert_eq!(partition_lag(Some(4), Some(10), Some(4), &q).lag, 6);
        let s = LagSummary::of([
            partition_lag(Some(4), Some(10), Some(4), &p),
            partition_lag(Some(0), Some(2), None, &p),
        ]);
        assert_eq!(s, summary_with(2, 8, 2, 1));
        assert!(is_active(&s, 7) && !is_active(&s, 8));
    }

    fn summary_with(lag: i64, with_persistent: i64, partitions: u64, with_lag: u64) -> LagSummary {
        LagSummary {
            total_lag: lag,
            total_lag_with_persistent: with_persistent,
            partitions,
            partitions_with_lag: with_lag,
        }
    }

    #[test]
    fn keda_issue_4483_one_replica_too_many_is_gone() {
        // 3 partitions, T = 10, lag 35: KEDA reports 35 → ceil(3.5) = 4 replicas.
        let s = summary(35, 3, 3);
        let none = CapPolicy::default();
        assert_eq!(hpa_desired(1, keda_metric(35, 10, 3), 10.0), 4);
        assert_eq!(desired_replicas(&s, 10, none), 3);
        let v = hpa_metric_value(&s, 10, none);
        assert_eq!(v, 30.0);
        assert_eq!(hpa_desired(1, v, 10.0), 3);
    }

    #[test]
    fn caps() {
        let s = summary(1000, 6, 2);
        let t = 10;
        assert_eq!(desired_replicas(&s, t, CapPolicy::default()), 6);
        let idle = CapPolicy {
            allow_idle_consumers: true,
            ..Default::default()
        };
        assert_eq!(desired_replicas(&s, t, idle), 100);
        let with_lag = CapPolicy {
            limit_to_partitions_with_lag: true,
            ..Default::default()
        };
        assert_eq!(desired_replicas(&s, t, with_lag), 2);
        let even = CapPolicy {
            ensure_even_distribution: true,
            ..Default::default()
        };
        // 6 partitions: factors 1, 2, 3, 6.
        assert_eq!(desired_replicas(&summary(31, 6, 6), t, even), 6);
        assert_eq!(desired_replicas(&summary(21, 6, 6), t, even), 3);
        assert_eq!(desired_replicas(&summary(11, 6, 6), t, even), 2);
        assert_eq!(desired_replicas(&summary(0, 6, 0), t, even), 0);
        // KEDA reports 0 when the lag exceeds every factor; ebb stays at the partition count.
        assert_eq!(desired_replicas(&summary(10_000, 6, 6), t, even), 6);
        // Even distribution with more replicas than partitions (allowIdleConsumers): unchanged.
        let even_idle = CapPolicy {
            ensure_even_distribution: true,
            allow_idle_consumers: true,
            ..Default::default()
        };
        assert_eq!(desired_replicas(&summary(95, 6, 6), t, even_idle), 10);
        assert_eq!(desired_replicas(&summary(45, 6, 6), t, even_idle), 6);
        // No partitions: nothing to consume.
        assert_eq!(desired_replicas(&summary(5, 0, 0), t, CapPolicy::default()), 0);
    }

    #[test]
    fn factors() {
        assert_eq!(next_factor(12, 5), 6);
        assert_eq!(next_factor(12, 4), 4);
        assert_eq!(next_factor(7, 2), 7);
        assert_eq!(next_factor(64, 33), 64);
        assert_eq!(next_factor(1, 1), 1);
        assert_eq!(next_factor(0, 3), 3);
        assert_eq!(next_factor(5, 9), 9);
    }

    #[test]
    fn metric_values() {
        assert_eq!(metric_value_for_replicas(0, 10, false), 0.0);
        assert_eq!(metric_value_for_replicas(3, 10, false), 29.5);
        assert_eq!(metric_value_for_replicas(3, 10, true), 30.0);
        // Uncapped: lag 21, T 10 → 3 replicas, value 29.5.
        assert_eq!(
            hpa_metric_value(&summary(21, 6, 6), 10, CapPolicy::default()),
            29.5
        );
        // Capped at 6 by the partition count.
        assert_eq!(
            hpa_metric_value(&summary(200, 6, 6), 10, CapPolicy::default()),
            60.0
        );
    }

    #[test]
    fn tolerance_residuals_are_what_the_docs_say() {
        // #2908: from 63 replicas, a cap of 64 cannot be reached through an AverageValue metric.
        let s = summary(10_000, 64, 64);
        let v = hpa_metric_value(&s, 10, CapPolicy::default());
        assert_eq!(hpa_desired(63, v, 10.0), 63);
        assert_eq!(hpa_desired(57, v, 10.0), 64);
        // Uncapped, scale-down from 10 to 9 works thanks to the margin (9·T would not).
        let nine = summary(85, 100, 100);
        let v = hpa_metric_value(&nine, 10, CapPolicy::default());
        assert_eq!(desired_replicas(&nine, 10, CapPolicy::default()), 9);
        assert_eq!(hpa_desired(10, v, 10.0), 9);
        assert_eq!(hpa_desired(10, 90.0, 10.0), 10);
    }

    fn cap_policy() -> impl Strategy<Value = CapPolicy> {
        (0u8..3, any::<bool>()).prop_map(|(cap, even)| CapPolicy {
            allow_idle_consumers: cap == 1,
            limit_to_partitions_with_lag: cap == 2,
            ensure_even_distribution: even,
        })
    }

    fn arbitrary_summary() -> impl Strategy<Value = LagSummary> {
        (0u64..200, 0i64..1_000_000).prop_flat_map(|(partitions, lag)| {
            (0..=partitions).prop_map(move |with_lag| summary(lag, partitions, with_lag))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        // ceil(V/T) is exactly the desired count, which never exceeds the cap.
        #[test]
        fn value_maps_back_to_desired(s in arbitrary_summary(), t in 1i64..5000, p in cap_policy()) {
            let desired = desired_replicas(&s, t, p);
            let v = hpa_metric_value(&s, t, p);
            if let Some(cap) = replica_cap(&s, p) {
                prop_assert!(desired <= cap);
            }
            // The adapter serves milli precision; the HPA reads milli-values.
            let milli = (v * 1000.0).round() as i64;
            prop_assert_eq!((milli as f64 / (t * 1000) as f64).ceil() as u64, desired);
            if !p.ensure_even_distribution {
                let uncapped = (s.total_lag as u64).div_ceil(t as u64);
                prop_assert_eq!(desired, replica_cap(&s, p).map_or(uncapped, |c| uncapped.min(c)));
            } else if desired > 0 && desired <= s.partitions
                && replica_cap(&s, p).is_none_or(|c| desired < c) {
                prop_assert_eq!(s.partitions % desired, 0);
            }
        }

        // For every current replica count the HPA answers either the current count (inside its
        // tolerance band) or exactly the desired count: never one more than the cap (#4483).
        #[test]
        fn hpa_answers_current_or_desired(
            s in arbitrary_summary(), t in 1i64..5000, p in cap_policy(), current in 1u64..400, legacy in any::<bool>(),
        ) {
            let desired = desired_replicas(&s, t, p);
            let v = hpa_metric_value(&s, t, p);
            let got = hpa_desired_with(current, v, t as f64, legacy);
            prop_assert!(got == current || got == desired, "current {} desired {} got {}", current, desired, got);
            if let Some(cap) = replica_cap(&s, p) && current <= cap {
                prop_assert!(got <= cap);
            }
            // Outside the band the answer is exact.
            let x = v / t as f64;
            if desired > 0 && (x > 1.1 * current as f64 + 1e-6 || x < 0.9 * current as f64 - 1e-6) {
                prop_assert_eq!(got, desired);
            }
        }

        // Scaling up is exact from any count up to 10 replicas, and scaling down to 9 replicas
        // or fewer is exact from any count when the cap does not bind (8 when it does).
        #[test]
        fn small_counts_are_exact(
            desired in 1u64..=10, t in 1i64..5000, current in 1u64..400, partitions in 1u64..200,
            legacy in any::<bool>(), capped in any::<bool>(),
        ) {
            let p = CapPolicy::default();
            let (lag, partitions) = if capped {
                (desired as i64 * t * 3, desired)
            } else {
                (desired as i64 * t - (t - 1).min(t / 2), partitions.max(desired))
            };
            let s = summary(lag, partitions, partitions);
            prop_assert_eq!(desired_replicas(&s, t, p), desired);
            let v = hpa_metric_value(&s, t, p);
            let got = hpa_desired_with(current, v, t as f64, legacy);
            let down_limit = if capped { 8 } else { 9 };
            if current < desired || desired <= down_limit {
                prop_assert_eq!(got, desired, "current {}", current);
            }
        }

        // More lag never means fewer replicas.
        #[test]
        fn monotone_in_lag(s in arbitrary_summary(), extra in 0i64..100_000, t in 1i64..500, p in cap_policy()) {
            let more = LagSummary { total_lag: s.total_lag + extra, ..s };
            prop_assert!(desired_replicas(&more, t, p) >= desired_replicas(&s, t, p));
        }

        // Lag is never negative and the persistent part never exceeds the whole.
        #[test]
        fn partition_lag_bounds(
            committed in prop::option::of(-5i64..1000), end in prop::option::of(-1i64..1000),
            prev in prop::option::of(0i64..1000), latest in any::<bool>(), zero in any::<bool>(), pers in any::<bool>(),
        ) {
            let reset = if latest { OffsetResetPolicy::Latest } else { OffsetResetPolicy::Earliest };
            let l = partition_lag(committed, end, prev, &policy(reset, zero, pers));
            prop_assert!(l.lag >= 0 && l.lag <= l.lag_with_persistent);
        }
    }
}
