//! Test scaffolding for the folder's tests: a realistic `/jsz` document, a fake three-node
//! nats-server monitoring cluster on 127.0.0.1, .2 and .3, and scalers built against it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::config::NatsJetStreamConfig;
use super::lock;
use super::scaler::{NatsJetStreamClients, NatsJetStreamScaler};
use crate::metrics_api::MetricsApiClient;
use crate::params::tests_support::parse_meta;

/// A `/jsz` answer as nats-server 2.9 gives it, trimmed to a realistic subset.
pub(super) fn jsz_doc(
    cluster_size: Option<u64>,
    leader: Option<&str>,
    pending: u64,
    ack_pending: u64,
) -> Json {
    let mut consumer = json!({
        "stream_name": "ORDERS",
        "name": "worker",
        "created": "2024-01-01T00:00:00Z",
        "config": {"durable_name": "worker", "ack_policy": "explicit", "filter_subject": "orders.>"},
        "delivered": {"consumer_seq": 5, "stream_seq": 5},
        "ack_floor": {"consumer_seq": 3, "stream_seq": 3},
        "num_ack_pending": ack_pending,
        "num_redelivered": 0,
        "num_waiting": 0,
        "num_pending": pending,
    });
    if let Some(leader) = leader {
        consumer["cluster"] = json!({"name": "c1", "leader": leader, "replicas": []});
    }
    let mut doc = json!({
        "server_id": "NABC",
        "now": "2024-01-01T00:00:00Z",
        "config": {"max_memory": 1, "store_dir": "/js"},
        "memory": 0, "storage": 0, "streams": 2, "consumers": 2,
        "account_details": [
            {"name": "other", "id": "other", "stream_detail": null},
            {
                "name": "$G",
                "id": "$G",
                "stream_detail": [
                    {"name": "EVENTS", "state": {"messages": 1}, "consumer_detail": [
                        {"name": "worker", "num_pending": 999, "num_ack_pending": 999}
                    ]},
                    {
                        "name": "ORDERS",
                        "config": {"name": "ORDERS", "subjects": ["orders.>"]},
                        "state": {"messages": 20, "last_seq": 20},
                        "consumer_detail": [consumer],
                    },
                ],
            },
        ],
    });
    if let Some(size) = cluster_size {
        doc["meta_cluster"] = json!({"name": "c1", "leader": "nats-0", "cluster_size": size});
    }
    doc
}

/// What the fake cluster serves.
#[derive(Debug)]
pub(super) struct ClusterState {
    /// Index of the consumer's leader, if there is one.
    pub(super) leader: Option<usize>,
    /// Which nodes hold a replica of the consumer (and so report it).
    pub(super) replicas: [bool; 3],
    /// Nodes that answer 503.
    pub(super) down: [bool; 3],
    clustered: bool,
}

