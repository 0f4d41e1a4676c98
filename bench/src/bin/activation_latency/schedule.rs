//! The publish schedule: each object's message at a uniformly random moment within its own
//! stratum of one polling interval (splitmix64, seedable).

use std::time::Duration;

pub(crate) use ebb_bench::rng::Rng;

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
