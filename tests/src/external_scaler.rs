//! The test external scaler (`ebb-external-scaler`, `src/bin/external-scaler.rs`) as a child
//! process the test controls: [`ExternalScalerProcess::start`] runs it on loopback, and its
//! methods set the value and the activity it serves, make it fail, read the last request it got,
//! and kill it (or start it again on the same port).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::HarnessError;

/// The binary built by cargo next to the test (`EBB_EXTERNAL_SCALER_BIN` overrides).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("EBB_EXTERNAL_SCALER_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/<test> → target/debug/ebb-external-scaler
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("ebb-external-scaler")
}

/// The last request the server got.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LastRequest {
    /// `ScaledObjectRef.name`.
    pub name: String,
    /// `ScaledObjectRef.namespace`.
    pub namespace: String,
    /// `ScaledObjectRef.scalerMetadata`.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// How many `StreamIsActive` streams were opened so far.
    pub streams: u64,
}

/// A running `ebb-external-scaler`, killed when dropped.
pub struct ExternalScalerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// `127.0.0.1:<port>`.
    pub address: String,
}

impl ExternalScalerProcess {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_on(0).await
    }

    /// Starts the server on `port` (0: any free one).
    pub async fn start_on(port: u16) -> Result<Self, HarnessError> {
        let bin = binary();
        let command = format!("{} --port {port}", bin.display());
        let mut child = Command::new(&bin)
            .args(["--port", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HarnessError::Command {
                command: command.clone(),
                output: format!("{e} (build it: cargo build --workspace --bin ebb-external-scaler)"),
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(HarnessError::Command {
                command,
                output: "no pipes".into(),
            });
        };
        let mut server = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            address: String::new(),
        };
        let first = server.line().await?;
        match first.strip_prefix("listening ") {
            Some(address) => server.address = address.to_string(),
            None => {
                return Err(HarnessError::Command {
                    command,
                    output: format!("unexpected first line {first:?}"),
                });
            }
        }
        Ok(server)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    }

    async fn line(&mut self) -> Result<String, HarnessError> {
        match tokio::time::timeout(Duration::from_secs(10), self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => Err(HarnessError::Command {
                command: "ebb-external-scaler".into(),
                output: "exited".into(),
            }),
            Ok(Err(e)) => Err(HarnessError::Command {
                command: "ebb-external-scaler".into(),
                output: e.to_string(),
            }),
            Err(_) => Err(HarnessError::Timeout("ebb-external-scaler's answer".into())),
        }
    }

    /// Sends one command; its answer line.
    pub async fn send(&mut self, command: &str) -> Result<String, HarnessError> {
        let failed = |e: std::io::Error| HarnessError::Command {
            command: command.to_string(),
            output: e.to_string(),
        };
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(failed)?;
        self.stdin.flush().await.map_err(failed)?;
        let answer = self.line().await?;
        if answer.starts_with("error") {
            return Err(HarnessError::Command {
                command: command.to_string(),
                output: answer,
            });
        }
        Ok(answer)
    }

    /// Sets the value `GetMetrics` returns.
    pub async fn set_value(&mut self, value: f64) -> Result<(), HarnessError> {
        self.send(&format!("value {value}")).await.map(|_| ())
    }

    /// Sets the activity (`IsActive`, and pushed on every open stream at once).
    pub async fn set_active(&mut self, active: bool) -> Result<(), HarnessError> {
        self.send(&format!("active {active}")).await.map(|_| ())
    }

    /// Sets the target `GetMetricSpec` gives when the metadata has no `targetSize`.
    pub async fn set_target(&mut self, target: f64) -> Result<(), HarnessError> {
        self.send(&format!("target {target}")).await.map(|_| ())
    }

    /// Makes every call but the stream answer gRPC status `code` (0: answer normally).
    pub async fn fail_with(&mut self, code: i32) -> Result<(), HarnessError> {
        self.send(&format!("fail {code}")).await.map(|_| ())
    }

    /// The last request it got.
    pub async fn last(&mut self) -> Result<LastRequest, HarnessError> {
        let answer = self.send("last").await?;
        let json = answer.strip_prefix("last ").unwrap_or(&answer);
        serde_json::from_str(json).map_err(|e| HarnessError::Command {
            command: "last".into(),
            output: format!("{e}: {answer}"),
        })
    }

    /// Kills the process (its connections and streams break) and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
