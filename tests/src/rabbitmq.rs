//! A RabbitMQ queue made for one test on the test environment's broker: declared with an expiry
//! (leftovers of a failed run vanish by themselves), filled with confirmed publishes and drained
//! with acknowledged gets, so the broker's counts are exact when a call returns.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::TestEnv;
use crate::kafka::unique_name;

/// A queue of the test's own, and the AMQP channel (as the environment's admin) that feeds it.
pub struct TestQueue {
    _connection: Connection,
    /// The channel (publisher confirms on).
    pub channel: Channel,
    /// The queue's name.
    pub name: String,
}

impl TestQueue {
    /// Declares a queue named after `prefix` (expiring after 10 idle minutes).
    pub async fn create(env: &TestEnv, prefix: &str) -> TestQueue {
        let url = env.var("EBB_RABBITMQ_AMQP_URL").unwrap();
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ: {e}"));
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let name = unique_name(prefix);
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
        channel
            .queue_declare(name.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
        TestQueue {
            _connection: connection,
            channel,
            name,
        }
    }

    /// Publishes `n` messages, each confirmed by the broker.
    pub async fn publish(&self, n: usize) {
        for i in 0..n {
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.name.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("job {i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack(), "publish {i} not confirmed: {confirm:?}");
        }
    }

    /// Takes and acknowledges `n` messages.
    pub async fn consume(&self, n: usize) {
        for i in 0..n {
            let message = self
                .channel
                .basic_get(self.name.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("message {i} of {n} missing from {}", self.name));
            message.ack(BasicAckOptions::default()).await.unwrap();
        }
    }

    /// Deletes the queue (failures ignored: it expires anyway).
    pub async fn delete(self) {
        let _ = self
            .channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

/// RabbitMQ's management API as the test environment's admin: `(authority, "user:password")`.
pub fn admin(env: &TestEnv) -> (String, String) {
    let url = env.var("EBB_RABBITMQ_HTTP_URL").unwrap();
    let rest = url.split_once("://").unwrap().1;
    let (userinfo, authority) = rest.rsplit_once('@').unwrap();
    (authority.trim_end_matches('/').to_string(), userinfo.to_string())
}

/// One request to the management API as the admin; returns the status code.
pub async fn management(env: &TestEnv, method: &str, path: &str, body: Option<serde_json::Value>) -> u16 {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (authority, userinfo) = admin(env);
    let token = base64::engine::general_purpose::STANDARD.encode(userinfo);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Basic {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
