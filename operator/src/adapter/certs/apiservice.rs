//! The leader keeps the APIService's `spec.caBundle` equal to the adapter's CA (operator-managed
//! certificates only), so the aggregator verifies the adapter with the CA the Secret holds: a GET
//! and, when it differs, a merge PATCH of that one APIService. An APIService that points at
//! another adapter's Service (another ebb, or KEDA, chained to or from this one) is left alone.

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::CertError;

/// The merge patch that makes `current` carry `ca_pem` as its CA bundle, or `None` when it
/// already does. `insecureSkipTLSVerify` is cleared too: the API server refuses it together with
/// a CA bundle.
pub fn ca_bundle_patch(current: &APIService, ca_pem: &str) -> Option<Value> {
    let spec = current.spec.as_ref();
    let bundle = spec.and_then(|s| s.ca_bundle.as_ref()).map(|b| b.0.as_slice());
    let insecure = spec.and_then(|s| s.insecure_skip_tls_verify).unwrap_or(false);
    if bundle == Some(ca_pem.as_bytes()) && !insecure {
        return None;
    }
    let encoded = k8s_openapi::ByteString(ca_pem.as_bytes().to_vec());
    let mut spec = json!({ "caBundle": encoded });
    if insecure {
        spec["insecureSkipTLSVerify"] = Value::Bool(false);
    }
    Some(json!({ "spec": spec }))
}

/// This adapter's Service, from the first `--metrics-adapter-dns-names` entry when it is
/// `<name>.<namespace>.svc` (the name the aggregator verifies the adapter for).
pub fn own_service(dns_names: &[String]) -> Option<(String, String)> {
    let first = dns_names.first()?;
    let mut parts = first.strip_suffix(".svc")?.split('.');
    let (name, namespace) = (parts.next()?, parts.next()?);
    parts
        .next()
        .is_none()
        .then(|| (namespace.to_owned(), name.to_owned()))
}

/// Whether `current` points at `own` (namespace, name); always true when `own` is unknown.
pub fn points_at(current: &APIService, own: Option<&(String, String)>) -> bool {
    let Some((namespace, name)) = own else {
        return true;
    };
    let service = current.spec.as_ref().and_then(|s| s.service.as_ref());
    service.is_some_and(|s| s.namespace.as_deref() == Some(namespace) && s.name.as_deref() == Some(name))
}

/// GETs the APIService `name` and PATCHes its CA bundle when it differs and it points at `own`
/// (namespace, name); whether it patched.
pub async fn sync_ca_bundle(
    client: &Client,
    name: &str,
    ca_pem: &str,
    own: Option<&(String, String)>,
) -> Result<bool, CertError> {
    let api: Api<APIService> = Api::all(client.clone());
    let err = |action: &'static str| {
        move |source| CertError::Kube {
            action,
            namespace: String::new(),
            name: name.to_owned(),
            source: Box::new(source),
        }
    };
    let current = api.get(name).await.map_err(err("get APIService"))?;
    if !points_at(&current, own) {
        tracing::debug!(apiservice = %name, "the APIService points at another Service; its caBundle is left alone");
        return Ok(false);
    }
    let Some(patch) = ca_bundle_patch(&current, ca_pem) else {
        return Ok(false);
    };
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(err("patch APIService"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(spec: Value) -> APIService {
        serde_json::from_value(json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
            "spec": spec
        }))
        .unwrap()
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn only_an_apiservice_pointing_at_this_adapter_is_kept_current() {
        let own = own_service(&["ebb-b-metrics.team-b.svc".to_owned(), "localhost".to_owned()]);
        assert_eq!(own, Some(("team-b".to_owned(), "ebb-b-metrics".to_owned())));
        assert_eq!(own_service(&["localhost".to_owned()]), None);
        assert_eq!(own_service(&["a.b.c.svc".to_owned()]), None);
        assert_eq!(own_service(&[]), None);
        let at = |ns: &str, name: &str| {
            service(json!({"group": "external.metrics.k8s.io", "version": "v1beta1",
                           "groupPriorityMinimum": 100, "versionPriority": 100,
                           "service": {"namespace": ns, "name": name, "port": 443}}))
        };
        assert!(points_at(&at("team-b", "ebb-b-metrics"), own.as_ref()));
        assert!(!points_at(&at("team-a", "ebb-a-metrics"), own.as_ref()));
        assert!(!points_at(&at("team-b", "other"), own.as_ref()));
        assert!(points_at(&at("keda", "keda-metrics"), None));
    }

    #[test]
    fn the_bundle_is_patched_only_when_it_differs() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(CA);
        let base = json!({"group": "external.metrics.k8s.io", "version": "v1beta1",
                          "groupPriorityMinimum": 100, "versionPriority": 100});
        let mut same = base.clone();
        same["caBundle"] = json!(b64);
        assert_eq!(ca_bundle_patch(&service(same), CA), None);
        assert_eq!(
            ca_bundle_patch(&service(base.clone()), CA),
            Some(json!({"spec": {"caBundle": b64}}))
        );
        let mut other = base.clone();
        other["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode("old"));
        assert_eq!(
            ca_bundle_patch(&service(other), CA),
            Some(json!({"spec": {"caBundle": b64}}))
        );
        let mut insecure = base;
        insecure["insecureSkipTLSVerify"] = json!(true);
        assert_eq!(
            ca_bundle_patch(&service(insecure), CA),
            Some(json!({"spec": {"caBundle": b64, "insecureSkipTLSVerify": false}}))
        );
    }
}
