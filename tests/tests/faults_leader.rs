//! Leader faults (issue 15), end to end against the real API server and controller-manager: two
//! `ebb operator` processes on one Lease (`--lease-duration 4`), in the test's own namespace.
//!
//! - The leader cut off from the API server by a relay (its connections closed, new ones
//!   refused) while its objects flap between 0 and 1: it must step down before the standby
//!   acquires the Lease and make no leader write after that, also once the relay reopens.
//! - The leader SIGKILLed at each stage of an object's life (creation, activation, cooldown,
//!   pause, deletion with restore): the standby finishes the job within a bound.
//!
//! Nothing here touches the shared servers: the partition is the relay's, the kills are of the
//! test's own processes.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use ebb_tests::fixture::Fixture;
use ebb_tests::leader::{
    LeaseView, Pair, Sampler, lease, log_time, secs_between, start_pair, wait_holder, wait_leader_gauge,
};
use ebb_tests::objects::deployment;
use ebb_tests::operator::OperatorProcess;
use ebb_tests::relay::{Relay, api_server_addr, kubeconfig_via};
use ebb_tests::source::MetricSource;
use ebb_tests::wait_for;
use kube::api::DeleteParams;
use serde_json::json;

/// `--lease-duration` of every operator here.
const LEASE_SECS: u64 = 4;

/// How long after the leader's death the standby must have finished a job that takes it one
/// reconcile or one poll: the Lease runs out (at most one term after the last renewal), the
/// standby notices (a re-read every 250 ms), acquires, renews, lists and acts. One term plus 4 s.
const TAKEOVER_BOUND: Duration = Duration::from_secs(LEASE_SECS + 4);

const LEADER: &str = "op-a";
const STANDBY: &str = "op-b";

/// Two operators on the fixture namespace's Lease, both straight to the API server.
async fn pair(f: &Fixture) -> Pair {
    let kc = f.kubeconfig();
    start_pair(&f.ns.name, LEASE_SECS, (LEADER, &kc), (STANDBY, &kc))
        .await
        .unwrap()
}

async fn fixture(prefix: &str, depth: i64) -> Fixture {
    Fixture::start(prefix, depth).await.unwrap()
}

/// A fixture whose source holds `depth`, a Deployment `worker` at 0 replicas, and a leader and
/// standby on one Lease.
async fn worker_and_pair(prefix: &str, depth: i64) -> (Fixture, Pair) {
    let f = fixture(prefix, depth).await;
    deployment(&f.client(), &f.ns.name, "worker", 0).await.unwrap();
    let pair = pair(&f).await;
    (f, pair)
}

/// SIGKILLs the pair's leader (returns when it is dead) and returns the standby, the time of the
/// kill, and the Lease as the standby acquired it (waits up to the takeover bound).
async fn kill_leader(f: &Fixture, pair: Pair) -> (OperatorProcess, Instant, LeaseView) {
    let Pair {
        leader,
        standby,
        standby_metrics,
        ..
    } = pair;
    leader.kill().await;
    let killed = Instant::now();
    let taken = wait_holder(&f.client(), &f.ns.name, STANDBY, TAKEOVER_BOUND)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_leader_gauge(&standby_metrics, true, TAKEOVER_BOUND)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("standby leads {:?} after the kill", killed.elapsed());
    (standby, killed, taken)
}

/// Killed right after the ScaledObject is created: the standby creates the HPA and the status.
#[tokio::test]
async fn leader_killed_at_creation_standby_creates_the_hpa() {
    let (f, pair) = worker_and_pair("flt-create", 0).await;
    f.create_so("worker", json!({}), json!({})).await;
    let Pair { leader, standby, .. } = pair;
    leader.kill().await;
    let killed = Instant::now();
    eprintln!(
        "HPA right after the kill: {} (true means the leader wrote it first)",
        f.has_hpa("ebb-hpa-worker").await
    );
    let done = wait_for("HPA and Ready=True", TAKEOVER_BOUND, || async {
        let ready = f.condition("worker", "Ready").await?.0 == "True";
        (ready && f.has_hpa("ebb-hpa-worker").await).then_some(())
    })
    .await;
    let took = killed.elapsed();
    eprintln!("creation finished by the standby {took:?} after the kill (bound {TAKEOVER_BOUND:?})");
    done.unwrap_or_else(|e| panic!("{e} within {TAKEOVER_BOUND:?} of the kill"));
    // One HPA on the worker, named in the status.
    let hpas = f.hpas().await;
    assert_eq!(
        hpas.len(),
        1,
        "{:?}",
        hpas.iter().map(|h| &h.metadata.name).collect::<Vec<_>>()
    );
    let status = f.so_api().get("worker").await.unwrap().status.unwrap();
    assert_eq!(status.hpa_name.as_deref(), Some("ebb-hpa-worker"));
    assert_eq!(status.original_replica_count, Some(0));
    // And it scales: the standby runs the object's loop.
    f.source.set_depth(7);
    f.wait_replicas("worker", 1, Instant::now(), Duration::from_secs(5))
        .await;
    f.finish(vec![standby]).await;
}

