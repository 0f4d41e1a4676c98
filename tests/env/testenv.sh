#!/usr/bin/env bash
# Real servers on loopback for ebb's integration tests.
#
#   tests/env/testenv.sh install        Debian build deps of the Rust crates + every server (idempotent, cached)
#   tests/env/testenv.sh up [COMP...]   stop leftovers, start (fresh state), wait until ready, write run/env
#   tests/env/testenv.sh down           stop everything we started, remove run/env
#   tests/env/testenv.sh status         running or not, pid, port of each component
#   tests/env/testenv.sh env            print the path of the env file (KEY=VALUE lines)
#   tests/env/testenv.sh proc-down COMP PROC [TERM|KILL]   fault injection: stop one process, keep its state
#   tests/env/testenv.sh proc-up COMP PROC                 start it again as it was (e.g. kube kube-apiserver)
#
# Components: kube (etcd + kube-apiserver + kube-controller-manager), node (containerd, kubelet, kube-scheduler,
# kube-proxy, CNI bridge; started after kube), kafka (tansu, SQLite storage), rabbitmq, nats, sqs (moto),
# prometheus (scrapes the targets tests register), redis, postgres, tools (helm and kubectl binaries for the
# chart tests; nothing runs).
# Cache and state: ${EBB_TESTENV_HOME:-$HOME/.cache/ebb-testenv}. Everything binds 127.0.0.1 only.
set -euo pipefail
COMPONENT=testenv
. "$(dirname "$0")/lib.sh"

ALL_COMPONENTS="kube node kafka rabbitmq nats sqs prometheus redis postgres tools"
# Debian packages the Rust build needs (rdkafka's cmake build, libcurl, openssl, zlib)
BUILD_PACKAGES="cmake libcurl4-openssl-dev pkg-config libssl-dev zlib1g-dev build-essential"
ENV_FILE=$TE_RUN/env

comp() { "$TE_DIR/$1.sh" "${@:2}"; }

check_components() {
  local c
  for c in "$@"; do
    case " $ALL_COMPONENTS " in *" $c "*) ;; *) die "unknown component '$c' (known: $ALL_COMPONENTS)" ;; esac
  done
}

# run_parallel VERB COMPONENT...: run `COMPONENT.sh VERB` for all at once; print a timing table; fail if any failed
run_parallel() {
  local verb=$1 c failed="" rc; shift
  declare -A pids=()
  mkdir -p "$TE_RUN/timings"
  for c in "$@"; do
    ( t0=$(now); rc=0; comp "$c" "$verb" || rc=$?; echo "$rc $(since "$t0")" > "$TE_RUN/timings/$verb-$c" ) &
    pids[$c]=$!
  done
  for c in "$@"; do wait "${pids[$c]}" || true; done
  for c in "$@"; do
    read -r rc secs < "$TE_RUN/timings/$verb-$c" || { rc=1; secs='?'; }
    if [ "$rc" = 0 ]; then log "  $verb $c: ok in ${secs}s"; else log "  $verb $c: FAILED after ${secs}s"; failed="$failed $c"; fi
  done
  [ -z "$failed" ] || { log "$verb failed for:$failed"; return 1; }
}

cmd_install() {
  local t0 c pkgs="$BUILD_PACKAGES"; t0=$(now)
  mkdir -p "$TE_HOME"
  # one apt-get call for everything (apt is serialised anyway); components then find their packages present
  for c in $ALL_COMPONENTS; do pkgs="$pkgs $(comp "$c" packages)"; done
  local ta; ta=$(now)
  # shellcheck disable=SC2086
  apt_ensure $pkgs
  log "  Debian packages: ok in $(since "$ta")s"
  run_parallel install $ALL_COMPONENTS
  log "install finished in $(since "$t0")s; cache $TE_HOME uses $(du -sh "$TE_HOME" 2>/dev/null | cut -f1)"
}

