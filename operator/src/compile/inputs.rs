//! What a trigger's parameters are read from besides its metadata: the auth params of its
//! authenticationRef (Secrets, ConfigMaps, the target's env, pod identity) and the environment of
//! the target's container (for `<param>FromEnv`): a ScaledObject's scale target, looked up, or a
//! ScaledJob's Job template, carried by the object ([`EnvSource`]).
//!
//! One implementation serves both callers through [`ObjectSource`]: `ebb validate` looks objects up
//! in the files it was given, the operator in the cluster. Values that come from a Secret are
//! reported in [`ResolvedInputs::sensitive`] so every output redacts them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine;
use ebb_crds::{
    AuthenticationRefKind, PodIdentityProvider, ScaleTargetRef, Trigger, TriggerAuthenticationSpec,
};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};

/// The result of looking an object up.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<T> {
    /// Found.
    Found(T),
    /// Not there (in the cluster: does not exist; offline: not among the files given).
    Missing,
    /// Cannot be used: not allowed, or malformed (the message says why; never contains secret
    /// values). The object is invalid until this changes.
    Unavailable(String),
    /// The lookup failed for a reason that may pass: it says nothing about the object.
    Transient(TransientLookup),
}

impl<T> Lookup<T> {
    /// Turns what was found into something else; every other outcome stays as it is.
    pub fn and_then<U>(self, f: impl FnOnce(T) -> Lookup<U>) -> Lookup<U> {
        match self {
            Lookup::Found(v) => f(v),
            Lookup::Missing => Lookup::Missing,
            Lookup::Unavailable(m) => Lookup::Unavailable(m),
            Lookup::Transient(t) => Lookup::Transient(t),
        }
    }
}

/// A lookup that failed for a reason that may pass (throttled, a server error, a timeout, no
/// connection): nothing is judged by it; the reconcile is retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("reading {what}: {source}")]
pub struct TransientLookup {
    /// The object, e.g. `Secret ns/name`.
    pub what: String,
    /// The client error.
    #[source]
    pub source: Arc<kube::Error>,
}

impl PartialEq for TransientLookup {
    fn eq(&self, other: &Self) -> bool {
        self.what == other.what && self.source.to_string() == other.source.to_string()
    }
}

