//! One scale loop per ScaledObject: a tokio task (not a thread) that polls the triggers every
//! `pollingInterval`, feeds the poll cache, asks [`crate::scale::decision::decide`] what to do, writes
//! `/scale` when told to, and reports status changes. After an operator start the first ticks are
//! spread over the polling interval so that thousands of objects do not poll in the same instant;
//! an object created later polls at once. A config change (spec or annotations) polls at once too.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_scalers::Scaler;
use ebb_scalers::Thresholds;
use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::adapter::metric_cache::{CachedMetric, MetricKey};
use crate::context::{ObjectKey, Shared};
use crate::scale::decision::{
    Activity, LoopMemory, Observation, PauseState, Reason, ScalingSpec, TriggerState, decide,
    fallback_replicas,
};
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
}

/// Handle of a running loop.
pub struct LoopHandle {
    task: JoinHandle<()>,
    config: watch::Sender<Arc<LoopConfig>>,
}

impl LoopHandle {
    /// Starts a loop.
    pub fn spawn(shared: Arc<Shared>, config: LoopConfig, memory: LoopMemory) -> LoopHandle {
        let delay = first_delay(shared.started.elapsed(), &config);
        let (tx, rx) = watch::channel(Arc::new(config));
        let task = tokio::spawn(run(shared, rx, memory, delay));
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

async fn run(
    shared: Arc<Shared>,
    mut rx: watch::Receiver<Arc<LoopConfig>>,
    mut memory: LoopMemory,
    delay: Duration,
) {
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
    let mut failures: Vec<u32> = Vec::new();
    let mut errors: Vec<Option<String>> = Vec::new();
    let mut was_active: Vec<bool> = Vec::new();
    let mut next = Instant::now();
    loop {
        let config = rx.borrow_and_update().clone();
        // Objects without a finalizer vanish without a last reconcile: the loop ends itself.
        if !shared.object_exists(&config.key) {
            shared.forget(&config.key);
            return;
        }
        failures.resize(config.triggers.len(), 0);
        errors.resize(config.triggers.len(), None);
        was_active.resize(config.triggers.len(), false);
        shared
            .metrics
            .observe_lateness(Instant::now().saturating_duration_since(next));
        // Boxed: an idle loop then holds a pointer, not the whole poll's state (thousands of
        // idle loops would otherwise each keep several kilobytes).
        Box::pin(poll_once(
            &shared,
            &config,
            &mut memory,
            &mut failures,
            &mut errors,
            &mut was_active,
        ))
        .await;
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

async fn poll_once(
    shared: &Shared,
    config: &LoopConfig,
    memory: &mut LoopMemory,
    failures: &mut [u32],
    errors: &mut [Option<String>],
    was_active: &mut [bool],
) {
    let oref = object_ref(config);
    // Sources are not consulted while paused; paused-replicas still needs the current count.
    let paused = config.pause.is_paused();
    let hard_timeout = config.polling_interval.max(Duration::from_secs(5));
    let results = if paused {
        Vec::new()
    } else {
        join_all(config.triggers.iter().map(|t| async move {
            let start = Instant::now();
            let r = match tokio::time::timeout(hard_timeout, t.scaler.sample()).await {
                Ok(r) => r.map_err(|e| (e.kind(), e.to_string())),
                Err(_) => Err(("timeout", format!("no answer within {hard_timeout:?}"))),
            };
            (r, start.elapsed())
        }))
        .await
    };
    let mut states = Vec::with_capacity(results.len());
    let now = Instant::now();
    for (i, ((result, took), trigger)) in results.into_iter().zip(&config.triggers).enumerate() {
        let was_failing = errors[i].is_some();
        match result {
            Ok(sample) => {
                shared
                    .metrics
                    .observe_poll(trigger.scaler.trigger_type(), took, None);
                states.push(if sample.active {
                    TriggerState::Active
                } else {
                    TriggerState::Inactive
                });
                failures[i] = 0;
                errors[i] = None;
                shared.cache.put(
                    metric_key(config, &trigger.metric_name),
                    CachedMetric {
                        value: sample.value,
                        at: now,
                        failed: false,
                    },
                );
                if was_failing {
                    let note = format!("trigger {} recovered", trigger.metric_name);
                    shared
                        .event_for(&oref, EventType::Normal, "TriggerRecovered", note)
                        .await;
                }
            }
            Err((kind, message)) => {
                shared
                    .metrics
                    .observe_poll(trigger.scaler.trigger_type(), took, Some(kind));
                states.push(TriggerState::Failed);
                failures[i] = failures[i].saturating_add(1);
                if !was_failing {
                    let note = format!("trigger {} failing: {message}", trigger.metric_name);
                    shared
                        .event_for(&oref, EventType::Warning, "TriggerFailing", note)
                        .await;
                }
                errors[i] = Some(message);
            }
        }
    }
    // A push-capable trigger that was active at the last poll and is inactive now stopped being
    // active when its channel flipped, just before this poll: the cooldown starts now, not at
    // the last periodic poll.
    for (i, trigger) in config.triggers.iter().enumerate() {
        let active = states.get(i) == Some(&TriggerState::Active);
        if was_active[i]
            && states.get(i) == Some(&TriggerState::Inactive)
            && trigger.scaler.activity_changes().is_some()
        {
            memory.last_active = Some(Timestamp::now());
        }
        was_active[i] = active;
    }
    let current = match shared.targets.replicas(&config.target).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(scaled_object = %config.key.1, namespace = %config.key.0, error = %e, "cannot read replicas");
            return;
        }
    };
    let was_fallback = memory.consecutive_failures > 0
        && config
            .spec
            .fallback
            .as_ref()
            .is_some_and(|f| memory.consecutive_failures >= f.failure_threshold.max(1) as u32);
    let obs = Observation {
        now: Timestamp::now(),
        created: config.created,
        spec: &config.spec,
        current,
        triggers: &states,
        force_activation: config.force_activation,
        pause: config.pause,
    };
    let decision = decide(&obs, memory);
    if decision.fallback {
        // The HPA reads the fallback too: failing triggers report fallback replicas × target.
        let replicas = config
            .spec
            .fallback
            .as_ref()
            .map(|f| fallback_replicas(f, current))
            .unwrap_or(current);
        for (i, trigger) in config.triggers.iter().enumerate() {
            if errors[i].is_some() {
                shared.cache.put(
                    metric_key(config, &trigger.metric_name),
                    CachedMetric {
                        value: replicas as f64 * trigger.thresholds.target,
                        at: now,
                        failed: true,
                    },
                );
            }
        }
    }
    if decision.fallback != was_fallback && !paused {
        let (type_, reason, note) = if decision.fallback {
            (
                EventType::Warning,
                "FallbackEngaged",
                "triggers keep failing: fallback replicas apply".to_string(),
            )
        } else {
            (
                EventType::Normal,
                "FallbackCleared",
                "triggers recovered: fallback cleared".to_string(),
            )
        };
        shared.event_for(&oref, type_, reason, note).await;
    }
    if let Some(n) = decision.write_replicas {
        match shared.targets.set_replicas(&config.target, n).await {
            Ok(()) => {
                let (action, reason) = match decision.reason {
                    Reason::Activate => ("activate", "Activated"),
                    Reason::Deactivate if n == 0 => ("deactivate", "ScaledToZero"),
                    Reason::Deactivate => ("deactivate", "ScaledToIdle"),
                    Reason::Fallback => ("fallback", "FallbackReplicas"),
                    Reason::PausedReplicas => ("pause", "PausedReplicas"),
                    _ => ("floor", "ScaledToMin"),
                };
                shared.metrics.scale_action(action);
                let note = format!(
                    "scaled {} {} from {current} to {n} replicas",
                    config.target.kind, config.target.name
                );
                tracing::info!(scaled_object = %config.key.1, namespace = %config.key.0, from = current, to = n, reason, "scaled");
                shared.event_for(&oref, EventType::Normal, reason, note).await;
            }
            Err(e) => {
                tracing::warn!(scaled_object = %config.key.1, namespace = %config.key.0, error = %e, "cannot write /scale");
            }
        }
    }
    let view = LoopView {
        activity: if paused {
            Activity::Paused
        } else {
            decision.activity
        },
        fallback: decision.fallback,
        last_active: memory.last_active,
        triggers: config
            .triggers
            .iter()
            .enumerate()
            .map(|(i, t)| TriggerHealth {
                metric_name: t.metric_name.clone(),
                failures: failures[i],
                error: errors[i].clone(),
            })
            .collect(),
    };
    let slot = shared.slot(&config.key);
    slot.status.lock().await.loop_view = Some(view);
    if let Err(e) = shared.write_status(&config.key).await {
        tracing::warn!(scaled_object = %config.key.1, namespace = %config.key.0, error = %e, "cannot write status");
    }
}

fn metric_key(config: &LoopConfig, metric: &str) -> MetricKey {
    MetricKey {
        namespace: config.key.0.clone(),
        scaled_object: config.key.1.clone(),
        metric: metric.to_string(),
    }
}