write_env() {
  local tmp=$ENV_FILE.tmp k=$TE_RUN/kube
  {
    echo "EBB_TESTENV_HOME=$TE_HOME"
    if [[ " $* " == *" kube "* ]]; then
      echo "EBB_KUBECONFIG=$k/admin.kubeconfig"
      echo "EBB_KUBE_TOKEN_KUBECONFIG=$k/token.kubeconfig"
      echo "EBB_KUBE_TOKEN=test-admin-token"
      echo "EBB_KUBE_API_URL=https://127.0.0.1:6443"
      echo "EBB_KUBE_FLAVOR=$(cat "$k/flavor")"
      echo "EBB_KUBE_VERSION=$(cat "$k/version")"
      echo "EBB_KUBE_APIEXTENSIONS_VERSION=$(cat "$k/apiextensions-version" 2>/dev/null)"
      echo "EBB_PKI_DIR=$k/pki"
    fi
    # a node runs pods: tests that need one read EBB_NODE (empty: none)
    if [[ " $* " == *" node "* ]]; then
      echo "EBB_NODE=ebb-node"
      echo "EBB_NODE_CONTAINERD_SOCK=$TE_RUN/node/containerd/containerd.sock"
      echo "EBB_NODE_POD_CIDR=10.244.0.0/24"
      # the bridge gateway: a host address pods reach (a test's private broker can listen there)
      echo "EBB_NODE_GATEWAY=10.244.0.1"
      echo "EBB_NODE_API_URL=https://10.244.0.1:6443"
    else
      echo "EBB_NODE="
    fi
    echo "EBB_KAFKA_BOOTSTRAP=127.0.0.1:9092"
    # the broker binary (kafka.sh), for tests that start a private broker of their own
    echo "EBB_TANSU_BIN=$TE_HOME/kafka/tansu-sqlite/bin/tansu"
    echo "EBB_RABBITMQ_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f"
    echo "EBB_RABBITMQ_HTTP_URL=http://guest:guest@127.0.0.1:15672"
    echo "EBB_NATS_URL=nats://127.0.0.1:4222"
    echo "EBB_NATS_MONITORING=127.0.0.1:8222"
    echo "EBB_SQS_ENDPOINT=http://127.0.0.1:4566"
    echo "EBB_AWS_REGION=us-east-1"
    if [[ " $* " == *" prometheus "* ]]; then
      echo "EBB_PROMETHEUS_URL=http://127.0.0.1:9090"
      echo "EBB_PROMETHEUS_TARGETS_DIR=$TE_RUN/prometheus/targets"
    fi
    if [[ " $* " == *" redis "* ]]; then
      echo "EBB_REDIS_ADDRESS=127.0.0.1:6379"
      echo "EBB_REDIS_SERVER_BIN=$(command -v redis-server)"
    fi
    if [[ " $* " == *" postgres "* ]]; then
      echo "EBB_POSTGRES_URL=postgres://ebb:ebb@127.0.0.1:5432/ebb"
      echo "EBB_POSTGRES_HOST=127.0.0.1"
      echo "EBB_POSTGRES_PORT=5432"
      echo "EBB_POSTGRES_USER=ebb"
      echo "EBB_POSTGRES_PASSWORD=ebb"
      echo "EBB_POSTGRES_DB=ebb"
    fi
    if [[ " $* " == *" tools "* ]]; then
      echo "EBB_HELM=$TE_HOME/tools/bin/helm"
      echo "EBB_KUBECTL=$TE_HOME/tools/bin/kubectl"
    fi
    echo "EBB_TESTENV_COMPONENTS=$(echo "$*" | tr ' ' ,)"
  } > "$tmp"
  mv "$tmp" "$ENV_FILE"
}

cmd_up() {
  local t0 comps; t0=$(now)
  comps=${*:-$ALL_COMPONENTS}
  # shellcheck disable=SC2086
  check_components $comps
  # leftovers of an earlier run (stale pid files) are stopped first, so a second `up` works
  log "stopping leftovers of earlier runs"
  cmd_down quiet || true
  mkdir -p "$TE_RUN"
  log "starting: $comps"
  # the node registers with the API server: it starts once everything else is up
  local first="" node=""
  for c in $comps; do if [ "$c" = node ]; then node=node; else first="$first $c"; fi; done
  [ -z "$node" ] || [[ " $comps " == *" kube "* ]] || die "node needs kube: up kube node"
  # shellcheck disable=SC2086
  if ! { run_parallel start $first && { [ -z "$node" ] || run_parallel start node; }; }; then
    if [ -n "${EBB_TESTENV_KEEP_ON_FAILURE:-}" ]; then
      log "EBB_TESTENV_KEEP_ON_FAILURE set: leaving the started components running"
    else
      log "stopping what did start"; cmd_down quiet || true
    fi
    die "up failed (logs under $TE_RUN/<component>/)"
  fi
  # shellcheck disable=SC2086
  write_env $comps
  log "all ready in $(since "$t0")s; env file: $ENV_FILE"
  sed 's/^/    /' "$ENV_FILE" >&2
}

cmd_down() {
  local quiet=${1:-} t0 c held=""; t0=$(now)
  rm -f "$ENV_FILE"
  [ -d "$TE_RUN" ] || return 0
  # shellcheck disable=SC2086
  if [ -n "$quiet" ]; then run_parallel stop $ALL_COMPONENTS 2>/dev/null || true
  else run_parallel stop $ALL_COMPONENTS || true; fi
  for c in 2379 2380 6443 6445 10257 11250 11248 10259 10256 10249 9092 5672 15672 25672 4369 4222 8222 4566 9090 6379 5432; do
    [ -n "$(port_holder $c)" ] && held="$held $c"
  done
  if [ -n "$held" ]; then
    log "WARNING: ports still in use after stopping:$held"
    for c in $held; do log "  $(port_holder "$c")"; done
    return 1
  fi
  [ -n "$quiet" ] || log "everything stopped in $(since "$t0")s; ports free"
}

cmd_status() {
  local c
  for c in $ALL_COMPONENTS; do comp "$c" status; done
  if [ -f "$ENV_FILE" ]; then echo "env file: $ENV_FILE"; else echo "env file: none (not up)"; fi
}

case "${1:-}" in
  install) cmd_install ;;
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  proc-down) [ $# -ge 3 ] || die "usage: $0 proc-down COMPONENT PROC [TERM|KILL]"; check_components "$2"
    proc_down "$(proc_pidfile "$2" "$3")" "${4:-TERM}" ;;
  proc-up) [ $# -ge 3 ] || die "usage: $0 proc-up COMPONENT PROC"; check_components "$2"
    proc_up "$(proc_pidfile "$2" "$3")" ;;
  env) [ -f "$ENV_FILE" ] || die "no env file: run '$0 up' first"; echo "$ENV_FILE" ;;
  *) sed -n '2,12s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
