//! The `aws-sqs-queue` trigger: visible (+ in-flight, + delayed) messages of an SQS queue.
//!
//! This file is the declaration ([`DECL`]); [`config`] turns the parsed parameters into an
//! [`SqsConfig`], and [`scaler`] holds the shared SDK clients and the [`Scaler`](crate::Scaler).

pub mod config;
pub mod scaler;

pub use config::{
    ConfigError, ConfigProblem, IdentityOwner, QueueRef, SqsConfig, SqsCredentials, StaticKeys,
    credentials_rule,
};
pub use scaler::{AttributeError, SqsClients, SqsScaler};

use crate::params::{
    AUTH, AUTH_ENV, DeclDocs, META, META_AUTH, META_ENV, Param, ParamError, ParsedParams, Rule, ScalerDecl,
    Thresholds,
};

/// Every parameter of the aws-sqs-queue trigger.
pub static PARAMS: &[Param] = &[
    Param::string("queueURL")
        .required()
        .from(META_ENV)
        .doc("The queue: its URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`), or its name, looked up once."),
    Param::int("queueLength")
        .default("5")
        .above(0.0)
        .doc("Target messages per replica."),
    Param::int("activationQueueLength")
        .default("0")
        .min(0.0)
        .doc("The trigger is active (scales up from zero) when the message count is above this."),
    Param::string("awsRegion")
        .required()
        .from(META_AUTH)
        .doc("The queue's AWS region."),
    Param::string("awsEndpoint")
        .from(META)
        .doc("Another SQS endpoint (LocalStack, moto, a VPC endpoint); refused when the operator's own identity signs the requests."),
    Param::bool("scaleOnInFlight")
        .default("true")
        .doc("Count in-flight messages (received and not yet deleted) with the visible ones."),
    Param::bool("scaleOnDelayed")
        .default("false")
        .doc("Count delayed messages (not yet visible) too."),
    Param::one_of("identityOwner", &["pod", "operator"])
        .default("pod")
        .deprecated("only meaningful for the deprecated aws-eks identity")
        .doc("Whose identity the aws-eks mode used (`pod` or `operator`); accepted for KEDA compatibility and not acted on."),
    Param::string("awsAccessKeyID")
        .from(AUTH_ENV)
        .secret()
        .doc("The access key ID of static credentials, given with `awsSecretAccessKey`."),
    Param::string("awsAccessKeyId")
        .from(AUTH)
        .secret()
        .doc("KEDA's other spelling of `awsAccessKeyID`; give one of the two."),
    Param::string("awsSecretAccessKey")
        .from(AUTH_ENV)
        .secret()
        .doc("The secret access key of static credentials."),
    Param::string("awsSessionToken")
        .from(AUTH)
        .secret()
        .doc("The session token of temporary static credentials."),
    Param::string("awsRoleArn")
        .from(AUTH)
        .doc("A role assumed through STS with the credentials before the queue is read."),
    // Set by `podIdentity.externalID` (or a TriggerAuthentication): the external ID of the role
    // assumption.
    Param::string("awsExternalID")
        .from(AUTH)
        .doc("The external ID of the `awsRoleArn` assumption (set by `podIdentity.externalID`)."),
];

/// The aws-sqs-queue trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "aws-sqs-queue",
    params: PARAMS,
    rules: &[
        Rule::Exclusive(&["awsAccessKeyID", "awsAccessKeyId"]),
        Rule::Requires("awsSessionToken", "awsSecretAccessKey"),
    ],
    check,
    metric_detail,
    thresholds,
    warnings: crate::params::no_warnings,
    docs: DeclDocs {
        summary: "Scales on an Amazon SQS queue's approximate message count: visible messages, plus in-flight and delayed ones when asked.",
        checks: &[
            "A `queueURL` that is a URL has two path segments: the account and the queue name.",
            "`awsEndpoint` must be a URL.",
            "`awsAccessKeyID` (or `awsAccessKeyId`) and `awsSecretAccessKey` are given together.",
            "Without static keys the trigger's authentication must set `podIdentity.provider: aws` (the operator's own identity), and `awsEndpoint` is then refused.",
        ],
        example_metadata: &[
            (
                "queueURL",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            ),
            ("awsRegion", "eu-west-1"),
            ("queueLength", "10"),
        ],
        example_auth: &[
            ("awsAccessKeyID", "from-a-secret"),
            ("awsSecretAccessKey", "from-a-secret"),
        ],
        keda_differences: &[
            "The operator's own AWS identity signs requests only when the trigger's authentication says `podIdentity.provider: aws`, and then not towards a custom `awsEndpoint`; otherwise static keys are required. ebb never lends its identity to a ScaledObject that did not ask for it.",
            "`identityOwner` is read but not acted on.",
            "The trigger is poll-only: every SQS request is billed, so there is no fast activity watcher.",
        ],
    },
};