/// Killed right after the source turns active, before (or around) the 0 → 1 write.
#[tokio::test]
async fn leader_killed_at_activation_standby_scales_to_one() {
    let (f, pair) = worker_and_pair("flt-activate", 0).await;
    f.create_so("worker", json!({"cooldownPeriod": 60}), json!({}))
        .await;
    f.wait_condition("worker", "Ready", "True", Duration::from_secs(20))
        .await;
    assert_eq!(f.replicas("worker").await, 0);
    f.source.set_depth(7);
    let Pair {
        leader,
        standby,
        standby_metrics,
        ..
    } = pair;
    leader.kill().await;
    let killed = Instant::now();
    let at_kill = f.replicas("worker").await;
    eprintln!("replicas right after the kill: {at_kill} (1 means the leader wrote first)");
    let took = f.wait_replicas("worker", 1, killed, TAKEOVER_BOUND).await;
    eprintln!("activation finished {took:?} after the kill (bound {TAKEOVER_BOUND:?})");
    assert!(took < TAKEOVER_BOUND, "took {took:?}");
    wait_leader_gauge(&standby_metrics, true, Duration::from_secs(2))
        .await
        .unwrap();
    let (active, _) = wait_for("Active=True", Duration::from_secs(5), || async {
        f.condition("worker", "Active").await.filter(|c| c.0 == "True")
    })
    .await
    .unwrap();
    assert_eq!(active, "True");
    // Stays up (the cooldown is a minute).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f.replicas("worker").await, 1);
    f.finish(vec![standby]).await;
}

/// Killed while the object cools down toward 0: the standby finishes the same cooldown (from
/// `lastActiveTime`), neither sooner nor much later.
#[tokio::test]
async fn leader_killed_during_cooldown_standby_scales_to_zero_on_time() {
    const COOLDOWN: u64 = 10;
    let (f, pair) = worker_and_pair("flt-cooldown", 7).await;
    f.create_so("worker", json!({"cooldownPeriod": COOLDOWN}), json!({}))
        .await;
    f.wait_replicas("worker", 1, Instant::now(), Duration::from_secs(20))
        .await;
    f.source.set_depth(0);
    let idle = Instant::now();
    // The leader has seen the source idle and started the cooldown.
    let reason = f
        .wait_condition("worker", "Active", "False", Duration::from_secs(5))
        .await;
    assert_eq!(reason, "ScalerCooldown");
    let (standby, killed, _) = kill_leader(&f, pair).await;
    eprintln!("killed {:?} into the cooldown", killed.duration_since(idle));
    assert_eq!(
        f.replicas("worker").await,
        1,
        "scaled in before the cooldown ran out"
    );
    let at = f
        .wait_replicas(
            "worker",
            0,
            idle,
            Duration::from_secs(COOLDOWN + 5).saturating_sub(idle.elapsed()),
        )
        .await;
    eprintln!("scaled to 0 {at:?} after the source went idle (cooldown {COOLDOWN} s)");
    // The last poll that saw it active was at most one interval (1 s) before it went idle.
    assert!(
        at >= Duration::from_secs(COOLDOWN) - Duration::from_millis(1500),
        "scaled in {at:?} after the source went idle: the cooldown of {COOLDOWN} s was cut short"
    );
    assert!(
        at <= Duration::from_secs(COOLDOWN + 3),
        "scaled in {at:?} after the source went idle"
    );
    f.finish(vec![standby]).await;
}

