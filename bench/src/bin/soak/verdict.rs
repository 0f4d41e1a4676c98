//! The soak's judgements, pure: whether each replica change is justified by what the source
//! said, the recovery figures of a broker, connection growth, and the overall verdict.

use std::time::Duration;

use serde_json::{Value, json};

/// A replica change the Deployment watch saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    /// Since the soak started.
    pub(crate) at: Duration,
    pub(crate) object: String,
    pub(crate) from: i32,
    pub(crate) to: i32,
}

/// What a broker was doing at some moment, from the driver's record of its flaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerState {
    /// Serving, and ebb has read it again since its last start.
    Healthy,
    /// Stopped (from the stop command until the start command).
    Down,
    /// Started, not yet serving (booting; for SQS, until the queues are back).
    Starting,
    /// Serving, ebb has not read it successfully yet since the start.
    Recovering,
}

impl BrokerState {
    /// Whether ebb's triggers on the broker may be failing (the window in which a scale to 0
    /// is the bug issue 15 names).
    pub(crate) fn trigger_may_error(self) -> bool {
        self != BrokerState::Healthy
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            BrokerState::Healthy => "healthy",
            BrokerState::Down => "down",
            BrokerState::Starting => "starting",
            BrokerState::Recovering => "recovering",
        }
    }
}

/// One flap as it happened, relative to the soak's start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FlapRecord {
    pub(crate) down_at: Duration,
    pub(crate) up_at: Duration,
    /// When the broker served again (the driver's readiness check; SQS: queues recreated).
    pub(crate) serving_at: Option<Duration>,
    /// When the driver began putting the source back (SQS only: moto forgets its queues). From
    /// then until the backlog is whole, the source truly holds 0 to all of its messages.
    pub(crate) refill_at: Option<Duration>,
    /// When ebb read it again (see `flapper`); `None`: not within the bound.
    pub(crate) recovered_at: Option<Duration>,
}

impl FlapRecord {
    /// Recovery: from the broker serving again to ebb reading it again.
    pub(crate) fn recovery(&self) -> Option<Duration> {
        Some(self.recovered_at?.saturating_sub(self.serving_at?))
    }
}

/// The broker's state at `t`, from its flaps (in order). After a flap that never recovered,
/// the broker counts as recovering until its next stop.
pub(crate) fn state_at(flaps: &[FlapRecord], t: Duration) -> BrokerState {
    let Some(f) = flaps.iter().rev().find(|f| f.down_at <= t) else {
        return BrokerState::Healthy;
    };
    if t < f.up_at {
        BrokerState::Down
    } else if f.serving_at.is_none_or(|s| t < s) {
        BrokerState::Starting
    } else if f.recovered_at.is_none_or(|r| t < r) {
        BrokerState::Recovering
    } else {
        BrokerState::Healthy
    }
}

/// Whether `change` can come from a value the source truly held while the driver put it back
/// (a refill ramps from 0 to the whole backlog): within `window` after the refill ended (the
/// next poll and HPA sync), to a count from 1 (the HPA's floor) to `expected`.
pub(crate) fn refill_explains(
    flaps: &[FlapRecord],
    change: &Change,
    expected: i32,
    window: Duration,
) -> bool {
    (1..=expected).contains(&change.to)
        && flaps.iter().any(|f| match (f.refill_at, f.serving_at) {
            (Some(from), Some(to)) => from <= change.at && change.at <= to + window,
            _ => false,
        })
}

/// The judgement of one change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Judged {
    pub(crate) justified: bool,
    /// Justified only by a value the source held while the driver refilled it.
    pub(crate) by_refill: bool,
    /// A scale to 0 while the broker's trigger may have been failing.
    pub(crate) zero_while_erroring: bool,
    pub(crate) state: BrokerState,
}

/// A change is justified when it moves the object to what its source says: `expected`
/// replicas (the source's backlog never changes during the soak, so any other count is wrong;
/// a move back to `expected` after a wrong one is the correction, and justified), or, when
/// `refill` (see [`refill_explains`]), to what the source said while it was being refilled.
pub(crate) fn judge(change: &Change, expected: i32, state: BrokerState, refill: bool) -> Judged {
    let by_refill = change.to != expected && refill;
    let justified = change.to == expected || by_refill;
    Judged {
        justified,
        by_refill,
        zero_while_erroring: !justified && change.to == 0 && state.trigger_may_error(),
        state,
    }
}

