//! The real `helm` and `kubectl` binaries of the test environment (`tests/env/tools.sh`), run
//! with a kubeconfig of the caller's choice.

use std::path::{Path, PathBuf};

use crate::{HarnessError, TestEnv};

/// The repository's chart, `charts/ebb`.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ebb")
}

/// A command-line tool bound to one kubeconfig.
#[derive(Clone, Debug)]
pub struct Tool {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Tool {
    /// `helm` from the env file (`EBB_HELM`), acting with `kubeconfig`.
    pub fn helm(env: &TestEnv, kubeconfig: &Path) -> Result<Tool, HarnessError> {
        Ok(Tool {
            bin: PathBuf::from(env.var("EBB_HELM")?),
            kubeconfig: kubeconfig.to_owned(),
        })
    }

    /// `kubectl` from the env file (`EBB_KUBECTL`), acting with `kubeconfig`.
    pub fn kubectl(env: &TestEnv, kubeconfig: &Path) -> Result<Tool, HarnessError> {
        Ok(Tool {
            bin: PathBuf::from(env.var("EBB_KUBECTL")?),
            kubeconfig: kubeconfig.to_owned(),
        })
    }

    /// Runs the tool with `args` (and `--kubeconfig`); its standard output, or an error with its
    /// exit status and standard error.
    pub async fn run(&self, args: &[&str]) -> Result<String, HarnessError> {
        let output = tokio::process::Command::new(&self.bin)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .stdin(std::process::Stdio::null())
            .output()
            .await;
        let command = format!(
            "{} {}",
            self.bin.file_name().unwrap_or_default().to_string_lossy(),
            args.join(" ")
        );
        match output {
            Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            Ok(out) => Err(HarnessError::Command {
                command,
                output: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
            }),
            Err(e) => Err(HarnessError::Command {
                command,
                output: format!("cannot start: {e}"),
            }),
        }
    }
}
