//! The four brokers the soak flaps, stopped and started through `tests/env/testenv.sh proc-down`
//! / `proc-up` (the same process again over its kept state), and the guard that starts every
//! broker left down when the soak ends, fails or panics.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::schedule::Signal;

/// A broker of the test environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Broker {
    Kafka,
    Rabbitmq,
    Nats,
    Sqs,
}

/// Every broker, in report order.
pub(crate) const BROKERS: [Broker; 4] = [Broker::Kafka, Broker::Rabbitmq, Broker::Nats, Broker::Sqs];

impl Broker {
    /// The name in the result file.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Broker::Kafka => "kafka",
            Broker::Rabbitmq => "rabbitmq",
            Broker::Nats => "nats",
            Broker::Sqs => "sqs",
        }
    }

    /// `testenv.sh`'s component and process names.
    fn component(self) -> (&'static str, &'static str) {
        match self {
            Broker::Kafka => ("kafka", "tansu"),
            Broker::Rabbitmq => ("rabbitmq", "rabbitmq"),
            Broker::Nats => ("nats", "nats"),
            Broker::Sqs => ("sqs", "moto"),
        }
    }

    /// The ebb trigger type that reads this broker (`ebb_polls_total`'s label).
    pub(crate) fn trigger_type(self) -> &'static str {
        match self {
            Broker::Kafka => "kafka",
            Broker::Rabbitmq => "rabbitmq",
            Broker::Nats => "nats-jetstream",
            Broker::Sqs => "aws-sqs-queue",
        }
    }

    /// The ports an operator may hold connections to (the test environment's fixed ports).
    pub(crate) fn ports(self) -> &'static [u16] {
        match self {
            Broker::Kafka => &[9092],
            Broker::Rabbitmq => &[5672, 15672],
            Broker::Nats => &[4222, 8222],
            Broker::Sqs => &[4566],
        }
    }
}

fn testenv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/env/testenv.sh")
}

