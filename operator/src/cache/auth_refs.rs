//! Who uses which authentication: the ScaledObjects and ScaledJobs that name each
//! TriggerAuthentication or ClusterTriggerAuthentication, and the Secrets each of those reads.
//!
//! Fed by the watches (ScaledObjects, ScaledJobs, TriggerAuthentications,
//! ClusterTriggerAuthentications) through `set`/`remove` and whole re-lists, it answers three
//! questions without scanning every object: whose credentials to re-resolve when an
//! authentication changes ([`AuthRefs::scaled_objects_using`]), which authentications a changed
//! Secret feeds ([`AuthRefs::auths_reading_secret`]), and what a TriggerAuthentication's status
//! lists ([`AuthRefs::users`], with the keys whose users changed kept for the status writer).
//! No Kubernetes I/O here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ebb_crds::{AuthenticationRefKind, ScaledJob, ScaledObject, Trigger, TriggerAuthenticationSpec};
use kube::runtime::watcher;
use tokio::sync::Notify;

/// A TriggerAuthentication (namespace, name) or a ClusterTriggerAuthentication (name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthKey {
    /// A namespaced TriggerAuthentication.
    Namespaced {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A ClusterTriggerAuthentication.
    Cluster {
        /// Its name.
        name: String,
    },
}

/// Which kind of object uses an authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserKind {
    /// A ScaledObject.
    ScaledObject,
    /// A ScaledJob.
    ScaledJob,
}

/// An object that may use authentications: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey {
    /// ScaledObject or ScaledJob.
    pub kind: UserKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The authentications a list of triggers names, in the object's namespace.
pub fn auths_of(namespace: &str, triggers: &[Trigger]) -> BTreeSet<AuthKey> {
    triggers
        .iter()
        .filter_map(|t| t.authentication_ref.as_ref())
        .map(|r| match r.kind {
            AuthenticationRefKind::TriggerAuthentication => AuthKey::Namespaced {
                namespace: namespace.to_string(),
                name: r.name.clone(),
            },
            AuthenticationRefKind::ClusterTriggerAuthentication => AuthKey::Cluster { name: r.name.clone() },
        })
        .collect()
}

/// A ScaledObject's key and the authentications it names (for [`AuthRefs::observe_users`]).
pub fn scaled_object_refs(so: &ScaledObject) -> Option<(UserKey, BTreeSet<AuthKey>)> {
    let namespace = so.metadata.namespace.clone()?;
    let auths = auths_of(&namespace, &so.spec.triggers);
    Some((
        UserKey {
            kind: UserKind::ScaledObject,
            namespace,
            name: so.metadata.name.clone()?,
        },
        auths,
    ))
}

/// A ScaledJob's key and the authentications it names (for [`AuthRefs::observe_users`]).
pub fn scaled_job_refs(sj: &ScaledJob) -> Option<(UserKey, BTreeSet<AuthKey>)> {
    let namespace = sj.metadata.namespace.clone()?;
    let auths = auths_of(&namespace, &sj.spec.triggers);
    Some((
        UserKey {
            kind: UserKind::ScaledJob,
            namespace,
            name: sj.metadata.name.clone()?,
        },
        auths,
    ))
}

/// `authenticationsTypes` as KEDA writes it: the names the triggers' authenticationRefs give, each
/// once, in trigger order, comma-separated (`None` when no trigger has one).
pub fn authentications_types(triggers: &[Trigger]) -> Option<String> {
    let mut names: Vec<&str> = Vec::new();
    for r in triggers.iter().filter_map(|t| t.authentication_ref.as_ref()) {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    (!names.is_empty()).then(|| names.join(","))
}

/// `triggersTypes` as KEDA writes it: each trigger type once, in trigger order, comma-separated.
pub fn triggers_types(triggers: &[Trigger]) -> Option<String> {
    let mut types: Vec<&str> = Vec::new();
    for t in triggers {
        if !types.contains(&t.type_.as_str()) {
            types.push(&t.type_);
        }
    }
    (!types.is_empty()).then(|| types.join(","))
}

/// The users of one authentication, as its status lists them: names, sorted (`namespace/name`
/// for a ClusterTriggerAuthentication, whose users live in any namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// ScaledObjects.
    pub scaled_objects: Vec<String>,
    /// ScaledJobs.
    pub scaled_jobs: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    refs: HashMap<UserKey, BTreeSet<AuthKey>>,
    users: BTreeMap<AuthKey, BTreeSet<UserKey>>,
    /// Users listed so far by a re-list in progress, per kind.
    relisting: HashMap<UserKind, HashMap<UserKey, BTreeSet<AuthKey>>>,
    /// Per authentication: a digest of its spec and the Secrets (namespace, name) it reads.
    auths: HashMap<AuthKey, (u64, BTreeSet<(String, String)>)>,
    by_secret: BTreeMap<(String, String), BTreeSet<AuthKey>>,
    /// Authentications listed so far by a re-list in progress, per kind (cluster or not).
    auths_relisting: HashMap<bool, BTreeSet<AuthKey>>,
    /// Authentications whose users or existence changed since the status writer last looked.
    dirty: BTreeSet<AuthKey>,
}