/// Three fake nats-server monitoring ports on 127.0.0.1, .2 and .3, all on the same port,
/// serving canned /varz and /jsz. Followers report stale numbers; the leader 15 + 2.
pub(super) struct FakeCluster {
    pub(super) port: u16,
    state: Arc<Mutex<ClusterState>>,
    hits: Arc<Mutex<Vec<(usize, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FakeCluster {
    pub(super) async fn start(clustered: bool) -> Self {
        let state = Arc::new(Mutex::new(ClusterState {
            leader: Some(1),
            replicas: [true; 3],
            down: [false; 3],
            clustered,
        }));
        let hits = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..50 {
            let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = first.local_addr().unwrap().port();
            let (Ok(second), Ok(third)) = (
                TcpListener::bind(("127.0.0.2", port)).await,
                TcpListener::bind(("127.0.0.3", port)).await,
            ) else {
                continue;
            };
            let tasks = [first, second, third]
                .into_iter()
                .enumerate()
                .map(|(node, listener)| {
                    let (state, hits) = (state.clone(), hits.clone());
                    tokio::spawn(async move {
                        while let Ok((sock, _)) = listener.accept().await {
                            tokio::spawn(serve(node, port, sock, state.clone(), hits.clone()));
                        }
                    })
                })
                .collect();
            return Self {
                port,
                state,
                hits,
                tasks,
            };
        }
        panic!("could not bind one port on 127.0.0.1, .2 and .3");
    }

    pub(super) fn set(&self, f: impl FnOnce(&mut ClusterState)) {
        f(&mut self.state.lock().unwrap());
    }

    pub(super) fn take_hits(&self) -> Vec<(usize, String)> {
        std::mem::take(&mut *self.hits.lock().unwrap())
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve(
    node: usize,
    port: u16,
    mut sock: TcpStream,
    state: Arc<Mutex<ClusterState>>,
    hits: Arc<Mutex<Vec<(usize, String)>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    hits.lock().unwrap().push((node, path.clone()));
    let (status, body) = {
        let s = state.lock().unwrap();
        let name = |i: usize| format!("nats-{i}");
        if s.down[node] {
            ("503 Service Unavailable", "{}".to_string())
        } else if path == "/varz" {
            let urls: Vec<String> = (1..=3).map(|i| format!("127.0.0.{i}:4222")).collect();
            let body = json!({
                "server_id": format!("N{node}"),
                "server_name": name(node),
                "port": 4222,
                "http_port": port,
                "connect_urls": urls,
                "cluster": {"name": "c1", "addr": "0.0.0.0", "cluster_port": 6222, "urls": []},
            });
            ("200 OK", body.to_string())
        } else if path == "/jsz" {
            assert_eq!(
                target, "/jsz?acc=%24G&config=true&consumers=true",
                "KEDA's query, account encoded"
            );
            let mut doc = if s.replicas[node] {
                let leader = s.leader.map(name);
                let (pending, ack) = if s.leader == Some(node) {
                    (15, 2)
                } else {
                    (100 + node as u64, 0)
                };
                jsz_doc(None, leader.as_deref().filter(|_| s.clustered), pending, ack)
            } else {
                json!({"account_details": [{"name": "$G", "id": "$G", "stream_detail": []}]})
            };
            if s.clustered {
                doc["meta_cluster"] = json!({"name": "c1", "leader": "nats-0", "cluster_size": 3});
            }
            ("200 OK", doc.to_string())
        } else {
            ("404 Not Found", "{}".to_string())
        }
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(reply.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// A scaler on the fake cluster, without the activity watcher (its requests would mix with
/// the polls' in the hit lists).
pub(super) fn scaler(port: u16) -> NatsJetStreamScaler {
    scaler_with(port, Duration::ZERO)
}

/// A scaler on the fake cluster whose watcher reads `/jsz` every `watch_tick` (zero: never);
/// lag threshold 5, activation threshold 16.
pub(super) fn scaler_with(port: u16, watch_tick: Duration) -> NatsJetStreamScaler {
    let http = Arc::new(MetricsApiClient::new(Duration::from_secs(2)).unwrap());
    let clients =
        Arc::new(NatsJetStreamClients::new(http, Duration::from_secs(2)).with_watch_tick(watch_tick));
    let endpoint = format!("127.0.0.1:{port}");
    let params = parse_meta(
        &crate::nats_jetstream::DECL,
        &[
            ("natsServerMonitoringEndpoint", endpoint.as_str()),
            ("account", "$G"),
            ("stream", "ORDERS"),
            ("consumer", "worker"),
            ("lagThreshold", "5"),
            ("activationLagThreshold", "16"),
        ],
    )
    .unwrap();
    NatsJetStreamScaler::new(clients, NatsJetStreamConfig::try_from(&params).unwrap())
}

/// The one cached consumer leader of `s`'s clients, as `"<name> <host:port>"`.
pub(super) fn cached(s: &NatsJetStreamScaler) -> Option<String> {
    let leaders = lock(&s.clients.leaders.0);
    assert!(leaders.len() <= 1);
    leaders
        .values()
        .next()
        .map(|l| format!("{} {}", l.name, l.authority))
}
