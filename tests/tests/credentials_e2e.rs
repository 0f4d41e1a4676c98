//! Credentials that rotate, end to end: `ebb operator` under the chart's RBAC (Secrets `get`
//! only) against the real API server and RabbitMQ. A RabbitMQ user's password is changed at the
//! broker after its Secret was updated, and the object keeps scaling with no restart and no change
//! to the ScaledObject; a TriggerAuthentication edited to read another Secret is used at once; the
//! authentication's status lists its users and the object's status names its authentications.
//!
//! Every step runs under `catch_unwind`, so a failed step still stops the operator and removes
//! the namespace, the RabbitMQ user and the cluster-wide RBAC objects.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use ebb_crds::{ScaledObject, TriggerAuthentication};
use ebb_tests::chart_rbac::ChartRbac;
use ebb_tests::kafka::unique_name;
use ebb_tests::leader::free_local_addr;
use ebb_tests::objects::{deployment, replicas};
use ebb_tests::operator::OperatorProcess;
use ebb_tests::rabbitmq::{TestQueue, admin, management};
use ebb_tests::{TestEnv, install_crds, wait_for};
use futures::FutureExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `ebb_polls_total{trigger_type="rabbitmq",result}` and
/// `ebb_poll_errors_total{trigger_type="rabbitmq",kind="unauthorized"}` from `/metrics`.
async fn poll_counts(addr: &str) -> Option<(u64, u64)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    let value = |prefix: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    };
    Some((
        value(r#"ebb_polls_total{trigger_type="rabbitmq",result="ok"}"#),
        value(r#"ebb_poll_errors_total{trigger_type="rabbitmq",kind="unauthorized"}"#),
    ))
}

fn host_of(env: &TestEnv, user: &str, password: &str, vhost: &str) -> String {
    format!("http://{user}:{password}@{}/{vhost}", admin(env).0)
}

async fn put_secret(client: &kube::Client, ns: &str, name: &str, host: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"host": host}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&secret))
        .await
        .unwrap();
}

/// The rabbitmq trigger's health in the status: (status, failures).
async fn health(api: &Api<ScaledObject>, name: &str) -> Option<(String, i32)> {
    let status = api.get(name).await.ok()?.status?;
    let (_, h) = status.health.into_iter().next()?;
    Some((format!("{:?}", h.status), h.number_of_failures))
}

/// What the steps after the common setup share.
struct Ctx<'a> {
    env: &'a TestEnv,
    client: kube::Client,
    ns: String,
    user: String,
    metrics: String,
    channel: lapin::Channel,
    queue: String,
    sos: Api<ScaledObject>,
    tas: Api<TriggerAuthentication>,
}

/// Which test runs after the common setup.
enum Case {
    /// Rotation with `get`-only Secrets, then an edited TriggerAuthentication.
    Rotation,
    /// `--watch-secrets`: a Secret changed alone is used at once.
    WatchSecrets,
}

#[tokio::test]
async fn rotated_credentials_are_used_without_a_restart_or_an_edit() {
    run(Case::Rotation).await;
}

#[tokio::test]
async fn with_the_secret_watch_a_changed_secret_is_used_at_once() {
    run(Case::WatchSecrets).await;
}

