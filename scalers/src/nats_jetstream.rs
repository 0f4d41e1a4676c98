//! The `nats-jetstream` trigger: a consumer's pending plus unacknowledged messages.

use crate::params::{META, META_AUTH, Param, ParamError, ParsedParams, Rule, ScalerDecl, Thresholds};

/// Every parameter of the nats-jetstream trigger.
pub static PARAMS: &[Param] = &[
    Param::string("natsServerMonitoringEndpoint")
        .required()
        .from(META_AUTH),
    Param::string("account").from(META_AUTH),
    Param::string("accountID").from(META_AUTH),
    Param::string("stream").required().from(META),
    Param::string("consumer").required().from(META),
    Param::int("lagThreshold").default("10").above(0.0),
    Param::int("activationLagThreshold").default("0").min(0.0),
    Param::bool("useHttps").default("false"),
];

/// The nats-jetstream trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "nats-jetstream",
    params: PARAMS,
    rules: &[Rule::AnyOf(&["account", "accountID"])],
    check,
    metric_detail,
    thresholds,
};

fn check(p: &ParsedParams) -> Vec<ParamError> {
    let mut errors = Vec::new();
    if let Some(endpoint) = p.str("natsServerMonitoringEndpoint")
        && (endpoint.contains("://") || endpoint.contains('/'))
    {
        errors.push(ParamError::new(
            "natsServerMonitoringEndpoint",
            "must be host:port of the monitoring port, without scheme or path (set useHttps for https)",
        ));
    }
    errors
}

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: p.float("lagThreshold").unwrap_or(1.0),
        activation: p.float("activationLagThreshold").unwrap_or(0.0),
    }
}

fn metric_detail(p: &ParsedParams) -> String {
    format!("nats-jetstream-{}", p.str("stream").unwrap_or("stream"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::parse_meta;

    #[test]
    fn parses_and_validates() {
        let ok = [
            ("natsServerMonitoringEndpoint", "nats:8222"),
            ("account", "$G"),
            ("stream", "S"),
            ("consumer", "c"),
        ];
        let p = parse_meta(&DECL, &ok).unwrap();
        assert_eq!(p.int("lagThreshold"), Some(10));
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("natsServerMonitoringEndpoint", "n:8222"),
                    ("stream", "S"),
                    ("consumer", "c"),
                ],
                "account, accountID",
            ),
            (
                &[
                    ("natsServerMonitoringEndpoint", "http://n:8222"),
                    ("account", "a"),
                    ("stream", "S"),
                    ("consumer", "c"),
                ],
                "natsServerMonitoringEndpoint",
            ),
            (
                &[
                    ("natsServerMonitoringEndpoint", "n:8222"),
                    ("account", "a"),
                    ("consumer", "c"),
                ],
                "stream",
            ),
            (
                &[
                    ("natsServerMonitoringEndpoint", "n:8222"),
                    ("account", "a"),
                    ("stream", "S"),
                    ("consumer", "c"),
                    ("lagThreshold", "0"),
                ],
                "lagThreshold",
            ),
        ];
        for (meta, param) in cases {
            assert_eq!(parse_meta(&DECL, meta).unwrap_err()[0].param, *param, "{meta:?}");
        }
    }
}