/// The index; cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct AuthRefs {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl AuthRefs {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `user` names exactly `auths` now.
    pub fn set_user(&self, user: UserKey, auths: BTreeSet<AuthKey>) {
        let dirty = self.lock().set_user(user, auths);
        if dirty {
            self.changed.notify_one();
        }
    }

    /// Records that `user` is gone.
    pub fn remove_user(&self, user: &UserKey) {
        let dirty = self.lock().set_user(user.clone(), BTreeSet::new());
        if dirty {
            self.changed.notify_one();
        }
    }

    /// Feeds one event of a watch of users of `kind`; `refs` reads an object's key and the
    /// authentications it names. A re-list replaces that kind's users whole when it completes.
    pub fn observe_users<K>(
        &self,
        kind: UserKind,
        event: &watcher::Event<K>,
        refs: impl Fn(&K) -> Option<(UserKey, BTreeSet<AuthKey>)>,
    ) {
        let mut inner = self.lock();
        let dirty = match event {
            watcher::Event::Init => {
                inner.relisting.insert(kind, HashMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                if let Some((user, auths)) = refs(o) {
                    inner.relisting.entry(kind).or_default().insert(user, auths);
                }
                false
            }
            watcher::Event::InitDone => {
                let listed = inner.relisting.remove(&kind).unwrap_or_default();
                let gone: Vec<UserKey> = inner
                    .refs
                    .keys()
                    .filter(|u| u.kind == kind && !listed.contains_key(*u))
                    .cloned()
                    .collect();
                let mut dirty = false;
                for user in gone {
                    dirty |= inner.set_user(user, BTreeSet::new());
                }
                for (user, auths) in listed {
                    dirty |= inner.set_user(user, auths);
                }
                dirty
            }
            watcher::Event::Apply(o) => match refs(o) {
                Some((user, auths)) => inner.set_user(user, auths),
                None => false,
            },
            watcher::Event::Delete(o) => match refs(o) {
                Some((user, _)) => inner.set_user(user, BTreeSet::new()),
                None => false,
            },
        };
        drop(inner);
        if dirty {
            self.changed.notify_one();
        }
    }

    /// Records an authentication's spec, its Secrets read in `secrets_namespace`. Returns whether
    /// the spec is new or differs from the one recorded (a status-only change is not a change).
    pub fn set_auth(&self, key: AuthKey, spec: &TriggerAuthenticationSpec, secrets_namespace: &str) -> bool {
        let digest = spec_digest(spec);
        let secrets: BTreeSet<(String, String)> = spec
            .secret_target_ref
            .iter()
            .map(|r| (secrets_namespace.to_string(), r.name.clone()))
            .collect();
        let mut inner = self.lock();
        if let Some(seen) = inner
            .auths_relisting
            .get_mut(&matches!(key, AuthKey::Cluster { .. }))
        {
            seen.insert(key.clone());
        }
        let changed = inner.auths.get(&key).is_none_or(|(d, _)| *d != digest);
        if changed {
            inner.forget_secrets(&key);
            for s in &secrets {
                inner.by_secret.entry(s.clone()).or_default().insert(key.clone());
            }
            if !inner.auths.contains_key(&key) {
                inner.dirty.insert(key.clone());
            }
            inner.auths.insert(key, (digest, secrets));
        }
        drop(inner);
        if changed {
            self.changed.notify_one();
        }
        changed
    }

    /// Records that an authentication is gone.
    pub fn remove_auth(&self, key: &AuthKey) {
        let mut inner = self.lock();
        inner.forget_secrets(key);
        inner.auths.remove(key);
    }

    /// Starts a re-list of ClusterTriggerAuthentications (`cluster`) or TriggerAuthentications.
    pub fn auths_relist_started(&self, cluster: bool) {
        self.lock().auths_relisting.insert(cluster, BTreeSet::new());
    }

    /// Ends a re-list: authentications of that kind not listed again are gone.
    pub fn auths_relist_done(&self, cluster: bool) {
        let mut inner = self.lock();
        let listed = inner.auths_relisting.remove(&cluster).unwrap_or_default();
        let gone: Vec<AuthKey> = inner
            .auths
            .keys()
            .filter(|k| matches!(k, AuthKey::Cluster { .. }) == cluster && !listed.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            inner.forget_secrets(&key);
            inner.auths.remove(&key);
        }
    }

    /// The ScaledObjects (namespace, name) that name `key`.
    pub fn scaled_objects_using(&self, key: &AuthKey) -> Vec<(String, String)> {
        self.using(key, UserKind::ScaledObject)
    }

    /// The ScaledJobs (namespace, name) that name `key`.
    pub fn scaled_jobs_using(&self, key: &AuthKey) -> Vec<(String, String)> {
        self.using(key, UserKind::ScaledJob)
    }

    fn using(&self, key: &AuthKey, kind: UserKind) -> Vec<(String, String)> {
        self.lock()
            .users
            .get(key)
            .into_iter()
            .flatten()
            .filter(|u| u.kind == kind)
            .map(|u| (u.namespace.clone(), u.name.clone()))
            .collect()
    }

    /// The authentications that read the Secret `namespace/name`.
    pub fn auths_reading_secret(&self, namespace: &str, name: &str) -> Vec<AuthKey> {
        self.lock()
            .by_secret
            .get(&(namespace.to_string(), name.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What `key`'s status lists.
    pub fn users(&self, key: &AuthKey) -> Users {
        let inner = self.lock();
        let mut out = Users::default();
        for u in inner.users.get(key).into_iter().flatten() {
            let name = match key {
                AuthKey::Namespaced { .. } => u.name.clone(),
                AuthKey::Cluster { .. } => format!("{}/{}", u.namespace, u.name),
            };
            match u.kind {
                UserKind::ScaledObject => out.scaled_objects.push(name),
                UserKind::ScaledJob => out.scaled_jobs.push(name),
            }
        }
        out
    }

    /// Whether the authentication is known (listed by its watch).
    pub fn auth_exists(&self, key: &AuthKey) -> bool {
        self.lock().auths.contains_key(key)
    }

    /// The authentications whose users changed (or that appeared) since the last call.
    pub fn take_dirty(&self) -> Vec<AuthKey> {
        std::mem::take(&mut self.lock().dirty).into_iter().collect()
    }

    /// Resolves when something may have become dirty since the last [`AuthRefs::take_dirty`].
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

impl Inner {
    /// Returns whether any authentication's users changed.
    fn set_user(&mut self, user: UserKey, auths: BTreeSet<AuthKey>) -> bool {
        let before = self.refs.remove(&user).unwrap_or_default();
        if before == auths {
            if !auths.is_empty() {
                self.refs.insert(user, auths);
            }
            return false;
        }
        for gone in before.difference(&auths) {
            if let Some(set) = self.users.get_mut(gone) {
                set.remove(&user);
                if set.is_empty() {
                    self.users.remove(gone);
                }
            }
            self.dirty.insert(gone.clone());
        }
        for added in auths.difference(&before) {
            self.users.entry(added.clone()).or_default().insert(user.clone());
            self.dirty.insert(added.clone());
        }
        if !auths.is_empty() {
            self.refs.insert(user, auths);
        }
        true
    }

    fn forget_secrets(&mut self, key: &AuthKey) {
        if let Some((_, secrets)) = self.auths.get(key) {
            for s in secrets.clone() {
                if let Some(set) = self.by_secret.get_mut(&s) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_secret.remove(&s);
                    }
                }
            }
        }
    }
}

fn spec_digest(spec: &TriggerAuthenticationSpec) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_crds::AuthSecretTargetRef;

    fn so(ns: &str, name: &str) -> UserKey {
        UserKey {
            kind: UserKind::ScaledObject,
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn ta(ns: &str, name: &str) -> AuthKey {
        AuthKey::Namespaced {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn spec(secrets: &[&str]) -> TriggerAuthenticationSpec {
        TriggerAuthenticationSpec {
            secret_target_ref: secrets
                .iter()
                .map(|s| AuthSecretTargetRef {
                    parameter: "password".into(),
                    name: (*s).into(),
                    key: "p".into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn users_follow_their_references() {
        let refs = AuthRefs::default();
        refs.set_user(so("a", "x"), [ta("a", "t1")].into());
        refs.set_user(
            so("a", "y"),
            [ta("a", "t1"), AuthKey::Cluster { name: "c".into() }].into(),
        );
        assert_eq!(refs.scaled_objects_using(&ta("a", "t1")).len(), 2);
        assert_eq!(
            refs.users(&AuthKey::Cluster { name: "c".into() }).scaled_objects,
            ["a/y"]
        );
        assert_eq!(
            refs.take_dirty(),
            [ta("a", "t1"), AuthKey::Cluster { name: "c".into() }]
        );
        // x moves to another authentication: both are dirty, t1 lists y only.
        refs.set_user(so("a", "x"), [ta("a", "t2")].into());
        assert_eq!(refs.users(&ta("a", "t1")).scaled_objects, ["y"]);
        assert_eq!(refs.take_dirty(), [ta("a", "t1"), ta("a", "t2")]);
        // The same references again: nothing changes.
        refs.set_user(so("a", "x"), [ta("a", "t2")].into());
        assert!(refs.take_dirty().is_empty());
        refs.remove_user(&so("a", "x"));
        assert!(refs.scaled_objects_using(&ta("a", "t2")).is_empty());
        assert_eq!(refs.take_dirty(), [ta("a", "t2")]);
    }

    #[test]
    fn a_relist_drops_users_it_does_not_list_again() {
        let refs = AuthRefs::default();
        let read = |o: &(UserKey, BTreeSet<AuthKey>)| Some(o.clone());
        refs.set_user(so("a", "x"), [ta("a", "t")].into());
        refs.set_user(so("a", "y"), [ta("a", "t")].into());
        refs.take_dirty();
        refs.observe_users(UserKind::ScaledObject, &watcher::Event::Init, read);
        refs.observe_users(
            UserKind::ScaledObject,
            &watcher::Event::InitApply((so("a", "y"), [ta("a", "t")].into())),
            read,
        );
        assert_eq!(
            refs.scaled_objects_using(&ta("a", "t")).len(),
            2,
            "old list served meanwhile"
        );
        refs.observe_users(UserKind::ScaledObject, &watcher::Event::InitDone, read);
        assert_eq!(refs.users(&ta("a", "t")).scaled_objects, ["y"]);
        assert_eq!(refs.take_dirty(), [ta("a", "t")]);
    }

    #[test]
    fn only_a_changed_spec_counts_and_secrets_are_found() {
        let refs = AuthRefs::default();
        assert!(refs.set_auth(ta("a", "t"), &spec(&["s1"]), "a"));
        assert!(
            !refs.set_auth(ta("a", "t"), &spec(&["s1"]), "a"),
            "same spec (a status write)"
        );
        assert_eq!(refs.auths_reading_secret("a", "s1"), [ta("a", "t")]);
        assert!(refs.set_auth(ta("a", "t"), &spec(&["s2"]), "a"));
        assert!(refs.auths_reading_secret("a", "s1").is_empty());
        assert_eq!(refs.auths_reading_secret("a", "s2"), [ta("a", "t")]);
        let cta = AuthKey::Cluster { name: "c".into() };
        refs.set_auth(cta.clone(), &spec(&["s2"]), "ebb-system");
        assert_eq!(
            refs.auths_reading_secret("ebb-system", "s2"),
            std::slice::from_ref(&cta)
        );
        refs.auths_relist_started(true);
        refs.auths_relist_done(true);
        assert!(!refs.auth_exists(&cta), "not listed again: gone");
        assert!(
            refs.auth_exists(&ta("a", "t")),
            "a re-list of cluster ones keeps namespaced ones"
        );
        refs.remove_auth(&ta("a", "t"));
        assert!(refs.auths_reading_secret("a", "s2").is_empty());
    }

    #[test]
    fn types_are_listed_once_in_trigger_order() {
        let t = |ty: &str, auth: Option<&str>| -> Trigger {
            serde_json::from_value(serde_json::json!({
                "type": ty,
                "metadata": {},
                "authenticationRef": auth.map(|a| serde_json::json!({"name": a})),
            }))
            .unwrap()
        };
        let triggers = [
            t("kafka", Some("k")),
            t("rabbitmq", None),
            t("kafka", Some("k")),
            t("nats-jetstream", Some("n")),
        ];
        assert_eq!(
            triggers_types(&triggers).as_deref(),
            Some("kafka,rabbitmq,nats-jetstream")
        );
        assert_eq!(authentications_types(&triggers).as_deref(), Some("k,n"));
        assert_eq!(authentications_types(&triggers[1..2]), None);
        assert_eq!(auths_of("ns", &triggers).len(), 2);
    }
}
