#!/usr/bin/env bash
# A real node for the test cluster: containerd + runc, a CNI bridge (10.244.0.0/24 on ebb0), a kubelet
# registered with the API server (node "ebb-node", InternalIP 10.244.0.1: the bridge gateway), kube-scheduler
# and kube-proxy (iptables mode).
# Pods run, Services reach them, and pods reach the API server through the `kubernetes` Service the way
# they do in users' clusters. Needs kube (kube.sh) running; `testenv.sh up` starts it after kube.
# usage: node.sh install|start|stop|restart|status|packages|import IMAGE.tar...
#
# Layout: containerd runs in a private mount namespace in which run/node/{run,varlib,varlog} are bind
# mounted over /run, /var/lib and /var/log (containerd, CNI and kubelet hard-code paths there); the kubelet
# joins that namespace, so volume mounts are seen by both. Nothing of the host's /run, /var/lib or /var/log
# is written. Host-side changes, all undone by `stop`: the ebb0 bridge and its veths, kube-proxy's KUBE-*
# iptables chains, the EBB-SERVICE-GUARD chain (rejects untranslated Service IPs), net.ipv4.ip_forward (restored), a socat relay 10.244.0.1:6443 -> 127.0.0.1:6443 (the
# test API server binds 127.0.0.1 only; the relay is the `kubernetes` Service's endpoint). Traffic goes
# only to loopback and to pod addresses in network namespaces this script creates.
set -euo pipefail
COMPONENT=node
. "$(dirname "$0")/lib.sh"

PACKAGES="runc containerd containernetworking-plugins busybox-static socat iptables conntrack python3"
D=$TE_RUN/node
KD=$TE_RUN/kube                        # kube.sh's run dir: its PKI (CA) and admin kubeconfig
KBIN=$TE_HOME/kube/plain-1.20.2/bin    # kubelet, kube-scheduler, kube-proxy (built by kube.sh install)
SOCK=$D/containerd/containerd.sock
NODE=ebb-node
BRIDGE=ebb0
GATEWAY=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.0.0.0/24               # kube.sh's --service-cluster-ip-range
GUARD=EBB-SERVICE-GUARD                # filter chain: Service IPs that kube-proxy has not translated
API_PORT=6443
KUBELET_PORT=11250
KUBELET_HEALTHZ=11248
SCHED_PORT=10259
PROXY_HEALTHZ=10256
PROXY_METRICS=10249
PORTS="$KUBELET_PORT $KUBELET_HEALTHZ $SCHED_PORT $PROXY_HEALTHZ $PROXY_METRICS"
# images every start imports: the pod sandbox ("pause") and a busybox for tests (tests/env/mkimage.py)
PAUSE_IMAGE=ebb.test/pause:1
BUSYBOX_IMAGE=ebb.test/busybox:1
IMAGES=$TE_HOME/node/images
STAMP="node r1 $(md5sum < "$TE_DIR/mkimage.py" | cut -c1-12)"

have_node_bins() { [ -x "$KBIN/kubelet" ] && [ -x "$KBIN/kube-scheduler" ] && [ -x "$KBIN/kube-proxy" ]; }

c_install() {
  if stamp_ok node "$STAMP" && [ -f "$IMAGES/base.tar" ] && [ -z "$(apt_missing $PACKAGES)" ]; then
    log "already installed (runc $(runc --version | head -n1 | awk '{ print $3 }'), containerd $(containerd --version | awk '{ print $3 }'))"
    return 0
  fi
  # shellcheck disable=SC2086
  apt_ensure $PACKAGES
  mkdir -p "$IMAGES"
  python3 "$TE_DIR/mkimage.py" busybox "$IMAGES/base.tar" "$PAUSE_IMAGE" "$BUSYBOX_IMAGE"
  stamp_write node "$STAMP"
  log "installed: runc, containerd, CNI plugins; base images $PAUSE_IMAGE, $BUSYBOX_IMAGE"
}

# ---------------------------------------------------------------------------------------------- start
ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }
kadmin() { # curl the API server as the admin
  curl -fsS --max-time 5 --cacert "$KD/pki/ca.crt" --cert "$KD/pki/admin.crt" --key "$KD/pki/admin.key" \
    "https://127.0.0.1:$API_PORT$1" "${@:2}"
}