/// Runs `testenv.sh <args>` and fails with its standard error.
async fn run_testenv(args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(testenv())
        .args(args)
        .output()
        .await
        .context("run tests/env/testenv.sh")?;
    if !out.status.success() {
        bail!(
            "testenv.sh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Which brokers are down: the soak's record, which [`DownGuard`] reads on the way out.
#[derive(Debug, Default, Clone)]
pub(crate) struct DownSet {
    down: Arc<[AtomicBool; 4]>,
}

impl DownSet {
    fn flag(&self, b: Broker) -> &AtomicBool {
        &self.down[BROKERS.iter().position(|x| *x == b).unwrap_or(0)]
    }

    /// Stops `b` (marked down before the command: a half-done stop is still started again).
    pub(crate) async fn stop(&self, b: Broker, signal: Signal) -> anyhow::Result<()> {
        let (component, process) = b.component();
        self.flag(b).store(true, Ordering::SeqCst);
        run_testenv(&["proc-down", component, process, signal.name()]).await
    }

    /// Starts `b` again (readiness is the caller's to wait for).
    pub(crate) async fn start(&self, b: Broker) -> anyhow::Result<()> {
        let (component, process) = b.component();
        run_testenv(&["proc-up", component, process]).await?;
        self.flag(b).store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Brokers still marked down.
    pub(crate) fn still_down(&self) -> Vec<Broker> {
        BROKERS
            .into_iter()
            .filter(|b| self.flag(*b).load(Ordering::SeqCst))
            .collect()
    }
}

/// Starts every broker the [`DownSet`] still holds down when dropped (the end of `main`, an
/// error, or a panic unwinding through it), and waits until each answers, so the shared
/// environment is whole when the lock is released.
pub(crate) struct DownGuard(pub(crate) DownSet);

impl Drop for DownGuard {
    fn drop(&mut self) {
        for b in self.0.still_down() {
            let (component, process) = b.component();
            eprintln!("soak: starting {} again on the way out", b.name());
            let started = std::process::Command::new(testenv())
                .args(["proc-up", component, process])
                .status();
            if !started.is_ok_and(|s| s.success()) {
                eprintln!("soak: proc-up {component} {process} failed: start it by hand");
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline && !blocking_ready(b) {
                std::thread::sleep(Duration::from_millis(200));
            }
            self.0.flag(b).store(false, Ordering::SeqCst);
        }
    }
}

/// The test environment's own readiness checks (as `testenv.sh up` waits), without a runtime.
fn blocking_ready(b: Broker) -> bool {
    let url = match b {
        Broker::Kafka => {
            return std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], 9092)),
                Duration::from_secs(1),
            )
            .is_ok();
        }
        Broker::Rabbitmq => "http://guest:guest@127.0.0.1:15672/api/overview",
        Broker::Nats => "http://127.0.0.1:8222/healthz?js-enabled-only=true",
        Broker::Sqs => "http://127.0.0.1:4566/moto-api/",
    };
    std::process::Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-m", "2", url])
        .status()
        .is_ok_and(|s| s.success())
}

/// `GET http://<authority><path>` (HTTP/1.0, optional basic auth): the status code.
pub(crate) async fn http_status(authority: &str, path: &str, basic: Option<&str>) -> Option<u16> {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let connect = tokio::net::TcpStream::connect(authority);
    let mut stream = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    let auth = basic
        .map(|b| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        })
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `b` answers as `testenv.sh up` requires of it (the management API for RabbitMQ and
/// its AMQP port, JetStream enabled for NATS, moto's API, Tansu's port).
pub(crate) async fn serves(b: Broker) -> bool {
    match b {
        Broker::Kafka => tokio::net::TcpStream::connect("127.0.0.1:9092").await.is_ok(),
        Broker::Rabbitmq => {
            http_status("127.0.0.1:15672", "/api/overview", Some("guest:guest")).await == Some(200)
                && tokio::net::TcpStream::connect("127.0.0.1:5672").await.is_ok()
        }
        Broker::Nats => {
            http_status("127.0.0.1:8222", "/healthz?js-enabled-only=true", None).await == Some(200)
        }
        Broker::Sqs => http_status("127.0.0.1:4566", "/moto-api/", None).await == Some(200),
    }
}

/// `O_CLOEXEC` in `/proc/<pid>/fdinfo/<fd>`'s octal `flags`.
const O_CLOEXEC: u32 = 0o2000000;

/// Whether an fdinfo text says the descriptor closes on exec (`None`: no `flags` line).
pub(crate) fn closes_on_exec(fdinfo: &str) -> Option<bool> {
    let flags = fdinfo.lines().find_map(|l| l.strip_prefix("flags:"))?;
    let flags = u32::from_str_radix(flags.trim(), 8).ok()?;
    Some(flags & O_CLOEXEC != 0)
}

/// Lock files (`*.lock`) this process holds open on descriptors its children inherit. A broker
/// the soak starts again would inherit them, and a `flock` lock stays held for as long as any
/// process has its descriptor: the environment's lock would outlive the soak. (`flock -o`
/// closes it before running the command.)
pub(crate) fn inherited_lock_files() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_str()?.to_string();
            if !target.ends_with(".lock") {
                return None;
            }
            let fd = entry.file_name();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.to_str()?)).ok()?;
            (closes_on_exec(&info) == Some(false)).then_some(target)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_close_on_exec_from_fdinfo() {
        assert_eq!(
            closes_on_exec("pos:\t0\nflags:\t02100002\nmnt_id:\t24\n"),
            Some(true)
        );
        assert_eq!(
            closes_on_exec("pos:\t0\nflags:\t0100000\nmnt_id:\t24\n"),
            Some(false)
        );
        assert_eq!(closes_on_exec("pos:\t0\n"), None);
    }

    #[test]
    fn a_lock_file_opened_close_on_exec_is_not_reported() {
        let dir = std::env::temp_dir().join(format!("ebb-soak-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("env.lock");
        // Rust opens files close-on-exec: children do not inherit it.
        let file = std::fs::File::create(&path).unwrap();
        assert!(!inherited_lock_files().contains(&path.display().to_string()));
        drop(file);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
