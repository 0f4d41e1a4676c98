//! The activity watcher, written once for every scaler that watches between polls.
//!
//! An [`ActivityWatcher`] serves one watched thing (a Kafka cluster, a NATS monitoring endpoint
//! and account, a RabbitMQ management listing or AMQP connection). Triggers
//! [`register`](ActivityWatcher::register) a spec (what the round needs to know of them) and get
//! a [`Registration`]: a guard that unregisters on drop and holds a `tokio::sync::watch` receiver
//! of the trigger's activity. While registrations exist, one task per watcher runs the caller's
//! [`ActivityRound`] over the registered specs every tick ([`crate::ACTIVITY_WATCH_TICK`] by
//! default): rounds start a tick apart (a round's own time is not added), and after failed rounds
//! the pause doubles up to [`MAX_BACKOFF`] ([`pause_after`]).
//!
//! # Guarantees
//! - A trigger's channel is sent only when its activity changes ([`flip`]), so a receiver wakes
//!   on changes only. Every channel starts inactive (`false`).
//! - A failed or inconclusive round leaves activity untouched: only the triggers a round reports
//!   in [`RoundReport::activity`] can flip.
//! - The task ends (after [`ActivityRound::idle`]) when no registration is left, or when the
//!   watcher is dropped; the next [`ActivityWatcher::ensure_running`] with a registration starts
//!   a new one. The task holds the watcher only between rounds, never during one.
//!
//! # Caveats
//! - The task starts only from [`ActivityWatcher::ensure_running`] with a tokio runtime at hand
//!   (scalers are built without one): call it when sampling and when handing out the channel.
//! - A zero tick disables the task: such triggers are poll-only and their channel never flips.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The longest pause between rounds after failed rounds (the cap of [`pause_after`], unless the
/// tick itself is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A registered trigger's id within its watcher.
pub type TriggerId = u64;

/// How a round went, for the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundHealth {
    /// The source was read (possibly telling nothing about some triggers): the backoff resets.
    Succeeded,
    /// The source (or part of it) could not be read: the next pause doubles.
    Failed,
    /// The round was not needed: a round made outside the task (e.g. forced by a sample) ran
    /// this long ago. The backoff is unchanged and the next round is due a tick after that one.
    Skipped {
        /// How long ago the other round started.
        ran_ago: Duration,
    },
}

/// What one round learned.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundReport {
    /// The activity of the triggers the round could tell about; the others keep theirs.
    pub activity: Vec<(TriggerId, bool)>,
    /// How the round went.
    pub health: RoundHealth,
}

impl RoundReport {
    /// A round that read the source and tells these triggers' activity.
    pub fn succeeded(activity: Vec<(TriggerId, bool)>) -> Self {
        Self {
            activity,
            health: RoundHealth::Succeeded,
        }
    }

    /// A round that failed after learning `activity` (possibly nothing).
    pub fn failed(activity: Vec<(TriggerId, bool)>) -> Self {
        Self {
            activity,
            health: RoundHealth::Failed,
        }
    }

    /// A round skipped because another round started `ran_ago` ago.
    pub fn skipped(ran_ago: Duration) -> Self {
        Self {
            activity: Vec::new(),
            health: RoundHealth::Skipped { ran_ago },
        }
    }
}

/// The registered triggers as a round sees them (copied out of the watcher's lock).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundInput<S> {
    /// Bumped by every registration and unregistration: a round covers every trigger registered
    /// up to this generation (see [`Registration::generation`]).
    pub generation: u64,
    /// Each registered trigger's id and spec.
    pub specs: Vec<(TriggerId, S)>,
}

