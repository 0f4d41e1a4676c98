//! One pass over a ScaledJob: compile its triggers (the same path as ScaledObjects and `ebb
//! validate`), build the Job it creates, and start, replace or stop its loop
//! ([`crate::scale::job_loop`]); keep the rollout finalizer. Invalid objects get Ready=False
//! naming the problem and no loop; nothing here creates or deletes a Job except, on deletion
//! with `rollout.strategy: gradual`, releasing the Jobs from their owner (so they finish), and,
//! under rollout default, deleting running Jobs of an older generation. [`start`] wires the
//! controller and the Job and pod watches (called by `run.rs` while leading).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ebb_crds::annotations::{PAUSED, flag};
use ebb_crds::conditions::READY;
use ebb_crds::{RolloutStrategy, ScaledJob};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use futures::{StreamExt as _, TryStreamExt as _};
use kube::Client;
use kube::runtime::{Controller, WatchStreamExt, watcher};

use crate::cache::jobs::JobIndex;
use crate::compile::cluster_objects::ClusterObjects;
use crate::compile::triggers::{Built, compile_scaled_job};
use crate::context::Shared;
use crate::infra::backoff::WatchBackoff;
use crate::infra::leadership::NotLeading;
use crate::reasons;
use crate::run::scoped;
use crate::scale::job_io::{ClusterJobs, condition};
use crate::scale::job_loop::{JobKey, JobLoopConfig, run_job_loop};
use crate::scale::job_template::{job_for, policy_of};

/// The finalizer that releases a gradual ScaledJob's Jobs before it goes.
pub const ROLLOUT_FINALIZER: &str = "ebb.dev/scaledjob-rollout";

/// Why a ScaledJob pass failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum JobReconcileError {
    /// The API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// This replica no longer leads.
    #[error("not leading")]
    NotLeading(#[from] NotLeading),
    /// A referenced object could not be read now (it may be readable later).
    #[error("{0}")]
    Transient(String),
}

/// A running loop and what it was started from.
struct LoopSlot {
    fingerprint: u64,
    stop: watch::Sender<bool>,
}

/// State of the ScaledJob controller.
pub struct JobsContext {
    /// The cluster behind the loops.
    pub host: Arc<ClusterJobs>,
    loops: Mutex<HashMap<JobKey, LoopSlot>>,
}

impl JobsContext {
    /// A controller context over `host`.
    pub fn new(host: Arc<ClusterJobs>) -> JobsContext {
        JobsContext {
            host,
            loops: Mutex::default(),
        }
    }

    /// Stops every loop (leadership ended).
    pub fn stop_all(&self) {
        for (_, slot) in self.loops.lock().unwrap_or_else(PoisonError::into_inner).drain() {
            let _ = slot.stop.send(true);
        }
    }

    fn stop(&self, key: &JobKey) {
        if let Some(slot) = self
            .loops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
        {
            let _ = slot.stop.send(true);
        }
        self.host.forget(key);
    }
}

/// What identifies a loop's configuration: the spec, labels and annotations (a change restarts it).
fn fingerprint(sj: &ScaledJob) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&sj.spec).unwrap_or_default().hash(&mut h);
    sj.metadata.labels.hash(&mut h);
    sj.metadata.annotations.hash(&mut h);
    sj.metadata.uid.hash(&mut h);
    h.finish()
}

/// Reconciles one ScaledJob.
pub async fn reconcile_job(sj: Arc<ScaledJob>, ctx: Arc<JobsContext>) -> Result<Action, JobReconcileError> {
    let span = tracing::info_span!(
        "reconcile",
        kind = "ScaledJob",
        namespace = %sj.namespace().unwrap_or_default(),
        object = %sj.name_any()
    );
    reconcile_job_in_span(sj, ctx).instrument(span).await
}

