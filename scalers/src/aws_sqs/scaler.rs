//! The `aws-sqs-queue` scaler: `GetQueueAttributes` on one SQS queue, summed as KEDA does.
//!
//! The value is `ApproximateNumberOfMessages`, plus `ApproximateNumberOfMessagesNotVisible` (in
//! flight) when `scaleOnInFlight` (default true), plus `ApproximateNumberOfMessagesDelayed` when
//! `scaleOnDelayed`. A requested attribute that is missing from the answer or not a whole number
//! is an error, never a zero.
//!
//! `queueURL` is a queue URL, or a queue name that is turned into a URL with `GetQueueUrl` once per
//! trigger (then cached). `awsEndpoint` overrides the SQS endpoint (LocalStack, moto, VPC
//! endpoints); STS, used for `awsRoleArn`, keeps its regional endpoint, as in KEDA.
//!
//! Credentials ([`SqsCredentials`], decided by [`credentials_rule`](super::credentials_rule)):
//! static keys from the auth params (`awsAccessKeyID` or `awsAccessKeyId`, `awsSecretAccessKey`,
//! optional `awsSessionToken`); or, only when the trigger's authentication sets
//! `podIdentity.provider: aws` and no `awsEndpoint`, the default AWS provider chain (web identity
//! token, container or instance metadata, environment, profile). A trigger with neither is
//! invalid. With `awsRoleArn`, those credentials assume that role through STS.
//!
//! One SDK client per (region, endpoint, credentials, role) is shared by the triggers that use it
//! and dropped with the last of them (a [`WeakPool`]: an object deleted or rebuilt with rotated
//! keys leaves no client behind); the pool is keyed by a SHA-256 digest of the credentials, never
//! by the credentials.
//! All SDK clients share one HTTP client: aws-smithy-http-client's hyper 1 client with rustls on
//! the ring provider and the system's root certificates. Each attempt is bounded by the factory's
//! HTTP timeout; a whole call (with the SDK's standard retries) by twice that.
//!
//! The trigger's parameters become an [`SqsConfig`] once, in [`SqsScaler::new`]. Errors carry
//! the AWS error code and message, never credentials.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{Credentials, Region, SharedCredentialsProvider, SharedHttpClient};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use tokio::sync::OnceCell;

use super::config::{QueueRef, SqsConfig, SqsCredentials, StaticKeys};
use crate::common::errors::error_chain;
use crate::common::pool::WeakPool;
use crate::params::{ParsedParams, Thresholds};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// A SHA-256 digest of credentials: identifies them in a pool key without holding them.
/// `Debug` shows only its first 8 bytes, in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialsDigest([u8; 32]);

impl CredentialsDigest {
    /// The digest of `parts`, each length-prefixed so that different splits never collide.
    pub fn of(parts: &[&str]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }
}

impl fmt::Debug for CredentialsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…")
    }
}

/// Everything that makes one SDK client.
#[derive(Clone, Debug)]
struct ClientSpec {
    region: String,
    endpoint: Option<String>,
    keys: Option<StaticKeys>,
    role_arn: Option<String>,
    external_id: Option<String>,
}

/// The pool key of an SDK client: region, endpoint, a digest of the static keys (`None` for the
/// default provider chain) and the role to assume.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    region: String,
    endpoint: Option<String>,
    credentials: Option<CredentialsDigest>,
    role_arn: Option<String>,
    external_id: Option<String>,
}

impl ClientSpec {
    fn key(&self) -> ClientKey {
        ClientKey {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            credentials: self.keys.as_ref().map(StaticKeys::digest),
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
        }
    }
}

/// An SDK client shared by the triggers of one (region, endpoint, credentials, role), made on
/// first use.
type SharedSdkClient = OnceCell<aws_sdk_sqs::Client>;

/// What every aws-sqs-queue trigger of a factory shares: one HTTP client, and one SDK client per
/// (region, endpoint, credentials, role) while a trigger uses it.
pub struct SqsClients {
    http: SharedHttpClient,
    timeout: Duration,
    pool: WeakPool<ClientKey, SharedSdkClient>,
}

