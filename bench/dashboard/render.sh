#!/usr/bin/env bash
# Draws the chart's Grafana dashboard (charts/ebb/dashboards/ebb.json) from real data:
#   1. a Prometheus (Debian's, `apt-get install prometheus`) scrapes the operator every 2 s;
#   2. bench/src/bin/dashboard_demo.rs runs the operator against the test environment with three
#      real ScaledObjects for about six minutes (a backlog up and down, a source outage with
#      fallback, a pause);
#   3. render.py evaluates every panel's queries over that range through Prometheus' HTTP API and
#      draws them (its own SVG, not Grafana);
#   4. headless Chromium (`apt-get install chromium`) screenshots the page.
# usage: flock -o /tmp/ebb-env.lock bench/dashboard/render.sh [out.png]   (default docs/images/dashboard.png)
#        bench/dashboard/render.sh out.png /tmp/ebb-dashboard.XXXXXX   draws a finished run's data again
#        (its Prometheus data and run.json), without the test environment
# Needs the test environment up (tests/env/testenv.sh up); EBB_TESTENV_FILE as for the tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-docs/images/dashboard.png}
PROM_PORT=${PROM_PORT:-19090}
HEALTH=${EBB_DEMO_HEALTH_ADDR:-127.0.0.1:18089}
TARGET=${CARGO_TARGET_DIR:-target}
case $TARGET in /*) ;; *) TARGET=$PWD/$TARGET ;; esac
for tool in prometheus chromium python3; do
  command -v $tool >/dev/null || { echo "$tool is missing (apt-get install $tool)" >&2; exit 1; }
done
WORK=${2:-}
if [ -z "$WORK" ]; then
  export EBB_TESTENV_FILE=${EBB_TESTENV_FILE:-$(tests/env/testenv.sh env)}
  cargo build -q --workspace --bin ebb --bin dashboard_demo
  WORK=$(mktemp -d /tmp/ebb-dashboard.XXXXXX)
fi
cat > "$WORK/prometheus.yml" <<CONF
global:
  scrape_interval: 2s
  evaluation_interval: 2s
scrape_configs:
  - job_name: ebb
    static_configs:
      - targets: ["$HEALTH"]
CONF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
  --web.listen-address=127.0.0.1:$PROM_PORT > "$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
trap 'kill $PROM_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:$PROM_PORT/-/ready >/dev/null 2>&1 && break
  sleep 0.1
done

if [ ! -s "$WORK/run.json" ]; then
  EBB_BIN="$TARGET/debug/ebb" EBB_DEMO_HEALTH_ADDR=$HEALTH "$TARGET/debug/dashboard_demo" > "$WORK/run.json"
fi
START=$(python3 -c "import json;print(json.load(open('$WORK/run.json'))['start'] - 20)")
END=$(python3 -c "import json;print(json.load(open('$WORK/run.json'))['end'])")
python3 bench/dashboard/render.py --prometheus http://127.0.0.1:$PROM_PORT \
  --dashboard charts/ebb/dashboards/ebb.json --start "$START" --end "$END" --out "$WORK/dashboard.html"

mkdir -p "$(dirname "$OUT")"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d "$WORK/chromium.XXXX")" --hide-scrollbars --window-size=1610,1820 \
  --screenshot="$PWD/$OUT" "file://$WORK/dashboard.html" 2>"$WORK/chromium.log"
echo "wrote $OUT (work files in $WORK)"
