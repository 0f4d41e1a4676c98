//! The `prometheus` trigger: the value of a PromQL instant query, asked of a Prometheus-compatible
//! HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics…) at `<serverAddress>/api/v1/query`.
//!
//! This file is the declaration ([`DECL`]) and the `build`; [`config`] turns the parsed
//! parameters into a [`PrometheusConfig`] (with the authentication: bearer, basic, tls, custom),
//! [`pairs`] reads and checks `customHeaders` and `queryParameters`, [`request`] the server
//! address, the query URL and `timeout`, [`answer`] reads the value out of the answer (pure),
//! [`client`] holds the pooled HTTP clients, and [`scaler`] is the [`Scaler`](crate::Scaler).
//!
//! The trigger is poll-only: each `pollingInterval` asks the server once (the server is a
//! tenant's, and a query may be expensive, so ebb does not ask it every half second as the
//! broker watchers do). Errors are never a sample of 0: only the server's answer "no series"
//! (and NaN/±Inf) reads as 0, with `ignoreNullValues`, as in KEDA.

pub mod answer;
pub mod client;
pub mod config;
pub mod pairs;
pub mod request;
pub mod scaler;

pub use client::{MAX_BODY_BYTES, NamespaceSlots, PER_NAMESPACE_IN_FLIGHT, PrometheusClients};
pub use config::{Auth, ConfigError, ConfigProblem, PrometheusConfig};
pub use scaler::PrometheusScaler;

use crate::params::{
    AUTH, DeclDocs, META_AUTH, Param, ParamError, ParsedParams, Rule, ScalerDecl, Thresholds,
};

/// Every parameter of the prometheus trigger.
pub static PARAMS: &[Param] = &[
    Param::string("serverAddress")
        .required()
        .masks_userinfo()
        .doc("The server's `http://` or `https://` base URL, e.g. `http://prometheus.monitoring:9090`; the query goes to `<serverAddress>/api/v1/query`. A `user:password@` in it is sent as basic auth."),
    Param::string("query")
        .required()
        .doc("The PromQL query; it must return one sample (an instant vector of one series, or a scalar)."),
    Param::float("threshold")
        .required()
        .above(0.0)
        .doc("Target value per replica."),
    Param::float("activationThreshold")
        .default("0")
        .doc("The trigger is active (scales up from zero) when the value is above this."),
    Param::string("namespace")
        .doc("Sent as the `namespace` query parameter, for servers that scope queries by it (Thanos Querier, prom-label-proxy)."),
    Param::string("customHeaders")
        .secret()
        .doc("Extra request headers, `name=value,name2=value2` (at most 32; not Authorization, Host or framing headers: credentials go in the TriggerAuthentication); shown redacted, as values may be keys."),
    Param::string("queryParameters")
        .secret()
        .doc("Extra query parameters, `key=value,key2=value2` (at most 32; not `query` or `time`), e.g. `dedup=true` for Thanos; shown redacted, as values may be keys."),
    Param::bool("ignoreNullValues")
        .default("true")
        .doc("Read an answer with no series, or a NaN or ±Inf value, as 0; when false these are errors. Never applies to failed requests."),
    Param::bool("unsafeSsl")
        .default("false")
        .doc("Accept any server certificate without verifying it."),
    Param::string("timeout")
        .doc("Timeout of one query: a duration (`5s`, `1500ms`) or a number of milliseconds, at most 60 s (default: the operator's HTTP timeout, 3 s)."),
    Param::list("authModes")
        .from(META_AUTH)
        .doc("How requests authenticate, comma-separated: `bearer` (`bearerToken`), `basic` (`username`, `password`), `tls` (`cert`, `key`, optional `ca`), `custom` (`customAuthHeader`, `customAuthValue`); bearer and basic exclude each other."),
    Param::list("authMode")
        .from(META_AUTH)
        .doc("Another spelling of `authModes`, as KEDA accepts it."),
    Param::string("bearerToken")
        .from(AUTH)
        .secret()
        .doc("With `authModes: bearer`, the token sent as `Authorization: Bearer <token>`."),
    Param::string("token")
        .from(AUTH)
        .secret()
        .doc("Another name of `bearerToken`, as KEDA accepts it."),
    Param::string("username")
        .from(AUTH)
        .doc("With `authModes: basic`, the user name."),
    Param::string("password")
        .from(AUTH)
        .secret()
        .doc("With `authModes: basic`, the password (may be empty)."),
    Param::string("ca")
        .from(AUTH)
        .doc("PEM CA certificates trusted in addition to the system's roots."),
    Param::string("cert")
        .from(AUTH)
        .doc("With `authModes: tls`, the client certificate (PEM), given with `key`."),
    Param::string("key")
        .from(AUTH)
        .secret()
        .doc("With `authModes: tls`, the client certificate's private key (PEM, unencrypted: PKCS#8, PKCS#1 or SEC1)."),
    Param::string("customAuthHeader")
        .from(AUTH)
        .doc("With `authModes: custom`, the name of the header carrying `customAuthValue`."),
    Param::string("customAuthValue")
        .from(AUTH)
        .secret()
        .doc("With `authModes: custom`, the value of `customAuthHeader`."),
];

