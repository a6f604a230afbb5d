#!/usr/bin/env bash
# Packs what the sidecar's CUDA check (benches/gpu.sh) needs on a GPU machine that has CUDA 13 and
# Python but nothing else of ours and no network: the sidecar built with `--features cuda`, oha, and
# ONNX Runtime's GPU build from the PyPI `onnxruntime-gpu` wheel (its CUDA provider pruned to sm_90
# cubins by benches/fatbin_keep_arch.py). Two parts, each under the machine's 64 MiB transfer:
#   .gpu/a/ort.tar.xz    libonnxruntime.so.1.31.1 + its providers_shared and providers_cuda
#   .gpu/b/tools.tar.xz  inference-sidecar (cuda) + oha, stripped
#
#   bash benches/gpu-pack.sh [ARCH=90]
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ARCH=${1:-90}
ORT_GPU=1.31.1  # the same ONNX Runtime as scripts/requirements.txt; its GPU wheel targets CUDA 13
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
CACHE="$MODELROLLOUT_CACHE/onnxruntime-gpu-$ORT_GPU"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

cargo build --release --locked -p inference-sidecar --bin inference-sidecar --features cuda
OHA="$MODELROLLOUT_CACHE/tools/bin/oha"
[[ -x $OHA ]] || cargo install --locked --root "$MODELROLLOUT_CACHE/tools" oha@1.16.0

if ! ls "$CACHE"/onnxruntime_gpu-*.whl >/dev/null 2>&1; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$CACHE" "onnxruntime-gpu==$ORT_GPU"
fi
mkdir -p "$STAGE/ort" "$STAGE/tools"
unzip -q -j -o "$CACHE"/onnxruntime_gpu-*.whl "onnxruntime/capi/libonnxruntime.so.$ORT_GPU" \
  onnxruntime/capi/libonnxruntime_providers_shared.so onnxruntime/capi/libonnxruntime_providers_cuda.so -d "$STAGE/whl"
mv "$STAGE/whl/libonnxruntime.so.$ORT_GPU" "$STAGE/whl/libonnxruntime_providers_shared.so" "$STAGE/ort/"
python3 benches/fatbin_keep_arch.py "$STAGE/whl/libonnxruntime_providers_cuda.so" \
  "$STAGE/ort/libonnxruntime_providers_cuda.so" "$ARCH"
cp "$CARGO_TARGET_DIR/release/inference-sidecar" "$OHA" "$STAGE/tools/"
strip "$STAGE/tools/"*

mkdir -p .gpu/a .gpu/b
# xz's x86 branch filter before LZMA2 shrinks machine code a few per cent more: every byte counts here.
for part in a/ort b/tools; do
  tar -C "$STAGE" -cf - "${part#*/}" | xz --x86 --lzma2=preset=9e,dict=128MiB -T2 >".gpu/$part.tar.xz"
done
ls -l .gpu/a .gpu/b
