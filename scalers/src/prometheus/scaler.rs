//! The `prometheus` scaler: one instant query per sample, through its shared [`Connection`],
//! read by [`value_of`].
//!
//! Whatever goes wrong before a value is read is an error, never a sample of 0: no connection,
//! a timeout, a status other than 2xx (401/403 are [`ScalerError::Unauthorized`]), a body that is
//! not a successful Prometheus answer. Only the server's own answer "no series" (or NaN/±Inf)
//! becomes 0, with `ignoreNullValues`, as in KEDA.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode, Uri};

use super::answer::{error_text, value_of};
use super::client::{Connection, NamespaceSlots, PrometheusClients};
use super::config::PrometheusConfig;
use crate::common::http::USER_AGENT;
use crate::params::{ParsedParams, Thresholds};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// One prometheus trigger: its query request and thresholds.
pub struct PrometheusScaler {
    connection: Arc<Connection>,
    /// Its namespace's query slots.
    slots: NamespaceSlots,
    /// The query's request URI (may carry tenant query parameters: never shown).
    uri: Uri,
    /// `<serverAddress>/api/v1/query`, credentials masked: what errors name.
    shown: String,
    /// Every header sent: custom headers, then the authentication (values marked sensitive).
    headers: HeaderMap,
    ignore_null_values: bool,
    timeout: Duration,
    /// Credentials to redact from server-written text.
    secrets: Vec<String>,
    thresholds: Thresholds,
}

impl PrometheusScaler {
    /// Builds the scaler from the trigger's parsed parameters and thresholds, on the client of
    /// its server, credentials and TLS settings in `clients`; its queries count against
    /// `namespace`'s slots.
    pub fn new(
        clients: &PrometheusClients,
        params: &ParsedParams,
        thresholds: Thresholds,
        namespace: &str,
    ) -> Result<Self, ScalerError> {
        let config = PrometheusConfig::try_from(params)?;
        let connection = clients.connection(&config)?;
        let shown = config.server.shown().to_string();
        let uri = config
            .server
            .query_uri(
                &config.query,
                config.namespace.as_deref(),
                &config.query_parameters,
            )
            .map_err(|e| {
                ScalerError::InvalidConfig(format!(
                    "prometheus: the query URL for {shown} is not valid ({e})"
                ))
            })?;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        for (name, value) in &config.custom_headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some((name, value)) = &config.auth.custom {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(value) = &config.auth.authorization {
            headers.insert(header::AUTHORIZATION, value.clone());
        }
        let mut secrets = config.auth.secrets.clone();
        // Longest first, so that a secret containing another is redacted whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Self {
            connection,
            slots: clients.namespace_slots(namespace),
            uri,
            shown,
            headers,
            ignore_null_values: config.ignore_null_values,
            timeout: config.timeout.unwrap_or(clients.timeout()),
            secrets,
            thresholds,
        })
    }

    /// The endpoint errors name: `<serverAddress>/api/v1/query`, credentials masked.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The timeout of one query.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Server-written text with the trigger's credentials taken out.
    fn redacted(&self, text: String) -> String {
        self.secrets
            .iter()
            .filter(|s| s.len() >= 4)
            .fold(text, |text, secret| text.replace(secret.as_str(), "<redacted>"))
    }

    fn request(&self) -> Result<Request<Empty<Bytes>>, ScalerError> {
        let mut request = Request::get(self.uri.clone())
            .body(Empty::<Bytes>::new())
            .map_err(|e| {
                ScalerError::InvalidConfig(format!("cannot build a request for {}: {e}", self.shown))
            })?;
        *request.headers_mut() = self.headers.clone();
        Ok(request)
    }

    /// The query's value: see the module's documentation.
    pub async fn query(&self) -> Result<f64, ScalerError> {
        let shown = self.shown.as_str();
        // Waiting for a slot leaves half the timeout for the query itself.
        let _slot = self.slots.enter(shown, self.timeout / 2).await?;
        let answer = self.connection.get(self.request()?, shown, self.timeout).await?;
        let status = answer.status;
        let body = answer.body.bytes();
        if !status.is_success() {
            let mut message = format!("HTTP status {status}");
            if let Some(text) = error_text(body) {
                message = format!("{message}: {}", self.redacted(text));
            }
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ScalerError::unauthorized(shown, message),
                _ => ScalerError::bad_response(shown, message),
            });
        }
        value_of(body, self.ignore_null_values)
            .map_err(|e| ScalerError::bad_response(shown, self.redacted(e.to_string())))
    }
}