/// The prometheus trigger's declaration.
pub static DECL: ScalerDecl = ScalerDecl {
    trigger_type: "prometheus",
    params: PARAMS,
    rules: &[
        Rule::Exclusive(&["authModes", "authMode"]),
        Rule::Exclusive(&["bearerToken", "token"]),
    ],
    check,
    metric_detail,
    thresholds,
    warnings,
    docs: DeclDocs {
        summary: "Scales on the value of a PromQL query, asked of a Prometheus-compatible HTTP API.",
        checks: &[
            "`serverAddress` must be an `http://` or `https://` URL without a query string or fragment, at most 2048 bytes; `query` at most 8 KiB.",
            "`customHeaders` and `queryParameters` are `key=value` lists (at most 32 entries, 8 KiB, no key twice); header names must be HTTP tokens and values visible ASCII; Authorization, Proxy-Authorization, Host and the framing headers cannot be set, nor the `query` and `time` parameters (nor `namespace` when the `namespace` parameter is set).",
            "`timeout` must be a duration or a number of milliseconds between 0 (the default) and 60 s.",
            "`authModes` entries must be `bearer`, `basic`, `tls` or `custom`; bearer and basic exclude each other. bearer needs `bearerToken`, basic `username`, tls `cert` and `key` and an `https://` serverAddress, custom `customAuthHeader` (a valid header name, Authorization only without bearer and basic) and `customAuthValue`.",
        ],
        example_metadata: &[
            ("serverAddress", "http://prometheus.monitoring:9090"),
            (
                "query",
                "sum(rate(http_requests_total{service=\"checkout\"}[2m]))",
            ),
            ("threshold", "100"),
            ("activationThreshold", "5"),
            ("authModes", "bearer"),
        ],
        example_auth: &[("bearerToken", "<token>")],
        keda_differences: &[
            "Every failure is an error, never a value of 0: KEDA also reads 0 from a 2xx answer without `status: success` (e.g. `{}`), from `status: error` in a 2xx answer, from a range-vector (matrix) result and from a sample whose value list is empty; ebb reads 0 (with `ignoreNullValues`) only from an empty instant vector or a NaN/±Inf value, as KEDA does.",
            "A scalar result (`scalar(…)`, a number) is read; KEDA fails on it.",
            "ebb sends no `time` parameter: the server evaluates the query at its own current time, so a clock skew between the operator and the server cannot shift the result. `namespace` and every query parameter are percent-encoded (KEDA sends `namespace` as given).",
            "`customHeaders` cannot set Authorization, Proxy-Authorization, Host or framing headers; header names and values are checked; `customHeaders` and `queryParameters` take at most 32 entries, reject a key given twice, and a value may contain `=` (KEDA rejects it).",
            "With `authModes: tls`, `unsafeSsl` still applies (KEDA ignores it then), and `serverAddress` must be `https://` (KEDA would send the request in plain text). `ca` is trusted whenever given (KEDA only with an auth mode).",
            "`custom` is sent together with `bearer` or `basic` (KEDA sends only the first of them); auth values are trimmed of surrounding whitespace.",
            "`authModes` `apiKey` and `oauth` are errors (KEDA's prometheus trigger accepts and ignores them); pod identity (Azure managed Prometheus, GCP, AWS SigV4 with `awsRegion`/`identityOwner`) is not supported.",
            "`threshold` must be greater than 0; `timeout` is at most 60 s; a `serverAddress` with a query string or fragment is refused (KEDA would append the query path after it).",
            "Answers are read up to 1 MiB, and at most 8 queries per namespace run at once; the metric is named `s<index>-prometheus`, as in KEDA.",
        ],
    },
};