# client certificate from the test CA: leaf NAME SUBJECT
leaf() {
  local p=$D/pki
  mkdir -p "$p"
  printf 'extendedKeyUsage=clientAuth\n' > "$p/$1.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$p/$1.key" -out "$p/$1.csr" \
    -subj "$2" 2>/dev/null
  openssl x509 -req -in "$p/$1.csr" -CA "$KD/pki/ca.crt" -CAkey "$KD/pki/ca.key" -CAcreateserial -days 3650 \
    -out "$p/$1.crt" -extfile "$p/$1.ext" 2>/dev/null
  rm -f "$p/$1.csr" "$p/$1.ext"
  cat > "$D/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: ebb-test
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$KD/pki/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$p/$1.crt", client-key: "$p/$1.key"}
contexts:
- name: ebb-test
  context: {cluster: ebb-test, user: $1}
current-context: ebb-test
KC
}

write_configs() {
  mkdir -p "$D/containerd" "$D/cni/net.d" "$D/cni/ipam" "$D/kubelet/pki" "$D/kubelet/volume-plugins" \
    "$D/ns/run" "$D/ns/varlib" "$D/ns/varlog" "$D/log"
  cat > "$D/containerd/config.toml" <<TOML
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
# the sandbox lacks CAP_SYS_RESOURCE: nothing may lower an OOM score (see restrict_oom_score_adj)
oom_score = 0
[grpc]
  address = "$SOCK"
[ttrpc]
  address = ""
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    restrict_oom_score_adj = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "/usr/sbin/runc"
          Root = "$D/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$D/cni/net.d"
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = "$D/containerd/opt"
TOML
  cat > "$D/cni/net.d/10-ebb-bridge.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "ebb-test",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$D/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  cat > "$D/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# the node's InternalIP (a kubelet refuses a loopback node IP): the API server dials it for logs and exec
address: $GATEWAY
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ
# the API server authenticates with a client certificate from the test CA (logs, exec)
authentication:
  anonymous: {enabled: false}
  x509: {clientCAFile: "$KD/pki/ca.crt"}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
oomScoreAdj: 0
syncFrequency: 10s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
# no cluster DNS: pods get the host's resolv.conf; in-cluster clients use KUBERNETES_SERVICE_HOST
clusterDomain: cluster.local
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
YAML
  cat > "$D/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$D/kube-proxy.kubeconfig"}
mode: iptables
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ
metricsBindAddress: 127.0.0.1:$PROXY_METRICS
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
# masquerade every Service connection: replies from a pod on the same bridge then come back through
# the host's conntrack (no reliance on bridge netfilter)
iptables: {masqueradeAll: true, syncPeriod: 5s, minSyncPeriod: 0s}
conntrack: {maxPerCore: 0}
YAML
}

# The `kubernetes` Service's endpoint: the relay on the bridge gateway (kube.sh runs the API server
# with --endpoint-reconciler-type=none, so nobody else writes it).
write_kubernetes_endpoints() {
  local body="{\"apiVersion\":\"v1\",\"kind\":\"Endpoints\",\"metadata\":{\"name\":\"kubernetes\",\"namespace\":\"default\"},
    \"subsets\":[{\"addresses\":[{\"ip\":\"$GATEWAY\"}],\"ports\":[{\"name\":\"https\",\"port\":$API_PORT,\"protocol\":\"TCP\"}]}]}"
  kadmin /api/v1/namespaces/default/endpoints/kubernetes -X PUT -H 'Content-Type: application/json' -d "$body" \
    >/dev/null 2>&1 ||
    kadmin /api/v1/namespaces/default/endpoints -X POST -H 'Content-Type: application/json' -d "$body" >/dev/null
}

node_ready() {
  kadmin "/api/v1/nodes/$NODE" 2>/dev/null | python3 -c '
import json, sys
n = json.load(sys.stdin)
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) else 1)'
}

