//! `advanced.scalingModifiers` end to end: a RabbitMQ queue (`a`, through the management API)
//! and a NATS JetStream consumer (`b`) combined by `(a + b) / 2` with target 5, on the real API
//! server, its aggregation layer and kube-controller-manager's HPA.
//!
//! - The owned HPA has exactly one metric, `composite-metric` (AverageValue 5), and the adapter
//!   serves the formula's result through the aggregator.
//! - 30 messages in `a`, 10 in `b`: `(30 + 10) / 2 = 20` → ebb activates 0 → 1, the HPA goes to
//!   `ceil(20 / 5) = 4`. 20 consumed from `a`: `(10 + 10) / 2 = 10` → 2. The rest consumed: 0
//!   (not above activationTarget 0) → back to 0 after the cooldown.
//! - A formula naming no trigger gives Ready=False naming the field, and no HPA.
//! - `fallback.behavior: scalingModifiers` on two metrics-api sources (`primary ?? secondary ?? 8`):
//!   a failing source is replaced by the next, both failing by the constant; never 0.
//!
//! The external-metrics APIService is cluster-wide: this binary is in nextest's `apiservice`
//! test group (`.config/nextest.toml`), and [`AdapterCase`] takes the same locks as the other
//! binaries that register it.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use ebb_tests::adapter_case::AdapterCase;
use ebb_tests::rabbitmq::TestQueue;
use ebb_tests::source::MetricSource;
use ebb_tests::{TestEnv, wait_for};
use futures::StreamExt;
use serde_json::json;

/// Bound for anything that waits on the HPA (2 s sync) or RabbitMQ's statistics (~5 s lag).
const WITHIN: Duration = Duration::from_secs(90);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A JetStream stream with the durable pull consumer `worker`.
struct Stream {
    js: jetstream::Context,
    name: String,
    subject: String,
    consumer: consumer::PullConsumer,
}

impl Stream {
    async fn create(env: &TestEnv) -> Stream {
        let client = async_nats::connect(env.var("EBB_NATS_URL").unwrap())
            .await
            .unwrap_or_else(|e| panic!("NATS: {e}"));
        let js = jetstream::new(client);
        let name = unique("EBB_MODIFIERS").replace('-', "_").to_uppercase();
        let subject = name.to_lowercase();
        let consumer = ebb_tests::nats::stream_with_worker(&js, &name, &subject)
            .await
            .unwrap();
        Stream {
            js,
            name,
            subject,
            consumer,
        }
    }

