//! The test environment's Prometheus, with a value the test controls: a [`ScrapeTarget`] serves
//! `/metrics` on a loopback port and registers itself with Prometheus through a file_sd file in
//! `EBB_PROMETHEUS_TARGETS_DIR` (scraped every second), under a label no other test uses, so
//! that [`ScrapeTarget::query`] selects exactly its series. [`query_value`] asks Prometheus
//! directly, to wait until a new value has been scraped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{HarnessError, wait_for};

/// The gauge every target exposes.
pub const METRIC: &str = "ebb_test_backlog";

/// A `/metrics` endpoint Prometheus scrapes, exposing [`METRIC`] with a value the test sets.
/// Dropping it stops the server and removes its file_sd file (Prometheus stops scraping).
pub struct ScrapeTarget {
    /// The `ebb_test` label Prometheus gives the series: unique to this target.
    pub label: String,
    value: Arc<AtomicU64>,
    scrapes: Arc<AtomicU64>,
    file: PathBuf,
    task: JoinHandle<()>,
}

impl ScrapeTarget {
    /// Serves `value` on a free loopback port and registers the target in `targets_dir`
    /// (`EBB_PROMETHEUS_TARGETS_DIR`).
    pub async fn start(targets_dir: &Path, value: f64) -> std::io::Result<ScrapeTarget> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let label = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (value_bits, scrapes) = (
            Arc::new(AtomicU64::new(value.to_bits())),
            Arc::new(AtomicU64::new(0)),
        );
        let task = tokio::spawn(serve(listener, value_bits.clone(), scrapes.clone()));
        let file = targets_dir.join(format!("{label}.json"));
        let doc = format!(r#"[{{"targets":["127.0.0.1:{port}"],"labels":{{"ebb_test":"{label}"}}}}]"#);
        // Written aside and renamed, so that Prometheus never reads half a file.
        let partial = targets_dir.join(format!(".{label}.json.partial"));
        std::fs::write(&partial, doc)?;
        std::fs::rename(&partial, &file)?;
        Ok(ScrapeTarget {
            label,
            value: value_bits,
            scrapes,
            file,
            task,
        })
    }

    /// Sets the value the next scrape reads.
    pub fn set(&self, value: f64) {
        self.value.store(value.to_bits(), Ordering::SeqCst);
    }

    /// How many times `/metrics` was read.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }

    /// The PromQL selector of this target's series: `ebb_test_backlog{ebb_test="<label>"}`.
    pub fn query(&self) -> String {
        format!(r#"{METRIC}{{ebb_test="{}"}}"#, self.label)
    }

    /// Waits until Prometheus answers `want` for [`ScrapeTarget::query`].
    pub async fn wait_scraped(&self, prometheus_url: &str, want: f64) -> Result<(), HarnessError> {
        let query = self.query();
        wait_for(
            &format!("Prometheus to read {want} for {query}"),
            Duration::from_secs(30),
            || async { (query_value(prometheus_url, &query).await.ok()?? == want).then_some(()) },
        )
        .await
    }
}

impl Drop for ScrapeTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, value: Arc<AtomicU64>, scrapes: Arc<AtomicU64>) {
    while let Ok((mut conn, _)) = listener.accept().await {
        let (value, scrapes) = (value.clone(), scrapes.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                    if read == buf.len() {
                        return;
                    }
                }
                scrapes.fetch_add(1, Ordering::SeqCst);
                let v = f64::from_bits(value.load(Ordering::SeqCst));
                let body = format!("# TYPE {METRIC} gauge\n{METRIC} {v}\n");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Percent-encodes a query parameter value (everything but unreserved characters).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value Prometheus at `prometheus_url` (`http://host:port`) answers for an instant `query`
/// of one series: `Ok(None)` for no series, `Err` (with what was answered) for anything else.
pub async fn query_value(prometheus_url: &str, query: &str) -> Result<Option<f64>, String> {
    let authority = prometheus_url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).await.map_err(|e| e.to_string())?;
    let request = format!(
        "GET /api/v1/query?query={} HTTP/1.0\r\nHost: {authority}\r\n\r\n",
        encode(query)
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let doc: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("{e}: {response}"))?;
    let result = doc["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result in {body}"))?;
    match result.as_slice() {
        [] => Ok(None),
        [one] => one["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("no value in {body}")),
        _ => Err(format!("several series in {body}")),
    }
}

/// A Prometheus of the test's own (the `prometheus` binary on `PATH`, as the test environment
/// installs it), on a free loopback port with a web configuration (`--web.config.file`: TLS,
/// client certificates, basic auth), scraping nothing. Killed when dropped.
pub struct PrivatePrometheus {
    child: tokio::process::Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dir: PathBuf,
}

impl PrivatePrometheus {
    /// Writes `files` (name, content) and `web.yml` (`web_config`, which may name the files by
    /// their path under [`PrivatePrometheus::dir`]) to a fresh directory and starts Prometheus
    /// with them; returns once it serves. Fails clearly when `prometheus` is not installed.
    pub async fn start(web_config: &str, files: &[(&str, &str)]) -> Result<PrivatePrometheus, HarnessError> {
        let fail = |what: String| HarnessError::Command {
            command: "prometheus".to_string(),
            output: what,
        };
        let dir = std::env::temp_dir().join(format!(
            "ebb-prometheus-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(dir.join("data")).map_err(|e| fail(e.to_string()))?;
        for (name, content) in files {
            std::fs::write(dir.join(name), content).map_err(|e| fail(e.to_string()))?;
        }
        std::fs::write(dir.join("web.yml"), web_config).map_err(|e| fail(e.to_string()))?;
        std::fs::write(dir.join("prometheus.yml"), "scrape_configs: []\n")
            .map_err(|e| fail(e.to_string()))?;
        let addr = format!("127.0.0.1:{}", crate::free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).map_err(|e| fail(e.to_string()))?;
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--web.config.file={}", dir.join("web.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                fail(format!(
                    "cannot start prometheus (is it installed? tests/env/testenv.sh installs it): {e}"
                ))
            })?;
        let server = PrivatePrometheus { child, addr, dir };
        let log = server.dir.join("prometheus.log");
        wait_for(
            "the private Prometheus to serve",
            Duration::from_secs(30),
            || async {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.contains("Server is ready to receive web requests")
                    .then_some(())
            },
        )
        .await
        .map_err(|e| {
            fail(format!(
                "{e}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ))
        })?;
        Ok(server)
    }

    /// The directory holding its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivatePrometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(encode(r#"m{a="b c"}"#), "m%7Ba%3D%22b%20c%22%7D");
    }
}
