//! The `ebb operator` process a scenario measures: started from the release binary, watched
//! through `/proc` (resident memory, CPU time) and through its own `/metrics`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// The release `ebb` binary (`EBB_BIN` overrides).
pub fn ebb_release_binary() -> PathBuf {
    std::env::var("EBB_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target/release/ebb")
    })
}

/// A running operator, killed when dropped.
pub struct OperatorUnderTest {
    child: Child,
    pid: u32,
    health_port: u16,
    http: reqwest_lite::Client,
}

impl OperatorUnderTest {
    /// Starts `ebb operator --namespace <ns>` with `extra` flags; its log goes to
    /// `$TMPDIR/ebb-bench-logs/<ns>.log`.
    pub async fn start(kubeconfig: &str, namespace: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let binary = ebb_release_binary();
        if !binary.exists() {
            bail!(
                "{} not found: run `cargo build --release --bin ebb`",
                binary.display()
            );
        }
        let health_port = free_port()?;
        let log_dir = std::env::temp_dir().join("ebb-bench-logs");
        std::fs::create_dir_all(&log_dir)?;
        let log = std::fs::File::create(log_dir.join(format!("{namespace}.log")))?;
        let child = Command::new(&binary)
            .args(["operator", "--namespace", namespace, "--identity", "bench"])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(["--lease-namespace", namespace])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id().context("operator pid")?;
        let op = Self {
            child,
            pid,
            health_port,
            http: reqwest_lite::Client,
        };
        // Leader (the only replica) once /metrics says so.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(m) = op.metrics().await
                && m.value("ebb_is_leader", &[]) == Some(1.0)
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the operator did not become leader within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(op)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Scrapes `/metrics` as text.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        self.http.get(self.health_port, "/metrics").await
    }

    /// Scrapes `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<Scrape> {
        let text = self.http.get(self.health_port, "/metrics").await?;
        Ok(Scrape::parse(&text))
    }

    /// Resident memory and CPU time so far.
    pub fn usage(&self) -> anyhow::Result<ProcessUsage> {
        ProcessUsage::of(self.pid)
    }

    /// Stops the process (SIGKILL: nothing of its shutdown is measured).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Resident memory and CPU time of a process, from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size in bytes.
    pub peak_rss_bytes: u64,
    /// User + system CPU time.
    pub cpu: Duration,
}

impl ProcessUsage {
    /// Reads it for `pid`.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        parse_usage(&status, &stat).context("unexpected /proc format")
    }
}

/// Parses `/proc/<pid>/status` (VmRSS, VmHWM) and `/proc/<pid>/stat` (utime, stime in clock
/// ticks of 1/100 s, the kernel's USER_HZ on Linux).
pub fn parse_usage(status: &str, stat: &str) -> Option<ProcessUsage> {
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after "(comm) ".
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcessUsage {
        rss_bytes: kib("VmRSS:")?,
        peak_rss_bytes: kib("VmHWM:")?,
        cpu: Duration::from_millis((utime + stime) * 10),
    })
}

/// One scrape of a Prometheus text exposition: samples by name and labels.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Parses the text format (comments skipped; label values without escaped quotes).
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (head, BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, value));
        }
        Self { samples }
    }

    /// The value of the sample with exactly these labels (others ignored: a match needs every
    /// given label, not only these).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.2)
    }

    /// Sum over every sample of `name` whose labels satisfy `keep`.
    pub fn sum(&self, name: &str, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && keep(l))
            .map(|s| s.2)
            .sum()
    }

    /// Every sample of `name` as (labels, value).
    pub fn all(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }

    /// A histogram's cumulative buckets `(upper bound, count)` sorted by bound (`+Inf` last).
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let mut b: Vec<(f64, f64)> = self
            .all(&format!("{name}_bucket"))
            .into_iter()
            .filter_map(|(l, v)| {
                let le = l.get("le")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, v))
            })
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.insert(
            key.trim_start_matches(',').trim().to_string(),
            after[..end].to_string(),
        );
        rest = &after[end + 1..];
    }
    out
}

