#!/usr/bin/env bash
# SQS-compatible endpoint for tests: moto in server mode (PyPI moto[server]), http://127.0.0.1:4566.
# All state is in memory, so a restart gives an empty account. Any credentials work; requests must be
# SigV4-signed for service "sqs" (unsigned query-protocol POSTs are routed to moto's S3).
# usage: sqs.sh install|start|stop|restart|status|packages
set -euo pipefail
COMPONENT=sqs
. "$(dirname "$0")/lib.sh"

PACKAGES="python3 python3-venv"
PKG="moto[server]==5.2.5"
VENV=$TE_HOME/sqs/venv
D=$TE_RUN/sqs
PORT=4566

c_install() {
  if stamp_ok sqs "$PKG" && [ -x "$VENV/bin/moto_server" ]; then log "already installed ($PKG)"; return 0; fi
  local t0; t0=$(now)
  make_venv "$VENV" "$PKG"
  stamp_write sqs "$PKG"
  log "installed $PKG in $(since "$t0")s"
}

c_start() {
  c_stop
  stamp_ok sqs "$PKG" || die "not installed: run tests/env/testenv.sh install"
  require_ports_free $PORT
  fresh_dir "$D"
  start_bg "$D/moto.pid" "$D/moto.log" "$VENV/bin/moto_server" -H 127.0.0.1 -p $PORT
  wait_ready 60 "$D/moto.pid" "moto on 127.0.0.1:$PORT" \
    curl -fsS -o /dev/null http://127.0.0.1:$PORT/moto-api/ || { log_tail "$D/moto.log"; return 1; }
}

c_stop() {
  stop_pidfile "$D/moto.pid" 10
  wait_ports_free $PORT
}

c_status() {
  if pidfile_alive "$D/moto.pid"; then echo "sqs       running  pid $(pidfile_pid "$D/moto.pid")  port $PORT"
  else echo "sqs       stopped  port $PORT"; fi
}

component_main "$@"
