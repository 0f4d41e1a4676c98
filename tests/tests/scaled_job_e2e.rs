//! ScaledJob end to end: `ebb operator` against the real API server and kube-controller-manager
//! (its Job controller and garbage collector), with a metrics-api source served by the test
//! (`targetValue: "1"`, so the queue length is the depth). Each test has its own namespace,
//! operator process and metric source, and polls every second.
//!
//! **No Job runs.** The Jobs' pods select a node label no node has, so they stay Pending and every
//! unfinished Job counts as pending. A Job cannot finish by itself then: the test marks Jobs
//! finished through the Job's `status` subresource, as the Job controller would when a pod ends
//! ([`Setup::finish_job`]). On 1.20.2, the test environment's version, the API server checks only
//! that the counters are not negative. Newer servers (1.31+ with `JobManagedBy`) also require a
//! start time, no active pods, `SuccessCriteriaMet` before `Complete` with a completion time not
//! before the start, and `FailureTarget` before `Failed` without a completion time: the test writes
//! all of that, which 1.20.2 accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_crds::ScaledJob;
use ebb_crds::annotations::{PAUSED, SCALED_JOB_NAME_LABEL};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, TestNamespace, install_crds, pods, wait_for};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

/// The rollout finalizer of a ScaledJob whose Jobs outlive it.
const ROLLOUT_FINALIZER: &str = "ebb.dev/scaledjob-rollout";
/// The ScaledJobs' `pollingInterval`, in seconds.
const POLL: u64 = 1;

struct Setup {
    env: TestEnv,
    ns: TestNamespace,
    source: MetricSource,
    operator: Option<OperatorProcess>,
}

async fn setup(prefix: &str, depth: i64) -> Setup {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace(prefix).await.unwrap();
    // The Job controller creates the Jobs' pods; on 1.20 it cannot before the namespace's default
    // ServiceAccount has its token.
    pods::wait_service_account(&env.client, &ns.name).await.unwrap();
    let source = MetricSource::start(depth).await;
    let operator = OperatorProcess::start(&env, &ns.name, "op-a", &[]).await.unwrap();
    Setup {
        env,
        ns,
        source,
        operator: Some(operator),
    }
}

/// How the test ends a Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Complete,
    Failed,
}

/// Whether a Job's Complete or Failed condition is True.
fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
}

fn name_of(job: &Job) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

