#!/usr/bin/env bash
# The one-command local demo:
#
#   bash demo/run.sh          a good candidate (fraud v2) goes shadow -> 5% -> 25% -> 100%
#   bash demo/run.sh --bad    a candidate with a higher false-positive rate is rolled back by itself
#   add --keep                leave everything running after the rollout settles (Ctrl-C to end)
#
# On a fresh machine it builds what it needs first (Python/ONNX Runtime env, the Go-built control
# plane — about 12 minutes the first time — and the Rust binaries); then it starts etcd,
# kube-apiserver, controller-manager, scheduler, kwok and Prometheus on 127.0.0.1, installs the Helm
# chart, runs the controller as the chart's service account, runs the stable and candidate sidecars
# with live traffic and label feedback, applies the fraud example and follows it with
# `kubectl modelrollout status --watch`. Ctrl-C at any point tears everything down.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
export DEMO_CANDIDATE=v2 DEMO_KEEP=0
for arg in "$@"; do
  case $arg in
    --bad) DEMO_CANDIDATE=bad ;;
    --keep) DEMO_KEEP=1 ;;
    *) echo "usage: $0 [--bad] [--keep]" >&2; exit 2 ;;
  esac
done
START=$SECONDS
step() { printf '\n\033[1;34m==> %s\033[0m (%ds)\n' "$*" $((SECONDS - START)); }

step "1/4 Python environment with ONNX Runtime (cached after the first run)"
eval "$(bash scripts/python-env.sh)"
step "2/4 control-plane binaries: kube-apiserver, etcd, kwok, kubectl, helm (first run: ~12 min of Go builds)"
bash tests/cluster/build.sh >/dev/null
step "3/4 Rust binaries: controller, kubectl plugin, sidecar (release), demo driver"
cargo build --locked -p modelrollout-controller --bins
cargo build --locked --release -p inference-sidecar
cargo build --locked -p modelrollout-e2e --bin demo-driver
export DEMO_BIN="$CARGO_TARGET_DIR/debug"
step "4/4 local control plane + Prometheus, then the rollout"
exec bash tests/cluster/cluster.sh run -- bash demo/inside.sh
