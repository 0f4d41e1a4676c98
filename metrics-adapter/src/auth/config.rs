//! The API server's client-authentication settings: the `extension-apiserver-authentication`
//! ConfigMap (CAs, allowed front-proxy names, header names), parsed here and followed by
//! [`super::DelegatedAuth::follow_config`].

use std::collections::BTreeMap;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{AUTH_CONFIG_MAP_NAME, AUTH_CONFIG_MAP_NAMESPACE, AuthError};

/// Client-authentication settings of the API server (the `extension-apiserver-authentication`
/// ConfigMap). An empty CA list disables the corresponding authenticator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// CAs for client certificates authenticating as themselves (`client-ca-file`).
    pub client_ca: Vec<CertificateDer<'static>>,
    /// CAs for the front proxy's client certificate (`requestheader-client-ca-file`).
    pub requestheader_ca: Vec<CertificateDer<'static>>,
    /// CNs the front proxy's certificate may have; empty = any (`requestheader-allowed-names`).
    pub requestheader_allowed_names: Vec<String>,
    /// Headers carrying the user name, first non-empty wins (`requestheader-username-headers`).
    pub requestheader_username_headers: Vec<String>,
    /// Headers carrying groups, all values (`requestheader-group-headers`).
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers carrying extra attributes (`requestheader-extra-headers-prefix`).
    pub requestheader_extra_headers_prefix: Vec<String>,
}

impl Default for AuthConfig {
    /// No CAs, and the header names kube-apiserver is usually configured with (`X-Remote-User`,
    /// `X-Remote-Group`, `X-Remote-Extra-`).
    fn default() -> Self {
        Self {
            client_ca: Vec::new(),
            requestheader_ca: Vec::new(),
            requestheader_allowed_names: Vec::new(),
            requestheader_username_headers: vec!["X-Remote-User".to_owned()],
            requestheader_group_headers: vec!["X-Remote-Group".to_owned()],
            requestheader_extra_headers_prefix: vec!["X-Remote-Extra-".to_owned()],
        }
    }
}

impl AuthConfig {
    /// Reads the configuration from the data of the `extension-apiserver-authentication`
    /// ConfigMap. Missing keys are empty (as in `k8s.io/apiserver`).
    pub fn from_config_map_data(data: &BTreeMap<String, String>) -> Result<Self, AuthError> {
        let text = |key: &str| data.get(key).map(String::as_str).unwrap_or("");
        let list = |key: &str| -> Result<Vec<String>, AuthError> {
            let raw = text(key).trim();
            if raw.is_empty() {
                return Ok(Vec::new());
            }
            serde_json::from_str(raw)
                .map_err(|e| AuthError::InvalidConfig(format!("{key}: expected a JSON list of strings: {e}")))
        };
        Ok(Self {
            client_ca: certificates_from_pem(text("client-ca-file"))
                .map_err(|e| AuthError::InvalidConfig(format!("client-ca-file: {e}")))?,
            requestheader_ca: certificates_from_pem(text("requestheader-client-ca-file"))
                .map_err(|e| AuthError::InvalidConfig(format!("requestheader-client-ca-file: {e}")))?,
            requestheader_allowed_names: list("requestheader-allowed-names")?,
            requestheader_username_headers: list("requestheader-username-headers")?,
            requestheader_group_headers: list("requestheader-group-headers")?,
            requestheader_extra_headers_prefix: list("requestheader-extra-headers-prefix")?,
        })
    }

    /// Reads `kube-system/extension-apiserver-authentication` through `client` (needs the
    /// `extension-apiserver-authentication-reader` Role).
    pub async fn load(client: kube::Client) -> Result<Self, AuthError> {
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, AUTH_CONFIG_MAP_NAMESPACE);
        let config_map = api.get(AUTH_CONFIG_MAP_NAME).await?;
        Self::from_config_map_data(&config_map.data.unwrap_or_default())
    }

    /// All CAs a client certificate may chain to (requestheader and client CAs).
    pub fn all_client_roots(&self) -> Vec<CertificateDer<'static>> {
        self.requestheader_ca
            .iter()
            .chain(&self.client_ca)
            .cloned()
            .collect()
    }
}

/// Parses every `CERTIFICATE` block of a PEM bundle (other blocks are skipped).
pub fn certificates_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, AuthError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AuthError::InvalidConfig(format!("PEM: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_map_data() {
        let data: BTreeMap<String, String> = [
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = AuthConfig::from_config_map_data(&data).expect("config");
        assert_eq!(config.requestheader_allowed_names, vec!["front-proxy-client"]);
        assert_eq!(config.requestheader_username_headers, vec!["X-Remote-User"]);
        assert!(config.client_ca.is_empty());

        let mut bad = data.clone();
        bad.insert("requestheader-allowed-names".into(), "front-proxy-client".into());
        assert!(AuthConfig::from_config_map_data(&bad).is_err());
        let mut bad = data;
        bad.insert(
            "client-ca-file".into(),
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into(),
        );
        assert!(AuthConfig::from_config_map_data(&bad).is_err());
    }
}
