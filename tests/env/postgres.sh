#!/usr/bin/env bash
# PostgreSQL (Debian) on 127.0.0.1:5432: a fresh cluster per start, superuser `ebb` (password `ebb`,
# scram-sha-256 over TCP), database `ebb`. The server refuses to run as root: as root it runs as
# Debian's `postgres` user, with its data under /tmp (the postgres user cannot enter /root).
# usage: postgres.sh install|start|stop|restart|status|packages
set -euo pipefail
COMPONENT=postgres
. "$(dirname "$0")/lib.sh"

PACKAGES="postgresql postgresql-client"
D=$TE_RUN/postgres
PORT=5432

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
# as root: run as `postgres`, with the cluster in a directory that user owns
if [ "$(id -u)" = 0 ]; then
  DATA_ROOT=/tmp/ebb-testenv-postgres
  as_pg() { runuser -u postgres -- "$@"; }
else
  DATA_ROOT=$D
  as_pg() { "$@"; }
fi

c_install() {
  local v; v=$(dpkg-query -W -f='${Version}' postgresql 2>/dev/null || true)
  if [ -n "$v" ] && stamp_ok postgres "postgresql $v"; then log "already installed (postgresql $v)"; return 0; fi
  apt_ensure $PACKAGES
  stamp_write postgres "postgresql $(dpkg-query -W -f='${Version}' postgresql)"
  log "installed: $("$(pg_bin)/postgres" --version)"
}

c_start() {
  c_stop
  local bin; bin=$(pg_bin)
  [ -n "$bin" ] && [ -x "$bin/postgres" ] || die "not installed: run tests/env/testenv.sh install"
  require_ports_free $PORT
  fresh_dir "$D"
  rm -rf "$DATA_ROOT/data" "$DATA_ROOT/sock"
  mkdir -p "$DATA_ROOT/data" "$DATA_ROOT/sock"
  [ "$(id -u)" != 0 ] || chown -R postgres:postgres "$DATA_ROOT"
  printf 'ebb\n' > "$D/pwfile"; chmod 644 "$D/pwfile"
  cp "$D/pwfile" "$DATA_ROOT/pwfile"; [ "$(id -u)" != 0 ] || chown postgres "$DATA_ROOT/pwfile"
  as_pg "$bin/initdb" -D "$DATA_ROOT/data" -U ebb --pwfile="$DATA_ROOT/pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$D/initdb.log" 2>&1 || { log_tail "$D/initdb.log"; return 1; }
  rm -f "$DATA_ROOT/pwfile"
  if [ "$(id -u)" = 0 ]; then
    start_bg "$D/postgres.pid" "$D/postgres.log" runuser -u postgres -- "$bin/postgres" -D "$DATA_ROOT/data" \
      -c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories="$DATA_ROOT/sock" \
      -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300
  else
    start_bg "$D/postgres.pid" "$D/postgres.log" "$bin/postgres" -D "$DATA_ROOT/data" \
      -c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories="$DATA_ROOT/sock" \
      -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300
  fi
  wait_ready 30 "$D/postgres.pid" "postgres on 127.0.0.1:$PORT" \
    "$bin/pg_isready" -q -h 127.0.0.1 -p $PORT || { log_tail "$D/postgres.log"; return 1; }
  as_pg "$bin/psql" -q -h "$DATA_ROOT/sock" -p $PORT -U ebb -d postgres -c 'CREATE DATABASE ebb' >>"$D/initdb.log" 2>&1 \
    || { log_tail "$D/initdb.log"; return 1; }
}

c_stop() {
  # runuser forks: the recorded pid is runuser's, its process group holds the postmaster
  stop_pidfile "$D/postgres.pid" 20
  wait_ports_free $PORT
}

c_status() {
  if pidfile_alive "$D/postgres.pid"; then echo "postgres  running  pid $(pidfile_pid "$D/postgres.pid")  port $PORT"
  else echo "postgres  stopped  port $PORT"; fi
}

component_main "$@"
