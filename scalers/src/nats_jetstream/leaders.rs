//! Reading a consumer's lag through the monitoring port, and in a cluster finding and caching the
//! monitoring endpoint of the consumer's leader (the only node whose numbers are right).
//!
//! The leader is found as KEDA does: the configured endpoint's `/varz` gives the nodes
//! (`connect_urls`, or, when the servers do not advertise, `cluster.urls` plus `server_name`
//! with the headless-service naming `<node>.<endpoint host>`), each advertised node's `/varz`
//! gives its `server_name`, and the node whose name is the consumer's `cluster.leader` in its own
//! `/jsz` is the one read. That node is cached per (endpoint, account, stream, consumer) and asked
//! directly on the next polls until it stops reporting the consumer, reports another leader, or
//! cannot be reached: then the leader is found again.

use std::collections::HashMap;
use std::sync::Mutex;

use super::config::Monitoring;
use super::jsz::{ConsumerLag, JszView, Varz, read_jsz, read_varz};
use super::scaler::NatsJetStreamClients;
use super::{error_chain, lock};
use crate::ScalerError;
use crate::params::mask_userinfo;

/// Splits `host[:port]` (also `[v6]:port`) into host and port.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        if let Some(end) = authority.find(']') {
            let port = authority[end + 1..].strip_prefix(':').filter(|p| !p.is_empty());
            return (&authority[..=end], port);
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (host, Some(port))
        }
        _ => (authority, None),
    }
}

/// The host of a node address as `/varz` lists it (`host:port`, maybe with a scheme or
/// `user@`).
fn node_host(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    split_host_port(rest).0
}

/// One node to ask in leader discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    /// Its `server_name`, when known without asking its `/varz` (the non-advertised naming).
    name: Option<String>,
    /// Its monitoring `host:port`.
    authority: String,
}

impl Monitoring {
    /// The nodes to ask, from the configured endpoint's `/varz`, as KEDA finds them.
    fn candidates(&self, varz: &Varz) -> Vec<Candidate> {
        let (_, port) = split_host_port(&self.authority);
        let mut out: Vec<Candidate> = Vec::new();
        let mut push = |c: Candidate| {
            if !c.authority.is_empty() && !out.iter().any(|o| o.authority == c.authority) {
                out.push(c);
            }
        };
        if !varz.connect_urls.is_empty() {
            // Advertised client URLs: the node's host with the monitoring port; its name comes
            // from its own /varz.
            for address in &varz.connect_urls {
                let host = node_host(address);
                let authority = match port {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                };
                push(Candidate {
                    name: None,
                    authority,
                });
            }
        } else {
            // Not advertised (e.g. `no_advertise`): the headless-service pattern, node name = first
            // DNS label, reached as `<node>.<endpoint host:port>`.
            let cluster_urls = varz.cluster.as_ref().map(|c| c.urls.as_slice()).unwrap_or(&[]);
            for address in cluster_urls.iter().chain(std::iter::once(&varz.server_name)) {
                let host = node_host(address);
                let node = host.split('.').next().unwrap_or(host);
                if node.is_empty() {
                    continue;
                }
                push(Candidate {
                    name: Some(node.to_string()),
                    authority: format!("{node}.{}", self.authority),
                });
            }
        }
        out
    }
}

/// Cache key of a consumer's leader: endpoint (with scheme), account, stream, consumer.
pub(super) type LeaderKey = (String, String, String, String);

/// The cache key of `stream`/`consumer`'s leader behind `m`.
pub(super) fn leader_key(m: &Monitoring, stream: &str, consumer: &str) -> LeaderKey {
    (
        m.endpoint_url(),
        m.account.clone(),
        stream.to_string(),
        consumer.to_string(),
    )
}

/// A cached leader: the node's monitoring `host:port` and its `server_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CachedLeader {
    /// The node's monitoring `host:port`.
    pub(super) authority: String,
    /// The node's `server_name`, as `/jsz` names the consumer's leader.
    pub(super) name: String,
}

/// The consumer leaders found so far, shared by every trigger of a factory and its activity
/// watchers (both find and cache leaders).
#[derive(Debug, Default)]
pub(super) struct LeaderCache(pub(super) Mutex<HashMap<LeaderKey, CachedLeader>>);

impl LeaderCache {
    /// The cached leader of `key`, if any.
    pub(super) fn get(&self, key: &LeaderKey) -> Option<CachedLeader> {
        lock(&self.0).get(key).cloned()
    }

