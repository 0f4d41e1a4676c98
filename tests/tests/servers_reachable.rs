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

#[tokio::test]
async fn data_servers_answer() {
    let env = TestEnv::load().await.unwrap();
    // Prometheus: ready, and the PromQL API evaluates a query.
    let prometheus = host_port(env.var("EBB_PROMETHEUS_URL").unwrap());
    let (code, body) = http_get(&prometheus, "/api/v1/query?query=vector(42)", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(r#""status":"success""#) && body.contains(r#""42""#),
        "{body}"
    );
    assert!(
        std::path::Path::new(env.var("EBB_PROMETHEUS_TARGETS_DIR").unwrap()).is_dir(),
        "the file_sd directory tests register their targets in"
    );
    // Redis: PING in RESP.
    let mut redis = TcpStream::connect(env.var("EBB_REDIS_ADDRESS").unwrap())
        .await
        .expect("redis port");
    redis.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    redis.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    // PostgreSQL: an SSLRequest is answered with one byte, `N` (no TLS on the test server).
    let pg = format!(
        "{}:{}",
        env.var("EBB_POSTGRES_HOST").unwrap(),
        env.var("EBB_POSTGRES_PORT").unwrap()
    );
    let mut postgres = TcpStream::connect(&pg).await.expect("postgres port");
    postgres
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    postgres.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'N');
}
