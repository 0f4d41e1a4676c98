#!/usr/bin/env bash
# Redis (Debian redis-server) on 127.0.0.1:6379, no persistence, no password (tests create ACL users
# at runtime; a test that needs TLS starts a private redis-server of its own).
# usage: redis.sh install|start|stop|restart|status|packages
set -euo pipefail
COMPONENT=redis
. "$(dirname "$0")/lib.sh"

PACKAGES="redis-server redis-tools"
D=$TE_RUN/redis
PORT=6379

c_install() {
  local v; v=$(dpkg-query -W -f='${Version}' redis-server 2>/dev/null || true)
  if [ -n "$v" ] && stamp_ok redis "redis-server $v"; then log "already installed (redis-server $v)"; return 0; fi
  apt_ensure $PACKAGES
  stamp_write redis "redis-server $(dpkg-query -W -f='${Version}' redis-server)"
  log "installed: $(redis-server --version 2>&1 | head -n1)"
}

c_start() {
  c_stop
  command -v redis-server >/dev/null || die "not installed: run tests/env/testenv.sh install"
  require_ports_free $PORT
  fresh_dir "$D"
  start_bg "$D/redis.pid" "$D/redis.log" redis-server --bind 127.0.0.1 --port $PORT --dir "$D" \
    --save '' --appendonly no --daemonize no --protected-mode yes --maxclients 2000
  wait_ready 30 "$D/redis.pid" "redis on 127.0.0.1:$PORT" \
    sh -c "[ \"\$(redis-cli -h 127.0.0.1 -p $PORT ping 2>/dev/null)\" = PONG ]" || { log_tail "$D/redis.log"; return 1; }
}

c_stop() {
  stop_pidfile "$D/redis.pid" 10
  wait_ports_free $PORT
}

c_status() {
  if pidfile_alive "$D/redis.pid"; then echo "redis     running  pid $(pidfile_pid "$D/redis.pid")  port $PORT"
  else echo "redis     stopped  port $PORT"; fi
}

component_main "$@"