c_start() {
  c_stop
  have_node_bins || die "kubelet/kube-scheduler/kube-proxy missing in $KBIN: run tests/env/testenv.sh install"
  [ -f "$IMAGES/base.tar" ] || die "not installed: run tests/env/testenv.sh install"
  [ -f "$KD/pki/ca.key" ] && kadmin /readyz >/dev/null 2>&1 || die "kube is not running: start it first (testenv.sh up kube node)"
  # shellcheck disable=SC2086
  require_ports_free $PORTS
  fresh_dir "$D"
  write_configs
  leaf kubelet "/O=system:nodes/CN=system:node:$NODE"
  leaf kube-scheduler /CN=system:kube-scheduler
  leaf kube-proxy /CN=system:kube-proxy
  # the bridge plugin (isGateway) sets ip_forward, kube-proxy route_localnet: both are restored by stop
  cat /proc/sys/net/ipv4/ip_forward > "$D/ip_forward.orig"
  cat /proc/sys/net/ipv4/conf/all/route_localnet > "$D/route_localnet.orig"

  # the bridge with the gateway address exists before the first pod, so the relay can bind it
  ip link add "$BRIDGE" type bridge 2>/dev/null || true
  ip addr replace "$GATEWAY/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # A connection to a Service IP that kube-proxy has not (yet) translated would leave through the
  # default route, and this machine's network answers any address (HTTP 404 on :443); the API
  # server's aggregator then keeps that connection alive and never reaches the Service. In a cluster
  # such a connection fails and is retried: make it fail here too (translated packets carry the pod
  # address by the filter hook and pass).
  iptables -w 5 -N "$GUARD" 2>/dev/null || iptables -w 5 -F "$GUARD"
  iptables -w 5 -A "$GUARD" -d "$SERVICE_CIDR" -p tcp -j REJECT --reject-with tcp-reset
  iptables -w 5 -A "$GUARD" -d "$SERVICE_CIDR" -j REJECT
  iptables -w 5 -C OUTPUT -j "$GUARD" 2>/dev/null || iptables -w 5 -I OUTPUT -j "$GUARD"
  iptables -w 5 -C FORWARD -j "$GUARD" 2>/dev/null || iptables -w 5 -I FORWARD -j "$GUARD"
  start_bg "$D/socat.pid" "$D/log/socat.log" \
    socat "TCP-LISTEN:$API_PORT,bind=$GATEWAY,reuseaddr,fork" "TCP:127.0.0.1:$API_PORT"
  write_kubernetes_endpoints || { log "could not write the kubernetes Endpoints"; return 1; }

  start_bg "$D/containerd.pid" "$D/log/containerd.log" unshare -m --propagation private -- bash -c '
    set -e
    D=$1
    mount --bind "$D/ns/run" /run          # /run/containerd (shim sockets), /run/netns (pod netns)
    mount --bind "$D/ns/varlib" /var/lib   # /var/lib/cni (libcni cache), /var/lib/kubelet leftovers
    mount --bind "$D/ns/varlog" /var/log   # kubelet hard-codes /var/log/pods and /var/log/containers
    exec containerd --config "$D/containerd/config.toml"' containerd "$D"
  wait_ready 30 "$D/containerd.pid" containerd ctr -a "$SOCK" version || { log_tail "$D/log/containerd.log"; return 1; }
  ctr_ images import "$IMAGES/base.tar" >/dev/null || { log "image import failed"; return 1; }

  local cpid; cpid=$(pidfile_pid "$D/containerd.pid")
  start_bg "$D/kubelet.pid" "$D/log/kubelet.log" nsenter -t "$cpid" -m -- "$KBIN/kubelet" \
    --config="$D/kubelet/config.yaml" --kubeconfig="$D/kubelet.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" --runtime-request-timeout=2m \
    --root-dir="$D/kubelet" --cert-dir="$D/kubelet/pki" --volume-plugin-dir="$D/kubelet/volume-plugins" \
    --hostname-override=$NODE --node-ip=$GATEWAY --v=2
  start_bg "$D/kube-scheduler.pid" "$D/log/kube-scheduler.log" "$KBIN/kube-scheduler" \
    --kubeconfig="$D/kube-scheduler.kubeconfig" --authentication-kubeconfig="$D/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$D/kube-scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=$SCHED_PORT --port=0 \
    --cert-dir="$D/scheduler-certs" --profiling=false --v=1
  start_bg "$D/kube-proxy.pid" "$D/log/kube-proxy.log" "$KBIN/kube-proxy" --config="$D/kube-proxy.yaml" --v=1
  wait_ready 60 "$D/kubelet.pid" "node $NODE Ready" node_ready ||
    { log_tail "$D/log/kubelet.log" "$D/log/containerd.log"; return 1; }
  wait_ready 30 "$D/kube-scheduler.pid" kube-scheduler \
    curl -ksf "https://127.0.0.1:$SCHED_PORT/healthz" || { log_tail "$D/log/kube-scheduler.log"; return 1; }
  wait_ready 30 "$D/kube-proxy.pid" kube-proxy \
    curl -sf "http://127.0.0.1:$PROXY_HEALTHZ/healthz" || { log_tail "$D/log/kube-proxy.log"; return 1; }
  log "node $NODE Ready: pods on $POD_CIDR ($BRIDGE), API server for pods at $GATEWAY:$API_PORT"
}

