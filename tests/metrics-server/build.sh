#!/usr/bin/env bash
# Builds metrics-server (the Kubernetes resource metrics API that a HorizontalPodAutoscaler reads
# CPU and memory from) from its Go module. Prints METRICS_SERVER=<binary>.
# Env: MODELROLLOUT_CACHE (default ~/.cache/modelrollout).
set -Eeuo pipefail
source "$(dirname "$0")/../lib.sh"
METRICS_SERVER_VERSION=v0.8.0
BIN="$CACHE/bin/metrics-server-$METRICS_SERVER_VERSION"
if [[ ! -x "$BIN/metrics-server" ]]; then
  go_build tests/metrics-server/build.sh
  CURRENT_STEP="go install metrics-server $METRICS_SERVER_VERSION"; step "$CURRENT_STEP (a few minutes cold)"
  go_install_one "$BIN" "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
fi
echo "METRICS_SERVER=$BIN/metrics-server"
