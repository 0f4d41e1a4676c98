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
use super::client::{Connection, PrometheusClients};
use super::config::PrometheusConfig;
use crate::common::http::USER_AGENT;
use crate::params::{ParsedParams, Thresholds};
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// One prometheus trigger: its query request and thresholds.
pub struct PrometheusScaler {
    connection: Arc<Connection>,
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
    /// its server, credentials and TLS settings in `clients`.
    pub fn new(
        clients: &PrometheusClients,
        params: &ParsedParams,
        thresholds: Thresholds,
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
