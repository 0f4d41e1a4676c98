//! Credentials that rotate. A trigger's credentials are resolved by its object's reconcile
//! (`compile::inputs`); the loop's fingerprint covers what was resolved, so a reconcile that
//! reads a changed Secret hands the loop new scalers (and, with them, clients keyed by the new
//! credentials; the old client goes with its last trigger). This module makes those reconciles
//! happen:
//! - **an authentication changed**: the watches of TriggerAuthentications and
//!   ClusterTriggerAuthentications feed [`AuthRefs`] and ask for a reconcile of every object that
//!   uses one whose spec changed;
//! - **the broker refused the credential**: a loop whose trigger failed with
//!   `ScalerError::Unauthorized` asks for a reconcile at once ([`Reresolve::refused`], at most once
//!   per [`REFUSED_GAP`] per object), which reads the Secret again;
//! - **a Secret changed** (optional, `--watch-secrets`, for clusters that grant list/watch on
//!   Secrets): a metadata-only watch asks for a reconcile of the users of every authentication
//!   that reads it;
//! - and every reconcile requeues itself within 5 minutes, which catches a change that causes no
//!   error with `get`-only access.
//!
//! The same watches keep each authentication's status (`scaledobjects`, `scaledjobs`: its users,
//! as KEDA lists them), written by the leader only, by server-side apply, when it changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_crds::{ClusterTriggerAuthentication, TriggerAuthentication};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cache::auth_refs::{AuthKey, AuthRefs};
use crate::context::ObjectKey;
use crate::infra::backoff::WatchBackoff;
use crate::infra::leadership::LeaderGuard;
use crate::status::writer::FIELD_MANAGER;

/// The shortest time between two re-resolves of one object asked for by refused credentials
/// (a broker that keeps refusing costs one reconcile per object per gap, not one per poll).
pub const REFUSED_GAP: Duration = Duration::from_secs(5);

/// Whether a re-resolve asked for at `now` goes ahead, given when the last one went.
pub fn due(last: Option<Instant>, now: Instant, gap: Duration) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= gap)
}

/// Asks the controller of `K` (ScaledObjects or ScaledJobs) to reconcile an object now.
pub struct Reresolve<K: Resource> {
    tx: mpsc::UnboundedSender<ObjectRef<K>>,
    last: Mutex<HashMap<ObjectKey, Instant>>,
}

impl<K> Reresolve<K>
where
    K: Resource,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    /// A requester and the stream the controller takes (`Controller::reconcile_on`).
    pub fn channel() -> (Reresolve<K>, mpsc::UnboundedReceiver<ObjectRef<K>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Reresolve {
                tx,
                last: Mutex::default(),
            },
            rx,
        )
    }

    /// Asks for a reconcile of `key` now.
    pub fn now(&self, key: &ObjectKey) {
        let _ = self.tx.send(ObjectRef::new(&key.1).within(&key.0));
    }

    /// The source refused `key`'s credentials: asks for a reconcile unless one was asked for less
    /// than [`REFUSED_GAP`] ago. Returns whether it asked.
    pub fn refused(&self, key: &ObjectKey) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if !due(last.get(key).copied(), now, REFUSED_GAP) {
            return false;
        }
        last.retain(|_, t| now.saturating_duration_since(*t) < REFUSED_GAP);
        last.insert(key.clone(), now);
        drop(last);
        tracing::info!(namespace = %key.0, name = %key.1, "credentials refused: resolving them again");
        self.now(key);
        true
    }
}

/// Where the credential watches send their requests.
pub struct Requesters {
    /// ScaledObjects.
    pub scaled_objects: Arc<Reresolve<ebb_crds::ScaledObject>>,
    /// ScaledJobs.
    pub scaled_jobs: Arc<Reresolve<ebb_crds::ScaledJob>>,
}

/// A receiver of re-resolve requests for a controller of `K` (`Controller::reconcile_on`).
pub type ReresolveRx<K> = mpsc::UnboundedReceiver<ObjectRef<K>>;

impl Requesters {
    /// The requesters, and the streams the ScaledObject and ScaledJob controllers take.
    pub fn channels() -> (
        Arc<Requesters>,
        ReresolveRx<ebb_crds::ScaledObject>,
        ReresolveRx<ebb_crds::ScaledJob>,
    ) {
        let (so, so_rx) = Reresolve::channel();
        let (sj, sj_rx) = Reresolve::channel();
        let requesters = Requesters {
            scaled_objects: Arc::new(so),
            scaled_jobs: Arc::new(sj),
        };
        (Arc::new(requesters), so_rx, sj_rx)
    }

