//! The in-flight byte budget shared by every scaler of the process: before a scaler reads an
//! answer from a source a tenant may point at (an HTTP body, a Kafka frame), it reserves the bytes
//! it may hold from [`ByteBudget::global`]; the reservation goes back when the answer is dropped.
//!
//! Each answer is already capped by its scaler (metrics-api 1 MiB, RabbitMQ a few MiB, Kafka
//! frames 16 MiB); the budget bounds their sum, so many triggers pointed at servers that answer
//! with large bodies at once cannot take the operator past its memory limit (the chart's limit is
//! 256 Mi). A reservation that does not fit fails at once ([`BudgetError`]): the poll reports it
//! and the next one tries again; nothing queues behind a slow tenant.

use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The size of the process-wide budget: 48 MiB of answers in flight at once. With the operator's
/// own working set (~60 MiB at 10,000 objects) and what parsing adds on top of the bytes, that
/// stays well inside the chart's 256 Mi limit, and it still holds three of the largest answer ebb
/// accepts (a 16 MiB Kafka frame).
pub const GLOBAL_BUDGET_BYTES: usize = 48 * 1024 * 1024;

/// Why bytes could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The budget has not that many bytes free now.
    #[error(
        "ebb's in-flight response budget is exhausted ({wanted} bytes wanted, {free} of {total} \
         free): too many large answers are being read at once; the next poll tries again"
    )]
    Exhausted {
        /// Bytes asked for.
        wanted: usize,
        /// Bytes free when asked.
        free: usize,
        /// The budget's size.
        total: usize,
    },
    /// More than the whole budget was asked for.
    #[error("an answer of {wanted} bytes is larger than ebb's whole in-flight budget ({total} bytes)")]
    TooLarge {
        /// Bytes asked for.
        wanted: usize,
        /// The budget's size.
        total: usize,
    },
}

/// A budget of bytes in flight (a semaphore with one permit per byte). Cheap to clone: clones
/// share the budget.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    total: usize,
    permits: Arc<Semaphore>,
}

impl ByteBudget {
    /// A budget of `total` bytes (at most `u32::MAX`).
    pub fn new(total: usize) -> Self {
        let total = total.min(u32::MAX as usize);
        Self {
            total,
            permits: Arc::new(Semaphore::new(total)),
        }
    }

    /// The process-wide budget of [`GLOBAL_BUDGET_BYTES`], shared by every scaler.
    pub fn global() -> &'static ByteBudget {
        static GLOBAL: OnceLock<ByteBudget> = OnceLock::new();
        GLOBAL.get_or_init(|| ByteBudget::new(GLOBAL_BUDGET_BYTES))
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes free now.
    pub fn free(&self) -> usize {
        self.permits.available_permits()
    }

    /// Reserves `bytes` now, or fails at once when they are not free (never waits).
    pub fn try_reserve(&self, bytes: usize) -> Result<Reservation, BudgetError> {
        let too_large = || BudgetError::TooLarge {
            wanted: bytes,
            total: self.total,
        };
        if bytes > self.total {
            return Err(too_large());
        }
        let n = u32::try_from(bytes).map_err(|_| too_large())?;
        match self.permits.clone().try_acquire_many_owned(n) {
            Ok(permit) => Ok(Reservation { permit: Some(permit) }),
            Err(TryAcquireError::NoPermits) | Err(TryAcquireError::Closed) => Err(BudgetError::Exhausted {
                wanted: bytes,
                free: self.free(),
                total: self.total,
            }),
        }
    }
}

/// Bytes reserved from a [`ByteBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// How many bytes are reserved.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Gives back what is reserved beyond `bytes` (once an answer turned out smaller).
    pub fn shrink_to(&mut self, bytes: usize) {
        let excess = self.bytes().saturating_sub(bytes);
        if excess == 0 {
            return;
        }
        if let Some(permit) = self.permit.as_mut() {
            drop(permit.split(excess));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fail_fast_when_exhausted_and_come_back_when_dropped() {
        let budget = ByteBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert_eq!((a.bytes(), budget.free()), (60, 40));
        let e = budget.try_reserve(41).unwrap_err();
        assert_eq!(
            e,
            BudgetError::Exhausted {
                wanted: 41,
                free: 40,
                total: 100
            }
        );
        assert!(e.to_string().contains("budget is exhausted"), "{e}");
        let _b = budget.clone().try_reserve(40).unwrap();
        assert_eq!(budget.free(), 0);
        drop(a);
        assert_eq!(budget.free(), 60, "a dropped reservation is given back");
        assert!(matches!(
            budget.try_reserve(101),
            Err(BudgetError::TooLarge { wanted: 101, .. })
        ));
    }

    #[test]
    fn shrinking_gives_the_excess_back() {
        let budget = ByteBudget::new(100);
        let mut r = budget.try_reserve(80).unwrap();
        r.shrink_to(30);
        assert_eq!((r.bytes(), budget.free()), (30, 70));
        r.shrink_to(50);
        assert_eq!(r.bytes(), 30, "never grows");
        drop(r);
        assert_eq!(budget.free(), 100);
    }

    #[test]
    fn the_global_budget_is_one() {
        assert!(std::ptr::eq(ByteBudget::global(), ByteBudget::global()));
        assert_eq!(ByteBudget::global().total(), GLOBAL_BUDGET_BYTES);
    }
}
