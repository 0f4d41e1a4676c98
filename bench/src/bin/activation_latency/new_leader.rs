//! The case "a new leader, first message within the first interval": the first activation after
//! an operator start or a failover, as a new user meets it. A rabbitmq trigger over AMQP with its
//! credentials in a Secret, through a TriggerAuthentication, at the defaults (pollingInterval
//! 30 s). After a start, the scale loops' first polls are spread over one polling interval; this
//! case measures whether an object at zero still activates at once when its first message comes
//! before its first poll.
//!
//! Each sample: a Deployment at 0, its ScaledObject and queue are set up and Ready under the
//! running operator; the operator is stopped (SIGTERM, which releases the Lease) and a new one
//! started; once the Lease names it, one message is published a few seconds later (uniformly at
//! random within [`DELAY_MIN`]..[`DELAY_MAX`], well within the 30 s interval); t0 just before the
//! publish, t1 at the first Deployment watch event with 1 replica. The sample's objects and
//! queue are deleted before the next. `EBB_BENCH_NEW_LEADER_SAMPLES` (default 15) sets the count.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use ebb_bench::quantile_ms;
use ebb_crds::{ScaledObject, TriggerAuthentication};
use ebb_tests::kafka::unique_name;
use ebb_tests::objects::deployment;
use ebb_tests::operator::OperatorProcess;
use ebb_tests::{TestEnv, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use lapin::ConnectionProperties;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};

use crate::schedule::Rng;
use crate::sources::{Publisher, authority};
use crate::{POLLING_INTERVAL, SeenMap, TARGET, condition, figures, seen_lock, shown_trigger};

/// The case's name in the result file and in `EBB_BENCH_SCALERS`.
pub(crate) const NAME: &str = "rabbitmq-new-leader";
/// The earliest publish after the new operator leads.
const DELAY_MIN: Duration = Duration::from_secs(2);
/// The latest publish after the new operator leads.
const DELAY_MAX: Duration = Duration::from_secs(8);
/// How long a sample may take before it counts as never activated (beyond one interval).
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// The Lease `ebb operator` takes in the namespace it watches.
const LEASE: &str = "ebb-operator";

