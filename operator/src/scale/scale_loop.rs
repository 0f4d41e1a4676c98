//! One scale loop per ScaledObject: a tokio task (not a thread) that ticks every `pollingInterval`.
//! A tick samples the triggers (not while paused), reads the target's replica count, asks
//! [`decide`] for the whole outcome and executes it: poll-cache values (the HPA fallback value
//! included), Events, the `/scale` write, the status. The loop decides nothing itself; its I/O goes
//! through the seams of [`crate::scale::io`], so a tick runs in unit tests against fakes.
//!
//! After an operator start the first ticks are spread over the polling interval so that thousands
//! of objects do not poll in the same instant; an object created later polls at once. A config
//! change (spec or annotations) polls at once too, and so does a push-capable trigger whose
//! activity channel flips (a cold activation does not wait for the next tick). A loop whose
//! object is gone ends itself.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_crds::MetricType;
use ebb_scalers::Scaler;
use ebb_scalers::Thresholds;
use ebb_scalers::metric_name::COMPOSITE_METRIC_NAME;
use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::adapter::metric_cache::{CachedMetric, MetricKey};
use crate::context::{ObjectKey, Shared};
use crate::infra::telemetry::per_object::{
    ObjectLabels, ObjectTick, ReplicaTick, TriggerLabels, TriggerTick,
};
use crate::scale::composite::Composite;
use crate::scale::decision::{
    LoopMemory, Observation, PauseState, PollResult, ScalingSpec, TickMemory, TriggerPoll, decide,
};
use crate::scale::failure_log::{FailureLine, FailureLog, REMINDER_EVERY};
use crate::scale::io::{LoopHost, TargetReplicas};
use crate::scale::outcome::{Decision, EventKind, EventNote, MetricSlot, Outcome, ReplicaWrite};
use crate::scale::targets::TargetRef;
use crate::status::{LoopView, TriggerHealth};

/// One trigger of a loop.
pub struct LoopTrigger {
    /// Its metric name.
    pub metric_name: String,
    /// Its scaler.
    pub scaler: Arc<dyn Scaler>,
    /// Target and activation threshold.
    pub thresholds: Thresholds,
    /// The HPA target type of its metric (the fallback value depends on it).
    pub metric_type: MetricType,
    /// `useCachedMetrics`: the adapter never queries the source for this trigger.
    pub use_cached_metrics: bool,
}

/// What a loop needs to know about its ScaledObject.
pub struct LoopConfig {
    /// `namespace/name`.
    pub key: ObjectKey,
    /// UID (for Events).
    pub uid: String,
    /// Creation time (for `initialCooldownPeriod`).
    pub created: Timestamp,
    /// Scaling spec.
    pub spec: ScalingSpec,
    /// Triggers.
    pub triggers: Vec<LoopTrigger>,
    /// Resolved scale target.
    pub target: TargetRef,
    /// Pause annotations.
    pub pause: PauseState,
    /// `force-activation`.
    pub force_activation: bool,
    /// `pollingInterval`.
    pub polling_interval: Duration,
    /// Identity of the config: a loop is only updated when this changes.
    pub fingerprint: u64,
    /// `advanced.scalingModifiers`, compiled for `triggers` in this order.
    pub composite: Option<Composite>,
}

/// Handle of a running loop.
pub struct LoopHandle {
    task: JoinHandle<()>,
    config: watch::Sender<Arc<LoopConfig>>,
}

impl LoopHandle {
    /// Starts a loop on the operator's shared state, its first tick delayed by [`first_delay`].
    pub fn spawn(shared: Arc<Shared>, config: LoopConfig, memory: LoopMemory) -> LoopHandle {
        let delay = first_delay(shared.started.elapsed(), &config);
        LoopHandle::start(shared, config, memory, delay)
    }

    /// Starts a loop on any host, its first tick after `delay`.
    pub fn start<H: LoopHost>(
        host: Arc<H>,
        config: LoopConfig,
        memory: LoopMemory,
        delay: Duration,
    ) -> LoopHandle {
        let (tx, rx) = watch::channel(Arc::new(config));
        let task = tokio::spawn(run(host, rx, TickMemory::from(memory), delay));
        LoopHandle { task, config: tx }
    }

    /// Hands a new config to the loop if it differs; the loop polls at once when it does.
    /// Returns whether it differed.
    pub fn update(&self, config: LoopConfig) -> bool {
        if self.config.borrow().fingerprint == config.fingerprint {
            return false;
        }
        self.config.send_replace(Arc::new(config));
        true
    }

    /// The loop's current config.
    pub fn config(&self) -> Arc<LoopConfig> {
        self.config.borrow().clone()
    }

    /// Whether the task ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the loop.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// The delay before a loop's first poll: spread by UID over one interval while the operator is
/// starting (many loops at once), none for objects that appear later.
pub fn first_delay(since_start: Duration, config: &LoopConfig) -> Duration {
    if since_start >= config.polling_interval {
        return Duration::ZERO;
    }
    let mut h = DefaultHasher::new();
    config.uid.hash(&mut h);
    let interval_ms = config.polling_interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % interval_ms)
}

