#!/usr/bin/env bash
# The evidence service's numbers for BENCHMARKS.md ("The evidence service"), one command:
#   bash benches/evidence.sh [N] [SECONDS] [ROUNDS]
# 1. the store: N mirrored requests (2N predictions, stable and candidate under one id) in batches
#    of 1,000, then N labels, on SQLite and on PostgreSQL (Debian's, started here): predictions and
#    labels joined per second, CPU seconds (this process; PostgreSQL's own server processes
#    beside it), peak RSS, bytes on disk per million predictions;
# 2. the sidecar with evidence on against off, paired in rounds (benches/sidecar-ab.sh: closed
#    loop, 32 connections): throughput and p99; "on" sends every row to the service's routes
#    (evidence/examples/serve_open: the library with every caller allowed, no apiserver here).
# Rebuilds what it runs. Defaults: N=200000, SECONDS=5, ROUNDS=5.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
N=${1:-200000} SECS=${2:-5} ROUNDS=${3:-5}
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
cargo build --release --locked -p modelrollout-evidence --examples
cargo build --release --locked -p inference-sidecar
EX="$CARGO_TARGET_DIR/release/examples"
DIR=$(mktemp -d)
PG_DIR=
cleanup() {
  [[ -n ${SERVE_PID:-} ]] && kill "$SERVE_PID" 2>/dev/null
  [[ -n $PG_DIR ]] && bash tests/postgres/stop.sh "$PG_DIR"
  rm -rf "$DIR"
}
trap cleanup EXIT
# Busy CPU ticks of the whole machine (user + nice + system): PostgreSQL's backends end with the
# client's connections, so their time is read as the machine's less the client's.
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4}' /proc/stat; }

if [[ -z ${SKIP_STORE:-} ]]; then
echo "== store: SQLite ($N mirrored requests)"
"$EX/store_bench" "sqlite://$DIR/bench.db" "$N"

echo "== store: PostgreSQL ($N mirrored requests)"
eval "$(bash tests/postgres/start.sh)"
PG_DIR=$POSTGRES_DIR
psql "$POSTGRES_URL/postgres" -qc "CREATE DATABASE bench" >/dev/null
t0=$(busy_ticks)
"$EX/store_bench" "$POSTGRES_URL/bench" "$N" | tee "$DIR/pg.json"
python3 - "$DIR/pg.json" $(( $(busy_ticks) - t0 )) <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read().splitlines()[-1])
machine = int(sys.argv[2]) / 100
client = d["predictions_cpu_s"] + d["labels_cpu_s"]
print(f"whole machine busy {machine:.1f} CPU s, of which the client {client:.1f}: PostgreSQL's server about {machine - client:.1f} CPU s")
PY
fi

echo "== sidecar: evidence off against on ($ROUNDS rounds of ${SECS}s)"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# EVIDENCE_NICE=19 runs the service at the lowest priority: on two shared cores it then takes only
# what the sidecar and the load generator leave (closer to a cluster, where it has a node of its own).
nice -n "${EVIDENCE_NICE:-0}" "$EX/serve_open" "127.0.0.1:$PORT" "sqlite://$DIR/ab.db" &
SERVE_PID=$!
# on: every row sent; on10: a tenth of the request ids (--evidence-sample-rate 0.1). The token is
# any non-empty one (an empty bearer token is refused as none, and the sidecar would keep retrying).
echo bench >"$DIR/token"
for rate in 1 0.1; do
  cat >"$DIR/sidecar-evidence-$rate" <<WRAP
#!/bin/sh
exec "$CARGO_TARGET_DIR/release/inference-sidecar" --evidence-url "http://127.0.0.1:$PORT" --namespace bench --rollout fraud --evidence-token-file "$DIR/token" --evidence-sample-rate $rate "\$@"
WRAP
  chmod +x "$DIR/sidecar-evidence-$rate"
done
bash benches/sidecar-ab.sh "$SECS" "$ROUNDS" off="$CARGO_TARGET_DIR/release/inference-sidecar" \
  on="$DIR/sidecar-evidence-1" on10="$DIR/sidecar-evidence-0.1"
python3 - "$DIR/ab.db" <<'PY'
import sqlite3, sys
n = sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
print(f"predictions the service stored over every on and on10 round: {n}")
PY
