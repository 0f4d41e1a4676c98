//! SQS on the test environment's moto: a signed SDK client and queue creation.

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// The access key id tests use (moto accepts any, as long as requests are SigV4-signed).
pub const KEY_ID: &str = "AKIAEBBTESTKEY";
/// The secret access key tests use; a test may assert it never shows up in what ebb prints.
pub const SECRET: &str = "ebb-test-secret-value";

/// An SDK client for moto at `endpoint`, signing with [`KEY_ID`]/[`SECRET`], TLS by rustls/ring.
pub fn client(endpoint: &str, region: &str) -> aws_sdk_sqs::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(KEY_ID, SECRET, None, None, "ebb-tests"))
        .http_client(http)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Why a queue could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    /// CreateQueue failed; the SDK's whole error context is in the text.
    #[error("cannot create SQS queue {queue}: {context}")]
    CreateQueue {
        /// The queue's name.
        queue: String,
        /// The SDK's error, with its sources.
        context: String,
    },
    /// CreateQueue answered without a URL.
    #[error("CreateQueue {0} returned no URL")]
    NoUrl(String),
}

/// Creates queue `name` and returns its URL.
pub async fn create_queue(client: &aws_sdk_sqs::Client, name: &str) -> Result<String, SqsError> {
    let out = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| SqsError::CreateQueue {
            queue: name.to_string(),
            context: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
        })?;
    out.queue_url()
        .map(str::to_string)
        .ok_or_else(|| SqsError::NoUrl(name.to_string()))
}

/// The name of the Secret and TriggerAuthentication [`create_credentials`] makes.
pub const CREDENTIALS_REF: &str = "sqs-credentials";

/// Creates, in `ns`, the Secret holding the test key and the TriggerAuthentication
/// ([`CREDENTIALS_REF`]) through which SQS triggers sign with it.
pub async fn create_credentials(client: &kube::Client, ns: &str) -> Result<(), crate::HarnessError> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": CREDENTIALS_REF},
        "stringData": {"awsAccessKeyID": KEY_ID, "awsSecretAccessKey": SECRET}
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    let auth: ebb_crds::TriggerAuthentication = serde_json::from_value(serde_json::json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "TriggerAuthentication",
        "metadata": {"name": CREDENTIALS_REF},
        "spec": {"secretTargetRef": [
            {"parameter": "awsAccessKeyID", "name": CREDENTIALS_REF, "key": "awsAccessKeyID"},
            {"parameter": "awsSecretAccessKey", "name": CREDENTIALS_REF, "key": "awsSecretAccessKey"}]}
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<ebb_crds::TriggerAuthentication>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &auth)
        .await?;
    Ok(())
}