/// Killed right after `paused-replicas` is set: the standby holds the target at that count.
#[tokio::test]
async fn leader_killed_after_paused_replicas_standby_holds_the_count() {
    let (f, pair) = worker_and_pair("flt-pausereps", 7).await;
    f.create_so("worker", json!({}), json!({})).await;
    f.wait_replicas("worker", 1, Instant::now(), Duration::from_secs(20))
        .await;
    f.annotate("worker", json!({"autoscaling.ebb.dev/paused-replicas": "3"}))
        .await;
    let Pair { leader, standby, .. } = pair;
    leader.kill().await;
    let killed = Instant::now();
    eprintln!(
        "replicas right after the kill: {} (3 means the leader wrote first)",
        f.replicas("worker").await
    );
    let took = f.wait_replicas("worker", 3, killed, TAKEOVER_BOUND).await;
    eprintln!("paused at 3 {took:?} after the kill (bound {TAKEOVER_BOUND:?})");
    f.wait_condition("worker", "Paused", "True", Duration::from_secs(5))
        .await;
    wait_for("no HPA while paused", Duration::from_secs(5), || async {
        (!f.has_hpa("ebb-hpa-worker").await).then_some(())
    })
    .await
    .unwrap();
    // Held whatever the source says.
    f.source.set_depth(0);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(f.replicas("worker").await, 3);
    }
    f.finish(vec![standby]).await;
}

/// Killed right after `paused: "true"` is set, then the source goes idle: the standby scales
/// nothing (without the pause, a cooldown of 0 would take the target to 0 at once).
#[tokio::test]
async fn leader_killed_after_pause_standby_keeps_the_target() {
    let (f, pair) = worker_and_pair("flt-pause", 7).await;
    f.create_so("worker", json!({}), json!({})).await;
    f.wait_replicas("worker", 1, Instant::now(), Duration::from_secs(20))
        .await;
    f.annotate("worker", json!({"autoscaling.ebb.dev/paused": "true"}))
        .await;
    f.source.set_depth(0);
    let (standby, killed, _) = kill_leader(&f, pair).await;
    f.wait_condition(
        "worker",
        "Paused",
        "True",
        TAKEOVER_BOUND.saturating_sub(killed.elapsed()),
    )
    .await;
    eprintln!("Paused=True {:?} after the kill", killed.elapsed());
    // The standby leads and polls nothing for this object: the target stays at 1.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(f.replicas("worker").await, 1, "scaled while paused");
    }
    // Unpausing hands it back to the standby, which scales it in (cooldown 0).
    f.annotate("worker", json!({"autoscaling.ebb.dev/paused": null}))
        .await;
    f.wait_replicas("worker", 0, Instant::now(), Duration::from_secs(10))
        .await;
    f.finish(vec![standby]).await;
}

/// Killed right after the delete of an object with `restoreToOriginalReplicaCount` (its
/// finalizer pending): the standby restores the original count and lets the object go.
#[tokio::test]
async fn leader_killed_at_deletion_standby_restores_and_releases() {
    let f = fixture("flt-delete", 0).await;
    deployment(&f.client(), &f.ns.name, "worker", 2).await.unwrap();
    let pair = pair(&f).await;
    f.create_so(
        "worker",
        json!({"advanced": {"restoreToOriginalReplicaCount": true}}),
        json!({}),
    )
    .await;
    f.wait_replicas("worker", 0, Instant::now(), Duration::from_secs(20))
        .await;
    let so = f.so_api().get("worker").await.unwrap();
    assert!(
        so.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|x| x == "ebb.dev/finalizer")
    );
    f.so_api()
        .delete("worker", &DeleteParams::default())
        .await
        .unwrap();
    let Pair { leader, standby, .. } = pair;
    leader.kill().await;
    let killed = Instant::now();
    let pending = f.so_api().get_opt("worker").await.unwrap().is_some();
    eprintln!(
        "right after the kill: replicas {}, object still there: {pending}",
        f.replicas("worker").await
    );
    let restored = f.wait_replicas("worker", 2, killed, TAKEOVER_BOUND).await;
    wait_for(
        "ScaledObject gone",
        TAKEOVER_BOUND.saturating_sub(killed.elapsed()),
        || async { f.so_api().get_opt("worker").await.ok()?.is_none().then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e} within {TAKEOVER_BOUND:?} of the kill"));
    let gone = killed.elapsed();
    eprintln!("restored to 2 after {restored:?}, object gone after {gone:?} (bound {TAKEOVER_BOUND:?})");
    // Nothing scales it afterwards.
    f.source.set_depth(9);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f.replicas("worker").await, 2);
    f.finish(vec![standby]).await;
}