async fn run<H: LoopHost>(
    host: Arc<H>,
    mut rx: watch::Receiver<Arc<LoopConfig>>,
    mut memory: TickMemory,
    delay: Duration,
) {
    // The object's series go when the loop ends, however it ends (returned or aborted).
    let series = {
        let key = &rx.borrow().key;
        ObjectLabels::new(&key.0, &key.1)
    };
    let _series = host.telemetry().objects().claim(series);
    if !delay.is_zero() {
        let mut pushes: Vec<watch::Receiver<bool>> = rx
            .borrow()
            .triggers
            .iter()
            .filter_map(|t| t.scaler.activity_changes())
            .collect();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            changed = rx.changed() => if changed.is_err() { return },
            // Spreading the first ticks must not delay a cold activation.
            _ = any_change(&mut pushes) => {}
        }
    }
    let mut next = Instant::now();
    loop {
        let config = rx.borrow_and_update().clone();
        // Objects without a finalizer vanish without a last reconcile: the loop ends itself.
        if !host.object_exists(&config.key) {
            host.forget(&config.key);
            return;
        }
        host.telemetry()
            .observe_lateness(Instant::now().saturating_duration_since(next));
        // Boxed: an idle loop then holds a pointer, not the whole tick's state (thousands of
        // idle loops would otherwise each keep several kilobytes).
        Box::pin(tick(&*host, &config, &mut memory)).await;
        next += config.polling_interval;
        let now = Instant::now();
        if next < now {
            next = now + config.polling_interval; // overran: skip the missed ticks
        }
        let mut pushes: Vec<watch::Receiver<bool>> = config
            .triggers
            .iter()
            .filter_map(|t| t.scaler.activity_changes())
            .collect();
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            changed = rx.changed() => {
                if changed.is_err() { return }
                next = Instant::now();
            }
            // A push-capable source saw activity change: poll now (cold activation without
            // waiting for the next tick).
            _ = any_change(&mut pushes) => next = Instant::now(),
        }
    }
}

/// Resolves when any of the channels changes; never when there are none (or all closed).
async fn any_change(channels: &mut [watch::Receiver<bool>]) {
    if channels.is_empty() {
        return std::future::pending().await;
    }
    let waits = channels
        .iter_mut()
        .map(|c| Box::pin(async move { c.changed().await }));
    match futures::future::select_all(waits).await {
        (Ok(()), _, _) => {}
        (Err(_), _, _) => std::future::pending().await,
    }
}

fn object_ref(config: &LoopConfig) -> ObjectReference {
    ObjectReference {
        api_version: Some(ebb_crds::API_VERSION.to_string()),
        kind: Some("ScaledObject".to_string()),
        name: Some(config.key.1.clone()),
        namespace: Some(config.key.0.clone()),
        uid: Some(config.uid.clone()),
        ..Default::default()
    }
}

/// The span around one tick: every line logged inside names the object.
fn poll_span(config: &LoopConfig) -> tracing::Span {
    tracing::info_span!("poll", kind = "ScaledObject", namespace = %config.key.0, object = %config.key.1)
}

/// The span around one trigger's part of a tick.
fn trigger_span(index: usize, trigger: &LoopTrigger) -> tracing::Span {
    tracing::info_span!(
        "trigger",
        trigger_index = index,
        trigger_type = trigger.scaler.trigger_type()
    )
}

/// One tick: samples, reads the replica count, decides and executes the outcome.
pub async fn tick<H: LoopHost>(host: &H, config: &LoopConfig, memory: &mut TickMemory) {
    tick_in_span(host, config, memory)
        .instrument(poll_span(config))
        .await
}

async fn tick_in_span<H: LoopHost>(host: &H, config: &LoopConfig, memory: &mut TickMemory) {
    // Sources are not consulted while paused; paused-replicas still needs the current count.
    let results = if config.pause.is_paused() {
        vec![PollResult::Skipped; config.triggers.len()]
    } else {
        sample(host, config).await
    };
    let sampled_at = Instant::now();
    log_trigger_health(config, &results, &mut memory.failure_logs, sampled_at);
    let current = match host.targets().replicas(&config.target).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(target_kind = %config.target.kind, target_name = %config.target.name, error = %e, "cannot read replicas");
            None
        }
    };
    let polls: Vec<TriggerPoll<'_>> = config
        .triggers
        .iter()
        .zip(results)
        .map(|(t, result)| TriggerPoll {
            metric_name: &t.metric_name,
            target: t.thresholds.target,
            metric_type: t.metric_type,
            pushes_activity: t.scaler.activity_changes().is_some(),
            result,
        })
        .collect();
    let target = format!("{} {}", config.target.kind, config.target.name);
    let obs = Observation {
        now: host.now(),
        created: config.created,
        spec: &config.spec,
        current,
        triggers: &polls,
        force_activation: config.force_activation,
        pause: config.pause,
        target: &target,
        composite: config.composite.as_ref(),
    };
    let outcome = decide(&obs, memory);
    host.telemetry()
        .objects()
        .record_tick(&series_tick(config, &polls, current, &outcome));
    execute(host, config, memory, outcome, sampled_at).await;
}

