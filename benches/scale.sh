#!/usr/bin/env bash
# Controller at scale: N ModelRollouts (default 1000) with their Deployments and Services on the
# local control plane; the controller's RSS and reconcile latency idle, then with P of them
# progressing (default 100).
#
#   bash benches/scale.sh [N] [P] [NAMESPACES]
#
# NAMESPACES (default 1): the rollouts are spread over that many namespaces, rollout i in
# scale-(i mod NAMESPACES); with more than one the controller watches all namespaces.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
N=${1:-1000}
P=${2:-100}
export SCALE_NAMESPACES=${3:-1}
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
[[ -n ${CONTROLLER:-} ]] || cargo build --release --locked -p modelrollout-controller
export SCALE_N=$N SCALE_P=$P CONTROLLER=${CONTROLLER:-$CARGO_TARGET_DIR/release/modelrollout-controller}
bash tests/cluster/cluster.sh run -- python3 benches/scale.py