/// The common setup: a RabbitMQ user of its own, a queue with 3 messages, a Secret, a
/// TriggerAuthentication, a ScaledObject scaled to 1; then the case; then the cleanup.
async fn run(case: Case) {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("e2e-cred").await.unwrap();
    let sets: &[&str] = match case {
        Case::Rotation => &[],
        Case::WatchSecrets => &["credentials.watchSecrets=true"],
    };
    let rbac = ChartRbac::install(&env, &ns.name, "ebb-cred", sets).await;
    let mut args = vec!["--lease-name", rbac.lease_name.as_str()];
    if matches!(case, Case::WatchSecrets) {
        args.push("--watch-secrets=true");
    }
    let user = unique_name("ebb-cred");
    let metrics = free_local_addr();
    let operator = OperatorProcess::start_with(&rbac.identity.kubeconfig, &metrics, &ns.name, "op", &args)
        .await
        .unwrap();
    let client = env.client.clone();
    let outcome = AssertUnwindSafe(async {
        // A user of its own, allowed to read the default vhost's queues.
        let users = format!("/api/users/{user}");
        assert_eq!(
            management(&env, "PUT", &users, Some(json!({"password": "first-pass", "tags": "management"}))).await / 100,
            2
        );
        let perms = format!("/api/permissions/%2F/{user}");
        let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
        assert_eq!(management(&env, "PUT", &perms, Some(all)).await / 100, 2);
        let test_queue = TestQueue::create(&env, "ebb-cred-q").await;
        test_queue.publish(3).await;
        let (channel, queue) = (test_queue.channel.clone(), test_queue.name.clone());
        let ns_name = ns.name.clone();
        put_secret(&client, &ns_name, "rabbit", &host_of(&env, &user, "first-pass", "%2F")).await;
        let ta: TriggerAuthentication = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": "rabbit-auth"},
            "spec": {"secretTargetRef": [{"parameter": "host", "name": "rabbit", "key": "host"}]}
        }))
        .unwrap();
        let tas: Api<TriggerAuthentication> = Api::namespaced(client.clone(), &ns_name);
        tas.create(&PostParams::default(), &ta).await.unwrap();
        deployment(&client, &ns_name, "consumer", 0).await.unwrap();
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "consumer"},
            "spec": {"scaleTargetRef": {"name": "consumer"}, "pollingInterval": 2, "cooldownPeriod": 0,
                "triggers": [{"type": "rabbitmq", "authenticationRef": {"name": "rabbit-auth"},
                    "metadata": {"protocol": "http", "mode": "QueueLength", "value": "5", "queueName": queue}}]}
        }))
        .unwrap();
        let sos: Api<ScaledObject> = Api::namespaced(client.clone(), &ns_name);
        sos.create(&PostParams::default(), &so).await.unwrap();
        // Active: the management API counts the messages (after its statistics round).
        wait_for("consumer scaled to 1", Duration::from_secs(60), || async {
            (replicas(&client, &ns_name, "consumer").await.ok()? == 1).then_some(())
        })
        .await
        .unwrap();
        let status = sos.get("consumer").await.unwrap().status.unwrap();
        assert_eq!(status.authentications_types.as_deref(), Some("rabbit-auth"));
        assert_eq!(status.triggers_types.as_deref(), Some("rabbitmq"));
        wait_for("the TriggerAuthentication lists its user", Duration::from_secs(20), || async {
            let ta = tas.get("rabbit-auth").await.ok()?;
            (ta.status?.scaledobjects.as_deref() == Some("consumer")).then_some(())
        })
        .await
        .unwrap();

        let ctx = Ctx {
            env: &env,
            client: client.clone(),
            ns: ns_name.clone(),
            user: user.clone(),
            metrics: metrics.clone(),
            channel: channel.clone(),
            queue: queue.clone(),
            sos,
            tas,
        };
        match case {
            Case::Rotation => rotation(&ctx).await,
            Case::WatchSecrets => watch_secrets(&ctx).await,
        }
        test_queue.delete().await;
    })
    .catch_unwind()
    .await;
    operator.terminate().await;
    let _ = management(&env, "DELETE", &format!("/api/users/{user}"), None).await;
    rbac.delete(&env.client).await;
    let _ = ns.delete().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The broker refuses the old password, the Secret changes, the new one is used; then an edited