fn check(p: &ParsedParams) -> Vec<ParamError> {
    match PrometheusConfig::try_from(p) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .iter()
            .filter(|problem| !problem.is_unavailable())
            .map(|problem| ParamError::new(problem.param(), problem.to_string()))
            .collect(),
    }
}

/// Credentials given without the auth mode that sends them: KEDA ignores them silently, and so
/// does ebb, but says so.
fn warnings(p: &ParsedParams) -> Vec<String> {
    let modes: Vec<String> = p
        .list("authModes")
        .or_else(|| p.list("authMode"))
        .unwrap_or_default()
        .iter()
        .map(|m| m.to_ascii_lowercase())
        .collect();
    let unused: &[(&str, &[&str])] = &[
        ("bearer", &["bearerToken", "token"]),
        ("basic", &["username", "password"]),
        ("tls", &["cert", "key"]),
        ("custom", &["customAuthHeader", "customAuthValue"]),
    ];
    unused
        .iter()
        .filter(|(mode, _)| !modes.iter().any(|m| m == mode))
        .flat_map(|(mode, params)| {
            params.iter().filter(|param| p.is_set(param)).map(move |param| {
                format!("{param} is given but authModes does not include {mode}: it is not sent")
            })
        })
        .collect()
}

fn thresholds(p: &ParsedParams) -> Thresholds {
    Thresholds {
        target: p.float("threshold").unwrap_or(1.0),
        activation: p.float("activationThreshold").unwrap_or(0.0),
    }
}

fn metric_detail(_: &ParsedParams) -> String {
    "prometheus".to_string()
}

/// The factory's pool of prometheus clients, created on first use with the factory's HTTP
/// timeout as the default query timeout.
pub fn shared_clients(factory: &crate::ScalerFactory) -> std::sync::Arc<PrometheusClients> {
    factory.shared(|o| PrometheusClients::new(o.http_timeout))
}

