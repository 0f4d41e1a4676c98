#!/usr/bin/env bash
# The README's test command: installs what a fresh machine lacks (cached under
# ~/.cache/ebb-testenv), starts the real servers on loopback, runs every check and test,
# and stops the servers again, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
say() { echo "[run-all +$(( $(date +%s) - start ))s] $*"; }

say "installing system packages and test servers (cached after the first run)"
tests/env/testenv.sh install

trap 'say "stopping test servers"; tests/env/testenv.sh down || true' EXIT
say "starting test servers"
tests/env/testenv.sh up
EBB_TESTENV_FILE=$(tests/env/testenv.sh env)
export EBB_TESTENV_FILE
say "control plane: $(grep '^EBB_KUBE_FLAVOR=' "$EBB_TESTENV_FILE" | cut -d= -f2)"

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
say "images for the test node (release ebb, the Kafka consumer), imported into its containerd"
tests/env/images.sh
say "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# Last: the control-plane fault tests kill and restart the shared kube-apiserver and etcd, which
# would disturb every other test; they are the only #[ignore]d tests.
say "control-plane fault tests (restart the shared kube-apiserver and etcd)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --run-ignored ignored-only -E 'binary(faults_control_plane)'
else
  cargo test --workspace --no-fail-fast --test faults_control_plane -- --ignored --test-threads=1
fi
say "all tests passed"