/// Where objects are looked up.
#[async_trait::async_trait]
pub trait ObjectSource: Send + Sync {
    /// A Secret's data, decoded.
    async fn secret(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>>;
    /// A ConfigMap's data.
    async fn config_map(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>>;
    /// A TriggerAuthentication's spec.
    async fn trigger_authentication(&self, namespace: &str, name: &str) -> Lookup<TriggerAuthenticationSpec>;
    /// A ClusterTriggerAuthentication's spec.
    async fn cluster_trigger_authentication(&self, name: &str) -> Lookup<TriggerAuthenticationSpec>;
    /// The pod template of a workload.
    async fn pod_template(
        &self,
        namespace: &str,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Lookup<PodTemplateSpec>;
    /// A ServiceAccount's annotations (for `identityOwner: workload`).
    async fn service_account_annotations(
        &self,
        namespace: &str,
        name: &str,
    ) -> Lookup<BTreeMap<String, String>>;
    /// Namespace whose Secrets and ConfigMaps ClusterTriggerAuthentications read.
    fn cluster_auth_namespace(&self) -> &str;
    /// Whether a missing object is an error (cluster) or only unknown (offline, not in the input).
    fn missing_is_error(&self) -> bool;
}

/// Where a trigger's `<param>FromEnv` and its authentication's `env` entries read container
/// environment from.
#[derive(Debug, Clone, Copy)]
pub enum EnvSource<'a> {
    /// A ScaledObject's scale target: its pod template is looked up through the [`ObjectSource`].
    Workload(&'a ScaleTargetRef),
    /// A pod template the object carries itself (a ScaledJob's `jobTargetRef.template`).
    Template {
        /// Names the template in messages, e.g. `ScaledJob ns/name jobTargetRef`.
        what: &'a str,
        /// The pod template.
        template: &'a PodTemplateSpec,
        /// The container to read (`envSourceContainerName`); the first when `None`.
        container: Option<&'a str>,
    },
}

impl EnvSource<'_> {
    /// The container named by the object; `None` means the first container.
    fn container_name(&self) -> Option<&str> {
        match self {
            EnvSource::Workload(target) => target.env_source_container_name.as_deref(),
            EnvSource::Template { container, .. } => *container,
        }
    }
}

/// A trigger's resolved inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedInputs {
    /// Auth params (`None`: an authenticationRef is set but could not be fully resolved).
    pub auth_params: Option<BTreeMap<String, String>>,
    /// The target container's env (`None`: not needed, or not available).
    pub env: Option<BTreeMap<String, String>>,
    /// Parameter names whose value came from a Secret.
    pub sensitive: BTreeSet<String>,
    /// Env var names whose value came from a Secret.
    pub sensitive_env: BTreeSet<String>,
    /// Objects not found where a missing object is not an error (offline): each names the object.
    pub missing: Vec<String>,
    /// Problems: a referenced object or key is missing (in the cluster) or malformed.
    pub errors: Vec<String>,
    /// Lookups that failed for a reason that may pass: the inputs are neither valid nor invalid.
    pub transient: Vec<TransientLookup>,
    /// The pod identity provider, when the authentication sets one.
    pub pod_identity: Option<PodIdentityProvider>,
}

impl ResolvedInputs {
    fn missing_object(&mut self, source: &dyn ObjectSource, what: String) {
        if source.missing_is_error() {
            self.errors.push(format!("{what} not found"));
        } else {
            self.missing.push(format!("{what} is not in the input"));
        }
    }
    /// What a lookup found, or `None` with the reason noted, naming `what`: missing (an error in
    /// the cluster, unknown offline), unusable, or a failure that may pass.
    pub fn found<T>(&mut self, source: &dyn ObjectSource, lookup: Lookup<T>, what: String) -> Option<T> {
        match lookup {
            Lookup::Found(v) => Some(v),
            Lookup::Missing => {
                self.missing_object(source, what);
                None
            }
            Lookup::Unavailable(m) => {
                self.errors.push(format!("{what}: {m}"));
                None
            }
            Lookup::Transient(t) => {
                self.transient.push(t);
                None
            }
        }
    }
    /// Replaces every value that came from a Secret with `(hidden)` in a text (an error message).
    pub fn scrub(&self, text: &str) -> String {
        let mut values: Vec<&String> = Vec::new();
        if let Some(auth) = &self.auth_params {
            values.extend(self.sensitive.iter().filter_map(|p| auth.get(p)));
        }
        if let Some(env) = &self.env {
            values.extend(self.sensitive_env.iter().filter_map(|v| env.get(v)));
        }
        // Longest first, so a value that contains another is hidden whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            out = out.replace(v.as_str(), "(hidden)");
        }
        out
    }
    /// Which params, given the env resolution, came from a Secret through `<param>FromEnv`.
    pub fn sensitive_params(&self, trigger: &Trigger) -> BTreeSet<String> {
        let mut out = self.sensitive.clone();
        for (key, var) in &trigger.metadata {
            if let Some(param) = key.strip_suffix("FromEnv")
                && self.sensitive_env.contains(var)
            {
                out.insert(param.to_string());
            }
        }
        out
    }
}

