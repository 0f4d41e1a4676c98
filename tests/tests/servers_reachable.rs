//! Every server of the test environment answers on loopback, with the protocol ebb will speak.

use std::time::Duration;

use ebb_tests::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bare HTTP/1.0 GET: returns the status code and body.
async fn http_get(host_port: &str, path: &str, basic_auth: Option<&str>) -> (u16, String) {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(host_port))
        .await
        .unwrap_or_else(|_| panic!("connect {host_port}: timeout"))
        .unwrap_or_else(|e| panic!("connect {host_port}: {e}"));
    let auth = basic_auth
        .map(|a| format!("Authorization: Basic {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host_port}\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    rest.split('/').next().unwrap().to_string()
}

#[tokio::test]
async fn api_server_answers_with_its_version() {
    let env = TestEnv::load().await.unwrap();
    let version = env.client.apiserver_version().await.unwrap();
    eprintln!(
        "control plane {} reports {}",
        env.kube_flavor(),
        version.git_version
    );
    assert_eq!(version.major, "1");
    assert!(
        version.git_version.starts_with("v1.20."),
        "{}",
        version.git_version
    );
}

#[tokio::test]
async fn brokers_answer() {
    let env = TestEnv::load().await.unwrap();
    // Kafka protocol (Tansu): the port accepts connections.
    TcpStream::connect(env.var("EBB_KAFKA_BOOTSTRAP").unwrap())
        .await
        .expect("kafka port");
    // RabbitMQ management API with the default guest user.
    let rabbit = host_port(env.var("EBB_RABBITMQ_HTTP_URL").unwrap());
    let (code, body) = http_get(&rabbit, "/api/overview", Some("Z3Vlc3Q6Z3Vlc3Q=")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("rabbitmq_version"), "{body}");
    TcpStream::connect(host_port(env.var("EBB_RABBITMQ_AMQP_URL").unwrap()))
        .await
        .expect("amqp port");
    // NATS monitoring reports JetStream enabled.
    let (code, body) = http_get(
        env.var("EBB_NATS_MONITORING").unwrap(),
        "/healthz?js-enabled-only=true",
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    TcpStream::connect(host_port(env.var("EBB_NATS_URL").unwrap()))
        .await
        .expect("nats client port");
    // moto's SQS server.
    let (code, _) = http_get(
        &host_port(env.var("EBB_SQS_ENDPOINT").unwrap()),
        "/moto-api/",
        None,
    )
    .await;
    assert_eq!(code, 200);
}
