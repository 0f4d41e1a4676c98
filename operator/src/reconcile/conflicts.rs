//! Conflict detection: another ScaledObject (created earlier, or at the same time with a smaller
//! name) or an HPA that ebb does not own already scales the target. [`check`] is pure over what
//! the caches hold; [`detect`] looks the candidates up in the watch-fed indexes and calls it.

use std::sync::Arc;

use ebb_crds::ScaledObject;
use ebb_crds::annotations::{self, flag};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::cache::hpas::CachedHpa;
use crate::context::Shared;
use crate::reconcile::hpa::targets as hpa_targets;
use crate::scale::targets::TargetRef;

/// Someone else already scales the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// An older ScaledObject points at the same target.
    #[error("{target} is already scaled by ScaledObject {other}")]
    ScaledObject {
        /// `Kind namespace/name` of the target.
        target: String,
        /// The other ScaledObject's name.
        other: String,
    },
    /// An HPA ebb does not own scales the target, and adopting it is not allowed.
    #[error(
        "{target} is already scaled by HorizontalPodAutoscaler {hpa}; set annotation {}: \"true\" to adopt it",
        annotations::TRANSFER_HPA_OWNERSHIP
    )]
    ForeignHpa {
        /// `Kind namespace/name` of the target.
        target: String,
        /// The HPA's name.
        hpa: String,
    },
    /// The HPA name ebb would use is taken by an HPA it does not own (it scales something else).
    #[error(
        "HorizontalPodAutoscaler {hpa} already exists and is not owned by this ScaledObject; set another spec.advanced.horizontalPodAutoscalerConfig.name"
    )]
    NameTaken {
        /// The HPA's name.
        hpa: String,
    },
}

/// Looks up the ScaledObjects and HPAs pointing at `target` and [`check`]s them.
pub fn detect(shared: &Shared, so: &ScaledObject, target: &TargetRef) -> Result<Option<String>, Conflict> {
    let others: Vec<Arc<ScaledObject>> = shared
        .so_targets
        .candidates(&target.namespace, &target.name)
        .into_iter()
        .filter_map(|name| {
            shared
                .so_store
                .get(&ObjectRef::new(&name).within(&target.namespace))
        })
        .collect();
    let hpas = shared.hpas.targeting(&target.namespace, &target.name);
    check(so, target, &others, &hpas)
}

/// Whether `so` may scale `target`, given the other ScaledObjects and the HPAs that may point at
/// it. `Ok(Some(name))`: adopt the HPA `name` (`transfer-hpa-ownership`), `Ok(None)`: use the
/// default HPA name.
pub fn check(
    so: &ScaledObject,
    target: &TargetRef,
    others: &[Arc<ScaledObject>],
    hpas: &[Arc<CachedHpa>],
) -> Result<Option<String>, Conflict> {
    let described = format!("{} {}/{}", target.kind, target.namespace, target.name);
    let me = (so.metadata.creation_timestamp.clone(), so.name_any());
    for other in others {
        if other.uid() == so.uid()
            || other.namespace() != so.namespace()
            || other.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let r = &other.spec.scale_target_ref;
        let same = r.name == target.name
            && r.kind_or_default() == target.kind
            && group(r.api_version_or_default()) == group(&target.api_version);
        if same && (other.metadata.creation_timestamp.clone(), other.name_any()) < me {
            return Err(Conflict::ScaledObject {
                target: described,
                other: other.name_any(),
            });
        }
    }
    let my_uid = so.uid().unwrap_or_default();
    let transfer = flag(
        so.metadata.annotations.as_ref(),
        annotations::TRANSFER_HPA_OWNERSHIP,
    );
    let on_target: Vec<&CachedHpa> = hpas
        .iter()
        .map(Arc::as_ref)
        .filter(|h| hpa_targets(&h.drift_view(), &target.api_version, &target.kind, &target.name))
        .collect();
    // The whole list is read, in name order, so that the answer does not depend on which HPA the
    // cache happens to list first (ebb's own HPA and a foreign one can both be there, when the
    // foreign one reached the cache after ebb created its own).
    if transfer
        && let Some(adopted) = on_target
            .iter()
            .find(|h| owned_by(h, &my_uid) && h.name != so.hpa_name())
    {
        // An HPA adopted through transfer-hpa-ownership keeps its own name.
        return Ok(Some(adopted.name.clone()));
    }
    let foreign = on_target
        .iter()
        .find(|h| !owned_by(h, &my_uid) && !owned_by_ebb(h));
    match foreign {
        Some(hpa) if transfer => Ok(Some(hpa.name.clone())),
        Some(hpa) => Err(Conflict::ForeignHpa {
            target: described,
            hpa: hpa.name.clone(),
        }),
        // Another ebb ScaledObject's HPA: the ScaledObject check above names its owner.
        None => Ok(None),
    }
}

/// KEDA's label on the HPAs it creates, naming its ScaledObject.
const KEDA_SCALED_OBJECT_LABEL: &str = "scaledobject.keda.sh/name";

