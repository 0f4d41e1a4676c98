//! Client-side QPS/burst limits for the Kubernetes client, like client-go's `--kube-api-qps` and
//! `--kube-api-burst`.
//!
//! kube-rs has no such limiter, so [`TokenBucketLayer`] puts a token bucket in front of the
//! client's service stack: a request waits (it is never rejected) until a token is free. The
//! bucket holds `burst` tokens and refills at `qps` tokens per second, so up to `burst` requests
//! go out at once after a quiet period and the long-run rate is `qps`.
//!
//! The bucket is kept as a *theoretical arrival time* (GCRA): each request pushes it one
//! interval (`1/qps`) into the future, and a request may go once that time is at most `burst`
//! intervals ahead of now. Waits are reserved in order, so callers are served first come, first
//! served, and the arithmetic is in whole nanoseconds (no drift from floating-point refills).
//!
//! The limit sits outside kube's own stack (auth, TLS, tracing, base URI, retries): a request
//! takes one token however many times kube's retry policy resends it, and a watch takes one token
//! when it starts, as in client-go. A token reserved by a service that is dropped before its
//! request goes out is given back to the bucket.
//!
//! [`Clients`] keeps the traffic that must not wait apart: the Lease has its own client with no
//! limit (a busy controller can never delay a renewal), and so have the metrics adapter's
//! TokenReviews and SubjectAccessReviews (the adapter budgets those itself and answers 503 at
//! once when its budget is spent, instead of queueing them ahead of the controller's calls).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::infra::api_requests::{RequestCountLayer, RequestRecorder};

/// Longest interval between two requests the bucket uses: a `qps` below one request per day
/// counts as one request per day.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Why [`client_with_limits`] (or a [`TokenBucket`]) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientLimitsError {
    /// `qps` is NaN or infinite (or, for [`TokenBucket::new`], not positive).
    #[error("client QPS must be a positive finite number, got {0}")]
    InvalidQps(f32),
    /// `qps` is positive but `burst` is 0, which would let no request through.
    #[error("client burst must be at least 1 when QPS ({qps}) is positive")]
    ZeroBurst {
        /// The QPS that was asked for.
        qps: f32,
    },
    /// kube could not build its default client stack from the configuration.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Builds a [`kube::Client`] from a [`kube::Config`] with the token bucket in front of every
/// request.
///
/// The client keeps kube's default stack (authentication, TLS, extra headers, retries, tracing,
/// base URI); the limit wraps it. `qps <= 0` disables the limit (then `burst` is ignored).
/// `recorder`, when given, hears of every request as it leaves (after the limit).
pub fn client_with_limits(
    config: kube::Config,
    qps: f32,
    burst: u32,
    recorder: Option<RequestRecorder>,
) -> Result<kube::Client, ClientLimitsError> {
    let layer = TokenBucketLayer::new(qps, burst)?;
    // kube's own retry of 429/503/504 (up to 15 attempts, delays doubling to minutes) is off:
    // it would re-send a write that passed the leader guard long after the guard said yes,
    // and hold a loop for minutes after an API outage. Every caller has its own bounded retry
    // (start-up backoff, requeue backoff, watch backoff, the next tick, the next renewal).
    let mut config = config;
    config.default_retry = false;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(ClientLimitsError::Client)?;
    let builder = builder.with_layer(&tower::layer::util::Stack::new(
        tower::util::option_layer(recorder.map(RequestCountLayer::new)),
        tower::util::option_layer(layer),
    ));
    Ok(builder.build())
}

/// The operator's Kubernetes clients, one per kind of traffic; each has its own connections.
#[derive(Clone)]
pub struct Clients {
    /// Reconciles, watches, scale loops, status, Events, certificates: behind the QPS bucket.
    pub controller: kube::Client,
    /// Leader election only: no limit, so renewals never queue behind controller calls.
    pub lease: kube::Client,
    /// The metrics adapter's reviews and its watch of the API server's authentication
    /// ConfigMap: not behind the controller's bucket (the adapter's own budget fails fast).
    pub auth: kube::Client,
}

impl Clients {
    /// Builds the three clients from one configuration: only `controller` gets the `qps`/`burst`
    /// bucket. `recorder` hears of the requests of all three.
    pub fn new(
        config: kube::Config,
        qps: f32,
        burst: u32,
        recorder: Option<RequestRecorder>,
    ) -> Result<Self, ClientLimitsError> {
        Ok(Self {
            controller: client_with_limits(config.clone(), qps, burst, recorder.clone())?,
            lease: client_with_limits(config.clone(), 0.0, 0, recorder.clone())?,
            auth: client_with_limits(config, 0.0, 0, recorder)?,
        })
    }
}

