#!/usr/bin/env bash
# RabbitMQ (Debian rabbitmq-server) with the management plugin: AMQP 127.0.0.1:5672, HTTP API 127.0.0.1:15672,
# Erlang distribution 127.0.0.1:25672 and our own epmd on 127.0.0.1:4369. User guest/guest.
# Runs as the calling user straight from /usr/lib/rabbitmq/bin (not the Debian service); HOME and every
# RABBITMQ_* path point into the data dir, so the node uses no host-wide state (cookie, mnesia, logs, config).
# usage: rabbitmq.sh install|start|stop|restart|status|packages
set -euo pipefail
COMPONENT=rabbitmq
. "$(dirname "$0")/lib.sh"

PACKAGES="rabbitmq-server curl"
D=$TE_RUN/rabbitmq
AMQP_PORT=5672
HTTP_PORT=15672
DIST_PORT=25672
EPMD_PORT=4369
RBIN=/usr/lib/rabbitmq/bin

rabbit_env() {
  export HOME=$D/home                          # ~/.erlang.cookie lives here
  export RABBITMQ_NODENAME=rabbit@localhost
  export RABBITMQ_BASE=$D RABBITMQ_MNESIA_BASE=$D/mnesia RABBITMQ_LOG_BASE=$D/log
  export RABBITMQ_CONFIG_FILE=$D/rabbitmq.conf RABBITMQ_ADVANCED_CONFIG_FILE=$D/advanced.config
  export RABBITMQ_CONF_ENV_FILE=$D/rabbitmq-env.conf   # not /etc/rabbitmq/rabbitmq-env.conf
  export RABBITMQ_ENABLED_PLUGINS_FILE=$D/enabled_plugins
  export RABBITMQ_PID_FILE=$D/rabbit.erlang.pid
  export RABBITMQ_DIST_PORT=$DIST_PORT
  export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$EPMD_PORT   # epmd would otherwise listen on all interfaces
}

c_install() {
  local v; v=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || true)
  if [ -n "$v" ] && stamp_ok rabbitmq "rabbitmq-server $v"; then log "already installed (rabbitmq-server $v)"; return 0; fi
  apt_ensure $PACKAGES
  stamp_write rabbitmq "rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server)"
  log "installed rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server)"
}

c_start() {
  c_stop
  [ -x $RBIN/rabbitmq-server ] || die "not installed: run tests/env/testenv.sh install"
  require_ports_free $AMQP_PORT $HTTP_PORT $DIST_PORT $EPMD_PORT
  fresh_dir "$D"
  rabbit_env
  mkdir -p "$HOME" "$D/mnesia" "$D/log"
  : > "$D/rabbitmq-env.conf"
  echo '[].' > "$D/advanced.config"
  echo '[rabbitmq_management].' > "$D/enabled_plugins"
  # collect_statistics_interval: the management API refreshes queue counts/rates every 1 s instead of 5 s
  cat > "$D/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $HTTP_PORT
distribution.listener.interface = 127.0.0.1
collect_statistics_interval = 1000
log.console = false
log.file.level = info
CONF
  # our own epmd in the foreground, so its pid is known and it is stopped with the node
  start_bg "$D/epmd.pid" "$D/log/epmd.log" epmd -address 127.0.0.1 -port $EPMD_PORT
  wait_ready 10 "$D/epmd.pid" "epmd on 127.0.0.1:$EPMD_PORT" port_open $EPMD_PORT || { log_tail "$D/log/epmd.log"; return 1; }
  start_bg "$D/rabbitmq.pid" "$D/log/stdout.log" $RBIN/rabbitmq-server
  wait_ready 120 "$D/rabbitmq.pid" "rabbitmq on 127.0.0.1:$AMQP_PORT/$HTTP_PORT" \
    curl -fsS -o /dev/null -u guest:guest http://127.0.0.1:$HTTP_PORT/api/overview \
    || { log_tail "$D/log/stdout.log" "$D"/log/rabbit@localhost*.log; return 1; }
  port_open $AMQP_PORT || { log "AMQP port $AMQP_PORT not open"; return 1; }
}

c_stop() {
  # SIGTERM to the node's process group makes the Erlang VM shut down cleanly (init:stop) in ~1 s;
  # `rabbitmqctl stop` would first boot a CLI VM (3-4 s). The data dir is wiped at start anyway.
  stop_pidfile "$D/rabbitmq.pid" 20
  stop_pidfile "$D/epmd.pid" 5
  wait_ports_free $AMQP_PORT $HTTP_PORT $DIST_PORT $EPMD_PORT
}

c_status() {
  if pidfile_alive "$D/rabbitmq.pid"; then
    echo "rabbitmq  running  pid $(pidfile_pid "$D/rabbitmq.pid")  ports $AMQP_PORT,$HTTP_PORT (epmd pid $(pidfile_pid "$D/epmd.pid") port $EPMD_PORT)"
  else echo "rabbitmq  stopped  ports $AMQP_PORT,$HTTP_PORT"; fi
}

component_main "$@"
