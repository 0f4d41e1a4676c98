#!/usr/bin/env bash
# The README's demo command: installs what is missing (cached), starts a real control plane and a
# Kafka-protocol broker (Tansu) on loopback and a node that runs pods, and shows ebb scaling a real
# Kafka consumer 0 → 1 → N → 0 on its consumer group's lag, with a live timeline of lag, desired
# and actual replicas and ready consumer pods. Stops the servers again on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/env/testenv.sh install
# Build first, so the servers do not wait for the compiler.
cargo build -q --bin ebb
cargo build -q -p ebb-tests --example demo --bin ebb-kafka-consumer
trap 'tests/env/testenv.sh down >/dev/null 2>&1 || true' EXIT
tests/env/testenv.sh up kube node kafka
# the consumer's image, into the node's containerd (no registry)
tests/env/images.sh kafka-consumer
EBB_TESTENV_FILE=$(tests/env/testenv.sh env) cargo run -q -p ebb-tests --example demo
