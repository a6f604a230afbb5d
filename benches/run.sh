#!/usr/bin/env bash
# The sidecar benchmark: the same load, side by side in one run, against
#   (a) inference-sidecar (full path: validation, metrics, drift, prediction memory for feedback)
#   (b) benches/python_server.py (FastAPI + uvicorn, one worker, uvloop, orjson, onnxruntime)
#   (c) the bare axum ceiling (parse + validate the same JSON, constant answer, no model)
#   (d) ONNX Runtime in-process, no server (the model's own cost)
#   (e) the sidecar's Open Inference Protocol: REST `/v2/models/fraud/infer` (oha) against gRPC
#       ModelInfer (ghz, built from its Go module), the same six typed tensors of one row each
# Load: closed loop with 32 connections, and open loop at 500, 2000 and 5000 req/s (oha: -q,
# latency-corrected; ghz: --rps, 64 workers, one connection each); fraud v2, one instance per
# request. Two interleaved rounds. Results: $OUT (default target dir) as JSON, and a markdown table
# on stdout for BENCHMARKS.md.
#
#   bash benches/run.sh [seconds-per-run]     (KINDS="oip-rest oip-grpc" to run only those servers)
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
GHZ="$MODELROLLOUT_CACHE/tools/bin/ghz"
[[ -x $GHZ ]] || GOBIN="$MODELROLLOUT_CACHE/tools/bin" go install github.com/bojand/ghz/cmd/ghz@v0.120.0
cargo build --release --locked -p inference-sidecar --bin inference-sidecar --examples
BIN="$CARGO_TARGET_DIR/release"

MODEL="$ROOT/models/fraud-v2.onnx"
SHA=$(grep " fraud-v2.onnx" models/SHA256SUMS | cut -c1-64)
CONTRACT="$ROOT/models/fraud.contract.yaml"
BODY='{"instances":[{"amount":120.5,"hour":3,"merchant_risk":0.8,"distance_km":300,"card_age_days":20,"foreign":1}]}'
# The same row as the OIP tensors its metadata lists: REST JSON and the gRPC request (proto3 JSON).
OIP_REST='{"inputs":[{"name":"amount","datatype":"FP32","shape":[1],"data":[120.5]},{"name":"hour","datatype":"INT64","shape":[1],"data":[3]},{"name":"merchant_risk","datatype":"FP32","shape":[1],"data":[0.8]},{"name":"distance_km","datatype":"FP32","shape":[1],"data":[300]},{"name":"card_age_days","datatype":"INT64","shape":[1],"data":[20]},{"name":"foreign","datatype":"INT64","shape":[1],"data":[1]}]}'
OIP_GRPC='{"model_name":"fraud","inputs":[{"name":"amount","datatype":"FP32","shape":[1],"contents":{"fp32_contents":[120.5]}},{"name":"hour","datatype":"INT64","shape":[1],"contents":{"int64_contents":[3]}},{"name":"merchant_risk","datatype":"FP32","shape":[1],"contents":{"fp32_contents":[0.8]}},{"name":"distance_km","datatype":"FP32","shape":[1],"contents":{"fp32_contents":[300]}},{"name":"card_age_days","datatype":"INT64","shape":[1],"contents":{"int64_contents":[20]}},{"name":"foreign","datatype":"INT64","shape":[1],"contents":{"int64_contents":[1]}}]}'
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PID=
GRPC_PORT=
start() {
  local kind=$1 port=$2
  case $kind in
    sidecar | oip-rest | oip-grpc)
      GRPC_PORT=$(free_port)
      "$BIN/inference-sidecar" --model-name fraud --model-version v2 --model-uri "$MODEL" --model-sha256 "$SHA" \
        --contract "$CONTRACT" --reference "$ROOT/models/fraud-v2.reference.json" --listen "127.0.0.1:$port" \
        --grpc-listen "127.0.0.1:$GRPC_PORT" --log-format text --role canary 2>"$OUT/$kind.log" & ;;
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

# The server's CPU time so far (user + system, in clock ticks): what a request costs the server
# whatever the load generator costs (ghz spends more CPU per call than oha on these shared cores).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

