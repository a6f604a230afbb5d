#!/usr/bin/env bash
# Builds the control-plane binaries the end-to-end tests run against, from their Go modules,
# into a cache outside the repo keyed by version. A second run finds them and takes seconds.
#
#   tests/cluster/build.sh            build whatever is missing, print the bin dir on the last line
#
# Env: MODELROLLOUT_CACHE (default ~/.cache/modelrollout).
set -Eeuo pipefail
source "$(dirname "$0")/../lib.sh"
go_build tests/cluster/build.sh

K8S_VERSION=${K8S_VERSION:-v1.36.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
ISTIO_API_VERSION=${ISTIO_API_VERSION:-v1.32.0}
# Prometheus 3.16 (its Go module is tagged v0.316.0): Debian's 2.42 is built without kubernetes_sd,
# which is how a user's Prometheus finds pods. Only the kubernetes and file SD plugins are built in.
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}

BIN="$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
PROM_BIN="$CACHE/bin/prometheus-$PROMETHEUS_VERSION"
CRDS="$CACHE/crds/gateway-api-$GATEWAY_API_VERSION-istio-$ISTIO_API_VERSION"
WORK="$CACHE/gowork"
mkdir -p "$BIN" "$PROM_BIN" "$CRDS" "$WORK"


# --- kube-apiserver, kube-controller-manager, kube-scheduler -------------------------------
# k8s.io/kubernetes replaces its staging modules with ./staging paths, so `go install` refuses it.
# A wrapper module requires it and points each staging module at its published twin.
build_kubernetes() {
  local missing=0
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do [[ -x "$BIN/$c" ]] || missing=1; done
  [[ $missing == 0 ]] && return 0
  CURRENT_STEP="download k8s.io/kubernetes@$K8S_VERSION"; step "$CURRENT_STEP"
  local modfile dir="$WORK/kubernetes-$K8S_VERSION"
  modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  mkdir -p "$dir"
  local staging_version="v0.${K8S_VERSION#v1.}"
  {
    echo "module modelrollout.dev/k8s-build"
    echo
    grep -E '^go |^godebug ' "$modfile"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    grep -oE '^\s*k8s.io/[a-z0-9-]+ => ./staging/src/k8s.io/[a-z0-9-]+' "$modfile" \
      | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  CURRENT_STEP="resolve kubernetes $K8S_VERSION module graph"; step "$CURRENT_STEP"
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true; cd "$dir" && go get "k8s.io/kubernetes@$K8S_VERSION")
  local major minor
  major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
  minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$BIN/$c" ]] && continue
    CURRENT_STEP="go build $c $K8S_VERSION"; step "$CURRENT_STEP (cold: 5-20 min on 2 cores)"
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$BIN/$c.tmp" "$BIN/$c"
  done
}