/// What to remove from an HPA ebb is about to apply onto (one it adopts), as a JSON patch: the
/// owner references of every other controller and of KEDA's ScaledObjects (only one controller
/// may own an object, and a KEDA ScaledObject deleted after the cutover must leave the garbage
/// collector nothing of ebb's to delete) and KEDA's name label. The patch first tests that the
/// owner references are still the ones read, so a concurrent change makes it fail (and the
/// reconcile retry) instead of dropping a reference it did not see. `None`: nothing to remove.
pub fn release_patch(hpa: &CachedHpa, my_uid: &str) -> Option<serde_json::Value> {
    let foreign = |o: &OwnerReference| {
        o.uid != my_uid
            && (o.controller == Some(true)
                || (o.kind == "ScaledObject" && group(&o.api_version) == KEDA_GROUP))
    };
    let labels = hpa.drift_view()["metadata"]["labels"].clone();
    let keda_label = labels.get(KEDA_SCALED_OBJECT_LABEL).is_some();
    if !hpa.owner_references.iter().any(foreign) && !keda_label {
        return None;
    }
    let kept: Vec<&OwnerReference> = hpa.owner_references.iter().filter(|o| !foreign(o)).collect();
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/ownerReferences", "value": hpa.owner_references}),
        json!({"op": "replace", "path": "/metadata/ownerReferences", "value": kept}),
    ];
    if hpa.owner_references.is_empty() {
        // `test` on an absent member fails: there is nothing to test or replace then.
        ops.clear();
    }
    if keda_label {
        ops.push(json!({"op": "remove", "path": format!("/metadata/labels/{}", KEDA_SCALED_OBJECT_LABEL.replace('/', "~1"))}));
    }
    Some(serde_json::Value::Array(ops))
}

/// KEDA's API group.
const KEDA_GROUP: &str = "keda.sh";

/// Whether the ScaledObject with `uid` owns `hpa`.
pub fn owned_by(hpa: &CachedHpa, uid: &str) -> bool {
    hpa.owner_references.iter().any(|o| o.uid == uid)
}

/// Whether some ebb ScaledObject owns `hpa`. A KEDA ScaledObject (`keda.sh`) is foreign: two
/// controllers must not scale one workload.
fn owned_by_ebb(hpa: &CachedHpa) -> bool {
    hpa.owner_references
        .iter()
        .any(|o| o.kind == "ScaledObject" && group(&o.api_version) == ebb_crds::GROUP)
}

