//! The aws-sqs-queue trigger's typed configuration, read once from its parsed parameters and
//! whether its authentication sets `podIdentity.provider: aws`.
//!
//! Whose identity signs the requests is decided here ([`credentials_rule`], pure):
//! - static keys from the auth params sign them, wherever `awsEndpoint` points;
//! - without keys, the operator's own (ambient) AWS credentials are used only when the trigger's
//!   authentication sets `podIdentity.provider: aws`, and then `awsEndpoint` is refused, so that
//!   requests signed with ebb's identity go to AWS's own endpoints only;
//! - without keys and without that pod identity, the trigger is invalid: ebb never lends its
//!   identity to a ScaledObject that did not ask for it.

use std::fmt;

use super::scaler::CredentialsDigest;
use crate::params::{ConfigErrors, ParsedParams};

/// The queue as configured in `queueURL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRef {
    /// A queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
    Url(String),
    /// A bare queue name, turned into a URL with `GetQueueUrl` on first use.
    Name(String),
}

/// Whose identity the deprecated aws-eks mode would use (`identityOwner`); read but not acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityOwner {
    /// The scaled workload's identity.
    Pod,
    /// The operator's own identity.
    Operator,
}

/// Static keys from the trigger's auth params. `Debug` shows only a digest of them.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKeys {
    /// `awsAccessKeyID` (or KEDA's second spelling `awsAccessKeyId`).
    pub access_key_id: String,
    /// `awsSecretAccessKey`.
    pub secret_access_key: String,
    /// `awsSessionToken`, for temporary keys.
    pub session_token: Option<String>,
}

impl StaticKeys {
    /// A digest identifying these keys without holding them (for pool keys).
    pub fn digest(&self) -> CredentialsDigest {
        CredentialsDigest::of(&[
            &self.access_key_id,
            &self.secret_access_key,
            self.session_token.as_deref().unwrap_or(""),
        ])
    }

    /// Every secret text, to scrub from error messages.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out = vec![self.access_key_id.as_str(), self.secret_access_key.as_str()];
        out.extend(self.session_token.as_deref());
        out
    }
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeys")
            .field("digest", &self.digest())
            .finish_non_exhaustive()
    }
}

/// Whose credentials sign an aws-sqs-queue trigger's requests. `Debug` shows no credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqsCredentials {
    /// Static keys from the trigger's auth params.
    Static(StaticKeys),
    /// The operator's own credentials from the default AWS provider chain (web identity token,
    /// container or instance metadata, environment, profile), with `podIdentity.provider: aws`.
    PodIdentity,
}

impl SqsCredentials {
    /// The static keys, if these are.
    pub fn keys(&self) -> Option<&StaticKeys> {
        match self {
            Self::Static(keys) => Some(keys),
            Self::PodIdentity => None,
        }
    }
}

/// Whose credentials a trigger uses, from its static keys (if any), its `awsEndpoint` (if any)
/// and whether its authentication sets `podIdentity.provider: aws`. Static keys win; ambient
/// credentials need the pod identity and no custom endpoint.
pub fn credentials_rule(
    keys: Option<StaticKeys>,
    endpoint: Option<&str>,
    aws_pod_identity: bool,
) -> Result<SqsCredentials, ConfigProblem> {
    match (keys, aws_pod_identity, endpoint) {
        (Some(keys), _, _) => Ok(SqsCredentials::Static(keys)),
        (None, true, None) => Ok(SqsCredentials::PodIdentity),
        (None, true, Some(_)) => Err(ConfigProblem::EndpointWithPodIdentity),
        (None, false, _) => Err(ConfigProblem::NoCredentials),
    }
}

