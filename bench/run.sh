#!/usr/bin/env bash
# Runs every benchmark scenario that exists so far; each writes bench/results/<name>.json and
# prints a one-line summary. Benchmarks measure: they are not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ebb-bench
for scenario in adapter_latency; do
  "target/release/$scenario"
done
