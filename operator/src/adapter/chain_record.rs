//! The APIService as it was before a chained install took it over, and putting it back
//! (`ebb apiservice restore`, the chart's pre-delete hook).
//!
//! The chart records the previous `v1beta1.external.metrics.k8s.io` (when it pointed at another
//! release's Service) in a ConfigMap at install time: `service` (`namespace/name:port`),
//! `caBundle` (PEM) and `insecureSkipTLSVerify`. On uninstall the APIService is pointed back at
//! that Service with that trust, provided it still points at this release's Service: whoever
//! took it over since keeps it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::adapter::certs::apiservice::points_at;
use crate::adapter::delegate::ServiceRef;

/// The previous APIService's backend, as the chart recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its Service.
    pub service: ServiceRef,
    /// The CA bundle it verified that Service with (PEM), if any.
    pub ca_bundle: Option<String>,
    /// Whether it skipped verification.
    pub insecure: bool,
}

/// Why the record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record names no Service: nothing to restore.
    #[error("the record names no previous Service")]
    NoService,
    /// A key holds something else than expected.
    #[error("the record's {key} is invalid: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was attempted.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Reads the record from the ConfigMap's data.
pub fn parse_record(data: &BTreeMap<String, String>) -> Result<Recorded, RecordError> {
    let text = |key: &str| data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    let service = text("service").ok_or(RecordError::NoService)?;
    let service = ServiceRef::parse(service).map_err(|message| RecordError::Invalid {
        key: "service",
        message,
    })?;
    let ca_bundle = text("caBundle").map(str::to_owned);
    if let Some(ca) = &ca_bundle
        && !ca.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(RecordError::Invalid {
            key: "caBundle",
            message: "not a PEM certificate bundle".into(),
        });
    }
    let insecure = match text("insecureSkipTLSVerify") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(RecordError::Invalid {
                key: "insecureSkipTLSVerify",
                message: format!("{other:?} is not true or false"),
            });
        }
    };
    Ok(Recorded {
        service,
        ca_bundle,
        insecure,
    })
}

/// The merge patch pointing `current` back at the recorded Service, or `None` when `current`
/// no longer points at `own` (namespace, name).
pub fn restore_patch(current: &APIService, recorded: &Recorded, own: &(String, String)) -> Option<Value> {
    if !points_at(current, Some(own)) {
        return None;
    }
    let ca = recorded.ca_bundle.as_ref().map_or(Value::Null, |pem| {
        json!(k8s_openapi::ByteString(pem.as_bytes().to_vec()))
    });
    Some(json!({"spec": {
        "service": {
            "namespace": recorded.service.namespace,
            "name": recorded.service.name,
            "port": recorded.service.port,
        },
        "caBundle": ca,
        "insecureSkipTLSVerify": if recorded.insecure { Value::Bool(true) } else { Value::Null },
    }}))
}

/// Restores `apiservice` from the record ConfigMap `record` (namespace, name) when it points at
/// `own`; what was done, for the hook's log.
pub async fn restore(
    client: Client,
    record: &(String, String),
    apiservice: &str,
    own: &(String, String),
) -> Result<String, RecordError> {
    let kube = |action: String| move |source| RecordError::Kube { action, source };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &record.0);
    let Some(config_map) = config_maps
        .get_opt(&record.1)
        .await
        .map_err(kube(format!("get ConfigMap {}/{}", record.0, record.1)))?
    else {
        return Ok(format!("no record {}/{}: nothing to restore", record.0, record.1));
    };
    let recorded = match parse_record(&config_map.data.unwrap_or_default()) {
        Ok(recorded) => recorded,
        Err(RecordError::NoService) => {
            return Ok("no previous Service was recorded: nothing to restore".into());
        }
        Err(e) => return Err(e),
    };
    let api: Api<APIService> = Api::all(client);
    let Some(current) = api
        .get_opt(apiservice)
        .await
        .map_err(kube(format!("get APIService {apiservice}")))?
    else {
        return Ok(format!("APIService {apiservice} is gone: nothing to restore"));
    };
    let Some(patch) = restore_patch(&current, &recorded, own) else {
        return Ok(format!(
            "APIService {apiservice} no longer points at {}/{}: left as it is",
            own.0, own.1
        ));
    };
    api.patch(apiservice, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(kube(format!("patch APIService {apiservice}")))?;
    Ok(format!(
        "APIService {apiservice} points at {} again",
        recorded.service
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn apiservice(ns: &str, name: &str) -> APIService {
        serde_json::from_value(json!({
            "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
            "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1",
                     "groupPriorityMinimum": 100, "versionPriority": 100,
                     "service": {"namespace": ns, "name": name, "port": 443}, "caBundle": "YQ=="}
        }))
        .unwrap()
    }

    #[test]
    fn the_chart_record_is_read_strictly() {
        let recorded = parse_record(&data(&[
            ("service", "keda/keda-operator-metrics-apiserver:443"),
            ("caBundle", CA),
            ("insecureSkipTLSVerify", "false"),
        ]))
        .unwrap();
        assert_eq!(
            recorded.service.to_string(),
            "keda/keda-operator-metrics-apiserver:443"
        );
        assert_eq!(recorded.ca_bundle.as_deref(), Some(CA.trim()));
        assert!(!recorded.insecure);
        let insecure = parse_record(&data(&[("service", "a/b"), ("insecureSkipTLSVerify", "true")])).unwrap();
        assert!(insecure.insecure && insecure.ca_bundle.is_none());
        assert!(matches!(parse_record(&data(&[])), Err(RecordError::NoService)));
        assert!(matches!(
            parse_record(&data(&[("service", " ")])),
            Err(RecordError::NoService)
        ));
        for bad in [
            vec![("service", "no-namespace")],
            vec![("service", "a/b"), ("caBundle", "not pem")],
            vec![("service", "a/b"), ("insecureSkipTLSVerify", "yes")],
        ] {
            assert!(
                matches!(parse_record(&data(&bad)), Err(RecordError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn restoring_points_back_only_an_apiservice_still_ours() {
        let recorded = parse_record(&data(&[
            ("service", "team-a/ebb-a-metrics:443"),
            ("caBundle", CA),
        ]))
        .unwrap();
        let own = ("team-b".to_owned(), "ebb-b-metrics".to_owned());
        let patch = restore_patch(&apiservice("team-b", "ebb-b-metrics"), &recorded, &own).unwrap();
        assert_eq!(
            patch["spec"]["service"],
            json!({"namespace": "team-a", "name": "ebb-a-metrics", "port": 443})
        );
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(CA.trim());
        assert_eq!(patch["spec"]["caBundle"], json!(b64));
        assert_eq!(patch["spec"]["insecureSkipTLSVerify"], Value::Null);
        assert_eq!(
            restore_patch(&apiservice("keda", "keda-metrics"), &recorded, &own),
            None,
            "taken over by someone else since: left alone"
        );
        let insecure = parse_record(&data(&[
            ("service", "team-a/ebb-a-metrics"),
            ("insecureSkipTLSVerify", "true"),
        ]))
        .unwrap();
        let patch = restore_patch(&apiservice("team-b", "ebb-b-metrics"), &insecure, &own).unwrap();
        assert_eq!(patch["spec"]["caBundle"], Value::Null);
        assert_eq!(patch["spec"]["insecureSkipTLSVerify"], json!(true));
    }
}
