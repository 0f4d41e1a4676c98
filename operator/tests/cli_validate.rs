//! `ebb validate` as a user runs it: exit codes, stdout JSON, stderr lines.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn ebb(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ebb");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn every_example_validates() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = ebb(&args, "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["valid"] == true)
    );
}

#[test]
fn invalid_object_exits_1_with_one_line_per_problem() {
    let yaml = r#"
apiVersion: ebb.dev/v1alpha1
kind: ScaledObject
metadata: {name: bad}
spec:
  scaleTargetRef: {name: w}
  pollingInterval: 0
  triggers:
  - type: aws-sqs-queue
    metadata: {queueURL: orders, queueLength: "many"}
"#;
    let out = ebb(&["validate", "-"], yaml);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "-#1: ScaledObject default/bad: spec.pollingInterval: must be greater than or equal to 1, got 0",
            "-#1: ScaledObject default/bad: spec.triggers[0].metadata.queueLength: (aws-sqs-queue) must be a whole number, got \"many\"",
            "-#1: ScaledObject default/bad: spec.triggers[0].metadata.awsRegion: (aws-sqs-queue) is required (set it in metadata or the TriggerAuthentication)",
        ]
    );
}

#[test]
fn invalid_yaml_exits_1_without_panicking() {
    let out = ebb(&["validate", "-"], "kind: [\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("invalid YAML") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn crds_prints_three_definitions() {
    let out = ebb(&["crds"], "");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .matches("kind: CustomResourceDefinition")
            .count(),
        3
    );
}
