//! Which HPA API the cluster serves: `autoscaling/v2`, else `autoscaling/v2beta2` (Kubernetes ≥
//! 1.26 serves only v2). Discovery tells "not served" (a 404, or the group version without
//! `horizontalpodautoscalers`) apart from "could not ask" (any other error): the latter is retried
//! with backoff for up to [`DISCOVERY_BOUND`], after which the operator exits rather than guess.
//! A 404 from the HPA API later (the version went away, e.g. after an upgrade) asks for discovery
//! again ([`HpaRecheck`]); when the answer differs, the controller restarts with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use kube::Client;
use kube::api::{ApiResource, GroupVersionKind};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::context::HpaApi;
use crate::infra::backoff::{Backoff, jitter};
use crate::reconcile::hpa::HpaVersion;

/// How long discovery is retried before the operator gives up and exits.
pub const DISCOVERY_BOUND: Duration = Duration::from_secs(120);

/// Backoff between discovery attempts: 1 s doubling to 15 s, ±25 %.
pub const DISCOVERY_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(15),
};

/// Least time between two re-discoveries triggered by 404s.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

const HPA_PLURAL: &str = "horizontalpodautoscalers";

/// HPA discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Neither version is served.
    #[error("the cluster serves HorizontalPodAutoscalers in neither autoscaling/v2 nor autoscaling/v2beta2")]
    NoHpaApi,
    /// Discovery kept failing.
    #[error(
        "cannot tell which HPA API the cluster serves (autoscaling/v2 or v2beta2) after {0:?} of retries"
    )]
    Unknown(Duration, #[source] kube::Error),
}

/// Lists the resource names of a group version (the API server, or a fake in tests).
#[async_trait]
pub trait ApiGroups: Send + Sync {
    /// The resources of `group_version`, e.g. `autoscaling/v2`.
    async fn resources(&self, group_version: &str) -> Result<Vec<String>, kube::Error>;
}

#[async_trait]
impl ApiGroups for Client {
    async fn resources(&self, group_version: &str) -> Result<Vec<String>, kube::Error> {
        let list = self.list_api_group_resources(group_version).await?;
        Ok(list.resources.into_iter().map(|r| r.name).collect())
    }
}