# ---------------------------------------------------------------------------------------------- stop
c_stop() {
  [ -d "$D" ] || return 0
  local t
  # the kubelet first (it would restart containers), then every container, then containerd
  stop_pidfile "$D/kubelet.pid" 10
  stop_pidfile "$D/kube-scheduler.pid" 5
  if pidfile_alive "$D/containerd.pid"; then
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do [ -z "$(ctr_ tasks ls -q 2>/dev/null | head -n1)" ] && break; sleep 0.3; done
  fi
  stop_pidfile "$D/containerd.pid" 10
  # shims outlive containerd (they are re-parented); only ours name our socket
  pkill -KILL -f "containerd-shim.* -address $SOCK" 2>/dev/null || true
  if [ -f "$D/kube-proxy.pid" ]; then
    stop_pidfile "$D/kube-proxy.pid" 5
    "$KBIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  # --cleanup leaves its canary and mark chains (empty, unreferenced): remove every KUBE-* chain
  local table chain
  for table in filter nat mangle; do
    for chain in $(iptables -w 5 -t $table -S 2>/dev/null | awk '/^-N KUBE-/ { print $2 }'); do
      iptables -w 5 -t $table -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -w 5 -t $table -S 2>/dev/null | awk '/^-N KUBE-/ { print $2 }'); do
      iptables -w 5 -t $table -X "$chain" 2>/dev/null || true
    done
  done
  while iptables -w 5 -D OUTPUT -j "$GUARD" 2>/dev/null; do :; done
  while iptables -w 5 -D FORWARD -j "$GUARD" 2>/dev/null; do :; done
  iptables -w 5 -F "$GUARD" 2>/dev/null || true
  iptables -w 5 -X "$GUARD" 2>/dev/null || true
  stop_pidfile "$D/socat.pid" 5
  # the bridge and the veths of pods that are gone
  ip link del "$BRIDGE" 2>/dev/null || true
  if [ -f "$D/ip_forward.orig" ]; then cat "$D/ip_forward.orig" > /proc/sys/net/ipv4/ip_forward; rm -f "$D/ip_forward.orig"; fi
  if [ -f "$D/route_localnet.orig" ]; then
    cat "$D/route_localnet.orig" > /proc/sys/net/ipv4/conf/all/route_localnet; rm -f "$D/route_localnet.orig"
  fi
  # shellcheck disable=SC2086
  wait_ports_free $PORTS
}

c_status() {
  local p any=0
  for p in containerd kubelet kube-scheduler kube-proxy socat; do
    if pidfile_alive "$D/$p.pid"; then
      any=1; printf 'node      running  pid %-7s %s\n' "$(pidfile_pid "$D/$p.pid")" "$p"
    else printf 'node      stopped  %-11s %s\n' "" "$p"; fi
  done
  if [ $any = 1 ]; then
    if node_ready; then echo "node      $NODE Ready"; else echo "node      $NODE NOT Ready"; fi
  fi
  return 0
}

# import IMAGE.tar...: load OCI archives (tests/env/mkimage.py) into the running node's containerd
c_import() {
  pidfile_alive "$D/containerd.pid" || die "the node is not running"
  local f
  for f in "$@"; do ctr_ images import "$f" >/dev/null && log "imported $f"; done
}

case "${1:-}" in
  import) shift; c_import "$@" ;;
  *) component_main "$@" ;;
esac