    async fn publish(&self, n: usize) {
        for i in 0..n {
            self.js
                .publish(format!("{}.{i}", self.subject), format!("b {i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }

    async fn consume(&self, n: usize) {
        let mut done = 0;
        while done < n {
            let mut batch = self
                .consumer
                .fetch()
                .max_messages(n - done)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .unwrap();
            while let Some(message) = batch.next().await {
                message.unwrap().double_ack().await.unwrap();
                done += 1;
            }
        }
    }
}

/// A namespace and an operator serving external metrics through the aggregator, the APIService
/// held.
async fn start(prefix: &str) -> AdapterCase {
    AdapterCase::start(prefix, WITHIN, &[]).await
}

#[tokio::test]
async fn two_queues_combined_by_a_formula_drive_one_composite_metric() {
    let s = start("modifiers").await;
    let (env, ns) = (&s.env, &s.ns);
    s.deployment("worker", 0).await;
    s.deployment("broken", 0).await;
    let queue = TestQueue::create(env, "ebb-modifiers").await;
    let stream = Stream::create(env).await;

    let spec = json!({
    "scaleTargetRef": {"name": "worker"}, "pollingInterval": 1, "cooldownPeriod": 2,
    "maxReplicaCount": 10,
    "advanced": {"scalingModifiers": {"formula": "(a + b) / 2", "target": "5"}},
    "triggers": [
        {"type": "rabbitmq", "name": "a", "metadata": {
            "host": env.var("EBB_RABBITMQ_HTTP_URL").unwrap(), "protocol": "http",
            "mode": "QueueLength", "value": "1", "queueName": queue.name}},
        {"type": "nats-jetstream", "name": "b", "metadata": {
            "natsServerMonitoringEndpoint": env.var("EBB_NATS_MONITORING").unwrap(),
            "account": "$G", "stream": stream.name, "consumer": "worker", "lagThreshold": "1"}},
    ]});
    s.create("worker", spec).await;

    // One metric: the composite, with the formula's target.
    let hpa = wait_for("the HPA", WITHIN, || async { s.hpas().await.into_iter().next() })
        .await
        .unwrap();
    let metrics = hpa.data["spec"]["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    assert_eq!(metrics[0]["external"]["metric"]["name"], "composite-metric");
    assert_eq!(
        metrics[0]["external"]["target"],
        json!({"type": "AverageValue", "averageValue": "5"})
    );
    let (status, _, message) = s.wait_condition("worker", "Ready", "True").await;
    eprintln!("[{}] Ready={status}: {message}", ns.name);
    // The status names the triggers' metrics (health stays per trigger) and the composite, as KEDA's.
    let status = s.so_api().get("worker").await.unwrap().status.unwrap();
    assert_eq!(status.composite_scaler_name.as_deref(), Some("composite-metric"));
    assert_eq!(status.external_metric_names.len(), 2, "{status:?}");
    s.wait_metric("worker", "composite-metric", "0").await;
    assert_eq!(s.replicas("worker").await, 0);

    // (30 + 10) / 2 = 20 → ceil(20 / 5) = 4.
    let published = Instant::now();
    queue.publish(30).await;
    stream.publish(10).await;
    s.wait_replicas("worker", 4).await;
    eprintln!(
        "[{}] 30 + 10 messages → 4 replicas in {:?}",
        ns.name,
        published.elapsed()
    );
    s.wait_metric("worker", "composite-metric", "20").await;

    // (10 + 10) / 2 = 10 → 2.
    let consumed = Instant::now();
    queue.consume(20).await;
    s.wait_metric("worker", "composite-metric", "10").await;
    s.wait_replicas("worker", 2).await;
    eprintln!(
        "[{}] 20 consumed from a → 2 replicas in {:?}",
        ns.name,
        consumed.elapsed()
    );

    // Nothing left: 0, not above activationTarget 0 → back to 0 after the cooldown.
    let consumed = Instant::now();
    queue.consume(10).await;
    stream.consume(10).await;
    s.wait_replicas("worker", 0).await;
    eprintln!("[{}] all consumed → 0 in {:?}", ns.name, consumed.elapsed());
    let hpa_metrics = s.hpas().await[0].data["spec"]["metrics"].clone();
    assert_eq!(hpa_metrics.as_array().map(Vec::len), Some(1), "{hpa_metrics}");

    // A formula naming no trigger: Ready=False naming the field; no HPA for it.
    s.create(
        "broken",
        json!({"scaleTargetRef": {"name": "broken"},
               "advanced": {"scalingModifiers": {"formula": "a + c", "target": "5"}},
               "triggers": [{"type": "metrics-api", "name": "a", "metadata": {
                   "url": "http://127.0.0.1:1/x", "valueLocation": "v", "targetValue": "1"}}]}),
    )
    .await;
    let (_, _, message) = s.wait_condition("broken", "Ready", "False").await;
    assert_eq!(
        message,
        "spec.advanced.scalingModifiers.formula: \"c\" is not the name of a trigger (triggers: a)"
    );
    assert_eq!(s.hpas().await.len(), 1, "no HPA for the invalid object");

    let _ = stream.js.delete_stream(&stream.name).await;
    s.finish().await;
}

/// KEDA 2.20's `fallback.behavior: scalingModifiers` scenario on two metrics-api sources:
/// `primary ?? secondary ?? 8`, target 2. A source failing for `failureThreshold` polls is nil in
/// the formula; the count follows the substitute and never drops to 0.
#[tokio::test]
async fn failing_triggers_are_substituted_by_the_formula_never_zero() {
    let s = start("modifiers-fallback").await;
    let ns = &s.ns.name;
    s.deployment("worker", 0).await;
    let primary = MetricSource::start(6).await;
    let secondary = MetricSource::start(10).await;
    let trigger = |name: &str, source: &MetricSource| {
        json!({"type": "metrics-api", "name": name, "metadata": {
            "url": source.url, "valueLocation": "queue.depth", "targetValue": "2"}})
    };
    s.create(
        "worker",
        json!({
            "scaleTargetRef": {"name": "worker"}, "pollingInterval": 1, "cooldownPeriod": 0,
            "maxReplicaCount": 10,
            "fallback": {"failureThreshold": 2, "replicas": 4, "behavior": "scalingModifiers"},
            "advanced": {
                "scalingModifiers": {"formula": "primary ?? secondary ?? 8", "target": "2"},
                "horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}},
            "triggers": [trigger("primary", &primary), trigger("secondary", &secondary)]}),
    )
    .await;
    // primary 6 → 3 replicas.
    s.wait_replicas("worker", 3).await;
    s.wait_metric("worker", "composite-metric", "6").await;

    // primary fails: after 2 polls it is nil, so secondary (10) → 5.
    primary.set_failing(true);
    let took = s.wait_replicas("worker", 5).await;
    eprintln!("[{ns}] primary failing → secondary's 10 → 5 replicas in {took:?}");
    s.wait_metric("worker", "composite-metric", "10").await;

    // Both fail: the formula's 8 → 4, and it stays there (never 0).
    secondary.set_failing(true);
    let took = s.wait_replicas("worker", 4).await;
    eprintln!("[{ns}] both failing → the constant 8 → 4 replicas in {took:?}");
    s.wait_metric("worker", "composite-metric", "8").await;
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(5) {
        assert_eq!(s.replicas("worker").await, 4, "held while both fail");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // primary is back: 6 → 3.
    primary.set_failing(false);
    let took = s.wait_replicas("worker", 3).await;
    eprintln!("[{ns}] primary back → 3 replicas in {took:?}");
    s.finish().await;
}