/// What a tick tells the per-object series: each trigger's value put into the poll cache and
/// its activity, the pause, and the replica decision.
fn series_tick<'a>(
    config: &'a LoopConfig,
    polls: &[TriggerPoll<'_>],
    current: Option<i32>,
    outcome: &Outcome,
) -> ObjectTick<'a> {
    let triggers = config
        .triggers
        .iter()
        .zip(polls)
        .enumerate()
        .map(|(i, (t, poll))| TriggerTick {
            trigger_type: t.scaler.trigger_type(),
            metric: &t.metric_name,
            target: t.thresholds.target,
            value: outcome
                .metrics
                .iter()
                .rev()
                .find(|w| w.metric == MetricSlot::Trigger(i))
                .map(|w| w.value),
            active: match poll.result {
                PollResult::Sampled { active, .. } => Some(active),
                PollResult::Failed(_) => Some(false),
                PollResult::Skipped => None,
            },
        })
        .collect();
    ObjectTick {
        object: object_labels(config),
        triggers,
        paused: config.pause.is_paused(),
        replicas: current.zip(outcome.replicas).map(|(current, d)| ReplicaTick {
            current,
            desired: d.write_replicas.unwrap_or(current),
            fallback: d.fallback,
        }),
    }
}

fn object_labels(config: &LoopConfig) -> ObjectLabels {
    ObjectLabels::new(&config.key.0, &config.key.1)
}

/// Samples every trigger at once, each within a hard timeout, and counts the polls.
async fn sample<H: LoopHost>(host: &H, config: &LoopConfig) -> Vec<PollResult> {
    let hard_timeout = config.polling_interval.max(Duration::from_secs(5));
    let refused = std::sync::atomic::AtomicBool::new(false);
    let refused = &refused;
    let object = object_labels(config);
    let object = &object;
    let results = join_all(config.triggers.iter().enumerate().map(|(i, t)| {
        async move {
            let start = Instant::now();
            let result = match tokio::time::timeout(hard_timeout, t.scaler.sample()).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err((e.kind(), e.to_string())),
                Err(_) => Err(("timeout", format!("no answer within {hard_timeout:?}"))),
            };
            let error_kind = result.as_ref().err().map(|(kind, _)| *kind);
            if error_kind == Some(UNAUTHORIZED) {
                refused.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let took = start.elapsed();
            let telemetry = host.telemetry();
            telemetry.observe_poll(t.scaler.trigger_type(), took, error_kind);
            let series = TriggerLabels::new(object, i, t.scaler.trigger_type(), &t.metric_name);
            telemetry
                .objects()
                .observe_poll(&series, took, error_kind.is_some());
            match result {
                Ok(s) => PollResult::Sampled {
                    value: s.value,
                    active: s.active,
                },
                Err((_, message)) => PollResult::Failed(message),
            }
        }
        .instrument(trigger_span(i, t))
    }))
    .await;
    if refused.load(std::sync::atomic::Ordering::Relaxed) {
        host.credentials_refused(&config.key);
    }
    results
}

/// Logs each trigger's failures as [`FailureLog`] says: the start (warn, with the error), a
/// reminder every [`REMINDER_EVERY`] while it lasts, the recovery (info). Paused polls skip.
fn log_trigger_health(config: &LoopConfig, results: &[PollResult], logs: &mut Vec<FailureLog>, now: Instant) {
    logs.resize(config.triggers.len(), FailureLog::default());
    for (i, ((trigger, result), log)) in config
        .triggers
        .iter()
        .zip(results)
        .zip(logs.iter_mut())
        .enumerate()
    {
        let error = match result {
            PollResult::Skipped => continue,
            PollResult::Sampled { .. } => None,
            PollResult::Failed(message) => Some(message.as_str()),
        };
        let _in_trigger = trigger_span(i, trigger).entered();
        match log.observe(error.is_some(), now, REMINDER_EVERY) {
            FailureLine::Quiet => {}
            FailureLine::Failing => {
                tracing::warn!(metric = %trigger.metric_name, error = error.unwrap_or_default(), "trigger failing")
            }
            FailureLine::StillFailing { for_, failures } => tracing::warn!(
                metric = %trigger.metric_name,
                error = error.unwrap_or_default(),
                failing_for_seconds = for_.as_secs(),
                failures,
                "trigger still failing"
            ),
            FailureLine::Recovered { after, failures } => tracing::info!(
                metric = %trigger.metric_name,
                failed_for_seconds = after.as_secs(),
                failures,
                "trigger recovered"
            ),
        }
    }
}

/// [`ebb_scalers::ScalerError::kind`] of a refused credential.
const UNAUTHORIZED: &str = "unauthorized";

