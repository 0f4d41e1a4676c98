//! The budget of review calls (TokenReview, SubjectAccessReview) the adapter makes to the API
//! server: a global rate, and a smaller rate per source, so that one source can never spend the
//! whole budget. A review over budget is refused at once (the caller answers 503 or 429 with a
//! `Retry-After`); nothing queues, so a flood of bogus tokens never delays anything else.
//!
//! Both rates are GCRA token buckets (a theoretical arrival time that each call pushes one
//! interval ahead; a call may go while that time is at most `burst` intervals ahead of now). The
//! per-source buckets live in a bounded LRU map: a source forgotten for lack of room starts again
//! with a full bucket, which only lets it reach the global limit sooner. Pure: the caller passes
//! the clock.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

/// Limits on the reviews the adapter sends to the API server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AuthLimits {
    /// Reviews per second, all sources together.
    pub qps: f64,
    /// Reviews at once after a quiet period, all sources together.
    pub burst: u32,
    /// Reviews per second for one source (below `qps`, so one source cannot spend the budget).
    pub per_source_qps: f64,
    /// Reviews at once for one source.
    pub per_source_burst: u32,
}

impl Default for AuthLimits {
    /// 200/s (burst 400) in all, 50/s (burst 100) per source: a cold cache of a few thousand
    /// HPAs fills within a minute, and a bogus-token flood from one pod costs the API server at
    /// most 50 reviews a second.
    fn default() -> Self {
        Self {
            qps: 200.0,
            burst: 400,
            per_source_qps: 50.0,
            per_source_burst: 100,
        }
    }
}

/// Who a review is done for, for the per-source limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// A direct client, by IP address.
    Address(IpAddr),
    /// A user vouched for by the front proxy (the API server, which rate-limits its own users;
    /// keyed by user so one user's requests through it do not use another's share).
    ProxiedUser(String),
}

/// Which limit refused a review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThrottleScope {
    /// The caller's own share is spent (429).
    Source,
    /// The adapter's whole budget is spent (503).
    Global,
}

/// A refused review: which limit, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// The limit that refused.
    pub scope: ThrottleScope,
    /// When a review would be allowed again.
    pub retry_after: Duration,
}

/// Sources remembered at most.
const SOURCE_CAPACITY: usize = 4_096;

/// One GCRA bucket's settings.
#[derive(Clone, Copy, Debug)]
struct Rate {
    interval: Duration,
    window: Duration,
}

impl Rate {
    /// `None` when `qps` is not positive and finite (no limit).
    fn new(qps: f64, burst: u32) -> Option<Self> {
        if !qps.is_finite() || qps <= 0.0 {
            return None;
        }
        let interval = Duration::from_secs_f64((1.0 / qps).min(86_400.0));
        Some(Self {
            interval,
            window: interval.saturating_mul(burst.max(1)),
        })
    }

    /// The new arrival time if a call at `now` is allowed, else how long until it would be.
    fn check(&self, arrival: Option<Instant>, now: Instant) -> Result<Instant, Duration> {
        let next = arrival.map_or(now, |t| t.max(now)) + self.interval;
        let ahead = next.saturating_duration_since(now);
        if ahead <= self.window {
            Ok(next)
        } else {
            Err(ahead - self.window)
        }
    }
}

/// The review budget: [`AuthLimits`] applied with a clock.
pub(crate) struct Budget {
    global: Option<Rate>,
    per_source: Option<Rate>,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    global: Option<Instant>,
    sources: LruCache<Source, Instant>,
}

impl Budget {
    /// A full budget.
    pub(crate) fn new(limits: AuthLimits) -> Self {
        Self {
            global: Rate::new(limits.qps, limits.burst),
            per_source: Rate::new(limits.per_source_qps, limits.per_source_burst),
            state: Mutex::new(BudgetState {
                global: None,
                sources: LruCache::new(NonZeroUsize::new(SOURCE_CAPACITY).unwrap_or(NonZeroUsize::MIN)),
            }),
        }
    }

    /// Takes one review for `source` at `now`, or says which limit refuses it (then nothing is
    /// taken from either).
    pub(crate) fn take(&self, source: &Source, now: Instant) -> Result<(), Throttled> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let source_next = match self.per_source {
            Some(rate) => Some(rate.check(state.sources.get(source).copied(), now).map_err(
                |retry_after| Throttled {
                    scope: ThrottleScope::Source,
                    retry_after,
                },
            )?),
            None => None,
        };
        let global_next = match self.global {
            Some(rate) => Some(rate.check(state.global, now).map_err(|retry_after| Throttled {
                scope: ThrottleScope::Global,
                retry_after,
            })?),
            None => None,
        };
        if let Some(next) = source_next {
            state.sources.put(source.clone(), next);
        }
        if global_next.is_some() {
            state.global = global_next;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Source {
        Source::Address(IpAddr::from([10, 0, 0, last]))
    }

    fn limits(qps: f64, burst: u32, per_source_qps: f64, per_source_burst: u32) -> AuthLimits {
        AuthLimits {
            qps,
            burst,
            per_source_qps,
            per_source_burst,
        }
    }

    #[test]
    fn one_source_is_limited_before_the_budget_is_spent() {
        let budget = Budget::new(limits(100.0, 20, 10.0, 5));
        let t0 = Instant::now();
        assert!((0..5).all(|_| budget.take(&ip(1), t0).is_ok()));
        let refused = budget.take(&ip(1), t0).expect_err("sixth at once");
        assert_eq!(refused.scope, ThrottleScope::Source);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        // Other sources still get their share.
        assert!((0..5).all(|_| budget.take(&ip(2), t0).is_ok()));
        assert!(budget.take(&Source::ProxiedUser("hpa".into()), t0).is_ok());
        // The refused source gets one more after one interval.
        let t1 = t0 + Duration::from_millis(100);
        assert!(budget.take(&ip(1), t1).is_ok());
        assert!(budget.take(&ip(1), t1).is_err());
    }

    #[test]
    fn the_global_budget_refuses_fast_and_takes_nothing_from_the_source() {
        let budget = Budget::new(limits(10.0, 3, 10.0, 2));
        let t0 = Instant::now();
        assert!(budget.take(&ip(1), t0).is_ok());
        assert!(budget.take(&ip(2), t0).is_ok());
        assert!(budget.take(&ip(3), t0).is_ok());
        let refused = budget.take(&ip(4), t0).expect_err("budget spent");
        assert_eq!(refused.scope, ThrottleScope::Global);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        // ip(4)'s own share is untouched: after the global refill it has its full burst.
        let t1 = t0 + Duration::from_millis(200);
        assert!(budget.take(&ip(4), t1).is_ok());
        assert!(budget.take(&ip(4), t1).is_ok());
    }

    #[test]
    fn a_flood_from_one_source_leaves_room_for_others() {
        let budget = Budget::new(AuthLimits::default());
        let t0 = Instant::now();
        // 1,000 bogus tokens a second from one pod, for ten seconds.
        let mut allowed = 0;
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if budget.take(&ip(66), now).is_ok() {
                allowed += 1;
            }
            // The HPA's user, through the front proxy, five reviews a second.
            if ms % 200 == 0 {
                assert!(
                    budget.take(&Source::ProxiedUser("hpa".into()), now).is_ok(),
                    "at {ms} ms"
                );
            }
        }
        // Burst plus 50/s.
        assert!((599..=601).contains(&allowed), "{allowed}");
    }

    #[test]
    fn no_limit_when_rates_are_not_positive() {
        let budget = Budget::new(limits(0.0, 0, f64::NAN, 0));
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| budget.take(&ip(1), t0).is_ok()));
    }
}