impl fmt::Debug for PrometheusScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusScaler")
            .field("endpoint", &self.shown)
            .field("ignore_null_values", &self.ignore_null_values)
            .field("timeout", &self.timeout)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Scaler for PrometheusScaler {
    fn trigger_type(&self) -> &'static str {
        "prometheus"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.thresholds.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        let value = self.query().await?;
        Ok(TriggerSample::with_activation(value, self.thresholds.activation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::budget::ByteBudget;
    use crate::params::tests_support::parse_with;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// What the test server answers: a status and a body, or nothing for ten seconds.
    #[derive(Clone)]
    enum Reply {
        With(u16, String),
        Hang,
    }

    /// A one-route HTTP/1.1 server on loopback that records each request's head.
    struct Server {
        base: String,
        heads: Arc<Mutex<Vec<String>>>,
    }

    async fn server(reply: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (reply, seen) = (reply.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let mut read = 0;
                        while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf[read..]).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => read += n,
                            }
                        }
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..read]).into_owned());
                        let (status, body) = match &reply {
                            Reply::Hang => {
                                tokio::time::sleep(Duration::from_secs(10)).await;
                                return;
                            }
                            Reply::With(status, body) => (*status, body.clone()),
                        };
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if conn.write_all(head.as_bytes()).await.is_err()
                            || conn.write_all(body.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Server { base, heads }
    }

    fn vector(value: &str) -> String {
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{value}"]}}]}}}}"#
        )
    }

    fn scaler(
        clients: &PrometheusClients,
        server: &str,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<PrometheusScaler, ScalerError> {
        scaler_in(clients, server, meta, auth, "team-a")
    }

    fn scaler_in(
        clients: &PrometheusClients,
        server: &str,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
        namespace: &str,
    ) -> Result<PrometheusScaler, ScalerError> {
        let mut all = vec![
            ("serverAddress", server),
            ("query", "sum(up)"),
            ("threshold", "2"),
        ];
        all.extend_from_slice(meta);
        let params = parse_with(&crate::prometheus::DECL, &all, auth).unwrap();
        let thresholds = (crate::prometheus::DECL.thresholds)(&params);
        PrometheusScaler::new(clients, &params, thresholds, namespace)
    }

    fn clients() -> PrometheusClients {
        PrometheusClients::new(Duration::from_secs(2))
    }

    #[tokio::test]
    async fn the_query_carries_its_parameters_headers_and_credentials() {
        let s = server(Reply::With(200, vector("7.5"))).await;
        let clients = clients();
        let bearer = scaler(
            &clients,
            &format!("{}/prefix/", s.base),
            &[
                ("namespace", "team-a"),
                ("queryParameters", "dedup=true"),
                ("customHeaders", "X-Scope-OrgID=tenant-1"),
                ("activationThreshold", "7.5"),
                ("authModes", "bearer,custom"),
            ],
            &[
                ("bearerToken", "t0ken\n"),
                ("customAuthHeader", "X-Api-Key"),
                ("customAuthValue", "k3y"),
            ],
        )
        .unwrap();
        let sample = bearer.sample().await.unwrap();
        assert_eq!(
            sample,
            TriggerSample {
                value: 7.5,
                active: false
            },
            "7.5 is not above 7.5"
        );
        let head = s.heads.lock().unwrap()[0].to_ascii_lowercase();
        assert!(
            head.starts_with(
                "get /prefix/api/v1/query?query=sum%28up%29&namespace=team-a&dedup=true http/1.1\r\n"
            ),
            "{head}"
        );
        for line in [
            "authorization: bearer t0ken\r\n",
            "x-scope-orgid: tenant-1\r\n",
            "x-api-key: k3y\r\n",
            "accept: application/json\r\n",
        ] {
            assert!(head.contains(line), "{line:?} not in {head}");
        }
        assert!(!head.contains("time="), "{head}");
        let basic = scaler(
            &clients,
            &s.base,
            &[("authModes", "basic")],
            &[("username", "u"), ("password", "p")],
        )
        .unwrap();
        assert_eq!(basic.sample().await.unwrap().value, 7.5);
        let head = s.heads.lock().unwrap()[1].to_ascii_lowercase();
        assert!(head.contains("authorization: basic dtpw\r\n"), "{head}");
        assert_eq!(clients.len(), 2, "one client per credentials");
    }

    #[tokio::test]
    async fn clients_are_shared_per_server_credentials_and_tls_and_go_with_their_triggers() {
        let clients = clients();
        let token = |t: &'static str| [("bearerToken", t)];
        let bearer = [("authModes", "bearer")];
        let a1 = scaler(&clients, "http://127.0.0.1:1", &bearer, &token("a")).unwrap();
        let a2 = scaler(&clients, "http://127.0.0.1:1/other", &bearer, &token("a")).unwrap();
        assert!(
            Arc::ptr_eq(&a1.connection, &a2.connection),
            "same origin and credentials"
        );
        let b = scaler(&clients, "http://127.0.0.1:1", &bearer, &token("b")).unwrap();
        let other_port = scaler(&clients, "http://127.0.0.1:2", &bearer, &token("a")).unwrap();
        let unsafe_ssl = scaler(
            &clients,
            "http://127.0.0.1:1",
            &[("authModes", "bearer"), ("unsafeSsl", "true")],
            &token("a"),
        )
        .unwrap();
        assert_eq!(clients.len(), 4);
        drop((a1, b, other_port, unsafe_ssl));
        assert_eq!(clients.len(), 1);
        drop(a2);
        assert!(clients.is_empty());
    }

    #[tokio::test]
    async fn failures_are_errors_never_zero() {
        let clients = clients();
        // Nothing listens on the port: unreachable.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = scaler(&clients, &format!("http://127.0.0.1:{port}"), &[], &[])
            .unwrap()
            .sample()
            .await
            .unwrap_err();
        assert!(matches!(e, ScalerError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("/api/v1/query:"), "{e}");

        // A query error: Prometheus's own message, with the trigger's token taken out.
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error near s3cr3t-token"}"#;
        let s = server(Reply::With(400, body.into())).await;
        let e = scaler(
            &clients,
            &s.base,
            &[("authModes", "bearer")],
            &[("bearerToken", "s3cr3t-token")],
        )
        .unwrap()
        .sample()
        .await
        .unwrap_err();
        assert!(matches!(e, ScalerError::BadResponse { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("HTTP status 400") && text.contains("bad_data: parse error near <redacted>"),
            "{text}"
        );
        assert!(!text.contains("s3cr3t") && !text.contains("query="), "{text}");

        let s = server(Reply::With(401, String::new())).await;
        let e = scaler(&clients, &s.base, &[], &[])
            .unwrap()
            .sample()
            .await
            .unwrap_err();
        assert!(matches!(e, ScalerError::Unauthorized { .. }), "{e}");
        let s = server(Reply::With(503, "<html>down</html>".into())).await;
        let e = scaler(&clients, &s.base, &[], &[])
            .unwrap()
            .sample()
            .await
            .unwrap_err();
        assert!(
            matches!(e, ScalerError::BadResponse { .. }) && !e.to_string().contains("html"),
            "{e}"
        );
        // A 200 that is not a Prometheus answer (a proxy's page, `{}`): an error, not KEDA's 0.
        for body in ["{}", "<html>login</html>"] {
            let s = server(Reply::With(200, body.into())).await;
            let e = scaler(&clients, &s.base, &[], &[])
                .unwrap()
                .sample()
                .await
                .unwrap_err();
            assert!(matches!(e, ScalerError::BadResponse { .. }), "{body}: {e}");
        }
        // The server's own "no series" is 0 (ignoreNullValues), or an error without it.
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let s = server(Reply::With(200, empty.into())).await;
        let zero = scaler(&clients, &s.base, &[], &[])
            .unwrap()
            .sample()
            .await
            .unwrap();
        assert_eq!(
            zero,
            TriggerSample {
                value: 0.0,
                active: false
            }
        );
        let strict = scaler(&clients, &s.base, &[("ignoreNullValues", "false")], &[]).unwrap();
        assert!(
            strict
                .sample()
                .await
                .unwrap_err()
                .to_string()
                .contains("no series")
        );
    }

    #[tokio::test]
    async fn answers_are_bounded_in_time_and_size() {
        let s = server(Reply::Hang).await;
        let clients = clients();
        let slow = scaler(&clients, &s.base, &[("timeout", "300ms")], &[]).unwrap();
        let started = std::time::Instant::now();
        let e = slow.sample().await.unwrap_err();
        assert_eq!(e, ScalerError::timeout(slow.shown(), Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(2));

        let huge = format!(
            r#"{{"status":"success","pad":"{}"}}"#,
            "x".repeat(crate::prometheus::MAX_BODY_BYTES)
        );
        let s = server(Reply::With(200, huge)).await;
        let e = scaler(&clients, &s.base, &[], &[])
            .unwrap()
            .sample()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");

        // A full byte budget fails the poll at once.
        let budget = ByteBudget::new(1024);
        let _held = budget.try_reserve(1024).unwrap();
        let tight = PrometheusClients::new(Duration::from_secs(2)).with_budget(budget);
        let s = server(Reply::With(200, vector("1"))).await;
        let e = scaler(&tight, &s.base, &[], &[])
            .unwrap()
            .sample()
            .await
            .unwrap_err();
        assert!(matches!(e, ScalerError::Overloaded { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_namespace_has_a_bounded_share_of_queries_in_flight() {
        let s = server(Reply::Hang).await;
        let clients = PrometheusClients::new(Duration::from_millis(400)).with_per_namespace(2);
        let a: Vec<_> = (0..3)
            .map(|i| scaler(&clients, &format!("{}/a{i}", s.base), &[], &[]).unwrap())
            .collect();
        let b = scaler_in(&clients, &format!("{}/b", s.base), &[], &[], "team-b").unwrap();
        let (ra, rb) = tokio::join!(
            futures::future::join_all(a.iter().map(|s| s.sample())),
            b.sample()
        );
        let overloaded: Vec<String> = ra
            .iter()
            .filter_map(|r| match r {
                Err(e @ ScalerError::Overloaded { .. }) => Some(e.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(overloaded.len(), 1, "{ra:?}");
        assert!(
            overloaded[0].contains("namespace \"team-a\" already has 2 prometheus queries in flight"),
            "{}",
            overloaded[0]
        );
        assert_eq!(
            ra.iter()
                .filter(|r| matches!(r, Err(ScalerError::Timeout { .. })))
                .count(),
            2
        );
        assert!(
            matches!(rb, Err(ScalerError::Timeout { .. })),
            "team-b is not limited by team-a: {rb:?}"
        );
        assert_eq!(
            s.heads.lock().unwrap().len(),
            3,
            "two of team-a's queries, one of team-b's"
        );
    }

    #[test]
    fn bad_tls_material_fails_the_build_without_quoting_it() {
        let clients = clients();
        let e = scaler(
            &clients,
            "https://127.0.0.1:1",
            &[("authModes", "tls")],
            &[
                ("cert", "not a pem"),
                (
                    "key",
                    "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
                ),
            ],
        )
        .unwrap_err();
        assert!(matches!(e, ScalerError::InvalidConfig(_)), "{e}");
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        let debug = format!("{:?}", scaler(&clients, "http://u:pw1234@h:1", &[], &[]).unwrap());
        assert!(!debug.contains("pw1234"), "{debug}");
    }
}
