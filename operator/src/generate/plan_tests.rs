use super::*;
use crate::cache::workloads::WorkloadKind;
use crate::cli::annotated::check_workload;
use crate::cli::bundle::BundleObjects;
use crate::cli::validate::CheckOptions;

fn workload() -> WorkloadRef {
    WorkloadRef {
        kind: WorkloadKind::Deployment,
        namespace: "shop".into(),
        name: "orders".into(),
    }
}

fn check(pairs: &[(&str, &str)]) -> WorkloadCheck {
    let annotations = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    check_workload(
        WorkloadKind::Deployment,
        "shop",
        "orders",
        &annotations,
        &BundleObjects::default(),
        CheckOptions {
            quiet_missing: true,
            ..CheckOptions::default()
        },
    )
    .expect("declared")
}

const KAFKA: &[(&str, &str)] = &[
    ("autoscaling.ebb.dev/trigger", "kafka"),
    ("kafka.autoscaling.ebb.dev/bootstrapServers", "kafka:9092"),
    ("kafka.autoscaling.ebb.dev/consumerGroup", "orders"),
    ("kafka.autoscaling.ebb.dev/topic", "orders"),
    ("kafka.autoscaling.ebb.dev/lagThreshold", "50"),
];

fn facts<'a>(
    w: &'a WorkloadRef,
    check: Option<&'a WorkloadCheck>,
    existing: Option<&'a ScaledObject>,
    written: &'a [String],
) -> Facts<'a> {
    Facts {
        workload: w,
        exists: true,
        uid: check.map(|_| "uid-1"),
        check,
        existing,
        written,
    }
}

/// The object a plan creates, as the store would hold it after the create.
fn stored(plan: &Plan) -> ScaledObject {
    let Action::Create(so) = &plan.action else {
        panic!("expected a create, got {:?}", plan.action)
    };
    let mut so = (**so).clone();
    so.metadata.uid = Some("so-uid".into());
    so
}

fn reasons(p: &Plan) -> Vec<&str> {
    p.notes.iter().map(|n| n.reason).collect()
}

#[test]
fn valid_annotations_create_an_owned_object_once() {
    let w = workload();
    let c = check(KAFKA);
    let p = plan(facts(&w, Some(&c), None, &[]));
    assert_eq!(reasons(&p), [GENERATED]);
    let so = stored(&p);
    let owner = controller_of(&so).expect("controller reference");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Deployment", "orders", "uid-1")
    );
    assert!(generated_from(&so, &w));
    // Once it exists as generated, nothing more happens.
    let again = plan(facts(&w, Some(&c), Some(&so), &[]));
    assert!(
        matches!(again.action, Action::Nothing) && again.notes.is_empty(),
        "{again:?}"
    );
}

#[test]
fn edited_annotations_update_and_a_hand_edit_is_reverted_with_a_warning() {
    let w = workload();
    let c = check(KAFKA);
    let so = stored(&plan(facts(&w, Some(&c), None, &[])));
    // The annotations changed: an update, a Normal event on the workload.
    let mut edited = KAFKA.to_vec();
    edited[4] = ("kafka.autoscaling.ebb.dev/lagThreshold", "10");
    let c2 = check(&edited);
    let p = plan(facts(&w, Some(&c2), Some(&so), &[]));
    assert_eq!(reasons(&p), [UPDATED]);
    let Action::Update { object, uid } = &p.action else {
        panic!("{:?}", p.action)
    };
    assert_eq!(uid, "so-uid");
    assert_eq!(object.spec.triggers[0].metadata["lagThreshold"], "10");
    // The object was edited by hand (the annotations did not change): reverted, a Warning on it.
    let mut hand = so.clone();
    hand.spec.max_replica_count = 3;
    let p = plan(facts(&w, Some(&c), Some(&hand), &[]));
    assert_eq!(reasons(&p), [REVERTED]);
    assert_eq!(p.notes[0].about, About::Generated("orders-deployment".into()));
    let Action::Update { object, .. } = &p.action else {
        panic!("{:?}", p.action)
    };
    assert_eq!(object.spec.max_replica_count, 100);
    // A pause annotation added by hand to the object is reverted too.
    let mut paused = so.clone();
    paused
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ebb_crds::annotations::PAUSED.into(), "true".into());
    assert_eq!(
        reasons(&plan(facts(&w, Some(&c), Some(&paused), &[]))),
        [REVERTED]
    );
    // Other labels and annotations (kubectl's, users') are not ebb's business.
    let mut labelled = so.clone();
    labelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("team".into(), "a".into());
    assert!(matches!(
        plan(facts(&w, Some(&c), Some(&labelled), &[])).action,
        Action::Nothing
    ));
}

