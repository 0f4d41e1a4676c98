#!/usr/bin/env bash
# Runs every benchmark scenario against the local test environment; each writes
# bench/results/<name>.json and prints a one-line summary. Benchmarks measure: they are not part
# of the test command. Installs and starts the test environment when it is not running (and then
# stops it again at the end); a running one is reused as it is.
# usage: bench/run.sh [scenario...]   (default: all, in the order below)
# `soak` stops and starts the brokers for ten minutes: on a shared environment, hold its lock
# (`flock -o /tmp/ebb-env.lock bench/run.sh soak`; -o, or the brokers it restarts inherit the lock).
set -euo pipefail
cd "$(dirname "$0")/.."
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(adapter_latency kafka_requests activation_latency pod_start_latency creation_burst fleet auth_flood soak)

if ! tests/env/testenv.sh env >/dev/null 2>&1; then
  tests/env/testenv.sh install
  trap 'tests/env/testenv.sh down || true' EXIT
  tests/env/testenv.sh up
fi
cargo build --release -q --bin ebb -p ebb-operator
cargo build --release -q -p ebb-bench
export EBB_BIN="$PWD/target/release/ebb"
# activation_latency's external-push sources are test external scalers, one process per object
if [[ " ${scenarios[*]} " == *" activation_latency "* ]]; then
  cargo build --release -q -p ebb-tests --bin ebb-external-scaler
  export EBB_EXTERNAL_SCALER_BIN="$PWD/target/release/ebb-external-scaler"
fi
# pod_start_latency runs the real consumer on the test node: its image goes into the node's containerd
if [[ " ${scenarios[*]} " == *" pod_start_latency "* ]]; then tests/env/images.sh kafka-consumer; fi
for scenario in "${scenarios[@]}"; do
  echo "== $scenario"
  "target/release/$scenario"
done
