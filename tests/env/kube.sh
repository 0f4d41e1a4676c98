#!/usr/bin/env bash
# Kubernetes control plane for integration tests, on loopback, without nodes (pods stay Pending):
#   etcd (Debian etcd-server 3.4)                      http://127.0.0.1:2379 (peer 2380)
#   kube-apiserver                                     https://127.0.0.1:6443
#   kube-controller-manager (deployment, replicaset,   https://127.0.0.1:10257
#     HPA, GC, namespace, serviceaccount-token, ...)
# No binary kube-apiserver exists in Debian, PyPI or npm, and the Go module proxy is out of reach, so both
# servers are built from Debian bookworm's `kubernetes` source package (1.20.2, ships vendor/), with Go 1.19.
#
# Two flavours, recorded in run/kube/flavor and printed at start:
#   modern-hybrid  (preferred) the same 1.20.2 source patched (tests/env/kube-hybrid/) to serve autoscaling/v2
#                  and to hand apiextensions.k8s.io + all CRD groups to an apiextensions-apiserver 1.36 built
#                  from Debian sid's golang-k8s-* library packages in a sid chroot (https://127.0.0.1:6445):
#                  CRDs get real CEL x-kubernetes-validations. Built-in APIs are still 1.20.
#   plain-1.20.2   the unpatched build; the fallback when the hybrid's install or start fails.
# EBB_KUBE_FLAVOR=auto|modern-hybrid|plain-1.20.2 (default auto) chooses; EBB_KUBE_RETRY_HYBRID=1 retries a
# hybrid install that failed before; EBB_KUBE_KEEP_BUILD=1 keeps the source tree, Go cache and chroot.
#
# usage: kube.sh install|start|stop|restart|status|flavor|packages
set -euo pipefail
COMPONENT=kube
. "$(dirname "$0")/lib.sh"

K=$TE_HOME/kube
D=$TE_RUN/kube
PKI=$D/pki
SRC=$K/src                    # extracted source tree (deleted after install)
DL=$K/download                # source package + a private apt state for `apt-get source`
CH=$K/chroot                  # sid chroot for the apiextensions-apiserver build (deleted after install)
BIN_PLAIN=$K/plain-1.20.2/bin
BIN_HYBRID=$K/modern-hybrid/bin
K8S_DEB=1.20.5+really1.20.2-1.1+deb12u1
PATCH_DIR=$TE_DIR/kube-hybrid
# bump the rN suffix when the recipe changes, so `install` rebuilds
STAMP_BASE="kubernetes $K8S_DEB reflect2-1.0.2 r1"
# r2: the plain build also makes the node's kubelet, kube-scheduler and kube-proxy (tests/env/node.sh)
STAMP_PLAIN="$STAMP_BASE node-r2"
STAMP_HYBRID="$STAMP_BASE hybrid-r1 $(cat "$PATCH_DIR"/*.go 2>/dev/null | md5sum | cut -c1-12)"
STAMP_APIEXT="apiextensions-apiserver from sid golang-k8s-apiextensions-apiserver-dev r1"
ETCD_PORT=2379
ETCD_PEER_PORT=2380
API_PORT=6443
APIEXT_PORT=6445
NODE_GATEWAY=10.244.0.1   # node.sh's bridge: pods reach the API server there (in its certificate)
KCM_PORT=10257
ALL_PORTS="$ETCD_PORT $ETCD_PEER_PORT $API_PORT $APIEXT_PORT $KCM_PORT"
PROCS="etcd kube-apiserver apiextensions-apiserver kube-controller-manager"

# ============================================================================================== install