/// How many samples (operator restarts) to take.
pub(crate) fn samples() -> usize {
    std::env::var("EBB_BENCH_NEW_LEADER_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15usize)
        .max(1)
}

/// Waits until the Lease names `identity`; the moment it was first seen.
async fn leads(leases: &Api<Lease>, identity: &str) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holder = leases
            .get_opt(LEASE)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() == Some(identity) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(anyhow!("{identity} did not lead within 60 s (holder {holder:?})"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(user, password)` of an `amqp://user:password@host:port/vhost` URL.
fn credentials(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (userinfo, _) = rest
        .rsplit_once('@')
        .ok_or_else(|| anyhow!("no credentials in the RabbitMQ URL"))?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    Ok((user.to_string(), password.to_string()))
}

/// One sample's outcome.
struct Sample {
    delay: Duration,
    latency: Option<Duration>,
}

/// Measures the case; its section of the result file.
pub(crate) async fn measure(
    env: &TestEnv,
    ns: &str,
    seen: &SeenMap,
    n: usize,
    rng: &mut Rng,
) -> anyhow::Result<Value> {
    let client = env.client.clone();
    let amqp_url = env.var("EBB_RABBITMQ_AMQP_URL")?.to_string();
    let (user, password) = credentials(&amqp_url)?;
    let host = format!("amqp://{}/%2f", authority(&amqp_url));
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rabbit-credentials"},
        "stringData": {"username": user, "password": password}
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let auth: TriggerAuthentication = serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": "rabbit-credentials"},
        "spec": {"secretTargetRef": [
            {"parameter": "username", "name": "rabbit-credentials", "key": "username"},
            {"parameter": "password", "name": "rabbit-credentials", "key": "password"}]}
    }))?;
    Api::<TriggerAuthentication>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &auth)
        .await?;
    let connection = lapin::Connection::connect(&amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {}", authority(&amqp_url)))?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;

    let so_api: Api<ScaledObject> = Api::namespaced(client.clone(), ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let mut operator = OperatorProcess::start(env, ns, "bench-nl-0", &[]).await?;
    leads(&leases, "bench-nl-0").await?;
    let mut results = Vec::with_capacity(n);
    let mut trigger_example = Value::Null;
    for i in 0..n {
        let name = format!("nl-{i}");
        let queue = unique_name("ebb-bench-nl");
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
            .await?;
        let trigger = json!({"type": "rabbitmq",
            "metadata": {"host": host, "mode": "QueueLength", "value": "5", "queueName": queue},
            "authenticationRef": {"name": "rabbit-credentials"}});
        trigger_example = shown_trigger(&trigger);
        deployment(&client, ns, &name, 0).await?;
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"name": name}, "triggers": [trigger]}}))?;
        wait_for("ScaledObject created", Duration::from_secs(30), || async {
            so_api.create(&PostParams::default(), &so).await.ok().map(|_| ())
        })
        .await?;
        wait_for(
            "the ScaledObject Ready at 0",
            Duration::from_secs(120),
            || async {
                let so = so_api.get_opt(&name).await.ok()??;
                let ready = condition(&so, "Ready").is_some_and(|(s, _)| s == "True");
                let at_zero = seen_lock(seen).get(&name).is_some_and(|s| s.replicas == 0);
                (ready && at_zero).then_some(())
            },
        )
        .await?;

        // The failover: the leader goes (releasing the Lease), a new operator takes over.
        let _ = operator.terminate().await;
        let identity = format!("bench-nl-{}", i + 1);
        operator = OperatorProcess::start(env, ns, &identity, &[]).await?;
        let leading = leads(&leases, &identity).await?;
        let delay = DELAY_MIN + (DELAY_MAX - DELAY_MIN).mul_f64(rng.unit());
        tokio::time::sleep_until((leading + delay).into()).await;
        let publisher = Publisher::Rabbit {
            channel: channel.clone(),
            queue: queue.clone(),
        };
        let t0 = Instant::now();
        publisher.publish().await?;
        let deadline = t0 + GIVE_UP_AFTER;
        let latency = loop {
            let up = seen_lock(seen).get(&name).and_then(|s| s.first_up);
            match up {
                Some(t1) if t1 >= t0 => break Some(t1 - t0),
                Some(_) => return Err(anyhow!("{name} activated before its message")),
                None if Instant::now() > deadline => break None,
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        eprintln!(
            "[{NAME}] sample {i}: published {:.1} s after leading, activated after {}",
            delay.as_secs_f64(),
            latency.map_or("never".to_string(), |l| format!("{} ms", l.as_millis()))
        );
        results.push(Sample { delay, latency });
        let _ = so_api.delete(&name, &DeleteParams::default()).await;
        publisher.cleanup().await;
    }
    let _ = operator.terminate().await;
    let wanted: HashSet<String> = (0..n).map(|i| format!("nl-{i}")).collect();
    ebb_bench::wait_scaled_objects_gone(&so_api, &wanted).await;

    let mut latencies: Vec<Duration> = results.iter().filter_map(|s| s.latency).collect();
    latencies.sort();
    let never = results.iter().filter(|s| s.latency.is_none()).count();
    let p99 = quantile_ms(&latencies, 0.99);
    let met = never == 0 && !latencies.is_empty() && p99 < TARGET.as_secs_f64() * 1000.0;
    let mut section = figures(&latencies);
    section["samples"] = json!(n);
    section["never_activated"] = json!(never);
    section["publish_after_leading_s"] =
        json!({"min": DELAY_MIN.as_secs(), "max": DELAY_MAX.as_secs(), "drawn": "uniformly, per sample"});
    section["per_sample"] = json!(
        results
            .iter()
            .map(|s| json!({
                "published_after_leading_ms": s.delay.as_millis() as u64,
                "activation_ms": s.latency.map(|l| (l.as_secs_f64() * 10_000.0).round() / 10.0),
            }))
            .collect::<Vec<_>>()
    );
    section["route"] = json!(format!(
        "AMQP passive queue.declare (mode QueueLength, value 5), credentials from a Secret through a TriggerAuthentication; one object per sample, set up under the previous leader; the operator restarted (SIGTERM, new process) before each sample; pollingInterval {} s (default)",
        POLLING_INTERVAL.as_secs()
    ));
    section["trigger_example"] = trigger_example;
    section["target_met"] = json!(met);
    section["limited_by"] = if met {
        Value::Null
    } else if never > 0 {
        json!(format!(
            "{never} samples never activated within {} s",
            GIVE_UP_AFTER.as_secs()
        ))
    } else {
        json!(
            "the first poll after a start is spread over the polling interval, and activation waited for it"
        )
    };
    eprintln!(
        "[{NAME}] p50 {:.0} ms, p99 {:.0} ms, {} of {n} activated",
        quantile_ms(&latencies, 0.5),
        p99,
        latencies.len()
    );
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_url() {
        assert_eq!(
            credentials("amqp://guest:pw@127.0.0.1:5672/%2f").unwrap(),
            ("guest".to_string(), "pw".to_string())
        );
        assert!(credentials("amqp://127.0.0.1:5672/").is_err());
    }
}
