//! The per-ScaledJob task, a thin executor: each tick samples the triggers, reads the Job counts
//! from the watch-fed index, asks [`decide_jobs`] how many Jobs to create, creates them, trims
//! finished Jobs to the history limits ([`over_history_limit`]) and reports what it saw. I/O goes
//! through [`JobHost`], which is how the tests run a tick against a fake scaler and fake Jobs.
//! A tick waits for the next interval, or polls at once when a trigger's activity flips.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ebb_scalers::Scaler;
use futures::future::join_all;
use k8s_openapi::api::batch::v1::Job;
use tokio::sync::watch;
use tracing::Instrument;

use crate::cache::jobs::{Finished, JobEntry};
use crate::scale::failure_log::{FailureLine, FailureLog, REMINDER_EVERY};
use crate::scale::jobs::{
    JobCounts, JobDecision, JobPolicy, JobReading, JobReason, decide_jobs, over_history_limit,
};

/// How soon a loop looks again while the Job index has not listed yet.
const NOT_SYNCED_RETRY: Duration = Duration::from_millis(200);

/// `namespace/name` of a ScaledJob.
pub type JobKey = (String, String);

/// What a ScaledJob's loop needs.
pub struct JobLoopConfig {
    /// `namespace/name`.
    pub key: JobKey,
    /// Its triggers' scalers.
    pub triggers: Vec<Arc<dyn Scaler>>,
    /// The decision's policy.
    pub policy: JobPolicy,
    /// `scalingStrategy.pendingPodConditions`.
    pub pending_conditions: Vec<String>,
    /// `autoscaling.ebb.dev/paused`.
    pub paused: bool,
    /// The Job to create (from `job_for`).
    pub job: Job,
    /// `successfulJobsHistoryLimit`, `failedJobsHistoryLimit`.
    pub history: (i64, i64),
    /// `pollingInterval`.
    pub polling_interval: Duration,
}

/// What one tick saw and did, for status and Events.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTick {
    /// The decision.
    pub decision: JobDecision,
    /// The counts it was made from.
    pub counts: JobCounts,
    /// Jobs created.
    pub created: i64,
    /// Creates the API server refused, with the first error.
    pub create_failures: (i64, Option<String>),
    /// Finished Jobs deleted by the history limits.
    pub trimmed: usize,
    /// The trigger errors of this tick.
    pub trigger_errors: Vec<String>,
}

/// The I/O a ScaledJob loop does.
#[async_trait]
pub trait JobHost: Send + Sync + 'static {
    /// Running and pending Jobs (`None` until the Job and pod watches have listed).
    fn counts(&self, key: &JobKey, pending_conditions: &[String]) -> Option<JobCounts>;
    /// The ScaledJob's Jobs, finished or not.
    fn jobs(&self, key: &JobKey) -> Vec<JobEntry>;
    /// Creates one Job (checks leadership first).
    async fn create(&self, job: &Job) -> Result<(), String>;
    /// Deletes a finished Job (checks leadership first).
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), String>;
    /// Reports a tick (status, Events, metrics).
    async fn report(&self, key: &JobKey, tick: &JobTick);
    /// Whether the ScaledJob still exists (a loop ends itself when it is gone: a ScaledJob
    /// without a finalizer gets no last reconcile).
    fn exists(&self, key: &JobKey) -> bool;
    /// A source refused a trigger's credentials: read them again (rate-limited per ScaledJob).
    fn credentials_refused(&self, _key: &JobKey) {}
}

/// Samples every trigger concurrently, each bounded by the polling interval (at least 5 s).
async fn readings<H: JobHost>(host: &H, config: &JobLoopConfig) -> (Vec<JobReading>, Vec<String>) {
    let timeout = config.polling_interval.max(Duration::from_secs(5));
    let refused = std::sync::atomic::AtomicBool::new(false);
    let refused = &refused;
    let results = join_all(config.triggers.iter().enumerate().map(|(i, s)| {
        let span = tracing::info_span!("trigger", trigger_index = i, trigger_type = s.trigger_type());
        async move {
            match tokio::time::timeout(timeout, s.sample()).await {
                Ok(Ok(sample)) => Ok(JobReading::Value {
                    queue_length: sample.value,
                    target: s.metric_target().target_value,
                    active: sample.active,
                }),
                Ok(Err(e)) => {
                    if matches!(e, ebb_scalers::ScalerError::Unauthorized { .. }) {
                        refused.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(format!("{}: {e}", s.trigger_type()))
                }
                Err(_) => Err(format!("{}: no answer within {timeout:?}", s.trigger_type())),
            }
        }
        .instrument(span)
    }))
    .await;
    if refused.load(std::sync::atomic::Ordering::Relaxed) {
        host.credentials_refused(&config.key);
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(reading) => out.push(reading),
            Err(e) => {
                out.push(JobReading::Failed);
                errors.push(e);
            }
        }
    }
    (out, errors)
}