    fn users_of(&self, refs: &AuthRefs, key: &AuthKey) {
        for so in refs.scaled_objects_using(key) {
            self.scaled_objects.now(&so);
        }
        for sj in refs.scaled_jobs_using(key) {
            self.scaled_jobs.now(&sj);
        }
    }
}

/// What the credential watches need.
pub struct CredentialWatches {
    /// The controller's client.
    pub client: Client,
    /// `--namespace`, when the operator watches one namespace.
    pub namespace: Option<String>,
    /// Where ClusterTriggerAuthentications read their Secrets.
    pub cluster_auth_namespace: String,
    /// The index the watches feed.
    pub refs: Arc<AuthRefs>,
    /// Where re-resolves go.
    pub requesters: Arc<Requesters>,
    /// `--watch-secrets`.
    pub watch_secrets: bool,
    /// Writes only while leading.
    pub leader: LeaderGuard,
}

impl CredentialWatches {
    /// The watches of the leader's controller: its client, caches and leader guard, and the
    /// options' scope and `--watch-secrets`.
    pub fn of(shared: &crate::context::Shared, options: &crate::run::OperatorOptions) -> Self {
        CredentialWatches {
            client: shared.client.clone(),
            namespace: options.namespace.clone(),
            cluster_auth_namespace: shared.cluster_auth_namespace.clone(),
            refs: shared.auth_refs.clone(),
            requesters: shared.reresolve.clone(),
            watch_secrets: options.watch_secrets,
            leader: shared.leader.clone(),
        }
    }

    /// Starts the watches and the status writer; the tasks run until aborted.
    pub fn start(self) -> Vec<JoinHandle<()>> {
        let this = Arc::new(self);
        let mut tasks = vec![
            tokio::spawn(this.clone().follow_trigger_authentications()),
            tokio::spawn(this.clone().follow_cluster_trigger_authentications()),
            tokio::spawn(this.clone().write_statuses()),
        ];
        if this.watch_secrets {
            tasks.push(tokio::spawn(this.clone().follow_secrets()));
        }
        tasks
    }

