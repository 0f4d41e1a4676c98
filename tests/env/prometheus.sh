#!/usr/bin/env bash
# Prometheus (Debian) on 127.0.0.1:9090, scraping every 1 s the targets tests register: a test writes
# `$EBB_PROMETHEUS_TARGETS_DIR/<unique>.json` (file_sd: [{"targets":["127.0.0.1:PORT"],"labels":{...}}]),
# Prometheus picks it up at once (inotify) and scrapes it until the file is removed.
# usage: prometheus.sh install|start|stop|restart|status|packages
set -euo pipefail
COMPONENT=prometheus
. "$(dirname "$0")/lib.sh"

PACKAGES="prometheus curl"
D=$TE_RUN/prometheus
PORT=9090

c_install() {
  local v; v=$(dpkg-query -W -f='${Version}' prometheus 2>/dev/null || true)
  if [ -n "$v" ] && stamp_ok prometheus "prometheus $v"; then log "already installed (prometheus $v)"; return 0; fi
  apt_ensure $PACKAGES
  stamp_write prometheus "prometheus $(dpkg-query -W -f='${Version}' prometheus)"
  log "installed: $(prometheus --version 2>&1 | head -n1)"
}

c_start() {
  c_stop
  command -v prometheus >/dev/null || die "not installed: run tests/env/testenv.sh install"
  require_ports_free $PORT
  fresh_dir "$D"
  mkdir -p "$D/data" "$D/targets"
  cat > "$D/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PORT"]
  - job_name: ebb-tests
    file_sd_configs:
      - files: ["$D/targets/*.json"]
        refresh_interval: 1s
CONF
  start_bg "$D/prometheus.pid" "$D/prometheus.log" prometheus --config.file="$D/prometheus.yml" \
    --storage.tsdb.path="$D/data" --storage.tsdb.retention.time=2h --web.listen-address=127.0.0.1:$PORT
  wait_ready 30 "$D/prometheus.pid" "prometheus on 127.0.0.1:$PORT" \
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/-/ready" || { log_tail "$D/prometheus.log"; return 1; }
}

c_stop() {
  stop_pidfile "$D/prometheus.pid" 10
  wait_ports_free $PORT
}

c_status() {
  if pidfile_alive "$D/prometheus.pid"; then echo "prometheus running  pid $(pidfile_pid "$D/prometheus.pid")  port $PORT"
  else echo "prometheus stopped  port $PORT"; fi
}

component_main "$@"