/// RFC 3339 in UTC, whole seconds, as Kubernetes writes times.
fn rfc3339(second: i64) -> String {
    jiff::Timestamp::from_second(second)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn now_second() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Setup {
    fn sj_api(&self) -> Api<ScaledJob> {
        Api::namespaced(self.env.client.clone(), &self.ns.name)
    }
    fn job_api(&self) -> Api<Job> {
        Api::namespaced(self.env.client.clone(), &self.ns.name)
    }

    /// Creates ScaledJob `name`: accurate strategy, at most 5 Jobs, one Job per message of the
    /// test's source; `spec_extra` replaces top-level spec fields. Its pods never leave Pending.
    async fn create_sj(&self, name: &str, spec_extra: Value, annotations: Value) {
        let mut spec = json!({
            "jobTargetRef": {"template": {"spec": {
                "nodeSelector": {"ebb.test/no-such-node": "true"},
                "containers": [{"name": "worker", "image": "registry.invalid/worker:1"}]}}},
            "pollingInterval": POLL,
            "maxReplicaCount": 5,
            "scalingStrategy": {"strategy": "accurate"},
            "triggers": [{"type": "metrics-api", "metadata": {
                "url": self.source.url, "valueLocation": "queue.depth", "targetValue": "1"}}]
        });
        for (k, v) in spec_extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let sj: ScaledJob = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": name, "annotations": annotations}, "spec": spec,
        }))
        .unwrap();
        self.sj_api().create(&PostParams::default(), &sj).await.unwrap();
    }

    /// The Jobs of ScaledJob `sj` (by label), oldest first; Jobs being deleted are left out.
    async fn jobs(&self, sj: &str) -> Vec<Job> {
        let params = ListParams::default().labels(&format!("{SCALED_JOB_NAME_LABEL}={sj}"));
        let mut jobs: Vec<Job> = self
            .job_api()
            .list(&params)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect();
        jobs.sort_by_key(|j| (j.metadata.creation_timestamp.clone().map(|t| t.0), name_of(j)));
        jobs
    }

    async fn job_names(&self, sj: &str) -> BTreeSet<String> {
        self.jobs(sj).await.iter().map(name_of).collect()
    }

    async fn unfinished(&self, sj: &str) -> Vec<String> {
        self.jobs(sj)
            .await
            .iter()
            .filter(|j| !is_finished(j))
            .map(name_of)
            .collect()
    }

    /// Waits until ScaledJob `sj` has `want` unfinished Jobs.
    async fn wait_unfinished(&self, sj: &str, want: usize, within: Duration) -> Vec<String> {
        let found = wait_for(&format!("{want} unfinished Jobs of {sj}"), within, || async {
            let names = self.unfinished(sj).await;
            (names.len() == want).then_some(names)
        })
        .await;
        match found {
            Ok(names) => names,
            Err(e) => panic!(
                "{e}; Jobs now: {:?}; events: {}",
                self.unfinished(sj).await,
                self.describe_events().await
            ),
        }
    }

    /// Marks Job `name` finished at `at_second` (Unix seconds) through its status subresource.
    /// It first waits for the Job controller's own first status write (`active: 1`, its pod
    /// created): on 1.20 that controller writes its whole computed status over the latest one, so a
    /// write of ours before it could be lost; after it, a Job whose pod stays Pending gets no
    /// further write from it.
    async fn finish_job(&self, name: &str, outcome: Outcome, at_second: i64) {
        let api = self.job_api();
        let job = wait_for(
            &format!("the Job controller to start Job {name}"),
            Duration::from_secs(30),
            || async {
                let job = api.get(name).await.ok()?;
                let active = job.status.as_ref()?.active?;
                (active >= 1).then_some(job)
            },
        )
        .await
        .unwrap();
        let at = rfc3339(at_second);
        let condition = |type_: &str| {
            json!({"type": type_, "status": "True", "reason": "MarkedByTest",
                   "message": "finished by the end-to-end test (no node runs the pod)",
                   "lastProbeTime": at, "lastTransitionTime": at})
        };
        let mut status = match outcome {
            Outcome::Complete => json!({
                "active": 0, "succeeded": 1, "completionTime": at,
                "conditions": [condition("SuccessCriteriaMet"), condition("Complete")]}),
            Outcome::Failed => json!({
                "active": 0, "failed": 1,
                "conditions": [condition("FailureTarget"), condition("Failed")]}),
        };
        if job.status.as_ref().and_then(|s| s.start_time.as_ref()).is_none() {
            status["startTime"] = json!(at);
        }
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    }

    /// Sets the depth, then waits until the source has answered a request with it: the operator
    /// polls its triggers one tick after another, so no tick that read the old depth can still be
    /// deciding once a newer request was served. Returns at once if nothing polls within 5 s.
    async fn set_depth_seen(&self, depth: i64) {
        self.source.set_depth(depth);
        let before = self.source.requests();
        let _ = wait_for("a poll of the new depth", Duration::from_secs(5), || async {
            (self.source.requests() > before).then_some(())
        })
        .await;
    }

    /// Waits until the source has served `n` more requests (ticks of the operator) and at least
    /// `n` polling intervals have passed.
    async fn wait_polls(&self, n: u64) {
        let start = Instant::now();
        let before = self.source.requests();
        wait_for(
            &format!("{n} polls of the source"),
            Duration::from_secs(n * POLL * 5 + 10),
            || async { (self.source.requests() >= before + n).then_some(()) },
        )
        .await
        .unwrap();
        let floor = Duration::from_secs(n * POLL);
        if let Some(rest) = floor.checked_sub(start.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }

    async fn condition(&self, sj: &str, type_: &str) -> Option<(String, String, String)> {
        let sj = self.sj_api().get(sj).await.ok()?;
        let c = sj.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
        Some((
            c.status,
            c.reason.unwrap_or_default(),
            c.message.unwrap_or_default(),
        ))
    }

    async fn wait_condition(&self, sj: &str, type_: &str, status: &str, within: Duration) {
        let found = wait_for(&format!("{sj} {type_}={status}"), within, || async {
            self.condition(sj, type_).await.filter(|c| c.0 == status)
        })
        .await;
        if let Err(e) = found {
            let now = self.sj_api().get(sj).await.ok().and_then(|s| s.status);
            panic!("{e}; status now: {}", serde_json::to_string(&now).unwrap());
        }
    }

    /// Every events.k8s.io/v1 Event about ScaledJob `sj`.
    async fn events_of(&self, sj: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.env.client.clone(), &self.ns.name)
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                let about = e.regarding.as_ref();
                about.and_then(|r| r.kind.as_deref()) == Some("ScaledJob")
                    && about.and_then(|r| r.name.as_deref()) == Some(sj)
            })
            .collect()
    }

    /// Waits for an Event of `type_` and `reason` about ScaledJob `sj` whose note has `note_has`.
    async fn wait_event(&self, sj: &str, type_: &str, reason: &str, note_has: &str) -> Event {
        let found = wait_for(
            &format!("{type_} Event {reason} on ScaledJob {sj} with {note_has:?}"),
            Duration::from_secs(15),
            || async {
                self.events_of(sj).await.into_iter().find(|e| {
                    e.type_.as_deref() == Some(type_)
                        && e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().unwrap_or_default().contains(note_has)
                })
            },
        )
        .await;
        match found {
            Ok(e) => e,
            Err(e) => panic!("{e}; events: {}", self.describe_events().await),
        }
    }

    /// One line per Event of the namespace, the scheduler's about the Pending pods left out.
    async fn describe_events(&self) -> String {
        let events = Api::<Event>::namespaced(self.env.client.clone(), &self.ns.name)
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let lines: Vec<String> = events
            .iter()
            .filter(|e| e.reason.as_deref() != Some("FailedScheduling"))
            .map(|e| {
                let about = e.regarding.as_ref();
                format!(
                    "{} {} {}/{}: {}",
                    e.type_.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    about.and_then(|r| r.kind.as_deref()).unwrap_or("?"),
                    about.and_then(|r| r.name.as_deref()).unwrap_or("?"),
                    e.note.as_deref().unwrap_or_default()
                )
            })
            .collect();
        format!("[{}]", lines.join("; "))
    }

    async fn annotate(&self, sj: &str, annotations: Value) {
        let patch = json!({"metadata": {"annotations": annotations}});
        self.sj_api()
            .patch(sj, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Stops the operator and deletes the namespace (which strips ebb's finalizers first).
    async fn finish(mut self) {
        if let Some(op) = self.operator.take() {
            op.terminate().await;
        }
        self.ns.delete().await.unwrap();
    }
}

/// What a watch of the namespace's ScaledJob Jobs has seen, event by event in the API server's
/// order: every state the Jobs went through, not only those a poll happens to catch.
#[derive(Debug, Default)]
struct Seen {
    /// Jobs now, and whether each is finished.
    jobs: BTreeMap<String, bool>,
    /// Every Job ever seen.
    ever: BTreeSet<String>,
    /// Jobs deleted.
    deleted: BTreeSet<String>,
    /// The most unfinished Jobs at any one time.
    max_unfinished: usize,
}

impl Seen {
    fn unfinished(&self) -> usize {
        self.jobs.values().filter(|f| !**f).count()
    }
    fn apply(&mut self, job: &Job) {
        let name = name_of(job);
        self.ever.insert(name.clone());
        self.jobs.insert(name, is_finished(job));
        self.max_unfinished = self.max_unfinished.max(self.unfinished());
    }
}

/// Watches the Jobs labelled `scaledjob.ebb.dev/name` in a namespace until dropped.
struct JobWatch {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl JobWatch {
    /// Starts the watch and waits for its first list.
    async fn start(api: Api<Job>) -> JobWatch {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let config = watcher::Config::default().labels(SCALED_JOB_NAME_LABEL);
            let mut stream = watcher(api, config).default_backoff().boxed();
            let mut listed = Some(listed_tx);
            let mut relist: Vec<Job> = Vec::new();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let mut seen = shared.lock().unwrap();
                match event {
                    watcher::Event::Apply(job) => seen.apply(&job),
                    watcher::Event::Delete(job) => {
                        let name = name_of(&job);
                        seen.jobs.remove(&name);
                        seen.deleted.insert(name);
                    }
                    watcher::Event::Init => relist.clear(),
                    watcher::Event::InitApply(job) => relist.push(job),
                    watcher::Event::InitDone => {
                        let now: BTreeSet<String> = relist.iter().map(name_of).collect();
                        let gone: Vec<String> =
                            seen.jobs.keys().filter(|n| !now.contains(*n)).cloned().collect();
                        for name in gone {
                            seen.jobs.remove(&name);
                            seen.deleted.insert(name);
                        }
                        for job in relist.drain(..) {
                            seen.apply(&job);
                        }
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(15), listed_rx)
            .await
            .expect("the Job watch lists within 15 s")
            .unwrap();
        JobWatch { seen, task }
    }

    fn snapshot<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }

    /// Waits until the watch has seen `pred` hold.
    async fn wait(&self, what: &str, within: Duration, pred: impl Fn(&Seen) -> bool) {
        let found = wait_for(what, within, || async { self.snapshot(&pred).then_some(()) }).await;
        if let Err(e) = found {
            panic!("{e}; watch saw: {:?}", self.seen.lock().unwrap());
        }
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_queue_of_12_runs_as_jobs_at_most_5_at_once_until_it_is_empty() {
    let s = setup("sj-queue", 12).await;
    let watch = JobWatch::start(s.job_api()).await;
    s.create_sj("worker", json!({}), json!({})).await;

    // 5 Jobs start (the max), and no sixth while none finishes.
    watch
        .wait("5 unfinished Jobs", Duration::from_secs(20), |w| {
            w.unfinished() == 5
        })
        .await;
    s.wait_polls(2).await;
    assert_eq!(
        watch.snapshot(|w| w.ever.len()),
        5,
        "more than the max at a full queue"
    );

    // The Jobs are ebb's: generated names, the label on them and on their pods, a controller
    // reference to the ScaledJob, and the restart policy a Job needs.
    let sj = s.sj_api().get("worker").await.unwrap();
    let jobs = s.jobs("worker").await;
    assert_eq!(jobs.len(), 5);
    for job in &jobs {
        assert!(name_of(job).starts_with("worker-"), "{}", name_of(job));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SCALED_JOB_NAME_LABEL], "worker");
        let owners = job.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                Some(owners[0].uid.as_str()),
                owners[0].controller
            ),
            ("ScaledJob", "worker", sj.metadata.uid.as_deref(), Some(true))
        );
        let template = &job.spec.as_ref().unwrap().template;
        let pod_labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(pod_labels[SCALED_JOB_NAME_LABEL], "worker");
        assert_eq!(
            template.spec.as_ref().unwrap().restart_policy.as_deref(),
            Some("OnFailure")
        );
    }
    s.wait_event("worker", "Normal", "JobsCreated", "created").await;
    s.wait_condition("worker", "Ready", "True", Duration::from_secs(5))
        .await;
    s.wait_condition("worker", "Active", "True", Duration::from_secs(5))
        .await;
    let status = s.sj_api().get("worker").await.unwrap().status.unwrap();
    assert_eq!(status.triggers_types.as_deref(), Some("metrics-api"));
    assert!(
        status.last_active_time.is_some(),
        "no lastActiveTime while active"
    );

    // Workers take two messages at a time: the depth drops by two (first, so that no tick sees
    // the old depth with fewer Jobs), then their two Jobs finish; the operator starts Jobs for
    // what is left, one per message, at most 5 unfinished.
    let mut depth: usize = 12;
    while depth > 0 {
        let unfinished = s.unfinished("worker").await;
        let done: Vec<String> = unfinished.into_iter().take(2).collect();
        assert!(!done.is_empty(), "no Job to finish at depth {depth}");
        depth -= done.len();
        s.set_depth_seen(depth as i64).await;
        for name in &done {
            s.finish_job(name, Outcome::Complete, now_second()).await;
        }
        let want_unfinished = depth.min(5);
        let want_created = 12 - depth + want_unfinished;
        watch
            .wait(
                &format!("{want_unfinished} unfinished of {want_created} Jobs at depth {depth}"),
                Duration::from_secs(15),
                |w| w.unfinished() == want_unfinished && w.ever.len() == want_created,
            )
            .await;
    }
    // The queue is empty: nothing more starts.
    s.wait_polls(2).await;
    let (created, max_unfinished, deleted) =
        watch.snapshot(|w| (w.ever.len(), w.max_unfinished, w.deleted.len()));
    assert_eq!(created, 12, "one Job per message");
    assert!(max_unfinished <= 5, "{max_unfinished} unfinished Jobs at once");
    assert_eq!(deleted, 0, "finished Jobs are within the default history limit");
    s.wait_condition("worker", "Active", "False", Duration::from_secs(5))
        .await;
    s.finish().await;
}

#[tokio::test]
async fn nothing_runs_at_rest() {
    let s = setup("sj-rest", 0).await;
    let watch = JobWatch::start(s.job_api()).await;
    s.create_sj("idle", json!({}), json!({})).await;
    s.wait_condition("idle", "Ready", "True", Duration::from_secs(20))
        .await;
    s.wait_polls(4).await;
    assert_eq!(
        watch.snapshot(|w| w.ever.clone()),
        BTreeSet::new(),
        "a Job at depth 0"
    );
    s.wait_condition("idle", "Active", "False", Duration::from_secs(5))
        .await;
    let status = s.sj_api().get("idle").await.unwrap().status.unwrap();
    assert_eq!(status.triggers_types.as_deref(), Some("metrics-api"));
    // Steady state writes nothing.
    let before = s.sj_api().get("idle").await.unwrap();
    s.wait_polls(3).await;
    let after = s.sj_api().get("idle").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version,
        "ScaledJob written at rest:\nbefore {}\nafter  {}",
        serde_json::to_string(&before.status).unwrap(),
        serde_json::to_string(&after.status).unwrap()
    );
    assert!(watch.snapshot(|w| w.ever.is_empty()), "a Job at depth 0");
    s.finish().await;
}