/// Everything an aws-sqs-queue trigger is configured with. `Debug` shows no credential.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsConfig {
    /// The queue.
    pub queue: QueueRef,
    /// `queueLength`: the target number of messages per replica.
    pub queue_length: i64,
    /// `activationQueueLength`: active when the count is strictly greater.
    pub activation_queue_length: i64,
    /// `awsRegion`.
    pub region: String,
    /// `awsEndpoint`: an SQS endpoint override (LocalStack, moto, VPC endpoints).
    pub endpoint: Option<String>,
    /// `scaleOnInFlight`: count in-flight messages too.
    pub scale_on_in_flight: bool,
    /// `scaleOnDelayed`: count delayed messages too.
    pub scale_on_delayed: bool,
    /// `identityOwner` (deprecated).
    pub identity_owner: IdentityOwner,
    /// Whose credentials sign the requests.
    pub credentials: SqsCredentials,
    /// `awsRoleArn`: a role the credentials assume through STS.
    pub role_arn: Option<String>,
    /// `awsExternalID`: the external ID of that role assumption.
    pub external_id: Option<String>,
}

/// One reason parsed parameters make no [`SqsConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A parameter the configuration needs has no value (e.g. it is still unresolved).
    #[error("{0} has no value")]
    Missing(&'static str),
    /// One half of a static key pair without the other.
    #[error("awsAccessKeyID and awsSecretAccessKey must be given together")]
    KeysNotTogether,
    /// Neither static keys nor `podIdentity.provider: aws`.
    #[error(
        "no AWS credentials: give awsAccessKeyID and awsSecretAccessKey through the trigger's \
         authenticationRef, or set podIdentity.provider: aws in it to use the operator's own \
         identity"
    )]
    NoCredentials,
    /// `awsEndpoint` with the operator's own identity.
    #[error(
        "awsEndpoint cannot be set when the operator's own identity is used (podIdentity.provider: \
         aws without keys): requests signed with it go to AWS's endpoints only; remove awsEndpoint \
         or give static keys"
    )]
    EndpointWithPodIdentity,
}

/// Every reason parsed parameters make no [`SqsConfig`], found at once.
pub type ConfigError = ConfigErrors<ConfigProblem>;

impl TryFrom<&ParsedParams> for SqsConfig {
    type Error = ConfigError;

    /// The configuration of a trigger whose authentication sets no pod identity.
    fn try_from(p: &ParsedParams) -> Result<Self, ConfigError> {
        Self::read(p, false)
    }
}

impl SqsConfig {
    /// Reads the configuration; `aws_pod_identity` says whether the trigger's authentication sets
    /// `podIdentity.provider: aws` (see [`credentials_rule`]). Every problem is reported at once.
    pub fn read(p: &ParsedParams, aws_pod_identity: bool) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let queue = need(&mut problems, "queueURL", p.str("queueURL"));
        let queue_length = need(&mut problems, "queueLength", p.int("queueLength"));
        let activation_queue_length = need(
            &mut problems,
            "activationQueueLength",
            p.int("activationQueueLength"),
        );
        let region = need(&mut problems, "awsRegion", p.str("awsRegion"));
        let scale_on_in_flight = need(&mut problems, "scaleOnInFlight", p.bool("scaleOnInFlight"));
        let scale_on_delayed = need(&mut problems, "scaleOnDelayed", p.bool("scaleOnDelayed"));
        let identity_owner = match need(&mut problems, "identityOwner", p.str("identityOwner")) {
            Some("operator") => Some(IdentityOwner::Operator),
            Some(_) => Some(IdentityOwner::Pod),
            None => None,
        };
        let access_key_id = p.str("awsAccessKeyID").or(p.str("awsAccessKeyId"));
        let keys = match (access_key_id, p.str("awsSecretAccessKey")) {
            (Some(id), Some(secret)) => Some(StaticKeys {
                access_key_id: id.to_string(),
                secret_access_key: secret.to_string(),
                session_token: p.str("awsSessionToken").map(str::to_string),
            }),
            (None, None) => None,
            _ => {
                problems.push(ConfigProblem::KeysNotTogether);
                None
            }
        };
        let endpoint = p.str("awsEndpoint");
        let credentials = if problems.contains(&ConfigProblem::KeysNotTogether) {
            None
        } else {
            credentials_rule(keys, endpoint, aws_pod_identity)
                .map_err(|problem| problems.push(problem))
                .ok()
        };
        match (
            queue,
            queue_length,
            activation_queue_length,
            region,
            scale_on_in_flight,
            scale_on_delayed,
            identity_owner,
            credentials,
        ) {
            (
                Some(queue),
                Some(queue_length),
                Some(activation_queue_length),
                Some(region),
                Some(scale_on_in_flight),
                Some(scale_on_delayed),
                Some(identity_owner),
                Some(credentials),
            ) if problems.is_empty() => Ok(Self {
                queue: if queue.contains("://") {
                    QueueRef::Url(queue.to_string())
                } else {
                    QueueRef::Name(queue.to_string())
                },
                queue_length,
                activation_queue_length,
                region: region.to_string(),
                endpoint: endpoint.map(str::to_string),
                scale_on_in_flight,
                scale_on_delayed,
                identity_owner,
                credentials,
                role_arn: p.str("awsRoleArn").map(str::to_string),
                external_id: p.str("awsExternalID").map(str::to_string),
            }),
            _ => Err(ConfigErrors {
                trigger_type: "aws-sqs-queue",
                problems,
            }),
        }
    }
}

