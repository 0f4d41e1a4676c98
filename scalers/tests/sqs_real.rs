//! The aws-sqs-queue scaler against the test environment's SQS endpoint (moto): visible,
//! in-flight and delayed messages, the queue given by name and by URL, and errors.
//!
//! Needs `tests/env/testenv.sh up` (its env file: `$EBB_TESTENV_FILE` or
//! `~/.cache/ebb-testenv/run/env`); without it these tests fail, they never pass silently.

mod common;
use common::{testenv, unique, var};
use std::collections::BTreeMap;
use std::sync::Arc;

use ebb_scalers::parse_trigger;
use ebb_scalers::{Scaler, ScalerError, ScalerFactory, TriggerSample};

use ebb_tests::sqs::{KEY_ID, SECRET};

fn sdk_client(endpoint: &str, region: &str) -> aws_sdk_sqs::Client {
    ebb_tests::sqs::client(endpoint, region)
}

/// A queue with 10 messages sent, 1 sent with a 60 s delay, and 3 received (in flight for 5 min):
/// 7 visible, 3 in flight, 1 delayed.
async fn queue_with_backlog(sqs: &aws_sdk_sqs::Client) -> (String, String) {
    let name = unique("ebb-orders");
    let url = ebb_tests::sqs::create_queue(sqs, &name)
        .await
        .unwrap_or_else(|e| panic!("{e}; run `tests/env/testenv.sh up`"));
    for i in 0..10 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("order {i}"))
            .send()
            .await
            .unwrap();
    }
    sqs.send_message()
        .queue_url(&url)
        .message_body("later")
        .delay_seconds(60)
        .send()
        .await
        .unwrap();
    let mut received = 0;
    for _ in 0..10 {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(3 - received)
            .visibility_timeout(300)
            .send()
            .await
            .unwrap();
        received += out.messages().len() as i32;
        if received >= 3 {
            break;
        }
    }
    assert_eq!(received, 3);
    (name, url)
}

fn build(factory: &ScalerFactory, meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Arc<dyn Scaler> {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (meta, auth) = (map(meta), map(auth));
    let trigger = parse_trigger(0, "aws-sqs-queue", &meta, Some(&auth), None).unwrap();
    factory.build(&trigger).unwrap()
}

const KEYS: &[(&str, &str)] = &[("awsAccessKeyID", KEY_ID), ("awsSecretAccessKey", SECRET)];

#[tokio::test]
async fn visible_in_flight_and_delayed_by_name_and_by_url() {
    let env = testenv();
    let (endpoint, region) = (var(&env, "EBB_SQS_ENDPOINT"), var(&env, "EBB_AWS_REGION"));
    let sqs = sdk_client(endpoint, region);
    let (name, url) = queue_with_backlog(&sqs).await;
    let factory = ScalerFactory::default();

    for queue in [name.as_str(), url.as_str()] {
        let base = [
            ("queueURL", queue),
            ("awsRegion", region),
            ("awsEndpoint", endpoint),
        ];
        let cases: &[(&[(&str, &str)], f64)] = &[
            (&[("scaleOnInFlight", "false")], 7.0),
            (&[], 10.0),
            (&[("scaleOnDelayed", "true")], 11.0),
            (&[("scaleOnInFlight", "false"), ("scaleOnDelayed", "true")], 8.0),
        ];
        for (extra, expected) in cases {
            let meta: Vec<(&str, &str)> = base.iter().chain(extra.iter()).copied().collect();
            let scaler = build(&factory, &meta, KEYS);
            let sample = scaler.sample().await.unwrap();
            assert_eq!(sample.value, *expected, "{queue} {extra:?}");
            assert!(sample.active);
            assert_eq!(
                scaler.metric_target().target_value,
                5.0,
                "KEDA's default queueLength"
            );
        }
    }

    // KEDA's other spelling of the key id, and a session token.
    let scaler = build(
        &factory,
        &[
            ("queueURL", &name),
            ("awsRegion", region),
            ("awsEndpoint", endpoint),
        ],
        &[
            ("awsAccessKeyId", KEY_ID),
            ("awsSecretAccessKey", SECRET),
            ("awsSessionToken", "ebb-session-token"),
        ],
    );
    assert_eq!(scaler.sample().await.unwrap().value, 10.0);

    // Activity at the boundary: active only above activationQueueLength.
    for (threshold, active) in [("9", true), ("10", false), ("11", false)] {
        let scaler = build(
            &factory,
            &[
                ("queueURL", &url),
                ("awsRegion", region),
                ("awsEndpoint", endpoint),
                ("activationQueueLength", threshold),
            ],
            KEYS,
        );
        assert_eq!(
            scaler.sample().await.unwrap(),
            TriggerSample { value: 10.0, active },
            "activationQueueLength {threshold}"
        );
    }
    let _ = sqs.delete_queue().queue_url(&url).send().await;
}

#[tokio::test]
async fn a_wrong_queue_is_an_error_with_the_aws_code_and_no_credentials() {
    let env = testenv();
    let (endpoint, region) = (var(&env, "EBB_SQS_ENDPOINT"), var(&env, "EBB_AWS_REGION"));
    let factory = ScalerFactory::default();
    let missing = unique("ebb-missing");
    let missing_url = format!("{}/123456789012/{missing}", endpoint.trim_end_matches('/'));
    for queue in [missing.as_str(), missing_url.as_str()] {
        let scaler = build(
            &factory,
            &[
                ("queueURL", queue),
                ("awsRegion", region),
                ("awsEndpoint", endpoint),
            ],
            KEYS,
        );
        let e = scaler.sample().await.unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{text}");
        assert!(
            text.contains("NonExistentQueue") || text.contains("QueueDoesNotExist"),
            "{text}"
        );
        assert!(!text.contains(SECRET) && !text.contains(KEY_ID), "{text}");
        // Still an error on the next poll (a failed name lookup is not cached).
        assert!(scaler.sample().await.is_err());
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_an_error() {
    let _env = testenv();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let factory = ScalerFactory::default();
    let scaler = build(
        &factory,
        &[
            ("queueURL", "orders"),
            ("awsRegion", "us-east-1"),
            ("awsEndpoint", &endpoint),
        ],
        KEYS,
    );
    let e = scaler.sample().await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        matches!(e, ScalerError::Unreachable { .. } | ScalerError::Timeout { .. }),
        "{text}"
    );
    assert!(!text.contains(SECRET) && !text.contains(KEY_ID), "{text}");
}