# run KIND PORT LABEL CONCURRENCY [RATE]: one load run (closed loop without RATE, open loop at RATE
# req/s with it), its JSON plus the server's RSS after it.
run() {
  local kind=$1 port=$2 label=$3 conc=$4 rate=${5:-}
  local cpu0; cpu0=$(cpu_ticks)
  case $kind in
    oip-grpc)
      local open=(); [[ -n $rate ]] && open=(--rps "$rate")
      "$GHZ" --insecure --proto inference-sidecar/proto/grpc_predict_v2.proto --call inference.GRPCInferenceService/ModelInfer \
        -d "$OIP_GRPC" -z "${SECS}s" --duration-stop wait -c "$conc" --connections "$conc" "${open[@]}" --format json -o "$OUT/$kind-$label.json" \
        "127.0.0.1:$GRPC_PORT" ;;
    *)
      local url="http://127.0.0.1:$port/v1/models/fraud:predict" body=$BODY open=()
      [[ $kind == oip-rest ]] && url="http://127.0.0.1:$port/v2/models/fraud/infer" body=$OIP_REST
      [[ -n $rate ]] && open=(-q "$rate" --latency-correction)
      "$OHA" -z "${SECS}s" -w --no-tui --output-format json -m POST -H 'content-type: application/json' -d "$body" \
        -c "$conc" "${open[@]}" "$url" >"$OUT/$kind-$label.json" ;;
  esac
  local rss cpu; rss=$(ps -o rss= -p "$PID" | tr -d ' '); cpu=$(($(cpu_ticks) - cpu0))
  python3 - "$OUT/$kind-$label.json" "$kind" "$label" "$rss" "$cpu" "$(getconf CLK_TCK)" >>"$OUT/results.jsonl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
if "summary" in d:  # oha
    s, lat = d["summary"], d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    errors = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(d.get("errorDistribution", {}).values())
    rps, ok, pct = s["requestsPerSec"], codes.get("200", 0), {k: lat[k] * 1e3 for k in ("p50", "p95", "p99")}
else:  # ghz: latencies in nanoseconds
    codes = d.get("statusCodeDistribution", {})
    errors = sum(v for k, v in codes.items() if k != "OK")
    lat = {f"p{int(p['percentage'])}": p["latency"] / 1e6 for p in d["latencyDistribution"]}
    rps, ok, pct = d["rps"], codes.get("OK", 0), {k: lat[k] for k in ("p50", "p95", "p99")}
print(json.dumps({"server": sys.argv[2], "load": sys.argv[3], "rps": rps,
                  "p50_ms": pct["p50"], "p95_ms": pct["p95"], "p99_ms": pct["p99"],
                  "errors": errors, "ok": ok, "rss_mib": int(sys.argv[4]) / 1024,
                  "server_cpu_us_per_req": int(sys.argv[5]) / int(sys.argv[6]) * 1e6 / max(ok, 1)}))
PY
}

: >"$OUT/results.jsonl"
for round in 1 2; do
  for kind in ${KINDS:-sidecar python bare oip-rest oip-grpc}; do
    port=$(free_port)
    start "$kind" "$port"
    "$OHA" -z 2s --no-tui -c 8 -m POST -H 'content-type: application/json' -d "$BODY" "http://127.0.0.1:$port/v1/models/fraud:predict" >/dev/null
    run "$kind" "$port" "r$round-closed-c32" 32
    for rate in 500 2000 5000; do
      run "$kind" "$port" "r$round-open-$rate" 64 "$rate"
    done
    stop
  done
done
"$BIN/examples/ort_inprocess" "$MODEL" 50000 >"$OUT/ort-inprocess.json"

python3 - "$OUT/results.jsonl" "$OUT/ort-inprocess.json" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| server | load | round | req/s | p50 ms | p95 ms | p99 ms | errors | RSS MiB | server CPU µs/req |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    rnd, load = r["load"].split("-", 1)
    print(f"| {r['server']} | {load} | {rnd} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} | {r['rss_mib']:.1f} | {r['server_cpu_us_per_req']:.0f} |")
print()
closed = {}
for r in rows:
    if r["load"].endswith("closed-c32"):
        closed.setdefault(r["load"].split("-")[0], {})[r["server"]] = r["rps"]
for rnd, c in sorted(closed.items()):
    ratios = [("sidecar", "bare", ".2f"), ("sidecar", "python", ".1f"), ("oip-grpc", "oip-rest", ".2f")]
    print(f"{rnd}: " + ", ".join(f"{a} / {b} = {c[a] / c[b]:{f}}" for a, b, f in ratios if a in c and b in c))
print("in-process ONNX Runtime:", open(sys.argv[2]).read().strip())
PY