/// The caller's round: reads the source once for all registered triggers. Owned by the watcher's
/// task (so it may keep state between rounds, e.g. per-queue retry times) and created anew each
/// time a task starts.
pub trait ActivityRound: Send + 'static {
    /// What the round needs to know of each registered trigger.
    type Spec: Clone + Send + Sync + 'static;

    /// What the watcher reads, for its log lines (e.g. `rabbitmq-amqp`); never an address with
    /// credentials.
    const SOURCE: &'static str;

    /// One round over the currently registered triggers. Bound its own requests by timeouts.
    fn round(&mut self, input: RoundInput<Self::Spec>) -> impl Future<Output = RoundReport> + Send;

    /// Called once when the task ends because no registration is left (e.g. to close
    /// connections). Does nothing by default.
    fn idle(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The backoff schedule: the pause from one round's start to the next after `failures`
/// consecutive failed rounds: the tick, then doubling (2, 4, 8 ticks), capped at
/// `max(tick, MAX_BACKOFF)`.
pub fn pause_after(failures: u32, tick: Duration) -> Duration {
    tick.saturating_mul(1 << failures.min(3))
        .min(tick.max(MAX_BACKOFF))
}

/// Consecutive failed rounds after a round of this health.
pub fn failures_after(failures: u32, health: RoundHealth) -> u32 {
    match health {
        RoundHealth::Succeeded => 0,
        RoundHealth::Failed => failures.saturating_add(1),
        RoundHealth::Skipped { .. } => failures,
    }
}

/// When the next round starts, for a round that started at `started` (`failures` already
/// counts it): a skipped round counts from the round that made it unnecessary.
pub fn next_round_at(started: Instant, health: RoundHealth, failures: u32, tick: Duration) -> Instant {
    let from = match health {
        RoundHealth::Skipped { ran_ago } => started.checked_sub(ran_ago).unwrap_or(started),
        RoundHealth::Succeeded | RoundHealth::Failed => started,
    };
    from + pause_after(failures, tick)
}

/// Sets `current` to `active`; true when it changed (the channel is sent only then).
pub fn flip(current: &mut bool, active: bool) -> bool {
    let changed = *current != active;
    *current = active;
    changed
}

struct Entry<S> {
    spec: S,
    activity: watch::Sender<bool>,
}

struct State<S> {
    next_id: TriggerId,
    generation: u64,
    /// Whether the task runs (set and cleared under this lock, so that a registration racing
    /// with the task's end starts a new task).
    running: bool,
    triggers: HashMap<TriggerId, Entry<S>>,
}

impl<S: Clone> State<S> {
    fn input(&self) -> RoundInput<S> {
        RoundInput {
            generation: self.generation,
            specs: self
                .triggers
                .iter()
                .map(|(id, e)| (*id, e.spec.clone()))
                .collect(),
        }
    }
}

/// One watched source's registered triggers and its task (see the [module docs](self)).
pub struct ActivityWatcher<S> {
    tick: Duration,
    state: Mutex<State<S>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is short and leaves the data consistent, even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: Clone + Send + Sync + 'static> ActivityWatcher<S> {
    /// A watcher whose rounds start `tick` apart; a zero tick never starts the task.
    pub fn new(tick: Duration) -> Arc<Self> {
        Arc::new(Self {
            tick,
            state: Mutex::new(State {
                next_id: 0,
                generation: 0,
                running: false,
                triggers: HashMap::new(),
            }),
        })
    }

    /// The tick this watcher was created with.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Registers a trigger: it is in every round from now on, until the registration is dropped.
    /// Does not start the task (see [`Self::ensure_running`]).
    pub fn register(self: &Arc<Self>, spec: S) -> Registration<S> {
        let mut state = lock(&self.state);
        state.next_id += 1;
        state.generation += 1;
        let (activity, receiver) = watch::channel(false);
        let id = state.next_id;
        state.triggers.insert(id, Entry { spec, activity });
        Registration {
            watcher: self.clone(),
            id,
            generation: state.generation,
            seen: Mutex::new(receiver),
        }
    }

    fn unregister(&self, id: TriggerId) {
        let mut state = lock(&self.state);
        if state.triggers.remove(&id).is_some() {
            state.generation += 1;
        }
    }

    /// The registered triggers now, for a round (rounds made outside the task use it too).
    pub fn input(&self) -> RoundInput<S> {
        lock(&self.state).input()
    }

    /// Flips the channels of these triggers whose activity changed; unknown ids are ignored.
    pub fn publish(&self, activity: &[(TriggerId, bool)]) {
        let state = lock(&self.state);
        for (id, active) in activity {
            if let Some(entry) = state.triggers.get(id) {
                entry.activity.send_if_modified(|current| flip(current, *active));
            }
        }
    }

    /// Flips every registered trigger's channel to `activity_of(spec)` where that is known and
    /// changed (for sources that publish one snapshot to all triggers).
    pub fn publish_with(&self, mut activity_of: impl FnMut(&S) -> Option<bool>) {
        let state = lock(&self.state);
        for entry in state.triggers.values() {
            if let Some(active) = activity_of(&entry.spec) {
                entry.activity.send_if_modified(|current| flip(current, active));
            }
        }
    }

    /// How many triggers are registered.
    pub fn trigger_count(&self) -> usize {
        lock(&self.state).triggers.len()
    }

    /// Whether the task runs now.
    pub fn is_running(&self) -> bool {
        lock(&self.state).running
    }

    /// Starts the task, with the round `make` creates, unless it runs already, no trigger is
    /// registered, the tick is zero or no tokio runtime is at hand. True when it started one.
    pub fn ensure_running<R>(self: &Arc<Self>, make: impl FnOnce() -> R) -> bool
    where
        R: ActivityRound<Spec = S>,
    {
        if self.tick.is_zero() {
            return false;
        }
        let mut state = lock(&self.state);
        if state.running || state.triggers.is_empty() {
            return false;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        state.running = true;
        runtime.spawn(run(Arc::downgrade(self), make()));
        true
    }

    /// The next round's input, or `None` (and the task marked stopped, under the same lock)
    /// when no trigger is left.
    fn next_round(&self) -> Option<RoundInput<S>> {
        let mut state = lock(&self.state);
        if state.triggers.is_empty() {
            state.running = false;
            return None;
        }
        Some(state.input())
    }
}

/// The task of one watcher: a round every tick (backing off after failures) while triggers are
/// registered. Holds the watcher only between rounds, so that dropping it ends the task.
async fn run<S, R>(watcher: Weak<ActivityWatcher<S>>, mut round: R)
where
    S: Clone + Send + Sync + 'static,
    R: ActivityRound<Spec = S>,
{
    let mut failures: u32 = 0;
    let mut first = true;
    loop {
        let Some(w) = watcher.upgrade() else {
            tracing::debug!(source = R::SOURCE, "activity watcher stopped: its client is gone");
            return;
        };
        let Some(input) = w.next_round() else {
            drop(w);
            tracing::debug!(source = R::SOURCE, "activity watcher stopped: no trigger left");
            round.idle().await;
            return;
        };
        if first {
            tracing::debug!(source = R::SOURCE, triggers = input.specs.len(), tick = ?w.tick, "activity watcher started");
            first = false;
        }
        let tick = w.tick;
        drop(w);
        let started = Instant::now();
        let report = round.round(input).await;
        if let Some(w) = watcher.upgrade() {
            w.publish(&report.activity);
        }
        let before = failures;
        failures = failures_after(failures, report.health);
        let pause = next_round_at(started, report.health, failures, tick);
        match (before, failures) {
            (0, 1) => tracing::info!(
                source = R::SOURCE,
                pause = ?pause.saturating_duration_since(started),
                "activity watcher round failed: backing off (polls go on; see the trigger's error)"
            ),
            (_, 0) if before > 0 => {
                tracing::info!(
                    source = R::SOURCE,
                    failed_rounds = before,
                    "activity watcher reads its source again"
                )
            }
            (_, n) if n > before => tracing::debug!(
                source = R::SOURCE,
                failed_rounds = n,
                pause = ?pause.saturating_duration_since(started),
                "activity watcher backing off"
            ),
            _ => {}
        }
        tokio::time::sleep_until(pause).await;
    }
}

/// A trigger's place in its watcher; unregisters when dropped.
pub struct Registration<S: Clone + Send + Sync + 'static> {
    watcher: Arc<ActivityWatcher<S>>,
    id: TriggerId,
    generation: u64,
    /// The activity channel as of the trigger's last sample.
    seen: Mutex<watch::Receiver<bool>>,
}

impl<S: Clone + Send + Sync + 'static> Registration<S> {
    /// The trigger's id in its watcher (as in [`RoundInput::specs`]).
    pub fn id(&self) -> TriggerId {
        self.id
    }

    /// The watcher's generation right after this registration: a round whose
    /// [`RoundInput::generation`] is at least this covers the trigger.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The watcher this trigger is registered with.
    pub fn watcher(&self) -> &Arc<ActivityWatcher<S>> {
        &self.watcher
    }

    /// Marks the current activity as seen: call it when a sample starts, so that a flip during
    /// or after the sample still wakes the holder of [`Self::changes`].
    pub fn mark_seen(&self) {
        lock(&self.seen).borrow_and_update();
    }

    /// A receiver of the trigger's activity that has seen what the last sample saw: it wakes on
    /// the next change after that.
    pub fn changes(&self) -> watch::Receiver<bool> {
        lock(&self.seen).clone()
    }
}

