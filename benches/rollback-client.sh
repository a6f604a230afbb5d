#!/usr/bin/env bash
# Rollback speed where clients see it: runs the real-gateway end-to-end test "a failing candidate
# stops answering clients within a second of the decision" N times (default 5) on the local
# cluster with its real node and Envoy Gateway. Per run: the time from the controller's rollback
# decision (modelrollout_rollback_decided_timestamp_seconds, read from the controller pod) to the
# start of the last client request that the candidate answered (x-model-version), with clients
# sending 160 requests a second to the Gateway's address. Prints each run and the median and max.
# With `undo`: the after-promotion test "an undo sends every client back to the warm retained
# version within a second" instead (120 requests a second): from the moment `kubectl modelrollout
# undo` starts to the start of the last request the promoted version answered.
#
#   bash benches/rollback-client.sh [runs] [undo]      (as root: the real node)
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${1:-5}
case ${2:-rollback} in
  rollback) SUITE=gateway TEST=a_failing_candidate LINE=GATEWAY_ROLLBACK FIGURE=last_candidate_request_after_decision_ms ;;
  undo) SUITE=after_promotion TEST=an_undo_sends LINE=UNDO_WARM FIGURE=last_promoted_answer_after_undo_ms ;;
  *) echo "usage: $0 [runs] [rollback|undo]" >&2; exit 2 ;;
esac
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
bash scripts/build-images.sh >/dev/null
bash tests/node/build.sh >/dev/null
cargo build --locked -p modelrollout-e2e --tests
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
MODELROLLOUT_REAL_NODE=1 bash tests/cluster/cluster.sh run -- bash -c "
  for i in \$(seq $RUNS); do
    cargo test --locked -p modelrollout-e2e --test $SUITE -- --include-ignored --nocapture $TEST 2>&1 | grep -E '^$LINE|test result'
  done" | tee "$OUT"
python3 - "$OUT" "$FIGURE" <<'PY'
import re, statistics, sys
ms = [float(m.group(1)) for m in re.finditer(sys.argv[2] + r"=(-?[0-9.]+)", open(sys.argv[1]).read())]
print(f"runs={len(ms)} median_ms={statistics.median(ms):.0f} max_ms={max(ms):.0f} all={ms}")
PY
