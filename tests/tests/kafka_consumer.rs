//! `ebb-kafka-consumer` (the test cluster's consumer pod) against the test environment's Tansu
//! broker (`EBB_KAFKA_BOOTSTRAP` of the env file; no Kubernetes needed): two processes in one group
//! drain a 3-partition topic, commit everything, and exit 0 on SIGTERM. Each test uses its own
//! topic and group.

use std::collections::BTreeSet;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ebb_tests::kafka::{KafkaAdmin, unique_name};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const BINARY: &str = env!("CARGO_BIN_EXE_ebb-kafka-consumer");
const PARTITIONS: i32 = 3;
const MESSAGES: usize = 30;

/// A variable of the test environment's env file (no Kubernetes client needed).
fn env_var(key: &str) -> String {
    let path = ebb_tests::env_file();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "test environment not running ({}: {e}): start it with `tests/env/testenv.sh up`",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} is not set in {}", path.display()))
}

/// One consumer process with its stdout and stderr collected line by line.
struct Consumer {
    name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(pipe: impl AsyncRead + Unpin + Send + 'static, into: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            into.lock().unwrap().push(line);
        }
    })
}

impl Consumer {
    fn start(name: &str, bootstrap: &str, topic: &str, group: &str) -> Consumer {
        let mut child = Command::new(BINARY)
            .env_clear()
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            .env("KAFKA_TOPIC", topic)
            .env("KAFKA_GROUP", group)
            .env("KAFKA_CLIENT_ID", name)
            .env("PROCESS_DELAY_MS", "100")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Consumer {
            name: name.into(),
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Both logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            self.stdout().join("\n"),
            self.name,
            self.stderr.lock().unwrap().join("\n")
        )
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("consumer still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits up to `timeout` for the exit, then for the end of its output.
    async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait()).await.ok()?.ok();
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status
    }
}

#[tokio::test]
async fn two_consumers_drain_a_topic_commit_everything_and_exit_0_on_sigterm() {
    let bootstrap = env_var("EBB_KAFKA_BOOTSTRAP");
    let mut admin = KafkaAdmin::connect(&bootstrap).await.unwrap();
    let topic = unique_name("consumer");
    let group = unique_name("consumers");
    admin.create_topic(&topic, PARTITIONS).await.unwrap();
    admin.produce(&topic, PARTITIONS, MESSAGES).await.unwrap();
    let ends = admin.end_offsets(&topic, PARTITIONS).await.unwrap();
    assert_eq!(
        ends.iter().sum::<i64>(),
        MESSAGES as i64,
        "log-end offsets {ends:?}"
    );

    let mut consumers = vec![Consumer::start("c1", &bootstrap, &topic, &group)];
    tokio::time::sleep(Duration::from_millis(200)).await;
    consumers.push(Consumer::start("c2", &bootstrap, &topic, &group));
    let logs = |consumers: &[Consumer]| {
        consumers
            .iter()
            .map(Consumer::logs)
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The group's committed offsets reach the log end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let committed = admin.committed(&group, &topic, PARTITIONS).await.unwrap();
        if committed.iter().zip(&ends).all(|(c, e)| *c == Some(*e)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {committed:?}, log end {ends:?} after 90 s\n{}",
            logs(&consumers)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Every message was consumed (a rebalance may hand a message to both consumers).
    let consumed: Vec<(i32, i64)> = consumers
        .iter()
        .flat_map(Consumer::stdout)
        .filter_map(|line| {
            let (partition, offset) = line
                .strip_prefix(&format!("consumed {topic}/"))?
                .split_once('@')?;
            Some((partition.parse().ok()?, offset.parse().ok()?))
        })
        .collect();
    let covered: BTreeSet<(i32, i64)> = consumed.iter().copied().collect();
    let expected: BTreeSet<(i32, i64)> = (0..PARTITIONS)
        .flat_map(|p| (0..ends[p as usize]).map(move |o| (p, o)))
        .collect();
    assert!(
        consumed.len() >= MESSAGES,
        "{} consumed lines\n{}",
        consumed.len(),
        logs(&consumers)
    );
    assert_eq!(covered, expected, "\n{}", logs(&consumers));

    // Both take part in the group: each is assigned partitions (the second may join only after
    // the first drained the topic).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let assigned = format!("joined group {group}: assigned {topic}/");
    for c in &consumers {
        while !c.stdout().iter().any(|l| l.starts_with(&assigned)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} got no partition within 30 s\n{}",
                c.name,
                logs(&consumers)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let signalled = std::time::Instant::now();
    for c in &consumers {
        c.signal("TERM");
    }
    for c in &mut consumers {
        let status = c.wait(Duration::from_secs(10)).await;
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "{} did not exit 0 within 10 s of SIGTERM: {status:?}\n{}",
            c.name,
            c.logs()
        );
        assert!(
            c.stdout().iter().any(|l| l == "exiting after SIGTERM"),
            "{}",
            c.logs()
        );
    }
    // Shown by the test runner with --no-capture (or when a later assertion fails).
    eprintln!(
        "both exited {:?} after SIGTERM\n{}",
        signalled.elapsed(),
        logs(&consumers)
    );
    let committed = admin.committed(&group, &topic, PARTITIONS).await.unwrap();
    assert_eq!(committed, ends.iter().map(|e| Some(*e)).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_missing_or_invalid_variable_exits_2_naming_it() {
    let cases = [
        ("KAFKA_TOPIC", &[("KAFKA_GROUP", "g")][..]),
        (
            "PROCESS_DELAY_MS",
            &[
                ("KAFKA_TOPIC", "t"),
                ("KAFKA_GROUP", "g"),
                ("PROCESS_DELAY_MS", "soon"),
            ][..],
        ),
    ];
    for (named, vars) in cases {
        let output = Command::new(BINARY)
            .env_clear()
            .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
            .envs(vars.iter().copied())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{named}: stderr: {stderr}");
        assert!(stderr.contains(named), "stderr: {stderr}");
    }
}
