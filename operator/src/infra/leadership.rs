//! Leader election over a Lease: kube-lease-manager acquires it, ebb renews it, with prompt
//! takeover and a renew deadline.
//!
//! **Takeover.** kube-lease-manager's own loop lets a standby sleep until the current term ends,
//! so a leader that releases the Lease on SIGTERM is replaced only a lease duration later (and a
//! freshly started replica, which reads the Lease at once, usually wins instead of the waiting
//! standby). Here a standby also re-reads the Lease every [`RECHECK`]; when it is free
//! ([`is_free`]) the standby starts over with a fresh manager, which takes it at once. A replica
//! that has just started waits [`STARTUP_DEFERRAL`] before it contends for a Lease that exists
//! already, so the running standby (its adapter already serving) wins the race against the
//! leader's replacement pod. (A released Lease keeps no renewal time, so "exists" is the signal; a
//! fresh install has no Lease and does not wait.)
//!
//! **Holding.** kube-lease-manager keeps reporting "leader" while its renewals fail, so once it
//! has acquired the Lease ebb renews it itself ([`hold`]): every [`LeaseTiming::renew_every`], a
//! JSON patch that sets `renewTime` only if `holderIdentity` is still this replica. Leadership
//! is published after the first renewal succeeds, and this replica steps down for good (publishes
//! `false`, and [`LeaderGuard::check`] refuses every write) as soon as a renewal is refused or no
//! renewal succeeded within the renew deadline ([`leading_at`]: two thirds of the lease duration,
//! like client-go's `renewDeadline`). A standby takes the Lease only after a whole lease duration
//! without a renewal, so the last third is the margin for clock skew and writes in flight.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often a standby re-reads the Lease.
pub const RECHECK: Duration = Duration::from_millis(250);

/// How long a just-started replica leaves a recently held Lease to the running standby.
pub const STARTUP_DEFERRAL: Duration = Duration::from_secs(1);

/// Shortest accepted lease duration, in seconds (renewals every 0.6 s, a 1 s margin).
pub const MIN_LEASE_SECONDS: u64 = 3;

/// Longest accepted lease duration, in seconds.
pub const MAX_LEASE_SECONDS: u64 = 3600;

/// A lease duration that was refused.
#[derive(Debug, thiserror::Error)]
pub enum LeaseDurationError {
    /// Not a whole number of seconds.
    #[error("the lease duration is a whole number of seconds")]
    NotANumber(#[source] std::num::ParseIntError),
    /// Outside [`MIN_LEASE_SECONDS`]..=[`MAX_LEASE_SECONDS`].
    #[error(
        "the lease duration must be between {MIN_LEASE_SECONDS} and {MAX_LEASE_SECONDS} seconds, not {0}: \
         the leader renews every fifth of it and steps down after two thirds of it without a renewal"
    )]
    OutOfRange(u64),
}

/// The Lease's term and what follows from it: how often the leader renews and when it steps down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    secs: u64,
}

impl LeaseTiming {
    /// A term of `secs` seconds, if it is within [`MIN_LEASE_SECONDS`]..=[`MAX_LEASE_SECONDS`].
    pub fn from_secs(secs: u64) -> Result<LeaseTiming, LeaseDurationError> {
        if (MIN_LEASE_SECONDS..=MAX_LEASE_SECONDS).contains(&secs) {
            Ok(LeaseTiming { secs })
        } else {
            Err(LeaseDurationError::OutOfRange(secs))
        }
    }
    /// The term in seconds (the Lease's `leaseDurationSeconds`).
    pub fn secs(self) -> u64 {
        self.secs
    }
    /// The term: a standby takes the Lease this long after its last renewal.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.secs)
    }
    /// How long the leader keeps leading without a successful renewal: two thirds of the term.
    pub fn renew_deadline(self) -> Duration {
        Duration::from_millis(self.secs * 2000 / 3)
    }
    /// How often the leader renews: a fifth of the term (so three attempts fit in the deadline).
    pub fn renew_every(self) -> Duration {
        Duration::from_millis(self.secs * 200)
    }
    /// kube-lease-manager's grace (used only to acquire): a third of the term, at least 1 s.
    fn grace(self) -> u64 {
        self.secs.div_ceil(3).max(1)
    }
}

impl FromStr for LeaseTiming {
    type Err = LeaseDurationError;
    fn from_str(s: &str) -> Result<LeaseTiming, LeaseDurationError> {
        let secs = s.trim().parse().map_err(LeaseDurationError::NotANumber)?;
        LeaseTiming::from_secs(secs)
    }
}