    /// Caches `key`'s leader.
    pub(super) fn set(&self, key: &LeaderKey, leader: CachedLeader) {
        lock(&self.0).insert(key.clone(), leader);
    }

    fn forget(&self, key: &LeaderKey) {
        lock(&self.0).remove(key);
    }

    /// How many leaders are cached.
    pub(super) fn len(&self) -> usize {
        lock(&self.0).len()
    }
}

/// The lag of `stream`/`consumer` through the monitoring endpoint `m`: from the cached leader if
/// it still leads, else from the endpoint when it is not clustered, else from the leader found
/// again (and cached).
pub(super) async fn monitoring_lag(
    clients: &NatsJetStreamClients,
    m: &Monitoring,
    stream: &str,
    consumer: &str,
) -> Result<ConsumerLag, ScalerError> {
    let key = leader_key(m, stream, consumer);
    let accounts = m.account_names();
    // 1. The cached leader, if it still is the leader.
    if let Some(cached) = clients.leaders.get(&key) {
        let url = m.jsz_url(&cached.authority);
        if let Ok(doc) = clients.get_json(&url).await
            && let Ok(view) = read_jsz(&doc, &accounts, stream, consumer)
            && let Some(c) = view.consumer
            && c.leader.as_deref() == Some(cached.name.as_str())
        {
            return Ok(c.lag);
        }
        // Gone, moved or unreachable: find the leader again.
        clients.leaders.forget(&key);
    }
    // 2. The configured endpoint.
    let url = m.jsz_url(&m.authority);
    let doc = clients.get_json(&url).await?;
    let view = read_jsz(&doc, &accounts, stream, consumer)
        .map_err(|e| ScalerError::bad_response(&url, error_chain(&e)))?;
    if view.cluster_size <= 1 {
        return view.consumer.map(|c| c.lag).ok_or_else(|| {
            ScalerError::bad_response(
                &url,
                format!(
                    "no consumer {consumer:?} of stream {stream:?} in account {:?}",
                    m.account
                ),
            )
        });
    }
    // 3. Clustered: find the consumer's leader.
    let (leader, lag) = discover_leader(clients, m, stream, consumer).await?;
    clients.leaders.set(&key, leader);
    Ok(lag)
}

/// Asks every candidate node in turn until one says it leads the consumer; the error lists what
/// went wrong with the nodes that could not be read.
async fn discover_leader(
    clients: &NatsJetStreamClients,
    m: &Monitoring,
    stream: &str,
    consumer: &str,
) -> Result<(CachedLeader, ConsumerLag), ScalerError> {
    let mut found = find_leaders(clients, m, &[(stream, consumer)]).await?;
    if let Some(leader) = found.leaders.pop().flatten() {
        return Ok(leader);
    }
    let mut message = format!(
        "leader node not found for consumer {consumer:?} of stream {stream:?} among {} node(s)",
        found.candidates
    );
    if !found.notes.is_empty() {
        message.push_str(&format!(" ({})", found.notes.join("; ")));
    }
    Err(ScalerError::bad_response(&m.url(&m.authority, "/varz"), message))
}

/// What one sweep of a cluster's nodes found ([`find_leaders`]).
pub(super) struct FoundLeaders {
    /// Per wanted consumer (in order): its leader node and the lag that node reports, if found.
    pub(super) leaders: Vec<Option<(CachedLeader, ConsumerLag)>>,
    /// How many nodes were candidates.
    candidates: usize,
    /// What went wrong with the nodes that could not be read (masked URLs).
    notes: Vec<String>,
    /// How many requests the sweep made.
    pub(super) requests: u64,
}