/// Resolves a trigger's auth params and, when needed, the target container's env.
pub async fn resolve(
    source: &dyn ObjectSource,
    namespace: &str,
    env_source: EnvSource<'_>,
    trigger: &Trigger,
) -> ResolvedInputs {
    let mut out = ResolvedInputs::default();
    let auth = match &trigger.authentication_ref {
        None => None,
        Some(r) => {
            let (found, what, secrets_ns) = match r.kind {
                AuthenticationRefKind::TriggerAuthentication => (
                    source.trigger_authentication(namespace, &r.name).await,
                    format!("TriggerAuthentication {namespace}/{}", r.name),
                    namespace.to_string(),
                ),
                AuthenticationRefKind::ClusterTriggerAuthentication => (
                    source.cluster_trigger_authentication(&r.name).await,
                    format!("ClusterTriggerAuthentication {}", r.name),
                    source.cluster_auth_namespace().to_string(),
                ),
            };
            match found {
                Lookup::Found(spec) => Some((spec, what, secrets_ns)),
                Lookup::Missing => {
                    out.missing_object(source, what);
                    None
                }
                Lookup::Unavailable(m) => {
                    out.errors.push(format!("{what}: {m}"));
                    None
                }
                Lookup::Transient(t) => {
                    out.transient.push(t);
                    None
                }
            }
        }
    };
    let needs_env = trigger.metadata.keys().any(|k| k.ends_with("FromEnv"))
        || auth.as_ref().is_some_and(|(spec, _, _)| !spec.env.is_empty());
    let env = if needs_env {
        workload_env(
            source,
            namespace,
            env_source,
            env_source.container_name(),
            &mut out,
        )
        .await
    } else {
        None
    };
    out.env = env.as_ref().map(|(vars, _)| vars.clone());
    if let Some((vars, secret_vars)) = &env {
        let _ = vars;
        out.sensitive_env = secret_vars.clone();
    }
    let Some((spec, what, secrets_ns)) = auth else {
        if trigger.authentication_ref.is_none() {
            out.auth_params = Some(BTreeMap::new());
        }
        return out;
    };
    out.pod_identity = spec.pod_identity.as_ref().map(|p| p.provider);
    let mut params = BTreeMap::new();
    let mut complete = true;
    for (i, r) in spec.secret_target_ref.iter().enumerate() {
        let origin = format!("{what} secretTargetRef[{i}]: Secret {secrets_ns}/{}", r.name);
        let lookup = source.secret(&secrets_ns, &r.name).await;
        match out.found(source, lookup, origin.clone()) {
            Some(data) => match data.get(&r.key) {
                Some(v) => {
                    params.insert(r.parameter.clone(), v.clone());
                    out.sensitive.insert(r.parameter.clone());
                }
                None => out.errors.push(format!("{origin} has no key {:?}", r.key)),
            },
            None => complete = false,
        }
    }
    for (i, r) in spec.config_map_target_ref.iter().enumerate() {
        let origin = format!(
            "{what} configMapTargetRef[{i}]: ConfigMap {secrets_ns}/{}",
            r.name
        );
        let lookup = source.config_map(&secrets_ns, &r.name).await;
        match out.found(source, lookup, origin.clone()) {
            Some(data) => match data.get(&r.key) {
                Some(v) => {
                    params.insert(r.parameter.clone(), v.clone());
                }
                None => out.errors.push(format!("{origin} has no key {:?}", r.key)),
            },
            None => complete = false,
        }
    }
    for (i, e) in spec.env.iter().enumerate() {
        let container_env = match &e.container_name {
            Some(c) if Some(c.as_str()) != env_source.container_name() => {
                let mut scratch = ResolvedInputs::default();
                let r = workload_env(source, namespace, env_source, Some(c), &mut scratch).await;
                out.missing.extend(scratch.missing);
                out.errors.extend(scratch.errors);
                out.transient.extend(scratch.transient);
                r
            }
            _ => env.clone(),
        };
        match container_env {
            Some((vars, secret_vars)) => match vars.get(&e.name) {
                Some(v) => {
                    params.insert(e.parameter.clone(), v.clone());
                    if secret_vars.contains(&e.name) {
                        out.sensitive.insert(e.parameter.clone());
                    }
                }
                None => out.errors.push(format!(
                    "{what} env[{i}]: the target container does not set environment variable {:?}",
                    e.name
                )),
            },
            None => complete = false,
        }
    }
    if let Some(identity) = &spec.pod_identity {
        complete &= crate::compile::pod_identity::apply_aws_identity(
            source,
            namespace,
            env_source,
            identity,
            &what,
            &mut params,
            &mut out,
        )
        .await;
    }
    if complete {
        out.auth_params = Some(params);
    }
    out
}