/// Toggles the source between idle and active every second until dropped.
struct Flapper(tokio::task::JoinHandle<()>);

impl Flapper {
    fn start(source: MetricSource) -> Flapper {
        Flapper(tokio::spawn(async move {
            let mut active = false;
            loop {
                active = !active;
                source.set_depth(if active { 7 } else { 0 });
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}

impl Drop for Flapper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sleeps `d` while noting when `op` exits.
async fn watch_exit(op: &mut OperatorProcess, exit: &mut Option<SystemTime>, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if exit.is_none() && op.exited().is_some() {
            *exit = Some(SystemTime::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader loses the API server (a relay in front of it closes every connection and refuses
/// new ones) while three objects flap between 0 and 1; the standby takes over; later the relay
/// reopens. The leader must step down before the standby acquires the Lease and make no leader
/// write (scale, HPA, status, finalizer) from then on.
#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_writing_before_the_standby_leads() {
    const OBJECTS: [&str; 3] = ["w0", "w1", "w2"];
    let f = fixture("flt-cut", 0).await;
    for name in OBJECTS {
        deployment(&f.client(), &f.ns.name, name, 0).await.unwrap();
    }
    let relay = Relay::start(api_server_addr(&f.env).unwrap()).await.unwrap();
    let relay_kc = std::env::temp_dir().join(format!("ebb-relay-{}.kubeconfig", f.ns.name));
    kubeconfig_via(&f.env, relay.addr(), &relay_kc).unwrap();
    let direct_kc = f.kubeconfig();
    let pair = start_pair(
        &f.ns.name,
        LEASE_SECS,
        (LEADER, Path::new(&relay_kc)),
        (STANDBY, &direct_kc),
    )
    .await
    .unwrap();
    let Pair {
        leader: mut a,
        leader_metrics: a_metrics,
        standby: b,
        standby_metrics: b_metrics,
    } = pair;
    let a_samples = Sampler::start(&a_metrics);
    let b_samples = Sampler::start(&b_metrics);
    for name in OBJECTS {
        f.create_so(name, json!({}), json!({})).await;
    }
    for name in OBJECTS {
        f.wait_condition(name, "Ready", "True", Duration::from_secs(45))
            .await;
    }
    let flapper = Flapper::start(f.source.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Cut.
    let a_before_cut = a_samples.last().expect("the leader's /metrics").1;
    let b_before_cut = b_samples.last().expect("the standby's /metrics").1;
    assert!(a_before_cut.leader && !b_before_cut.leader);
    assert!(
        a_before_cut.scale_writes() >= 3,
        "the leader wrote /scale only {} times before the cut: the objects did not flap",
        a_before_cut.scale_writes()
    );
    assert_eq!(b_before_cut.leader_writes(), 0, "the standby wrote");
    let before_cut = lease(&f.client(), &f.ns.name).await.unwrap();
    relay.cut();
    let cut = SystemTime::now();
    let mut a_exit = None;
    let mut taken = None;
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECS * 3);
    while taken.is_none() && Instant::now() < deadline {
        watch_exit(&mut a, &mut a_exit, Duration::from_millis(100)).await;
        taken = lease(&f.client(), &f.ns.name)
            .await
            .filter(|l| l.holder.as_deref() == Some(STANDBY));
    }
    let taken = taken.expect("the standby acquires the Lease");
    let acquired = taken.acquired.expect("acquireTime");
    wait_leader_gauge(&b_metrics, true, Duration::from_secs(5))
        .await
        .unwrap();
    // The standby works: let it flap, then reopen the relay (the leader's connections may come
    // back now) and let it flap again.
    watch_exit(&mut a, &mut a_exit, Duration::from_secs(5)).await;
    relay.reopen();
    let reopened = SystemTime::now();
    watch_exit(&mut a, &mut a_exit, Duration::from_secs(5)).await;
    drop(flapper);

    // What the old leader did.
    let a_log = f.log(LEADER);
    let stepped_down = log_time(&a_log, "stepping down as leader");
    let a_at_takeover = a_samples.before(acquired);
    let a_final = a_samples.last().expect("samples").1;
    let b_final = b_samples.last().expect("samples").1;
    let margin = stepped_down.map(|s| secs_between(s, acquired));
    let renewed_to_cut = before_cut.renewed.map(|r| secs_between(r, cut));
    eprintln!("--- leader cut off: figures ---");
    eprintln!(
        "lease {LEASE_SECS} s, renew deadline {:.2} s",
        LEASE_SECS as f64 * 2.0 / 3.0
    );
    eprintln!("last renewal before the cut: {renewed_to_cut:?} s before it");
    eprintln!(
        "cut → A steps down: {:?} s",
        stepped_down.map(|s| secs_between(cut, s))
    );
    eprintln!("cut → A exits: {:?} s", a_exit.map(|s| secs_between(cut, s)));
    eprintln!(
        "cut → B acquires (acquireTime): {:.3} s",
        secs_between(cut, acquired)
    );
    eprintln!("margin (A steps down → B acquires): {margin:?} s");
    eprintln!(
        "relay reopened {:.3} s after B acquired",
        secs_between(acquired, reopened)
    );
    eprintln!(
        "A's leader writes: before the cut {}, at takeover {:?}, last sample {}",
        a_before_cut.leader_writes(),
        a_at_takeover.as_ref().map(|(_, s)| s.leader_writes()),
        a_final.leader_writes()
    );
    eprintln!(
        "A's event writes: before the cut {}, last sample {}",
        a_before_cut.event_writes(),
        a_final.event_writes()
    );
    eprintln!(
        "bytes relayed from A after B acquired: {} (relay connections relayed/refused: {:?})",
        relay.bytes_sent_since(acquired),
        relay.connections()
    );
    eprintln!(
        "B's /scale writes: before the cut {}, at the end {}",
        b_before_cut.scale_writes(),
        b_final.scale_writes()
    );

    let stepped_down = stepped_down.expect("the cut-off leader logs that it steps down");
    assert!(
        stepped_down < acquired,
        "A stepped down {:.3} s after B acquired the Lease",
        -secs_between(stepped_down, acquired)
    );
    // Its gauge agrees: no sample at or after the acquisition says "leader".
    let late_leader: Vec<f64> = a_samples
        .samples()
        .iter()
        .filter(|(t, s)| *t >= acquired && s.leader)
        .map(|(t, _)| secs_between(acquired, *t))
        .collect();
    assert!(
        late_leader.is_empty(),
        "A's gauge said leader {late_leader:?} s after B acquired"
    );
    // No leader write from A once B leads: either A was gone by then, or its counters did not
    // move from the last sample before the acquisition (which over-counts, never under-counts).
    match a_exit {
        Some(exit) if exit < acquired => {
            eprintln!("A exited {:.3} s before B acquired", secs_between(exit, acquired));
        }
        _ => {
            let (_, at) = a_at_takeover.expect("a sample of A before the takeover");
            assert_eq!(
                a_final.leader_writes(),
                at.leader_writes(),
                "A made leader writes after B acquired the Lease"
            );
        }
    }
    // The relay saw nothing of A after the acquisition before it reopened.
    assert_eq!(
        relay.bytes_sent_since(acquired) - relay.bytes_sent_since(reopened),
        0
    );
    // B took over the flapping.
    assert!(
        b_final.scale_writes() >= 3,
        "B wrote /scale {} times after taking over",
        b_final.scale_writes()
    );
    // Read again now: kube-lease-manager writes the holder first and the transition count in a
    // second patch, so the Lease read the moment B held it may not count it yet.
    let after = lease(&f.client(), &f.ns.name).await.expect("the Lease");
    assert!(after.transitions > before_cut.transitions);
    drop(a_samples);
    drop(b_samples);
    std::fs::remove_file(&relay_kc).ok();
    f.finish(vec![a, b]).await;
}
