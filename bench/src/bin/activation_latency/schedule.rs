//! The publish schedule: each object's message at a uniformly random moment within its own
//! stratum of one polling interval (splitmix64, seedable).

use std::time::Duration;

/// splitmix64: a small, seedable generator for the schedule (no dependency needed).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// When each of `n` objects gets its message, relative to the start: object `i` in stratum
/// `perm[i]` of `spread / n`, at a uniformly random moment within it.
pub(crate) fn schedule(n: usize, spread: Duration, rng: &mut Rng) -> Vec<Duration> {
    let mut strata: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        strata.swap(i, j);
    }
    let width = spread.as_secs_f64() / n.max(1) as f64;
    strata
        .into_iter()
        .map(|k| Duration::from_secs_f64((k as f64 + rng.unit()) * width))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn the_schedule_puts_one_sample_in_each_stratum() {
        let mut rng = Rng(7);
        let offsets = schedule(30, Duration::from_secs(30), &mut rng);
        let mut strata: Vec<u64> = offsets.iter().map(|d| d.as_secs()).collect();
        strata.sort_unstable();
        assert_eq!(strata, (0..30).collect::<Vec<u64>>());
    }
}