/// One tick: sample, count, decide, create, trim, report. Nothing happens until the Job index
/// has listed (counting from a partial list would over-create).
pub async fn job_tick<H: JobHost>(host: &H, config: &JobLoopConfig) -> Option<JobTick> {
    let span =
        tracing::info_span!("poll", kind = "ScaledJob", namespace = %config.key.0, object = %config.key.1);
    job_tick_in_span(host, config).instrument(span).await
}

async fn job_tick_in_span<H: JobHost>(host: &H, config: &JobLoopConfig) -> Option<JobTick> {
    let counts = host.counts(&config.key, &config.pending_conditions)?;
    let (readings, trigger_errors) = if config.paused {
        (Vec::new(), Vec::new())
    } else {
        readings(host, config).await
    };
    let decision = decide_jobs(&readings, counts, &config.policy, config.paused);
    let mut tick = JobTick {
        decision,
        counts,
        created: 0,
        create_failures: (0, None),
        trimmed: 0,
        trigger_errors,
    };
    for _ in 0..decision.create {
        match host.create(&config.job).await {
            Ok(()) => tick.created += 1,
            Err(e) => {
                tick.create_failures.0 += 1;
                tick.create_failures.1.get_or_insert(e);
                // The API server refuses the same manifest the same way: stop this tick.
                break;
            }
        }
    }
    let jobs = host.jobs(&config.key);
    let of = |kind: Finished| -> Vec<(String, Option<String>)> {
        jobs.iter()
            .filter(|j| j.finished.as_ref() == Some(&kind))
            .map(|j| (j.name.to_string(), j.finished_at.clone()))
            .collect()
    };
    let trim = over_history_limit(&of(Finished::Complete), config.history.0)
        .into_iter()
        .chain(over_history_limit(&of(Finished::Failed), config.history.1));
    for name in trim {
        if host.delete(&config.key.0, &name).await.is_ok() {
            tick.trimmed += 1;
        }
    }
    host.report(&config.key, &tick).await;
    Some(tick)
}