async fn reconcile_job_in_span(
    sj: Arc<ScaledJob>,
    ctx: Arc<JobsContext>,
) -> Result<Action, JobReconcileError> {
    let shared = &ctx.host.shared;
    let ns = sj.namespace().unwrap_or_default();
    let key: JobKey = (ns.clone(), sj.name_any());
    let api: Api<ScaledJob> = Api::namespaced(shared.client.clone(), &ns);
    let has_finalizer = sj.finalizers().iter().any(|f| f == ROLLOUT_FINALIZER);
    if sj.meta().deletion_timestamp.is_some() {
        ctx.stop(&key);
        if has_finalizer {
            release_jobs(&ctx, &key).await?;
            shared.leader.check()?;
            remove_finalizer(&api, &sj).await?;
        }
        return Ok(Action::await_change());
    }
    let gradual = sj.spec.effective_rollout_strategy() == RolloutStrategy::Gradual;
    if gradual && !has_finalizer {
        shared.leader.check()?;
        let mut finalizers = sj.finalizers().to_vec();
        finalizers.push(ROLLOUT_FINALIZER.to_string());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": sj.resource_version()}});
        api.patch(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(Action::await_change());
    }
    if !gradual && has_finalizer {
        shared.leader.check()?;
        remove_finalizer(&api, &sj).await?;
        return Ok(Action::await_change());
    }
    // Compiled on every pass (at least every 5 minutes): rotated credentials change the digest.
    let built = build_config(&sj, &ctx).await;
    let fp = match &built {
        Ok((_, digest)) => fingerprint(&sj) ^ digest.rotate_left(1),
        Err(_) => fingerprint(&sj),
    };
    let running = ctx
        .loops
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .is_some_and(|l| l.fingerprint == fp);
    if running {
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    match built {
        Ok((config, _)) => {
            // rollout default: the Jobs of an older spec go (gradual leaves them to finish).
            if !gradual {
                let generation = sj.metadata.generation.unwrap_or_default();
                delete_superseded(&ctx, &key, generation, sj.spec.rollout.as_ref()).await?;
            }
            let types = crate::scale::job_io::StatusTypes {
                triggers: crate::cache::auth_refs::triggers_types(&sj.spec.triggers),
                authentications: crate::cache::auth_refs::authentications_types(&sj.spec.triggers),
            };
            ctx.host
                .trigger_types
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), types);
            ctx.stop(&key);
            let (stop, stop_rx) = watch::channel(false);
            tokio::spawn(run_job_loop(ctx.host.clone(), Arc::new(config), stop_rx));
            ctx.loops.lock().unwrap_or_else(PoisonError::into_inner).insert(
                key,
                LoopSlot {
                    fingerprint: fp,
                    stop,
                },
            );
            Ok(Action::requeue(Duration::from_secs(300)))
        }
        Err(ConfigError::Transient(e)) => Err(JobReconcileError::Transient(e)),
        Err(ConfigError::Invalid(problem)) => {
            ctx.stop(&key);
            let ready = condition(READY, false, reasons::SCALED_JOB_CHECK_FAILED, &problem);
            ctx.host.write_status(&key, json!({"conditions": [ready]})).await;
            ctx.host
                .shared
                .event_for(
                    &sj.object_ref(&()),
                    kube::runtime::events::EventType::Warning,
                    reasons::SCALED_JOB_CHECK_FAILED,
                    problem,
                )
                .await;
            Ok(Action::await_change())
        }
    }
}

enum ConfigError {
    Invalid(String),
    Transient(String),
}

/// The loop's configuration: triggers compiled and built, the Job to create, the policy.
async fn build_config(sj: &ScaledJob, ctx: &JobsContext) -> Result<(JobLoopConfig, u64), ConfigError> {
    let shared = &ctx.host.shared;
    let ns = sj.namespace().unwrap_or_default();
    let problems: Vec<String> = ebb_crds::validation::validate_scaled_job_spec(&sj.spec)
        .into_iter()
        .map(|e| e.to_string())
        .collect();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems.join("; ")));
    }
    let source = ClusterObjects {
        client: shared.client.clone(),
        cluster_auth_namespace: shared.cluster_auth_namespace.clone(),
        kinds: shared.kinds.clone(),
    };
    let compiled = compile_scaled_job(&source, &ns, sj).await;
    if let Some(t) = compiled.iter().find_map(|c| c.transient()) {
        return Err(ConfigError::Transient(format!("{t:?}")));
    }
    let mut triggers = Vec::new();
    let mut problems = Vec::new();
    for c in &compiled {
        match c.build(&shared.scalers) {
            Built::Scaler(_, scaler) => triggers.push(scaler),
            Built::Problem(problem) => problems.push(problem),
            // compile_scaled_job refuses the triggers the HPA reads: never reached.
            Built::Resource(_) => problems.push(format!("{}: not a trigger a ScaledJob can use", c.field())),
            Built::Skipped => {}
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems.join("; ")));
    }
    let job = job_for(sj).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let digest = crate::compile::triggers::inputs_digest(&compiled);
    let config = JobLoopConfig {
        key: (ns, sj.name_any()),
        triggers,
        policy: policy_of(sj),
        pending_conditions: sj.spec.scaling_strategy.pending_pod_conditions.clone(),
        paused: flag(sj.metadata.annotations.as_ref(), PAUSED),
        job,
        history: (
            i64::from(sj.spec.successful_jobs_history_limit),
            i64::from(sj.spec.failed_jobs_history_limit),
        ),
        polling_interval: Duration::from_secs(u64::try_from(sj.spec.polling_interval.max(1)).unwrap_or(30)),
    };
    Ok((config, digest))
}