/// Executes a tick's outcome, in the order [`Outcome`] names.
async fn execute<H: LoopHost>(
    host: &H,
    config: &LoopConfig,
    memory: &TickMemory,
    outcome: Outcome,
    sampled_at: Instant,
) {
    for w in &outcome.metrics {
        let metric = CachedMetric {
            value: w.value,
            at: sampled_at,
            failed: w.failed,
        };
        let name = match w.metric {
            MetricSlot::Trigger(i) => match config.triggers.get(i) {
                Some(t) => t.metric_name.as_str(),
                None => continue,
            },
            MetricSlot::Composite => COMPOSITE_METRIC_NAME,
        };
        host.put_metric(metric_key(config, name), metric);
    }
    let oref = object_ref(config);
    for event in &outcome.events {
        host.record_event(&oref, event).await;
    }
    let t = &outcome.transitions;
    if t.activity.is_some() || t.pause.is_some() {
        tracing::debug!(activity = ?t.activity, paused = ?t.pause, "transition");
    }
    if let Some(w) = &outcome.write {
        match host.targets().set_replicas(&config.target, w.replicas).await {
            Ok(()) => {
                host.telemetry().scale_action(w.action);
                host.telemetry()
                    .objects()
                    .record_written(&object_labels(config), w.replicas);
                tracing::info!(from = w.from, to = w.replicas, reason = w.event.reason, "scaled");
                host.record_event(&oref, &w.event).await;
            }
            Err(e) => {
                tracing::warn!(target_kind = %config.target.kind, target_name = %config.target.name, from = w.from, to = w.replicas, error = %e, "cannot write /scale");
                let target = format!("{} {}", config.target.kind, config.target.name);
                host.record_event(&oref, &scale_write_failed(&target, w, &e.to_string()))
                    .await;
            }
        }
    }
    if let Some(decision) = &outcome.replicas {
        host.report_status(&config.key, loop_view(config, decision, memory))
            .await;
    }
}

/// The Warning Event of a `/scale` write the API refused.
fn scale_write_failed(target: &str, write: &ReplicaWrite, error: &str) -> EventNote {
    EventNote {
        kind: EventKind::Warning,
        reason: crate::reasons::SCALE_WRITE_FAILED,
        note: format!(
            "cannot scale {target} from {} to {} replicas: {error}",
            write.from, write.replicas
        ),
    }
}

/// The loop's part of the status after a decision.
fn loop_view(config: &LoopConfig, decision: &Decision, memory: &TickMemory) -> LoopView {
    LoopView {
        activity: decision.activity,
        fallback: decision.fallback,
        last_active: memory.object.last_active,
        triggers: config
            .triggers
            .iter()
            .zip(&memory.triggers)
            .map(|(t, m)| TriggerHealth {
                metric_name: t.metric_name.clone(),
                failures: m.failures,
                error: m.error.clone(),
            })
            .collect(),
    }
}