#[test]
fn removed_annotations_delete_the_generated_object_only() {
    let w = workload();
    let c = check(KAFKA);
    let so = stored(&plan(facts(&w, Some(&c), None, &[])));
    let p = plan(facts(&w, None, Some(&so), &[]));
    assert!(
        matches!(&p.action, Action::Delete { name, uid } if name == "orders-deployment" && uid == "so-uid"),
        "{:?}",
        p.action
    );
    assert_eq!(reasons(&p), [REMOVED]);
    // A deleted workload: its owner reference takes the object along; nothing to do here.
    let gone = Facts {
        exists: false,
        ..facts(&w, None, Some(&so), &[])
    };
    assert!(matches!(plan(gone).action, Action::Nothing));
    // An object of that name that ebb did not generate is never deleted.
    let mut foreign = so.clone();
    foreign.metadata.labels = None;
    assert!(matches!(
        plan(facts(&w, None, Some(&foreign), &[])).action,
        Action::Nothing
    ));
}

#[test]
fn a_written_object_wins_and_the_event_names_it() {
    let w = workload();
    let c = check(KAFKA);
    let written = vec!["handmade".to_string()];
    let p = plan(facts(&w, Some(&c), None, &written));
    assert!(matches!(p.action, Action::Nothing), "{:?}", p.action);
    assert_eq!(reasons(&p), [IGNORED]);
    assert!(p.notes[0].message.contains("handmade"), "{}", p.notes[0].message);
    // When it appears after the generated one, the generated one goes.
    let so = stored(&plan(facts(&w, Some(&c), None, &[])));
    let p = plan(facts(&w, Some(&c), Some(&so), &written));
    assert!(matches!(p.action, Action::Delete { .. }), "{:?}", p.action);
    // A foreign object holding the generated name blocks it, and is left alone.
    let mut foreign = so.clone();
    foreign.metadata.owner_references = None;
    let p = plan(facts(&w, Some(&c), Some(&foreign), &[]));
    assert!(matches!(p.action, Action::Nothing), "{:?}", p.action);
    assert!(
        p.notes[0].message.contains("was not generated"),
        "{}",
        p.notes[0].message
    );
}

#[test]
fn invalid_annotations_write_nothing_and_name_the_annotation() {
    let w = workload();
    let mut bad = KAFKA.to_vec();
    bad.push(("autoscaling.ebb.dev/max-replicas", "lots"));
    let c = check(&bad);
    let p = plan(facts(&w, Some(&c), None, &[]));
    assert!(matches!(p.action, Action::Nothing), "{:?}", p.action);
    assert_eq!(reasons(&p), [INVALID]);
    assert!(p.notes[0].warning);
    assert!(
        p.notes[0].message.contains("autoscaling.ebb.dev/max-replicas"),
        "{}",
        p.notes[0].message
    );
    // With a generated object from before: it keeps its last valid spec.
    let so = stored(&plan(facts(&w, Some(&check(KAFKA)), None, &[])));
    let p = plan(facts(&w, Some(&c), Some(&so), &[]));
    assert!(matches!(p.action, Action::Nothing), "{:?}", p.action);
    assert!(
        p.notes[0].message.contains("keeps its last valid spec"),
        "{}",
        p.notes[0].message
    );
}

#[test]
fn unknown_keys_generate_with_a_warning() {
    let w = workload();
    let mut pairs = KAFKA.to_vec();
    pairs.push(("autoscaling.ebb.dev/max-replica", "3"));
    let c = check(&pairs);
    let p = plan(facts(&w, Some(&c), None, &[]));
    assert!(matches!(p.action, Action::Create(_)));
    assert_eq!(reasons(&p), [GENERATED, WARNINGS]);
    assert!(
        p.notes[1]
            .message
            .starts_with("autoscaling.ebb.dev/max-replica: unknown key")
    );
}