/// A token bucket kept as a theoretical arrival time; pure, the caller passes the clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Time that refills one token (`1/qps`).
    interval: Duration,
    /// Tokens in a full bucket; the arrival time may be up to `burst` intervals ahead of now for a
    /// request to go.
    burst: u32,
    /// When the bucket is next back to full; `None` (or a past instant) means full.
    full_at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `qps` tokens per second.
    ///
    /// `qps` must be positive and finite and `burst` at least 1. A `qps` so low that one token
    /// would take longer than [`MAX_INTERVAL`] uses [`MAX_INTERVAL`].
    pub fn new(qps: f32, burst: u32) -> Result<Self, ClientLimitsError> {
        if !qps.is_finite() || qps <= 0.0 {
            return Err(ClientLimitsError::InvalidQps(qps));
        }
        if burst == 0 {
            return Err(ClientLimitsError::ZeroBurst { qps });
        }
        Ok(Self {
            interval: interval_for(qps),
            burst,
            full_at: None,
        })
    }

    /// The time one token takes to refill (`1/qps`, rounded to whole nanoseconds).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes one token at `now` and returns how long the request must wait before it may go
    /// (zero if a token is free). The token is reserved even though the caller waits, so calls
    /// in a row get increasing waits.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let full_at = self.full_at.map_or(now, |t| t.max(now));
        let next = full_at.checked_add(self.interval).unwrap_or(full_at);
        self.full_at = Some(next);
        next.saturating_duration_since(now)
            .saturating_sub(self.burst_window())
    }

    /// Gives back one token taken by [`reserve`](Self::reserve) whose request never went (the
    /// next reservation gets it).
    pub fn release(&mut self, now: Instant) {
        self.full_at = self
            .full_at
            .and_then(|t| t.checked_sub(self.interval))
            .filter(|t| *t > now);
    }

    /// Whole tokens free at `now` (at most `burst`), without taking one.
    pub fn available(&self, now: Instant) -> u32 {
        let missing = self
            .full_at
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let free = self.burst_window().saturating_sub(missing);
        match free.as_nanos().checked_div(self.interval.as_nanos()) {
            Some(tokens) => u32::try_from(tokens).unwrap_or(u32::MAX).min(self.burst),
            None => self.burst,
        }
    }

    fn burst_window(&self) -> Duration {
        self.interval.saturating_mul(self.burst)
    }
}

/// `1/qps` in whole nanoseconds, at most [`MAX_INTERVAL`]. `qps` is positive and finite.
fn interval_for(qps: f32) -> Duration {
    let max = u64::try_from(MAX_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
    // `as` saturates (and the quotient is positive), so this cannot wrap.
    let nanos = (1e9 / f64::from(qps)).round() as u64;
    Duration::from_nanos(nanos.min(max))
}

/// A [`tower::Layer`] that delays requests to at most `burst` at once and `qps` per second.
///
/// All services made by one layer (and all their clones) share one bucket, so one layer can limit
/// several clients together.
#[derive(Debug, Clone)]
pub struct TokenBucketLayer {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl TokenBucketLayer {
    /// A layer for `qps` requests per second with bursts of `burst`; `None` when `qps <= 0`
    /// (no limit).
    pub fn new(qps: f32, burst: u32) -> Result<Option<Self>, ClientLimitsError> {
        if qps.is_finite() && qps <= 0.0 {
            return Ok(None);
        }
        Ok(Some(Self::from_bucket(TokenBucket::new(qps, burst)?)))
    }

    /// A layer around an existing bucket.
    pub fn from_bucket(bucket: TokenBucket) -> Self {
        Self {
            bucket: Arc::new(Mutex::new(bucket)),
        }
    }
}

impl<S> Layer<S> for TokenBucketLayer {
    type Service = TokenBucketService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenBucketService {
            inner,
            bucket: Arc::clone(&self.bucket),
            state: State::Idle,
        }
    }
}

/// The service made by [`TokenBucketLayer`]: `poll_ready` is pending until a token is free, then
/// the request goes to the inner service unchanged.
#[derive(Debug)]
pub struct TokenBucketService<S> {
    inner: S,
    bucket: Arc<Mutex<TokenBucket>>,
    state: State,
}

#[derive(Debug)]
enum State {
    /// No token reserved yet.
    Idle,
    /// A token is reserved; it is free when the timer fires.
    Waiting(Pin<Box<Sleep>>),
    /// A free token is held for the next `call`.
    Permitted,
}

impl<S> TokenBucketService<S> {
    fn reserve(&self) -> Duration {
        // Nothing panics while the lock is held, so a poisoned lock still holds a consistent
        // bucket.
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        bucket.reserve(Instant::now())
    }
}

impl<S> Drop for TokenBucketService<S> {
    /// A token reserved (waited for or held) by a service whose request never goes is returned.
    fn drop(&mut self) {
        if !matches!(self.state, State::Idle) {
            self.bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .release(Instant::now());
        }
    }
}

impl<S: Clone> Clone for TokenBucketService<S> {
    /// The clone shares the bucket but not a token this service holds.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            bucket: Arc::clone(&self.bucket),
            state: State::Idle,
        }
    }
}

