//! The budget of review calls (TokenReview, SubjectAccessReview) the adapter makes to the API
//! server. Two pools that never borrow from each other:
//! - **proxied**: reviews for users the front proxy vouches for, i.e. the API server's own
//!   aggregated requests (the HPA controller's reads). Only a holder of the front-proxy
//!   certificate can spend it.
//! - **direct**: reviews for clients on the adapter's port itself (a bearer token, a client
//!   certificate). Anyone who can reach the port can spend it, so it is small: a flood of bogus
//!   tokens from any number of pods empties this pool and never touches the HPA's.
//!
//! Each pool has a global rate and a smaller one per source, so that one source can never
//! spend the whole pool, and caps its reviews in flight ([`PoolLimits::max_in_flight`]): when
//! the API server slows down, a rate alone would let reviews pile up (each one a connection to
//! it, which slows it further, until nothing else it serves, the leader's Lease renewals
//! included, gets through). A review over any limit is refused at once (the caller answers 503
//! or 429 with a `Retry-After`); nothing queues, so a flood never delays anything else.
//!
//! Both rates are GCRA token buckets (a theoretical arrival time that each call pushes one
//! interval ahead; a call may go while that time is at most `burst` intervals ahead of now). The
//! per-source buckets live in a bounded LRU map: a source forgotten for lack of room starts again
//! with a full bucket, which only lets it reach the pool's limit sooner. Pure: the caller passes
//! the clock.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits on the reviews the adapter sends to the API server, one pool per kind of caller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AuthLimits {
    /// Reviews for users the front proxy vouches for (the API server's aggregated requests).
    pub proxied: PoolLimits,
    /// Reviews for direct clients of the adapter's port (bearer tokens, client certificates).
    pub direct: PoolLimits,
}

/// The limits of one pool of reviews.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolLimits {
    /// Reviews per second, all sources together.
    pub qps: f64,
    /// Reviews at once after a quiet period, all sources together.
    pub burst: u32,
    /// Reviews per second for one source (below `qps`, so one source cannot spend the pool).
    pub per_source_qps: f64,
    /// Reviews at once for one source.
    pub per_source_burst: u32,
    /// Reviews waiting for the API server's answer at once, all sources together (0: no cap).
    pub max_in_flight: usize,
}

impl Default for AuthLimits {
    /// Proxied: 200/s (burst 400), 100/s (burst 200) per user, 32 in flight, so that a cold
    /// cache of a few thousand HPAs (one SubjectAccessReview per namespace and metric) fills
    /// within a minute. Direct: 20/s (burst 40), 5/s (burst 10) per address, 8 in flight; the
    /// API server never needs it, a client with a real token needs one review per cache TTL,
    /// and a bogus-token flood costs the API server at most 20 reviews a second.
    fn default() -> Self {
        Self {
            proxied: PoolLimits {
                qps: 200.0,
                burst: 400,
                per_source_qps: 100.0,
                per_source_burst: 200,
                max_in_flight: 32,
            },
            direct: PoolLimits {
                qps: 20.0,
                burst: 40,
                per_source_qps: 5.0,
                per_source_burst: 10,
                max_in_flight: 8,
            },
        }
    }
}

