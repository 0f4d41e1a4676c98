//! Scenario 4: the metrics adapter's latency under 500 external-metric GETs per second for 60 s,
//! through the real TLS path (HTTP/2, the front-proxy client certificate and `X-Remote-*`
//! headers the API server's aggregator presents). Target: p99 under 2 ms.
//! `EBB_BENCH_SECONDS` and `EBB_BENCH_RATE` override the duration and the rate.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ebb_bench::{quantile_ms, write_result};
use ebb_metrics_adapter::{
    AccessReviewer, AdapterConfig, AuthConfig, AuthError, Decision, DelegatedAuth, MetricProvider,
    MetricValue, MetricsAdapter, ProviderError, RequestAttributes, TlsSource, TokenReviewer, UserInfo,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

/// Answers every metric with a constant, as a warm poll cache does.
struct CachedValue;

#[async_trait::async_trait]
impl MetricProvider for CachedValue {
    async fn metric(&self, _ns: &str, _so: &str, _metric: &str) -> Result<MetricValue, ProviderError> {
        Ok(MetricValue {
            value: 42.5,
            timestamp: jiff::Timestamp::now(),
        })
    }
}

/// The aggregator authenticates with its certificate: no token reviews happen.
struct NoTokens;

#[async_trait::async_trait]
impl TokenReviewer for NoTokens {
    async fn review(&self, _token: &str) -> Result<Option<UserInfo>, AuthError> {
        Ok(None)
    }
}

/// Allows the HPA controller (the adapter caches the decision, as with a real SubjectAccessReview).
struct AllowAll;

#[async_trait::async_trait]
impl AccessReviewer for AllowAll {
    async fn review(&self, _user: &UserInfo, _attributes: &RequestAttributes) -> Result<Decision, AuthError> {
        Ok(Decision::Allow)
    }
}

fn front_proxy_pki() -> Result<
    (
        CertificateDer<'static>,
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
    ),
    rcgen::Error,
> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "front-proxy-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    leaf.distinguished_name
        .push(DnType::CommonName, "front-proxy-client");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((ca_cert.der().clone(), vec![cert.der().clone()], key))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::var("EBB_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let rate: u64 = std::env::var("EBB_BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let (ca, chain, key) = front_proxy_pki()?;
    let auth_config = AuthConfig {
        requestheader_ca: vec![ca],
        requestheader_allowed_names: vec!["front-proxy-client".into()],
        ..AuthConfig::default()
    };
    let auth = Arc::new(DelegatedAuth::new(
        auth_config,
        Arc::new(NoTokens),
        Arc::new(AllowAll),
    )?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = AdapterConfig::new(
        listener.local_addr()?,
        TlsSource::SelfSigned { dns_names: vec![] },
    );
    let adapter = MetricsAdapter::from_listener(listener, config, auth, Arc::new(CachedValue))?;
    let addr = adapter.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(adapter.run(async move {
        let _ = stop_rx.await;
    }));

    // One HTTP/2 connection, as the aggregator keeps, with the front-proxy certificate.
    let sender = ebb_bench::h2::connect(addr, None, Some((chain, key))).await?;

    let path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/s0-kafka-orders?labelSelector=scaledobject.ebb.dev%2Fname%3Dorders";
    let latencies = Arc::new(Mutex::new(Vec::with_capacity((seconds * rate) as usize)));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut inflight = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let mut sender = sender.clone();
        let (latencies, errors) = (latencies.clone(), errors.clone());
        inflight.push(tokio::spawn(async move {
            let request = http::Request::get(format!("https://localhost{path}"))
                .header(
                    "x-remote-user",
                    "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                )
                .header("x-remote-group", "system:serviceaccounts")
                .body(Empty::<Bytes>::new());
            let Ok(request) = request else { return };
            let start = Instant::now();
            let ok = match sender.send_request(request).await {
                Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
                Err(_) => false,
            };
            let took = start.elapsed();
            if ok {
                latencies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(took);
            } else {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
        if inflight.len() > 1000 {
            inflight.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
        }
    }
    for h in inflight {
        let _ = h.await;
    }
    let _ = stop_tx.send(());
    let _ = server.await;

    let mut samples = latencies.lock().unwrap_or_else(PoisonError::into_inner).clone();
    samples.sort();
    let (p50, p99, max) = (
        quantile_ms(&samples, 0.5),
        quantile_ms(&samples, 0.99),
        quantile_ms(&samples, 1.0),
    );
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    let met = p99 < 2.0 && errors == 0;
    let summary = format!(
        "adapter latency: {} requests at {rate}/s for {seconds} s over TLS+h2: p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms, {errors} errors; target p99 < 2 ms {}",
        samples.len(),
        if met { "met" } else { "MISSED" }
    );
    write_result(
        "adapter-latency",
        json!({
            "parameters": {"rate_per_second": rate, "seconds": seconds, "transport": "TLS 1.3, HTTP/2, one connection",
                           "auth": "front-proxy client certificate + X-Remote-User/Group, SubjectAccessReview cached"},
            "figures": {"requests": samples.len(), "errors": errors, "p50_ms": p50, "p99_ms": p99, "max_ms": max},
            "target": {"p99_ms_below": 2.0, "met": met},
        }),
        &summary,
    )?;
    Ok(())
}