/// The queue name: the last path segment of a queue URL, or the value itself when it is not a URL.
pub fn queue_name(queue: &str) -> &str {
    if queue.contains("://") {
        queue.trim_end_matches('/').rsplit('/').next().unwrap_or(queue)
    } else {
        queue
    }
}

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    if let Some(queue) = p.str("queueURL")
        && queue.contains("://")
    {
        match url::Url::parse(queue) {
            Ok(u) if u.path_segments().map(|s| s.filter(|x| !x.is_empty()).count()) == Some(2) => {}
            _ => errors.push(ParamError::new(
                "queueURL",
                format!(
                    "{queue:?} is not a queue URL like https://sqs.<region>.amazonaws.com/<account>/<name>"
                ),
            )),
        }
    }
    if let Some(endpoint) = p.str("awsEndpoint")
        && url::Url::parse(endpoint).is_err()
    {
        errors.push(ParamError::new(
            "awsEndpoint",
            format!("{endpoint:?} is not a URL"),
        ));
    }
    let has_key_id = p.get("awsAccessKeyID").is_some() || p.get("awsAccessKeyId").is_some();
    // Either spelling of the key id goes with the secret (a `Rule::Requires` could name only one).
    if p.get("awsSecretAccessKey").is_some() && !has_key_id {
        errors.push(ParamError::new(
            "awsAccessKeyID",
            "is required with awsSecretAccessKey (or awsAccessKeyId)",
        ));
    }
    if has_key_id && p.get("awsSecretAccessKey").is_none() {
        errors.push(ParamError::new(
            "awsSecretAccessKey",
            "is required with awsAccessKeyID",
        ));
    }
    errors
}

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: p.float("queueLength").unwrap_or(1.0),
        activation: p.float("activationQueueLength").unwrap_or(0.0),
    }
}

fn metric_detail(p: &ParsedParams) -> String {
    format!("aws-sqs-{}", queue_name(p.str("queueURL").unwrap_or("queue")))
}

/// Builds an aws-sqs-queue scaler on the factory's shared HTTP and SDK clients (see
/// [`crate::registry`]).
pub fn build(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<std::sync::Arc<dyn crate::Scaler>, crate::ScalerError> {
    let clients = factory.shared(|o| scaler::SqsClients::new(o.http_timeout));
    Ok(std::sync::Arc::new(scaler::SqsScaler::new(
        clients,
        &trigger.params,
        trigger.thresholds,
        trigger.context.aws_pod_identity,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::{parse_meta, parse_with};

    #[test]
    fn defaults_and_names() {
        let p = parse_meta(
            &DECL,
            &[
                ("queueURL", "http://127.0.0.1:4566/123456789012/orders"),
                ("awsRegion", "us-east-1"),
            ],
        )
        .unwrap();
        assert_eq!(p.int("queueLength"), Some(5));
        assert_eq!(p.bool("scaleOnInFlight"), Some(true));
        assert_eq!(p.bool("scaleOnDelayed"), Some(false));
        assert_eq!((DECL.metric_detail)(&p), "aws-sqs-orders");
        assert_eq!(queue_name("orders"), "orders");
    }

    #[test]
    fn table_of_invalid_metadata() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("queueURL", "https://sqs.x.amazonaws.com/orders"),
                    ("awsRegion", "r"),
                ],
                "queueURL",
            ),
            (&[("queueURL", "q")], "awsRegion"),
            (
                &[("queueURL", "q"), ("awsRegion", "r"), ("queueLength", "0")],
                "queueLength",
            ),
            (
                &[("queueURL", "q"), ("awsRegion", "r"), ("scaleOnInFlight", "yes")],
                "scaleOnInFlight",
            ),
            (
                &[
                    ("queueURL", "q"),
                    ("awsRegion", "r"),
                    ("awsEndpoint", "not a url"),
                ],
                "awsEndpoint",
            ),
        ];
        for (meta, param) in cases {
            assert_eq!(parse_meta(&DECL, meta).unwrap_err()[0].param, *param, "{meta:?}");
        }
    }

    #[test]
    fn keys_need_both_halves_and_stay_hidden() {
        let errors = parse_with(
            &DECL,
            &[("queueURL", "q"), ("awsRegion", "r")],
            &[("awsAccessKeyID", "AKIAXXXX")],
        )
        .unwrap_err();
        assert_eq!(errors[0].param, "awsSecretAccessKey");
        let p = parse_with(
            &DECL,
            &[("queueURL", "q"), ("awsRegion", "r")],
            &[
                ("awsAccessKeyID", "AKIAXXXX"),
                ("awsSecretAccessKey", "wJalrSECRET"),
            ],
        )
        .unwrap();
        let json = p.redacted_json().to_string();
        assert!(
            !json.contains("wJalrSECRET") && !json.contains("AKIAXXXX"),
            "{json}"
        );
        // KEDA's second spelling of the key id pairs with the secret too.
        let p = parse_with(
            &DECL,
            &[("queueURL", "q"), ("awsRegion", "r")],
            &[
                ("awsAccessKeyId", "AKIAXXXX"),
                ("awsSecretAccessKey", "wJalrSECRET"),
            ],
        )
        .unwrap();
        assert_eq!(p.str("awsAccessKeyId"), Some("AKIAXXXX"));
        let errors = parse_with(
            &DECL,
            &[("queueURL", "q"), ("awsRegion", "r")],
            &[("awsSecretAccessKey", "wJalrSECRET")],
        )
        .unwrap_err();
        assert_eq!(errors[0].param, "awsAccessKeyID");
    }
}