/// Builds a prometheus scaler on the factory's shared clients (see [`crate::registry`]).
pub fn build(
    factory: &crate::ScalerFactory,
    trigger: &crate::registry::ParsedTrigger,
) -> Result<std::sync::Arc<dyn crate::Scaler>, crate::ScalerError> {
    Ok(std::sync::Arc::new(PrometheusScaler::new(
        &shared_clients(factory),
        &trigger.params,
        trigger.thresholds,
        trigger.context.namespace.as_deref().unwrap_or_default(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::tests_support::{parse_meta, parse_with};
    use crate::params::{TriggerInput, parse};
    use std::collections::BTreeMap;

    const SERVER: (&str, &str) = ("serverAddress", "http://localhost:9090");
    const NAME: (&str, &str) = ("metricName", "http_requests_total");
    const THRESHOLD: (&str, &str) = ("threshold", "100");
    const QUERY: (&str, &str) = ("query", "up");

    /// Metadata or auth params: `(name, value)` pairs.
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    /// The params of a trigger with `extra` metadata after KEDA's base four, or the names of the
    /// parameters in error.
    fn meta(extra: &[(&'static str, &'static str)]) -> Result<ParsedParams, Vec<String>> {
        let mut all = vec![SERVER, NAME, THRESHOLD, QUERY];
        for (k, v) in extra {
            all.retain(|(key, _)| key != k);
            all.push((k, v));
        }
        parse_meta(&DECL, &all).map_err(|e| e.into_iter().map(|e| e.param).collect())
    }

    /// KEDA's `testPromMetadata` table, row by row: (metadata changes, error expected).
    #[test]
    fn keda_metadata_table() {
        assert!(parse_meta(&DECL, &[]).is_err(), "empty metadata");
        let rows: &[(Pairs, Option<&str>)] = &[
            (&[], None),
            (&[("namespace", "foo")], None),
            (&[("ignoreNullValues", "false")], None),
            (&[("activationThreshold", "50")], None),
            (&[("serverAddress", "")], Some("serverAddress")),
            (&[("threshold", "")], Some("threshold")),
            (&[("threshold", "one")], Some("threshold")),
            (&[("activationThreshold", "one")], Some("activationThreshold")),
            (&[("query", "")], Some("query")),
            (&[("ignoreNullValues", "xxxx")], Some("ignoreNullValues")),
            (
                &[("serverAddress", "https://localhost:9090"), ("unsafeSsl", "true")],
                None,
            ),
            (&[("customHeaders", "key1=value1,key2=value2")], None),
            (&[("customHeaders", "key1=value1,key2")], Some("customHeaders")),
            (&[("queryParameters", "key1=value1,key2=value2")], None),
            (
                &[("queryParameters", "key1=value1,key2")],
                Some("queryParameters"),
            ),
            (&[("timeout", "1000")], None),
            (&[("timeout", "-1")], Some("timeout")),
            (&[("timeout", "a")], Some("timeout")),
        ];
        for (extra, error) in rows {
            let result = meta(extra);
            match error {
                None => assert!(result.is_ok(), "{extra:?}: {result:?}"),
                Some(param) => assert_eq!(result.unwrap_err(), [*param], "{extra:?}"),
            }
        }
        let p = meta(&[]).unwrap();
        assert_eq!(p.float("threshold"), Some(100.0));
        assert_eq!(p.float("activationThreshold"), Some(0.0));
        assert_eq!(p.bool("ignoreNullValues"), Some(true), "KEDA's default");
        assert!(
            p.warnings.iter().any(|w| w.starts_with("metricName:")),
            "{:?}",
            p.warnings
        );
    }

    /// ebb's own checks: tenant text that would leave the request's bounds.
    #[test]
    fn hostile_values_are_refused() {
        let rows: &[(&[(&str, &str)], &str)] = &[
            (&[("serverAddress", "ftp://h")], "serverAddress"),
            (&[("serverAddress", "http://h:9090/?x=1")], "serverAddress"),
            (&[("threshold", "0")], "threshold"),
            (&[("customHeaders", "Authorization=Bearer x")], "customHeaders"),
            (&[("customHeaders", "Host=evil")], "customHeaders"),
            (&[("customHeaders", "X-A=a\r\nb")], "customHeaders"),
            (&[("customHeaders", "Bad Name=1")], "customHeaders"),
            (&[("queryParameters", "query=up")], "queryParameters"),
            (&[("queryParameters", "time=1")], "queryParameters"),
            (
                &[("namespace", "a"), ("queryParameters", "namespace=b")],
                "queryParameters",
            ),
            (&[("timeout", "2m")], "timeout"),
            (&[("authModes", "apiKey")], "authModes"),
            (&[("authModes", "oauth")], "authModes"),
            (
                &[("authModes", "bearer"), ("authMode", "bearer")],
                "authModes, authMode",
            ),
        ];
        for (extra, param) in rows {
            assert_eq!(meta(extra).unwrap_err(), [*param], "{extra:?}");
        }
        let long_query = "x".repeat(request::MAX_QUERY + 1);
        let long: &'static str = Box::leak(long_query.into_boxed_str());
        assert_eq!(meta(&[("query", long)]).unwrap_err(), ["query"]);
    }

    fn with_auth(
        modes: &'static str,
        server: &'static str,
        auth: &[(&str, &str)],
    ) -> Result<ParsedParams, Vec<String>> {
        parse_with(
            &DECL,
            &[("serverAddress", server), THRESHOLD, QUERY, ("authModes", modes)],
            auth,
        )
        .map_err(|e| e.into_iter().map(|e| e.param).collect())
    }

    /// KEDA's `testPrometheusAuthMetadata` table (TLS cases on an https:// server: see below).
    #[test]
    fn keda_auth_table() {
        const HTTPS: &str = "https://localhost:9090";
        const HTTP: &str = "http://localhost:9090";
        let ca_cert_key: &[(&str, &str)] = &[("ca", "caaa"), ("cert", "ceert"), ("key", "keey")];
        let user_pass: &[(&str, &str)] = &[("username", "user"), ("password", "pass")];
        let rows: &[(&str, &str, Pairs, Option<&str>)] = &[
            ("tls", HTTPS, ca_cert_key, None),
            ("tls", HTTPS, &[("cert", "ceert"), ("key", "keey")], None),
            (
                "tls",
                HTTPS,
                &[("ca", "caaa"), ("cert", "ceert")],
                Some("cert and key"),
            ),
            (
                "tls",
                HTTPS,
                &[("ca", "caaa"), ("key", "keey")],
                Some("cert and key"),
            ),
            ("bearer", HTTP, &[("bearerToken", "tooooken")], None),
            ("bearer", HTTP, &[("token", "tooooken")], None),
            ("bearer", HTTP, &[], Some("bearerToken")),
            ("basic", HTTP, user_pass, None),
            ("basic", HTTP, &[("username", "user")], None),
            ("basic", HTTP, &[], Some("username")),
            (
                "tls, basic",
                HTTPS,
                &[
                    ("ca", "caaa"),
                    ("cert", "ceert"),
                    ("key", "keey"),
                    ("username", "user"),
                    ("password", "pass"),
                ],
                None,
            ),
            ("tls,basic", HTTPS, user_pass, Some("cert and key")),
            (
                "custom",
                HTTP,
                &[("customAuthHeader", "header"), ("customAuthValue", "value")],
                None,
            ),
            (
                "custom",
                HTTP,
                &[("customAuthHeader", "")],
                Some("customAuthHeader and customAuthValue"),
            ),
            (
                "custom",
                HTTP,
                &[("customAuthValue", "")],
                Some("customAuthHeader and customAuthValue"),
            ),
            (
                "custom",
                HTTP,
                &[("customAuthHeader", "header\n"), ("customAuthValue", "value\n")],
                None,
            ),
            // ebb's own: tls needs https, bearer and basic exclude each other (KEDA's exclusiveSet).
            ("tls", HTTP, ca_cert_key, Some("authModes")),
            (
                "bearer,basic",
                HTTP,
                &[("bearerToken", "t"), ("username", "u")],
                Some("authModes"),
            ),
            (
                "custom",
                HTTP,
                &[("customAuthHeader", "Host"), ("customAuthValue", "v")],
                Some("customAuthHeader"),
            ),
            (
                "custom,bearer",
                HTTP,
                &[
                    ("customAuthHeader", "authorization"),
                    ("customAuthValue", "v"),
                    ("bearerToken", "t"),
                ],
                Some("customAuthHeader"),
            ),
            (
                "custom",
                HTTP,
                &[
                    ("customAuthHeader", "Authorization"),
                    ("customAuthValue", "Token v"),
                ],
                None,
            ),
            ("bearer", HTTP, &[("bearerToken", "a\u{1}b")], Some("bearerToken")),
        ];
        for (modes, server, auth, error) in rows {
            let result = with_auth(modes, server, auth);
            match error {
                None => assert!(result.is_ok(), "{modes} {auth:?}: {result:?}"),
                Some(param) => assert_eq!(result.unwrap_err(), [*param], "{modes} {auth:?}"),
            }
        }
        // authModes may come from the TriggerAuthentication, and as KEDA's `authMode`.
        let p = parse_with(
            &DECL,
            &[SERVER, THRESHOLD, QUERY],
            &[("authMode", "bearer"), ("bearerToken", "t")],
        )
        .unwrap();
        let config = PrometheusConfig::try_from(&p).unwrap();
        assert_eq!(config.auth.authorization.unwrap(), "Bearer t");
    }

    /// `ebb validate` without the TriggerAuthentication: nothing it would supply is reported.
    #[test]
    fn unresolved_authentication_is_not_an_error_offline() {
        let metadata: BTreeMap<String, String> = [SERVER, THRESHOLD, QUERY, ("authModes", "tls,bearer")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let input = TriggerInput {
            metadata: &metadata,
            auth_params: None,
            resolved_env: None,
        };
        // http:// with tls is still an error: it does not depend on the missing values.
        let errors = parse(&DECL, &input).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].param, "authModes");
        let mut https = metadata.clone();
        https.insert("serverAddress".into(), "https://h:9090".into());
        let input = TriggerInput {
            metadata: &https,
            ..input
        };
        let p = parse(&DECL, &input).unwrap();
        assert!(p.is_unresolved("bearerToken"));
        assert!(
            PrometheusConfig::try_from(&p).is_err(),
            "the operator needs the values"
        );
    }

    #[test]
    fn the_config_carries_headers_parameters_and_credentials() {
        let p = parse_with(
            &DECL,
            &[
                ("serverAddress", "https://u:pw@thanos.example/prefix/"),
                ("query", "sum(up)"),
                THRESHOLD,
                ("namespace", "team-a"),
                ("customHeaders", "X-Scope-OrgID=tenant-1, X-Trace=on"),
                ("queryParameters", "dedup=true"),
                ("ignoreNullValues", "false"),
                ("timeout", "1500ms"),
                ("unsafeSsl", "true"),
                ("authModes", "basic,custom,tls"),
            ],
            &[
                ("username", "alice"),
                ("password", "hunter22"),
                ("customAuthHeader", "X-Api-Key"),
                ("customAuthValue", "k3y-value"),
                ("cert", "CERT"),
                ("key", "KEY"),
            ],
        )
        .unwrap();
        let c = PrometheusConfig::try_from(&p).unwrap();
        assert_eq!(
            c.server.shown(),
            "https://<redacted>@thanos.example/prefix/api/v1/query"
        );
        assert_eq!(c.namespace.as_deref(), Some("team-a"));
        assert_eq!(c.custom_headers.len(), 2);
        assert_eq!(c.custom_headers[0].0, "x-scope-orgid");
        assert_eq!(c.query_parameters, [("dedup".to_string(), "true".to_string())]);
        assert!(!c.ignore_null_values);
        assert_eq!(c.timeout, Some(std::time::Duration::from_millis(1500)));
        // Basic from the TriggerAuthentication wins over the address's user:password@.
        let authorization = c.auth.authorization.as_ref().unwrap();
        assert!(authorization.is_sensitive());
        assert_eq!(authorization, "Basic YWxpY2U6aHVudGVyMjI=");
        let (name, value) = c.auth.custom.as_ref().unwrap();
        assert_eq!((name.as_str(), value.is_sensitive()), ("x-api-key", true));
        assert_eq!(c.auth.tls.trust, crate::common::tls::Trust::AnyCertificate);
        assert!(c.auth.tls.client_cert.is_some());
        let debug = format!("{c:?}");
        for secret in ["hunter22", "k3y-value", "pw@", "KEY\""] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        // Without authModes, the address's user:password@ is sent as basic auth.
        let p = parse_meta(
            &DECL,
            &[("serverAddress", "http://u:pw@h:9090"), QUERY, THRESHOLD],
        )
        .unwrap();
        let c = PrometheusConfig::try_from(&p).unwrap();
        assert_eq!(c.auth.authorization.unwrap(), "Basic dTpwdw==");
        assert_eq!(c.auth.secrets, ["pw"]);
    }

    #[test]
    fn credentials_without_their_mode_are_warned_about() {
        let p = parse_with(
            &DECL,
            &[SERVER, THRESHOLD, QUERY, ("authModes", "basic")],
            &[("username", "u"), ("bearerToken", "t"), ("key", "k")],
        )
        .unwrap();
        assert_eq!(
            (DECL.warnings)(&p),
            [
                "bearerToken is given but authModes does not include bearer: it is not sent",
                "key is given but authModes does not include tls: it is not sent",
            ]
        );
        let p = parse_with(&DECL, &[SERVER, THRESHOLD, QUERY], &[("bearerToken", "t")]).unwrap();
        assert_eq!((DECL.warnings)(&p).len(), 1);
        let p = parse_with(
            &DECL,
            &[SERVER, THRESHOLD, QUERY, ("authModes", "bearer")],
            &[("bearerToken", "t")],
        )
        .unwrap();
        assert!((DECL.warnings)(&p).is_empty());
    }

    #[test]
    fn metric_name_and_thresholds_follow_keda() {
        let input: BTreeMap<String, String> = [SERVER, THRESHOLD, QUERY, ("activationThreshold", "2.5")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (index, name) in [(0, "s0-prometheus"), (1, "s1-prometheus")] {
            let t = crate::parse_trigger(index, "prometheus", &input, Some(&BTreeMap::new()), None).unwrap();
            assert_eq!(t.metric_name, name);
            assert_eq!((t.thresholds.target, t.thresholds.activation), (100.0, 2.5));
        }
    }
}