/// The env of the target's container (`container`, or the first), with the names of variables
/// whose value came from a Secret.
async fn workload_env(
    source: &dyn ObjectSource,
    namespace: &str,
    env_source: EnvSource<'_>,
    container: Option<&str>,
    out: &mut ResolvedInputs,
) -> Option<(BTreeMap<String, String>, BTreeSet<String>)> {
    // Offline, an env source that is not in the input leaves the env incomplete: then it is not
    // used at all, rather than reporting its variables as unset.
    let unknown_before = out.missing.len() + out.transient.len();
    let (what, template) = match env_source {
        EnvSource::Workload(target) => {
            let what = format!("{} {namespace}/{}", target.kind_or_default(), target.name);
            let lookup = source
                .pod_template(
                    namespace,
                    target.api_version_or_default(),
                    target.kind_or_default(),
                    &target.name,
                )
                .await;
            match lookup {
                Lookup::Found(t) => (what, Cow::Owned(t)),
                Lookup::Missing => {
                    out.missing_object(source, format!("scale target {what} (for its container env)"));
                    return None;
                }
                Lookup::Unavailable(m) => {
                    out.errors.push(format!("{what}: {m}"));
                    return None;
                }
                Lookup::Transient(t) => {
                    out.transient.push(t);
                    return None;
                }
            }
        }
        EnvSource::Template { what, template, .. } => (what.to_string(), Cow::Borrowed(template)),
    };
    let containers: &[Container] = template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let found = match container {
        Some(name) => containers.iter().find(|c| c.name == name),
        None => containers.first(),
    };
    let Some(container) = found else {
        out.errors.push(format!(
            "{what} has no container {}",
            container
                .map(|n| format!("{n:?}"))
                .unwrap_or_else(|| "at all".into())
        ));
        return None;
    };
    let mut vars = BTreeMap::new();
    let mut secret_vars = BTreeSet::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(cm) = &from.config_map_ref {
            match source.config_map(namespace, &cm.name).await {
                Lookup::Found(data) => {
                    vars.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)))
                }
                Lookup::Missing if cm.optional == Some(true) => {}
                Lookup::Missing => out.missing_object(
                    source,
                    format!("ConfigMap {namespace}/{} (envFrom of {what})", cm.name),
                ),
                Lookup::Unavailable(m) => out.errors.push(m),
                Lookup::Transient(t) => out.transient.push(t),
            }
        }
        if let Some(sr) = &from.secret_ref {
            match source.secret(namespace, &sr.name).await {
                Lookup::Found(data) => {
                    for (k, v) in data {
                        secret_vars.insert(format!("{prefix}{k}"));
                        vars.insert(format!("{prefix}{k}"), v);
                    }
                }
                Lookup::Missing if sr.optional == Some(true) => {}
                Lookup::Missing => out.missing_object(
                    source,
                    format!("Secret {namespace}/{} (envFrom of {what})", sr.name),
                ),
                Lookup::Unavailable(m) => out.errors.push(m),
                Lookup::Transient(t) => out.transient.push(t),
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(v) = &var.value {
            vars.insert(var.name.clone(), v.clone());
            secret_vars.remove(&var.name);
            continue;
        }
        let Some(from) = &var.value_from else { continue };
        if let Some(r) = &from.secret_key_ref {
            match source.secret(namespace, &r.name).await {
                Lookup::Found(data) => match data.get(&r.key) {
                    Some(v) => {
                        vars.insert(var.name.clone(), v.clone());
                        secret_vars.insert(var.name.clone());
                    }
                    None if r.optional == Some(true) => {}
                    None => out.errors.push(format!(
                        "env {}: Secret {namespace}/{} has no key {:?}",
                        var.name, r.name, r.key
                    )),
                },
                Lookup::Missing if r.optional == Some(true) => {}
                Lookup::Missing => out.missing_object(
                    source,
                    format!("Secret {namespace}/{} (env {} of {what})", r.name, var.name),
                ),
                Lookup::Unavailable(m) => out.errors.push(m),
                Lookup::Transient(t) => out.transient.push(t),
            }
        } else if let Some(r) = &from.config_map_key_ref {
            match source.config_map(namespace, &r.name).await {
                Lookup::Found(data) => match data.get(&r.key) {
                    Some(v) => {
                        vars.insert(var.name.clone(), v.clone());
                    }
                    None if r.optional == Some(true) => {}
                    None => out.errors.push(format!(
                        "env {}: ConfigMap {namespace}/{} has no key {:?}",
                        var.name, r.name, r.key
                    )),
                },
                Lookup::Missing if r.optional == Some(true) => {}
                Lookup::Missing => out.missing_object(
                    source,
                    format!("ConfigMap {namespace}/{} (env {} of {what})", r.name, var.name),
                ),
                Lookup::Unavailable(m) => out.errors.push(m),
                Lookup::Transient(t) => out.transient.push(t),
            }
        }
    }
    (out.missing.len() + out.transient.len() == unknown_before).then_some((vars, secret_vars))
}

/// Why a Secret's value cannot be used; names the key, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretDecodeError {
    /// The value is not text.
    #[error("key {0:?} is not UTF-8 text")]
    NotUtf8(String),
    /// The value is not base64 (a `data` entry in a manifest).
    #[error("key {0:?} is not valid base64")]
    NotBase64(String),
    /// The value is not a string at all (a `data` entry in a manifest).
    #[error("key {0:?} is not a base64 string")]
    NotAString(String),
    /// A `stringData` entry in a manifest is not a scalar.
    #[error("stringData key {0:?} is not text")]
    StringDataNotText(String),
}