/// Finds the leaders of several `(stream, consumer)`s behind `m` in one sweep of the cluster's
/// nodes (the endpoint's `/varz`, then each node's name and `/jsz` once, stopping when every
/// consumer is found), as KEDA finds one. Shared by the polls (one consumer) and the activity
/// watcher (every registered consumer without a cached leader). Fails only when the endpoint's
/// `/varz` cannot be read.
pub(super) async fn find_leaders(
    clients: &NatsJetStreamClients,
    m: &Monitoring,
    wanted: &[(&str, &str)],
) -> Result<FoundLeaders, ScalerError> {
    let varz_url = m.url(&m.authority, "/varz");
    let doc = clients.get_json(&varz_url).await?;
    let varz = read_varz(&doc).map_err(|e| ScalerError::bad_response(&varz_url, error_chain(&e)))?;
    let candidates = m.candidates(&varz);
    let accounts = m.account_names();
    let mut requests = 1;
    let mut leaders: Vec<Option<(CachedLeader, ConsumerLag)>> = vec![None; wanted.len()];
    let mut notes = Vec::new();
    for candidate in &candidates {
        if leaders.iter().all(Option::is_some) {
            break;
        }
        requests += 1 + u64::from(candidate.name.is_none());
        let name = match node_name(clients, m, candidate).await {
            Ok(name) => name,
            Err(note) => {
                notes.push(note);
                continue;
            }
        };
        let url = m.jsz_url(&candidate.authority);
        let doc = match clients.get_json(&url).await {
            Ok(doc) => doc,
            Err(e) => {
                notes.push(e.to_string());
                continue;
            }
        };
        let mut noted = false;
        for (slot, (stream, consumer)) in leaders.iter_mut().zip(wanted) {
            if slot.is_some() {
                continue;
            }
            match read_jsz(&doc, &accounts, stream, consumer) {
                Ok(JszView {
                    consumer: Some(c), ..
                }) if c.leader.as_deref() == Some(name.as_str()) => {
                    let leader = CachedLeader {
                        authority: candidate.authority.clone(),
                        name: name.clone(),
                    };
                    *slot = Some((leader, c.lag));
                }
                Ok(_) => {}
                Err(e) if !noted => {
                    noted = true;
                    notes.push(format!("{}: {}", mask_userinfo(&url), error_chain(&e)));
                }
                Err(_) => {}
            }
        }
    }
    Ok(FoundLeaders {
        leaders,
        candidates: candidates.len(),
        notes,
        requests,
    })
}