/// Deletes the unfinished Jobs created from an older generation of the ScaledJob.
async fn delete_superseded(
    ctx: &JobsContext,
    key: &JobKey,
    generation: i64,
    rollout: Option<&ebb_crds::Rollout>,
) -> Result<(), JobReconcileError> {
    let shared = &ctx.host.shared;
    let jobs: Vec<(String, bool, Option<i64>)> = ctx
        .host
        .index
        .jobs_of(&key.0, &key.1)
        .into_iter()
        .map(|j| (j.name.to_string(), j.finished.is_some(), j.generation))
        .collect();
    let params = match rollout.map(|r| r.propagation_policy) {
        Some(ebb_crds::PropagationPolicy::Foreground) => kube::api::DeleteParams::foreground(),
        _ => kube::api::DeleteParams::background(),
    };
    let api: Api<Job> = Api::namespaced(shared.client.clone(), &key.0);
    for name in crate::scale::jobs::superseded(&jobs, generation) {
        shared.leader.check()?;
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes the owner reference from every Job of the ScaledJob, so they outlive it.
async fn release_jobs(ctx: &JobsContext, key: &JobKey) -> Result<(), JobReconcileError> {
    let shared = &ctx.host.shared;
    let api: Api<Job> = Api::namespaced(shared.client.clone(), &key.0);
    for job in ctx.host.index.jobs_of(&key.0, &key.1) {
        shared.leader.check()?;
        let patch = json!({"metadata": {"ownerReferences": null}});
        match api
            .patch(&job.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn remove_finalizer(api: &Api<ScaledJob>, sj: &ScaledJob) -> Result<(), JobReconcileError> {
    let finalizers: Vec<&String> = sj
        .finalizers()
        .iter()
        .filter(|f| *f != ROLLOUT_FINALIZER)
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": sj.resource_version()}});
    match api
        .patch(&sj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Requeue after a failed pass.
pub fn job_error_policy(_sj: Arc<ScaledJob>, error: &JobReconcileError, _ctx: Arc<JobsContext>) -> Action {
    tracing::debug!(%error, "ScaledJob reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Starts the ScaledJob side: the watches of ebb's Jobs and their pods (selected by
/// `scaledjob.ebb.dev/name`, never every Job or Pod) feeding the Job index, and the ScaledJob
/// controller whose reconcile runs one loop per ScaledJob.
pub fn start(
    client: &Client,
    namespace: Option<&str>,
    shared: &Arc<Shared>,
    mut reresolve: tokio::sync::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<ScaledJob>>,
) -> (Arc<JobsContext>, Vec<tokio::task::JoinHandle<()>>) {
    use k8s_openapi::api::core::v1::Pod;
    let index = Arc::new(JobIndex::default());
    let selected = || watcher::Config::default().labels(ebb_crds::annotations::SCALED_JOB_NAME_LABEL);
    let jobs_api: Api<Job> = scoped(client, namespace);
    let pods_api: Api<Pod> = scoped(client, namespace);
    let sj_api: Api<ebb_crds::ScaledJob> = scoped(client, namespace);
    let (reader, writer) = kube::runtime::reflector::store();
    let auth_refs = shared.auth_refs.clone();
    let sj_stream = kube::runtime::reflector::reflector(
        writer,
        watcher::watcher(sj_api, watcher::Config::default().any_semantic()).backoff(WatchBackoff::default()),
    )
    .inspect_ok(move |event| {
        auth_refs.observe_users(
            crate::cache::auth_refs::UserKind::ScaledJob,
            event,
            crate::cache::auth_refs::scaled_job_refs,
        );
    })
    .applied_objects();
    let controller = Controller::for_stream(sj_stream, reader)
        .reconcile_on(futures::stream::poll_fn(move |cx| reresolve.poll_recv(cx)));
    let store = controller.store();
    let ctx = Arc::new(JobsContext::new(Arc::new(ClusterJobs::new(
        shared.clone(),
        index.clone(),
        store,
    ))));
    let tasks = vec![
        tokio::spawn({
            let index = index.clone();
            async move {
                let stream = watcher::watcher(jobs_api, selected()).backoff(WatchBackoff::default());
                index.jobs().follow(stream).await;
            }
        }),
        tokio::spawn({
            let index = index.clone();
            async move {
                let stream = watcher::watcher(pods_api, selected()).backoff(WatchBackoff::default());
                index.pods().follow(stream).await;
            }
        }),
        tokio::spawn({
            let ctx = ctx.clone();
            async move {
                controller
                    .run(reconcile_job, job_error_policy, ctx)
                    .for_each(|_| futures::future::ready(()))
                    .await;
            }
        }),
    ];
    (ctx, tasks)
}
