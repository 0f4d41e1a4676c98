# Shared helpers for the integration-test servers. Sourced by testenv.sh and the component scripts.
# Everything lives outside the repo under $EBB_TESTENV_HOME:
#   stamps/<component>   version recipe of a finished install (install is skipped when it matches)
#   <component>/         installed software (venvs, built binaries, downloaded sources)
#   run/<component>/     data dir of a running server: wiped at every start, holds logs and pid files
#   run/env              KEY=VALUE file written by `testenv.sh up`
# shellcheck shell=bash

EBB_TESTENV_HOME=${EBB_TESTENV_HOME:-$HOME/.cache/ebb-testenv}
export EBB_TESTENV_HOME
TE_HOME=$EBB_TESTENV_HOME
TE_RUN=$TE_HOME/run
TE_STAMPS=$TE_HOME/stamps
TE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Start time shared with child scripts, so every log line shows seconds since the top-level command began.
if [ -z "${EBB_TESTENV_T0:-}" ]; then EBB_TESTENV_T0=$(date +%s.%N); export EBB_TESTENV_T0; fi
COMPONENT=${COMPONENT:-testenv}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

elapsed() { awk -v a="$EBB_TESTENV_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[%s +%ss] %s\n' "$COMPONENT" "$(elapsed)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------- stamps
stamp_ok() { [ -f "$TE_STAMPS/$1" ] && [ "$(cat "$TE_STAMPS/$1")" = "$2" ]; }
stamp_write() { mkdir -p "$TE_STAMPS"; printf '%s\n' "$2" > "$TE_STAMPS/$1"; }

# ---------------------------------------------------------------------------------------------- apt
apt_missing() { # prints the packages that are not installed
  local p
  for p in "$@"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || printf '%s ' "$p"
  done
}

# Install Debian packages, skipping apt entirely when all are present. Serialised by a lock so
# component installs may run in parallel.
apt_ensure() {
  local missing
  missing=$(apt_missing "$@")
  [ -z "$missing" ] && return 0
  mkdir -p "$TE_HOME"
  (
    flock 9
    missing=$(apt_missing "$@")
    [ -z "$missing" ] && exit 0
    # Debian starts services (rabbitmq-server, etcd, nats-server) right after installing them, on
    # their default, non-loopback addresses; a policy-rc.d that exits 101 forbids that. Only ours is removed.
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\n# temporary, from ebb tests/env: no service starts during apt-get install\nexit 101\n' \
        | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod 755 /usr/sbin/policy-rc.d
      own_policy=1
    fi
    trap '[ $own_policy = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    # refresh the package lists only when they are more than a day old (or absent)
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*InRelease' -mmin -1440 2>/dev/null | head -n1)" ]; then
      log "apt-get update (package lists older than a day)"
      $SUDO apt-get update -qq
    fi
    log "apt-get install $missing"
    # shellcheck disable=SC2086
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
      log "apt-get install failed; refreshing the package lists and retrying"
      $SUDO apt-get update -qq
      # shellcheck disable=SC2086
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
  ) 9>"$TE_HOME/.apt.lock"
}

# ---------------------------------------------------------------------------------------------- processes
# A pid file holds "PID STARTTIME" (field 22 of /proc/PID/stat), so a pid reused by an unrelated
# process after a reboot or a crash is never mistaken for ours.
proc_starttime() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }
proc_state() { awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null; }

# pidfile_alive FILE: true when the recorded process still runs
pidfile_alive() {
  local pid st
  [ -f "$1" ] || return 1
  read -r pid st < "$1" || return 1
  [ -n "$pid" ] && [ "$(proc_starttime "$pid")" = "$st" ] && [ "$(proc_state "$pid")" != Z ]
}
pidfile_pid() { awk '{ print $1 }' "$1" 2>/dev/null; }

# close_inherited_fds: closes every descriptor above 2 of the current (sub)shell
close_inherited_fds() {
  local fd n
  for fd in /proc/$BASHPID/fd/*; do
    n=${fd##*/}
    [ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-" 2>/dev/null
  done
  return 0
}

# start_bg PIDFILE LOGFILE CMD...: run CMD in the background in its own session (so it survives the
# calling shell and can be stopped as a process group), stdin closed, output appended to LOGFILE,
# and no other descriptor of the caller's (a server must not keep, say, a `flock` lock file open
# for as long as it runs).
start_bg() {
  local pidfile=$1 logfile=$2; shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  ( close_inherited_fds; exec setsid "$@" ) </dev/null >>"$logfile" 2>&1 &
  local pid=$!
  local st=""
  # (a process that already exited has no /proc entry: st stays empty and the pid file reads as dead)
  for _ in 1 2 3 4 5 6 7 8 9 10; do st=$(proc_starttime "$pid" || true); [ -n "$st" ] && break; sleep 0.05; done
  echo "$pid $st" > "$pidfile"
}

# stop_pidfile FILE [TIMEOUT_S]: SIGTERM the process (and its process group), wait until it is
# gone, SIGKILL after TIMEOUT_S. Only ever signals the recorded pid / its own group.
stop_pidfile() {
  local f=$1 timeout=${2:-20} pid i
  [ -f "$f" ] || return 0
  if pidfile_alive "$f"; then
    STOPPED_ANY=1
    pid=$(pidfile_pid "$f")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do pidfile_alive "$f" || break; sleep 0.1; done
    if pidfile_alive "$f"; then
      log "pid $pid ($(basename "$f" .pid)) still alive after ${timeout}s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do pidfile_alive "$f" || break; sleep 0.1; done
    fi
  fi
  rm -f "$f"
}

