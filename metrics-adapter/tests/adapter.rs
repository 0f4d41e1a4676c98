//! The adapter over real TLS on 127.0.0.1: certificates minted here with rcgen, a fake provider,
//! fake TokenReview and SubjectAccessReview.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ebb_metrics_adapter::{
    AccessReviewer, AdapterConfig, AuthConfig, AuthError, Decision, Delegate, DelegateAnswer, DelegateError,
    DelegateRequest, DelegatedAuth, MetricProvider, MetricValue, MetricsAdapter, NO_DELEGATE_HEADER,
    NOT_OWNED_HEADER, ProviderError, RequestAttributes, RequestKind, RequestObserver, TlsSource,
    TokenReviewer, UserInfo,
};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------------------------
// PKI

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, cn: &str, orgs: &[&str], sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        for org in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *org);
        }
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn client(&self, cn: &str, orgs: &[&str]) -> Leaf {
        self.leaf(cn, orgs, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

impl Leaf {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

struct Pki {
    server_ca: Ca,
    front_proxy_ca: Ca,
    client_ca: Ca,
    rogue_ca: Ca,
}

impl Pki {
    fn new() -> Self {
        Self {
            server_ca: Ca::new("server-ca"),
            front_proxy_ca: Ca::new("front-proxy-ca"),
            client_ca: Ca::new("client-ca"),
            rogue_ca: Ca::new("front-proxy-ca"),
        }
    }

    fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            client_ca: vec![self.client_ca.cert.clone()],
            requestheader_ca: vec![self.front_proxy_ca.cert.clone()],
            requestheader_allowed_names: vec!["front-proxy-client".into()],
            ..AuthConfig::default()
        }
    }

    /// The server certificate, written to PEM files.
    fn server_files(&self) -> TlsSource {
        let leaf = self.server_ca.leaf(
            "adapter",
            &[],
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let dir = std::env::temp_dir().join(format!(
            "ebb-metrics-adapter-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, &leaf.cert_pem).expect("write cert");
        std::fs::write(&key, &leaf.key_pem).expect("write key");
        TlsSource::Files { cert, key }
    }
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------------
// Fakes

struct FakeProvider {
    calls: Mutex<Vec<(String, String, String)>>,
}

fn timestamp() -> jiff::Timestamp {
    "2026-11-24T09:30:00.750Z".parse().expect("timestamp")
}

#[async_trait]
impl MetricProvider for FakeProvider {
    async fn metric(
        &self,
        namespace: &str,
        scaled_object: &str,
        metric: &str,
    ) -> Result<MetricValue, ProviderError> {
        self.calls
            .lock()
            .expect("lock")
            .push((namespace.into(), scaled_object.into(), metric.into()));
        match (namespace, scaled_object, metric) {
            ("default", "orders", "s0-kafka-orders") => Ok(MetricValue {
                value: 1.5,
                timestamp: timestamp(),
            }),
            ("default", "orders", "s1-big") => Ok(MetricValue {
                value: 42.0,
                timestamp: timestamp(),
            }),
            ("default", "orders", "s2-down") => Err(ProviderError::Unavailable("broker unreachable".into())),
            ("default", "orders", "s3-foreign") | ("team-b", _, _) => Err(ProviderError::NotMine),
            ("default", "orders", _) => Err(ProviderError::UnknownMetric),
            ("default", "slow", _) => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(MetricValue {
                    value: 1.0,
                    timestamp: timestamp(),
                })
            }
            _ => Err(ProviderError::UnknownScaledObject),
        }
    }
}

#[derive(Default)]
struct FakeTokens {
    calls: AtomicUsize,
}

#[async_trait]
impl TokenReviewer for FakeTokens {
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(match token {
            "good-token" => Some(UserInfo::new(
                "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                ["system:serviceaccounts"],
            )),
            "mallory-token" => Some(UserInfo::new("mallory", Vec::<String>::new())),
            "admin-token" => Some(UserInfo::new("admin", ["system:masters"])),
            _ => None,
        })
    }
}

#[derive(Default)]
struct FakeAccess {
    calls: AtomicUsize,
    seen: Mutex<Vec<(UserInfo, RequestAttributes)>>,
}

#[async_trait]
impl AccessReviewer for FakeAccess {
    async fn review(&self, user: &UserInfo, attributes: &RequestAttributes) -> Result<Decision, AuthError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .expect("lock")
            .push((user.clone(), attributes.clone()));
        Ok(if user.username == "mallory" {
            Decision::Deny {
                reason: "no RBAC policy matched".into(),
            }
        } else {
            Decision::Allow
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

struct Harness {
    pki: Pki,
    addr: std::net::SocketAddr,
    server_roots: Vec<CertificateDer<'static>>,
    provider: Arc<FakeProvider>,
    tokens: Arc<FakeTokens>,
    access: Arc<FakeAccess>,
    observed: Arc<Observed>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<Result<(), ebb_metrics_adapter::AdapterError>>>,
}

/// Every request the adapter reported to its observer.
#[derive(Default)]
struct Observed(Mutex<Vec<(RequestKind, u16, Duration)>>);

impl RequestObserver for Observed {
    fn observe(&self, kind: RequestKind, status: u16, elapsed: Duration) {
        self.0.lock().expect("lock").push((kind, status, elapsed));
    }
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(|_| {}, None).await
    }

    async fn start_with(tune: impl FnOnce(&mut AdapterConfig), tls: Option<TlsSource>) -> Self {
        Self::start_full(tune, tls, None).await
    }

    async fn start_full(
        tune: impl FnOnce(&mut AdapterConfig),
        tls: Option<TlsSource>,
        delegate: Option<Arc<dyn Delegate>>,
    ) -> Self {
        let pki = Pki::new();
        let provider = Arc::new(FakeProvider {
            calls: Mutex::new(Vec::new()),
        });
        let tokens = Arc::new(FakeTokens::default());
        let access = Arc::new(FakeAccess::default());
        let auth = DelegatedAuth::new(pki.auth_config(), tokens.clone(), access.clone()).expect("auth");
        let tls = tls.unwrap_or_else(|| pki.server_files());
        let mut config = AdapterConfig::new("127.0.0.1:0".parse().expect("addr"), tls);
        tune(&mut config);
        let mut adapter = MetricsAdapter::bind(config, Arc::new(auth), provider.clone())
            .await
            .expect("bind");
        if let Some(delegate) = delegate {
            adapter = adapter.with_delegate(delegate);
        }
        let observed = Arc::new(Observed::default());
        adapter = adapter.with_observer(observed.clone());
        let addr = adapter.local_addr();
        let server_roots = adapter.serving_certificates().to_vec();
        let (stop, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let stopped = tokio::spawn(adapter.run(async move {
            let _ = stopped_rx.await;
        }));
        Self {
            pki,
            addr,
            server_roots,
            provider,
            tokens,
            access,
            observed,
            stop: Some(stop),
            stopped: Some(stopped),
        }
    }

    fn client(&self) -> Client {
        Client {
            addr: self.addr,
            roots: self.server_roots_for_client(),
            cert: None,
            h2: false,
            tls12_only: false,
        }
    }

    fn server_roots_for_client(&self) -> Vec<CertificateDer<'static>> {
        // Files: the leaf is signed by the server CA. Self-signed: trust the leaf itself.
        let mut roots = vec![self.pki.server_ca.cert.clone()];
        roots.extend(self.server_roots.iter().cloned());
        roots
    }

    fn front_proxy(&self) -> Client {
        self.client()
            .with_cert(self.pki.front_proxy_ca.client("front-proxy-client", &[]))
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), stopped).await;
            assert!(
                matches!(result, Ok(Ok(Ok(())))),
                "adapter did not stop cleanly: {result:?}"
            );
        }
    }
}

#[derive(Clone)]
struct Client {
    addr: std::net::SocketAddr,
    roots: Vec<CertificateDer<'static>>,
    cert: Option<Arc<Leaf>>,
    h2: bool,
    tls12_only: bool,
}

struct Reply {
    status: StatusCode,
    version: Version,
    content_type: String,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a Kubernetes Status reply and returns its message.
    fn status_object(&self, code: u16, reason: &str) -> String {
        assert_eq!(self.status.as_u16(), code, "body: {}", self.text());
        assert_eq!(self.content_type, "application/json");
        let body = self.json();
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["code"], code);
        assert_eq!(body["reason"], reason);
        body["message"].as_str().expect("message").to_owned()
    }
}

impl Client {
    fn with_cert(mut self, leaf: Leaf) -> Self {
        self.cert = Some(Arc::new(leaf));
        self
    }

    fn h2(mut self) -> Self {
        self.h2 = true;
        self
    }

    fn tls_config(&self) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut roots = rustls::RootCertStore::empty();
        for root in &self.roots {
            roots.add(root.clone()).expect("root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match &self.cert {
            Some(leaf) => builder
                .with_client_auth_cert(leaf.chain.clone(), leaf.key())
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![if self.h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        config
    }

    async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, path, headers).await
    }

    async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request_as("localhost", method, path, headers).await
    }

    async fn request_as(
        &self,
        server_name: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let connector = TlsConnector::from(Arc::new(self.tls_config()));
        let name = ServerName::try_from(server_name.to_owned()).expect("server name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let mut builder = Request::builder().method(method);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = if self.h2 {
            assert_eq!(negotiated.as_deref(), Some(&b"h2"[..]), "ALPN h2 not negotiated");
            let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(connection);
            let request = builder
                .uri(format!("https://localhost{path}"))
                .body(Empty::<Bytes>::new())
                .expect("request");
            tokio::time::timeout(Duration::from_secs(20), sender.send_request(request)).await
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(connection);
            let request = builder
                .uri(path)
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .expect("request");
            tokio::time::timeout(Duration::from_secs(20), sender.send_request(request)).await
        };
        let response = response.expect("reply within 20 s").expect("response");
        let status = response.status();
        let version = response.version();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            version,
            content_type,
            headers,
            body,
        }
    }
}

