//! Reading `external.metrics.k8s.io` as the HPA does: through the API server, or straight from one
//! adapter replica over TLS verified against a given CA.

use kube::{Client, Config};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

/// The path of `metric` for ScaledObject `so` in namespace `ns` (the HPA's request).
pub fn metric_path(ns: &str, so: &str, metric: &str) -> String {
    format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=scaledobject.ebb.dev%2Fname%3D{so}"
    )
}

/// GETs an external metric list at `path` and returns its first item's value, rounded down to a
/// whole number; the error says what was answered instead.
pub async fn read_metric(client: &Client, path: &str) -> Result<i64, String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client.request_text(request).await.map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    let value = doc["items"][0]["value"]
        .as_str()
        .ok_or_else(|| format!("no value in {text}"))?;
    whole_quantity(value).ok_or_else(|| format!("not a quantity: {value}"))
}

/// A quantity as the adapter writes it ("7", "9500m", "2k"), rounded down to a whole number.
pub fn whole_quantity(q: &str) -> Option<i64> {
    if let Some(milli) = q.strip_suffix('m') {
        return milli.parse::<i64>().ok().map(|m| m.div_euclid(1000));
    }
    if let Some(kilo) = q.strip_suffix('k') {
        return kilo.parse::<i64>().ok().and_then(|k| k.checked_mul(1000));
    }
    q.parse().ok()
}

/// A client for one adapter replica at `https://{ip}:{port}` that presents `token` and verifies
/// the replica's certificate against the PEM `ca` for `server_name` (what the API server's
/// aggregator checks: `<service>.<namespace>.svc`).
pub fn replica_client(ip: &str, port: u16, ca_pem: &[u8], server_name: &str, token: &str) -> Client {
    let roots = CertificateDer::pem_slice_iter(ca_pem)
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    let mut config = Config::new(format!("https://{ip}:{port}").parse().expect("replica URL"));
    config.root_cert = Some(roots);
    config.tls_server_name = Some(server_name.to_string());
    config.auth_info.token = Some(token.to_string().into());
    Client::try_from(config).expect("a client for the replica")
}

/// The value of the Prometheus sample `series` (name and labels exactly as exposed) in an ebb
/// replica's `/metrics` at `addr` (plain HTTP, the health port); `None` when absent.
pub async fn prometheus_sample(addr: &str, series: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    body.lines()
        .filter_map(|l| l.strip_prefix(series))
        .find_map(|rest| rest.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_down_to_whole_numbers() {
        assert_eq!(whole_quantity("95"), Some(95));
        assert_eq!(whole_quantity("9500m"), Some(9));
        assert_eq!(whole_quantity("999m"), Some(0));
        assert_eq!(whole_quantity("2k"), Some(2000));
        assert_eq!(whole_quantity("x"), None);
    }
}
