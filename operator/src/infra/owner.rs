//! The Deployment that owns what the operator creates in its own namespace (the certificate
//! Secret, the leader Lease), named by `--owner-deployment`, so deleting the Deployment (`helm
//! uninstall`) garbage-collects them.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

/// An owner reference to `deployment` (no `controller`, no `blockOwnerDeletion`); `None` without
/// a name and uid.
pub fn owner_reference(deployment: &Deployment) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "Deployment".to_owned(),
        name: deployment.metadata.name.clone()?,
        uid: deployment.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

/// GETs the Deployment `namespace/name` and returns a reference to it; warns and returns `None`
/// when it cannot be read (the operator then carries on without owner references).
pub async fn deployment_owner(client: &Client, namespace: &str, name: &str) -> Option<OwnerReference> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    match api.get(name).await {
        Ok(d) => owner_reference(&d),
        Err(e) => {
            tracing::warn!(
                error = %e,
                deployment = %format!("{namespace}/{name}"),
                "cannot read the owner Deployment; what the operator creates gets no owner reference"
            );
            None
        }
    }
}

/// Sets the owner reference of the Lease `namespace/name` (a merge patch of
/// `metadata.ownerReferences`), when the replica starts leading.
pub async fn own_lease(
    client: &Client,
    namespace: &str,
    name: &str,
    owner: &OwnerReference,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
    Api::<Lease>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_a_name_and_uid() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ebb", "namespace": "ebb-system", "uid": "u-1"}
        }))
        .unwrap();
        let r = owner_reference(&d).unwrap();
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str()),
            ("apps/v1", "Deployment")
        );
        assert_eq!((r.name.as_str(), r.uid.as_str()), ("ebb", "u-1"));
        assert_eq!((r.controller, r.block_owner_deletion), (None, None));
        assert!(owner_reference(&Deployment::default()).is_none());
    }
}