impl<S, Req> Service<Req> for TokenBucketService<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.state {
                State::Idle => {
                    let wait = self.reserve();
                    self.state = if wait.is_zero() {
                        State::Permitted
                    } else {
                        State::Waiting(Box::pin(tokio::time::sleep(wait)))
                    };
                }
                State::Waiting(sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.state = State::Permitted;
                }
                State::Permitted => return self.inner.poll_ready(cx),
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // `call` without a successful `poll_ready` breaks the `Service` contract; the request
        // still counts against the bucket but is not delayed (and this does not panic).
        if matches!(self.state, State::Idle) {
            self.reserve();
        }
        self.state = State::Idle;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::future::{Ready, poll_fn, ready};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_goes_at_once_then_one_per_interval() {
        let mut bucket = TokenBucket::new(100.0, 5).expect("valid");
        assert_eq!(bucket.interval(), ms(10));
        let t0 = Instant::now();
        assert_eq!(bucket.available(t0), 5);
        let waits: Vec<Duration> = (0..8).map(|_| bucket.reserve(t0)).collect();
        assert_eq!(waits, [0, 0, 0, 0, 0, 10, 20, 30].map(ms));
        assert_eq!(bucket.available(t0), 0);
    }

    #[test]
    fn refills_at_qps_and_never_above_burst() {
        let mut bucket = TokenBucket::new(100.0, 5).expect("valid");
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(bucket.reserve(t0), Duration::ZERO);
        }
        // 25 ms later 2.5 tokens are back: two go at once, the third waits for the half token.
        let t1 = t0 + ms(25);
        assert_eq!(bucket.available(t1), 2);
        assert_eq!(bucket.reserve(t1), Duration::ZERO);
        assert_eq!(bucket.reserve(t1), Duration::ZERO);
        assert_eq!(bucket.reserve(t1), ms(5));
        // After a long pause the bucket is full again, but holds no more than `burst`.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(bucket.available(t2), 5);
        let waits: Vec<Duration> = (0..6).map(|_| bucket.reserve(t2)).collect();
        assert_eq!(waits, [0, 0, 0, 0, 0, 10].map(ms));
    }

    #[test]
    fn steady_rate_without_burst() {
        let mut bucket = TokenBucket::new(4.0, 1).expect("valid");
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..4).map(|_| bucket.reserve(t0)).collect();
        assert_eq!(waits, [0, 250, 500, 750].map(ms));
        // A caller that waited its turn finds the next token exactly one interval later.
        assert_eq!(bucket.reserve(t0 + ms(750)), ms(250));
    }

    #[test]
    fn fractional_and_extreme_qps() {
        assert_eq!(
            TokenBucket::new(0.5, 1).expect("valid").interval(),
            Duration::from_secs(2)
        );
        assert_eq!(
            TokenBucket::new(3.0, 1).expect("valid").interval(),
            Duration::from_nanos(333_333_333)
        );
        assert_eq!(
            TokenBucket::new(1e-30, 1).expect("valid").interval(),
            MAX_INTERVAL
        );
        assert_eq!(
            TokenBucket::new(f32::MIN_POSITIVE, u32::MAX)
                .expect("valid")
                .interval(),
            MAX_INTERVAL
        );
        // Beyond a billion per second the interval is zero: nothing ever waits.
        let mut fast = TokenBucket::new(f32::MAX, 1).expect("valid");
        let t0 = Instant::now();
        assert!((0..1000).all(|_| fast.reserve(t0).is_zero()));
        // Huge intervals and bursts saturate instead of overflowing.
        let mut slow = TokenBucket::new(1e-30, u32::MAX).expect("valid");
        assert!((0..10).all(|_| slow.reserve(t0).is_zero()));
    }

    #[test]
    fn invalid_settings() {
        assert!(matches!(
            TokenBucket::new(f32::NAN, 5),
            Err(ClientLimitsError::InvalidQps(_))
        ));
        assert!(matches!(
            TokenBucket::new(f32::INFINITY, 5),
            Err(ClientLimitsError::InvalidQps(_))
        ));
        assert!(matches!(
            TokenBucket::new(0.0, 5),
            Err(ClientLimitsError::InvalidQps(_))
        ));
        assert!(matches!(
            TokenBucket::new(5.0, 0),
            Err(ClientLimitsError::ZeroBurst { .. })
        ));
        assert!(matches!(
            TokenBucketLayer::new(f32::NAN, 5),
            Err(ClientLimitsError::InvalidQps(_))
        ));
        assert!(matches!(
            TokenBucketLayer::new(5.0, 0),
            Err(ClientLimitsError::ZeroBurst { .. })
        ));
        // qps <= 0 disables the limit, whatever the burst.
        assert!(TokenBucketLayer::new(0.0, 0).expect("disabled").is_none());
        assert!(TokenBucketLayer::new(-1.0, 5).expect("disabled").is_none());
        assert!(TokenBucketLayer::new(f32::NEG_INFINITY, 5).is_err());
        assert_eq!(
            TokenBucket::new(5.0, 0).expect_err("zero burst").to_string(),
            "client burst must be at least 1 when QPS (5) is positive"
        );
    }

    /// A service that records when it was called.
    #[derive(Clone, Default)]
    struct Recorder {
        calls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Service<u32> for Recorder {
        type Response = u32;
        type Error = Infallible;
        type Future = Ready<Result<u32, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: u32) -> Self::Future {
            self.calls.lock().expect("not poisoned").push(Instant::now());
            ready(Ok(req))
        }
    }

    async fn send<S: Service<u32, Error = Infallible>>(svc: &mut S, req: u32) -> S::Response {
        let Ok(()) = poll_fn(|cx| svc.poll_ready(cx)).await;
        let Ok(response) = svc.call(req).await;
        response
    }

    fn offsets(calls: &Mutex<Vec<Instant>>, start: Instant) -> Vec<Duration> {
        calls
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|t| t.duration_since(start))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn twenty_requests_at_qps_100_burst_5_take_150_ms() {
        let recorder = Recorder::default();
        let layer = TokenBucketLayer::new(100.0, 5).expect("valid").expect("enabled");
        let mut svc = layer.layer(recorder.clone());
        let start = Instant::now();
        for i in 0..20 {
            assert_eq!(send(&mut svc, i).await, i);
        }
        assert_eq!(start.elapsed(), ms(150));
        let expected: Vec<Duration> = (0..20u64).map(|i| ms(i.saturating_sub(4) * 10)).collect();
        assert_eq!(offsets(&recorder.calls, start), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_bucket() {
        let recorder = Recorder::default();
        let layer = TokenBucketLayer::new(100.0, 5).expect("valid").expect("enabled");
        let svc = layer.layer(recorder.clone());
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let mut svc = svc.clone();
                tokio::spawn(async move {
                    for i in 0..5 {
                        send(&mut svc, i).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(start.elapsed(), ms(150));
        let mut calls = offsets(&recorder.calls, start);
        calls.sort();
        let expected: Vec<Duration> = (0..20u64).map(|i| ms(i.saturating_sub(4) * 10)).collect();
        assert_eq!(calls, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn call_without_poll_ready_is_counted_not_delayed() {
        let recorder = Recorder::default();
        let layer = TokenBucketLayer::new(100.0, 1).expect("valid").expect("enabled");
        let mut svc = layer.layer(recorder.clone());
        let start = Instant::now();
        let Ok(_) = svc.call(1).await;
        let Ok(_) = svc.call(2).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Two tokens are gone; the next polite request waits for the second refill.
        send(&mut svc, 3).await;
        assert_eq!(start.elapsed(), ms(20));
    }

    #[test]
    fn release_gives_the_last_token_back() {
        let mut bucket = TokenBucket::new(100.0, 2).expect("valid");
        let t0 = Instant::now();
        assert_eq!(bucket.reserve(t0), Duration::ZERO);
        assert_eq!(bucket.reserve(t0), Duration::ZERO);
        assert_eq!(bucket.available(t0), 0);
        bucket.release(t0);
        assert_eq!(bucket.available(t0), 1);
        assert_eq!(bucket.reserve(t0), Duration::ZERO);
        // Releasing more than was taken leaves a full bucket, never more.
        for _ in 0..5 {
            bucket.release(t0);
        }
        assert_eq!(bucket.available(t0), 2);
        let waits: Vec<Duration> = (0..3).map(|_| bucket.reserve(t0)).collect();
        assert_eq!(waits, [0, 0, 10].map(ms));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_request_returns_its_token() {
        let recorder = Recorder::default();
        let layer = TokenBucketLayer::new(1.0, 1).expect("valid").expect("enabled");
        let svc = layer.layer(recorder.clone());
        let start = Instant::now();
        // A request takes the only token, then is dropped before it is sent.
        let mut holder = svc.clone();
        assert!(poll_fn(|cx| Poll::Ready(holder.poll_ready(cx))).await.is_ready());
        // A second one waits for the next token (one second), and is dropped while waiting.
        let mut waiter = svc.clone();
        assert!(
            poll_fn(|cx| Poll::Ready(waiter.poll_ready(cx)))
                .await
                .is_pending()
        );
        drop(waiter);
        drop(holder);
        // Both tokens are back: the next request goes at once.
        let mut svc = svc;
        send(&mut svc, 1).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(recorder.calls.lock().expect("not poisoned").len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn call_while_waiting_takes_no_second_token() {
        let recorder = Recorder::default();
        let layer = TokenBucketLayer::new(1.0, 1).expect("valid").expect("enabled");
        let mut svc = layer.layer(recorder.clone());
        let start = Instant::now();
        send(&mut svc, 1).await;
        // Reserve the next token (a one-second wait), then call without waiting.
        assert!(poll_fn(|cx| Poll::Ready(svc.poll_ready(cx))).await.is_pending());
        let Ok(_) = svc.call(2).await;
        // Only two tokens are gone: the third request waits two intervals, not three.
        send(&mut svc, 3).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    /// The Lease and auth clients are not behind the controller's bucket.
    #[tokio::test]
    async fn the_lease_client_is_not_the_throttled_one() {
        let (addr, server) = ok_server().await;
        let url: hyper::Uri = format!("http://{addr}").parse().expect("url");
        // One token, refilled every 10 s: the controller's second request would wait 10 s.
        let clients = Clients::new(kube::Config::new(url), 0.1, 1, None).expect("clients");
        let get = |client: &kube::Client| {
            let client = client.clone();
            async move {
                let req = hyper::Request::get("/apis/coordination.k8s.io/v1/namespaces/a/leases/l")
                    .body(Vec::new())
                    .expect("request");
                client.request_text(req).await.expect("response")
            }
        };
        get(&clients.controller).await;
        let unthrottled = tokio::time::timeout(ms(2_000), async {
            for _ in 0..5 {
                get(&clients.lease).await;
                get(&clients.auth).await;
            }
        });
        assert!(unthrottled.await.is_ok(), "the Lease and auth clients waited");
        let throttled = tokio::time::timeout(ms(500), get(&clients.controller)).await;
        assert!(throttled.is_err(), "the controller client is limited");
        server.abort();
    }

    /// A local HTTP server answering `{"ok":true}` to everything.
    async fn ok_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use http_body_util::Full;
        use hyper::body::{Bytes, Incoming};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(|_: hyper::Request<Incoming>| {
                    ready(Ok::<_, Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"{\"ok\":true}"),
                    ))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        (addr, server)
    }

    /// The limit in front of a real `kube::Client` stack (kube's `Buffer` and request path).
    #[tokio::test(start_paused = true)]
    async fn kube_client_with_the_layer_is_limited() {
        use hyper::{Request, Response};
        use kube::client::Body;

        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        let service = tower::service_fn(move |req: Request<Body>| {
            recorded
                .lock()
                .expect("not poisoned")
                .push((Instant::now(), req.uri().to_string()));
            ready(Ok::<_, Infallible>(Response::new(Body::from(b"{}".to_vec()))))
        });
        let layer = TokenBucketLayer::new(100.0, 5).expect("valid").expect("enabled");
        let client = kube::client::ClientBuilder::new(service, "default")
            .with_layer(&layer)
            .build();

        let start = Instant::now();
        let requests = (0..20).map(|i| {
            let client = client.clone();
            async move {
                let req = Request::get(format!("/api/v1/namespaces/ns{i}"))
                    .body(Vec::new())
                    .expect("request");
                client.request_text(req).await.expect("response")
            }
        });
        let bodies = futures_join_all(requests).await;
        assert!(bodies.iter().all(|b| b == "{}"));
        assert_eq!(start.elapsed(), ms(150));
        let calls = calls.lock().expect("not poisoned");
        assert_eq!(calls.len(), 20);
        assert_eq!(
            calls
                .iter()
                .filter(|(t, _)| t.duration_since(start).is_zero())
                .count(),
            5
        );
    }

    /// Runs the futures concurrently on the current task's runtime and returns their outputs.
    async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::with_capacity(handles.len());
        for handle in handles {
            out.push(handle.await.expect("task"));
        }
        out
    }

    /// `client_with_limits` keeps kube's default stack (base URI, headers) against a local HTTP
    /// server, and the limit holds in real time (only a lower bound is checked).
    #[tokio::test]
    async fn client_with_limits_talks_to_a_server_and_is_limited() {
        use http_body_util::Full;
        use hyper::body::{Bytes, Incoming};
        use hyper::{Request, Response};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen_by_server = Arc::clone(&seen);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen_by_server);
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    seen.lock().expect("not poisoned").push(req.uri().to_string());
                    ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true}",
                    )))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });

        let url: hyper::Uri = format!("http://{addr}/base").parse().expect("url");
        let client = client_with_limits(kube::Config::new(url.clone()), 20.0, 2, None).expect("client");
        let start = std::time::Instant::now();
        for i in 0..6 {
            let req = Request::get(format!("/api/v1/namespaces/n{i}"))
                .body(Vec::new())
                .expect("request");
            let text = client.request_text(req).await.expect("response");
            assert_eq!(text, "{\"ok\":true}");
        }
        // Two at once, then four at 50 ms each.
        assert!(start.elapsed() >= ms(195), "took only {:?}", start.elapsed());
        let seen_paths = seen.lock().expect("not poisoned").clone();
        assert_eq!(seen_paths.len(), 6);
        assert_eq!(seen_paths[0], "/base/api/v1/namespaces/n0");

        // Disabled: no delay to speak of, and a zero burst is fine.
        let client = client_with_limits(kube::Config::new(url), 0.0, 0, None).expect("client");
        let req = Request::get("/version").body(Vec::new()).expect("request");
        client.request_text(req).await.expect("response");
        server.abort();
    }

    /// A 503 comes back to the caller at once: the request is sent once, not retried by kube
    /// behind the leader guard's back.
    #[tokio::test]
    async fn an_unavailable_api_server_is_not_retried_by_the_client() {
        use http_body_util::Full;
        use hyper::body::{Bytes, Incoming};
        use hyper::{Request, Response};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(Mutex::new(0usize));
        let counted = Arc::clone(&calls);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counted = Arc::clone(&counted);
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    *counted.lock().expect("not poisoned") += 1;
                    let mut response = Response::new(Full::new(Bytes::from_static(b"unavailable")));
                    *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    ready(Ok::<_, Infallible>(response))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        let url: hyper::Uri = format!("http://{addr}").parse().expect("url");
        let client = client_with_limits(kube::Config::new(url), 0.0, 0, None).expect("client");
        let req = Request::patch("/apis/apps/v1/namespaces/ns/deployments/web/scale")
            .body(b"{}".to_vec())
            .expect("request");
        let answer = tokio::time::timeout(Duration::from_secs(5), client.request_text(req))
            .await
            .expect("answered at once, not after retries");
        assert!(answer.is_err(), "a 503 is an error: {answer:?}");
        assert_eq!(*calls.lock().expect("not poisoned"), 1);
        server.abort();
    }

    #[test]
    fn client_with_limits_rejects_bad_settings() {
        let config = || kube::Config::new(hyper::Uri::from_static("http://127.0.0.1:1"));
        assert!(matches!(
            client_with_limits(config(), f32::NAN, 5, None),
            Err(ClientLimitsError::InvalidQps(_))
        ));
        assert!(matches!(
            client_with_limits(config(), 10.0, 0, None),
            Err(ClientLimitsError::ZeroBurst { .. })
        ));
    }
}