# --- etcd 3.6 (its server module also carries replace directives) ---------------------------
build_etcd() {
  [[ -x "$BIN/etcd" ]] && return 0
  local dir="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  CURRENT_STEP="resolve etcd $ETCD_VERSION"; step "$CURRENT_STEP"
  cat > "$dir/go.mod" <<GOMOD
module modelrollout.dev/etcd-build

go 1.25

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/api/v3@$ETCD_VERSION" \
     "go.etcd.io/etcd/client/pkg/v3@$ETCD_VERSION" "go.etcd.io/etcd/client/v3@$ETCD_VERSION" \
     "go.etcd.io/etcd/pkg/v3@$ETCD_VERSION")
  CURRENT_STEP="go build etcd $ETCD_VERSION"; step "$CURRENT_STEP"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_kwok() {
  [[ -x "$BIN/kwok" ]] && return 0
  CURRENT_STEP="go install kwok $KWOK_VERSION"; step "$CURRENT_STEP"
  local gobin="$WORK/gobin-kwok"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mv "$gobin/kwok" "$BIN/kwok"
  # kwok needs Stage objects to move nodes and pods through their lifecycle; the module ships them.
  local kdir
  kdir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$BIN/kwok-stages"; mkdir -p "$BIN/kwok-stages"
  for kind in node pod; do
    for f in "$kdir"/kustomize/stage/$kind/fast/*.yaml $( [[ $kind == node ]] && echo "$kdir"/kustomize/stage/node/heartbeat-with-lease/*.yaml ); do
      [[ $(basename "$f") == kustomization.yaml ]] && continue
      cp "$f" "$BIN/kwok-stages/$kind-$(basename "$f")"
    done
  done
}

build_helm() {
  [[ -x "$BIN/helm" ]] && return 0
  CURRENT_STEP="go install helm $HELM_VERSION"; step "$CURRENT_STEP"
  local gobin="$WORK/gobin-helm"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$gobin/helm" "$BIN/helm"
}

build_prometheus() {
  [[ -x "$PROM_BIN/prometheus" ]] && return 0
  CURRENT_STEP="go install prometheus $PROMETHEUS_VERSION"; step "$CURRENT_STEP (cold: a few minutes)"
  local gobin="$WORK/gobin-prometheus" v="${PROMETHEUS_VERSION#v0.}"
  v="${v:0:1}.$((10#${v:1:2})).${v##*.}"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -tags "remove_all_sd,enable_kubernetes_sd" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$v" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
  mv "$gobin/prometheus" "$PROM_BIN/prometheus"
}

# --- CRDs of the traffic routers -----------------------------------------------------------
fetch_crds() {
  if [[ ! -f "$CRDS/gateway-api.yaml" ]]; then
    CURRENT_STEP="download sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"; step "$CURRENT_STEP"
    local gdir
    gdir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    # The standard channel. HTTPRoute's RequestMirror `percent`/`fraction` is standard since v1.3;
    # older releases need the experimental HTTPRoute, which is then taken instead.
    local out="$CRDS/gateway-api.yaml.tmp"; : > "$out"
    for f in "$gdir"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do
      if [[ $(basename "$f") == gateway.networking.k8s.io_httproutes.yaml ]] && ! grep -q ' percent:' "$f"; then
        f="$gdir/config/crd/experimental/gateway.networking.k8s.io_httproutes.yaml"
      fi
      cat "$f" >> "$out"; echo "---" >> "$out"
    done
    mv "$out" "$CRDS/gateway-api.yaml"
  fi
  if [[ ! -f "$CRDS/istio-networking.yaml" && ! -f "$CRDS/istio-networking.absent" ]]; then
    CURRENT_STEP="download istio.io/api@$ISTIO_API_VERSION"; step "$CURRENT_STEP"
    local idir
    if idir=$(go mod download -json "istio.io/api@$ISTIO_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p') && [[ -n "$idir" && -f "$idir/kubernetes/customresourcedefinitions.gen.yaml" ]]; then
      # Keep only the networking.istio.io group: that is what the controller drives.
      python3 - "$idir/kubernetes/customresourcedefinitions.gen.yaml" "$CRDS/istio-networking.yaml" <<'PY'
import sys
docs = open(sys.argv[1]).read().split("\n---\n")
keep = [d for d in docs if "group: networking.istio.io" in d]
open(sys.argv[2], "w").write("\n---\n".join(keep) + "\n")
PY
    else
      echo "istio.io/api $ISTIO_API_VERSION carries no CRD yaml here" > "$CRDS/istio-networking.absent"
    fi
  fi
}

build_etcd
build_kwok
build_helm
fetch_crds
build_kubernetes
build_prometheus
CURRENT_STEP=verify
for c in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm; do
  [[ -x "$BIN/$c" ]] || { echo "build.sh: $BIN/$c missing after build" >&2; exit 1; }
done
step "control-plane binaries ready in $BIN ($(( $(date +%s) - START ))s)"
echo "BIN=$BIN"
echo "CRDS=$CRDS"
echo "PROMETHEUS=$PROM_BIN/prometheus"
