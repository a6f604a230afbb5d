#!/usr/bin/env bash
# Rollback speed: runs the end-to-end "FPR candidate rolled back at 5%" scenario N times (default 5)
# on the local control plane and collects, per run, the time from the controller's rollback decision
# (taken right after the analysis that hit the failure limit; exported as
# modelrollout_rollback_decided_timestamp_seconds) to a watch on the HTTPRoute seeing the canary's
# weight back at 0. Prints each run and the median and max.
#
#   bash benches/rollback.sh [runs]
set -Eeuo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUNS=${1:-5}
export MODELROLLOUT_CACHE=${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MODELROLLOUT_CACHE/target}
eval "$(bash scripts/python-env.sh)"
cargo build --locked --workspace --all-targets
cargo build --release --locked -p inference-sidecar
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
bash tests/cluster/cluster.sh run -- bash -c "
  for i in \$(seq $RUNS); do
    cargo test --locked -p modelrollout-e2e --test rollout -- --include-ignored --nocapture b_a_candidate 2>&1 | grep -E '^ROLLBACK_SPEED|test result'
  done" | tee "$OUT"
python3 - "$OUT" <<'PY'
import re, statistics, sys
ms = [float(m.group(1)) for m in re.finditer(r"decision_to_route_weight_0_ms=([0-9.]+)", open(sys.argv[1]).read())]
print(f"runs={len(ms)} median_ms={statistics.median(ms):.1f} max_ms={max(ms):.1f} all={ms}")
PY