/// `value`, noting a [`ConfigProblem::Missing`] when there is none.
fn need<T>(problems: &mut Vec<ConfigProblem>, name: &'static str, value: Option<T>) -> Option<T> {
    crate::params::config_errors::need(problems, value, || ConfigProblem::Missing(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws_sqs::DECL;
    use crate::params::tests_support::parse_with;

    #[test]
    fn declared_defaults_reach_the_config() {
        let p = parse_with(&DECL, &[("queueURL", "orders"), ("awsRegion", "eu-west-1")], &[]).unwrap();
        let c = SqsConfig::read(&p, true).unwrap();
        assert_eq!(c.queue, QueueRef::Name("orders".into()));
        assert_eq!((c.queue_length, c.activation_queue_length), (5, 0));
        assert_eq!(c.region, "eu-west-1");
        assert!(c.scale_on_in_flight && !c.scale_on_delayed);
        assert_eq!(c.identity_owner, IdentityOwner::Pod);
        assert_eq!(
            (c.endpoint, c.credentials, c.role_arn),
            (None, SqsCredentials::PodIdentity, None)
        );
    }

    #[test]
    fn every_value_is_read_and_keys_stay_hidden() {
        let p = parse_with(
            &DECL,
            &[
                ("queueURL", "http://127.0.0.1:4566/123456789012/orders"),
                ("awsRegion", "us-east-1"),
                ("awsEndpoint", "http://127.0.0.1:4566"),
                ("queueLength", "12"),
                ("activationQueueLength", "3"),
                ("scaleOnInFlight", "false"),
                ("scaleOnDelayed", "true"),
                ("identityOwner", "operator"),
            ],
            &[
                ("awsAccessKeyId", "AKIDLOWER"),
                ("awsSecretAccessKey", "wJalrSECRET"),
                ("awsSessionToken", "FwoTOKEN"),
                ("awsRoleArn", "arn:aws:iam::1:role/r"),
            ],
        )
        .unwrap();
        let c = SqsConfig::try_from(&p).unwrap();
        assert!(matches!(&c.queue, QueueRef::Url(u) if u.ends_with("/orders")));
        assert_eq!((c.queue_length, c.activation_queue_length), (12, 3));
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert!(!c.scale_on_in_flight && c.scale_on_delayed);
        assert_eq!(c.identity_owner, IdentityOwner::Operator);
        let keys = c.credentials.keys().unwrap();
        assert_eq!(keys.access_key_id, "AKIDLOWER");
        assert_eq!(keys.session_token.as_deref(), Some("FwoTOKEN"));
        assert_eq!(c.role_arn.as_deref(), Some("arn:aws:iam::1:role/r"));
        let debug = format!("{c:?}");
        for secret in ["AKIDLOWER", "wJalrSECRET", "FwoTOKEN"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let e = SqsConfig::try_from(&ParsedParams::default()).unwrap_err();
        assert_eq!(
            e.problems,
            [
                ConfigProblem::Missing("queueURL"),
                ConfigProblem::Missing("queueLength"),
                ConfigProblem::Missing("activationQueueLength"),
                ConfigProblem::Missing("awsRegion"),
                ConfigProblem::Missing("scaleOnInFlight"),
                ConfigProblem::Missing("scaleOnDelayed"),
                ConfigProblem::Missing("identityOwner"),
                ConfigProblem::NoCredentials,
            ]
        );
        assert!(
            e.to_string()
                .starts_with("aws-sqs-queue: queueURL has no value; "),
            "{e}"
        );
    }

    #[test]
    fn the_operators_identity_is_lent_only_with_pod_identity_and_no_endpoint() {
        let keys = || StaticKeys {
            access_key_id: "AKID".into(),
            secret_access_key: "SECRET".into(),
            session_token: None,
        };
        let moto = Some("http://127.0.0.1:5000");
        // Static keys sign wherever the endpoint points (the test environment's moto path).
        for (endpoint, pod) in [(None, false), (moto, false), (None, true), (moto, true)] {
            assert_eq!(
                credentials_rule(Some(keys()), endpoint, pod),
                Ok(SqsCredentials::Static(keys()))
            );
        }
        assert_eq!(
            credentials_rule(None, None, true),
            Ok(SqsCredentials::PodIdentity)
        );
        assert_eq!(
            credentials_rule(None, moto, true),
            Err(ConfigProblem::EndpointWithPodIdentity)
        );
        assert_eq!(
            credentials_rule(None, None, false),
            Err(ConfigProblem::NoCredentials)
        );
        assert_eq!(
            credentials_rule(None, moto, false),
            Err(ConfigProblem::NoCredentials)
        );
    }

    #[test]
    fn config_errors_name_the_fix() {
        let meta = [("queueURL", "orders"), ("awsRegion", "eu-west-1")];
        let p = parse_with(&DECL, &meta, &[]).unwrap();
        let e = SqsConfig::read(&p, false).unwrap_err();
        assert_eq!(e.problems, [ConfigProblem::NoCredentials]);
        let text = e.to_string();
        assert!(
            text.contains("no AWS credentials") && text.contains("podIdentity.provider: aws"),
            "{text}"
        );
        assert_eq!(
            SqsConfig::try_from(&p).unwrap_err().problems,
            [ConfigProblem::NoCredentials]
        );

        let with_endpoint = [
            ("queueURL", "orders"),
            ("awsRegion", "eu-west-1"),
            ("awsEndpoint", "https://attacker.example"),
        ];
        let p = parse_with(&DECL, &with_endpoint, &[]).unwrap();
        let e = SqsConfig::read(&p, true).unwrap_err();
        assert_eq!(e.problems, [ConfigProblem::EndpointWithPodIdentity]);
        assert!(e.to_string().contains("awsEndpoint cannot be set"), "{e}");

        // The test environment's shape: static keys from a TriggerAuthentication and moto's
        // endpoint, no pod identity.
        let p = parse_with(
            &DECL,
            &with_endpoint,
            &[("awsAccessKeyID", "test"), ("awsSecretAccessKey", "test")],
        )
        .unwrap();
        let c = SqsConfig::read(&p, false).unwrap();
        assert!(matches!(c.credentials, SqsCredentials::Static(_)));
        assert_eq!(c.endpoint.as_deref(), Some("https://attacker.example"));
    }
}
