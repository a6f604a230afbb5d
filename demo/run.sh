#!/usr/bin/env bash
# The one-command local demo:
#
#   bash demo/run.sh          a good candidate (fraud v2) goes shadow -> 5% -> 25% -> 100%
#   bash demo/run.sh --bad    a candidate with a higher false-positive rate is rolled back by itself
#   add --keep                leave everything running after the rollout settles (Ctrl-C to end)
#
# On a fresh machine it builds what it needs first (Python/ONNX Runtime env, the Go-built control
# plane and real node, the container images from the shipped Dockerfiles, the Rust binaries); then
# it starts etcd, kube-apiserver, controller-manager, scheduler, kwok, Prometheus and a real node
# (containerd, kubelet, kube-proxy, CoreDNS; tests/node/node.sh), installs the Helm chart, whose
# controller and evidence service run as pods of the images built here, sends live traffic through
# the Gateway and posts its labels once to the evidence service, applies the fraud example and follows it with `kubectl modelrollout status --watch`.
# Ctrl-C at any point tears everything down. Runs as root (the real node).
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

step "1/5 Python environment (cached after the first run)"
eval "$(bash scripts/python-env.sh)"
step "2/5 control-plane and real-node binaries: kube-apiserver, etcd, kwok, kubectl, helm, Prometheus, kubelet, containerd, runc, CoreDNS (first run: Go builds)"
bash tests/cluster/build.sh >/dev/null
bash tests/node/build.sh >/dev/null
step "3/5 container images from the shipped Dockerfiles: controller, sidecar, models (buildah)"
bash scripts/build-images.sh
step "4/5 Rust binaries: kubectl plugin, demo driver"
cargo build --locked -p kubectl-modelrollout
cargo build --locked -p modelrollout-e2e --bin demo-driver
export DEMO_BIN="$CARGO_TARGET_DIR/debug"
step "5/5 local control plane, real node, Prometheus, then the rollout"
MODELROLLOUT_REAL_NODE=1 exec bash tests/cluster/cluster.sh run -- bash demo/inside.sh