#[tokio::test]
async fn history_limits_keep_the_newest_finished_jobs() {
    let s = setup("sj-history", 7).await;
    s.create_sj(
        "batch",
        json!({"maxReplicaCount": 7, "successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1}),
        json!({}),
    )
    .await;
    let jobs = s.wait_unfinished("batch", 7, Duration::from_secs(20)).await;
    // Six messages are done; one Job stays unfinished for the seventh.
    s.set_depth_seen(1).await;
    // Each Job ends at its own second (set by the test), so "oldest" is well defined.
    let base = now_second();
    let plan = [
        (Outcome::Complete, 0),
        (Outcome::Complete, 1),
        (Outcome::Complete, 2),
        (Outcome::Complete, 3),
        (Outcome::Failed, 0),
        (Outcome::Failed, 1),
    ];
    for (name, (outcome, offset)) in jobs.iter().zip(plan) {
        s.finish_job(name, outcome, base + offset).await;
    }
    // Kept: the two newest Complete (+2 s, +3 s), the newest Failed (+1 s), the unfinished one.
    let want: BTreeSet<String> = [&jobs[2], &jobs[3], &jobs[5], &jobs[6]]
        .into_iter()
        .cloned()
        .collect();
    let found = wait_for("the history trimmed", Duration::from_secs(15), || async {
        (s.job_names("batch").await == want).then_some(())
    })
    .await;
    if let Err(e) = found {
        panic!(
            "{e}: want {want:?}, have {:?} (finished in the order {:?})",
            s.job_names("batch").await,
            &jobs[..6]
        );
    }
    // It holds: nothing more is deleted, nothing is created.
    s.wait_polls(2).await;
    assert_eq!(s.job_names("batch").await, want);
    assert_eq!(s.unfinished("batch").await, [jobs[6].clone()]);
    s.finish().await;
}

#[tokio::test]
async fn a_trigger_outage_creates_and_deletes_nothing_and_jobs_resume_after() {
    let s = setup("sj-outage", 3).await;
    let watch = JobWatch::start(s.job_api()).await;
    s.create_sj("worker", json!({}), json!({})).await;
    let first: BTreeSet<String> = s
        .wait_unfinished("worker", 3, Duration::from_secs(20))
        .await
        .into_iter()
        .collect();
    // The source fails; behind the failure, more work is queued.
    s.source.set_failing(true);
    s.source.set_depth(5);
    s.wait_event("worker", "Warning", "TriggerFailing", "").await;
    s.wait_polls(3).await;
    assert_eq!(
        watch.snapshot(|w| (w.ever.clone(), w.deleted.clone())),
        (first.clone(), BTreeSet::new()),
        "Jobs created or deleted during the outage"
    );
    // The source answers again: the two queued messages get their Jobs.
    s.source.set_failing(false);
    let now: BTreeSet<String> = s
        .wait_unfinished("worker", 5, Duration::from_secs(15))
        .await
        .into_iter()
        .collect();
    assert!(now.is_superset(&first), "{now:?} lost some of {first:?}");
    s.wait_polls(2).await;
    assert_eq!(watch.snapshot(|w| w.ever.len()), 5);
    assert!(watch.snapshot(|w| w.deleted.is_empty()));
    s.finish().await;
}

#[tokio::test]
async fn pause_holds_creation_and_unpausing_creates() {
    let s = setup("sj-pause", 2).await;
    let watch = JobWatch::start(s.job_api()).await;
    s.create_sj("worker", json!({}), json!({PAUSED: "true"})).await;
    s.wait_condition("worker", "Paused", "True", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(3 * POLL)).await;
    assert!(
        watch.snapshot(|w| w.ever.is_empty()),
        "a Job created while paused"
    );
    // Unpaused (the annotation removed): the queue gets its Jobs.
    s.annotate("worker", json!({PAUSED: null})).await;
    let first = s.wait_unfinished("worker", 2, Duration::from_secs(15)).await;
    s.wait_condition("worker", "Paused", "False", Duration::from_secs(5))
        .await;
    // Paused again with Jobs running: more work creates nothing, and the Jobs stay.
    s.annotate("worker", json!({PAUSED: "true"})).await;
    s.wait_condition("worker", "Paused", "True", Duration::from_secs(10))
        .await;
    s.source.set_depth(4);
    tokio::time::sleep(Duration::from_secs(3 * POLL)).await;
    assert_eq!(s.unfinished("worker").await, first, "Jobs changed while paused");
    assert_eq!(watch.snapshot(|w| w.ever.len()), 2);
    // `paused: "false"` is not paused.
    s.annotate("worker", json!({PAUSED: "false"})).await;
    s.wait_unfinished("worker", 4, Duration::from_secs(15)).await;
    s.finish().await;
}

#[tokio::test]
async fn deleting_a_scaled_job_deletes_its_jobs_unless_the_rollout_is_gradual() {
    let s = setup("sj-delete", 2).await;
    s.create_sj("now", json!({"rollout": {"strategy": "default"}}), json!({}))
        .await;
    s.create_sj("later", json!({"rollout": {"strategy": "gradual"}}), json!({}))
        .await;
    s.wait_unfinished("now", 2, Duration::from_secs(20)).await;
    let kept: BTreeSet<String> = s
        .wait_unfinished("later", 2, Duration::from_secs(20))
        .await
        .into_iter()
        .collect();
    let later = s.sj_api().get("later").await.unwrap();
    assert!(
        later
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == ROLLOUT_FINALIZER),
        "gradual rollout without the finalizer {ROLLOUT_FINALIZER}: {:?}",
        later.metadata.finalizers
    );
    // Nothing new is wanted: the ScaledJobs' deletion is all that happens.
    s.set_depth_seen(0).await;
    for sj in ["now", "later"] {
        s.sj_api().delete(sj, &DeleteParams::default()).await.unwrap();
    }
    for sj in ["now", "later"] {
        wait_for(
            &format!("ScaledJob {sj} gone"),
            Duration::from_secs(20),
            || async { s.sj_api().get_opt(sj).await.ok()?.is_none().then_some(()) },
        )
        .await
        .unwrap();
    }
    // The garbage collector deletes the default rollout's Jobs through their owner reference...
    wait_for(
        "the garbage collector to delete the Jobs of `now`",
        Duration::from_secs(30),
        || async { s.jobs("now").await.is_empty().then_some(()) },
    )
    .await
    .unwrap();
    // ...and, given as long again, leaves the gradual rollout's, which lost their owner reference.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = s.jobs("later").await;
    assert_eq!(
        left.iter().map(name_of).collect::<BTreeSet<_>>(),
        kept,
        "gradual rollout: the Jobs must outlive their ScaledJob"
    );
    for job in &left {
        assert!(
            job.metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.is_empty()),
            "{} still has owner references {:?}",
            name_of(job),
            job.metadata.owner_references
        );
        assert!(!is_finished(job), "{} finished", name_of(job));
    }
    s.finish().await;
}

