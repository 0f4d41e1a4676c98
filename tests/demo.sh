#!/usr/bin/env bash
# The README's demo command: installs what is missing (cached), starts a real control plane on
# loopback, and shows ebb scaling a worker 0 → 1 → N → 0 on its queue's depth.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/env/testenv.sh install
trap 'tests/env/testenv.sh down >/dev/null 2>&1 || true' EXIT
tests/env/testenv.sh up kube
cargo build -q --bin ebb
EBB_TESTENV_FILE=$(tests/env/testenv.sh env) cargo run -q -p ebb-tests --example demo
