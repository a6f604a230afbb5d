#!/usr/bin/env bash
# Rollback speed where clients see it: runs the real-gateway end-to-end test "a failing candidate
# stops answering clients within a second of the decision" N times (default 5) on the local
# cluster with its real node and Envoy Gateway. Per run: the time from the controller's rollback
# decision (modelrollout_rollback_decided_timestamp_seconds, read from the controller pod) to the
# start of the last client request that the candidate answered (x-model-version), with clients
# sending 160 requests a second to the Gateway's address. Prints each run and the median and max.
#
#   bash benches/rollback-client.sh [runs]      (as root: the real node)
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${1:-5}
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
bash scripts/build-images.sh >/dev/null
bash tests/node/build.sh >/dev/null
cargo build --locked -p modelrollout-e2e --tests
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
MODELROLLOUT_REAL_NODE=1 bash tests/cluster/cluster.sh run -- bash -c "
  for i in \$(seq $RUNS); do
    cargo test --locked -p modelrollout-e2e --test gateway -- --include-ignored --nocapture a_failing_candidate 2>&1 | grep -E '^GATEWAY_ROLLBACK|test result'
  done" | tee "$OUT"
python3 - "$OUT" <<'PY'
import re, statistics, sys
ms = [float(m.group(1)) for m in re.finditer(r"last_candidate_request_after_decision_ms=(-?[0-9.]+)", open(sys.argv[1]).read())]
print(f"runs={len(ms)} median_ms={statistics.median(ms):.0f} max_ms={max(ms):.0f} all={ms}")
PY