/// TriggerAuthentication is used at once.
async fn rotation(ctx: &Ctx<'_>) {
    let Ctx {
        env,
        client,
        ns: ns_name,
        user,
        metrics,
        channel,
        queue,
        sos,
        tas,
    } = ctx;
    let (env, ns_name) = (*env, ns_name.as_str());
    let users = format!("/api/users/{user}");
    let before = sos.get("consumer").await.unwrap();
    // Rotation at the broker first: the old password is refused (ebb reads the Secret again,
    // still the old one), then the Secret changes. ebb cannot watch it (`get` only).
    let (_, refused_before) = poll_counts(metrics).await.expect("/metrics");
    assert_eq!(
        management(
            env,
            "PUT",
            &users,
            Some(json!({"password": "second-pass", "tags": "management"}))
        )
        .await
            / 100,
        2
    );
    let rotated = Instant::now();
    wait_for("the old password is refused", Duration::from_secs(15), || async {
        let (_, refused) = poll_counts(metrics).await?;
        (refused > refused_before).then_some(())
    })
    .await
    .unwrap();
    let refused_after = rotated.elapsed();
    let (ok_before, _) = poll_counts(metrics).await.unwrap();
    put_secret(
        client,
        ns_name,
        "rabbit",
        &host_of(env, user, "second-pass", "%2F"),
    )
    .await;
    let changed = Instant::now();
    wait_for(
        "a poll with the new password",
        Duration::from_secs(20),
        || async {
            let (ok, _) = poll_counts(metrics).await?;
            (ok > ok_before).then_some(())
        },
    )
    .await
    .unwrap();
    let in_use = changed.elapsed();
    eprintln!(
        "rotation: the old password refused {:.2} s after the broker changed it; the new one in use {:.2} s after the Secret changed",
        refused_after.as_secs_f64(),
        in_use.as_secs_f64()
    );
    assert!(in_use < Duration::from_secs(10), "{in_use:?}");
    let log = std::fs::read_to_string(OperatorProcess::log_path(ns_name, "op")).unwrap_or_default();
    assert!(log.contains("credentials refused: resolving them again"), "{log}");
    // Still scaling: the queue empties, the object goes to 0, on the new password.
    channel
        .queue_purge(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    wait_for(
        "consumer scaled to 0 after the rotation",
        Duration::from_secs(60),
        || async { (replicas(client, ns_name, "consumer").await.ok()? == 0).then_some(()) },
    )
    .await
    .unwrap();
    let after = sos.get("consumer").await.unwrap();
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "the ScaledObject was not edited"
    );

    // A TriggerAuthentication edited to read another Secret: used at once (no refusal
    // involved: that Secret names a vhost that does not exist, so the polls now fail).
    put_secret(
        client,
        ns_name,
        "rabbit-other",
        &host_of(env, user, "second-pass", "no-such-vhost"),
    )
    .await;
    let (status_before, _) = health(sos, "consumer").await.unwrap();
    assert_eq!(status_before, "Happy");
    let edited = Instant::now();
    tas.patch(
            "rabbit-auth",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secretTargetRef": [{"parameter": "host", "name": "rabbit-other", "key": "host"}]}})),
        )
        .await
        .unwrap();
    wait_for(
        "the edited authentication is used",
        Duration::from_secs(15),
        || async {
            let (status, failures) = health(sos, "consumer").await?;
            (status == "Failing" && failures > 0).then_some(())
        },
    )
    .await
    .unwrap();
    eprintln!(
        "TriggerAuthentication edit used after {:.2} s",
        edited.elapsed().as_secs_f64()
    );
    assert_eq!(
        replicas(client, ns_name, "consumer").await.unwrap(),
        0,
        "an error never scales"
    );
}

/// With `--watch-secrets`, a Secret changed alone (no refusal: it names a vhost that does not
/// exist, and nothing else reconciles the object) is read again at once.
async fn watch_secrets(ctx: &Ctx<'_>) {
    wait_for("the trigger is healthy", Duration::from_secs(15), || async {
        (health(&ctx.sos, "consumer").await?.0 == "Happy").then_some(())
    })
    .await
    .unwrap();
    let changed = Instant::now();
    put_secret(
        &ctx.client,
        &ctx.ns,
        "rabbit",
        &host_of(ctx.env, &ctx.user, "first-pass", "no-such-vhost"),
    )
    .await;
    wait_for("the changed Secret is used", Duration::from_secs(15), || async {
        let (status, failures) = health(&ctx.sos, "consumer").await?;
        (status == "Failing" && failures > 0).then_some(())
    })
    .await
    .unwrap();
    eprintln!(
        "watched Secret used after {:.2} s",
        changed.elapsed().as_secs_f64()
    );
    assert_eq!(
        replicas(&ctx.client, &ctx.ns, "consumer").await.unwrap(),
        1,
        "an error never scales"
    );
}
