#!/usr/bin/env bash
# A paired closed-loop A/B of sidecar builds (and the bare ceiling), for changes too small for the
# noise between two runs of benches/run.sh: the builds take turns within each round, and besides
# throughput each run reports what is steadier than throughput on this shared machine — the
# server's CPU time per request (all its threads, from /proc) and the share of both cores left idle.
#
#   bash benches/sidecar-ab.sh SECONDS ROUNDS LABEL=SIDECAR_BINARY... [bare] [bare1] [hop] [hop2]
#   e.g. bash benches/sidecar-ab.sh 4 5 old=/tmp/sidecar-old new=$CARGO_TARGET_DIR/release/inference-sidecar bare
#
# bare is the ceiling of benches/run.sh (examples/bare_server, two runtime threads); bare1 the same
# server on one runtime thread; hop and hop2 are its `hop` probe (the ceiling plus the sidecar's
# hand-off to a dedicated thread, no model) on one and on two runtime threads.
#
# THREADS=1 adds each thread's CPU ticks and voluntary/involuntary context switches.
# Load: oha (installed by benches/run.sh), 32 connections, fraud v2, one instance per request.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECS=$1 ROUNDS=$2
shift 2
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
OHA="$MODELROLLOUT_CACHE/tools/bin/oha"
[[ -x $OHA ]] || cargo install --locked --root "$MODELROLLOUT_CACHE/tools" oha@1.16.0
eval "$(bash scripts/python-env.sh)"
cargo build --release --locked -p inference-sidecar --examples
MODEL="$ROOT/models/fraud-v2.onnx"
SHA=$(grep " fraud-v2.onnx" models/SHA256SUMS | cut -c1-64)
CONTRACT="$ROOT/models/fraud.contract.yaml"
BODY='{"instances":[{"amount":120.5,"hour":3,"merchant_risk":0.8,"distance_km":300,"card_age_days":20,"foreign":1}]}'
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
idle_total() { awk '/^cpu /{print $5, $2 + $3 + $4 + $5}' /proc/stat; }

for round in $(seq "$ROUNDS"); do
  for spec in "$@"; do
    label=${spec%%=*} port=$(free_port)
    examples="$CARGO_TARGET_DIR/release/examples"
    case $spec in
      bare) "$examples/bare_server" "$CONTRACT" "$port" & ;;
      bare1) TOKIO_WORKER_THREADS=1 "$examples/bare_server" "$CONTRACT" "$port" & ;;
      hop) "$examples/bare_server" "$CONTRACT" "$port" hop & ;;
      hop2) "$examples/bare_server" "$CONTRACT" "$port" hop 2 & ;;
      *) "${spec#*=}" --model-name fraud --model-version v2 --model-uri "$MODEL" --model-sha256 "$SHA" \
        --contract "$CONTRACT" --reference "$ROOT/models/fraud-v2.reference.json" \
        --listen "127.0.0.1:$port" --log-format text --role canary 2>/dev/null & ;;
    esac
    pid=$!
    for _ in $(seq 100); do
      curl -sf -XPOST "http://127.0.0.1:$port/v1/models/fraud:predict" -d "$BODY" >/dev/null 2>&1 && break
      sleep 0.1
    done
    read -r idle0 total0 < <(idle_total)
    cpu0=$(ticks "$pid")
    "$OHA" -z "${SECS}s" -w --no-tui --output-format json -m POST -H 'content-type: application/json' -d "$BODY" \
      -c 32 "http://127.0.0.1:$port/v1/models/fraud:predict" >"$OUT/oha.json"
    read -r idle1 total1 < <(idle_total)
    cpu1=$(ticks "$pid")
    python3 - "$OUT/oha.json" "$round" "$label" "$SECS" $((cpu1 - cpu0)) $((idle1 - idle0)) $((total1 - total0)) <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rnd, label, secs, cpu, idle, total = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])
rps = d["summary"]["requestsPerSec"]
# Only answered requests count: a refused body (400) or a shed one (429) skips the model and is faster.
codes = d.get("statusCodeDistribution", {})
bad = sum(n for code, n in codes.items() if code != "200") + sum(d.get("errorDistribution", {}).values())
if bad:
    sys.exit(f"round {rnd} {label}: {bad} requests not answered 200 ({codes}, {d.get('errorDistribution')})")
clk = 100  # USER_HZ
print(f"round {rnd} {label:>10}: {rps:8.0f} req/s  p99 {d['latencyPercentiles']['p99'] * 1e3:5.2f} ms  "
      f"server CPU {cpu / clk / (rps * secs) * 1e6:5.1f} us/req  cores idle {100 * idle / total:4.1f}%")
PY
    if [[ -n ${THREADS:-} ]]; then
      for t in /proc/"$pid"/task/*; do
        printf '    %s: %s ticks, switches %s/%s\n' "$(cat "$t/comm")" "$(ticks "${t#/proc/}")" \
          "$(awk '/^voluntary/{print $2}' "$t/status")" "$(awk '/^nonvoluntary/{print $2}' "$t/status")"
      done
    fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done