    async fn follow_trigger_authentications(self: Arc<Self>) {
        let api: Api<TriggerAuthentication> = crate::run::scoped(&self.client, self.namespace.as_deref());
        let stream =
            watcher::watcher(api, watcher::Config::default().any_semantic()).backoff(WatchBackoff::default());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let key = |ta: &TriggerAuthentication| AuthKey::Namespaced {
                namespace: ta.namespace().unwrap_or_default(),
                name: ta.name_any(),
            };
            match &event {
                watcher::Event::Init => self.refs.auths_relist_started(false),
                watcher::Event::InitDone => self.refs.auths_relist_done(false),
                watcher::Event::InitApply(ta) | watcher::Event::Apply(ta) => {
                    let ns = ta.namespace().unwrap_or_default();
                    self.applied(key(ta), &ta.spec, &ns);
                }
                watcher::Event::Delete(ta) => self.deleted(key(ta)),
            }
        }
    }

    async fn follow_cluster_trigger_authentications(self: Arc<Self>) {
        let api: Api<ClusterTriggerAuthentication> = Api::all(self.client.clone());
        let stream =
            watcher::watcher(api, watcher::Config::default().any_semantic()).backoff(WatchBackoff::default());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let key = |cta: &ClusterTriggerAuthentication| AuthKey::Cluster { name: cta.name_any() };
            match &event {
                watcher::Event::Init => self.refs.auths_relist_started(true),
                watcher::Event::InitDone => self.refs.auths_relist_done(true),
                watcher::Event::InitApply(cta) | watcher::Event::Apply(cta) => {
                    self.applied(key(cta), &cta.spec.auth, &self.cluster_auth_namespace.clone());
                }
                watcher::Event::Delete(cta) => self.deleted(key(cta)),
            }
        }
    }

    fn applied(&self, key: AuthKey, spec: &ebb_crds::TriggerAuthenticationSpec, secrets_ns: &str) {
        if self.refs.set_auth(key.clone(), spec, secrets_ns) {
            self.requesters.users_of(&self.refs, &key);
        }
    }

    fn deleted(&self, key: AuthKey) {
        self.refs.remove_auth(&key);
        // Its users become invalid (Ready=False naming it) at their reconcile.
        self.requesters.users_of(&self.refs, &key);
    }

    /// Secrets, metadata only: a change re-resolves the users of every authentication reading it.
    async fn follow_secrets(self: Arc<Self>) {
        let api: Api<PartialObjectMeta<Secret>> = match self.namespace.as_deref() {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let stream = watcher::watcher(api, watcher::Config::default().any_semantic())
            .backoff(WatchBackoff::default())
            .touched_objects();
        futures::pin_mut!(stream);
        let mut versions: HashMap<(String, String), String> = HashMap::new();
        while let Some(secret) = stream.next().await {
            let Ok(secret) = secret else { continue };
            let id = (secret.namespace().unwrap_or_default(), secret.name_any());
            let version = secret.resource_version().unwrap_or_default();
            let auths = self.refs.auths_reading_secret(&id.0, &id.1);
            if auths.is_empty() {
                versions.remove(&id);
                continue;
            }
            // A re-list delivers every Secret again: only a new version is a change.
            if versions.insert(id, version.clone()).is_some_and(|v| v == version) {
                continue;
            }
            for key in auths {
                self.requesters.users_of(&self.refs, &key);
            }
        }
    }

    /// Writes the status of every authentication whose users changed, while leading.
    async fn write_statuses(self: Arc<Self>) {
        let mut written: HashMap<AuthKey, (Vec<String>, Vec<String>)> = HashMap::new();
        let mut retry: Vec<AuthKey> = Vec::new();
        loop {
            tokio::select! {
                () = self.refs.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(if retry.is_empty() { 60 } else { 5 })) => {}
            }
            // Batch what arrives together (a start lists every object at once).
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut keys = self.refs.take_dirty();
            keys.append(&mut retry);
            for key in keys {
                if !self.refs.auth_exists(&key) {
                    written.remove(&key);
                    continue;
                }
                let users = self.refs.users(&key);
                let pair = (users.scaled_objects.clone(), users.scaled_jobs.clone());
                if written.get(&key) == Some(&pair) {
                    continue;
                }
                match self.write_status(&key, &pair).await {
                    Ok(()) => {
                        written.insert(key, pair);
                    }
                    Err(e) => {
                        tracing::debug!(?key, error = %e, "cannot write the authentication's status");
                        retry.push(key);
                    }
                }
            }
        }
    }

    async fn write_status(
        &self,
        key: &AuthKey,
        (sos, sjs): &(Vec<String>, Vec<String>),
    ) -> Result<(), StatusError> {
        self.leader.check().map_err(|_| StatusError::NotLeading)?;
        let mut status = serde_json::Map::new();
        if !sos.is_empty() {
            status.insert("scaledobjects".into(), sos.join(",").into());
        }
        if !sjs.is_empty() {
            status.insert("scaledjobs".into(), sjs.join(",").into());
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = match key {
            AuthKey::Namespaced { namespace, name } => {
                let api: Api<TriggerAuthentication> = Api::namespaced(self.client.clone(), namespace);
                let body = json!({"apiVersion": "ebb.dev/v1alpha1", "kind": "TriggerAuthentication", "status": status});
                api.patch_status(name, &params, &Patch::Apply(&body))
                    .await
                    .map(|_| ())
            }
            AuthKey::Cluster { name } => {
                let api: Api<ClusterTriggerAuthentication> = Api::all(self.client.clone());
                let body = json!({"apiVersion": "ebb.dev/v1alpha1", "kind": "ClusterTriggerAuthentication", "status": status});
                api.patch_status(name, &params, &Patch::Apply(&body))
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(()),
            // Gone meanwhile: nothing to write.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(StatusError::Kube(e)),
        }
    }
}

/// Why an authentication's status was not written (it is retried).
#[derive(Debug, thiserror::Error)]
enum StatusError {
    /// This replica does not lead.
    #[error("not leading")]
    NotLeading,
    /// The API server refused or failed.
    #[error("kubernetes: {0}")]
    Kube(#[source] kube::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_re_resolve_at_most_once_per_gap() {
        let t0 = Instant::now();
        assert!(due(None, t0, REFUSED_GAP));
        assert!(!due(Some(t0), t0 + Duration::from_secs(4), REFUSED_GAP));
        assert!(due(Some(t0), t0 + REFUSED_GAP, REFUSED_GAP));
    }

    #[tokio::test]
    async fn a_refusal_asks_once_then_waits() {
        let (r, mut rx) = Reresolve::<ebb_crds::ScaledObject>::channel();
        let key = ("ns".to_string(), "so".to_string());
        assert!(r.refused(&key));
        assert!(!r.refused(&key), "within the gap");
        assert!(r.refused(&("ns".to_string(), "other".to_string())), "per object");
        let first = rx.recv().await.unwrap();
        assert_eq!(
            (first.namespace.as_deref(), first.name.as_str()),
            (Some("ns"), "so")
        );
        assert_eq!(rx.recv().await.unwrap().name, "other");
        r.now(&key);
        assert_eq!(rx.recv().await.unwrap().name, "so", "a change always asks");
    }
}
