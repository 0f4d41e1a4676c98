//! The budget of review calls (TokenReview, SubjectAccessReview) the adapter makes to the API
//! server: a global rate, and a smaller rate per source, so that one source can never spend the
//! whole budget. A review over budget is refused at once (the caller answers 503 or 429 with a
//! `Retry-After`); nothing queues, so a flood of bogus tokens never delays anything else.
//!
//! Reviews in flight are capped as well ([`AuthLimits::max_in_flight`]): when the API server
//! slows down, a rate alone would let reviews pile up (each one a connection to it, which slows
//! it further, until nothing else it serves, the leader's Lease renewals included, gets through);
//! with the cap, a review over it is refused at once like one over the rate.
//!
//! Both rates are GCRA token buckets (a theoretical arrival time that each call pushes one
//! interval ahead; a call may go while that time is at most `burst` intervals ahead of now). The
//! per-source buckets live in a bounded LRU map: a source forgotten for lack of room starts again
//! with a full bucket, which only lets it reach the global limit sooner. Pure: the caller passes
//! the clock.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// Reviews waiting for the API server's answer at once, all sources together (0: no cap).
    pub max_in_flight: usize,
}

impl Default for AuthLimits {
    /// 200/s (burst 400) in all, 50/s (burst 100) per source, 32 in flight: a cold cache of a
    /// few thousand HPAs fills within a minute, and a bogus-token flood from one pod costs the
    /// API server at most 50 reviews a second.
    fn default() -> Self {
        Self {
            qps: 200.0,
            burst: 400,
            per_source_qps: 50.0,
            per_source_burst: 100,
            max_in_flight: 32,
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
    /// `None`: no cap on reviews in flight.
    in_flight: Option<Arc<Semaphore>>,
}

/// A review in flight; dropping it (when the answer is in, or the request is gone) frees its
/// place.
#[derive(Debug)]
pub(crate) struct InFlight {
    _permit: Option<OwnedSemaphorePermit>,
}

/// How long a client refused for the in-flight cap is asked to wait.
const IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);

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
            in_flight: (limits.max_in_flight > 0).then(|| Arc::new(Semaphore::new(limits.max_in_flight))),
        }
    }

    /// Starts one review for `source` at `now`: a place among the reviews in flight, then one
    /// from the rates ([`take`](Self::take)). Refused at once when either is spent (then
    /// nothing is taken); hold the returned value until the review's answer is in.
    pub(crate) fn start(&self, source: &Source, now: Instant) -> Result<InFlight, Throttled> {
        let permit = match &self.in_flight {
            Some(places) => Some(places.clone().try_acquire_owned().map_err(|_| Throttled {
                scope: ThrottleScope::Global,
                retry_after: IN_FLIGHT_RETRY_AFTER,
            })?),
            None => None,
        };
        self.take(source, now)?;
        Ok(InFlight { _permit: permit })
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
            max_in_flight: 0,
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
    fn reviews_in_flight_are_capped_and_freed_when_answered() {
        let budget = Budget::new(AuthLimits {
            max_in_flight: 2,
            ..AuthLimits::default()
        });
        let t0 = Instant::now();
        let first = budget.start(&ip(1), t0).expect("first");
        let second = budget.start(&ip(2), t0).expect("second");
        // The API server has not answered either: a third is refused at once, whoever asks,
        // and takes nothing from the rates.
        let refused = budget
            .start(&Source::ProxiedUser("hpa".into()), t0)
            .expect_err("two in flight");
        assert_eq!(refused.scope, ThrottleScope::Global);
        assert_eq!(refused.retry_after, IN_FLIGHT_RETRY_AFTER);
        drop(first);
        let third = budget.start(&ip(3), t0).expect("a place is free again");
        drop((second, third));
        // A refusal by the rates frees its place.
        let tight = Budget::new(AuthLimits {
            max_in_flight: 1,
            ..limits(1.0, 1, 1.0, 1)
        });
        assert!(tight.start(&ip(1), t0).is_ok());
        assert_eq!(
            tight.start(&ip(1), t0).expect_err("rate spent").scope,
            ThrottleScope::Source
        );
        assert!(tight.start(&ip(2), t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn no_limit_when_rates_are_not_positive() {
        let budget = Budget::new(limits(0.0, 0, f64::NAN, 0));
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| budget.take(&ip(1), t0).is_ok()));
    }
}