fn group(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::DynamicObject;

    fn so(name: &str, uid: &str, created: &str, target: &str) -> Arc<ScaledObject> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": name, "namespace": "ns", "uid": uid, "creationTimestamp": created},
                "spec": {"scaleTargetRef": {"name": target}, "triggers": [{"type": "t", "metadata": {}}]}
            }))
            .unwrap(),
        )
    }

    fn target() -> TargetRef {
        TargetRef {
            namespace: "ns".into(),
            name: "w".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        }
    }

    fn hpa(name: &str, owner: Option<(&str, &str)>) -> Arc<CachedHpa> {
        owned_hpa(name, owner.map(|(kind, uid)| ("ebb.dev/v1alpha1", kind, uid)))
    }

    fn owned_hpa(name: &str, owner: Option<(&str, &str, &str)>) -> Arc<CachedHpa> {
        let owners: Vec<_> = owner
            .into_iter()
            .map(|(api_version, kind, uid)| json!({"apiVersion": api_version, "kind": kind, "name": "o", "uid": uid}))
            .collect();
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": "ns", "ownerReferences": owners},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"}}
        }))
        .unwrap();
        Arc::new(CachedHpa::from_object(&obj))
    }

    const T1: &str = "2024-01-01T00:00:00Z";
    const T2: &str = "2024-01-02T00:00:00Z";

    #[test]
    fn an_older_scaled_object_wins() {
        let me = so("b", "u-b", T2, "w");
        let older = so("a", "u-a", T1, "w");
        let e = check(&me, &target(), &[older.clone(), me.clone()], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Deployment ns/w is already scaled by ScaledObject a"
        );
        // The older one is not blocked by the newer one.
        assert_eq!(
            check(&older, &target(), &[me.clone(), older.clone()], &[]),
            Ok(None)
        );
    }

    #[test]
    fn same_age_the_smaller_name_wins_and_other_targets_do_not_count() {
        let a = so("a", "u-a", T1, "w");
        let b = so("b", "u-b", T1, "w");
        assert!(check(&b, &target(), std::slice::from_ref(&a), &[]).is_err());
        assert_eq!(check(&a, &target(), std::slice::from_ref(&b), &[]), Ok(None));
        let elsewhere = so("a", "u-a", T1, "other");
        assert_eq!(check(&b, &target(), &[elsewhere], &[]), Ok(None));
    }

    #[test]
    fn a_foreign_hpa_conflicts_unless_adoption_is_allowed() {
        let me = so("b", "u-b", T1, "w");
        let foreign = hpa("theirs", None);
        let e = check(&me, &target(), &[], std::slice::from_ref(&foreign)).unwrap_err();
        assert!(matches!(e, Conflict::ForeignHpa { ref hpa, .. } if hpa == "theirs"));
        assert!(e.to_string().contains("transfer-hpa-ownership"), "{e}");

        let mut adopting = (*me).clone();
        adopting.metadata.annotations = Some(
            [(
                annotations::TRANSFER_HPA_OWNERSHIP.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            check(&adopting, &target(), &[], std::slice::from_ref(&foreign)),
            Ok(Some("theirs".into()))
        );
        // Once adopted (owned by us), it keeps its name.
        let adopted = hpa("theirs", Some(("ScaledObject", "u-b")));
        assert_eq!(
            check(&adopting, &target(), &[], &[adopted]),
            Ok(Some("theirs".into()))
        );
    }

    #[test]
    fn own_hpa_and_other_scaled_objects_hpas_are_not_conflicts() {
        let me = so("b", "u-b", T1, "w");
        let own = hpa(&me.hpa_name(), Some(("ScaledObject", "u-b")));
        assert_eq!(check(&me, &target(), &[], &[own]), Ok(None));
        let others = hpa("x", Some(("ScaledObject", "u-other")));
        assert_eq!(check(&me, &target(), &[], &[others]), Ok(None));
    }

    fn adopting(me: &ScaledObject) -> ScaledObject {
        let mut adopting = me.clone();
        adopting.metadata.annotations = Some(
            [(
                annotations::TRANSFER_HPA_OWNERSHIP.to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        adopting
    }

    #[test]
    fn a_foreign_hpa_next_to_our_own_is_found_whatever_the_order() {
        // ebb created its HPA before the foreign one reached the cache: both target the workload.
        let me = so("b", "u-b", T1, "w");
        let own = hpa(&me.hpa_name(), Some(("ScaledObject", "u-b")));
        let foreign = hpa("legacy", None);
        for hpas in [[own.clone(), foreign.clone()], [foreign.clone(), own.clone()]] {
            let e = check(&me, &target(), &[], &hpas).unwrap_err();
            assert!(matches!(e, Conflict::ForeignHpa { ref hpa, .. } if hpa == "legacy"));
            assert_eq!(
                check(&adopting(&me), &target(), &[], &hpas),
                Ok(Some("legacy".into()))
            );
        }
        // Adopted (now ours too): it stays the one, whichever is listed first.
        let adopted = hpa("legacy", Some(("ScaledObject", "u-b")));
        for hpas in [[own.clone(), adopted.clone()], [adopted.clone(), own.clone()]] {
            assert_eq!(
                check(&adopting(&me), &target(), &[], &hpas),
                Ok(Some("legacy".into()))
            );
        }
    }

    #[test]
    fn an_hpa_owned_by_a_keda_scaled_object_is_foreign() {
        let me = so("b", "u-b", T1, "w");
        let keda = owned_hpa("keda-hpa-w", Some(("keda.sh/v1alpha1", "ScaledObject", "u-k")));
        let e = check(&me, &target(), &[], &[keda]).unwrap_err();
        assert!(matches!(e, Conflict::ForeignHpa { ref hpa, .. } if hpa == "keda-hpa-w"));
    }

    fn keda_hpa(controller: bool) -> Arc<CachedHpa> {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-hpa-w", "namespace": "ns",
                "labels": {"scaledobject.keda.sh/name": "w", "app.kubernetes.io/managed-by": "keda-operator"},
                "ownerReferences": [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "w",
                                     "uid": "u-k", "controller": controller, "blockOwnerDeletion": true}]},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"}}
        }))
        .unwrap();
        Arc::new(CachedHpa::from_object(&obj))
    }

    #[test]
    fn adopting_a_keda_hpa_drops_keda_as_owner_and_its_label() {
        for controller in [true, false] {
            let patch = release_patch(&keda_hpa(controller), "u-b").unwrap();
            let ops = patch.as_array().unwrap();
            assert_eq!(ops[0]["op"], "test");
            assert_eq!(ops[0]["value"][0]["uid"], "u-k");
            assert_eq!(
                ops[1],
                json!({"op": "replace", "path": "/metadata/ownerReferences", "value": []})
            );
            assert_eq!(
                ops[2],
                json!({"op": "remove", "path": "/metadata/labels/scaledobject.keda.sh~1name"})
            );
        }
    }

    #[test]
    fn other_owners_stay_and_ebbs_own_hpa_needs_nothing() {
        // ebb's own HPA.
        assert_eq!(
            release_patch(&hpa("ebb-hpa-w", Some(("ScaledObject", "u-b"))), "u-b"),
            None
        );
        // A plain foreign HPA without owners or KEDA's label.
        assert_eq!(release_patch(&hpa("legacy", None), "u-b"), None);
        // A non-controller owner of another kind stays; another controller goes.
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h", "namespace": "ns", "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u-c"},
                {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "r", "uid": "u-r", "controller": true}]},
            "spec": {"scaleTargetRef": {"name": "w"}}
        }))
        .unwrap();
        let patch = release_patch(&CachedHpa::from_object(&obj), "u-b").unwrap();
        assert_eq!(
            patch[1]["value"],
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u-c"}])
        );
    }
}
