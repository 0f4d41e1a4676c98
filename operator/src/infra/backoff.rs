//! Exponential backoff with jitter, as a pure function of the attempt number and a jitter draw,
//! shared by the start-up retries, HPA discovery, the reconciler's requeue of failed objects and
//! the watches ([`WatchBackoff`]).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use tokio::time::Instant;

/// An exponential backoff: `base × 2^(attempt−1)`, capped at `cap`, then spread by ±25 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure (before jitter).
    pub base: Duration,
    /// Largest delay (before jitter).
    pub cap: Duration,
}

impl Backoff {
    /// The delay after the `attempt`-th consecutive failure (1 = the first), with `jitter` in
    /// `[0, 1)` spreading it over `[0.75, 1.25) ×` the nominal delay (out-of-range draws are
    /// clamped, a non-number counts as 0.5), so objects or replicas that failed together do not retry together.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let nominal = self
            .base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.cap)
            .min(self.cap);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.5
        };
        nominal.mul_f64(0.75 + 0.5 * jitter)
    }
}

/// A jitter draw in `[0, 1)` for `key` (hashed with this process's random seed and the clock),
/// so concurrent retries spread out without a random-number crate.
pub fn jitter(key: impl Hash) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let h = RandomState::new().hash_one((key, nanos));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Backoff of a failing watch: 1 s doubling to 30 s, ±25 %.
pub const WATCH_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(30),
};

/// A watch that saw no error for this long starts its backoff over.
pub const WATCH_RESET_AFTER: Duration = Duration::from_secs(120);

/// The backoff of a kube watcher stream (`.backoff(WatchBackoff::default())`). kube's watcher
/// yields `Init` before every re-list and kube's `default_backoff` resets on every item, so while
/// the list keeps failing its delay never grows past the first (~1 s). This one ignores resets:
/// it grows with consecutive errors ([`WATCH_BACKOFF`]) and starts over only after
/// [`WATCH_RESET_AFTER`] without an error.
#[derive(Debug, Default)]
pub struct WatchBackoff {
    attempt: u32,
    last_error: Option<Instant>,
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if self
            .last_error
            .is_some_and(|t| now.saturating_duration_since(t) > WATCH_RESET_AFTER)
        {
            self.attempt = 0;
        }
        self.attempt = self.attempt.saturating_add(1);
        self.last_error = Some(now);
        Some(WATCH_BACKOFF.delay(self.attempt, jitter(self.attempt)))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(30),
    };

    #[test]
    fn doubles_per_attempt_up_to_the_cap() {
        let mid = |n| B.delay(n, 0.5);
        assert_eq!(mid(1), Duration::from_secs(1));
        assert_eq!(mid(2), Duration::from_secs(2));
        assert_eq!(mid(5), Duration::from_secs(16));
        assert_eq!(mid(6), Duration::from_secs(30));
        assert_eq!(mid(1000), Duration::from_secs(30));
        assert_eq!(mid(0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_by_a_quarter_either_way() {
        assert_eq!(B.delay(3, 0.0), Duration::from_secs(3));
        assert_eq!(B.delay(3, 1.0), Duration::from_secs(5));
        assert_eq!(B.delay(3, -4.0), Duration::from_secs(3));
        assert_eq!(B.delay(3, f64::NAN), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_backoff_grows_through_resets_and_starts_over_after_quiet() {
        use kube::runtime::utils::Backoff as _;
        let mut b = WatchBackoff::default();
        let mut nominal = Vec::new();
        for _ in 0..7 {
            let d = b.next().expect("never gives up");
            // kube resets on the `Init` item that precedes every re-list: ignored.
            b.reset();
            tokio::time::advance(d).await;
            nominal.push(d.as_secs_f64());
        }
        for (d, n) in nominal.iter().zip([1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]) {
            assert!((0.75 * n..=1.25 * n).contains(d), "{nominal:?}");
        }
        tokio::time::advance(WATCH_RESET_AFTER + Duration::from_secs(1)).await;
        let d = b.next().expect("never gives up").as_secs_f64();
        assert!((0.75..=1.25).contains(&d), "{d}");
    }

    #[test]
    fn jitter_draws_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..64).map(jitter).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }
}
