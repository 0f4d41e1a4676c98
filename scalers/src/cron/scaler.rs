//! The cron [`Scaler`]: a sample reads the clock ([`Clock`], injectable for tests) and asks
//! [`window_at`]; no server. Its activity channel is a timer that wakes at the window's next
//! boundary, so the window opening wakes the object at once rather than at its next poll.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use super::window::{CronWindow, window_at};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// The longest the activity timer sleeps before it reads the clock again, so that a wall clock
/// that jumps (NTP, a suspended VM) is noticed within this.
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(30);

/// Past the boundary by this much before the timer reads the clock, so that it never wakes a
/// hair too early and sees the old state.
const TIMER_SLACK: Duration = Duration::from_millis(5);

/// Where the cron scaler reads the time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A cron trigger: `desiredReplicas` inside the window, 0 outside, at target 1.
pub struct CronScaler {
    inner: Arc<Inner>,
}

struct Inner {
    window: CronWindow,
    clock: Arc<dyn Clock>,
    target: f64,
    /// The activity channel, made (and its timer started) on first use.
    activity: OnceLock<watch::Sender<bool>>,
}

impl CronScaler {
    /// A scaler for `window`, reading `clock`, reporting `target` as the HPA target.
    pub fn new(window: CronWindow, clock: Arc<dyn Clock>, target: f64) -> Self {
        Self {
            inner: Arc::new(Inner {
                window,
                clock,
                target,
                activity: OnceLock::new(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Scaler for CronScaler {
    fn trigger_type(&self) -> &'static str {
        "cron"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.inner.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        let state = window_at(&self.inner.window, self.inner.clock.now());
        Ok(TriggerSample {
            value: state.value,
            active: state.inside,
        })
    }

    fn activity_changes(&self) -> Option<watch::Receiver<bool>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mut started = false;
        let sender = self.inner.activity.get_or_init(|| {
            started = true;
            watch::channel(window_at(&self.inner.window, self.inner.clock.now()).inside).0
        });
        let receiver = sender.subscribe();
        if started {
            runtime.spawn(timer(Arc::downgrade(&self.inner)));
        }
        Some(receiver)
    }

    fn samples_are_cheap(&self) -> bool {
        true
    }
}

/// Flips the activity channel at each boundary of the window; ends once the scaler is gone.
async fn timer(inner: Weak<Inner>) {
    loop {
        let sleep = {
            let Some(inner) = inner.upgrade() else { return };
            let Some(sender) = inner.activity.get() else {
                return;
            };
            let state = window_at(&inner.window, inner.clock.now());
            let flipped =
                sender.send_if_modified(|active| std::mem::replace(active, state.inside) != state.inside);
            tracing::debug!(inside = state.inside, flipped, next_boundary = ?state.next_boundary, "cron window");
            let until = state
                .next_boundary
                .map(|b| b.duration_since(inner.clock.now()))
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(MAX_TIMER_SLEEP);
            until.min(MAX_TIMER_SLEEP) + TIMER_SLACK
        };
        tokio::time::sleep(sleep).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::spec::CronSpec;
    use crate::cron::time_zone;
    use std::sync::Mutex;

    /// A clock that tokio's paused time drives: `base` at the instant the test started.
    struct TokioClock {
        base: Timestamp,
        started: tokio::time::Instant,
    }

    impl Clock for TokioClock {
        fn now(&self) -> Timestamp {
            let elapsed = jiff::SignedDuration::try_from(self.started.elapsed()).unwrap();
            self.base + elapsed
        }
    }

    struct Fixed(Mutex<Timestamp>);

    impl Clock for Fixed {
        fn now(&self) -> Timestamp {
            *self.0.lock().unwrap()
        }
    }

    fn window() -> CronWindow {
        CronWindow {
            tz: time_zone("Europe/Berlin").unwrap(),
            start: CronSpec::parse("0 9 * * *").unwrap(),
            end: CronSpec::parse("30 9 * * *").unwrap(),
            desired_replicas: 4,
        }
    }

    #[tokio::test]
    async fn samples_read_the_clock() {
        let clock = Arc::new(Fixed(Mutex::new("2026-06-01T06:59:00Z".parse().unwrap())));
        let scaler = CronScaler::new(window(), clock.clone(), 1.0);
        assert_eq!(scaler.metric_target().target_value, 1.0);
        let s = scaler.sample().await.unwrap();
        assert_eq!((s.value, s.active), (0.0, false)); // 08:59 CEST
        *clock.0.lock().unwrap() = "2026-06-01T07:00:00Z".parse().unwrap();
        let s = scaler.sample().await.unwrap();
        assert_eq!((s.value, s.active), (4.0, true));
        assert!(scaler.samples_are_cheap());
    }

    #[tokio::test]
    async fn the_timer_flips_on_time_in_real_time() {
        // 1.5 s before the window closes (09:30 CEST), on the real clock's pace.
        let clock = Arc::new(TokioClock {
            base: "2026-06-01T07:29:58.5Z".parse().unwrap(),
            started: tokio::time::Instant::now(),
        });
        let scaler = CronScaler::new(window(), clock.clone(), 1.0);
        let mut rx = scaler.activity_changes().unwrap();
        assert!(*rx.borrow_and_update());
        tokio::time::timeout(Duration::from_secs(3), rx.changed())
            .await
            .expect("flipped within 3 s")
            .unwrap();
        assert!(!*rx.borrow());
        let late = clock
            .now()
            .duration_since("2026-06-01T07:30:00Z".parse().unwrap());
        assert!(
            late.is_positive() && late < jiff::SignedDuration::from_millis(200),
            "{late}"
        );
    }

    #[test]
    fn no_activity_channel_without_a_runtime() {
        let scaler = CronScaler::new(window(), Arc::new(SystemClock), 1.0);
        assert!(scaler.activity_changes().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_flips_activity_at_the_boundaries() {
        let clock = Arc::new(TokioClock {
            base: "2026-06-01T06:58:00Z".parse().unwrap(),
            started: tokio::time::Instant::now(),
        });
        let scaler = CronScaler::new(window(), clock.clone(), 1.0);
        let mut rx = scaler.activity_changes().unwrap();
        assert!(!*rx.borrow_and_update());
        rx.changed().await.unwrap();
        assert!(*rx.borrow_and_update());
        let opened = clock.now();
        assert!(opened >= "2026-06-01T07:00:00Z".parse().unwrap(), "{opened}");
        assert!(opened < "2026-06-01T07:00:01Z".parse().unwrap(), "{opened}");
        // A second subscriber sees only later changes.
        let mut second = scaler.activity_changes().unwrap();
        assert!(*second.borrow_and_update());
        rx.changed().await.unwrap();
        assert!(!*rx.borrow_and_update());
        assert!(clock.now() >= "2026-06-01T07:30:00Z".parse().unwrap());
        second.changed().await.unwrap();
        assert!(!*second.borrow());
        // Dropping the scaler ends the timer: the channel closes.
        drop(scaler);
        tokio::time::sleep(MAX_TIMER_SLEEP * 2).await;
        assert!(rx.changed().await.is_err());
    }
}