/// Runs a ScaledJob's loop until `stop` turns true: a tick every `pollingInterval`, and at once
/// when a trigger's activity flips (the activity watchers wake a ScaledJob at zero as they wake a
/// ScaledObject).
pub async fn run_job_loop<H: JobHost>(
    host: Arc<H>,
    config: Arc<JobLoopConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = FailureLog::default();
    let mut wakes: Vec<watch::Receiver<bool>> = config
        .triggers
        .iter()
        .filter_map(|s| s.activity_changes())
        .collect();
    loop {
        if !host.exists(&config.key) {
            return;
        }
        // Until the Job index has listed, a tick does nothing: look again shortly rather than
        // after a whole polling interval.
        let wait = match job_tick(&*host, &config).await {
            Some(tick) => {
                if !config.paused {
                    log_trigger_health(&config, &tick.trigger_errors, &mut failures);
                }
                config.polling_interval
            }
            None => NOT_SYNCED_RETRY.min(config.polling_interval),
        };
        let any_wake = async {
            if wakes.is_empty() {
                std::future::pending::<()>().await;
            }
            let changed = wakes.iter_mut().map(|w| Box::pin(w.changed()));
            let _ = futures::future::select_all(changed).await;
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = any_wake => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Logs the ScaledJob's trigger failures as [`FailureLog`] says (its triggers as a whole): the
/// start (warn, with the errors), a reminder every [`REMINDER_EVERY`], the recovery (info).
fn log_trigger_health(config: &JobLoopConfig, errors: &[String], log: &mut FailureLog) {
    let _in_poll =
        tracing::info_span!("poll", kind = "ScaledJob", namespace = %config.key.0, object = %config.key.1)
            .entered();
    let error = errors.join("; ");
    match log.observe(!errors.is_empty(), std::time::Instant::now(), REMINDER_EVERY) {
        FailureLine::Quiet => {}
        FailureLine::Failing => tracing::warn!(%error, "trigger failing"),
        FailureLine::StillFailing { for_, failures } => tracing::warn!(
            %error,
            failing_for_seconds = for_.as_secs(),
            failures,
            "trigger still failing"
        ),
        FailureLine::Recovered { after, failures } => tracing::info!(
            failed_for_seconds = after.as_secs(),
            failures,
            "trigger recovered"
        ),
    }
}

/// Whether a tick's reason is worth an Event of its own.
pub fn notable(tick: &JobTick) -> bool {
    tick.created > 0 || tick.create_failures.0 > 0 || matches!(tick.decision.reason, JobReason::CappedAtMax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_scalers::{MetricTarget, ScalerError, TriggerSample};
    use std::sync::Mutex;

    use crate::scale::jobs::{Calculation, Strategy};

    struct Queue {
        depth: Mutex<Result<f64, ()>>,
        activity: Option<watch::Sender<bool>>,
    }

    impl Queue {
        fn new(depth: Result<f64, ()>) -> Arc<Queue> {
            Arc::new(Queue {
                depth: Mutex::new(depth),
                activity: None,
            })
        }
    }

    #[async_trait]
    impl Scaler for Queue {
        fn trigger_type(&self) -> &'static str {
            "fake"
        }
        fn metric_target(&self) -> MetricTarget {
            MetricTarget { target_value: 1.0 }
        }
        fn activity_changes(&self) -> Option<watch::Receiver<bool>> {
            self.activity.as_ref().map(watch::Sender::subscribe)
        }
        async fn sample(&self) -> Result<TriggerSample, ScalerError> {
            match *self.depth.lock().unwrap() {
                Ok(v) => Ok(TriggerSample::with_activation(v, 0.0)),
                Err(()) => Err(ScalerError::unreachable("fake", "down")),
            }
        }
    }

    #[derive(Default)]
    struct Cluster {
        gone: Mutex<bool>,
        unsynced: Mutex<bool>,
        jobs: Mutex<Vec<JobEntry>>,
        created: Mutex<usize>,
        deleted: Mutex<Vec<String>>,
        refuse: Mutex<bool>,
    }

    #[async_trait]
    impl JobHost for Cluster {
        fn counts(&self, _: &JobKey, _: &[String]) -> Option<JobCounts> {
            if *self.unsynced.lock().unwrap() {
                return None;
            }
            let running = self
                .jobs
                .lock()
                .unwrap()
                .iter()
                .filter(|j| j.finished.is_none())
                .count() as i64;
            Some(JobCounts { running, pending: 0 })
        }
        fn jobs(&self, _: &JobKey) -> Vec<JobEntry> {
            self.jobs.lock().unwrap().clone()
        }
        async fn create(&self, _: &Job) -> Result<(), String> {
            if *self.refuse.lock().unwrap() {
                return Err("forbidden".into());
            }
            let mut n = self.created.lock().unwrap();
            *n += 1;
            self.jobs.lock().unwrap().push(JobEntry {
                name: format!("sj-{n}").into(),
                finished: None,
                finished_at: None,
                generation: Some(1),
            });
            Ok(())
        }
        async fn delete(&self, _: &str, name: &str) -> Result<(), String> {
            self.jobs.lock().unwrap().retain(|j| &*j.name != name);
            self.deleted.lock().unwrap().push(name.to_string());
            Ok(())
        }
        async fn report(&self, _: &JobKey, _: &JobTick) {}
        fn exists(&self, _: &JobKey) -> bool {
            !*self.gone.lock().unwrap()
        }
    }

    impl Cluster {
        /// Finishes the `n` oldest running Jobs, as Complete, at increasing times.
        fn finish(&self, n: usize) {
            let mut jobs = self.jobs.lock().unwrap();
            for (i, j) in jobs
                .iter_mut()
                .filter(|j| j.finished.is_none())
                .take(n)
                .enumerate()
            {
                j.finished = Some(Finished::Complete);
                j.finished_at = Some(format!("2026-01-01T00:00:{i:02}Z"));
            }
        }
    }

    fn config(queue: Arc<Queue>, max: i64, strategy: Strategy) -> JobLoopConfig {
        JobLoopConfig {
            key: ("ns".into(), "sj".into()),
            triggers: vec![queue],
            policy: JobPolicy {
                min: 0,
                max,
                strategy,
                calculation: Calculation::Max,
            },
            pending_conditions: Vec::new(),
            paused: false,
            job: Job::default(),
            history: (2, 2),
            polling_interval: Duration::from_secs(30),
        }
    }

    #[tokio::test]
    async fn a_queue_of_twelve_runs_five_at_a_time_until_it_is_empty() {
        let queue = Queue::new(Ok(12.0));
        let cluster = Cluster::default();
        let c = config(queue.clone(), 5, Strategy::Accurate);
        let t = job_tick(&cluster, &c).await.unwrap();
        assert_eq!(t.created, 5);
        // Each Job takes a message; 7 wait. Nothing more until Jobs finish.
        *queue.depth.lock().unwrap() = Ok(7.0);
        assert_eq!(job_tick(&cluster, &c).await.unwrap().created, 0);
        cluster.finish(3);
        assert_eq!(job_tick(&cluster, &c).await.unwrap().created, 3);
        *queue.depth.lock().unwrap() = Ok(4.0);
        cluster.finish(5);
        let t = job_tick(&cluster, &c).await.unwrap();
        assert_eq!(t.created, 4);
        assert!(t.trimmed > 0, "history trimmed to 2 successful Jobs");
        let finished = cluster
            .jobs
            .lock()
            .unwrap()
            .iter()
            .filter(|j| j.finished.is_some())
            .count();
        assert_eq!(finished, 2);
        *queue.depth.lock().unwrap() = Ok(0.0);
        cluster.finish(10);
        assert_eq!(
            job_tick(&cluster, &c).await.unwrap().created,
            0,
            "nothing runs at rest"
        );
        assert_eq!(*cluster.created.lock().unwrap(), 12);
    }

    #[tokio::test]
    async fn an_outage_creates_nothing_and_deletes_nothing_running() {
        let queue = Queue::new(Err(()));
        let cluster = Cluster::default();
        let t = job_tick(&cluster, &config(queue, 5, Strategy::Default))
            .await
            .unwrap();
        assert_eq!((t.created, t.trimmed), (0, 0));
        assert_eq!(t.trigger_errors.len(), 1);
        assert_eq!(t.decision.reason, JobReason::TriggerFailed);
    }

    #[tokio::test]
    async fn pause_holds_creation_and_a_refused_create_stops_the_tick() {
        let queue = Queue::new(Ok(9.0));
        let cluster = Cluster::default();
        let mut c = config(queue.clone(), 5, Strategy::Default);
        c.paused = true;
        assert_eq!(job_tick(&cluster, &c).await.unwrap().created, 0);
        c.paused = false;
        *cluster.refuse.lock().unwrap() = true;
        let t = job_tick(&cluster, &c).await.unwrap();
        assert_eq!((t.created, t.create_failures.0), (0, 1));
        assert_eq!(t.create_failures.1.as_deref(), Some("forbidden"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_activity_flip_wakes_a_scaled_job_at_zero_at_once() {
        let (tx, _) = watch::channel(false);
        let queue = Arc::new(Queue {
            depth: Mutex::new(Ok(0.0)),
            activity: Some(tx.clone()),
        });
        let cluster = Arc::new(Cluster::default());
        let (stop_tx, stop) = watch::channel(false);
        let c = Arc::new(config(queue.clone(), 5, Strategy::Default));
        let task = tokio::spawn(run_job_loop(cluster.clone(), c, stop));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*cluster.created.lock().unwrap(), 0, "nothing at rest");
        // A message arrives; the watcher flips the activity 1 s later; the 30 s interval is far.
        *queue.depth.lock().unwrap() = Ok(1.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send_replace(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            *cluster.created.lock().unwrap(),
            1,
            "created within the second, not at the next tick"
        );
        stop_tx.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_started_before_the_job_index_listed_does_not_wait_a_whole_interval() {
        let queue = Queue::new(Ok(2.0));
        let cluster = Arc::new(Cluster::default());
        *cluster.unsynced.lock().unwrap() = true;
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run_job_loop(
            cluster.clone(),
            Arc::new(config(queue, 5, Strategy::Default)),
            stop,
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        *cluster.unsynced.lock().unwrap() = false;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*cluster.created.lock().unwrap(), 2, "not after the 30 s interval");
        stop_tx.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_ends_when_its_scaled_job_is_gone() {
        let queue = Queue::new(Ok(2.0));
        let cluster = Arc::new(Cluster::default());
        let (_stop_tx, stop) = watch::channel(false);
        let mut c = config(queue, 5, Strategy::Default);
        c.polling_interval = Duration::from_secs(1);
        let task = tokio::spawn(run_job_loop(cluster.clone(), Arc::new(c), stop));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*cluster.created.lock().unwrap(), 2);
        *cluster.gone.lock().unwrap() = true;
        cluster.finish(2);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ended")
            .unwrap();
        assert_eq!(
            *cluster.created.lock().unwrap(),
            2,
            "no Job for a deleted ScaledJob"
        );
    }
}
