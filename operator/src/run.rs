//! `ebb operator`: wiring. Health and metrics are served by every replica; only the replica that
//! holds the Lease runs the reconciler and the scale loops (and so writes `/scale`, HPAs, status).
//! Losing the Lease stops everything and returns an error, so the process restarts cleanly as a
//! standby; SIGTERM stops everything and releases the Lease so a standby takes over at once.
//! Start-up calls to the API server are retried with backoff (an outage is waited out, serving
//! `/healthz`); only a 404 listing ScaledObjects means the CRDs are missing.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_crds::ScaledObject;
use ebb_scalers::{FactoryOptions, ScalerFactory};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use kube::{Client, Config};
use tokio::sync::watch;

use crate::adapter::certs::{self, AdapterTls, CertError, CertOptions};
use crate::adapter::delegate::DelegateOptions;
use crate::adapter::leader_forward::{ForwarderOptions, LeaderForwarder};
use crate::adapter::metric_cache::MetricCache;
use crate::adapter::provider::LeaderState;
use crate::adapter::readiness::{ReadinessSources, keep_ready};
use crate::cache::hpas::HpaCache;
use crate::cache::kinds::KindCache;
use crate::cache::target_index::TargetIndex;
use crate::context::Shared;
use crate::infra::backoff::WatchBackoff;
use crate::infra::client_limits::{ClientLimitsError, Clients};
use crate::infra::hpa_discovery::{DISCOVERY_BOUND, DiscoveryError, HpaRecheck, discover, hpa_api};
use crate::infra::leadership::{LeaderGuard, LeaseSettings, LeaseTiming, elect};
use crate::infra::owner::{deployment_owner, own_lease};
use crate::infra::startup::{self, crds_missing};
use crate::infra::telemetry::{OperatorMetrics, serve_health};
use crate::reconcile::{RequeueBackoff, error_policy, reconcile};
use crate::scale::targets::Targets;
use ebb_metrics_adapter::{AdapterError, AuthError};

/// Settings of `ebb operator`.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Watch only this namespace (default: all).
    pub namespace: Option<String>,
    /// Client-side queries per second to the API server (≤ 0: unlimited).
    pub qps: f32,
    /// Client-side burst.
    pub burst: u32,
    /// Address of /healthz, /readyz and /metrics.
    pub health_addr: SocketAddr,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace.
    pub lease_namespace: String,
    /// The operator's own namespace (of the certificate Secret and the owner Deployment).
    pub own_namespace: String,
    /// The Deployment (in `own_namespace`) that owns the certificate Secret and the Lease.
    pub owner_deployment: Option<String>,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Lease duration (validated; the renew deadline and schedule follow from it).
    pub lease_duration: LeaseTiming,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Timeout of one HTTP poll of a source.
    pub http_timeout: Duration,
    /// Generate ScaledObjects from scaling annotations on Deployments and StatefulSets.
    pub workload_annotations: bool,
    /// Watch Secrets (metadata) to re-read rotated credentials at once.
    pub watch_secrets: bool,
    /// Export the per-object series (per ScaledObject and trigger).
    pub per_object_metrics: bool,
    /// The metrics adapter (external.metrics.k8s.io), when served by this process.
    pub metrics_adapter: Option<AdapterOptions>,
}