/// Jobs that really run: pods on the test node (busybox, `sleep 1`), completed by the real kubelet
/// and Job controller, then trimmed to the history limit, and nothing more created at rest.
#[tokio::test]
async fn jobs_run_to_completion_on_the_node() {
    let s = setup("sj-node", 3).await;
    pods::require_node(&s.env).unwrap();
    let watch = JobWatch::start(s.job_api()).await;
    s.create_sj(
        "runs",
        json!({
            "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "worker", "image": pods::BUSYBOX_IMAGE,
                                "imagePullPolicy": "Never", "command": ["sh", "-c", "sleep 1"]}]}}},
            "successfulJobsHistoryLimit": 2
        }),
        json!({}),
    )
    .await;
    watch
        .wait("3 Jobs for 3 messages", Duration::from_secs(20), |w| {
            w.ever.len() == 3
        })
        .await;
    // Each Job took its message.
    s.set_depth_seen(0).await;
    // The kubelet runs them; the Job controller marks them Complete; ebb keeps the newest 2.
    wait_for(
        "2 Complete Jobs left by the history limit",
        Duration::from_secs(60),
        || async {
            let jobs = s.jobs("runs").await;
            let complete = jobs.iter().filter(|j| is_finished(j)).count();
            (jobs.len() == 2 && complete == 2).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    s.wait_polls(3).await;
    assert_eq!(watch.snapshot(|w| w.ever.len()), 3, "a Job created at rest");
    s.finish().await;
}

/// Activation as fast as for ScaledObjects: a ScaledJob at zero with the default 30 s
/// `pollingInterval` creates its first Job within about a second of a message arriving, woken by
/// the Kafka client's activity watcher (rounds every 0.5 s), not by its next poll.
#[tokio::test]
async fn a_kafka_message_wakes_a_scaled_job_at_zero_within_a_second() {
    use ebb_tests::kafka::{KafkaAdmin, unique_name};
    let s = setup("sj-kafka", 0).await;
    let bootstrap = s.env.var("EBB_KAFKA_BOOTSTRAP").unwrap().to_string();
    let mut admin = KafkaAdmin::connect(&bootstrap).await.unwrap();
    let (topic, group) = (unique_name("jobs"), unique_name("job-workers"));
    admin.create_topic(&topic, 2).await.unwrap();
    admin.commit(&group, &topic, &[(0, 0), (1, 0)]).await.unwrap();
    let watch = JobWatch::start(s.job_api()).await;
    s.create_sj(
        "kafka-jobs",
        json!({
            "pollingInterval": 30,
            "triggers": [{"type": "kafka", "metadata": {
                "bootstrapServers": bootstrap, "consumerGroup": group, "topic": topic,
                "lagThreshold": "1"}}]
        }),
        json!({}),
    )
    .await;
    s.wait_condition("kafka-jobs", "Ready", "True", Duration::from_secs(40))
        .await;
    // Let the first poll (spread over the interval after a start) pass, then stay idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(watch.snapshot(|w| w.ever.is_empty()), "a Job at lag 0");
    let sent = Instant::now();
    admin.produce_one(&topic, 0, "work").await.unwrap();
    watch
        .wait("a Job for the message", Duration::from_secs(10), |w| {
            !w.ever.is_empty()
        })
        .await;
    let took = sent.elapsed();
    eprintln!("first Job {took:?} after the message (pollingInterval 30 s)");
    assert!(
        took < Duration::from_secs(3),
        "woken after {took:?}, not by the watcher"
    );
    s.finish().await;
}

/// A changed `jobTargetRef`: rollout default replaces the running Jobs of the old spec, rollout
/// gradual leaves them to finish.
#[tokio::test]
async fn a_changed_job_template_replaces_running_jobs_unless_the_rollout_is_gradual() {
    let s = setup("sj-change", 2).await;
    s.create_sj("now", json!({"rollout": {"strategy": "default"}}), json!({}))
        .await;
    s.create_sj("later", json!({"rollout": {"strategy": "gradual"}}), json!({}))
        .await;
    let old_now: BTreeSet<String> = s
        .wait_unfinished("now", 2, Duration::from_secs(20))
        .await
        .into_iter()
        .collect();
    let old_later: BTreeSet<String> = s
        .wait_unfinished("later", 2, Duration::from_secs(20))
        .await
        .into_iter()
        .collect();
    // A new container image in both templates.
    for sj in ["now", "later"] {
        let patch = json!({"spec": {"jobTargetRef": {"template": {"spec": {
            "nodeSelector": {"ebb.test/no-such-node": "true"},
            "containers": [{"name": "worker", "image": "registry.invalid/worker:2"}]}}}}});
        s.sj_api()
            .patch(sj, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    // default: the old spec's running Jobs go, and the queue gets Jobs of the new spec.
    wait_for(
        "the old Jobs of `now` replaced",
        Duration::from_secs(20),
        || async {
            let names: BTreeSet<String> = s.unfinished("now").await.into_iter().collect();
            (names.len() == 2 && names.is_disjoint(&old_now)).then_some(())
        },
    )
    .await
    .unwrap();
    // gradual: the old Jobs run on, and the accurate strategy counts them (nothing new).
    tokio::time::sleep(Duration::from_secs(3 * POLL)).await;
    let names: BTreeSet<String> = s.unfinished("later").await.into_iter().collect();
    assert_eq!(names, old_later, "gradual rollout replaced running Jobs");
    s.finish().await;
}