/// p50, p99 and max of the recoveries in milliseconds, and how many flaps never recovered.
pub(crate) fn recovery_figures(flaps: &[FlapRecord]) -> Value {
    let mut times: Vec<Duration> = flaps.iter().filter_map(FlapRecord::recovery).collect();
    times.sort();
    let never = flaps.len() - times.len();
    let ms = |q: f64| {
        let v = ebb_bench::quantile_ms(&times, q);
        if v.is_nan() { Value::Null } else { json!(v.round()) }
    };
    json!({"flaps": flaps.len(), "recovered": times.len(), "never": never,
           "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0)})
}

/// Connection counts of one broker (summed over its ports): at the start, after every
/// recovery, at the end.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Connections {
    pub(crate) initial: usize,
    pub(crate) samples: Vec<usize>,
    pub(crate) last: usize,
}

impl Connections {
    /// The most seen at any count.
    pub(crate) fn max(&self) -> usize {
        self.samples
            .iter()
            .copied()
            .chain([self.initial, self.last])
            .max()
            .unwrap_or(0)
    }

    /// Whether the count grew beyond the initial one plus `slack`, at any sample or at the end.
    pub(crate) fn grew(&self, slack: usize) -> bool {
        self.max() > self.initial + slack
    }
}

/// What the verdict is made of, per broker.
#[derive(Debug, Clone)]
pub(crate) struct BrokerOutcome {
    pub(crate) name: &'static str,
    pub(crate) flaps: Vec<FlapRecord>,
    pub(crate) planned: usize,
    pub(crate) changes: Vec<(Change, Judged)>,
    pub(crate) connections: Connections,
}

/// Pass or fail, with every reason for a fail: an unjustified change (worse: a scale to 0 while
/// the trigger erred), a flap not recovered or recovered slower than `bound`, fewer flaps than
/// planned, connection growth beyond `slack`.
pub(crate) fn verdict(outcomes: &[BrokerOutcome], bound: Duration, slack: usize) -> (bool, Vec<String>) {
    let mut reasons = Vec::new();
    for o in outcomes {
        let name = o.name;
        for (c, j) in o.changes.iter().filter(|(_, j)| !j.justified) {
            let what = if j.zero_while_erroring {
                "scale to 0 while the trigger may have erred"
            } else {
                "unjustified replica change"
            };
            reasons.push(format!(
                "{name}: {what}: {} {}→{} at {:.1} s (broker {})",
                c.object,
                c.from,
                c.to,
                c.at.as_secs_f64(),
                j.state.name()
            ));
        }
        if o.flaps.len() < o.planned {
            reasons.push(format!("{name}: {} of {} flaps ran", o.flaps.len(), o.planned));
        }
        let never = o.flaps.iter().filter(|f| f.recovery().is_none()).count();
        if never > 0 {
            reasons.push(format!(
                "{name}: {never} flaps without recovery within {} s",
                bound.as_secs()
            ));
        }
        let slow = o
            .flaps
            .iter()
            .filter_map(FlapRecord::recovery)
            .filter(|r| *r > bound)
            .count();
        if slow > 0 {
            reasons.push(format!(
                "{name}: {slow} recoveries slower than {} s",
                bound.as_secs()
            ));
        }
        if o.connections.grew(slack) {
            reasons.push(format!(
                "{name}: connections grew from {} to {} (final {})",
                o.connections.initial,
                o.connections.max(),
                o.connections.last
            ));
        }
    }
    (reasons.is_empty(), reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    fn flap(down: u64, up: u64, serving: Option<u64>, recovered: Option<u64>) -> FlapRecord {
        FlapRecord {
            down_at: s(down),
            up_at: s(up),
            serving_at: serving.map(s),
            refill_at: None,
            recovered_at: recovered.map(s),
        }
    }

    fn change(to: i32) -> Change {
        Change {
            at: s(12),
            object: "kafka-n".into(),
            from: 3,
            to,
        }
    }

    #[test]
    fn the_broker_state_follows_the_flaps() {
        let flaps = [flap(10, 20, Some(25), Some(30)), flap(40, 45, Some(46), None)];
        assert_eq!(state_at(&flaps, s(5)), BrokerState::Healthy);
        assert_eq!(state_at(&flaps, s(10)), BrokerState::Down);
        assert_eq!(state_at(&flaps, s(22)), BrokerState::Starting);
        assert_eq!(state_at(&flaps, s(27)), BrokerState::Recovering);
        assert_eq!(state_at(&flaps, s(35)), BrokerState::Healthy);
        // Never recovered: recovering until the end.
        assert_eq!(state_at(&flaps, s(100)), BrokerState::Recovering);
    }

    #[test]
    fn only_a_move_to_what_the_source_says_is_justified() {
        let j = judge(&change(0), 3, BrokerState::Down, false);
        assert!(!j.justified && j.zero_while_erroring);
        let j = judge(&change(0), 3, BrokerState::Healthy, false);
        assert!(!j.justified && !j.zero_while_erroring);
        let j = judge(&change(2), 3, BrokerState::Recovering, false);
        assert!(!j.justified && !j.zero_while_erroring);
        // Back to 3 after a wrong move: the correction.
        let back = Change { from: 2, ..change(3) };
        assert!(judge(&back, 3, BrokerState::Healthy, false).justified);
        // An idle object scaled up is wrong too.
        let up = Change { from: 0, ..change(1) };
        assert!(!judge(&up, 0, BrokerState::Starting, false).justified);
    }

    #[test]
    fn a_refill_explains_only_counts_its_ramp_reaches_and_only_near_it() {
        let mut f = flap(40, 45, Some(47), Some(49));
        let window = s(8);
        let at = |t: u64, to: i32| Change {
            at: s(t),
            object: "sqs-backlog".into(),
            from: 3,
            to,
        };
        // No refill recorded (Kafka, RabbitMQ, NATS): nothing is explained.
        assert!(!refill_explains(&[f.clone()], &at(47, 2), 3, window));
        f.refill_at = Some(s(46));
        assert!(refill_explains(&[f.clone()], &at(47, 2), 3, window));
        assert!(refill_explains(&[f.clone()], &at(55, 1), 3, window));
        assert!(
            !refill_explains(&[f.clone()], &at(56, 2), 3, window),
            "too long after"
        );
        assert!(
            !refill_explains(&[f.clone()], &at(45, 2), 3, window),
            "before the refill"
        );
        assert!(
            !refill_explains(&[f.clone()], &at(47, 0), 3, window),
            "0 needs a cooldown of inactivity"
        );
        assert!(
            !refill_explains(&[f.clone()], &at(47, 4), 3, window),
            "above the backlog"
        );
        let j = judge(&at(47, 2), 3, BrokerState::Recovering, true);
        assert!(j.justified && j.by_refill && !j.zero_while_erroring);
    }

    #[test]
    fn recovery_figures_count_the_flaps_never_recovered() {
        let flaps = [
            flap(0, 5, Some(6), Some(8)),
            flap(20, 25, Some(26), Some(27)),
            flap(40, 45, Some(46), None),
        ];
        let f = recovery_figures(&flaps);
        assert_eq!(f["recovered"], 2);
        assert_eq!(f["never"], 1);
        assert_eq!(f["max_ms"], 2000.0);
        assert_eq!(recovery_figures(&[])["p50_ms"], Value::Null);
    }

    #[test]
    fn connection_growth_is_measured_against_the_start() {
        let c = Connections {
            initial: 2,
            samples: vec![2, 3, 4],
            last: 2,
        };
        assert_eq!(c.max(), 4);
        assert!(!c.grew(2));
        assert!(c.grew(1));
    }

    fn outcome(changes: Vec<(Change, Judged)>, flaps: Vec<FlapRecord>) -> BrokerOutcome {
        BrokerOutcome {
            name: "kafka",
            planned: flaps.len(),
            flaps,
            changes,
            connections: Connections {
                initial: 1,
                samples: vec![1],
                last: 1,
            },
        }
    }

    #[test]
    fn the_verdict_names_every_failure() {
        let good = flap(0, 5, Some(6), Some(8));
        let (pass, reasons) = verdict(&[outcome(vec![], vec![good.clone()])], s(15), 2);
        assert!(pass, "{reasons:?}");

        let bad = change(0);
        let judged = judge(&bad, 3, BrokerState::Down, false);
        let slow = flap(20, 25, Some(26), Some(60));
        let never = flap(70, 75, None, None);
        let mut o = outcome(vec![(bad, judged)], vec![good, slow, never]);
        o.planned = 4;
        o.connections.last = 9;
        let (pass, reasons) = verdict(&[o], s(15), 2);
        assert!(!pass);
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(reasons[0].contains("scale to 0 while the trigger may have erred"));
        assert!(reasons.iter().any(|r| r.contains("3 of 4 flaps")));
        assert!(reasons.iter().any(|r| r.contains("1 flaps without recovery")));
        assert!(reasons.iter().any(|r| r.contains("1 recoveries slower")));
        assert!(reasons.iter().any(|r| r.contains("grew from 1 to 9")));
    }
}