/// Subtracts two scrapes of a cumulative histogram (`later − earlier`) bucket by bucket.
pub fn bucket_delta(earlier: &[(f64, f64)], later: &[(f64, f64)]) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|(bound, count)| {
            let before = earlier.iter().find(|(b, _)| b == bound).map_or(0.0, |(_, c)| *c);
            (*bound, count - before)
        })
        .collect()
}

/// The `q`-quantile of a cumulative histogram, interpolated linearly inside its bucket (as
/// Prometheus' `histogram_quantile` does), and the bucket's upper bound, which the true value
/// cannot exceed. `None` when the histogram is empty.
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for (bound, count) in buckets {
        if *count >= rank {
            if bound.is_infinite() {
                return Some((lower_bound, f64::INFINITY));
            }
            let within = if count > &lower_count {
                (rank - lower_count) / (count - lower_count)
            } else {
                0.0
            };
            return Some((lower_bound + (bound - lower_bound) * within, *bound));
        }
        lower_bound = *bound;
        lower_count = *count;
    }
    None
}

/// A minimal HTTP/1 GET client for the operator's plain-HTTP health port.
mod reqwest_lite {
    use anyhow::Context as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Fetches one path per connection (`Connection: close`).
    #[derive(Default)]
    pub struct Client;

    impl Client {
        /// GETs `http://127.0.0.1:<port><path>` and returns the body of a 200.
        pub async fn get(&self, port: u16, path: &str) -> anyhow::Result<String> {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            conn.write_all(
                format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
            let mut raw = Vec::new();
            conn.read_to_end(&mut raw).await?;
            let text = String::from_utf8_lossy(&raw);
            let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
            anyhow::ensure!(
                head.starts_with("HTTP/1.1 200"),
                "GET {path}: {}",
                head.lines().next().unwrap_or("")
            );
            if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
                return Ok(dechunk(body));
            }
            Ok(body.to_string())
        }
    }

    fn dechunk(mut body: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = body.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(&rest[..n]);
            body = rest[n..].trim_start_matches("\r\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_cpu_from_proc() {
        let status = "Name:\tebb\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        let stat = "123 (ebb op) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0";
        let u = parse_usage(status, stat).unwrap();
        assert_eq!(u.rss_bytes, 1024 * 1024);
        assert_eq!(u.peak_rss_bytes, 2048 * 1024);
        assert_eq!(u.cpu, Duration::from_secs(3));
        assert!(ProcessUsage::of(std::process::id()).unwrap().rss_bytes > 0);
    }

    #[test]
    fn parses_counters_and_histograms() {
        let text = "# TYPE x counter\nebb_kube_requests_total{verb=\"patch\",resource=\"scaledobjects\"} 7\n\
                    ebb_kube_requests_total{verb=\"get\",resource=\"leases\"} 3\n\
                    ebb_poll_lateness_seconds_bucket{le=\"0.01\"} 90\n\
                    ebb_poll_lateness_seconds_bucket{le=\"0.05\"} 99\n\
                    ebb_poll_lateness_seconds_bucket{le=\"+Inf\"} 100\n# EOF\n";
        let s = Scrape::parse(text);
        assert_eq!(
            s.value("ebb_kube_requests_total", &[("verb", "patch")]),
            Some(7.0)
        );
        assert_eq!(s.sum("ebb_kube_requests_total", |_| true), 10.0);
        let b = s.buckets("ebb_poll_lateness_seconds");
        assert_eq!(b.len(), 3);
        let (p50, bound50) = histogram_quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.01 * 50.0 / 90.0).abs() < 1e-9, "{p50}");
        assert_eq!(bound50, 0.01);
        assert_eq!(histogram_quantile(&b, 0.99).unwrap().1, 0.05);
        assert_eq!(histogram_quantile(&b, 1.0).unwrap().1, f64::INFINITY);
        let d = bucket_delta(&b, &[(0.01, 95.0), (0.05, 105.0), (f64::INFINITY, 110.0)]);
        assert_eq!(d, [(0.01, 5.0), (0.05, 6.0), (f64::INFINITY, 10.0)]);
    }
}