/// Decodes a Secret's `data` (base64) and `stringData`; a key that is not valid base64 or UTF-8 is
/// an error naming the key (never the value).
pub fn decode_secret(
    data: Option<&BTreeMap<String, k8s_openapi::ByteString>>,
    string_data: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, SecretDecodeError> {
    let mut out = BTreeMap::new();
    for (k, v) in data.into_iter().flatten() {
        let text = String::from_utf8(v.0.clone()).map_err(|_| SecretDecodeError::NotUtf8(k.clone()))?;
        out.insert(k.clone(), text);
    }
    for (k, v) in string_data.into_iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// Decodes base64 text as a Secret's `data` value is written in YAML.
pub fn decode_base64(key: &str, text: &str) -> Result<String, SecretDecodeError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| SecretDecodeError::NotBase64(key.to_string()))?;
    String::from_utf8(bytes).map_err(|_| SecretDecodeError::NotUtf8(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A cluster where the TriggerAuthentication `ta` reads the Secrets `flaky` (whose GET fails
    /// for a reason that may pass) and `s`, and `gone` does not exist.
    struct Flaky;

    #[async_trait::async_trait]
    impl ObjectSource for Flaky {
        async fn secret(&self, namespace: &str, name: &str) -> Lookup<BTreeMap<String, String>> {
            match name {
                "flaky" => Lookup::Transient(TransientLookup {
                    what: format!("Secret {namespace}/{name}"),
                    source: Arc::new(kube::Error::Api(
                        kube::core::Status::failure("slow down", "TooManyRequests")
                            .with_code(429)
                            .boxed(),
                    )),
                }),
                "gone" => Lookup::Missing,
                _ => Lookup::Found(BTreeMap::from([("k".into(), "v".into())])),
            }
        }
        async fn config_map(&self, _: &str, _: &str) -> Lookup<BTreeMap<String, String>> {
            Lookup::Missing
        }
        async fn trigger_authentication(&self, _: &str, name: &str) -> Lookup<TriggerAuthenticationSpec> {
            let secret = name.strip_prefix("ta-").unwrap_or("s");
            Lookup::Found(
                serde_json::from_value(json!({"secretTargetRef": [
                    {"parameter": "password", "name": secret, "key": "k"}]}))
                .unwrap(),
            )
        }
        async fn cluster_trigger_authentication(&self, _: &str) -> Lookup<TriggerAuthenticationSpec> {
            Lookup::Missing
        }
        async fn pod_template(&self, _: &str, _: &str, _: &str, _: &str) -> Lookup<PodTemplateSpec> {
            Lookup::Missing
        }
        async fn service_account_annotations(&self, _: &str, _: &str) -> Lookup<BTreeMap<String, String>> {
            Lookup::Missing
        }
        fn cluster_auth_namespace(&self) -> &str {
            "ebb"
        }
        fn missing_is_error(&self) -> bool {
            true
        }
    }

    fn resolved(auth: &str) -> ResolvedInputs {
        let trigger: Trigger = serde_json::from_value(json!({
            "type": "t", "metadata": {}, "authenticationRef": {"name": auth}}))
        .unwrap();
        let target: ScaleTargetRef = serde_json::from_value(json!({"name": "w"})).unwrap();
        futures::executor::block_on(resolve(&Flaky, "ns", EnvSource::Workload(&target), &trigger))
    }

    #[test]
    fn a_lookup_that_may_pass_is_neither_an_error_nor_a_value() {
        let flaky = resolved("ta-flaky");
        assert_eq!(flaky.transient.len(), 1);
        assert!(flaky.transient[0].what.contains("Secret ns/flaky"));
        assert!(flaky.errors.is_empty(), "{:?}", flaky.errors);
        assert_eq!(flaky.auth_params, None, "incomplete auth params are not used");
        // A missing Secret is still an error, and a present one a value.
        let gone = resolved("ta-gone");
        assert!(gone.transient.is_empty());
        assert!(gone.errors[0].ends_with("not found"), "{:?}", gone.errors);
        let fine = resolved("ta-s");
        assert_eq!(fine.auth_params.unwrap()["password"], "v");
    }
}