impl<S: Clone + Send + Sync + 'static> Drop for Registration<S> {
    fn drop(&mut self) {
        self.watcher.unregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TICK: Duration = Duration::from_millis(500);

    #[test]
    fn backoff_doubles_to_the_cap() {
        let pauses: Vec<u128> = (0..6).map(|f| pause_after(f, TICK).as_millis()).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 4000, 4000]);
        let second = Duration::from_secs(1);
        let pauses: Vec<u64> = (0..5).map(|f| pause_after(f, second).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 5, 5]);
        // A tick longer than the cap is never shortened.
        assert_eq!(pause_after(4, Duration::from_secs(9)), Duration::from_secs(9));
        assert_eq!(pause_after(u32::MAX, TICK), Duration::from_secs(4));
    }

    #[test]
    fn failures_reset_count_or_stay() {
        assert_eq!(failures_after(3, RoundHealth::Succeeded), 0);
        assert_eq!(failures_after(3, RoundHealth::Failed), 4);
        assert_eq!(failures_after(u32::MAX, RoundHealth::Failed), u32::MAX);
        let skipped = RoundHealth::Skipped {
            ran_ago: Duration::from_millis(100),
        };
        assert_eq!(failures_after(2, skipped), 2);
    }

    #[test]
    fn next_round_counts_from_the_round_start() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            next_round_at(later, RoundHealth::Succeeded, 0, TICK),
            later + TICK
        );
        assert_eq!(
            next_round_at(later, RoundHealth::Failed, 2, TICK),
            later + Duration::from_secs(2)
        );
        let skipped = RoundHealth::Skipped {
            ran_ago: Duration::from_millis(100),
        };
        assert_eq!(
            next_round_at(later, skipped, 0, TICK),
            later + Duration::from_millis(400)
        );
    }

    #[test]
    fn flip_reports_changes_only() {
        let mut current = false;
        assert!(!flip(&mut current, false));
        assert!(flip(&mut current, true));
        assert!(current);
        assert!(!flip(&mut current, true));
        assert!(flip(&mut current, false));
        assert!(!current);
    }

    #[test]
    fn registrations_bump_the_generation_and_unregister_on_drop() {
        let w = ActivityWatcher::<u8>::new(TICK);
        let a = w.register(1);
        let b = w.register(2);
        assert_eq!((a.generation(), b.generation()), (1, 2));
        assert_ne!(a.id(), b.id());
        assert_eq!(w.trigger_count(), 2);
        drop(a);
        let input = w.input();
        assert_eq!(input.generation, 3);
        assert_eq!(input.specs, [(b.id(), 2)]);
        // Without a runtime the task cannot start.
        assert!(!w.ensure_running(|| Scripted::new(vec![])));
        assert!(!w.is_running());
    }

    #[test]
    fn publish_flips_only_on_change_and_only_known_triggers() {
        let w = ActivityWatcher::new(TICK);
        let a = w.register(1_u8);
        let b = w.register(2_u8);
        let mut rx = a.changes();
        w.publish(&[(a.id(), false), (999, true)]);
        assert!(!rx.has_changed().unwrap());
        w.publish(&[(a.id(), true)]);
        assert!(rx.has_changed().unwrap());
        assert!(*rx.borrow_and_update());
        w.publish(&[(a.id(), true)]);
        assert!(!rx.has_changed().unwrap());
        w.publish_with(|spec| (*spec == 2).then_some(true));
        assert!(!rx.has_changed().unwrap());
        assert!(*b.changes().borrow());
    }

    #[test]
    fn mark_seen_makes_later_receivers_wait_for_the_next_change() {
        let w = ActivityWatcher::new(TICK);
        let r = w.register(());
        w.publish(&[(r.id(), true)]);
        assert!(r.changes().has_changed().unwrap());
        r.mark_seen();
        let rx = r.changes();
        assert!(!rx.has_changed().unwrap());
        w.publish(&[(r.id(), false)]);
        assert!(rx.has_changed().unwrap());
    }

    /// A round that plays back reports, recording when each round started and what it saw.
    struct Scripted {
        reports: VecDeque<(Duration, RoundReport)>,
        log: Arc<Mutex<Vec<(Duration, usize)>>>,
        idled: Arc<AtomicUsize>,
        origin: Instant,
    }

    impl Scripted {
        fn new(reports: Vec<(Duration, RoundReport)>) -> Self {
            Self {
                reports: reports.into(),
                log: Arc::default(),
                idled: Arc::default(),
                origin: Instant::now(),
            }
        }

        fn starts(&self) -> Arc<Mutex<Vec<(Duration, usize)>>> {
            self.log.clone()
        }
    }

    impl ActivityRound for Scripted {
        type Spec = u8;
        const SOURCE: &'static str = "scripted";

        async fn round(&mut self, input: RoundInput<u8>) -> RoundReport {
            lock(&self.log).push((self.origin.elapsed(), input.specs.len()));
            let (takes, report) = self
                .reports
                .pop_front()
                .unwrap_or((Duration::ZERO, RoundReport::succeeded(vec![])));
            tokio::time::sleep(takes).await;
            report
        }

        async fn idle(&mut self) {
            self.idled.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn start_times(log: &Mutex<Vec<(Duration, usize)>>) -> Vec<u128> {
        lock(log).iter().map(|(at, _)| at.as_millis()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_start_a_tick_apart_and_the_task_ends_when_idle() {
        let w = ActivityWatcher::new(TICK);
        let r = w.register(7);
        let round = Scripted::new(vec![
            (ms(200), RoundReport::succeeded(vec![(r.id(), true)])),
            (ms(300), RoundReport::succeeded(vec![(r.id(), true)])),
            (ms(700), RoundReport::succeeded(vec![])),
        ]);
        let (log, idled) = (round.starts(), round.idled.clone());
        let mut rx = r.changes();
        assert!(w.ensure_running(|| round));
        assert!(w.is_running());
        assert!(
            !w.ensure_running(|| Scripted::new(vec![])),
            "one task per watcher"
        );
        rx.changed().await.unwrap();
        assert!(*rx.borrow_and_update());
        tokio::time::sleep(ms(1_900)).await;
        // Round times are not added; a round longer than the tick delays the next one only.
        assert_eq!(start_times(&log), [0, 500, 1000, 1700]);
        assert!(!rx.has_changed().unwrap(), "the same activity is not sent again");
        drop(r);
        tokio::time::sleep(ms(600)).await;
        assert!(!w.is_running());
        assert_eq!(idled.load(Ordering::SeqCst), 1);
        assert_eq!(start_times(&log), [0, 500, 1000, 1700]);
        // A new registration starts a new task.
        let _again = w.register(8);
        assert!(w.ensure_running(|| Scripted::new(vec![])));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_rounds_back_off_and_flip_nothing() {
        let w = ActivityWatcher::new(TICK);
        let r = w.register(1);
        let other = w.register(2);
        let failed = || (Duration::ZERO, RoundReport::failed(vec![]));
        let round = Scripted::new(vec![
            (
                Duration::ZERO,
                RoundReport::succeeded(vec![(r.id(), true), (other.id(), true)]),
            ),
            failed(),
            failed(),
            failed(),
            failed(),
            // Partly failed: what it learned is published, the rest is untouched.
            (Duration::ZERO, RoundReport::failed(vec![(r.id(), false)])),
            (Duration::ZERO, RoundReport::succeeded(vec![])),
        ]);
        let log = round.starts();
        let (mut rx, mut other_rx) = (r.changes(), other.changes());
        assert!(w.ensure_running(|| round));
        tokio::time::sleep(ms(10)).await;
        assert!(*rx.borrow_and_update() && *other_rx.borrow_and_update());
        tokio::time::sleep(ms(17_000)).await;
        assert_eq!(
            start_times(&log)[..8],
            [0, 500, 1500, 3500, 7500, 11500, 15500, 16000]
        );
        assert!(rx.has_changed().unwrap() && !*rx.borrow_and_update());
        assert!(
            !other_rx.has_changed().unwrap(),
            "failed rounds leave activity alone"
        );
        assert!(lock(&log).iter().all(|(_, n)| *n == 2));
    }

    #[tokio::test(start_paused = true)]
    async fn skipped_rounds_keep_the_backoff_and_count_from_the_other_round() {
        let w = ActivityWatcher::new(TICK);
        let _r = w.register(1);
        let round = Scripted::new(vec![
            (Duration::ZERO, RoundReport::failed(vec![])),
            (Duration::ZERO, RoundReport::skipped(ms(100))),
            (Duration::ZERO, RoundReport::succeeded(vec![])),
        ]);
        let log = round.starts();
        assert!(w.ensure_running(|| round));
        tokio::time::sleep(ms(3_000)).await;
        // Failed at 0 (next in 1 s); skipped at 1000 (still one failure: 1 s from 900); then
        // a success and plain ticks.
        assert_eq!(start_times(&log)[..4], [0, 1000, 1900, 2400]);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_tick_never_runs_and_dropping_the_watcher_ends_the_task() {
        let off = ActivityWatcher::new(Duration::ZERO);
        let _r = off.register(1);
        assert!(!off.ensure_running(|| Scripted::new(vec![])));

        let w = ActivityWatcher::new(TICK);
        let r = w.register(1);
        let round = Scripted::new(vec![]);
        let (log, idled) = (round.starts(), round.idled.clone());
        assert!(w.ensure_running(|| round));
        tokio::time::sleep(ms(10)).await;
        drop((r, w));
        tokio::time::sleep(ms(2_000)).await;
        assert_eq!(start_times(&log), [0]);
        assert_eq!(
            idled.load(Ordering::SeqCst),
            0,
            "idle is for a watcher left without triggers"
        );
    }
}
