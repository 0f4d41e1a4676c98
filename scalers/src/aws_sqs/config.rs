//! The aws-sqs-queue trigger's typed configuration, read once from its parsed parameters.

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
    /// Static keys; `None` uses the default AWS provider chain.
    pub keys: Option<StaticKeys>,
    /// `awsRoleArn`: a role the credentials assume through STS.
    pub role_arn: Option<String>,
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
}

/// Every reason parsed parameters make no [`SqsConfig`], found at once.
pub type ConfigError = ConfigErrors<ConfigProblem>;

impl TryFrom<&ParsedParams> for SqsConfig {
    type Error = ConfigError;

    fn try_from(p: &ParsedParams) -> Result<Self, ConfigError> {
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
        match (
            queue,
            queue_length,
            activation_queue_length,
            region,
            scale_on_in_flight,
            scale_on_delayed,
            identity_owner,
        ) {
            (
                Some(queue),
                Some(queue_length),
                Some(activation_queue_length),
                Some(region),
                Some(scale_on_in_flight),
                Some(scale_on_delayed),
                Some(identity_owner),
            ) if problems.is_empty() => Ok(Self {
                queue: if queue.contains("://") {
                    QueueRef::Url(queue.to_string())
                } else {
                    QueueRef::Name(queue.to_string())
                },
                queue_length,
                activation_queue_length,
                region: region.to_string(),
                endpoint: p.str("awsEndpoint").map(str::to_string),
                scale_on_in_flight,
                scale_on_delayed,
                identity_owner,
                keys,
                role_arn: p.str("awsRoleArn").map(str::to_string),
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
        let c = SqsConfig::try_from(&p).unwrap();
        assert_eq!(c.queue, QueueRef::Name("orders".into()));
        assert_eq!((c.queue_length, c.activation_queue_length), (5, 0));
        assert_eq!(c.region, "eu-west-1");
        assert!(c.scale_on_in_flight && !c.scale_on_delayed);
        assert_eq!(c.identity_owner, IdentityOwner::Pod);
        assert_eq!((c.endpoint, c.keys, c.role_arn), (None, None, None));
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
        let keys = c.keys.as_ref().unwrap();
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
            ]
        );
        assert!(
            e.to_string()
                .starts_with("aws-sqs-queue: queueURL has no value; "),
            "{e}"
        );
    }
}