/// Which Lease, and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (the Lease's `holderIdentity` while it leads).
    pub identity: String,
    /// The term and the renewal schedule.
    pub timing: LeaseTiming,
}

impl LeaseSettings {
    async fn manager(&self, client: &Client) -> Result<LeaseManager, LeaseManagerError> {
        LeaseManagerBuilder::new(client.clone(), &self.name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(self.timing.secs())
            .with_grace(self.timing.grace())
            .build()
            .await
    }
    /// kube-lease-manager's field manager for this identity; ebb's renewals use the same, so the
    /// Lease's fields keep one owner.
    fn field_manager(&self) -> String {
        format!("kube-lease-manager-{}", self.identity)
    }
}

/// Whether a replica whose last successful renewal started at `last_renewal` still leads at
/// `now`: only within the renew deadline after it (never without a renewal).
pub fn leading_at(last_renewal: Option<Instant>, now: Instant, timing: LeaseTiming) -> bool {
    last_renewal.is_some_and(|last| now.saturating_duration_since(last) < timing.renew_deadline())
}

/// A write was refused because this replica does not (or no longer) lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not the leader (no Lease renewal within the renew deadline, or stepped down): write refused")]
pub struct NotLeading;

/// Whether this replica may write now. The election task records each successful renewal; every
/// write path calls [`LeaderGuard::check`] right before it writes. The answer depends on the clock,
/// not on the election task having run: past the renew deadline it is "no" even while the task
/// is stuck in a request.
#[derive(Debug, Clone)]
pub struct LeaderGuard {
    state: Arc<GuardState>,
    timing: LeaseTiming,
}

#[derive(Debug, Default)]
struct GuardState {
    last_renewal: Mutex<Option<Instant>>,
    stepped_down: AtomicBool,
}

impl LeaderGuard {
    /// A guard that has seen no renewal yet (so it refuses writes).
    pub fn new(timing: LeaseTiming) -> LeaderGuard {
        LeaderGuard {
            state: Arc::default(),
            timing,
        }
    }
    /// A guard that has just seen a renewal (for tests of the write paths).
    #[cfg(test)]
    pub fn renewed_now(timing: LeaseTiming) -> LeaderGuard {
        let guard = LeaderGuard::new(timing);
        guard.renewed(Instant::now());
        guard
    }
    /// `Ok` while this replica leads; call it right before a write to the cluster.
    pub fn check(&self) -> Result<(), NotLeading> {
        if self.is_leading() {
            Ok(())
        } else {
            Err(NotLeading)
        }
    }
    /// Whether this replica leads now.
    pub fn is_leading(&self) -> bool {
        !self.state.stepped_down.load(Ordering::Acquire)
            && leading_at(self.last(), Instant::now(), self.timing)
    }
    fn last(&self) -> Option<Instant> {
        *self
            .state
            .last_renewal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
    /// Records a successful renewal that started at `at`.
    fn renewed(&self, at: Instant) {
        let mut last = self
            .state
            .last_renewal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last = Some(last.map_or(at, |l| l.max(at)));
    }
    /// When leadership ends without a further renewal (`None` before the first).
    fn deadline(&self) -> Option<Instant> {
        self.last().map(|l| l + self.timing.renew_deadline())
    }
    /// Ends leadership for good (the process restarts as a standby).
    fn step_down(&self) {
        self.state.stepped_down.store(true, Ordering::Release);
    }
}

/// Whether a failed renewal means the Lease is not this replica's any more (another holder, the
/// Lease is gone, the request is refused) rather than a failure worth retrying until the deadline.
pub fn renewal_refused(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 408 && s.code != 429)
}

/// Whether nobody holds `lease` at `now`: no holder, or the holder's term (last renewal plus
/// duration) is over.
pub fn is_free(lease: &Lease, now: SystemTime) -> bool {
    let Some(spec) = &lease.spec else {
        return true;
    };
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let (Some(renewed), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    let renewed: SystemTime = renewed.0.into();
    let secs = u64::try_from(secs).unwrap_or(0);
    renewed
        .checked_add(Duration::from_secs(secs))
        .is_none_or(|end| end < now)
}

/// Why the election task ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum LeadershipError {
    /// kube-lease-manager failed (releasing as a standby).
    #[error("leader election: {0}")]
    Manager(#[source] LeaseManagerError),
    /// Releasing the held Lease failed.
    #[error("releasing the Lease: {0}")]
    Release(#[source] kube::Error),
    /// A Lease patch could not be built (a bug).
    #[error("building the Lease patch: {0}")]
    Patch(#[source] serde_json::Error),
}

/// Renews and releases the held Lease (the cluster, or a fake in tests).
#[async_trait]
trait Renewer: Send + Sync {
    /// Sets the Lease's `renewTime` to `stamp`, only if this replica still holds it.
    async fn renew(&self, stamp: SystemTime) -> Result<(), kube::Error>;
}

/// Renewals through the API server: a JSON patch whose first operation tests `holderIdentity`.
struct KubeRenewer {
    leases: Api<Lease>,
    name: String,
    identity: String,
    secs: u64,
    params: PatchParams,
}

impl KubeRenewer {
    fn new(leases: Api<Lease>, settings: &LeaseSettings) -> KubeRenewer {
        KubeRenewer {
            leases,
            name: settings.name.clone(),
            identity: settings.identity.clone(),
            secs: settings.timing.secs(),
            params: PatchParams {
                field_manager: Some(settings.field_manager()),
                ..PatchParams::default()
            },
        }
    }

    /// Patches the Lease with `ops` after testing that this replica holds it.
    async fn patch_held(&self, ops: serde_json::Value) -> Result<(), LeadershipError> {
        let mut all = vec![json!({"op": "test", "path": "/spec/holderIdentity", "value": self.identity})];
        all.extend(ops.as_array().into_iter().flatten().cloned());
        let patch = serde_json::from_value(serde_json::Value::Array(all)).map_err(LeadershipError::Patch)?;
        self.leases
            .patch(&self.name, &self.params, &Patch::<()>::Json(patch))
            .await
            .map(drop)
            .map_err(LeadershipError::Release)
    }

    /// Releases the Lease if this replica still holds it (a Lease someone else took is left alone).
    async fn release(&self) -> Result<(), LeadershipError> {
        let ops = json!([
            {"op": "add", "path": "/spec/holderIdentity", "value": null},
            {"op": "add", "path": "/spec/renewTime", "value": null},
            {"op": "add", "path": "/spec/acquireTime", "value": null},
            {"op": "add", "path": "/spec/leaseDurationSeconds", "value": null},
        ]);
        match self.patch_held(ops).await {
            Err(LeadershipError::Release(e)) if renewal_refused(&e) => Ok(()),
            other => other,
        }
    }
}

#[async_trait]
impl Renewer for KubeRenewer {
    async fn renew(&self, stamp: SystemTime) -> Result<(), kube::Error> {
        let stamp = MicroTime(stamp.try_into().unwrap_or_else(|_| jiff::Timestamp::now()));
        let ops = json!([
            {"op": "add", "path": "/spec/renewTime", "value": stamp},
            {"op": "add", "path": "/spec/leaseDurationSeconds", "value": self.secs},
        ]);
        match self.patch_held(ops).await {
            Ok(()) => Ok(()),
            Err(LeadershipError::Release(e)) => Err(e),
            Err(e) => Err(kube::Error::Service(Box::new(e))),
        }
    }
}

/// Starts electing: the receiver says whether this replica leads, the guard answers the same
/// right before each write. Dropping every receiver makes the task release the Lease (if held) and
/// end.
pub async fn elect(
    client: Client,
    settings: LeaseSettings,
) -> Result<
    (
        watch::Receiver<bool>,
        LeaderGuard,
        JoinHandle<Result<(), LeadershipError>>,
    ),
    LeaseManagerError,
> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    // (Read before the manager is built: building creates the Lease.)
    let existed = matches!(leases.get_opt(&settings.name).await, Ok(Some(_)));
    let manager = settings.manager(&client).await?;
    let (tx, rx) = watch::channel(false);
    let guard = LeaderGuard::new(settings.timing);
    let task = tokio::spawn({
        let guard = guard.clone();
        async move {
            if existed {
                tokio::time::sleep(STARTUP_DEFERRAL).await;
            }
            run(client, settings, leases, manager, tx, guard).await
        }
    });
    Ok((rx, guard, task))
}

/// What one standby round of the election loop ended with.
enum Round {
    /// The manager reports a (new) state.
    Changed(Result<bool, LeaseManagerError>),
    /// A standby saw the Lease free: start over with a fresh manager.
    Free,
    /// Every receiver is gone.
    Closed,
}

async fn run(
    client: Client,
    settings: LeaseSettings,
    leases: Api<Lease>,
    mut manager: LeaseManager,
    tx: watch::Sender<bool>,
    guard: LeaderGuard,
) -> Result<(), LeadershipError> {
    let renewer = KubeRenewer::new(leases.clone(), &settings);
    loop {
        let round = tokio::select! {
            biased;
            () = tx.closed() => Round::Closed,
            changed = manager.changed() => Round::Changed(changed),
            () = wait_until_free(&leases, &settings.name) => Round::Free,
        };
        match round {
            Round::Closed => return manager.release().await.map_err(LeadershipError::Manager),
            Round::Changed(Ok(true)) => match hold(&renewer, &guard, &tx).await {
                Held::Closed => return renewer.release().await,
                Held::SteppedDown => {
                    // The controller stops and the process restarts; release only once it has
                    // stopped (the receivers are gone), so writes in flight land before a standby
                    // can take over.
                    tx.closed().await;
                    return renewer.release().await;
                }
                Held::NeverLed => {
                    tokio::time::sleep(RECHECK).await;
                    manager = fresh_manager(&client, &settings, manager).await;
                }
            },
            Round::Changed(Ok(false)) => {}
            Round::Changed(Err(e)) => {
                tracing::warn!(error = %e, lease = %settings.name, "leader election");
                tokio::time::sleep(RECHECK).await;
            }
            Round::Free => manager = fresh_manager(&client, &settings, manager).await,
        }
    }
}

/// A new manager (which reads the Lease afresh), or the old one when it cannot be built.
async fn fresh_manager(client: &Client, settings: &LeaseSettings, old: LeaseManager) -> LeaseManager {
    match settings.manager(client).await {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::warn!(error = %e, lease = %settings.name, "leader election");
            tokio::time::sleep(RECHECK).await;
            old
        }
    }
}

/// How holding the Lease ended.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    /// Every receiver is gone (shutdown): release.
    Closed,
    /// Leadership ended: refused renewal or renew deadline missed.
    SteppedDown,
    /// Acquired, but no renewal ever succeeded: leadership was never published; contend again.
    NeverLed,
}

/// Holds an acquired Lease: renews at once and then every [`LeaseTiming::renew_every`] (half that
/// after a failure), publishes leadership after the first success, and steps down when a renewal
/// is refused or the renew deadline passes without one.
async fn hold(renewer: &dyn Renewer, guard: &LeaderGuard, tx: &watch::Sender<bool>) -> Held {
    let timing = guard.timing;
    let acquired = Instant::now();
    let mut next = acquired;
    loop {
        // Before the first renewal: give up a renew deadline after the acquisition.
        let deadline = guard.deadline().unwrap_or(acquired + timing.renew_deadline());
        let attempt = async {
            tokio::time::sleep_until(next).await;
            let started = Instant::now();
            let result = tokio::time::timeout(timing.renew_every(), renewer.renew(SystemTime::now())).await;
            (started, result)
        };
        let why = tokio::select! {
            biased;
            () = tx.closed() => return Held::Closed,
            () = tokio::time::sleep_until(deadline) => "no renewal within the renew deadline".to_string(),
            (started, result) = attempt => match result {
                Ok(Ok(())) => {
                    guard.renewed(started);
                    tx.send_if_modified(|leading| !std::mem::replace(leading, true));
                    next = started + timing.renew_every();
                    continue;
                }
                Ok(Err(e)) if renewal_refused(&e) => format!("renewal refused: {e}"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "renewing the Lease failed; retrying");
                    next = Instant::now() + timing.renew_every() / 2;
                    continue;
                }
                Err(_) => {
                    tracing::warn!("renewing the Lease timed out; retrying");
                    next = Instant::now();
                    continue;
                }
            },
        };
        if guard.deadline().is_none() {
            tracing::warn!(reason = %why, "acquired the Lease but could not renew it; contending again");
            return Held::NeverLed;
        }
        guard.step_down();
        tx.send_replace(false);
        tracing::error!(reason = %why, "stepping down as leader");
        return Held::SteppedDown;
    }
}