impl SqsClients {
    /// Creates the shared HTTP client (rustls with ring, system roots). `timeout` bounds each
    /// attempt (connect included); a whole call with retries gets twice that. Needs no async
    /// runtime: SDK clients are made on first use.
    pub fn new(timeout: Duration) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        Self {
            http,
            timeout,
            pool: WeakPool::new(),
        }
    }

    /// How many SDK client slots are in use by at least one trigger (made or not yet).
    pub fn client_count(&self) -> usize {
        self.pool.len()
    }

    /// The shared slot of `spec`'s client; the trigger keeps it, and it is dropped with the last
    /// trigger holding it.
    fn slot(&self, spec: &ClientSpec) -> Arc<SharedSdkClient> {
        self.pool.get_or_insert_with(spec.key(), OnceCell::new)
    }

    async fn client(&self, slot: &SharedSdkClient, spec: &ClientSpec) -> aws_sdk_sqs::Client {
        slot.get_or_init(|| self.make_client(spec)).await.clone()
    }

    async fn make_client(&self, spec: &ClientSpec) -> aws_sdk_sqs::Client {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.timeout)
            .operation_attempt_timeout(self.timeout)
            .operation_timeout(self.timeout.saturating_mul(2))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(spec.region.clone()))
            .http_client(self.http.clone())
            .timeout_config(timeouts);
        if let Some(keys) = &spec.keys {
            loader = loader.credentials_provider(Credentials::new(
                keys.access_key_id.clone(),
                keys.secret_access_key.clone(),
                keys.session_token.clone(),
                None,
                "ebb-trigger-authentication",
            ));
        }
        let mut sdk = loader.load().await;
        if let Some(role_arn) = &spec.role_arn {
            let mut builder = aws_config::sts::AssumeRoleProvider::builder(role_arn.clone())
                .session_name("ebb")
                .configure(&sdk);
            if let Some(id) = &spec.external_id {
                builder = builder.external_id(id.clone());
            }
            let provider = builder.build().await;
            sdk = sdk
                .into_builder()
                .credentials_provider(SharedCredentialsProvider::new(provider))
                .build();
        }
        // The endpoint override is for SQS only (STS keeps its own).
        let mut config = aws_sdk_sqs::config::Builder::from(&sdk);
        if let Some(endpoint) = &spec.endpoint {
            config = config.endpoint_url(endpoint.clone());
        }
        aws_sdk_sqs::Client::from_conf(config.build())
    }
}

impl fmt::Debug for SqsClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsClients")
            .field("timeout", &self.timeout)
            .field("clients", &self.client_count())
            .finish_non_exhaustive()
    }
}

/// The attributes one trigger asks for: visible, plus in flight and delayed when configured.
pub fn requested_attributes(scale_on_in_flight: bool, scale_on_delayed: bool) -> Vec<QueueAttributeName> {
    let mut out = vec![QueueAttributeName::ApproximateNumberOfMessages];
    if scale_on_in_flight {
        out.push(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
    }
    if scale_on_delayed {
        out.push(QueueAttributeName::ApproximateNumberOfMessagesDelayed);
    }
    out
}

/// Why a `GetQueueAttributes` answer gives no count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// A requested attribute is not in the answer.
    #[error("attribute {0} is missing from the answer")]
    Missing(String),
    /// A requested attribute is not a whole number ≥ 0 (its value shown cut to 32 characters).
    #[error("attribute {name} is {shown:?}, not a whole number")]
    NotWholeNumber {
        /// The attribute.
        name: String,
        /// Its value, cut.
        shown: String,
    },
}

/// Sums the `requested` attributes of a `GetQueueAttributes` answer. Each must be there and be a
/// whole number ≥ 0; the error names the first one that is not.
pub fn sum_attributes(
    requested: &[QueueAttributeName],
    answer: Option<&HashMap<QueueAttributeName, String>>,
) -> Result<u64, AttributeError> {
    let mut total: u64 = 0;
    for name in requested {
        let Some(raw) = answer.and_then(|a| a.get(name)) else {
            return Err(AttributeError::Missing(name.as_str().to_string()));
        };
        let value: u64 = raw.trim().parse().map_err(|_| AttributeError::NotWholeNumber {
            name: name.as_str().to_string(),
            shown: raw.chars().take(32).collect(),
        })?;
        total = total.saturating_add(value);
    }
    Ok(total)
}

/// The queue as configured.
#[derive(Debug)]
enum Queue {
    Url(String),
    /// A name, resolved to a URL with `GetQueueUrl` on first use.
    Name {
        name: String,
        url: OnceCell<String>,
    },
}

/// AWS error codes that mean "these credentials may not do this".
const AUTH_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidSecurity",
    "MissingAuthenticationToken",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
];

