#!/usr/bin/env bash
# NATS server (Debian nats-server) with JetStream: clients on 127.0.0.1:4222, monitoring on 127.0.0.1:8222.
# usage: nats.sh install|start|stop|restart|status|packages
set -euo pipefail
COMPONENT=nats
. "$(dirname "$0")/lib.sh"

PACKAGES="nats-server curl"
D=$TE_RUN/nats
PORT=4222
MON_PORT=8222

c_install() {
  local v; v=$(dpkg-query -W -f='${Version}' nats-server 2>/dev/null || true)
  if [ -n "$v" ] && stamp_ok nats "nats-server $v"; then log "already installed (nats-server $v)"; return 0; fi
  apt_ensure $PACKAGES
  stamp_write nats "nats-server $(dpkg-query -W -f='${Version}' nats-server)"
  log "installed: $(nats-server --version 2>&1 | head -n1)"
}

c_start() {
  c_stop
  command -v nats-server >/dev/null || die "not installed: run tests/env/testenv.sh install"
  require_ports_free $PORT $MON_PORT
  fresh_dir "$D"
  mkdir -p "$D/jetstream"
  cat > "$D/nats.conf" <<CONF
server_name: ebb-test
listen: 127.0.0.1:$PORT
http: 127.0.0.1:$MON_PORT
jetstream {
  store_dir: "$D/jetstream"
  max_memory_store: 256MB
  max_file_store: 1GB
}
CONF
  start_bg "$D/nats.pid" "$D/nats.log" nats-server -c "$D/nats.conf"
  # js-enabled-only: healthy only once JetStream is up, not just the client port
  wait_ready 30 "$D/nats.pid" "nats on 127.0.0.1:$PORT" \
    curl -fsS -o /dev/null "http://127.0.0.1:$MON_PORT/healthz?js-enabled-only=true" || { log_tail "$D/nats.log"; return 1; }
}

c_stop() {
  stop_pidfile "$D/nats.pid" 10
  wait_ports_free $PORT $MON_PORT
}

c_status() {
  if pidfile_alive "$D/nats.pid"; then echo "nats      running  pid $(pidfile_pid "$D/nats.pid")  ports $PORT,$MON_PORT"
  else echo "nats      stopped  ports $PORT,$MON_PORT"; fi
}

component_main "$@"