/// Returns once a read of the Lease finds it free (reads every [`RECHECK`]; a failed read counts
/// as not free).
async fn wait_until_free(leases: &Api<Lease>, name: &str) {
    loop {
        tokio::time::sleep(RECHECK).await;
        if let Ok(Some(lease)) = leases.get_opt(name).await
            && is_free(&lease, SystemTime::now())
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use std::collections::VecDeque;

    fn lease(holder: Option<&str>, renewed_secs_ago: u64, duration: Option<i32>) -> Lease {
        let renewed = SystemTime::now() - Duration::from_secs(renewed_secs_ago);
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renewed.try_into().expect("a recent time"))),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_released_lease_is_free() {
        assert!(is_free(&lease(None, 0, Some(15)), SystemTime::now()));
        assert!(is_free(&lease(Some(""), 0, Some(15)), SystemTime::now()));
        assert!(is_free(&Lease::default(), SystemTime::now()));
    }

    #[test]
    fn a_held_lease_is_free_only_after_its_term() {
        assert!(!is_free(&lease(Some("a"), 5, Some(15)), SystemTime::now()));
        assert!(is_free(&lease(Some("a"), 20, Some(15)), SystemTime::now()));
    }

    #[test]
    fn a_lease_without_a_term_is_free() {
        assert!(is_free(&lease(Some("a"), 0, None), SystemTime::now()));
    }

    fn timing(secs: u64) -> LeaseTiming {
        LeaseTiming::from_secs(secs).expect("valid")
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn leadership_ends_at_the_renew_deadline_not_at_the_term() {
        let t = timing(15);
        let last = Instant::now();
        assert!(!leading_at(None, last, t));
        assert!(leading_at(Some(last), last, t));
        assert!(leading_at(Some(last), last + secs(9.9), t));
        assert!(!leading_at(Some(last), last + secs(10.0), t));
        // Long before a standby may take the Lease (15 s).
        assert!(!leading_at(Some(last), last + secs(14.0), t));
        // A renewal "in the future" (clock read order) still counts as recent.
        assert!(leading_at(Some(last + secs(1.0)), last, t));
    }

    #[test]
    fn the_schedule_fits_inside_the_term() {
        for s in [MIN_LEASE_SECONDS, 4, 5, 15, 60, MAX_LEASE_SECONDS] {
            let t = timing(s);
            // At least three renewal attempts before the deadline, and a margin after it.
            assert!(t.renew_every() * 3 <= t.renew_deadline(), "{s}");
            assert!(t.duration() - t.renew_deadline() >= Duration::from_secs(1), "{s}");
            assert!(t.grace() >= 1 && t.grace() < s, "{s}");
        }
        assert_eq!(timing(15).renew_every(), secs(3.0));
        assert_eq!(timing(15).renew_deadline(), secs(10.0));
    }

    #[test]
    fn too_short_or_too_long_lease_durations_are_refused() {
        for bad in ["0", "1", "2", "3601"] {
            let e = bad.parse::<LeaseTiming>().expect_err(bad);
            assert!(matches!(e, LeaseDurationError::OutOfRange(_)), "{bad}: {e}");
            assert!(e.to_string().contains("between 3 and 3600 seconds"), "{e}");
        }
        assert!(matches!(
            "1.5".parse::<LeaseTiming>(),
            Err(LeaseDurationError::NotANumber(_))
        ));
        assert_eq!("15".parse::<LeaseTiming>().expect("valid").secs(), 15);
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure("x", "x").with_code(code).boxed())
    }

    #[test]
    fn only_a_refusal_ends_leadership_at_once() {
        for code in [400, 403, 404, 409, 422] {
            assert!(renewal_refused(&api_error(code)), "{code}");
        }
        for code in [408, 429, 500, 503, 504] {
            assert!(!renewal_refused(&api_error(code)), "{code}");
        }
        assert!(!renewal_refused(&kube::Error::Service("connection reset".into())));
    }

    /// One scripted answer to a renewal.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Ok,
        Code(u16),
        Hang,
    }

    /// Answers renewals from a script (then its last answer forever), after `delay` each.
    struct FakeRenewer {
        answers: Mutex<VecDeque<Answer>>,
        last: Mutex<Answer>,
        delay: Duration,
        calls: Mutex<Vec<Instant>>,
    }

    impl FakeRenewer {
        fn new(answers: &[Answer], delay: Duration) -> FakeRenewer {
            FakeRenewer {
                answers: Mutex::new(answers.iter().copied().collect()),
                last: Mutex::new(Answer::Ok),
                delay,
                calls: Mutex::default(),
            }
        }
        fn calls(&self) -> usize {
            self.calls.lock().expect("lock").len()
        }
    }

    #[async_trait]
    impl Renewer for FakeRenewer {
        async fn renew(&self, _stamp: SystemTime) -> Result<(), kube::Error> {
            self.calls.lock().expect("lock").push(Instant::now());
            tokio::time::sleep(self.delay).await;
            let answer = {
                let mut answers = self.answers.lock().expect("lock");
                let mut last = self.last.lock().expect("lock");
                if let Some(a) = answers.pop_front() {
                    *last = a;
                }
                *last
            };
            match answer {
                Answer::Ok => Ok(()),
                Answer::Code(code) => Err(api_error(code)),
                Answer::Hang => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                }
            }
        }
    }

    /// Runs `hold` against `renewer` (Lease of 15 s) and returns how it ended, when, and the guard.
    async fn hold_with(renewer: &FakeRenewer) -> (Held, Duration, LeaderGuard, watch::Receiver<bool>) {
        let guard = LeaderGuard::new(timing(15));
        let (tx, rx) = watch::channel(false);
        let start = Instant::now();
        let held = tokio::time::timeout(secs(60.0), hold(renewer, &guard, &tx))
            .await
            .expect("ends within a minute");
        (held, start.elapsed(), guard, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_leadership_and_a_failing_api_ends_it_at_the_deadline() {
        // Two renewals succeed (at 0 s and 3 s), then every request fails with a 503.
        let renewer = FakeRenewer::new(&[Answer::Ok, Answer::Ok, Answer::Code(503)], Duration::ZERO);
        let guard = LeaderGuard::new(timing(15));
        let (tx, mut rx) = watch::channel(false);
        let start = Instant::now();
        let task = tokio::spawn({
            let guard = guard.clone();
            async move {
                let renewer = renewer;
                let held = hold(&renewer, &guard, &tx).await;
                (held, renewer.calls())
            }
        });
        rx.wait_for(|l| *l).await.expect("leads");
        assert!(guard.check().is_ok());
        tokio::time::timeout(secs(60.0), rx.wait_for(|l| !*l))
            .await
            .expect("steps down within a minute")
            .expect("open");
        // Last success at 3 s: the deadline is 13 s, two seconds before a standby may take over.
        assert_eq!(start.elapsed(), secs(13.0));
        assert_eq!(guard.check(), Err(NotLeading));
        let (held, calls) = task.await.expect("task");
        assert_eq!(held, Held::SteppedDown);
        // Retried every 1.5 s after the failure at 6 s: 6, 7.5, 9, 10.5, 12.
        assert_eq!(calls, 2 + 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_renewal_does_not_extend_leadership() {
        // The first renewal succeeds; every later one hangs for a minute.
        let renewer = FakeRenewer::new(&[Answer::Ok, Answer::Hang], Duration::ZERO);
        let guard = LeaderGuard::new(timing(15));
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn({
            let guard = guard.clone();
            async move { hold(&renewer, &guard, &tx).await }
        });
        rx.wait_for(|l| *l).await.expect("leads");
        let start = Instant::now();
        // The guard answers from the clock, whatever the task is doing.
        tokio::time::sleep(secs(9.9)).await;
        assert!(guard.is_leading());
        tokio::time::sleep(secs(0.1)).await;
        assert!(!guard.is_leading());
        let held = tokio::time::timeout(secs(60.0), task)
            .await
            .expect("ends within a minute");
        assert_eq!(held.expect("task"), Held::SteppedDown);
        assert_eq!(start.elapsed(), secs(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_renewal_steps_down_at_once_and_for_good() {
        let renewer = FakeRenewer::new(
            &[Answer::Ok, Answer::Code(422), Answer::Ok],
            Duration::from_millis(10),
        );
        let (held, elapsed, guard, rx) = hold_with(&renewer).await;
        assert_eq!(held, Held::SteppedDown);
        assert_eq!(elapsed, secs(3.01));
        assert!(!*rx.borrow());
        // A late success (e.g. a renewal that lands anyway) does not bring leadership back.
        guard.renewed(Instant::now());
        assert_eq!(guard.check(), Err(NotLeading));
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_is_published_only_after_a_renewal() {
        let renewer = FakeRenewer::new(&[Answer::Code(500)], Duration::ZERO);
        let (held, elapsed, guard, rx) = hold_with(&renewer).await;
        assert_eq!(held, Held::NeverLed);
        assert_eq!(elapsed, secs(10.0));
        assert!(!*rx.borrow());
        assert!(!guard.is_leading());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_leading_ends_holding() {
        let renewer = FakeRenewer::new(&[Answer::Ok], Duration::ZERO);
        let guard = LeaderGuard::new(timing(15));
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn({
            let guard = guard.clone();
            async move { hold(&renewer, &guard, &tx).await }
        });
        rx.wait_for(|l| *l).await.expect("leads");
        drop(rx);
        assert_eq!(task.await.expect("task"), Held::Closed);
    }
}
