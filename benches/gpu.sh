#!/usr/bin/env bash
# The sidecar's CUDA path on a real GPU. Run on the GPU machine, from the repo root, after unpacking
# benches/gpu-pack.sh's two parts into DIR (DIR/ort, DIR/tools). It checks and measures:
#   1. the CUDA execution provider registers: the device gauge says device="cuda" and the process holds
#      GPU memory;
#   2. the golden rows score on the GPU as Python onnxruntime scored them on a CPU (|diff| <= 1e-6):
#      fraud-v2-slow (its 64 x 1024x1024 MatMul+Tanh branch has CUDA kernels), fraud-v2 (tree ensemble:
#      ai.onnx.ml ops, which have no CUDA kernels, so ONNX Runtime places them on the CPU) and the
#      string-input toxicity model (mixed placement);
#   3. fraud-v2-slow's latency (1 connection) and throughput (32 connections) on the GPU (one inference
#      thread, then two with a CUDA session each) and on the same machine's CPU (one session given every
#      core);
#   4. CUDA asked for where the process sees no GPU (CUDA_VISIBLE_DEVICES= , a pod without
#      nvidia.com/gpu) falls back to CPU with a warning and device="cpu",requested="cuda".
# Exits non-zero if a check fails. Writes oha's JSON and the logs to $OUT (default /tmp/gpu-out).
#
#   bash benches/gpu.sh DIR [seconds-per-load-run]
set -Euo pipefail
DIR=$(cd "$1" && pwd)
SECS=${2:-10}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "cores: $(nproc)"
# The CUDA 13 runtime libraries ONNX Runtime's CUDA provider links: from the Python environment's
# nvidia-* wheels (what `pip install onnxruntime-gpu[cuda]` would bring) or a CUDA toolkit.
SITE=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CUDA_LIBS=$(find "$SITE/nvidia" /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  \( -name 'libcublas.so.13*' -o -name 'libcublasLt.so.13*' -o -name 'libcudart.so.13*' -o -name 'libcurand.so.10*' \
  -o -name 'libcudnn.so.9*' -o -name 'libcufft.so.12*' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
echo "CUDA libraries from: $CUDA_LIBS"
export LD_LIBRARY_PATH="$DIR/ort:$CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ORT_DYLIB_PATH="$DIR/ort/libonnxruntime.so.1.31.1"
missing=$(ldd "$DIR/ort/libonnxruntime_providers_cuda.so" | grep 'not found' || true)
[[ -z $missing ]] || fail "the CUDA provider's libraries: $missing"
SIDECAR="$DIR/tools/inference-sidecar"
OHA="$DIR/tools/oha"
FRAUD_BODY='{"instances":[{"amount":120.5,"hour":3,"merchant_risk":0.8,"distance_km":300,"card_age_days":20,"foreign":1}]}'
TOXICITY_CONTRACT='{"inputs":[{"name":"text","type":"string","maxLength":200}]}'
# curl where the machine has it, else Python's urllib (a bare CUDA image may lack curl).
http_get() {
  if command -v curl >/dev/null; then curl -sf "$1"; else
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1" 2>/dev/null
  fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PID= PORT=
# start NAME FILE DEVICE LABEL [sidecar flags...]
start() {
  local name=$1 file=$2 device=$3 label=$4; shift 4
  local sha; sha=$(grep " $file\$" models/SHA256SUMS | cut -c1-64)
  local contract=(--contract models/fraud.contract.yaml)
  [[ $name == toxicity ]] && contract=(--contract-json "$TOXICITY_CONTRACT")
  PORT=$(free_port)
  "$SIDECAR" --model-name "$name" --model-version v1 --model-uri "models/$file" --model-sha256 "$sha" \
    "${contract[@]}" --device "$device" --listen "127.0.0.1:$PORT" --log-format text "$@" 2>"$OUT/$label.log" &
  PID=$!
  local t0=$SECONDS
  until http_get "http://127.0.0.1:$PORT/readyz" >/dev/null; do
    if ! kill -0 "$PID" 2>/dev/null || ((SECONDS - t0 > 120)); then
      fail "$label: not ready"; tail -20 "$OUT/$label.log"; stop; return 1
    fi
    sleep 0.2
  done
  echo "== $label: ready in $((SECONDS - t0)) s; $(http_get "http://127.0.0.1:$PORT/metrics" | grep '^modelrollout_sidecar_device')"
}
stop() { [[ -n $PID ]] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }; PID=; }
trap stop EXIT
expect_device() {
  http_get "http://127.0.0.1:$PORT/metrics" | grep -q "^modelrollout_sidecar_device{.*device=\"$1\",requested=\"$2\"} 1" ||
    fail "$3: expected device=$1 requested=$2"
}
# golden NAME FILE LABEL: every golden row, 25 per request, against Python onnxruntime's probability.
golden() {
  python3 - "$PORT" "$1" "models/${2%.onnx}.golden.json" <<'PY' || fail "$3: golden rows"
import json, sys, urllib.request
port, name, path = sys.argv[1:]
rows = json.load(open(path))["rows"]
worst = 0.0
for i in range(0, len(rows), 25):
    chunk = rows[i:i + 25]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{name}:predict", method="POST",
                                 data=json.dumps({"instances": [r["features"] for r in chunk]}).encode(),
                                 headers={"content-type": "application/json"})
    preds = json.load(urllib.request.urlopen(req))["predictions"]
    worst = max([worst] + [abs(p["score"] - r["probability"]) for p, r in zip(preds, chunk)])
print(f"   golden: {len(rows)} rows, largest |score - python| = {worst:.2e}")
sys.exit(0 if worst <= 1e-6 else 1)
PY
}
# load LABEL CONNECTIONS: one oha run against fraud; prints req/s, p50/p95/p99 and non-200 answers.
load() {
  "$OHA" -z "${SECS}s" -w --no-tui --output-format json -c "$2" -m POST -H 'content-type: application/json' \
    -d "$FRAUD_BODY" "http://127.0.0.1:$PORT/v1/models/fraud:predict" >"$OUT/$1.json"
  local rss; rss=$(ps -o rss= -p "$PID" | tr -d ' ')
  python3 - "$OUT/$1.json" "$1" "$rss" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, lat, codes = d["summary"], d["latencyPercentiles"], d.get("statusCodeDistribution", {})
bad = sum(v for k, v in codes.items() if k != "200") + sum(d.get("errorDistribution", {}).values())
print(f"   {sys.argv[2]}: {s['requestsPerSec']:.0f} req/s, p50 {lat['p50'] * 1e3:.3f} ms, p95 {lat['p95'] * 1e3:.3f} ms, "
      f"p99 {lat['p99'] * 1e3:.3f} ms, {codes.get('200', 0)} answered 200, {bad} not, RSS {int(sys.argv[3]) / 1024:.0f} MiB")
PY
}
gpu_memory() { nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | grep "^$PID," || fail "$1: no GPU memory held"; }

# 1-3. CUDA: scores, GPU memory, load; then the same model on the CPU.
if start fraud fraud-v2-slow.onnx cuda cuda-slow; then
  expect_device cuda cuda cuda-slow; golden fraud fraud-v2-slow.onnx cuda-slow
  echo "   GPU memory (pid, used): $(gpu_memory cuda-slow)"
  load cuda-slow-c1 1; load cuda-slow-c32 32; stop
fi
# Two inference threads, each with its own CUDA session on the one GPU.
if start fraud fraud-v2-slow.onnx cuda cuda-slow-w2 --workers 2; then
  expect_device cuda cuda cuda-slow-w2; golden fraud fraud-v2-slow.onnx cuda-slow-w2
  echo "   GPU memory (pid, used): $(gpu_memory cuda-slow-w2)"
  load cuda-slow-w2-c32 32; stop
fi
if start fraud fraud-v2-slow.onnx cpu cpu-slow --threads "$(nproc)"; then
  expect_device cpu cpu cpu-slow; golden fraud fraud-v2-slow.onnx cpu-slow
  load cpu-slow-c1 1; load cpu-slow-c32 32; stop
fi
if start fraud fraud-v2.onnx cuda cuda-trees; then
  expect_device cuda cuda cuda-trees; golden fraud fraud-v2.onnx cuda-trees; load cuda-trees-c32 32; stop
fi
if start toxicity toxicity-v1.onnx cuda cuda-text; then
  expect_device cuda cuda cuda-text; golden toxicity toxicity-v1.onnx cuda-text; stop
fi
# 4. CUDA requested, no GPU visible.
if CUDA_VISIBLE_DEVICES= start fraud fraud-v2.onnx cuda no-gpu; then
  expect_device cpu cuda no-gpu; golden fraud fraud-v2.onnx no-gpu
  grep -m1 'CUDA requested' "$OUT/no-gpu.log" || fail "no-gpu: no warning"
  stop
fi
echo "== ONNX Runtime's warnings (target onnxruntime), per run:"
for f in "$OUT"/cuda-*.log; do
  sed 's/\x1b\[[0-9;]*m//g' "$f" | grep ' WARN onnxruntime' | cut -c1-400 | sed "s|^|   $(basename "$f" .log): |" | sort -u -k2 | head -5
done
((FAILS == 0)) && echo "== all GPU checks passed" || { echo "== $FAILS GPU checks failed"; exit 1; }
