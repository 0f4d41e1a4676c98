//! The attacker: external-metric GETs carrying garbage bearer tokens, sent straight to the
//! adapter's port over TLS + HTTP/2 from several loopback source addresses (the adapter's
//! per-source budget is keyed by the client's address; Linux lets a socket bind any 127.0.0.0/8
//! address). Every token is new, so no cache answers for it: each request either costs a
//! TokenReview or is refused by the budget.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_bench::quantile_ms;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http2::SendRequest;
use serde_json::{Value, json};

/// What one flood phase got back.
#[derive(Default)]
pub struct FloodStats {
    sent: AtomicU64,
    unauthorized: AtomicU64,
    too_many: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
    transport_errors: AtomicU64,
    reconnects: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

impl FloodStats {
    fn record(&self, status: Option<u16>, took: Duration) {
        let counter = match status {
            Some(401) => &self.unauthorized,
            Some(429) => &self.too_many,
            Some(503) => &self.unavailable,
            Some(_) => &self.other,
            None => &self.transport_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if status.is_some() {
            self.latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(took);
        }
    }

    /// Counts and answer latencies as a JSON section; `seconds` is the phase's length.
    pub fn report(&self, seconds: f64) -> Value {
        let mut lat = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        lat.sort();
        let sent = self.sent.load(Ordering::Relaxed);
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "sent": sent,
            "sent_per_second": r(sent as f64 / seconds.max(1e-9)),
            "answers": {
                "401": self.unauthorized.load(Ordering::Relaxed),
                "429": self.too_many.load(Ordering::Relaxed),
                "503": self.unavailable.load(Ordering::Relaxed),
                "other": self.other.load(Ordering::Relaxed),
            },
            "transport_errors": self.transport_errors.load(Ordering::Relaxed),
            "reconnects": self.reconnects.load(Ordering::Relaxed),
            "answer_latency_ms": {"p50": r(quantile_ms(&lat, 0.5)), "p99": r(quantile_ms(&lat, 0.99)),
                                  "max": r(quantile_ms(&lat, 1.0))},
        })
    }
}

/// Where and what to flood.
#[derive(Clone)]
pub struct Target {
    /// The adapter's address.
    pub addr: SocketAddr,
    /// The path every request asks for (a real metric of a real object).
    pub path: String,
}

/// Floods `target` at `rate` requests per second in all, spread evenly over one HTTP/2
/// connection per address in `sources`, for `length`. `seed` makes this run's tokens its own.
pub async fn flood(
    target: Target,
    sources: &[Ipv4Addr],
    rate: f64,
    length: Duration,
    seed: u64,
) -> Arc<FloodStats> {
    let stats = Arc::new(FloodStats::default());
    let until = Instant::now() + length;
    let per_source = rate / sources.len().max(1) as f64;
    let tasks: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let (target, stats) = (target.clone(), stats.clone());
            let ip = *ip;
            tokio::spawn(async move {
                one_source(target, ip, per_source, until, seed ^ ((i as u64) << 48), stats).await
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    // Answers still in flight get a moment to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stats
}

async fn one_source(
    target: Target,
    ip: Ipv4Addr,
    rate: f64,
    until: Instant,
    seed: u64,
    stats: Arc<FloodStats>,
) {
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    let mut told = false;
    while Instant::now() < until {
        tick.tick().await;
        if sender.as_ref().is_none_or(SendRequest::is_closed) {
            match ebb_bench::h2::connect::<Empty<Bytes>>(target.addr, Some(IpAddr::V4(ip)), None).await {
                Ok(s) => {
                    if sender.is_some() {
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    sender = Some(s);
                }
                Err(e) => {
                    if !std::mem::replace(&mut told, true) {
                        eprintln!("flood source {ip}: {e}");
                    }
                    stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Some(mut s) = sender.clone() else { continue };
        n += 1;
        stats.sent.fetch_add(1, Ordering::Relaxed);
        let request = http::Request::get(format!("https://localhost{}", target.path))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", garbage_token(seed, n)),
            )
            .body(Empty::<Bytes>::new());
        let Ok(request) = request else { continue };
        let stats = stats.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let status = match s.send_request(request).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    resp.into_body().collect().await.ok().map(|_| status)
                }
                Err(_) => None,
            };
            stats.record(status, start.elapsed());
        });
    }
}

/// A token nobody issued: 40 hex digits, distinct for every `(seed, n)`.
pub fn garbage_token(seed: u64, n: u64) -> String {
    let a = splitmix64(seed ^ n);
    let b = splitmix64(a ^ n.rotate_left(32));
    format!("{a:016x}{b:016x}{:08x}", (n & 0xffff_ffff) as u32)
}

/// SplitMix64's output function (a bijection on u64).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `count` loopback source addresses from 127.0.0.`first` on.
pub fn loopback_sources(first: u8, count: u8) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|i| Ipv4Addr::new(127, 0, 0, first.saturating_add(i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_shaped_like_garbage() {
        let mut seen = std::collections::HashSet::new();
        for seed in [1u64, 2, 1 << 48] {
            for n in 0..5_000 {
                let t = garbage_token(seed, n);
                assert_eq!(t.len(), 40);
                assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
                assert!(seen.insert(t), "repeated token for seed {seed} n {n}");
            }
        }
    }

    #[test]
    fn answers_are_counted_by_status() {
        let stats = FloodStats::default();
        stats.sent.store(5, Ordering::Relaxed);
        for s in [Some(401), Some(429), Some(429), Some(503), None] {
            stats.record(s, Duration::from_millis(2));
        }
        let r = stats.report(1.0);
        assert_eq!(r["answers"]["401"], 1);
        assert_eq!(r["answers"]["429"], 2);
        assert_eq!(r["answers"]["503"], 1);
        assert_eq!(r["transport_errors"], 1);
        assert_eq!(r["answer_latency_ms"]["p50"], 2.0);
        assert_eq!(loopback_sources(10, 3)[2], Ipv4Addr::new(127, 0, 0, 12));
    }
}
