#!/usr/bin/env bash
# The sidecar benchmark: the same load, side by side in one run, against
#   (a) inference-sidecar (full path: validation, metrics, drift, prediction memory for feedback)
#   (b) benches/python_server.py (FastAPI + uvicorn, one worker, uvloop, orjson, onnxruntime)
#   (c) the bare axum ceiling (parse + validate the same JSON, constant answer, no model)
#   (d) ONNX Runtime in-process, no server (the model's own cost)
# Load: oha, closed loop with 32 connections, and open loop (-q, latency-corrected) at 500, 2000 and
# 5000 req/s; fraud v2, one instance per request. Two interleaved rounds. Results: $OUT (default
# target dir) as JSON, and a markdown table on stdout for BENCHMARKS.md.
#
#   bash benches/run.sh [seconds-per-run]
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECS=${1:-10}
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
OUT=${OUT:-$CARGO_TARGET_DIR/bench}
mkdir -p "$OUT"
eval "$(bash scripts/python-env.sh)"

# Python baseline environment.
KEY=$(sha256sum benches/requirements.txt | cut -c1-12)
PYENV="$MODELROLLOUT_CACHE/bench-venv-$KEY"
if [[ ! -f $PYENV/.complete ]]; then
  rm -rf "$PYENV"; python3 -m venv "$PYENV"
  "$PYENV/bin/pip" install --quiet -r benches/requirements.txt; touch "$PYENV/.complete"
fi
# Load generator.
OHA="$MODELROLLOUT_CACHE/tools/bin/oha"
[[ -x $OHA ]] || cargo install --locked --root "$MODELROLLOUT_CACHE/tools" oha@1.16.0
cargo build --release --locked -p inference-sidecar --bin inference-sidecar --examples
BIN="$CARGO_TARGET_DIR/release"

MODEL="$ROOT/models/fraud-v2.onnx"
SHA=$(grep " fraud-v2.onnx" models/SHA256SUMS | cut -c1-64)
CONTRACT="$ROOT/models/fraud.contract.yaml"
BODY='{"instances":[{"amount":120.5,"hour":3,"merchant_risk":0.8,"distance_km":300,"card_age_days":20,"foreign":1}]}'
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PID=
start() {
  local kind=$1 port=$2
  case $kind in
    sidecar) "$BIN/inference-sidecar" --model-name fraud --model-version v2 --model-uri "$MODEL" --model-sha256 "$SHA" \
               --contract "$CONTRACT" --reference "$ROOT/models/fraud-v2.reference.json" --listen "127.0.0.1:$port" \
               --log-format text --role canary 2>"$OUT/sidecar.log" & ;;
    python) "$PYENV/bin/python" benches/python_server.py "$MODEL" "$port" 2>"$OUT/python.log" & ;;
    bare) "$BIN/examples/bare_server" "$CONTRACT" "$port" & ;;
  esac
  PID=$!
  for _ in $(seq 100); do
    curl -sf -XPOST "http://127.0.0.1:$port/v1/models/fraud:predict" -d "$BODY" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$kind did not come up" >&2; exit 1
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
trap stop EXIT

# run KIND PORT LABEL ARGS...: one oha run, its JSON plus the server's RSS after it.
run() {
  local kind=$1 port=$2 label=$3; shift 3
  "$OHA" -z "${SECS}s" -w --no-tui --output-format json -m POST -H 'content-type: application/json' -d "$BODY" "$@" \
    "http://127.0.0.1:$port/v1/models/fraud:predict" >"$OUT/$kind-$label.json"
  local rss; rss=$(ps -o rss= -p "$PID" | tr -d ' ')
  python3 - "$OUT/$kind-$label.json" "$kind" "$label" "$rss" >>"$OUT/results.jsonl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, lat = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
errors = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(d.get("errorDistribution", {}).values())
print(json.dumps({"server": sys.argv[2], "load": sys.argv[3], "rps": s["requestsPerSec"],
                  "p50_ms": lat["p50"] * 1e3, "p95_ms": lat["p95"] * 1e3, "p99_ms": lat["p99"] * 1e3,
                  "errors": errors, "ok": codes.get("200", 0), "rss_mib": int(sys.argv[4]) / 1024}))
PY
}

: >"$OUT/results.jsonl"
for round in 1 2; do
  for kind in sidecar python bare; do
    port=$(free_port)
    start "$kind" "$port"
    "$OHA" -z 2s --no-tui -c 8 -m POST -H 'content-type: application/json' -d "$BODY" "http://127.0.0.1:$port/v1/models/fraud:predict" >/dev/null
    run "$kind" "$port" "r$round-closed-c32" -c 32
    for rate in 500 2000 5000; do
      run "$kind" "$port" "r$round-open-$rate" -c 64 -q "$rate" --latency-correction
    done
    stop
  done
done
"$BIN/examples/ort_inprocess" "$MODEL" 50000 >"$OUT/ort-inprocess.json"

python3 - "$OUT/results.jsonl" "$OUT/ort-inprocess.json" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| server | load | round | req/s | p50 ms | p95 ms | p99 ms | errors | RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    rnd, load = r["load"].split("-", 1)
    print(f"| {r['server']} | {load} | {rnd} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} | {r['rss_mib']:.1f} |")
print()
closed = {}
for r in rows:
    if r["load"].endswith("closed-c32"):
        closed.setdefault(r["load"].split("-")[0], {})[r["server"]] = r["rps"]
for rnd, c in sorted(closed.items()):
    print(f"{rnd}: sidecar / bare = {c['sidecar'] / c['bare']:.2f}, sidecar / python = {c['sidecar'] / c['python']:.1f}")
print("in-process ONNX Runtime:", open(sys.argv[2]).read().strip())
PY