const METRIC_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/s0-kafka-orders";

fn metric_path(metric: &str, selector: &str) -> String {
    let encoded: String =
        percent_encoding::utf8_percent_encode(selector, percent_encoding::NON_ALPHANUMERIC).collect();
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{metric}?labelSelector={encoded}")
}

const AGGREGATOR: &[(&str, &str)] = &[
    ("X-Remote-User", "system:kube-aggregator"),
    ("X-Remote-Group", "system:masters"),
];
const HPA_VIA_PROXY: &[(&str, &str)] = &[
    (
        "X-Remote-User",
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    ),
    ("X-Remote-Group", "system:serviceaccounts"),
    ("X-Remote-Group", "system:serviceaccounts:kube-system"),
    ("X-Remote-Extra-Authentication.kubernetes.io%2fpod-name", "hpa-0"),
];

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn discovery_documents_have_kubernetes_shapes() {
    let h = Harness::start().await;
    let client = h.front_proxy();

    let apis = client.get_with("/apis", HPA_VIA_PROXY).await;
    assert_eq!(apis.status, StatusCode::OK, "{}", apis.text());
    assert_eq!(apis.content_type, "application/json");
    let group = json!({
        "apiVersion": "v1", "kind": "APIGroup", "name": "external.metrics.k8s.io",
        "versions": [{"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}],
        "preferredVersion": {"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}
    });
    assert_eq!(
        apis.json(),
        json!({"apiVersion": "v1", "kind": "APIGroupList", "groups": [group.clone()]})
    );

    let group_doc = client
        .get_with("/apis/external.metrics.k8s.io", HPA_VIA_PROXY)
        .await;
    assert_eq!(group_doc.status, StatusCode::OK);
    assert_eq!(group_doc.json(), group);

    let resources = client
        .get_with("/apis/external.metrics.k8s.io/v1beta1", HPA_VIA_PROXY)
        .await;
    assert_eq!(resources.status, StatusCode::OK);
    assert_eq!(
        resources.json(),
        json!({
            "apiVersion": "v1", "kind": "APIResourceList", "groupVersion": "external.metrics.k8s.io/v1beta1",
            "resources": [{"name": "externalmetrics", "singularName": "", "namespaced": true,
                           "kind": "ExternalMetricValueList", "verbs": ["get"]}]
        })
    );

    // Discovery is authorized as non-resource paths, verb get.
    let seen = h.access.seen.lock().expect("lock").clone();
    let paths: Vec<_> = seen
        .iter()
        .map(|(_, a)| match a {
            RequestAttributes::NonResource { path, verb } => (path.clone(), verb.clone()),
            other => panic!("unexpected attributes {other:?}"),
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            ("/apis".to_owned(), "get".to_owned()),
            ("/apis/external.metrics.k8s.io".to_owned(), "get".to_owned()),
            (
                "/apis/external.metrics.k8s.io/v1beta1".to_owned(),
                "get".to_owned()
            ),
        ]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn metric_value_list_json_quantities_labels_and_lower_casing() {
    let h = Harness::start().await;
    let client = h.front_proxy();

    let path = metric_path("S0-Kafka-ORDERS", "scaledobject.ebb.dev/name=orders,app=shop");
    let reply = client.get_with(&path, HPA_VIA_PROXY).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(
        reply.text(),
        r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":[{"metricName":"s0-kafka-orders","metricLabels":{"app":"shop","scaledobject.ebb.dev/name":"orders"},"timestamp":"2026-11-24T09:30:00Z","value":"1500m"}]}"#
    );
    assert_eq!(
        h.provider.calls.lock().expect("lock").last().cloned(),
        Some(("default".into(), "orders".into(), "s0-kafka-orders".into()))
    );

    // An integer value has no suffix; KEDA's label names the ScaledObject too.
    let reply = client
        .get_with(
            &metric_path("s1-big", "scaledobject.keda.sh/name=orders"),
            HPA_VIA_PROXY,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["items"][0]["value"], "42");
    assert_eq!(body["items"][0]["metricName"], "s1-big");
    assert_eq!(
        body["items"][0]["metricLabels"],
        json!({"scaledobject.keda.sh/name": "orders"})
    );

    // The SAR asked for the (lower-cased) metric as a resource, with the front proxy's user.
    let seen = h.access.seen.lock().expect("lock").clone();
    let (user, attributes) = seen.first().expect("a SubjectAccessReview").clone();
    assert_eq!(
        attributes,
        RequestAttributes::Resource {
            namespace: "default".into(),
            resource: "s0-kafka-orders".into(),
            verb: ebb_metrics_adapter::METRIC_VERB.into(),
        }
    );
    assert_eq!(
        user.username,
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    );
    assert_eq!(
        user.groups,
        vec![
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:authenticated"
        ]
    );
    assert_eq!(
        user.extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["hpa-0".to_owned()])
    );
    h.shutdown().await;
}

#[tokio::test]
async fn front_proxy_certificate_with_allowed_cn_trusts_headers() {
    let h = Harness::start().await;
    let reply = h.front_proxy().get_with(METRIC_PATH, HPA_VIA_PROXY).await;
    // No selector: authenticated and authorized, then 400 for the missing label.
    reply.status_object(400, "BadRequest");
    let ok = h
        .front_proxy()
        .get_with(
            &metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=orders"),
            HPA_VIA_PROXY,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    h.shutdown().await;
}

#[tokio::test]
async fn front_proxy_headers_with_a_certificate_from_another_ca_are_refused() {
    let h = Harness::start().await;
    let rogue = h
        .client()
        .with_cert(h.pki.rogue_ca.client("front-proxy-client", &[]));
    let reply = rogue
        .get_with("/apis/external.metrics.k8s.io/v1beta1", AGGREGATOR)
        .await;
    reply.status_object(401, "Unauthorized");
    assert_eq!(h.access.calls.load(Ordering::SeqCst), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn front_proxy_certificate_with_cn_not_allowed_is_refused() {
    let h = Harness::start().await;
    let other = h
        .client()
        .with_cert(h.pki.front_proxy_ca.client("someone-else", &[]));
    let reply = other
        .get_with("/apis/external.metrics.k8s.io/v1beta1", AGGREGATOR)
        .await;
    reply.status_object(401, "Unauthorized");
    h.shutdown().await;
}

#[tokio::test]
async fn no_certificate_and_no_token_is_refused_even_with_remote_user_headers() {
    let h = Harness::start().await;
    let anonymous = h.client();
    anonymous
        .get("/apis/external.metrics.k8s.io/v1beta1")
        .await
        .status_object(401, "Unauthorized");
    anonymous
        .get_with(METRIC_PATH, AGGREGATOR)
        .await
        .status_object(401, "Unauthorized");
    // A front-proxy certificate without a user header does not authenticate either.
    h.front_proxy()
        .get("/apis")
        .await
        .status_object(401, "Unauthorized");
    assert_eq!(h.tokens.calls.load(Ordering::SeqCst), 0);
    assert_eq!(h.access.calls.load(Ordering::SeqCst), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn client_ca_certificate_authenticates_as_cn_and_o_and_ignores_remote_headers() {
    let h = Harness::start().await;
    let alice = h.client().with_cert(h.pki.client_ca.client("alice", &["team-a"]));
    let reply = alice.get_with("/apis", AGGREGATOR).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = h.access.seen.lock().expect("lock").clone();
    assert_eq!(
        seen.len(),
        1,
        "system:masters from the header must not short-circuit"
    );
    assert_eq!(seen[0].0.username, "alice");
    assert_eq!(seen[0].0.groups, vec!["team-a", "system:authenticated"]);
    h.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_go_through_token_review_with_a_cache() {
    let h = Harness::start().await;
    let client = h.client();
    let path = metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=orders");
    for _ in 0..3 {
        let reply = client
            .get_with(&path, &[("Authorization", "Bearer good-token")])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert_eq!(h.tokens.calls.load(Ordering::SeqCst), 1, "token reviews cached");
    assert_eq!(
        h.access.calls.load(Ordering::SeqCst),
        1,
        "access decisions cached"
    );
    let (user, _) = h.access.seen.lock().expect("lock")[0].clone();
    assert_eq!(
        user.groups,
        vec!["system:serviceaccounts", "system:authenticated"]
    );

    for _ in 0..2 {
        client
            .get_with(&path, &[("Authorization", "Bearer bad-token")])
            .await
            .status_object(401, "Unauthorized");
    }
    assert_eq!(h.tokens.calls.load(Ordering::SeqCst), 2, "rejections cached too");
    client
        .get_with(&path, &[("Authorization", "Basic Zm9vOmJhcg==")])
        .await
        .status_object(401, "Unauthorized");
    assert_eq!(h.tokens.calls.load(Ordering::SeqCst), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn subject_access_review_denial_is_forbidden_and_cached() {
    let h = Harness::start().await;
    let client = h.client();
    let path = metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=orders");
    for _ in 0..2 {
        let message = client
            .get_with(&path, &[("Authorization", "Bearer mallory-token")])
            .await
            .status_object(403, "Forbidden");
        assert!(
            message.contains("User \"mallory\" cannot list resource \"s0-kafka-orders\""),
            "{message}"
        );
        assert!(message.contains("no RBAC policy matched"), "{message}");
    }
    assert_eq!(h.access.calls.load(Ordering::SeqCst), 1, "denials cached");
    assert!(
        h.provider.calls.lock().expect("lock").is_empty(),
        "provider never asked for a denied request"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn system_masters_skip_subject_access_review() {
    let h = Harness::start().await;
    let reply = h
        .front_proxy()
        .get_with("/apis/external.metrics.k8s.io/v1beta1", AGGREGATOR)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let path = metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=orders");
    let reply = h
        .client()
        .get_with(&path, &[("Authorization", "Bearer admin-token")])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(h.access.calls.load(Ordering::SeqCst), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn request_errors_are_kubernetes_statuses() {
    let h = Harness::start_with(|c| c.request_timeout = Duration::from_millis(300), None).await;
    let client = h.front_proxy();
    let get = |path: String| {
        let client = client.clone();
        async move { client.get_with(&path, AGGREGATOR).await }
    };

    let message = get(metric_path(
        "s0-kafka-orders",
        "scaledobject.ebb.dev/name in (orders",
    ))
    .await
    .status_object(400, "BadRequest");
    assert!(message.contains("labelSelector"), "{message}");
    let message = get(metric_path("s0-kafka-orders", "app=shop"))
        .await
        .status_object(400, "BadRequest");
    assert!(message.contains("scaledobject.ebb.dev/name"), "{message}");
    let message = get(format!("{METRIC_PATH}?labelSelector="))
        .await
        .status_object(400, "BadRequest");
    assert!(message.contains("scaledobject.ebb.dev/name"), "{message}");

    let message = get(metric_path("s9-nope", "scaledobject.ebb.dev/name=orders"))
        .await
        .status_object(404, "NotFound");
    assert!(message.contains("s9-nope"), "{message}");
    let message = get(metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=ghost"))
        .await
        .status_object(404, "NotFound");
    assert!(message.contains("ghost"), "{message}");
    let message = get(metric_path("s2-down", "scaledobject.ebb.dev/name=orders"))
        .await
        .status_object(503, "ServiceUnavailable");
    assert!(message.contains("broker unreachable"), "{message}");
    get(metric_path("s0-x", "scaledobject.ebb.dev/name=slow"))
        .await
        .status_object(504, "Timeout");

    get("/openapi/v2".into()).await.status_object(404, "NotFound");
    get("/openapi/v3".into()).await.status_object(404, "NotFound");
    get("/apis/apps/v1".into()).await.status_object(404, "NotFound");
    get("/apis/external.metrics.k8s.io/v1beta1/namespaces/default".into())
        .await
        .status_object(404, "NotFound");

    let post = client.request(Method::POST, "/apis", AGGREGATOR).await;
    post.status_object(405, "MethodNotAllowed");
    h.shutdown().await;
}

#[tokio::test]
async fn every_answered_request_reaches_the_observer_with_its_kind_and_status() {
    let h = Harness::start_with(|c| c.request_timeout = Duration::from_millis(300), None).await;
    let client = h.front_proxy();
    let ok = client
        .get_with(
            &metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=orders"),
            AGGREGATOR,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    client
        .get_with(&metric_path("s0-x", "scaledobject.ebb.dev/name=slow"), AGGREGATOR)
        .await
        .status_object(504, "Timeout");
    client.get_with("/apis", AGGREGATOR).await;
    client.get_with("/openapi/v2", AGGREGATOR).await;
    h.client().get("/healthz").await;
    // No identity: refused, and still observed.
    h.client().get("/apis").await;
    let seen: Vec<(RequestKind, u16)> = h
        .observed
        .0
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, s, _)| (*k, *s))
        .collect();
    assert_eq!(
        seen,
        vec![
            (RequestKind::Metric, 200),
            (RequestKind::Metric, 504),
            (RequestKind::Discovery, 200),
            (RequestKind::Other, 404),
            (RequestKind::Health, 200),
            (RequestKind::Discovery, 401),
        ]
    );
    let timed_out = h.observed.0.lock().expect("lock")[1].2;
    assert!(timed_out >= Duration::from_millis(300), "{timed_out:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn health_endpoints_need_no_authentication() {
    let h = Harness::start().await;
    for path in ["/healthz", "/readyz", "/livez"] {
        let reply = h.client().get(path).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "ok");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn http2_over_tls_with_alpn() {
    let h = Harness::start().await;
    let client = h.front_proxy().h2();
    let reply = client
        .get_with(
            &metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=orders"),
            AGGREGATOR,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.json()["items"][0]["value"], "1500m");
    let reply = h.front_proxy().get_with("/apis", AGGREGATOR).await;
    assert_eq!(reply.version, Version::HTTP_11);
    h.shutdown().await;
}

/// A ClientHello offering only `version` (no supported_versions extension), otherwise a valid
/// TLS 1.2 hello for the adapter's ECDSA certificate.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut extensions = Vec::new();
    let mut extension = |kind: u16, data: &[u8]| {
        extensions.extend(kind.to_be_bytes());
        extensions.extend(u16::try_from(data.len()).expect("len").to_be_bytes());
        extensions.extend(data);
    };
    extension(0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]); // supported_groups: x25519, secp256r1
    extension(0x000b, &[0x01, 0x00]); // ec_point_formats: uncompressed
    extension(0x000d, &[0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]); // signature_algorithms
    extension(0x0017, &[]); // extended_master_secret
    extension(0xff01, &[0x00]); // renegotiation_info
    let mut body = version.to_vec();
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    body.extend([0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]); // ECDHE-ECDSA/RSA-AES128-GCM-SHA256
    body.extend([0x01, 0x00]); // null compression
    body.extend(u16::try_from(extensions.len()).expect("len").to_be_bytes());
    body.extend(extensions);
    let len = u32::try_from(body.len()).expect("len").to_be_bytes();
    let mut handshake = vec![0x01, len[1], len[2], len[3]];
    handshake.extend(body);
    let len = u16::try_from(handshake.len()).expect("len").to_be_bytes();
    let mut record = vec![0x16, 0x03, 0x01, len[0], len[1]];
    record.extend(handshake);
    record
}

/// The first bytes the server answers a raw ClientHello with.
async fn answer_to(addr: std::net::SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(hello).await.expect("write");
    let mut reply = vec![0u8; 7];
    let mut read = 0;
    while read < reply.len() {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut reply[read..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => read += n,
            Err(_) => panic!("no answer to a ClientHello within 5 s"),
        }
    }
    reply.truncate(read);
    reply
}

#[tokio::test]
async fn tls_below_1_2_is_refused() {
    let h = Harness::start().await;
    // The same hello as TLS 1.2 gets a ServerHello (handshake record) ...
    let answer = answer_to(h.addr, &client_hello([0x03, 0x03])).await;
    assert_eq!(
        answer.first(),
        Some(&0x16),
        "TLS 1.2 hello not answered with a handshake: {answer:?}"
    );
    // ... as TLS 1.1 or 1.0 a fatal protocol_version alert.
    for version in [[0x03, 0x02], [0x03, 0x01]] {
        let answer = answer_to(h.addr, &client_hello(version)).await;
        assert_eq!(
            answer.first(),
            Some(&0x15),
            "expected an alert record: {answer:?}"
        );
        assert_eq!(
            answer.get(5..7),
            Some(&[2u8, 70][..]),
            "expected a fatal protocol_version alert: {answer:?}"
        );
    }

    // TLS 1.2 is still accepted.
    let mut tls12 = h.front_proxy();
    tls12.tls12_only = true;
    let reply = tls12.get_with("/apis", AGGREGATOR).await;
    assert_eq!(reply.status, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn self_signed_certificate_covers_localhost_and_extra_names() {
    let tls = TlsSource::SelfSigned {
        dns_names: vec!["ebb-metrics.ebb-system.svc".into()],
    };
    let h = Harness::start_with(|_| {}, Some(tls)).await;
    assert_eq!(h.server_roots.len(), 1);
    for name in ["localhost", "127.0.0.1", "ebb-metrics.ebb-system.svc"] {
        let reply = h
            .front_proxy()
            .request_as(name, Method::GET, "/apis", AGGREGATOR)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "via {name}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn concurrent_requests_share_nothing_but_work() {
    let h = Harness::start().await;
    let client = h.front_proxy().h2();
    let path = metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=orders");
    let replies = futures_join_all((0..20).map(|_| {
        let client = client.clone();
        let path = path.clone();
        async move { client.get_with(&path, HPA_VIA_PROXY).await.status }
    }))
    .await;
    assert!(replies.iter().all(|s| *s == StatusCode::OK), "{replies:?}");
    h.shutdown().await;
}

async fn futures_join_all<F: std::future::Future<Output = StatusCode> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<StatusCode> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn shutdown_does_not_wait_for_stuck_connections() {
    let h = Harness::start_with(|c| c.shutdown_grace = Duration::from_millis(200), None).await;
    // One connection stuck before the TLS handshake, one idle HTTP/1 keep-alive connection.
    let _stuck = TcpStream::connect(h.addr).await.expect("connect");
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let connector = TlsConnector::from(Arc::new(h.client().tls_config()));
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 handshake");
    tokio::spawn(connection);
    let request = Request::get("/healthz")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let reply = sender.send_request(request).await.expect("reply");
    assert_eq!(reply.status(), StatusCode::OK);
    // `sender` stays alive: the connection is idle, kept alive.
    let started = std::time::Instant::now();
    h.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// Finding 12: a namespace or metric segment that decodes to another path is a 400 and never
/// reaches the provider (whose forwarder would otherwise put it into the leader's URL); a normal
/// request still works.
#[tokio::test]
async fn traversal_in_namespace_or_metric_is_refused_before_the_provider() {
    let h = Harness::start().await;
    let client = h.front_proxy();
    let selector = "?labelSelector=scaledobject.ebb.dev%2Fname%3Dorders";
    let base = "/apis/external.metrics.k8s.io/v1beta1/namespaces";
    let long = "x".repeat(300);
    let paths = [
        format!("{base}/team-a%2F..%2Fdefault/s0-kafka-orders{selector}"),
        format!("{base}/default/..%2F..%2Fnamespaces%2Fdefault%2Fs0-kafka-orders{selector}"),
        format!("{base}/default/s0-kafka-orders%2F..{selector}"),
        format!("{base}/%2E%2E/s0-kafka-orders{selector}"),
        format!("{base}/default/%2e%2e{selector}"),
        format!("{base}/default/s0%00{selector}"),
        format!("{base}/d%C3%A9fault/s0-kafka-orders{selector}"),
        format!("{base}/default/{long}{selector}"),
        format!("{base}//s0-kafka-orders{selector}"),
    ];
    for path in &paths {
        let reply = client.get_with(path, AGGREGATOR).await;
        let message = reply.status_object(400, "BadRequest");
        assert!(
            message.contains("invalid namespace or metric name"),
            "{path}: {message}"
        );
    }
    assert!(
        h.provider.calls.lock().expect("lock").is_empty(),
        "no bad path reaches the provider"
    );
    let reply = client
        .get_with(&format!("{base}/default/s0-kafka-orders{selector}"), AGGREGATOR)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Chaining to a delegate adapter

/// A delegate that records what it was asked and answers like another adapter.
#[derive(Default)]
struct FakeDelegate {
    seen: Mutex<Vec<DelegateRequest>>,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Delegate for FakeDelegate {
    async fn get(&self, request: DelegateRequest) -> Result<DelegateAnswer, DelegateError> {
        let path = request.path_and_query.clone();
        self.seen.lock().expect("lock").push(request);
        if self.down.load(Ordering::SeqCst) {
            return Err(DelegateError::Unavailable("connection refused".into()));
        }
        let json = |status: StatusCode, body: Value| DelegateAnswer {
            status,
            content_type: Some(http::HeaderValue::from_static("application/json")),
            body: Bytes::from(body.to_string()),
        };
        Ok(if path == "/apis/external.metrics.k8s.io/v1beta1" {
            json(
                StatusCode::OK,
                json!({"kind": "APIResourceList", "apiVersion": "v1",
                       "groupVersion": "external.metrics.k8s.io/v1beta1",
                       "resources": [{"name": "externalmetrics", "singularName": "", "namespaced": true,
                                      "kind": "ExternalMetricValueList", "verbs": ["get"]},
                                     {"name": "queue_depth", "singularName": "", "namespaced": true,
                                      "kind": "ExternalMetricValueList", "verbs": ["get"]}]}),
            )
        } else if path.contains("/forbidden-here") {
            json(
                StatusCode::FORBIDDEN,
                json!({"kind": "Status", "code": 403, "reason": "Forbidden"}),
            )
        } else {
            json(
                StatusCode::OK,
                json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1",
                       "metadata": {}, "items": [{"metricName": "queue_depth", "metricLabels": {},
                       "timestamp": "2026-11-24T09:30:00Z", "value": "7"}]}),
            )
        })
    }
}

impl FakeDelegate {
    fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.path_and_query.clone())
            .collect()
    }
}

async fn chained() -> (Harness, Arc<FakeDelegate>) {
    let delegate = Arc::new(FakeDelegate::default());
    let h = Harness::start_full(|_| {}, None, Some(delegate.clone())).await;
    (h, delegate)
}

#[tokio::test]
async fn requests_ebb_does_not_own_go_to_the_delegate_as_the_caller() {
    let (h, delegate) = chained().await;
    let client = h.front_proxy();

    // A selector naming no ScaledObject (prometheus-adapter's, Datadog's): the delegate answers.
    let foreign =
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/queue_depth?labelSelector=app%3Dshop";
    let reply = client.get_with(foreign, HPA_VIA_PROXY).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["items"][0]["value"], "7");
    let seen = delegate.seen.lock().expect("lock")[0].clone();
    assert_eq!(
        seen.path_and_query, foreign,
        "path and the caller's query unchanged"
    );
    assert_eq!(
        seen.user.username,
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    );
    let header = |name: &str| -> Vec<String> {
        seen.front_proxy
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect()
    };
    assert_eq!(
        header("x-remote-user"),
        ["system:serviceaccount:kube-system:horizontal-pod-autoscaler"]
    );
    assert!(header("x-remote-group").contains(&"system:serviceaccounts:kube-system".to_owned()));
    assert_eq!(
        header("x-remote-extra-authentication.kubernetes.io%2fpod-name"),
        ["hpa-0"]
    );

    // The provider's "not mine" (another namespace, another ScaledObject or metric).
    let reply = client
        .get_with(
            &metric_path("s3-foreign", "scaledobject.ebb.dev/name=orders"),
            HPA_VIA_PROXY,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let team_b = "/apis/external.metrics.k8s.io/v1beta1/namespaces/team-b/s0-kafka-orders?labelSelector=scaledobject.keda.sh%2Fname%3Dorders";
    assert_eq!(
        client.get_with(team_b, HPA_VIA_PROXY).await.status,
        StatusCode::OK
    );
    assert_eq!(delegate.paths().len(), 3);

    // ebb's own metrics, and its own 404s and 503s, never reach the delegate.
    let own = client
        .get_with(
            &metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=orders"),
            HPA_VIA_PROXY,
        )
        .await;
    assert_eq!(own.json()["items"][0]["value"], "1500m");
    client
        .get_with(
            &metric_path("s9-nope", "scaledobject.ebb.dev/name=orders"),
            HPA_VIA_PROXY,
        )
        .await
        .status_object(404, "NotFound");
    client
        .get_with(
            &metric_path("s2-down", "scaledobject.ebb.dev/name=orders"),
            HPA_VIA_PROXY,
        )
        .await
        .status_object(503, "ServiceUnavailable");
    assert_eq!(delegate.paths().len(), 3);

    // A caller ebb denies is denied before anything is forwarded.
    let mallory = h
        .client()
        .get_with(foreign, &[("Authorization", "Bearer mallory-token")])
        .await;
    assert_eq!(mallory.status, StatusCode::FORBIDDEN);
    assert_eq!(delegate.paths().len(), 3);

    // The delegate's refusal is passed back as it is.
    let refused = client
        .get_with(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/forbidden-here?labelSelector=a%3Db",
            HPA_VIA_PROXY,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["reason"], "Forbidden");

    // A delegate that cannot be reached: its metrics fail with 503, ebb's are unaffected.
    delegate.down.store(true, Ordering::SeqCst);
    let message = client
        .get_with(foreign, HPA_VIA_PROXY)
        .await
        .status_object(503, "ServiceUnavailable");
    assert!(message.contains("connection refused"), "{message}");
    let own = client
        .get_with(
            &metric_path("s0-kafka-orders", "scaledobject.ebb.dev/name=orders"),
            HPA_VIA_PROXY,
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn a_standby_forwarding_to_its_leader_gets_not_owned_instead_of_a_delegation() {
    let (h, delegate) = chained().await;
    let no_delegate = [
        ("X-Remote-User", "system:serviceaccount:ebb-system:ebb"),
        (NO_DELEGATE_HEADER, "1"),
    ];
    let reply = h
        .front_proxy()
        .get_with(
            &metric_path("s3-foreign", "scaledobject.ebb.dev/name=orders"),
            &no_delegate,
        )
        .await;
    assert_eq!(
        reply.headers.get(NOT_OWNED_HEADER).map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    reply.status_object(404, "NotFound");
    // A selector naming no ScaledObject stays a 400 for such a request.
    h.front_proxy()
        .get_with(&metric_path("queue_depth", "app=shop"), &no_delegate)
        .await
        .status_object(400, "BadRequest");
    assert!(delegate.paths().is_empty(), "{:?}", delegate.paths());
    h.shutdown().await;

    // Without a delegate: not-owned is a 404 that says so.
    let h = Harness::start().await;
    let reply = h
        .front_proxy()
        .get_with(
            &metric_path("s3-foreign", "scaledobject.ebb.dev/name=orders"),
            AGGREGATOR,
        )
        .await;
    assert!(reply.headers.contains_key(NOT_OWNED_HEADER));
    reply.status_object(404, "NotFound");
    h.shutdown().await;
}

#[tokio::test]
async fn discovery_lists_the_union_and_ebbs_own_when_the_delegate_is_down() {
    let (h, delegate) = chained().await;
    let client = h.front_proxy();
    let names = |reply: Reply| -> Vec<String> {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| r["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let version = "/apis/external.metrics.k8s.io/v1beta1";
    assert_eq!(
        names(client.get_with(version, AGGREGATOR).await),
        ["externalmetrics", "queue_depth"]
    );
    // Cached: a second listing does not ask again.
    assert_eq!(names(client.get_with(version, AGGREGATOR).await).len(), 2);
    assert_eq!(delegate.paths(), [version]);
    h.shutdown().await;

    let (h, delegate) = chained().await;
    delegate.down.store(true, Ordering::SeqCst);
    assert_eq!(
        names(h.front_proxy().get_with(version, AGGREGATOR).await),
        ["externalmetrics"]
    );
    h.shutdown().await;
}
