//! ScaledObjects generated from scaling annotations on Deployments and StatefulSets.
//!
//! The workload watch that keeps replica counts (`cache/workloads.rs`) also keeps the scaling
//! annotations of the workloads that have them, and sends each change here; the ScaledObject
//! watch sends changes of generated objects and of written ones that target an annotated
//! workload ([`so_event_workloads`]). For each such workload the [`worker`] checks the annotations
//! as `ebb validate` does (`cli/annotated.rs`), asks the pure [`plan`] what to write (create,
//! replace the spec, delete, or nothing) and which Events to publish, and writes it. From there
//! the generated object is reconciled like any other.

pub mod plan;
pub mod queue;
pub mod worker;

use ebb_crds::ScaledObject;
use ebb_crds::annotated::{GENERATED_LABEL, WorkloadKind};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use crate::cache::workloads::{WorkloadIndex, WorkloadRef};

/// The workloads a ScaledObject watch event concerns: the workload a generated object was
/// generated from, and an annotated workload a written object targets. After a (re-)list: every
/// annotated workload and the source of every generated object in `store`.
pub fn so_event_workloads(
    event: &watcher::Event<ScaledObject>,
    workloads: &WorkloadIndex,
    store: &Store<ScaledObject>,
) -> Vec<WorkloadRef> {
    match event {
        watcher::Event::Apply(so) | watcher::Event::Delete(so) => workloads_of(so, workloads),
        watcher::Event::InitDone => {
            let mut all: Vec<WorkloadRef> = [WorkloadKind::Deployment, WorkloadKind::StatefulSet]
                .into_iter()
                .flat_map(|k| workloads.declared(k))
                .collect();
            all.extend(store.state().iter().filter_map(|so| source_of(so)));
            all.sort();
            all.dedup();
            all
        }
        watcher::Event::Init | watcher::Event::InitApply(_) => Vec::new(),
    }
}

fn workloads_of(so: &ScaledObject, workloads: &WorkloadIndex) -> Vec<WorkloadRef> {
    let mut out: Vec<WorkloadRef> = source_of(so).into_iter().collect();
    let target = &so.spec.scale_target_ref;
    if let (Some(kind), Some(namespace)) = (
        WorkloadKind::of(target.api_version_or_default(), target.kind_or_default()),
        so.metadata.namespace.clone(),
    ) {
        let w = WorkloadRef {
            kind,
            namespace,
            name: target.name.clone(),
        };
        let annotated = workloads.entry(&w).is_some_and(|e| e.declared.is_some());
        if annotated && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// The workload a generated object was generated from.
fn source_of(so: &ScaledObject) -> Option<WorkloadRef> {
    let labelled = so.metadata.labels.as_ref()?.get(GENERATED_LABEL)? == "true";
    let owner = plan::controller_of(so).filter(|_| labelled)?;
    Some(WorkloadRef {
        kind: WorkloadKind::of(&owner.api_version, &owner.kind)?,
        namespace: so.metadata.namespace.clone()?,
        name: owner.name.clone(),
    })
}