/// Whether one group version serves HPAs: `Ok(false)` only when the answer says so (a 404, or a
/// list without them); any other failure is `Err` (unknown).
pub fn serves_hpas(answer: Result<Vec<String>, kube::Error>) -> Result<bool, kube::Error> {
    match answer {
        Ok(names) => Ok(names.iter().any(|n| n == HPA_PLURAL)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `e`, from a call to the HPA API, says the resource is not served.
pub fn hpa_api_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// One round of discovery: `Ok(None)` when neither version is served.
pub async fn discover_once(groups: &dyn ApiGroups) -> Result<Option<HpaVersion>, kube::Error> {
    if serves_hpas(groups.resources(HpaVersion::V2.api_version()).await)? {
        return Ok(Some(HpaVersion::V2));
    }
    let v2beta2 = serves_hpas(groups.resources(HpaVersion::V2beta2.api_version()).await)?;
    Ok(v2beta2.then_some(HpaVersion::V2beta2))
}

/// Discovers the HPA version, retrying failures with [`DISCOVERY_BACKOFF`] for up to `bound`.
pub async fn discover(groups: &dyn ApiGroups, bound: Duration) -> Result<HpaVersion, DiscoveryError> {
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        let e = match discover_once(groups).await {
            Ok(Some(version)) => return Ok(version),
            Ok(None) => return Err(DiscoveryError::NoHpaApi),
            Err(e) => e,
        };
        let left = bound.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(DiscoveryError::Unknown(bound, e));
        }
        attempt = attempt.saturating_add(1);
        let delay = DISCOVERY_BACKOFF.delay(attempt, jitter(attempt)).min(left);
        tracing::warn!(error = %e, retry_in = ?delay, "HPA API discovery failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The API resource of `version`'s HPAs.
pub fn hpa_api(version: HpaVersion) -> HpaApi {
    let gvk = GroupVersionKind::gvk("autoscaling", version.version(), "HorizontalPodAutoscaler");
    HpaApi {
        version,
        resource: ApiResource::from_gvk_with_plural(&gvk, HPA_PLURAL),
    }
}

/// Whether a re-discovery's answer means the controller must restart: only a successful answer
/// naming another version (a failure or "none served" keeps the running one).
pub fn needs_restart(current: HpaVersion, rediscovered: &Result<Option<HpaVersion>, kube::Error>) -> bool {
    matches!(rediscovered, Ok(Some(v)) if *v != current)
}

/// Re-discovery on a 404 from the HPA API, at most once per [`RECHECK_INTERVAL`]; [`Self::changed`]
/// resolves when the cluster serves another version than the controller uses.
pub struct HpaRecheck {
    current: HpaVersion,
    running: AtomicBool,
    last: Mutex<Option<Instant>>,
    changed: watch::Sender<bool>,
}

impl HpaRecheck {
    /// A recheck for a controller that uses `current`.
    pub fn new(current: HpaVersion) -> HpaRecheck {
        HpaRecheck {
            current,
            running: AtomicBool::new(false),
            last: Mutex::new(None),
            changed: watch::Sender::new(false),
        }
    }

    /// Called on a 404 from the HPA API: starts a re-discovery in the background, unless one runs
    /// or ran less than [`RECHECK_INTERVAL`] ago.
    pub fn request(self: &Arc<Self>, groups: Arc<dyn ApiGroups>) {
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|l| l.elapsed() < RECHECK_INTERVAL)
                || self.running.swap(true, Ordering::AcqRel)
            {
                return;
            }
            *last = Some(Instant::now());
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.recheck(groups.as_ref()).await;
            this.running.store(false, Ordering::Release);
        });
    }

    async fn recheck(&self, groups: &dyn ApiGroups) {
        let found = discover_once(groups).await;
        if needs_restart(self.current, &found) {
            tracing::warn!(
                was = self.current.api_version(),
                now = ?found.as_ref().ok().copied().flatten().map(HpaVersion::api_version),
                "the HPA API changed; restarting the controller"
            );
            self.changed.send_replace(true);
        }
    }

    /// Whether a re-discovery found another version.
    pub fn has_changed(&self) -> bool {
        *self.changed.borrow()
    }

    /// Resolves when a re-discovery finds another version.
    pub async fn changed(&self) {
        let mut rx = self.changed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, VecDeque};

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure("x", "x").with_code(code).boxed())
    }

    /// Scripted answers of one group version: resource names, or an HTTP error code.
    type Script = VecDeque<Result<Vec<String>, u16>>;

    /// Answers per group version from a script (then its last answer forever); counts calls.
    #[derive(Default)]
    struct FakeGroups {
        answers: Mutex<HashMap<&'static str, Script>>,
        calls: Mutex<Vec<(String, Instant)>>,
    }

    impl FakeGroups {
        fn with(mut self, gv: &'static str, answers: Vec<Result<&[&str], u16>>) -> Self {
            let answers = answers
                .into_iter()
                .map(|a| a.map(|names| names.iter().map(|n| n.to_string()).collect()))
                .collect();
            self.answers.get_mut().expect("lock").insert(gv, answers);
            self
        }
        fn calls(&self) -> usize {
            self.calls.lock().expect("lock").len()
        }
    }

    #[async_trait]
    impl ApiGroups for FakeGroups {
        async fn resources(&self, gv: &str) -> Result<Vec<String>, kube::Error> {
            self.calls
                .lock()
                .expect("lock")
                .push((gv.to_string(), Instant::now()));
            let mut answers = self.answers.lock().expect("lock");
            let Some(queue) = answers.get_mut(gv) else {
                return Err(api_error(404));
            };
            let answer = if queue.len() > 1 {
                queue.pop_front()
            } else {
                queue.front().cloned()
            };
            match answer {
                Some(Ok(names)) => Ok(names),
                Some(Err(code)) => Err(api_error(code)),
                None => Err(api_error(404)),
            }
        }
    }

    const HPA: &[&str] = &["horizontalpodautoscalers", "horizontalpodautoscalers/status"];

    #[test]
    fn only_an_answer_says_not_served() {
        assert!(serves_hpas(Ok(vec![HPA_PLURAL.into()])).expect("known"));
        assert!(!serves_hpas(Ok(vec!["other".into()])).expect("known"));
        assert!(!serves_hpas(Err(api_error(404))).expect("known"));
        for code in [403, 429, 500, 503] {
            assert!(serves_hpas(Err(api_error(code))).is_err(), "{code}");
        }
        assert!(serves_hpas(Err(kube::Error::Service("timeout".into()))).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_call_is_retried_not_taken_for_v2beta2() {
        // autoscaling/v2 fails twice (a 503, then a 429) before answering; v2beta2 is not served.
        let groups = FakeGroups::default().with("autoscaling/v2", vec![Err(503), Err(429), Ok(HPA)]);
        let start = Instant::now();
        let version = discover(&groups, DISCOVERY_BOUND).await.expect("discovered");
        assert_eq!(version, HpaVersion::V2);
        assert_eq!(groups.calls(), 3);
        // 1 s and 2 s nominal, ±25 %.
        let waited = start.elapsed().as_secs_f64();
        assert!((2.25..=3.75).contains(&waited), "{waited}");
    }

    #[tokio::test(start_paused = true)]
    async fn v2beta2_only_when_v2_is_not_served() {
        let groups = FakeGroups::default()
            .with("autoscaling/v2", vec![Err(404)])
            .with("autoscaling/v2beta2", vec![Ok(HPA)]);
        assert_eq!(
            discover(&groups, DISCOVERY_BOUND).await.expect("found"),
            HpaVersion::V2beta2
        );
        let groups = FakeGroups::default().with("autoscaling/v2", vec![Ok(&["other"])]);
        assert!(matches!(
            discover(&groups, DISCOVERY_BOUND).await,
            Err(DiscoveryError::NoHpaApi)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_gives_up_after_its_bound() {
        let groups = FakeGroups::default().with("autoscaling/v2", vec![Err(503)]);
        let start = Instant::now();
        let got = discover(&groups, DISCOVERY_BOUND).await;
        assert!(matches!(got, Err(DiscoveryError::Unknown(_, kube::Error::Api(ref s))) if s.code == 503));
        assert_eq!(start.elapsed(), DISCOVERY_BOUND);
        assert!(
            got.expect_err("unknown")
                .to_string()
                .contains("cannot tell which HPA API")
        );
    }

    #[test]
    fn only_another_served_version_restarts_the_controller() {
        assert!(needs_restart(HpaVersion::V2beta2, &Ok(Some(HpaVersion::V2))));
        assert!(!needs_restart(HpaVersion::V2, &Ok(Some(HpaVersion::V2))));
        assert!(!needs_restart(HpaVersion::V2, &Ok(None)));
        assert!(!needs_restart(HpaVersion::V2, &Err(api_error(503))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_404_from_the_hpa_api_rediscovers_at_most_every_interval() {
        // The controller uses v2beta2; the cluster now serves only v2.
        let groups = Arc::new(FakeGroups::default().with("autoscaling/v2", vec![Ok(HPA)]));
        let recheck = Arc::new(HpaRecheck::new(HpaVersion::V2beta2));
        assert!(hpa_api_gone(&api_error(404)));
        recheck.request(groups.clone());
        recheck.request(groups.clone());
        tokio::time::timeout(Duration::from_secs(1), recheck.changed())
            .await
            .expect("restart asked");
        assert!(recheck.has_changed());
        assert_eq!(groups.calls(), 1);
        recheck.request(groups.clone());
        tokio::task::yield_now().await;
        assert_eq!(groups.calls(), 1);
        tokio::time::sleep(RECHECK_INTERVAL).await;
        recheck.request(groups.clone());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(groups.calls(), 2);
    }
}
