//! No credential in the operator's log, at any level: `ebb operator --log-level=trace
//! --log-format=json` under the chart's RBAC against the real API server and RabbitMQ, with a
//! RabbitMQ user whose password is a unique canary, given through a Secret (a host URL with
//! userinfo) and TriggerAuthentications, for one trigger over the management API (HTTP basic
//! auth) and one over AMQP (the `PLAIN` login). The object scales, the password changes at the
//! broker (polls are refused, the trigger fails), the Secret follows (it recovers); then the log
//! is searched for both passwords, raw, percent-encoded and base64-encoded (alone, as
//! `user:password` and as the Secret's values), and must hold none.
//!
//! It also checks what the log must hold: the start line, the trigger's failure and recovery
//! lines inside the spans naming the object and the trigger, the AMQP connection, and lines at
//! trace level (the filter really was trace).

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use base64::Engine as _;
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
use serde_json::{Value, json};

/// Every form in which `secret` could leak into a log line: raw, percent-encoded, as a byte
/// list, in hex, in base64.
fn leak_forms(secret: &str) -> Vec<String> {
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = secret.as_bytes();
    let mut forms = vec![
        secret.to_string(),
        percent_encoded(secret),
        // `{:?}` of the bytes, as lapin prints the `PLAIN` login at trace.
        bytes.iter().map(u8::to_string).collect::<Vec<_>>().join(", "),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    forms.extend(engines.iter().map(|e| e.encode(secret)));
    forms
}

/// `text` with every byte outside RFC 3986's unreserved set as `%XX`.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn urls(env: &TestEnv, user: &str, password: &str) -> (String, String) {
    let http = format!("http://{user}:{password}@{}/%2F", admin(env).0);
    let amqp_url = env.var("EBB_RABBITMQ_AMQP_URL").unwrap();
    let amqp_authority = amqp_url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .map(|(_, host)| host.split('/').next().unwrap_or(host))
        .unwrap();
    (http, format!("amqp://{user}:{password}@{amqp_authority}/%2F"))
}