fn metric_key(config: &LoopConfig, metric: &str) -> MetricKey {
    MetricKey {
        namespace: config.key.0.clone(),
        scaled_object: config.key.1.clone(),
        metric: metric.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;
    use ebb_crds::{Fallback, FallbackBehavior};
    use ebb_scalers::{MetricTarget, ScalerError, TriggerSample};

    use super::*;
    use crate::adapter::metric_cache::MetricCache;
    use crate::infra::telemetry::OperatorMetrics;
    use crate::scale::outcome::{Activity, EventKind, EventNote};
    use crate::scale::targets::TargetError;

    /// A scaler that answers what the test last told it to.
    struct FakeScaler {
        answer: Mutex<Result<TriggerSample, ScalerError>>,
        samples: AtomicUsize,
    }

    impl FakeScaler {
        fn new() -> Arc<Self> {
            Arc::new(FakeScaler {
                answer: Mutex::new(Ok(TriggerSample {
                    value: 0.0,
                    active: false,
                })),
                samples: AtomicUsize::new(0),
            })
        }
        fn answer(&self, value: f64, active: bool) {
            *self.answer.lock().unwrap() = Ok(TriggerSample { value, active });
        }
        fn fail(&self) {
            *self.answer.lock().unwrap() =
                Err(ScalerError::unreachable("http://source", "connection refused"));
        }
    }

    #[async_trait]
    impl Scaler for FakeScaler {
        fn trigger_type(&self) -> &'static str {
            "fake"
        }
        fn metric_target(&self) -> MetricTarget {
            MetricTarget { target_value: 10.0 }
        }
        async fn sample(&self) -> Result<TriggerSample, ScalerError> {
            self.samples.fetch_add(1, Ordering::SeqCst);
            self.answer.lock().unwrap().clone()
        }
    }

    /// A target whose replica count lives in memory; records every write.
    struct FakeTarget {
        replicas: Mutex<i32>,
        writes: Mutex<Vec<i32>>,
        unreadable: AtomicBool,
        /// `/scale` writes are refused (as by a webhook or missing RBAC).
        refuse_writes: AtomicBool,
    }

    #[async_trait]
    impl TargetReplicas for FakeTarget {
        async fn replicas(&self, target: &TargetRef) -> Result<i32, TargetError> {
            if self.unreadable.load(Ordering::SeqCst) {
                return Err(TargetError::NotFound {
                    kind: target.kind.clone(),
                    namespace: target.namespace.clone(),
                    name: target.name.clone(),
                });
            }
            Ok(*self.replicas.lock().unwrap())
        }
        async fn set_replicas(&self, target: &TargetRef, replicas: i32) -> Result<(), TargetError> {
            if self.refuse_writes.load(Ordering::SeqCst) {
                return Err(TargetError::NotFound {
                    kind: target.kind.clone(),
                    namespace: target.namespace.clone(),
                    name: target.name.clone(),
                });
            }
            *self.replicas.lock().unwrap() = replicas;
            self.writes.lock().unwrap().push(replicas);
            Ok(())
        }
    }

    struct FakeHost {
        target: FakeTarget,
        now: Mutex<Timestamp>,
        exists: AtomicBool,
        cache: MetricCache,
        events: Mutex<Vec<EventNote>>,
        statuses: Mutex<Vec<LoopView>>,
        telemetry: OperatorMetrics,
        refused: AtomicUsize,
    }

    #[async_trait]
    impl LoopHost for FakeHost {
        type Targets = FakeTarget;
        fn targets(&self) -> &FakeTarget {
            &self.target
        }
        fn now(&self) -> Timestamp {
            *self.now.lock().unwrap()
        }
        fn object_exists(&self, _key: &ObjectKey) -> bool {
            self.exists.load(Ordering::SeqCst)
        }
        fn forget(&self, key: &ObjectKey) {
            self.cache.remove_object(&key.0, &key.1);
        }
        fn put_metric(&self, key: MetricKey, metric: CachedMetric) {
            self.cache.put(key, metric);
        }
        async fn record_event(&self, _reference: &ObjectReference, event: &EventNote) {
            self.events.lock().unwrap().push(event.clone());
        }
        async fn report_status(&self, _key: &ObjectKey, view: LoopView) {
            self.statuses.lock().unwrap().push(view);
        }
        fn telemetry(&self) -> &OperatorMetrics {
            &self.telemetry
        }
        fn credentials_refused(&self, _key: &ObjectKey) {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn host(replicas: i32) -> FakeHost {
        FakeHost {
            target: FakeTarget {
                replicas: Mutex::new(replicas),
                writes: Mutex::default(),
                unreadable: AtomicBool::new(false),
                refuse_writes: AtomicBool::new(false),
            },
            now: Mutex::new(t(0)),
            exists: AtomicBool::new(true),
            cache: MetricCache::default(),
            events: Mutex::default(),
            statuses: Mutex::default(),
            telemetry: OperatorMetrics::new(),
            refused: AtomicUsize::new(0),
        }
    }

    impl FakeHost {
        fn at(&self, secs: i64) -> &Self {
            *self.now.lock().unwrap() = t(secs);
            self
        }
        fn writes(&self) -> Vec<i32> {
            self.target.writes.lock().unwrap().clone()
        }
        fn reasons(&self) -> Vec<&'static str> {
            self.events.lock().unwrap().iter().map(|e| e.reason).collect()
        }
        fn last_status(&self) -> LoopView {
            self.statuses.lock().unwrap().last().cloned().expect("a status")
        }
        fn cached(&self) -> Option<CachedMetric> {
            self.cache.get(&MetricKey {
                namespace: "ns".into(),
                scaled_object: "so".into(),
                metric: "s0-fake".into(),
            })
        }
    }

    /// min 0, max 10, cooldown 300 s, created at t(0), one trigger with target 10.
    fn config(scaler: Arc<FakeScaler>) -> LoopConfig {
        LoopConfig {
            key: ("ns".into(), "so".into()),
            uid: "uid-1".into(),
            created: t(0),
            spec: ScalingSpec {
                min: 0,
                max: 10,
                idle: None,
                cooldown: Duration::from_secs(300),
                initial_cooldown: Duration::ZERO,
                fallback: None,
            },
            triggers: vec![LoopTrigger {
                metric_name: "s0-fake".into(),
                scaler,
                thresholds: Thresholds {
                    target: 10.0,
                    activation: 0.0,
                },
                metric_type: MetricType::AverageValue,
                use_cached_metrics: false,
            }],
            target: TargetRef {
                namespace: "ns".into(),
                name: "web".into(),
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                plural: "deployments".into(),
            },
            pause: PauseState::default(),
            force_activation: false,
            polling_interval: Duration::from_secs(1),
            fingerprint: 1,
            composite: None,
        }
    }

    #[tokio::test]
    async fn an_active_sample_activates_from_zero() {
        let scaler = FakeScaler::new();
        scaler.answer(7.0, true);
        let cfg = config(scaler);
        let h = host(0);
        let mut memory = TickMemory::default();
        tick(h.at(5), &cfg, &mut memory).await;
        assert_eq!(h.writes(), vec![1]);
        assert_eq!(h.reasons(), vec!["Activated"]);
        assert_eq!(
            h.events.lock().unwrap()[0].note,
            "scaled Deployment web from 0 to 1 replicas"
        );
        let cached = h.cached().expect("the sample is served");
        assert_eq!((cached.value, cached.failed), (7.0, false));
        let status = h.last_status();
        assert_eq!(
            (status.activity, status.last_active),
            (Activity::Active, Some(t(5)))
        );
        // Active at 1: the HPA owns the count, nothing more to write.
        tick(h.at(6), &cfg, &mut memory).await;
        assert_eq!(h.writes(), vec![1]);
    }

    #[tokio::test]
    async fn a_refused_scale_write_is_a_warning_event_naming_the_target_and_the_error() {
        let scaler = FakeScaler::new();
        scaler.answer(7.0, true);
        let cfg = config(scaler);
        let h = host(0);
        h.target.refuse_writes.store(true, Ordering::SeqCst);
        let mut memory = TickMemory::default();
        tick(h.at(5), &cfg, &mut memory).await;
        assert_eq!(h.reasons(), vec!["ScaleWriteFailed"]);
        let event = h.events.lock().unwrap()[0].clone();
        assert_eq!(event.kind, EventKind::Warning);
        assert!(
            event
                .note
                .starts_with("cannot scale Deployment web from 0 to 1 replicas: ")
                && event.note.contains("not found"),
            "{}",
            event.note
        );
        // Tried again at the next poll; once it goes through, the usual Event.
        h.target.refuse_writes.store(false, Ordering::SeqCst);
        tick(h.at(6), &cfg, &mut memory).await;
        assert_eq!(h.reasons(), vec!["ScaleWriteFailed", "Activated"]);
        assert_eq!(h.writes(), vec![1]);
    }

    #[tokio::test]
    async fn refused_credentials_ask_for_them_again_and_change_nothing() {
        let scaler = FakeScaler::new();
        let cfg = config(scaler.clone());
        let h = host(2);
        let mut memory = TickMemory::default();
        scaler.fail();
        tick(h.at(5), &cfg, &mut memory).await;
        assert_eq!(
            h.refused.load(Ordering::SeqCst),
            0,
            "unreachable is not a refusal"
        );
        *scaler.answer.lock().unwrap() = Err(ScalerError::unauthorized("amqp://broker", "ACCESS_REFUSED"));
        tick(h.at(6), &cfg, &mut memory).await;
        assert_eq!(h.refused.load(Ordering::SeqCst), 1);
        assert_eq!(h.writes(), Vec::<i32>::new(), "an error never scales");
    }

    #[tokio::test]
    async fn scales_to_zero_only_after_the_cooldown() {
        let scaler = FakeScaler::new();
        scaler.answer(7.0, true);
        let cfg = config(scaler.clone());
        let h = host(3);
        let mut memory = TickMemory::default();
        tick(h.at(100), &cfg, &mut memory).await;
        scaler.answer(0.0, false);
        tick(h.at(200), &cfg, &mut memory).await;
        tick(h.at(399), &cfg, &mut memory).await;
        assert_eq!(h.writes(), Vec::<i32>::new(), "inside the cooldown");
        assert_eq!(h.last_status().activity, Activity::Inactive { in_cooldown: true });
        tick(h.at(400), &cfg, &mut memory).await;
        assert_eq!(h.writes(), vec![0]);
        assert_eq!(h.reasons(), vec!["ScaledToZero"]);
        assert_eq!(h.last_status().last_active, Some(t(100)));
    }

    #[tokio::test]
    async fn a_failing_trigger_with_fallback_writes_and_serves_the_fallback() {
        let scaler = FakeScaler::new();
        scaler.fail();
        let mut cfg = config(scaler.clone());
        cfg.spec.fallback = Some(Fallback {
            failure_threshold: 2,
            replicas: 3,
            behavior: FallbackBehavior::Static,
        });
        let h = host(1);
        let mut memory = TickMemory::default();
        tick(h.at(1), &cfg, &mut memory).await;
        assert_eq!(h.writes(), Vec::<i32>::new(), "below the threshold");
        assert_eq!(h.reasons(), vec!["TriggerFailing"]);
        assert_eq!(h.events.lock().unwrap()[0].kind, EventKind::Warning);
        assert!(h.cached().is_none(), "no value to serve yet");
        tick(h.at(2), &cfg, &mut memory).await;
        assert_eq!(h.writes(), vec![3]);
        assert_eq!(
            h.reasons(),
            vec!["TriggerFailing", "FallbackEngaged", "FallbackReplicas"]
        );
        // The HPA sees 3 replicas × the target of 10.
        let cached = h.cached().expect("the fallback value is served");
        assert_eq!((cached.value, cached.failed), (30.0, true));
        let status = h.last_status();
        assert!(status.fallback);
        assert_eq!(status.triggers[0].failures, 2);
        assert!(
            status.triggers[0]
                .error
                .as_deref()
                .unwrap()
                .contains("connection refused")
        );
        scaler.answer(4.0, true);
        tick(h.at(3), &cfg, &mut memory).await;
        assert_eq!(
            h.reasons()[3..],
            ["TriggerRecovered", "FallbackCleared"],
            "recovery"
        );
        assert_eq!(h.cached().map(|c| (c.value, c.failed)), Some((4.0, false)));
        assert!(!h.last_status().fallback);
    }

    #[tokio::test]
    async fn a_failing_trigger_without_fallback_never_scales_in() {
        let scaler = FakeScaler::new();
        scaler.fail();
        let cfg = config(scaler);
        let h = host(4);
        let mut memory = TickMemory::from(LoopMemory {
            last_active: Some(t(0)),
            consecutive_failures: 0,
        });
        for secs in [1_000, 10_000, 100_000] {
            tick(h.at(secs), &cfg, &mut memory).await;
        }
        assert_eq!(h.writes(), Vec::<i32>::new());
        assert_eq!(
            h.reasons(),
            vec!["TriggerFailing"],
            "one Event per failure, not per poll"
        );
        let status = h.last_status();
        assert_eq!((status.activity, status.fallback), (Activity::Unknown, false));
        assert_eq!(status.triggers[0].failures, 3);
    }

    #[tokio::test]
    async fn paused_holds_and_does_not_sample() {
        let scaler = FakeScaler::new();
        scaler.answer(7.0, true);
        let mut cfg = config(scaler.clone());
        cfg.pause.paused = true;
        let h = host(0);
        let mut memory = TickMemory::default();
        tick(h.at(1), &cfg, &mut memory).await;
        tick(h.at(2), &cfg, &mut memory).await;
        assert_eq!(
            h.writes(),
            Vec::<i32>::new(),
            "an active trigger does not unpause"
        );
        assert_eq!(scaler.samples.load(Ordering::SeqCst), 0);
        assert_eq!(h.last_status().activity, Activity::Paused);
        // paused-replicas holds its count.
        cfg.pause.paused_replicas = Some(2);
        tick(h.at(3), &cfg, &mut memory).await;
        assert_eq!(h.writes(), vec![2]);
        assert_eq!(h.reasons(), vec!["PausedReplicas"]);
        tick(h.at(4), &cfg, &mut memory).await;
        assert_eq!(h.writes(), vec![2]);
    }

    #[tokio::test]
    async fn an_unreadable_target_still_feeds_the_poll_cache_but_decides_nothing() {
        let scaler = FakeScaler::new();
        scaler.answer(7.0, true);
        let cfg = config(scaler);
        let h = host(0);
        h.target.unreadable.store(true, Ordering::SeqCst);
        let mut memory = TickMemory::default();
        tick(h.at(1), &cfg, &mut memory).await;
        assert_eq!(h.cached().map(|c| c.value), Some(7.0));
        assert!(h.writes().is_empty() && h.statuses.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_loop_ends_itself_when_its_object_is_gone() {
        let scaler = FakeScaler::new();
        scaler.answer(7.0, true);
        let h = Arc::new(host(0));
        let handle = LoopHandle::start(h.clone(), config(scaler), LoopMemory::default(), Duration::ZERO);
        // The first tick happens at once and activates.
        for _ in 0..200 {
            if !h.writes().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(h.writes(), vec![1]);
        h.exists.store(false, Ordering::SeqCst);
        handle.update(LoopConfig {
            fingerprint: 2,
            ..config(FakeScaler::new())
        });
        for _ in 0..200 {
            if handle.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(handle.is_finished());
        assert!(h.cached().is_none(), "forgotten");
    }

    fn scrape(h: &FakeHost) -> String {
        h.telemetry.encode()
    }

    fn scraped(h: &FakeHost, line: &str) -> bool {
        scrape(h).lines().any(|l| l == line)
    }

    const SERIES: &str = r#"namespace="ns",scaledObject="so""#;
    const TRIGGER0: &str =
        r#"namespace="ns",scaledObject="so",trigger_index="0",trigger_type="fake",metric="s0-fake""#;

    #[tokio::test]
    async fn a_tick_records_the_objects_series() {
        let scaler = FakeScaler::new();
        scaler.answer(7.0, true);
        let cfg = config(scaler.clone());
        let h = host(0);
        let mut memory = TickMemory::default();
        tick(h.at(5), &cfg, &mut memory).await;
        for line in [
            format!("ebb_trigger_value{{{TRIGGER0}}} 7.0"),
            format!("ebb_trigger_active{{{TRIGGER0}}} 1"),
            format!("ebb_trigger_target{{{TRIGGER0}}} 10.0"),
            format!("ebb_trigger_errors_total{{{TRIGGER0}}} 0"),
            format!("ebb_scaled_object_paused{{{SERIES}}} 0"),
            format!("ebb_scaled_object_fallback{{{SERIES}}} 0"),
            format!("ebb_scaled_object_replicas{{{SERIES}}} 0"),
            format!("ebb_scaled_object_desired_replicas{{{SERIES}}} 1"),
            format!("ebb_scaled_object_written_replicas{{{SERIES}}} 1"),
        ] {
            assert!(scraped(&h, &line), "missing {line} in\n{}", scrape(&h));
        }
        assert!(scrape(&h).contains(&format!("ebb_trigger_last_poll_duration_seconds{{{TRIGGER0}}} ")));
        scaler.fail();
        tick(h.at(6), &cfg, &mut memory).await;
        assert!(
            scraped(&h, &format!("ebb_trigger_errors_total{{{TRIGGER0}}} 1")),
            "{}",
            scrape(&h)
        );
        assert!(
            scraped(&h, &format!("ebb_trigger_active{{{TRIGGER0}}} 0")),
            "{}",
            scrape(&h)
        );
        // No fallback configured: the value stays the last one sampled.
        assert!(
            scraped(&h, &format!("ebb_trigger_value{{{TRIGGER0}}} 7.0")),
            "{}",
            scrape(&h)
        );
    }

    #[tokio::test]
    async fn the_fallback_value_and_flag_are_what_the_hpa_reads() {
        let scaler = FakeScaler::new();
        scaler.fail();
        let mut cfg = config(scaler);
        cfg.spec.fallback = Some(Fallback {
            failure_threshold: 1,
            replicas: 4,
            behavior: FallbackBehavior::Static,
        });
        let h = host(2);
        tick(h.at(5), &cfg, &mut TickMemory::default()).await;
        let served = h.cached().expect("a fallback value").value;
        assert!(
            scraped(&h, &format!("ebb_scaled_object_fallback{{{SERIES}}} 1")),
            "{}",
            scrape(&h)
        );
        assert!(
            scrape(&h).contains(&format!("ebb_trigger_value{{{TRIGGER0}}} {served:?}")),
            "{}",
            scrape(&h)
        );
        assert!(
            scraped(&h, &format!("ebb_scaled_object_desired_replicas{{{SERIES}}} 4")),
            "{}",
            scrape(&h)
        );
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..400 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{what}: not within 2 s");
    }

    #[tokio::test]
    async fn a_removed_trigger_and_a_stopped_loop_take_their_series_along() {
        let first = FakeScaler::new();
        first.answer(3.0, true);
        let second = FakeScaler::new();
        second.answer(5.0, true);
        let mut two = config(first.clone());
        two.triggers.push(LoopTrigger {
            metric_name: "s1-fake".into(),
            scaler: second,
            thresholds: Thresholds {
                target: 10.0,
                activation: 0.0,
            },
            metric_type: MetricType::AverageValue,
            use_cached_metrics: false,
        });
        let h = Arc::new(host(1));
        let handle = LoopHandle::start(h.clone(), two, LoopMemory::default(), Duration::ZERO);
        until("both triggers' series", || {
            scrape(&h).contains(r#"metric="s1-fake""#)
        })
        .await;
        assert!(scrape(&h).contains(TRIGGER0));

        // The second trigger is removed: its series go at the tick the change causes.
        handle.update(LoopConfig {
            fingerprint: 2,
            ..config(first.clone())
        });
        until("the removed trigger's series gone", || {
            !scrape(&h).contains("s1-fake")
        })
        .await;
        assert!(scrape(&h).contains(TRIGGER0), "{}", scrape(&h));

        // The loop stops (the object was deleted, or became invalid): every series goes.
        handle.stop();
        until("the object's series gone", || {
            !scrape(&h).contains(r#"scaledObject="so""#)
        })
        .await;
    }

    #[tokio::test]
    async fn a_loop_that_ends_itself_removes_its_series() {
        let scaler = FakeScaler::new();
        scaler.answer(7.0, true);
        let h = Arc::new(host(0));
        let handle = LoopHandle::start(h.clone(), config(scaler), LoopMemory::default(), Duration::ZERO);
        until("series", || scrape(&h).contains(TRIGGER0)).await;
        h.exists.store(false, Ordering::SeqCst);
        handle.update(LoopConfig {
            fingerprint: 2,
            ..config(FakeScaler::new())
        });
        until("loop end", || handle.is_finished()).await;
        assert!(!scrape(&h).contains(r#"scaledObject="so""#), "{}", scrape(&h));
    }

    /// A scaler whose activity channel the test flips (a push-capable trigger).
    struct PushScaler {
        inner: Arc<FakeScaler>,
        activity: tokio::sync::watch::Sender<bool>,
    }

    #[async_trait]
    impl Scaler for PushScaler {
        fn trigger_type(&self) -> &'static str {
            "fake"
        }
        fn metric_target(&self) -> MetricTarget {
            self.inner.metric_target()
        }
        async fn sample(&self) -> Result<TriggerSample, ScalerError> {
            self.inner.sample().await
        }
        fn activity_changes(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
            Some(self.activity.subscribe())
        }
    }

    /// After a start the first tick may be a whole interval away; a flip of a push-capable
    /// trigger's channel polls at once, before that first tick.
    #[tokio::test]
    async fn a_flip_before_the_spread_first_tick_polls_at_once() {
        let inner = FakeScaler::new();
        let (activity, _) = tokio::sync::watch::channel(false);
        let scaler = Arc::new(PushScaler {
            inner: inner.clone(),
            activity,
        });
        let mut cfg = config(FakeScaler::new());
        cfg.polling_interval = Duration::from_secs(30);
        cfg.triggers[0].scaler = scaler.clone();
        let h = Arc::new(host(0));
        let handle = LoopHandle::start(h.clone(), cfg, LoopMemory::default(), Duration::from_secs(29));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            inner.samples.load(Ordering::SeqCst),
            0,
            "the first tick is not due"
        );
        inner.answer(1.0, true);
        scaler.activity.send_replace(true);
        for _ in 0..200 {
            if !h.writes().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(h.writes(), vec![1], "activated before the first tick");
        handle.stop();
    }
}