/// Settings of the embedded metrics adapter.
#[derive(Debug, Clone)]
pub struct AdapterOptions {
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// The serving certificate: its mode, names and refresh interval.
    pub certs: CertOptions,
    /// The service-account token file naming the ServiceAccount this replica runs as (standbys
    /// forward with tokens of it; the leader accepts forwarded requests only from it).
    pub forward_token_file: std::path::PathBuf,
    /// The one namespace watched, when not all: other namespaces' metrics are not ebb's.
    pub scope: Option<String>,
    /// Where metric requests ebb does not own go (`--metrics-adapter-delegate`).
    pub delegate: Option<DelegateOptions>,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster config.
    #[error("kubernetes config: {0}")]
    Config(#[source] kube::config::InferConfigError),
    /// The client could not be built.
    #[error(transparent)]
    Client(#[from] ClientLimitsError),
    /// The CRDs are not installed (listing ScaledObjects answered 404).
    #[error("cannot list ScaledObjects ({0}); are the CRDs installed? `ebb crds | kubectl apply -f -`")]
    CrdMissing(#[source] kube::Error),
    /// The HPA API could not be discovered.
    #[error("HPA API discovery: {0}")]
    HpaDiscovery(#[source] DiscoveryError),
    /// The health port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The metrics adapter's delegated authentication could not be set up.
    #[error("metrics adapter: {0}")]
    AdapterAuth(#[source] AuthError),
    /// The metrics adapter could not start.
    #[error("metrics adapter: {0}")]
    Adapter(#[source] AdapterError),
    /// The adapter's certificates or the verification of the leader's could not be set up.
    #[error("metrics adapter: certificates")]
    Certs(#[source] CertError),
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    /// The Lease was lost: the process should restart as a standby.
    #[error("lost the leader Lease")]
    LostLeadership,
}

/// Runs the operator until `shutdown` resolves (Ok) or leadership is lost (Err).
pub async fn run(
    options: OperatorOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let config = Config::infer().await.map_err(RunError::Config)?;
    let metrics = Arc::new(OperatorMetrics::with_per_object(options.per_object_metrics));
    let clients = Clients::new(
        config,
        options.qps,
        options.burst,
        Some(metrics.kube_request_recorder()),
    )?;
    let client = clients.controller.clone();
    // Health first: while start-up waits out an API outage, /healthz answers (not ready).
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(options.health_addr)
        .await
        .map_err(|source| RunError::Listen {
            addr: options.health_addr,
            source,
        })?;
    let health_stop = wait_true(stop_rx.clone());
    let health = tokio::spawn(serve_health(listener, metrics.clone(), ready_rx, health_stop));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let so_api: Api<ScaledObject> = scoped(&client, options.namespace.as_deref());
    let one = ListParams::default().limit(1);
    let listed = startup::retry("list ScaledObjects", stop_rx.clone(), crds_missing, || {
        so_api.list(&one)
    })
    .await;
    match listed {
        Ok(Some(_)) => {}
        Ok(None) => {
            health.abort();
            return Ok(());
        }
        Err(e) => {
            health.abort();
            return Err(RunError::CrdMissing(e));
        }
    }
    let leader_state: LeaderState = LeaderState::default();
    let (leading_tx, leading_rx) = watch::channel(false);
    let owner = match &options.owner_deployment {
        Some(name) => deployment_owner(&client, &options.own_namespace, name).await,
        None => None,
    };
    // Owner references only reach objects of the owner's namespace.
    let lease_owner = owner
        .clone()
        .filter(|_| options.lease_namespace == options.own_namespace);
    let mut background = Vec::new();
    let (adapter, adapter_parts) = match &options.metrics_adapter {
        None => (None, None),
        Some(a) => {
            let tls = Arc::new(AdapterTls::new(&a.certs).map_err(RunError::Certs)?);
            if !tls.trust.verifies() {
                tracing::warn!(
                    "metrics adapter: self-signed certificate (development mode); standbys do not verify \
                     the leader's certificate. Use --metrics-adapter-cert-secret or --metrics-adapter-cert \
                     in production"
                );
            }
            background.push(tokio::spawn(certs::maintain(
                tls.clone(),
                a.certs.clone(),
                client.clone(),
                owner.clone(),
                leading_rx.clone(),
            )));
            let forwarder = Arc::new(
                LeaderForwarder::new(
                    client.clone(),
                    ForwarderOptions {
                        lease_namespace: options.lease_namespace.clone(),
                        lease_name: options.lease_name.clone(),
                        pod_namespace: options.own_namespace.clone(),
                        identity: options.identity.clone(),
                        adapter_port: a.listen.port(),
                        token_file: a.forward_token_file.clone(),
                    },
                    &tls.trust,
                )
                .map_err(RunError::Certs)?,
            );
            let served = crate::adapter::serve::start_adapter(
                &clients.auth,
                a,
                &tls,
                leader_state.clone(),
                forwarder.clone(),
                metrics.clone(),
                stop_rx.clone(),
            )
            .await?;
            (Some(served), Some((tls, forwarder)))
        }
    };

    let lease_settings = LeaseSettings {
        name: options.lease_name.clone(),
        namespace: options.lease_namespace.clone(),
        identity: options.identity.clone(),
        timing: options.lease_duration,
    };
    // The Lease has its own unthrottled client: renewals never queue behind controller calls.
    let elected = startup::retry(
        "create or read the leader Lease",
        stop_rx.clone(),
        |_| false,
        || elect(clients.lease.clone(), lease_settings.clone()),
    )
    .await
    .map_err(RunError::Lease)?;
    let Some((mut leader, guard, lease_task)) = elected else {
        health.abort();
        for task in background {
            task.abort();
        }
        return Ok(());
    };
    background.push(tokio::spawn(keep_ready(
        ReadinessSources {
            leading: leading_rx.clone(),
            leader_state: leader_state.clone(),
            adapter: adapter_parts,
        },
        ready_tx,
    )));
    tracing::info!(identity = %options.identity, lease = %options.lease_name, "waiting for leadership");

    let mut stop = stop_rx.clone();
    let result = loop {
        if *leader.borrow_and_update() {
            break Some(());
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { break None },
            _ = stop.wait_for(|s| *s) => break None,
        }
    };
    let outcome = match result {
        None => Ok(()),
        Some(()) => {
            tracing::info!(identity = %options.identity, "leading: starting the controller");
            metrics.set_leader(true);
            let _ = leading_tx.send(true);
            if let Some(owner) = &lease_owner
                && let Err(e) = own_lease(&client, &options.lease_namespace, &options.lease_name, owner).await
            {
                tracing::warn!(error = %e, "cannot set the Lease's owner reference");
            }
            let (lost_tx, lost_rx) = watch::channel(false);
            let mut leader_watch = leader.clone();
            let mut stop_watch = stop_rx.clone();
            let watchdog = tokio::spawn(async move {
                let lost = tokio::select! {
                    _ = leader_watch.wait_for(|l| !*l) => true,
                    _ = stop_watch.wait_for(|s| *s) => false,
                };
                let _ = lost_tx.send(true);
                lost
            });
            // A changed HPA API (a 404 from it, then another version discovered) restarts the
            // controller on the served version.
            let ended = loop {
                match run_controller(
                    client.clone(),
                    &options,
                    metrics.clone(),
                    leader_state.clone(),
                    guard.clone(),
                    lost_rx.clone(),
                )
                .await
                {
                    Ok(ControllerEnd::HpaApiChanged) if !*lost_rx.borrow() => continue,
                    Ok(_) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            metrics.set_leader(false);
            let _ = leading_tx.send(false);
            match ended {
                Err(e) => {
                    watchdog.abort();
                    Err(e)
                }
                Ok(()) => match watchdog.await {
                    Ok(true) => Err(RunError::LostLeadership),
                    _ => Ok(()),
                },
            }
        }
    };
    // Dropping the receiver makes the lease task release the Lease.
    drop(leader);
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        tracing::warn!(error = %e, "releasing the Lease failed");
    }
    health.abort();
    for task in background {
        task.abort();
    }
    if let Some(adapter) = adapter {
        let _ = tokio::time::timeout(Duration::from_secs(6), adapter).await;
    }
    outcome
}

/// An Api over `namespace`, or over every namespace.
pub(crate) fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

pub(crate) async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Why the controller stopped.
#[derive(Debug, PartialEq, Eq)]
enum ControllerEnd {
    /// `stop` turned true.
    Stopped,
    /// The cluster serves another HPA version than the one in use: run again.
    HpaApiChanged,
}

async fn run_controller(
    client: Client,
    options: &OperatorOptions,
    metrics: Arc<OperatorMetrics>,
    leader_state: LeaderState,
    leader: LeaderGuard,
    stop: watch::Receiver<bool>,
) -> Result<ControllerEnd, RunError> {
    // Retried with backoff while the API server fails; never a guess.
    let version = tokio::select! {
        found = discover(&client, DISCOVERY_BOUND) => found.map_err(RunError::HpaDiscovery)?,
        () = wait_true(stop.clone()) => return Ok(ControllerEnd::Stopped),
    };
    let hpa = hpa_api(version);
    let hpa_recheck = Arc::new(HpaRecheck::new(version));
    tracing::info!(api = hpa.version.api_version(), "HPA API");
    // Changes of workloads' scaling annotations, and of the ScaledObjects generated from them,
    // feed the generator (started below, once the shared state exists).
    let (changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
    let changes = options.workload_annotations.then_some(changes_tx);
    let (targets, target_watches) =
        Targets::start(client.clone(), options.namespace.as_deref(), changes.clone());
    let workload_index = targets.workloads().clone();
    let hpa_api: Api<DynamicObject> = match options.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &hpa.resource),
        None => Api::all_with(client.clone(), &hpa.resource),
    };
    // The HPA cache serves conflict checks and drift detection (every HPA, for foreign ones); the
    // controller's trigger stream of the HPAs it owns feeds it too (below).
    let so_targets = Arc::new(TargetIndex::default());
    let (hpas, hpa_watch) = HpaCache::start(hpa_api.clone()).await;
    let so_api: Api<ScaledObject> = scoped(&client, options.namespace.as_deref());
    // The controller's cache of ScaledObjects, without managedFields (nothing reads them; at
    // thousands of objects they are a good part of the memory). Controller::for_stream is
    // behind kube's `unstable-runtime` feature.
    let (so_reader, so_writer) = reflector::store();
    let so_listed = crate::cache::listed::Listed::default();
    let auth_refs = Arc::new(crate::cache::auth_refs::AuthRefs::default());
    let (reresolve, so_reresolve_rx, sj_reresolve_rx) = crate::reconcile::credentials::Requesters::channels();
    let so_stream = reflector::reflector(
        so_writer,
        watcher::watcher(so_api, watcher::Config::default().any_semantic())
            .backoff(WatchBackoff::default())
            .modify(|so: &mut ScaledObject| so.metadata.managed_fields = None)
            .inspect_ok({
                let index = so_targets.clone();
                move |event| index.observe(event)
            }),
    )
    // After the reflector: the generator reads the store this event is already in.
    .inspect_ok({
        let store = so_reader.clone();
        let listed = so_listed.clone();
        let auth_refs = auth_refs.clone();
        move |event| {
            listed.observe(event);
            auth_refs.observe_users(
                crate::cache::auth_refs::UserKind::ScaledObject,
                event,
                crate::cache::auth_refs::scaled_object_refs,
            );
            if let Some(tx) = &changes {
                for w in crate::generate::so_event_workloads(event, &workload_index, &store) {
                    let _ = tx.send(w);
                }
            }
        }
    })
    .applied_objects();
    let controller = Controller::for_stream(so_stream, so_reader);
    let reporter = Reporter {
        controller: "ebb-operator".into(),
        instance: Some(options.identity.clone()),
    };
    let shared = Arc::new(Shared {
        client: client.clone(),
        targets,
        scalers: ScalerFactory::new(FactoryOptions {
            http_timeout: options.http_timeout,
        }),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        hpa: hpa.clone(),
        hpas,
        so_store: controller.store(),
        so_listed,
        auth_refs,
        reresolve,
        so_targets,
        objects: Mutex::new(HashMap::new()),
        cache: Arc::new(MetricCache::default()),
        started: Instant::now(),
        cluster_auth_namespace: options.lease_namespace.clone(),
        leader,
        hpa_recheck: hpa_recheck.clone(),
        requeue: RequeueBackoff::default(),
        kinds: Arc::new(KindCache::default()),
    });
    *leader_state.write().unwrap_or_else(PoisonError::into_inner) = Some(shared.clone());
    let (jobs_ctx, mut job_tasks) =
        crate::reconcile::scaled_job::start(&client, options.namespace.as_deref(), &shared, sj_reresolve_rx);
    let credentials = crate::reconcile::credentials::CredentialWatches::of(&shared, options);
    job_tasks.extend(credentials.start());
    let slot_sweeper = crate::context::spawn_slot_sweeper(&shared, crate::context::SLOT_SWEEP_INTERVAL);
    let generator = match options.workload_annotations {
        true => crate::generate::worker::Generator::start(shared.clone(), changes_rx),
        false => Vec::new(),
    };
    // The owned-HPA watch that triggers reconciles first puts what it saw into the HPA cache, so
    // the drift check of the reconcile it triggers never reads an older HPA than the one that
    // triggered it (the cache's own watch above may deliver the same event later).
    let owned_hpas = watcher::watcher(
        hpa_api,
        watcher::Config::default().labels("app.kubernetes.io/managed-by=ebb"),
    )
    .backoff(WatchBackoff::default())
    .inspect({
        let hpas = shared.hpas.clone();
        move |event| {
            if let Ok(watcher::Event::Apply(hpa) | watcher::Event::InitApply(hpa)) = event {
                hpas.index().apply(hpa);
            }
        }
    })
    .touched_objects();
    let mut so_reresolve_rx = so_reresolve_rx;
    controller
        .owns_stream_with(owned_hpas, hpa.resource.clone())
        .reconcile_on(futures::stream::poll_fn(move |cx| so_reresolve_rx.poll_recv(cx)))
        .with_config(controller::Config::default().concurrency(options.concurrency))
        .graceful_shutdown_on({
            let recheck = hpa_recheck.clone();
            async move {
                tokio::select! {
                    () = wait_true(stop) => {}
                    () = recheck.changed() => {}
                }
            }
        })
        .run(reconcile, error_policy, shared.clone())
        .for_each(|_| futures::future::ready(()))
        .await;
    *leader_state.write().unwrap_or_else(PoisonError::into_inner) = None;
    // Stop every scale loop and watch: a standby (or the next leader) takes over from here.
    let slots: Vec<_> = shared
        .objects
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    for (_, slot) in slots {
        slot.stop_loop();
    }
    slot_sweeper.abort();
    jobs_ctx.stop_all();
    for task in job_tasks {
        task.abort();
    }
    for task in generator {
        task.abort();
    }
    for w in target_watches {
        w.abort();
    }
    hpa_watch.abort();
    Ok(if hpa_recheck.has_changed() {
        ControllerEnd::HpaApiChanged
    } else {
        ControllerEnd::Stopped
    })
}
