//! The nats-jetstream trigger's typed configuration, built once from its parsed parameters by
//! `NatsJetStreamConfig::try_from(&ParsedParams)`, which reports every problem at once.
//!
//! This is the only place in the folder, besides the declaration in `mod.rs`, that reads a
//! parameter by name. Defaults are the declaration's: a parameter without a value here is a
//! problem, never silently replaced. Credentials (in `natsServerURL`, or `user:password@` in the
//! monitoring endpoint) never show in `Debug` or in an error.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::ScalerError;
use crate::metrics_api::Endpoint;
use crate::params::{ConfigErrors, ParsedParams, Thresholds, mask_userinfo};

/// Characters left as they are in the `acc=` query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One nats-jetstream trigger's settings: where to read which consumer, and its thresholds.
#[derive(Debug, Clone)]
pub struct NatsJetStreamConfig {
    /// How the consumer is read.
    pub(super) source: ConsumerSource,
    /// `stream`.
    pub(super) stream: String,
    /// `consumer`.
    pub(super) consumer: String,
    /// `lagThreshold` (the HPA target) and `activationLagThreshold`.
    pub(super) thresholds: Thresholds,
}

impl NatsJetStreamConfig {
    /// The stream the consumer reads.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The consumer whose lag is the metric.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The HPA target (`lagThreshold`) and the activation threshold (`activationLagThreshold`).
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Whether the consumer is read through the JetStream API (`natsServerURL`) rather than the
    /// monitoring endpoint.
    pub fn uses_jetstream_api(&self) -> bool {
        matches!(self.source, ConsumerSource::JetStream(_))
    }
}

/// Where one trigger reads its consumer.
#[derive(Debug, Clone)]
pub(super) enum ConsumerSource {
    /// `natsServerMonitoringEndpoint`: the monitoring port's `/jsz`.
    Monitoring(Monitoring),
    /// `natsServerURL`: the JetStream API over the client port.
    JetStream(NatsServer),
}

/// The monitoring side of one trigger: where and what to ask.
#[derive(Clone)]
pub(super) struct Monitoring {
    /// `http`, or `https` with `useHttps`.
    pub(super) scheme: &'static str,
    /// `natsServerMonitoringEndpoint` as configured: `host[:port]`.
    pub(super) authority: String,
    /// The `acc=` value: `accountID`, else `account`.
    pub(super) account: String,
    /// Names an account detail may carry: `account` and `accountID`.
    pub(super) accounts: Vec<String>,
}

impl fmt::Debug for Monitoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitoring")
            .field("endpoint", &mask_userinfo(&self.endpoint_url()))
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Monitoring {
    /// `scheme://authority path` on this trigger's scheme.
    pub(super) fn url(&self, authority: &str, path: &str) -> String {
        format!("{}://{authority}{path}", self.scheme)
    }

    /// The configured endpoint itself, `scheme://host:port`.
    pub(super) fn endpoint_url(&self) -> String {
        self.url(&self.authority, "")
    }

    /// KEDA's `/jsz` query of this trigger's account on the node at `authority`.
    pub(super) fn jsz_url(&self, authority: &str) -> String {
        let acc = utf8_percent_encode(&self.account, QUERY_VALUE);
        self.url(authority, &format!("/jsz?acc={acc}&config=true&consumers=true"))
    }

    /// The account names as `&str`, for [`super::read_jsz`].
    pub(super) fn account_names(&self) -> Vec<&str> {
        self.accounts.iter().map(String::as_str).collect()
    }
}

/// A NATS client URL with its credentials taken out.
#[derive(Clone)]
pub(super) struct NatsServer {
    /// The URL without credentials (what async-nats connects to; safe to show).
    pub(super) url: String,
    /// The credentials the URL carried.
    pub(super) auth: NatsAuth,
}

/// How a NATS connection authenticates.
#[derive(Clone)]
pub(super) enum NatsAuth {
    /// No credentials.
    None,
    /// `nats://user:password@host`.
    UserPassword(String, String),
    /// `nats://token@host`.
    Token(String),
}

