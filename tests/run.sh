#!/usr/bin/env bash
# The test command: unit and in-process tests, then the end-to-end suite on a real local control
# plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) and Prometheus.
# Everything it needs is built or installed by the project's own scripts; caches live in
# ~/.cache/modelrollout (override with MODELROLLOUT_CACHE).
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
START=$SECONDS
phase() { printf '\n\033[1m== %s (%ds)\033[0m\n' "$*" $((SECONDS - START)); }

phase "Python environment (model toolchain, ONNX Runtime library)"
eval "$(bash scripts/python-env.sh)"

phase "control-plane binaries"
bash tests/cluster/build.sh >/dev/null

phase "cargo build"
cargo build --workspace --all-targets --locked
# The end-to-end sidecars serve live traffic whose latency is gated: run the optimised build.
cargo build --release --locked -p inference-sidecar

phase "unit and in-process tests"
cargo test --workspace --locked --exclude modelrollout-e2e -- --include-ignored

phase "end-to-end tests on the local control plane"
bash tests/cluster/cluster.sh run -- cargo test --locked -p modelrollout-e2e -- --include-ignored --test-threads 4

phase "all tests passed"
