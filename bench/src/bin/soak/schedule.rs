//! The flap schedule: for one broker, `cycles` stop/start cycles spread over the run, each in its
//! own equal slot: a random down time within bounds, a random start within the slot that leaves
//! `settle` after the start for the broker to boot and ebb to read it again, and TERM or KILL at
//! random. Seeded (splitmix64), so `EBB_BENCH_SEED` reproduces a run's schedule.

use std::time::Duration;

pub(crate) use ebb_bench::rng::Rng;

/// How a broker is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGTERM, a clean shutdown (the verb waits up to 20 s for it).
    Term,
    /// SIGKILL to the process group, as a crash.
    Kill,
}

impl Signal {
    /// The name `testenv.sh proc-down` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        }
    }
}

/// One planned stop/start of a broker, relative to the start of the soak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Flap {
    /// When the broker is stopped.
    pub(crate) down_at: Duration,
    /// How long after `down_at` it is started again.
    pub(crate) down_for: Duration,
    pub(crate) signal: Signal,
}

/// The bounds of a schedule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// The whole soak.
    pub(crate) length: Duration,
    /// Stop/start cycles in it.
    pub(crate) cycles: usize,
    /// Shortest and longest down time.
    pub(crate) min_down: Duration,
    pub(crate) max_down: Duration,
    /// Time kept free after each start (boot, recovery) before the slot ends.
    pub(crate) settle: Duration,
}

/// One broker's flaps: cycle `i` lies in slot `[i·w, (i+1)·w)` with `w = length / cycles`, its
/// down time uniform in `[min_down, min(max_down, w − settle)]` and its stop uniform in the part
/// of the slot that leaves `settle` after the start. Flaps never overlap and are in order.
pub(crate) fn flaps(bounds: &Bounds, rng: &mut Rng) -> Vec<Flap> {
    let cycles = bounds.cycles.max(1);
    let slot = bounds.length / cycles as u32;
    let longest = bounds
        .max_down
        .min(slot.saturating_sub(bounds.settle))
        .max(bounds.min_down);
    (0..bounds.cycles)
        .map(|i| {
            let down_for = rng.between(bounds.min_down, longest);
            let room = slot.saturating_sub(down_for + bounds.settle);
            let down_at = slot * i as u32 + rng.between(Duration::ZERO, room);
            let signal = if rng.next_u64() & 1 == 0 {
                Signal::Term
            } else {
                Signal::Kill
            };
            Flap {
                down_at,
                down_for,
                signal,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(length: u64, cycles: usize) -> Bounds {
        Bounds {
            length: Duration::from_secs(length),
            cycles,
            min_down: Duration::from_secs(2),
            max_down: Duration::from_secs(16),
            settle: Duration::from_secs(12),
        }
    }

    #[test]
    fn flaps_stay_in_their_slots_and_within_the_bounds() {
        let b = bounds(600, 20);
        let mut rng = Rng(42);
        let f = flaps(&b, &mut rng);
        assert_eq!(f.len(), 20);
        let slot = Duration::from_secs(30);
        for (i, flap) in f.iter().enumerate() {
            let start = slot * i as u32;
            assert!(flap.down_at >= start, "{i}: {flap:?}");
            assert!(
                flap.down_for >= b.min_down && flap.down_for <= b.max_down,
                "{flap:?}"
            );
            // The start leaves `settle` before the slot ends.
            assert!(
                flap.down_at + flap.down_for + b.settle <= start + slot,
                "{i}: {flap:?}"
            );
        }
        // Both signals and a spread of down times occur.
        assert!(f.iter().any(|x| x.signal == Signal::Term));
        assert!(f.iter().any(|x| x.signal == Signal::Kill));
        let longest = f.iter().map(|x| x.down_for).max().unwrap();
        let shortest = f.iter().map(|x| x.down_for).min().unwrap();
        assert!(longest > Duration::from_secs(10) && shortest < Duration::from_secs(6));
    }

    #[test]
    fn the_seed_fixes_the_schedule_and_brokers_differ() {
        let b = bounds(600, 20);
        assert_eq!(flaps(&b, &mut Rng(7)), flaps(&b, &mut Rng(7)));
        assert_ne!(flaps(&b, &mut Rng(7)), flaps(&b, &mut Rng(8)));
    }

    #[test]
    fn a_short_run_keeps_the_minimum_down_time() {
        // Slots of 10 s with 12 s of settle: the down time falls back to the minimum, at the
        // slot's start, and nothing underflows.
        let f = flaps(&bounds(30, 3), &mut Rng(1));
        assert_eq!(f.len(), 3);
        for (i, flap) in f.iter().enumerate() {
            assert_eq!(flap.down_for, Duration::from_secs(2));
            assert_eq!(flap.down_at, Duration::from_secs(10) * i as u32);
        }
        assert!(flaps(&bounds(600, 0), &mut Rng(1)).is_empty());
    }
}