impl NatsServer {
    /// Splits `raw` (`nats://` or `tls://`, with a host) into the bare URL and the
    /// percent-decoded credentials. The error never quotes `raw`.
    pub(super) fn parse(raw: &str) -> Result<Self, ConfigProblem> {
        let mut url = url::Url::parse(raw).map_err(|e| ConfigProblem::ServerUrl(Some(e)))?;
        if !matches!(url.scheme(), "nats" | "tls") || url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigProblem::ServerUrl(None));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let auth = match (url.username(), url.password()) {
            ("", None) => NatsAuth::None,
            (token, None) => NatsAuth::Token(decode(token)),
            (user, Some(password)) => NatsAuth::UserPassword(decode(user), decode(password)),
        };
        // Neither fails for a URL with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_fragment(None);
        Ok(Self {
            url: url.as_str().trim_end_matches('/').to_string(),
            auth,
        })
    }
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.auth {
            NatsAuth::None => "none",
            NatsAuth::UserPassword(..) => "user and password",
            NatsAuth::Token(_) => "token",
        };
        f.debug_struct("NatsServer")
            .field("url", &self.url)
            .field("auth", &auth)
            .finish()
    }
}

/// One reason the parameters do not make a [`NatsJetStreamConfig`]. Never quotes a credential.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// A parameter (or one of several alternatives, named together) has no value.
    #[error("{0} has no value")]
    Missing(&'static str),
    /// `natsServerURL` is not a `nats://` or `tls://` URL with a host (not quoted: it may carry
    /// credentials that an unparsable URL does not let us mask).
    #[error("natsServerURL must be a NATS client URL like nats://host:4222")]
    ServerUrl(#[source] Option<url::ParseError>),
    /// `natsServerMonitoringEndpoint` does not make an http(s) URL.
    #[error("natsServerMonitoringEndpoint {endpoint:?} does not make a valid URL")]
    MonitoringEndpoint {
        /// The endpoint, `user:password@` masked.
        endpoint: String,
        /// Why the `/jsz` URL built from it was refused.
        #[source]
        source: ScalerError,
    },
}

/// Every problem found converting one trigger's parameters, shown as
/// `nats-jetstream: <problem>; <problem>…`.
pub type NatsJetStreamConfigError = ConfigErrors<ConfigProblem>;

impl TryFrom<&ParsedParams> for NatsJetStreamConfig {
    type Error = NatsJetStreamConfigError;

    /// `natsServerURL`, when set, selects the JetStream API; otherwise
    /// `natsServerMonitoringEndpoint` with `account`/`accountID` and `useHttps` are used.
    fn try_from(p: &ParsedParams) -> Result<Self, Self::Error> {
        let mut problems = Vec::new();
        let mut need = |value: Option<&str>, name: &'static str| {
            if value.is_none() {
                problems.push(ConfigProblem::Missing(name));
            }
            value.unwrap_or_default().to_string()
        };
        let stream = need(p.str("stream"), "stream");
        let consumer = need(p.str("consumer"), "consumer");
        let target = p.float("lagThreshold");
        let activation = p.float("activationLagThreshold");
        for (value, name) in [(target, "lagThreshold"), (activation, "activationLagThreshold")] {
            if value.is_none() {
                problems.push(ConfigProblem::Missing(name));
            }
        }
        let source = match p.str("natsServerURL") {
            Some(url) => NatsServer::parse(url)
                .map(ConsumerSource::JetStream)
                .map_err(|e| problems.push(e))
                .ok(),
            None => monitoring(p, &mut problems).map(ConsumerSource::Monitoring),
        };
        match (source, target, activation) {
            (Some(source), Some(target), Some(activation)) if problems.is_empty() => Ok(Self {
                source,
                stream,
                consumer,
                thresholds: Thresholds { target, activation },
            }),
            _ => Err(NatsJetStreamConfigError {
                trigger_type: "nats-jetstream",
                problems,
            }),
        }
    }
}