# ------------------------------------------------------------------------------------ fault injection
# Fault tests stop one server process and later bring the very same process back over its kept state
# (etcd's data dir, Tansu's SQLite, RabbitMQ's mnesia...). `proc_down` records how the process was
# started, read from /proc (argv, environment, working directory, log file), next to its pid file;
# `proc_up` starts it again from that record. Readiness is the caller's business.

# proc_pidfile COMPONENT PROC: the pid file of a process a component started
proc_pidfile() {
  local d=$TE_RUN/$1
  if [ -f "$d/pids/$2.pid" ] || [ -d "$d/pids" ]; then echo "$d/pids/$2.pid"; else echo "$d/$2.pid"; fi
}

# proc_down PIDFILE [TERM|KILL]: record the running process, then stop it (TERM with a 20 s grace,
# or KILL at once, as a crash would)
proc_down() {
  local f=$1 sig=${2:-TERM} pid i
  pidfile_alive "$f" || die "$f: not running"
  pid=$(pidfile_pid "$f")
  cat "/proc/$pid/cmdline" > "$f.argv"
  cat "/proc/$pid/environ" > "$f.environ"
  readlink "/proc/$pid/cwd" > "$f.cwd"
  readlink "/proc/$pid/fd/1" > "$f.log" || echo /dev/null > "$f.log"
  case "$sig" in
    TERM) stop_pidfile "$f" 20 ;;
    KILL)
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do pidfile_alive "$f" || break; sleep 0.1; done
      pidfile_alive "$f" && die "pid $pid survived SIGKILL"
      rm -f "$f" ;;
    *) die "proc_down: signal TERM or KILL, not '$sig'" ;;
  esac
}

# proc_up PIDFILE: start the process proc_down recorded, as it was started
proc_up() {
  local f=$1 logfile cwd
  [ -f "$f.argv" ] || die "$f: no record of a stopped process (proc_down first)"
  pidfile_alive "$f" && die "$f: already running"
  local -a argv=() envs=()
  mapfile -d '' argv < "$f.argv"
  mapfile -d '' envs < "$f.environ"
  logfile=$(sed 's/ (deleted)$//' "$f.log"); cwd=$(cat "$f.cwd")
  ( cd "$cwd" && start_bg "$f" "$logfile" env -i "${envs[@]}" "${argv[@]}" )
  pidfile_alive "$f" || die "$f: ${argv[0]} exited at once (log: $logfile)"
}

# ---------------------------------------------------------------------------------------------- ports
port_holder() { ss -H -ltnp "( sport = :$1 )" 2>/dev/null | head -n1; }
require_ports_free() {
  local p h
  for p in "$@"; do
    h=$(port_holder "$p")
    if [ -n "$h" ]; then
      die "port $p is already in use on this machine: $(echo "$h" | awk '{ print $4, $6 }')" \
        " -- stop that process (or run 'tests/env/testenv.sh down' if it is a leftover of ours)"
    fi
  done
}
# best effort after a stop: give the ports up to 5 s to close, but only when stop_pidfile did stop
# something (a port held by someone else is reported by require_ports_free, not waited for)
wait_ports_free() {
  local p i
  [ "${STOPPED_ANY:-0}" = 1 ] || return 0
  for p in "$@"; do
    for ((i = 0; i < 50; i++)); do [ -z "$(port_holder "$p")" ] && break; sleep 0.1; done
  done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready TIMEOUT_S PIDFILE DESCRIPTION CMD...: poll CMD every 0.2 s; fail early if the process died
wait_ready() {
  local timeout=$1 pidfile=$2 what=$3; shift 3
  local i t0; t0=$(now)
  for ((i = 0; i < timeout * 5; i++)); do
    if "$@" >/dev/null 2>&1; then log "$what ready after $(since "$t0")s"; return 0; fi
    if [ -n "$pidfile" ] && ! pidfile_alive "$pidfile"; then log "$what: process exited"; return 1; fi
    sleep 0.2
  done
  log "$what not ready after ${timeout}s"
  return 1
}

# show the end of a log file when something failed
log_tail() {
  local f
  for f in "$@"; do
    [ -f "$f" ] || continue
    echo "----- last lines of $f -----" >&2
    tail -n "${TAIL_LINES:-40}" "$f" >&2
  done
}

# fresh per-run data dir; the caller has stopped its processes before
fresh_dir() { rm -rf "$1"; mkdir -p "$1"; }

python_for_venv() { # Debian's python3 (+ python3-venv), independent of pyenv or other interpreters on PATH
  apt_ensure python3 python3-venv
  echo /usr/bin/python3
}

# make_venv DIR PIP_ARGS...: fresh venv with the given packages (the caller writes its stamp afterwards)
make_venv() {
  local dir=$1; shift
  local py; py=$(python_for_venv)
  rm -rf "$dir"
  "$py" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
}

# component_main "$@": tiny dispatcher shared by the component scripts (they define c_install,
# c_start, c_stop, c_status and PACKAGES, the Debian packages they need)
component_main() {
  local cmd=${1:-}
  case "$cmd" in
    install | start | stop | status) "c_$cmd" ;;
    restart) c_stop; c_start ;;
    packages) echo "$PACKAGES" ;;
    *) echo "usage: $0 install|start|stop|restart|status|packages" >&2; exit 2 ;;
  esac
}