/// A candidate node's `server_name`: known from the naming pattern, or read from its `/varz`;
/// a note (masked URL) when it cannot be had.
async fn node_name(
    clients: &NatsJetStreamClients,
    m: &Monitoring,
    candidate: &Candidate,
) -> Result<String, String> {
    if let Some(name) = &candidate.name {
        return Ok(name.clone());
    }
    let url = m.url(&candidate.authority, "/varz");
    let named = match clients.get_json(&url).await {
        Ok(doc) => read_varz(&doc)
            .map(|v| v.server_name)
            .map_err(|e| format!("{}: {}", mask_userinfo(&url), error_chain(&e))),
        Err(e) => Err(e.to_string()),
    };
    match named {
        Ok(name) if !name.is_empty() => Ok(name),
        Ok(_) => Err(format!("{}: no server_name", mask_userinfo(&url))),
        Err(note) => Err(note),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats_jetstream::jsz::VarzCluster;
    use crate::nats_jetstream::testing::{FakeCluster, cached, scaler};
    use crate::{Scaler, ScalerError};

    fn hit(node: usize, path: &str) -> (usize, String) {
        (node, path.to_string())
    }

    #[test]
    fn addresses_and_node_candidates() {
        assert_eq!(split_host_port("nats:8222"), ("nats", Some("8222")));
        assert_eq!(split_host_port("nats"), ("nats", None));
        assert_eq!(split_host_port("[::1]:8222"), ("[::1]", Some("8222")));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(node_host("10.0.0.5:4222"), "10.0.0.5");
        assert_eq!(node_host("nats://u:p@nats-1.nats.svc:4222"), "nats-1.nats.svc");
        assert_eq!(node_host("[fd00::1]:4222"), "[fd00::1]");

        let m = Monitoring {
            scheme: "http",
            authority: "nats.ns.svc:8222".into(),
            account: "$G".into(),
            accounts: vec!["$G".into()],
        };
        assert_eq!(
            m.jsz_url("nats.ns.svc:8222"),
            "http://nats.ns.svc:8222/jsz?acc=%24G&config=true&consumers=true"
        );
        let advertised = Varz {
            server_name: "nats-0".into(),
            connect_urls: vec![
                "10.0.0.1:4222".into(),
                "10.0.0.2:4222".into(),
                "10.0.0.1:4222".into(),
            ],
            cluster: None,
        };
        assert_eq!(
            m.candidates(&advertised),
            [
                Candidate {
                    name: None,
                    authority: "10.0.0.1:8222".into()
                },
                Candidate {
                    name: None,
                    authority: "10.0.0.2:8222".into()
                },
            ]
        );
        // Not advertised: the headless-service pattern, `<node>.<endpoint>`.
        let hidden = Varz {
            server_name: "nats-0".into(),
            connect_urls: vec![],
            cluster: Some(VarzCluster {
                urls: vec!["nats-1.nats.ns.svc:6222".into(), "nats-2.nats.ns.svc:6222".into()],
            }),
        };
        let names: Vec<(Option<String>, String)> = m
            .candidates(&hidden)
            .into_iter()
            .map(|c| (c.name, c.authority))
            .collect();
        assert_eq!(
            names,
            [
                (Some("nats-1".into()), "nats-1.nats.ns.svc:8222".into()),
                (Some("nats-2".into()), "nats-2.nats.ns.svc:8222".into()),
                (Some("nats-0".into()), "nats-0.nats.ns.svc:8222".into()),
            ]
        );
    }

    #[tokio::test]
    async fn single_server_reads_its_own_jsz() {
        let cluster = FakeCluster::start(false).await;
        let s = scaler(cluster.port);
        for _ in 0..2 {
            let sample = s.sample().await.unwrap();
            assert_eq!(
                sample.value, 100.0,
                "node 0's numbers: not clustered, so no leader hunt"
            );
            assert!(sample.active);
        }
        assert_eq!(cluster.take_hits(), [hit(0, "/jsz"), hit(0, "/jsz")]);
        assert_eq!(cached(&s), None);
        cluster.set(|c| c.replicas = [false; 3]);
        let e = s.sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("no consumer \"worker\" of stream \"ORDERS\""),
            "{e}"
        );
    }

    #[tokio::test]
    async fn leader_is_found_cached_and_found_again_when_it_moves() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler(cluster.port);
        let port = cluster.port;

        // Discovery: the endpoint's /jsz says clustered, its /varz lists the nodes, each node's
        // /varz gives its name, and node 1's /jsz names nats-1 as the leader.
        let sample = s.sample().await.unwrap();
        assert_eq!(sample.value, 17.0);
        assert!(sample.active, "17 > 16");
        assert_eq!(
            cluster.take_hits(),
            [
                hit(0, "/jsz"),
                hit(0, "/varz"),
                hit(0, "/varz"),
                hit(0, "/jsz"),
                hit(1, "/varz"),
                hit(1, "/jsz"),
            ]
        );
        assert_eq!(cached(&s), Some(format!("nats-1 127.0.0.2:{port}")));

        // Cached: one request, to the leader only.
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cluster.take_hits(), [hit(1, "/jsz")]);

        // Leadership moves to node 2: node 1 now names nats-2, so the leader is found again.
        cluster.set(|c| c.leader = Some(2));
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        let hits = cluster.take_hits();
        assert_eq!(hits.first(), Some(&hit(1, "/jsz")));
        assert_eq!(hits.last(), Some(&hit(2, "/jsz")));
        assert_eq!(cached(&s), Some(format!("nats-2 127.0.0.3:{port}")));

        // The cached node stops reporting the consumer (replica moved away), node 0 leads.
        cluster.set(|c| {
            c.replicas = [true, true, false];
            c.leader = Some(0);
        });
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cached(&s), Some(format!("nats-0 127.0.0.1:{port}")));
    }

    #[tokio::test]
    async fn an_unreachable_leader_is_skipped_and_no_leader_is_an_error() {
        let cluster = FakeCluster::start(true).await;
        let s = scaler(cluster.port);
        let port = cluster.port;
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cached(&s), Some(format!("nats-1 127.0.0.2:{port}")));

        // The cached leader dies; node 2 leads. Node 1 is skipped (noted), node 2 found.
        cluster.set(|c| {
            c.down[1] = true;
            c.leader = Some(2);
        });
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cached(&s), Some(format!("nats-2 127.0.0.3:{port}")));

        // No leader at all (e.g. mid-election): an error, never a zero, and nothing cached.
        cluster.set(|c| {
            c.down[1] = false;
            c.leader = None;
        });
        let e = s.sample().await.unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
        assert!(
            e.to_string().contains(
                "leader node not found for consumer \"worker\" of stream \"ORDERS\" among 3 node(s)"
            ),
            "{e}"
        );
        assert_eq!(cached(&s), None);

        // The leader is back: found again.
        cluster.set(|c| c.leader = Some(0));
        assert_eq!(s.sample().await.unwrap().value, 17.0);
        assert_eq!(cached(&s), Some(format!("nats-0 127.0.0.1:{port}")));

        // A node that is down is named in the error when no leader is found.
        cluster.set(|c| {
            c.leader = None;
            c.down[2] = true;
        });
        let e = s.sample().await.unwrap_err().to_string();
        assert!(e.contains("503"), "{e}");
    }
}