/// The monitoring side, or `None` with its problems pushed onto `problems`.
fn monitoring(p: &ParsedParams, problems: &mut Vec<ConfigProblem>) -> Option<Monitoring> {
    let before = problems.len();
    let authority = p.str("natsServerMonitoringEndpoint");
    if authority.is_none() {
        problems.push(ConfigProblem::Missing(
            "natsServerMonitoringEndpoint or natsServerURL",
        ));
    }
    let account = p.str("accountID").or(p.str("account"));
    if account.is_none() {
        problems.push(ConfigProblem::Missing("account or accountID"));
    }
    let use_https = p.bool("useHttps");
    if use_https.is_none() {
        problems.push(ConfigProblem::Missing("useHttps"));
    }
    let (Some(authority), Some(use_https)) = (authority, use_https) else {
        return None;
    };
    let monitoring = Monitoring {
        scheme: if use_https { "https" } else { "http" },
        authority: authority.to_string(),
        // Checked above; an empty account still lets the endpoint be checked below.
        account: account.unwrap_or_default().to_string(),
        accounts: ["account", "accountID"]
            .iter()
            .filter_map(|n| p.str(n))
            .map(str::to_string)
            .collect(),
    };
    // Fail now, not at every poll, if the endpoint cannot make a URL (the account, encoded, cannot
    // break it).
    if let Err(source) = Endpoint::parse(&monitoring.jsz_url(&monitoring.authority), false) {
        // Masked as part of a URL: `mask_userinfo` only finds `user:password@` after a scheme.
        let shown = mask_userinfo(&monitoring.endpoint_url());
        let endpoint = shown.split_once("://").map_or(shown.as_str(), |(_, rest)| rest);
        problems.push(ConfigProblem::MonitoringEndpoint {
            endpoint: endpoint.to_string(),
            source,
        });
    }
    (problems.len() == before).then_some(monitoring)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats_jetstream::DECL;
    use crate::params::ScalerDecl;
    use crate::params::tests_support::parse_meta;

    fn config(meta: &[(&str, &str)]) -> NatsJetStreamConfig {
        NatsJetStreamConfig::try_from(&parse_meta(&DECL, meta).unwrap()).unwrap()
    }

    #[test]
    fn monitoring_config_takes_the_declared_defaults() {
        let c = config(&[
            ("natsServerMonitoringEndpoint", "nats:8222"),
            ("account", "$G"),
            ("stream", "S"),
            ("consumer", "c"),
        ]);
        assert_eq!((c.stream(), c.consumer()), ("S", "c"));
        assert_eq!(
            c.thresholds(),
            Thresholds {
                target: 10.0,
                activation: 0.0
            }
        );
        assert!(!c.uses_jetstream_api());
        let ConsumerSource::Monitoring(m) = &c.source else {
            panic!("{c:?}");
        };
        assert_eq!(m.endpoint_url(), "http://nats:8222");
        assert_eq!((m.account.as_str(), m.account_names()), ("$G", vec!["$G"]));

        // accountID is the query's account; both names match an account detail; https on demand.
        let c = config(&[
            ("natsServerMonitoringEndpoint", "nats:8222"),
            ("account", "main"),
            ("accountID", "ACC1"),
            ("useHttps", "true"),
            ("stream", "S"),
            ("consumer", "c"),
            ("lagThreshold", "7"),
            ("activationLagThreshold", "3"),
        ]);
        let ConsumerSource::Monitoring(m) = &c.source else {
            panic!("{c:?}");
        };
        assert_eq!(
            m.jsz_url(&m.authority),
            "https://nats:8222/jsz?acc=ACC1&config=true&consumers=true"
        );
        assert_eq!(m.account_names(), ["main", "ACC1"]);
        assert_eq!(
            c.thresholds(),
            Thresholds {
                target: 7.0,
                activation: 3.0
            }
        );
    }

    #[test]
    fn the_client_url_wins_and_its_credentials_stay_hidden() {
        let c = config(&[
            ("natsServerURL", "nats://admin:hunter2@nats:4222"),
            ("natsServerMonitoringEndpoint", "nats:8222"),
            ("stream", "S"),
            ("consumer", "c"),
        ]);
        assert!(c.uses_jetstream_api());
        let ConsumerSource::JetStream(server) = &c.source else {
            panic!("{c:?}");
        };
        assert_eq!(server.url, "nats://nats:4222");
        assert!(matches!(&server.auth, NatsAuth::UserPassword(u, p) if u == "admin" && p == "hunter2"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");

        let c = config(&[
            ("natsServerMonitoringEndpoint", "admin:hunter2@nats:8222"),
            ("account", "$G"),
            ("stream", "S"),
            ("consumer", "c"),
        ]);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("nats:8222"),
            "{debug}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = NatsJetStreamConfig::try_from(&ParsedParams::default()).unwrap_err();
        let missing: Vec<&str> = e
            .problems
            .iter()
            .map(|p| match p {
                ConfigProblem::Missing(name) => *name,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            missing,
            [
                "stream",
                "consumer",
                "lagThreshold",
                "activationLagThreshold",
                "natsServerMonitoringEndpoint or natsServerURL",
                "account or accountID",
                "useHttps",
            ]
        );
        assert!(
            e.to_string()
                .starts_with("nats-jetstream: stream has no value; consumer has no value; "),
            "{e}"
        );

        // Values the declaration's own check would refuse, to reach the conversion's checks.
        let loose = ScalerDecl {
            rules: &[],
            check: |_| Vec::new(),
            ..DECL
        };
        let p = parse_meta(
            &loose,
            &[
                ("natsServerMonitoringEndpoint", "admin:hunter2@bad host:8222"),
                ("stream", "S"),
                ("consumer", "c"),
            ],
        )
        .unwrap();
        let e = NatsJetStreamConfig::try_from(&p).unwrap_err();
        assert!(
            matches!(
                e.problems.as_slice(),
                [
                    ConfigProblem::Missing("account or accountID"),
                    ConfigProblem::MonitoringEndpoint { .. }
                ]
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            !text.contains("hunter2") && text.contains("bad host:8222"),
            "{text}"
        );

        for bad in ["http://nats:4222", "u:hunter2@nats:4222", "nats://"] {
            let p = parse_meta(
                &loose,
                &[("natsServerURL", bad), ("stream", "S"), ("consumer", "c")],
            )
            .unwrap();
            let e = NatsJetStreamConfig::try_from(&p).unwrap_err();
            assert!(
                matches!(e.problems.as_slice(), [ConfigProblem::ServerUrl(_)]),
                "{bad}: {e:?}"
            );
            assert_eq!(
                ScalerError::from(e).to_string(),
                "invalid scaler configuration: nats-jetstream: natsServerURL must be a NATS client URL \
                 like nats://host:4222"
            );
        }
    }

    #[test]
    fn client_urls_lose_their_credentials() {
        let s = NatsServer::parse("nats://us%40er:p%3Ass@nats:4222").unwrap();
        assert_eq!(s.url, "nats://nats:4222");
        assert!(matches!(&s.auth, NatsAuth::UserPassword(u, p) if u == "us@er" && p == "p:ss"));
        let t = NatsServer::parse("tls://s3cr3t-token@nats:4222").unwrap();
        assert!(matches!(&t.auth, NatsAuth::Token(tok) if tok == "s3cr3t-token"));
        let debug = format!("{s:?} {t:?}");
        assert!(!debug.contains("p:ss") && !debug.contains("s3cr3t"), "{debug}");
        assert_ne!(
            s.key(),
            NatsServer::parse("nats://us%40er:other@nats:4222").unwrap().key()
        );
        assert_eq!(
            s.key(),
            NatsServer::parse("nats://us%40er:p%3Ass@nats:4222/")
                .unwrap()
                .key()
        );
        assert_eq!(NatsServer::parse("nats://nats:4222").unwrap().key().1, None);
        for bad in ["http://nats:4222", "u:secret@nats:4222", "nats://"] {
            let e = NatsServer::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