impl AuthLimits {
    /// The same limits for both pools.
    pub fn uniform(pool: PoolLimits) -> Self {
        Self {
            proxied: pool,
            direct: pool,
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
    /// The whole pool's budget is spent, or its reviews in flight are at the cap (503).
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

/// The review budget: [`AuthLimits`] applied with a clock, one [`Pool`] per kind of source.
pub(crate) struct Budget {
    proxied: Pool,
    direct: Pool,
}

impl Budget {
    /// A full budget.
    pub(crate) fn new(limits: AuthLimits) -> Self {
        Self {
            proxied: Pool::new(limits.proxied),
            direct: Pool::new(limits.direct),
        }
    }

    /// The pool `source`'s reviews are paid from.
    fn pool(&self, source: &Source) -> &Pool {
        match source {
            Source::ProxiedUser(_) => &self.proxied,
            Source::Address(_) => &self.direct,
        }
    }

    /// Starts one review for `source` at `now`: a place among its pool's reviews in flight,
    /// then one from the pool's rates. Refused at once when either is spent (then nothing is
    /// taken); hold the returned value until the review's answer is in.
    pub(crate) fn start(&self, source: &Source, now: Instant) -> Result<InFlight, Throttled> {
        self.pool(source).start(source, now)
    }

    /// Takes one review for `source` at `now` from its pool's rates, or says which limit
    /// refuses it (then nothing is taken).
    #[cfg(test)]
    fn take(&self, source: &Source, now: Instant) -> Result<(), Throttled> {
        self.pool(source).take(source, now)
    }
}

/// One pool: [`PoolLimits`] applied with a clock.
struct Pool {
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

impl Pool {
    /// A full pool.
    fn new(limits: PoolLimits) -> Self {
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

    /// Starts one review: a place in flight, then one from the rates ([`take`](Self::take)).
    fn start(&self, source: &Source, now: Instant) -> Result<InFlight, Throttled> {
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
    fn take(&self, source: &Source, now: Instant) -> Result<(), Throttled> {
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

    fn pool(qps: f64, burst: u32, per_source_qps: f64, per_source_burst: u32) -> PoolLimits {
        PoolLimits {
            qps,
            burst,
            per_source_qps,
            per_source_burst,
            max_in_flight: 0,
        }
    }

    fn limits(qps: f64, burst: u32, per_source_qps: f64, per_source_burst: u32) -> AuthLimits {
        AuthLimits::uniform(pool(qps, burst, per_source_qps, per_source_burst))
    }

    fn hpa() -> Source {
        Source::ProxiedUser("system:serviceaccount:kube-system:horizontal-pod-autoscaler".into())
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
            // Another pod with a real token, one review a second.
            if ms % 1_000 == 500 {
                assert!(budget.take(&ip(7), now).is_ok(), "at {ms} ms");
            }
        }
        // Burst plus 5/s.
        assert!((59..=61).contains(&allowed), "{allowed}");
    }

    #[test]
    fn a_flood_from_many_sources_never_spends_the_front_proxys_reviews() {
        let budget = Budget::new(AuthLimits::default());
        let t0 = Instant::now();
        // 1,000 bogus tokens a second spread over 200 pods (5 each, their whole share), for ten
        // seconds: the direct pool holds them to its global rate.
        let mut direct = 0;
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if budget.take(&ip((ms % 200) as u8), now).is_ok() {
                direct += 1;
            }
            // The HPA's reads through the API server, 50 uncached decisions a second: every
            // one is paid from the proxied pool, which the flood cannot reach.
            if ms % 20 == 0 {
                assert!(budget.take(&hpa(), now).is_ok(), "at {ms} ms");
            }
        }
        // Burst plus 20/s.
        assert!((239..=241).contains(&direct), "{direct}");
    }

    #[test]
    fn reviews_in_flight_are_capped_and_freed_when_answered() {
        let budget = Budget::new(AuthLimits::uniform(PoolLimits {
            max_in_flight: 2,
            ..AuthLimits::default().direct
        }));
        let t0 = Instant::now();
        let first = budget.start(&ip(1), t0).expect("first");
        let second = budget.start(&ip(2), t0).expect("second");
        // The API server has not answered either: a third is refused at once, whoever asks,
        // and takes nothing from the rates.
        let refused = budget.start(&ip(4), t0).expect_err("two in flight");
        assert_eq!(refused.scope, ThrottleScope::Global);
        assert_eq!(refused.retry_after, IN_FLIGHT_RETRY_AFTER);
        // The front proxy's pool has places of its own.
        let proxied = budget.start(&hpa(), t0).expect("the other pool is not full");
        drop((first, proxied));
        let third = budget.start(&ip(3), t0).expect("a place is free again");
        drop((second, third));
        // A refusal by the rates frees its place.
        let tight = Budget::new(AuthLimits::uniform(PoolLimits {
            max_in_flight: 1,
            ..pool(1.0, 1, 1.0, 1)
        }));
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