# The mirrors this machine's apt already uses (deb822 .sources or one-line sources.list).
debian_mirror() {
  local m
  m=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{ print $2 }' | grep -v security | grep /debian | head -n1 || true)
  [ -n "$m" ] || m=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{ print $2 }' | grep -v security | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}
debian_security_mirror() {
  local m
  m=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{ print $2 }' | grep security | head -n1 || true)
  echo "${m:-$(debian_mirror)-security}"
}

have_plain() {
  stamp_ok kube-plain "$STAMP_PLAIN" && [ -x "$BIN_PLAIN/kube-apiserver" ] && [ -x "$BIN_PLAIN/kube-controller-manager" ] \
    && [ -x "$BIN_PLAIN/kubelet" ] && [ -x "$BIN_PLAIN/kube-scheduler" ] && [ -x "$BIN_PLAIN/kube-proxy" ]
}
have_hybrid_k8s() {
  stamp_ok kube-modern-hybrid "$STAMP_HYBRID" && [ -x "$BIN_HYBRID/kube-apiserver" ] && [ -x "$BIN_HYBRID/kube-controller-manager" ]
}
have_apiext() { stamp_ok kube-apiextensions "$STAMP_APIEXT" && [ -x "$BIN_HYBRID/apiextensions-apiserver" ]; }
have_hybrid() { have_hybrid_k8s && have_apiext; }
packages() {
  local p="etcd-server golang-go dpkg-dev make openssl curl rsync golang-github-modern-go-reflect2-dev"
  hybrid_wanted && p="$p debootstrap"
  echo "$p"
}
hybrid_wanted() { [ "${EBB_KUBE_FLAVOR:-auto}" != plain-1.20.2 ]; }
hybrid_failed_before() { [ -f "$TE_STAMPS/kube-modern-hybrid.failed" ] && [ -z "${EBB_KUBE_RETRY_HYBRID:-}" ]; }

# `apt-get source` needs deb-src entries; a private apt state under $DL avoids touching the host's sources.
fetch_source() {
  [ -f "$DL/kubernetes_$K8S_DEB.dsc" ] && return 0
  mkdir -p "$DL/apt/lists/partial" "$DL/apt/cache/archives/partial"
  local key=/usr/share/keyrings/debian-archive-keyring.gpg
  cat > "$DL/apt/sources.list" <<SRC
deb-src [signed-by=$key] $(debian_mirror) bookworm main
deb-src [signed-by=$key] $(debian_security_mirror) bookworm-security main
SRC
  local o=(-o "Dir::Etc::SourceList=$DL/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$DL/apt/lists" -o "Dir::Cache=$DL/apt/cache" -o APT::Sandbox::User=root)
  apt-get "${o[@]}" update -qq
  (cd "$DL" && apt-get "${o[@]}" source -qq --download-only "kubernetes=$K8S_DEB")
}

# Fresh source tree with the reflect2 fix.
extract_source() {
  rm -rf "$SRC"
  # --no-copy: no second copy of the 34 MB orig tarball next to the tree
  dpkg-source --no-copy -x "$DL/kubernetes_$K8S_DEB.dsc" "$SRC" >/dev/null
  # The vendored github.com/modern-go/reflect2 v1.0.1 makes a Go >= 1.18 build of kube-apiserver crash
  # ("fatal error: fault" in mapiterinit) on the first custom-resource write; Debian's 1.0.2 source fixes it.
  local r=$SRC/vendor/github.com/modern-go/reflect2
  find "$r" -mindepth 1 ! -name LICENSE -delete
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2/. "$r/"
  rm -f "$r/go.mod" "$r/go.sum"
  # build like debian/rules: GOPATH mode through a symlink
  mkdir -p "$SRC/.go/src/k8s.io"
  ln -sfn ../../.. "$SRC/.go/src/k8s.io/kubernetes"
}

# make_k8s GIT_VERSION OUT_DIR [EXTRA_CMDS]: build kube-apiserver + kube-controller-manager (and the
# commands named in EXTRA_CMDS, e.g. "kubelet kube-scheduler") from $SRC.
# The Makefile runs the code generators (openapi-gen etc.) first; a plain `go build` fails without them.
make_k8s() {
  local version=$1 out=$2 extra=${3:-}
  local cmds="kube-apiserver kube-controller-manager $extra" what="" c
  for c in $cmds; do what="$what cmd/$c"; done
  cat > "$K/version.env" <<VER
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='$version'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
VER
  mkdir -p "$K/home" "$out"
  (cd "$SRC" && env GOPATH="$SRC/.go" GOCACHE="$K/gocache" HOME="$K/home" GOPROXY=off GOFLAGS= CGO_ENABLED=0 \
    KUBE_GIT_VERSION_FILE="$K/version.env" make WHAT="${what# }")
  for c in $cmds; do cp "$SRC/_output/bin/$c" "$out/"; done
}

build_plain() {
  local t0; t0=$(now)
  fetch_source
  extract_source
  log "source ready after $(since "$t0")s; compiling (takes minutes)"
  rm -rf "$BIN_PLAIN"
  # the node (tests/env/node.sh) runs these three whatever the API server flavour
  make_k8s v1.20.2 "$BIN_PLAIN" "kubelet kube-scheduler kube-proxy"
  "$BIN_PLAIN/kube-apiserver" --version
}

# --- modern-hybrid: patch the 1.20.2 tree -----------------------------------------------------
patch_hybrid() {
  cd "$SRC"
  [ -f .ebb-hybrid-patched ] && return 0
  # (1) autoscaling/v2 = v2beta2 under a new name, in the external (k8s.io/api) and internal type packages
  local api=staging/src/k8s.io/api/autoscaling internal=pkg/apis/autoscaling
  rm -rf "$api/v2" "$internal/v2"
  cp -r "$api/v2beta2" "$api/v2"
  cp -r "$internal/v2beta2" "$internal/v2"
  rm -f "$api/v2/BUILD" "$api/v2/zz_generated.prerelease-lifecycle.go" "$internal/v2/BUILD" "$internal/v2"/*_test.go
  sed -i 's/v2beta2/v2/g' "$api/v2"/*.go "$api/v2/generated.proto" "$internal/v2"/*.go
  # v2 is GA: drop the beta lifecycle tags (they would mark it deprecated)
  sed -i '/+k8s:prerelease-lifecycle-gen/d' "$api/v2"/*.go
  cp "$PATCH_DIR/install.go" "$internal/install/install.go"
  # served by the same REST storage as v2beta2
  cp "$PATCH_DIR/storage_autoscaling_v2.go" pkg/registry/autoscaling/rest/
  sed -i 's|^\treturn apiGroupInfo, true, nil$|\tif err := p.addAutoscalingV2(\&apiGroupInfo, apiResourceConfigSource, restOptionsGetter); err != nil {\n\t\treturn genericapiserver.APIGroupInfo{}, false, err\n\t}\n&|' \
    pkg/registry/autoscaling/rest/storage_autoscaling.go
  # enabled by default
  sed -i -e 's|^\tautoscalingapiv1 "k8s.io/api/autoscaling/v1"$|&\n\tautoscalingapiv2 "k8s.io/api/autoscaling/v2"|' \
    -e 's|^\t\tautoscalingapiv1.SchemeGroupVersion,$|&\n\t\tautoscalingapiv2.SchemeGroupVersion,|' pkg/controlplane/instance.go
  # aggregator priority as upstream >= 1.23: v2 is the preferred version in discovery
  sed -i 's|^\t{Group: "autoscaling", Version: "v1"}: .*$|&\n\t{Group: "autoscaling", Version: "v2"}:                        {group: 17500, version: 30},|' \
    cmd/kube-apiserver/app/aggregator.go
  # openapi-gen fails on API-rule violations not listed here (the file must stay byte-sorted)
  local rules=api/api-rules/violation_exceptions.list
  grep 'k8s.io/api/autoscaling/v2beta2,' $rules | sed 's|autoscaling/v2beta2,|autoscaling/v2,|' >> $rules
  LC_ALL=C sort -o $rules $rules
  # vendor mode only imports packages listed in modules.txt
  sed -i 's|^k8s.io/api/autoscaling/v1$|&\nk8s.io/api/autoscaling/v2|' vendor/modules.txt
  # (2) CRDs served by the external apiextensions-apiserver (see external_apiextensions.go)
  cp "$PATCH_DIR/external_apiextensions.go" pkg/controlplane/controller/crdregistration/
  sed -i -e 's|^\tapiServices := apiServicesToRegister(delegateAPIServer, autoRegistrationController)$|&\n\tcrdregistration.RegisterExternalAPIExtensions(autoRegistrationController)|' \
    -e 's|^\t\tautoRegistrationController)$|\t\tcrdregistration.WithExternalAPIExtensions(autoRegistrationController))|' \
    cmd/kube-apiserver/app/aggregator.go
  # ... and the built-in 1.20 handler no longer serves custom resources (see customresource_handler_external.go)
  local crh=staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver
  cp "$PATCH_DIR/customresource_handler_external.go" $crh/
  sed -i 's|^\t// if the scope in the CRD and the scope in request differ|\tif refuseExternallyServedCR(w, req, schema.GroupVersion{Group: requestInfo.APIGroup, Version: requestInfo.APIVersion}) {\n\t\treturn\n\t}\n\n&|' \
    $crh/customresource_handler.go
  # every edit must have hit its target
  grep -q 'if refuseExternallyServedCR(' $crh/customresource_handler.go
  grep -q 'p.addAutoscalingV2(' pkg/registry/autoscaling/rest/storage_autoscaling.go
  grep -q 'autoscalingapiv2.SchemeGroupVersion,' pkg/controlplane/instance.go
  grep -q 'autoscalingapiv2 "k8s.io/api/autoscaling/v2"' pkg/controlplane/instance.go
  grep -q 'Version: "v2"}' cmd/kube-apiserver/app/aggregator.go
  grep -q 'crdregistration.RegisterExternalAPIExtensions' cmd/kube-apiserver/app/aggregator.go
  grep -q 'crdregistration.WithExternalAPIExtensions' cmd/kube-apiserver/app/aggregator.go
  grep -q 'k8s.io/api/autoscaling/v2,' $rules
  grep -qx 'k8s.io/api/autoscaling/v2' vendor/modules.txt
  touch .ebb-hybrid-patched
}

build_hybrid_k8s() {
  [ -f "$SRC/_output/bin/kube-apiserver" ] || { fetch_source; extract_source; }   # else: incremental on the plain build
  patch_hybrid
  rm -f "$BIN_HYBRID/kube-apiserver" "$BIN_HYBRID/kube-controller-manager"
  make_k8s v1.20.2+hpav2 "$BIN_HYBRID"
  "$BIN_HYBRID/kube-apiserver" --version
}

chroot_umount() {
  local m
  for m in proc sys dev/pts; do mountpoint -q "$CH/$m" 2>/dev/null && umount "$CH/$m" || true; done
}
remove_chroot() {
  chroot_umount
  # --one-file-system: never descend into a mount that is still there
  rm -rf --one-file-system "$CH"
}

# sid chroot with Go and the k8s.io/* 0.36 library sources (golang-k8s-apiextensions-apiserver-dev pulls
# apiserver, api, apimachinery, client-go, component-base, cel-go, etcd client, grpc, ...; ~3.4 GB)
prepare_chroot() {
  local mirror; mirror=$(debian_mirror)
  chroot_umount
  if [ ! -x "$CH/usr/bin/apt-get" ] || [ ! -f "$CH/.ebb-debootstrap-done" ]; then
    rm -rf --one-file-system "$CH"
    debootstrap --variant=minbase sid "$CH" "$mirror"
    touch "$CH/.ebb-debootstrap-done"
  fi
  rm -f "$CH/etc/apt/sources.list"
  cat > "$CH/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  # the mirror's sid Release can be past its Valid-Until relative to this machine's clock
  echo 'Acquire::Check-Valid-Until "false";' > "$CH/etc/apt/apt.conf.d/99ebb-no-valid-until"
  chroot "$CH" apt-get update -qq
  mount -t proc proc "$CH/proc"
  trap chroot_umount EXIT
  chroot "$CH" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    golang-go golang-k8s-apiextensions-apiserver-dev >/dev/null
  chroot_umount
  trap - EXIT
  chroot "$CH" dpkg-query -W -f '${Package} ${Version}\n' golang-go golang-k8s-apiextensions-apiserver-dev \
    golang-k8s-apiserver-dev golang-cel-cel-go-dev
}

build_apiextensions() {
  local v
  v=$(chroot "$CH" dpkg-query -W -f '${Version}' golang-k8s-apiextensions-apiserver-dev)
  v=${v%-*}; v=1.${v#0.}                     # 0.36.4-1 -> 1.36.4
  mount -t proc proc "$CH/proc"
  trap chroot_umount EXIT
  mkdir -p "$CH/build/out" "$CH/build/gopath"
  # GOPATH mode against /usr/share/gocode: the Debian way to build from -dev packages, no module proxy
  chroot "$CH" env GOPATH=/build/gopath:/usr/share/gocode GO111MODULE=off GOTOOLCHAIN=local GOPROXY=off \
    CGO_ENABLED=0 GOCACHE=/build/gocache HOME=/root \
    go build -trimpath -o /build/out/apiextensions-apiserver -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=v$v -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$(echo "$v" | cut -d. -f2) \
      -X k8s.io/component-base/version.gitTreeState=clean" k8s.io/apiextensions-apiserver
  chroot_umount
  trap - EXIT
  mkdir -p "$BIN_HYBRID"
  cp "$CH/build/out/apiextensions-apiserver" "$BIN_HYBRID/"
  echo "v$v" > "$BIN_HYBRID/apiextensions-apiserver.version"
  "$BIN_HYBRID/apiextensions-apiserver" --version 2>/dev/null || true
}

# run_step NAME FUNCTION: run an install step as a separate process (so `set -e` applies inside it),
# output to $K/logs/NAME.log; print the log's tail on failure.
run_step() {
  local name=$1 fn=$2 t0 rc=0; t0=$(now)
  mkdir -p "$K/logs"
  "$0" "_$fn" > "$K/logs/$name.log" 2>&1 || rc=$?
  if [ $rc = 0 ]; then log "$name done in $(since "$t0")s"; else log "$name FAILED after $(since "$t0")s"; log_tail "$K/logs/$name.log"; fi
  return $rc
}

c_install() {
  local hybrid=0
  if hybrid_wanted; then
    if hybrid_failed_before; then
      log "modern-hybrid failed before ($(cat "$TE_STAMPS/kube-modern-hybrid.failed")); using plain-1.20.2. EBB_KUBE_RETRY_HYBRID=1 retries"
    elif ! have_hybrid; then hybrid=1; fi
  fi
  if have_plain && [ $hybrid = 0 ]; then
    log "already installed: $(install_summary)"
    return 0
  fi
  local t0; t0=$(now)
  # shellcheck disable=SC2086
  apt_ensure $(packages)
  local chroot_pid=""
  if [ $hybrid = 1 ] && ! have_apiext; then
    # the sid chroot is download/unpack-bound, the 1.20 build CPU-bound: run them side by side
    log "modern-hybrid: preparing a sid chroot in the background (log: $K/logs/chroot.log)"
    run_step chroot prepare_chroot &
    chroot_pid=$!
  fi
  if ! have_plain; then
    log "building plain-1.20.2 (log: $K/logs/build-plain.log)"
    run_step build-plain build_plain || { [ -n "$chroot_pid" ] && wait "$chroot_pid"; cleanup_build; die "plain-1.20.2 build failed"; }
    stamp_write kube-plain "$STAMP_PLAIN"
  fi
  if [ $hybrid = 1 ]; then
    local ok=1 apiext_pid=""
    if [ -n "$chroot_pid" ]; then
      if wait "$chroot_pid"; then
        # apiextensions-apiserver in the chroot while the patched 1.20 tree compiles
        ( run_step build-apiextensions build_apiextensions && stamp_write kube-apiextensions "$STAMP_APIEXT" ) &
        apiext_pid=$!
      else
        ok=0
      fi
    fi
    if [ $ok = 1 ] && ! have_hybrid_k8s; then
      log "building modern-hybrid: patched kube-apiserver/kube-controller-manager (log: $K/logs/build-hybrid.log)"
      if run_step build-hybrid build_hybrid_k8s; then stamp_write kube-modern-hybrid "$STAMP_HYBRID"; else ok=0; fi
    fi
    if [ -n "$apiext_pid" ]; then wait "$apiext_pid" || ok=0; fi
    if [ $ok = 1 ]; then
      rm -f "$TE_STAMPS/kube-modern-hybrid.failed"
    else
      mkdir -p "$TE_STAMPS"
      echo "$(date -u +%FT%TZ) $STAMP_HYBRID, logs in $K/logs" > "$TE_STAMPS/kube-modern-hybrid.failed"
      log "modern-hybrid install FAILED: falling back to plain-1.20.2 (logs in $K/logs)"
    fi
  fi
  cleanup_build
  log "installed in $(since "$t0")s: $(install_summary)"
}

# build outputs are ~2 GB (_output, Go cache) plus ~3.4 GB of chroot; only the binaries are needed
cleanup_build() {
  [ -n "${EBB_KUBE_KEEP_BUILD:-}" ] && return 0
  rm -rf "$SRC" "$K/gocache" "$K/home" "$K/version.env"
  [ -d "$CH" ] && remove_chroot
  return 0
}

install_summary() {
  local s="plain-1.20.2"
  have_plain || s="plain-1.20.2 MISSING"
  if have_hybrid; then s="$s + modern-hybrid (apiextensions $(cat "$BIN_HYBRID/apiextensions-apiserver.version" 2>/dev/null))"; fi
  echo "$s; start would run: $(choose_flavor)"
}

# ============================================================================================== start

choose_flavor() {
  case "${EBB_KUBE_FLAVOR:-auto}" in
    plain-1.20.2) echo plain-1.20.2 ;;
    modern-hybrid) echo modern-hybrid ;;
    auto) if have_hybrid; then echo modern-hybrid; else echo plain-1.20.2; fi ;;
    *) die "EBB_KUBE_FLAVOR must be auto, modern-hybrid or plain-1.20.2" ;;
  esac
}

make_certs() {
  mkdir -p "$PKI"
  (
    cd "$PKI"
    ossl() { openssl "$@" 2>/dev/null; }
    # ECDSA P-256 keys: ~20x faster to generate than RSA 2048 (10 RSA keys cost 3-6 s of every start);
    # Go, rustls and openssl clients all accept them
    local key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
    ca() { ossl req -x509 "${key[@]}" -nodes -days 3650 -keyout "$1.key" -out "$1.crt" -subj "/CN=$2"; }
    # leaf NAME SUBJECT CA EXTENSIONS
    leaf() {
      printf '%s\n' "$4" > "$1.ext"
      ossl req "${key[@]}" -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
      ossl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 3650 -out "$1.crt" -extfile "$1.ext"
      rm -f "$1.csr" "$1.ext"
    }
    local client='extendedKeyUsage=clientAuth'
    ca ca kubernetes-ca
    ca front-proxy-ca front-proxy-ca   # the aggregator's client identity towards extension API servers
    leaf apiserver /CN=kube-apiserver ca "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:$NODE_GATEWAY,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
    leaf admin "/O=system:masters/CN=kubernetes-admin" ca "$client"
    leaf kcm /CN=system:kube-controller-manager ca "$client"
    # the API server towards the node's kubelet (logs, exec)
    leaf kubelet-client /CN=kube-apiserver-kubelet-client ca "$client"
    leaf front-proxy-client /CN=front-proxy-client front-proxy-ca "$client"
    # modern-hybrid: the aggregator checks the external server's cert for <service>.<namespace>.svc
    leaf apiext /CN=apiextensions-modern ca "subjectAltName=DNS:apiextensions-modern.kube-system.svc,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
    leaf apiext-client "/O=system:masters/CN=system:apiextensions-apiserver" ca "$client"
    # service-account token signing key: RSA, so tokens are RS256 like on every real cluster
    ossl genrsa -out sa.key 2048
    ossl rsa -in sa.key -pubout -out sa.pub
    # static bearer token (user admin in system:masters) for token-based clients
    echo 'test-admin-token,admin,admin-uid,"system:masters"' > tokens.csv
  )
  kubeconfig admin admin
  kubeconfig kcm kcm
  kubeconfig apiext apiext-client
  sed "s|client-certificate: $PKI/admin.crt|token: test-admin-token|; /client-key:/d" "$D/admin.kubeconfig" > "$D/token.kubeconfig"
}

kubeconfig() { # NAME CERT
  cat > "$D/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: ebb-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: ebb-test
  context: {cluster: ebb-test, user: $1, namespace: default}
current-context: ebb-test
KC
}

api() { curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "https://127.0.0.1:$API_PORT$1" "${@:2}"; }
etcd_ok() { curl -fsS --max-time 2 http://127.0.0.1:$ETCD_PORT/health | grep -q '"health":"true"'; }
apiserver_ready() { [ "$(api /readyz 2>/dev/null)" = ok ]; }
apiserver_serving() { api /api/v1/namespaces/kube-system 2>/dev/null | grep -q '"kind": "Namespace"'; }
apiext_ready() { [ "$(curl -fsS --max-time 5 --cacert "$PKI/ca.crt" https://127.0.0.1:$APIEXT_PORT/readyz 2>/dev/null)" = ok ]; }
# /healthz turns ok at once, but the controllers only work once the token controller has minted the
# per-controller service-account tokens (--use-service-account-credentials): 1.20 then gives the
# default ServiceAccount its token secret.
kcm_ready() {
  curl -ksS --max-time 2 https://127.0.0.1:$KCM_PORT/healthz 2>/dev/null | grep -qx ok &&
    api /api/v1/namespaces/default/serviceaccounts/default 2>/dev/null | grep -q '"secrets"'
}

fail_with_logs() { log "$1"; log_tail "$D/log/$2.log"; }

start_flavor() {
  local flavor=$1 bin
  if [ "$flavor" = modern-hybrid ]; then bin=$BIN_HYBRID; else bin=$BIN_PLAIN; fi
  fresh_dir "$D"
  mkdir -p "$D/log" "$D/pids"
  make_certs
  start_bg "$D/pids/etcd.pid" "$D/log/etcd.log" etcd --name default --data-dir "$D/etcd" \
    --listen-client-urls http://127.0.0.1:$ETCD_PORT --advertise-client-urls http://127.0.0.1:$ETCD_PORT \
    --listen-peer-urls http://127.0.0.1:$ETCD_PEER_PORT --initial-advertise-peer-urls http://127.0.0.1:$ETCD_PEER_PORT \
    --initial-cluster default=http://127.0.0.1:$ETCD_PEER_PORT --log-level warn
  wait_ready 30 "$D/pids/etcd.pid" etcd etcd_ok || { fail_with_logs "etcd failed" etcd; return 1; }

  local api_flags=(
    --etcd-servers=http://127.0.0.1:$ETCD_PORT
    # --insecure-port=0: no plain-HTTP port (1.20 still has one)
    --bind-address=127.0.0.1 --secure-port=$API_PORT --advertise-address=127.0.0.1 --insecure-port=0
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key"
    --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv"
    # mandatory in 1.20
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key"
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true
    # Node: the node's kubelet (tests/env/node.sh) reads only what its own pods use
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
    --kubelet-client-certificate="$PKI/kubelet-client.crt" --kubelet-client-key="$PKI/kubelet-client.key"
    --kubelet-preferred-address-types=InternalIP
    # aggregation layer (external metrics APIService): the front-proxy client cert and the headers it sets
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group
    --requestheader-extra-headers-prefix=X-Remote-Extra-
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key"
    # the "kubernetes" Endpoints may not hold a loopback address: don't reconcile it (node.sh points it
    # at its relay on the bridge gateway, through which pods reach this server)
    --endpoint-reconciler-type=none
    --profiling=false --v=1
  )
  if [ "$flavor" = modern-hybrid ]; then
    # the built-in 1.20 apiextensions is switched off; the patch registers v1.apiextensions.k8s.io and every
    # CRD group's APIService with the external server through the ExternalName Service created below
    api_flags+=(--runtime-config=apiextensions.k8s.io/v1=false,apiextensions.k8s.io/v1beta1=false)
    start_bg "$D/pids/kube-apiserver.pid" "$D/log/kube-apiserver.log" \
      env KUBE_EXTERNAL_APIEXTENSIONS=kube-system/apiextensions-modern:$APIEXT_PORT KUBE_EXTERNAL_APIEXTENSIONS_CA="$PKI/ca.crt" \
      "$bin/kube-apiserver" "${api_flags[@]}"
    # not /readyz: it waits for the CRD informer, which syncs through the external server
    wait_ready 90 "$D/pids/kube-apiserver.pid" "kube-apiserver (serving)" apiserver_serving ||
      { fail_with_logs "kube-apiserver failed" kube-apiserver; return 1; }
    # Endpoints may not point into 127.0.0.0/8, an ExternalName Service may: the aggregator resolves it
    # to https://localhost:$APIEXT_PORT (--enable-aggregator-routing=false, the default)
    api /api/v1/namespaces/kube-system/services -X POST -H 'Content-Type: application/json' -d "{
      \"apiVersion\": \"v1\", \"kind\": \"Service\",
      \"metadata\": {\"name\": \"apiextensions-modern\", \"namespace\": \"kube-system\"},
      \"spec\": {\"type\": \"ExternalName\", \"externalName\": \"localhost\", \"ports\": [{\"name\": \"https\", \"port\": $APIEXT_PORT}]}}" \
      >/dev/null || { log "could not create the apiextensions-modern Service"; return 1; }
    # --enable-priority-and-fairness=false: 1.20 has no flowcontrol/v1; the admission-policy plugins would
    # watch admissionregistration APIs 1.20 doesn't have
    start_bg "$D/pids/apiextensions-apiserver.pid" "$D/log/apiextensions-apiserver.log" \
      "$bin/apiextensions-apiserver" \
      --etcd-servers=http://127.0.0.1:$ETCD_PORT --etcd-prefix=/registry \
      --bind-address=127.0.0.1 --secure-port=$APIEXT_PORT \
      --tls-cert-file="$PKI/apiext.crt" --tls-private-key-file="$PKI/apiext.key" \
      --kubeconfig="$D/apiext.kubeconfig" --authentication-kubeconfig="$D/apiext.kubeconfig" \
      --authorization-kubeconfig="$D/apiext.kubeconfig" --client-ca-file="$PKI/ca.crt" \
      --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
      --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
      --requestheader-extra-headers-prefix=X-Remote-Extra- \
      --enable-priority-and-fairness=false \
      --disable-admission-plugins=ValidatingAdmissionPolicy,MutatingAdmissionPolicy \
      --profiling=false --v=1
    wait_ready 90 "$D/pids/apiextensions-apiserver.pid" apiextensions-apiserver apiext_ready ||
      { fail_with_logs "apiextensions-apiserver failed" apiextensions-apiserver; return 1; }
  else
    start_bg "$D/pids/kube-apiserver.pid" "$D/log/kube-apiserver.log" "$bin/kube-apiserver" "${api_flags[@]}"
  fi
  wait_ready 120 "$D/pids/kube-apiserver.pid" "kube-apiserver (readyz)" apiserver_ready ||
    { fail_with_logs "kube-apiserver not ready" kube-apiserver; return 1; }

  # --port=0: no 0.0.0.0:10252 plain-HTTP port (1.20). --use-service-account-credentials: each controller
  # runs as its own SA; as system:kube-controller-manager RBAC would forbid most of what they do.
  # HPA: sync every 2 s instead of 15 s, and scale down without the 5 min stabilization window.
  start_bg "$D/pids/kube-controller-manager.pid" "$D/log/kube-controller-manager.log" "$bin/kube-controller-manager" \
    --kubeconfig="$D/kcm.kubeconfig" --authentication-kubeconfig="$D/kcm.kubeconfig" \
    --authorization-kubeconfig="$D/kcm.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=$KCM_PORT --port=0 --cert-dir="$D/kcm-certs" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --controllers='*' \
    --horizontal-pod-autoscaler-sync-period=2s --horizontal-pod-autoscaler-downscale-stabilization=0s \
    --profiling=false --v=1
  wait_ready 120 "$D/pids/kube-controller-manager.pid" "kube-controller-manager (token controller)" kcm_ready ||
    { fail_with_logs "kube-controller-manager not ready" kube-controller-manager; return 1; }

  local version apiext=""
  version=$(api /version | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p')
  [ "$flavor" = modern-hybrid ] && apiext=$(cat "$BIN_HYBRID/apiextensions-apiserver.version" 2>/dev/null || true)
  echo "$flavor" > "$D/flavor"
  echo "$version" > "$D/version"
  echo "$apiext" > "$D/apiextensions-version"
  log "control plane running: $flavor (kube-apiserver $version${apiext:+, apiextensions-apiserver $apiext}) on https://127.0.0.1:$API_PORT"
}

c_start() {
  c_stop
  # shellcheck disable=SC2086
  require_ports_free $ALL_PORTS
  local flavor; flavor=$(choose_flavor)
  if [ "$flavor" = modern-hybrid ]; then have_hybrid || die "modern-hybrid is not installed"
  else have_plain || die "not installed: run tests/env/testenv.sh install"; fi
  log "starting $flavor"
  # own process, so that `set -e` applies inside (it is off in an `if` condition)
  if "$0" _start "$flavor"; then return 0; fi
  if [ "$flavor" = modern-hybrid ] && [ "${EBB_KUBE_FLAVOR:-auto}" = auto ] && have_plain; then
    log "modern-hybrid failed to start: falling back to plain-1.20.2 (its logs: $TE_RUN/kube-failed-hybrid)"
    rm -rf "$TE_RUN/kube-failed-hybrid"; cp -r "$D/log" "$TE_RUN/kube-failed-hybrid" 2>/dev/null || true
    c_stop
    "$0" _start plain-1.20.2 && return 0
  fi
  return 1
}

c_stop() {
  local p
  # Clients before servers. The two API servers are stopped together with a short grace period: in the
  # hybrid each one's graceful shutdown waits for requests the other keeps open on it (watches through the
  # aggregator). Only test data is lost (etcd is wiped at every start anyway).
  local p
  for p in $PROCS; do pidfile_alive "$D/pids/$p.pid" && STOPPED_ANY=1; done
  stop_pidfile "$D/pids/kube-controller-manager.pid" 10
  stop_pidfile "$D/pids/apiextensions-apiserver.pid" 5 &
  stop_pidfile "$D/pids/kube-apiserver.pid" 5
  wait
  stop_pidfile "$D/pids/etcd.pid" 10
  # shellcheck disable=SC2086
  wait_ports_free $ALL_PORTS
}

c_status() {
  local p any=0 ports
  for p in $PROCS; do
    case $p in
      etcd) ports="$ETCD_PORT,$ETCD_PEER_PORT" ;; kube-apiserver) ports=$API_PORT ;;
      apiextensions-apiserver) ports=$APIEXT_PORT ;; kube-controller-manager) ports=$KCM_PORT ;;
    esac
    if pidfile_alive "$D/pids/$p.pid"; then
      any=1; printf 'kube      running  pid %-7s port %-10s %s\n' "$(pidfile_pid "$D/pids/$p.pid")" "$ports" "$p"
    elif [ $p != apiextensions-apiserver ] || [ "$(cat "$D/flavor" 2>/dev/null)" = modern-hybrid ]; then
      printf 'kube      stopped  %-11s port %-10s %s\n' "" "$ports" "$p"
    fi
  done
  [ $any = 1 ] && echo "kube      flavor $(cat "$D/flavor" 2>/dev/null || echo '?') version $(cat "$D/version" 2>/dev/null || echo '?')"
  return 0
}

case "${1:-}" in
  flavor) choose_flavor ;;
  packages) packages ;;
  _start) start_flavor "$2" ;;
  # internal install steps, run by run_step in their own process
  _build_plain) build_plain ;;
  _build_hybrid_k8s) build_hybrid_k8s ;;
  _prepare_chroot) prepare_chroot ;;
  _build_apiextensions) build_apiextensions ;;
  *) component_main "$@" ;;
esac