/// One aws-sqs-queue trigger.
pub struct SqsScaler {
    clients: Arc<SqsClients>,
    spec: ClientSpec,
    /// This trigger's hold on its shared SDK client.
    sdk: Arc<SharedSdkClient>,
    queue: Queue,
    attributes: Vec<QueueAttributeName>,
    target: f64,
    activation: f64,
}

impl SqsScaler {
    /// Builds the scaler from the trigger's parsed parameters (see [`crate::aws_sqs`]), its
    /// thresholds, and whether its authentication sets `podIdentity.provider: aws` (which alone
    /// allows the operator's own credentials). Makes no request (needs no async runtime).
    pub fn new(
        clients: Arc<SqsClients>,
        params: &ParsedParams,
        thresholds: Thresholds,
        aws_pod_identity: bool,
    ) -> Result<Self, ScalerError> {
        let config = SqsConfig::read(params, aws_pod_identity)?;
        let queue = match config.queue {
            QueueRef::Url(url) => Queue::Url(url),
            QueueRef::Name(name) => Queue::Name {
                name,
                url: OnceCell::new(),
            },
        };
        let keys = match config.credentials {
            SqsCredentials::Static(keys) => Some(keys),
            SqsCredentials::PodIdentity => None,
        };
        let spec = ClientSpec {
            region: config.region,
            endpoint: config.endpoint,
            keys,
            role_arn: config.role_arn,
            external_id: config.external_id,
        };
        Ok(Self {
            sdk: clients.slot(&spec),
            clients,
            spec,
            queue,
            attributes: requested_attributes(config.scale_on_in_flight, config.scale_on_delayed),
            target: thresholds.target,
            activation: thresholds.activation,
        })
    }

    /// The attributes this trigger sums.
    pub fn attributes(&self) -> &[QueueAttributeName] {
        &self.attributes
    }

    /// How the queue is named in errors: its URL, or its name and region.
    fn shown(&self) -> String {
        match &self.queue {
            Queue::Url(url) => url.clone(),
            Queue::Name { name, url } => match url.get() {
                Some(url) => url.clone(),
                None => format!("sqs queue {name:?} in {}", self.spec.region),
            },
        }
    }

    async fn queue_url(&self, client: &aws_sdk_sqs::Client) -> Result<String, ScalerError> {
        match &self.queue {
            Queue::Url(url) => Ok(url.clone()),
            Queue::Name { name, url } => url
                .get_or_try_init(|| async {
                    let out = client
                        .get_queue_url()
                        .queue_name(name)
                        .send()
                        .await
                        .map_err(|e| self.sdk_error(e))?;
                    out.queue_url().map(str::to_string).ok_or_else(|| {
                        ScalerError::bad_response(&self.shown(), "GetQueueUrl answered without a QueueUrl")
                    })
                })
                .await
                .cloned(),
        }
    }

    /// Counts the queue's messages once: the sum of the requested attributes.
    pub async fn count(&self) -> Result<u64, ScalerError> {
        let client = self.clients.client(&self.sdk, &self.spec).await;
        let url = self.queue_url(&client).await?;
        let out = client
            .get_queue_attributes()
            .queue_url(&url)
            .set_attribute_names(Some(self.attributes.clone()))
            .send()
            .await
            .map_err(|e| self.sdk_error(e))?;
        sum_attributes(&self.attributes, out.attributes())
            .map_err(|e| ScalerError::bad_response(&url, e.to_string()))
    }

    fn sdk_error<E>(&self, err: SdkError<E>) -> ScalerError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let shown = self.shown();
        let timeout = self.clients.timeout;
        let secrets = self
            .spec
            .keys
            .as_ref()
            .map(StaticKeys::secrets)
            .unwrap_or_default();
        let scrub = |text: String| scrub(text, &secrets);
        match &err {
            SdkError::TimeoutError(_) => ScalerError::timeout(&shown, timeout.saturating_mul(2)),
            SdkError::DispatchFailure(f) if f.is_timeout() => ScalerError::timeout(&shown, timeout),
            SdkError::DispatchFailure(_) => ScalerError::unreachable(&shown, scrub(error_chain(&err))),
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("UnknownError");
                let message = service.err().message().unwrap_or("no message");
                let status = service.raw().status().as_u16();
                let text = scrub(format!("{code}: {message} (HTTP {status})"));
                if AUTH_CODES.contains(&code) || status == 401 || status == 403 {
                    ScalerError::unauthorized(&shown, text)
                } else {
                    ScalerError::bad_response(&shown, text)
                }
            }
            _ => {
                let text = scrub(error_chain(&err));
                if text.contains("credentials") {
                    ScalerError::unauthorized(&shown, text)
                } else {
                    ScalerError::bad_response(&shown, text)
                }
            }
        }
    }
}