async fn put_secret(client: &kube::Client, ns: &str, http: &str, amqp: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rabbit"},
        "stringData": {"http": http, "amqp": amqp}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            "rabbit",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

fn read_log(ns: &str) -> String {
    std::fs::read_to_string(OperatorProcess::log_path(ns, "op")).unwrap_or_default()
}

/// The log's JSON lines with this message.
fn lines_with(log: &str, message: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

/// Whether the trigger at `index` fails now, by the log: its last failing/recovered line.
fn failing_now(log: &str, index: u64) -> bool {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["spans"][1]["trigger_index"] == index)
        .filter_map(|l| match l["message"].as_str() {
            Some("trigger failing") => Some(true),
            Some("trigger recovered") => Some(false),
            _ => None,
        })
        .next()
        .unwrap_or(false)
}

#[tokio::test]
async fn no_credential_reaches_the_log_even_at_trace() {
    let env = TestEnv::load().await.unwrap();
    install_crds(&env.client).await.unwrap();
    let ns = env.namespace("e2e-logs").await.unwrap();
    let rbac = ChartRbac::install(&env, &ns.name, "ebb-logs", &[]).await;
    let user = unique_name("ebb-canary");
    // `!` and `*` are encoded by percent-encoding and fine raw in a URL's userinfo.
    let first = format!("{}!c4n*", unique_name("pw1"));
    let second = format!("{}!c4n*", unique_name("pw2"));
    let metrics = free_local_addr();
    let args = [
        "--lease-name",
        rbac.lease_name.as_str(),
        "--log-level=trace",
        "--log-format=json",
    ];
    let operator = OperatorProcess::start_with(&rbac.identity.kubeconfig, &metrics, &ns.name, "op", &args)
        .await
        .unwrap();
    let client = env.client.clone();
    let ns_name = ns.name.clone();
    let outcome = AssertUnwindSafe(async {
        let users = format!("/api/users/{user}");
        let set_password =
            |password: &str| json!({"password": password, "tags": "management"});
        assert_eq!(management(&env, "PUT", &users, Some(set_password(&first))).await / 100, 2);
        let perms = format!("/api/permissions/%2F/{user}");
        let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
        assert_eq!(management(&env, "PUT", &perms, Some(all)).await / 100, 2);
        let test_queue = TestQueue::create(&env, "ebb-logs-q").await;
        test_queue.publish(3).await;
        let (http, amqp) = urls(&env, &user, &first);
        put_secret(&client, &ns_name, &http, &amqp).await;
        let tas: Api<TriggerAuthentication> = Api::namespaced(client.clone(), &ns_name);
        for (name, key) in [("rabbit-http", "http"), ("rabbit-amqp", "amqp")] {
            let ta: TriggerAuthentication = serde_json::from_value(json!({
                "apiVersion": "ebb.dev/v1alpha1", "kind": "TriggerAuthentication",
                "metadata": {"name": name},
                "spec": {"secretTargetRef": [{"parameter": "host", "name": "rabbit", "key": key}]}
            }))
            .unwrap();
            tas.create(&PostParams::default(), &ta).await.unwrap();
        }
        deployment(&client, &ns_name, "consumer", 0).await.unwrap();
        let queue = test_queue.name.clone();
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "consumer"},
            "spec": {"scaleTargetRef": {"name": "consumer"}, "pollingInterval": 2, "cooldownPeriod": 300,
                "triggers": [
                    {"type": "rabbitmq", "authenticationRef": {"name": "rabbit-http"},
                     "metadata": {"protocol": "http", "mode": "QueueLength", "value": "5", "queueName": queue}},
                    {"type": "rabbitmq", "authenticationRef": {"name": "rabbit-amqp"},
                     "metadata": {"protocol": "amqp", "mode": "QueueLength", "value": "5", "queueName": queue}}
                ]}
        }))
        .unwrap();
        let sos: Api<ScaledObject> = Api::namespaced(client.clone(), &ns_name);
        sos.create(&PostParams::default(), &so).await.unwrap();
        wait_for("consumer scaled to 1", Duration::from_secs(60), || async {
            (replicas(&client, &ns_name, "consumer").await.ok()? == 1).then_some(())
        })
        .await
        .unwrap();
        // The management API counts messages only after its statistics round: the HTTP
        // trigger may fail at first.
        wait_for("the HTTP trigger answering", Duration::from_secs(60), || async {
            (!failing_now(&read_log(&ns_name), 0)).then_some(())
        })
        .await
        .unwrap();
        // The broker refuses the old password: the HTTP trigger fails (an open AMQP connection
        // stays logged in), and ebb reads the Secret again (the same one).
        assert_eq!(management(&env, "PUT", &users, Some(set_password(&second))).await / 100, 2);
        wait_for("the refusal in the log", Duration::from_secs(30), || async {
            let log = read_log(&ns_name);
            let refused = !lines_with(&log, "credentials refused: resolving them again").is_empty();
            (refused && failing_now(&log, 0)).then_some(())
        })
        .await
        .unwrap();
        let (http, amqp) = urls(&env, &user, &second);
        put_secret(&client, &ns_name, &http, &amqp).await;
        wait_for("the trigger recovered in the log", Duration::from_secs(30), || async {
            (!failing_now(&read_log(&ns_name), 0)).then_some(())
        })
        .await
        .unwrap();
        test_queue.delete().await;
    })
    .catch_unwind()
    .await;
    operator.terminate().await;
    let _ = management(&env, "DELETE", &format!("/api/users/{user}"), None).await;
    rbac.delete(&env.client).await;
    let _ = ns.delete().await;
    // Searched even when a step failed: a leak is the first thing to know.
    let log = read_log(&ns_name);
    let mut secrets = vec![first.clone(), second.clone()];
    for password in [&first, &second] {
        secrets.push(format!("{user}:{password}"));
        secrets.push(format!("\0{user}\0{password}"));
        let (http, amqp) = urls(&env, &user, password);
        secrets.extend([http, amqp]);
    }
    for secret in &secrets {
        for form in leak_forms(secret) {
            if let Some(line) = log.lines().find(|l| l.contains(&form)) {
                panic!("a credential ({form:?}) is in the log: {line}");
            }
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    // The log is the one asked for: trace, JSON, and it saw what this test did.
    assert!(
        log.contains(r#""level":"TRACE""#),
        "no trace line: the filter was not trace"
    );
    let start = lines_with(&log, "ebb operator starting");
    assert_eq!(start.len(), 1, "one start line");
    assert!(start[0]["version"].is_string(), "{}", start[0]);
    assert!(
        !lines_with(&log, "AMQP connection opened").is_empty(),
        "no AMQP connection line"
    );
    let failing = lines_with(&log, "trigger failing");
    let spans = failing[0]["spans"].as_array().expect("spans on the line");
    let poll = spans.iter().find(|s| s["name"] == "poll").expect("the poll span");
    assert_eq!(
        (&poll["kind"], &poll["namespace"], &poll["object"]),
        (&json!("ScaledObject"), &json!(ns_name), &json!("consumer"))
    );
    let trigger = spans
        .iter()
        .find(|s| s["name"] == "trigger")
        .expect("the trigger span");
    assert_eq!(trigger["trigger_type"], "rabbitmq");
    assert_eq!(trigger["trigger_index"], 0, "the management trigger failed");
    // One line per transition: failing and recovered alternate for each trigger.
    let mut last: [Option<String>; 2] = [None, None];
    for line in log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        let message = line["message"].as_str().unwrap_or_default();
        if !matches!(message, "trigger failing" | "trigger recovered") {
            continue;
        }
        let index = line["spans"][1]["trigger_index"].as_u64().expect("trigger_index") as usize;
        assert_ne!(last[index].as_deref(), Some(message), "twice in a row: {line}");
        last[index] = Some(message.to_string());
    }
}