/// Replaces every occurrence of a secret in `text` with `<redacted>`.
fn scrub(mut text: String, secrets: &[&str]) -> String {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, "<redacted>");
        }
    }
    text
}

impl fmt::Debug for SqsScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsScaler")
            .field("queue", &self.queue)
            .field("client", &self.spec.key())
            .field("attributes", &self.attributes)
            .field("target", &self.target)
            .field("activation", &self.activation)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Scaler for SqsScaler {
    fn trigger_type(&self) -> &'static str {
        "aws-sqs-queue"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        let count = self.count().await?;
        Ok(TriggerSample::with_activation(count as f64, self.activation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_with;

    fn answer(pairs: &[(QueueAttributeName, &str)]) -> HashMap<QueueAttributeName, String> {
        pairs.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
    }

    #[test]
    fn attributes_follow_the_flags() {
        use QueueAttributeName as A;
        assert_eq!(
            requested_attributes(false, false),
            [A::ApproximateNumberOfMessages]
        );
        assert_eq!(
            requested_attributes(true, false),
            [
                A::ApproximateNumberOfMessages,
                A::ApproximateNumberOfMessagesNotVisible
            ]
        );
        assert_eq!(
            requested_attributes(true, true),
            [
                A::ApproximateNumberOfMessages,
                A::ApproximateNumberOfMessagesNotVisible,
                A::ApproximateNumberOfMessagesDelayed
            ]
        );
        assert_eq!(
            requested_attributes(false, true),
            [
                A::ApproximateNumberOfMessages,
                A::ApproximateNumberOfMessagesDelayed
            ]
        );
    }

    #[test]
    fn sums_what_was_asked_for() {
        use QueueAttributeName as A;
        let full = answer(&[
            (A::ApproximateNumberOfMessages, "7"),
            (A::ApproximateNumberOfMessagesNotVisible, "3"),
            (A::ApproximateNumberOfMessagesDelayed, "1"),
        ]);
        assert_eq!(
            sum_attributes(&requested_attributes(false, false), Some(&full)),
            Ok(7)
        );
        assert_eq!(
            sum_attributes(&requested_attributes(true, false), Some(&full)),
            Ok(10)
        );
        assert_eq!(
            sum_attributes(&requested_attributes(true, true), Some(&full)),
            Ok(11)
        );
        assert_eq!(
            sum_attributes(&requested_attributes(false, true), Some(&full)),
            Ok(8)
        );
        let huge = answer(&[
            (A::ApproximateNumberOfMessages, &u64::MAX.to_string()),
            (A::ApproximateNumberOfMessagesNotVisible, "1"),
        ]);
        assert_eq!(
            sum_attributes(&requested_attributes(true, false), Some(&huge)),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn missing_or_malformed_attributes_are_errors() {
        use QueueAttributeName as A;
        let visible_only = answer(&[(A::ApproximateNumberOfMessages, "7")]);
        let e = sum_attributes(&requested_attributes(true, false), Some(&visible_only))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "attribute ApproximateNumberOfMessagesNotVisible is missing from the answer"
        );
        let e = sum_attributes(&requested_attributes(false, false), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ApproximateNumberOfMessages is missing"), "{e}");
        for bad in ["", "x", "-1", "1.5", "1e3", "18446744073709551616"] {
            let a = answer(&[(A::ApproximateNumberOfMessages, bad)]);
            let e = sum_attributes(&requested_attributes(false, false), Some(&a))
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a whole number"), "{bad}: {e}");
        }
        // Surrounding spaces are tolerated.
        let a = answer(&[(A::ApproximateNumberOfMessages, " 4 ")]);
        assert_eq!(
            sum_attributes(&requested_attributes(false, false), Some(&a)),
            Ok(4)
        );
    }

    /// A scaler whose authentication sets `podIdentity.provider: aws`.
    fn scaler(meta: &[(&str, &str)], auth: &[(&str, &str)], clients: &Arc<SqsClients>) -> SqsScaler {
        try_scaler(meta, auth, clients, true).unwrap()
    }

    fn try_scaler(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
        clients: &Arc<SqsClients>,
        aws_pod_identity: bool,
    ) -> Result<SqsScaler, ScalerError> {
        let params = parse_with(&crate::aws_sqs::DECL, meta, auth).unwrap();
        let thresholds = (crate::aws_sqs::DECL.thresholds)(&params);
        SqsScaler::new(clients.clone(), &params, thresholds, aws_pod_identity)
    }

    #[test]
    fn no_keys_without_pod_identity_is_a_config_error() {
        let clients = Arc::new(SqsClients::new(Duration::from_secs(1)));
        let meta = [("queueURL", "q"), ("awsRegion", "us-east-1")];
        let e = try_scaler(&meta, &[], &clients, false).unwrap_err();
        assert!(matches!(e, ScalerError::InvalidConfig(_)), "{e}");
        assert!(e.to_string().contains("no AWS credentials"), "{e}");
        let redirected = [
            ("queueURL", "q"),
            ("awsRegion", "us-east-1"),
            ("awsEndpoint", "http://127.0.0.1:9"),
        ];
        let e = try_scaler(&redirected, &[], &clients, true).unwrap_err();
        assert!(e.to_string().contains("awsEndpoint cannot be set"), "{e}");
        assert_eq!(clients.client_count(), 0, "no client for a refused trigger");
        let keys = [("awsAccessKeyID", "AKID"), ("awsSecretAccessKey", "secret")];
        assert!(try_scaler(&redirected, &keys, &clients, false).is_ok());
    }

    #[test]
    fn parameters_make_the_scaler() {
        let clients = Arc::new(SqsClients::new(Duration::from_secs(1)));
        let s = scaler(
            &[
                ("queueURL", "orders"),
                ("awsRegion", "eu-west-1"),
                ("scaleOnInFlight", "false"),
                ("scaleOnDelayed", "true"),
                ("queueLength", "12"),
                ("activationQueueLength", "3"),
            ],
            &[],
            &clients,
        );
        assert!(matches!(&s.queue, Queue::Name { name, .. } if name == "orders"));
        assert_eq!(s.shown(), "sqs queue \"orders\" in eu-west-1");
        assert_eq!(
            s.attributes(),
            [
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed
            ]
        );
        assert_eq!(s.metric_target().target_value, 12.0);
        assert_eq!(s.activation, 3.0);
        assert!(s.spec.keys.is_none());
        assert_eq!(s.spec.key().credentials, None);

        let s = scaler(
            &[
                ("queueURL", "http://127.0.0.1:4566/123456789012/orders"),
                ("awsRegion", "us-east-1"),
                ("awsEndpoint", "http://127.0.0.1:4566"),
            ],
            &[("awsAccessKeyId", "AKIDLOWER"), ("awsSecretAccessKey", "s3cr3t")],
            &clients,
        );
        assert!(matches!(&s.queue, Queue::Url(u) if u.ends_with("/orders")));
        assert_eq!(s.spec.keys.as_ref().unwrap().access_key_id, "AKIDLOWER");
        assert_eq!(s.spec.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
    }

    #[test]
    fn pool_keys_and_debug_never_hold_secrets() {
        let clients = Arc::new(SqsClients::new(Duration::from_secs(1)));
        let meta = [("queueURL", "q"), ("awsRegion", "us-east-1")];
        let a = scaler(
            &meta,
            &[
                ("awsAccessKeyID", "AKIAEXAMPLEKEYID"),
                ("awsSecretAccessKey", "wJalrXUtnFEMI/SECRET"),
                ("awsSessionToken", "FwoGZXIvYXdzTOKEN"),
            ],
            &clients,
        );
        let same = scaler(
            &meta,
            &[
                ("awsAccessKeyID", "AKIAEXAMPLEKEYID"),
                ("awsSecretAccessKey", "wJalrXUtnFEMI/SECRET"),
                ("awsSessionToken", "FwoGZXIvYXdzTOKEN"),
            ],
            &clients,
        );
        let other_secret = scaler(
            &meta,
            &[
                ("awsAccessKeyID", "AKIAEXAMPLEKEYID"),
                ("awsSecretAccessKey", "another"),
            ],
            &clients,
        );
        assert_eq!(a.spec.key(), same.spec.key());
        assert_ne!(a.spec.key(), other_secret.spec.key());
        let chain = scaler(&meta, &[], &clients);
        assert_ne!(a.spec.key(), chain.spec.key());
        let role = scaler(&meta, &[("awsRoleArn", "arn:aws:iam::1:role/r")], &clients);
        assert_ne!(chain.spec.key(), role.spec.key());
        // Length-prefixed parts: moving a boundary changes the digest.
        assert_ne!(
            CredentialsDigest::of(&["ab", "c"]),
            CredentialsDigest::of(&["a", "bc"])
        );

        for text in [
            format!("{a:?}"),
            format!("{:?}", a.spec),
            format!("{:?}", a.spec.key()),
            format!("{clients:?}"),
        ] {
            for secret in ["AKIAEXAMPLEKEYID", "wJalrXUtnFEMI/SECRET", "FwoGZXIvYXdzTOKEN"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        assert_eq!(
            scrub(
                "bad key AKIAEXAMPLEKEYID and wJalrXUtnFEMI/SECRET".into(),
                &a.spec.keys.as_ref().unwrap().secrets()
            ),
            "bad key <redacted> and <redacted>"
        );
    }

    #[tokio::test]
    async fn one_sdk_client_per_identity() {
        let clients = Arc::new(SqsClients::new(Duration::from_secs(1)));
        let meta = [
            ("queueURL", "q"),
            ("awsRegion", "us-east-1"),
            ("awsEndpoint", "http://127.0.0.1:9"),
        ];
        let keys = [("awsAccessKeyID", "AKID"), ("awsSecretAccessKey", "secret")];
        let a = scaler(&meta, &keys, &clients);
        let b = scaler(&meta, &keys, &clients);
        let c = scaler(
            &meta,
            &[("awsAccessKeyID", "AKID"), ("awsSecretAccessKey", "other")],
            &clients,
        );
        for s in [&a, &b, &c] {
            let _ = clients.client(&s.sdk, &s.spec).await;
        }
        assert_eq!(clients.client_count(), 2);
        assert!(Arc::ptr_eq(&a.sdk, &b.sdk));
        drop(a);
        assert_eq!(clients.client_count(), 2, "b still uses the client");
        drop(b);
        assert_eq!(clients.client_count(), 1, "an unused client is dropped");
    }

    #[tokio::test]
    async fn a_rotated_keys_old_client_goes_away() {
        let clients = Arc::new(SqsClients::new(Duration::from_secs(1)));
        let meta = [("queueURL", "q"), ("awsRegion", "us-east-1")];
        let old = scaler(
            &meta,
            &[("awsAccessKeyID", "AKID"), ("awsSecretAccessKey", "before")],
            &clients,
        );
        let _ = clients.client(&old.sdk, &old.spec).await;
        let watch_old = Arc::downgrade(&old.sdk);
        // The reconciler builds the trigger again with the new keys, then drops the old scaler.
        let new = scaler(
            &meta,
            &[("awsAccessKeyID", "AKID"), ("awsSecretAccessKey", "after")],
            &clients,
        );
        drop(old);
        assert!(watch_old.upgrade().is_none(), "the old SDK client is dropped");
        let _ = clients.client(&new.sdk, &new.spec).await;
        assert_eq!(clients.client_count(), 1);
        // The next trigger built forgets the old key.
        let _also_new = scaler(
            &meta,
            &[("awsAccessKeyID", "AKID"), ("awsSecretAccessKey", "after")],
            &clients,
        );
        assert_eq!(clients.pool.remembered(), 1, "the old key is forgotten");
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_an_error_without_secrets() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        let clients = Arc::new(SqsClients::new(Duration::from_millis(500)));
        let s = scaler(
            &[
                ("queueURL", "http://127.0.0.1:9/123456789012/q"),
                ("awsRegion", "us-east-1"),
                ("awsEndpoint", "http://127.0.0.1:9"),
            ],
            &[
                ("awsAccessKeyID", "AKIAEXAMPLEKEYID"),
                ("awsSecretAccessKey", "wJalrSECRET"),
            ],
            &clients,
        );
        let err = s.sample().await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(
            matches!(err, ScalerError::Unreachable { .. } | ScalerError::Timeout { .. }),
            "{text}"
        );
        assert!(
            !text.contains("AKIAEXAMPLEKEYID") && !text.contains("wJalrSECRET"),
            "{text}"
        );
    }
}
